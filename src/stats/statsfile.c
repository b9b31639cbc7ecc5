#include "stats/statsfile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"

static const char KF_STATS_MAGIC[8] = {'K', 'F', 'S', 'T', 'A', 'T', 'S', 0};
#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * FNV_PRIME;
    return h;
}

void kf_statsfile_init(kf_statsfile *f, uint64_t fingerprint, const kf_calib_protocol *protocol) {
    memset(f, 0, sizeof *f);
    f->fingerprint = fingerprint;
    f->protocol = *protocol;
    f->protocol.rank = 0;
}

void kf_statsfile_free(kf_statsfile *f) {
    for (int i = 0; i < f->n; i++) {
        kf_moments_free(&f->entries[i]->m);
        free(f->entries[i]);
    }
    free(f->entries);
    memset(f, 0, sizeof *f);
}

kf_moments *kf_statsfile_get(const kf_statsfile *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->entries[i]->name, name) == 0) return &f->entries[i]->m;
    return NULL;
}

kf_status kf_statsfile_add(kf_statsfile *f, const char *name, int d, int topk, float eps, kf_moments **out,
                           kf_error *err) {
    size_t len = strlen(name);
    if (len == 0 || len > KF_STATSFILE_NAME_MAX)
        return kf_error_set(err, KF_ERR_ARG, "statsfile: accumulator name must have 1..%d bytes", KF_STATSFILE_NAME_MAX);
    if (kf_statsfile_get(f, name)) return kf_error_set(err, KF_ERR_ARG, "statsfile: duplicate accumulator '%s'", name);
    if (f->n == f->cap) {
        int cap = f->cap ? 2 * f->cap : 16;
        kf_stats_entry **e = realloc(f->entries, (size_t)cap * sizeof *e);
        if (!e) return kf_error_set(err, KF_ERR_NOMEM, "statsfile: out of memory");
        f->entries = e;
        f->cap = cap;
    }
    kf_stats_entry *e = calloc(1, sizeof *e);
    if (!e) return kf_error_set(err, KF_ERR_NOMEM, "statsfile: out of memory");
    kf_status st = kf_moments_init(&e->m, d, topk, eps, err);
    if (st != KF_OK) {
        free(e);
        return st;
    }
    memcpy(e->name, name, len + 1);
    f->entries[f->n++] = e;
    if (out) *out = &e->m;
    return KF_OK;
}

kf_status kf_statsfile_merge(kf_statsfile *dst, const kf_statsfile *src, kf_error *err) {
    if (dst->fingerprint != src->fingerprint)
        return kf_error_set(err, KF_ERR_ARG, "statsfile: merge of model %016llx into model %016llx",
                            (unsigned long long)src->fingerprint, (unsigned long long)dst->fingerprint);
    kf_status st = kf_calib_check_same(&src->protocol, &dst->protocol, "statsfile: merge: the other part", err);
    if (st != KF_OK) return st;
    dst->protocol.max_tokens += src->protocol.max_tokens;
    for (int i = 0; i < src->n; i++) {
        const kf_stats_entry *e = src->entries[i];
        kf_moments *m = kf_statsfile_get(dst, e->name);
        if (!m && (st = kf_statsfile_add(dst, e->name, e->m.d, e->m.topk, e->m.eps, &m, err)) != KF_OK) return st;
        if ((st = kf_moments_merge(m, &e->m, err)) != KF_OK) return st;
    }
    return KF_OK;
}

// Bytes of one entry after its n_bytes field.
static uint64_t entry_bytes(uint64_t name_len, uint64_t d, uint64_t topk) {
    uint64_t p = d * (d + 1) / 2;
    return 4 + name_len + 4 + 4 + 4 + 4 + 8 + 8 * d * 2 + 8 * p + 8 * d * 3 + 4 * d * 2 + (topk > 0 ? 4 * p : 0) + 8;
}

static void wr(kf_statsfile_writer *w, const void *p, size_t n) {
    if (n == 0) return;
    w->hash = fnv1a(w->hash, p, n);
    if (w->ok && fwrite(p, 1, n, w->fp) != n) w->ok = 0;
}

int kf_statsfile_entry_arrays(const kf_moments *m, const void **p, size_t *n) {
    const size_t d = (size_t)m->d, np = d * (d + 1) / 2;
    const void *ps[9] = {m->shift, m->sum, m->sxx, m->n_pos, m->n_nz, m->sum_abs, m->max, m->min, m->coact};
    const size_t ns[9] = {8 * d, 8 * d, 8 * np, 8 * d, 8 * d, 8 * d, 4 * d, 4 * d, 4 * np};
    const int k = m->topk > 0 ? 9 : 8;
    for (int i = 0; i < k; i++) p[i] = ps[i], n[i] = ns[i];
    return k;
}

kf_status kf_statsfile_writer_open(kf_statsfile_writer *w, const char *path, uint64_t fingerprint,
                                   const kf_calib_protocol *p, int n_entries, kf_error *err) {
    memset(w, 0, sizeof *w);
    if (strlen(path) >= sizeof w->path) return kf_error_set(err, KF_ERR_ARG, "%s: path too long", path);
    kf_status st = kf_file_begin(path, w->tmp, sizeof w->tmp, &w->fp, err);
    if (st != KF_OK) return st;
    strcpy(w->path, path);
    w->ok = 1;
    w->n_expected = n_entries;
    uint32_t version = KF_STATSFILE_VERSION, n = (uint32_t)n_entries;
    int32_t proto[4] = {p->ctx, p->batch, p->bos_id < 0 ? -1 : p->bos_id, p->n_ranks};
    int64_t n_tokens = p->max_tokens;
    if (fwrite(KF_STATS_MAGIC, 1, 8, w->fp) != 8 || fwrite(&version, 4, 1, w->fp) != 1 ||
        fwrite(&n, 4, 1, w->fp) != 1 || fwrite(&fingerprint, 8, 1, w->fp) != 1 || fwrite(proto, 4, 4, w->fp) != 4 ||
        fwrite(&n_tokens, 8, 1, w->fp) != 1)
        w->ok = 0;
    return KF_OK;
}

void kf_statsfile_writer_begin(kf_statsfile_writer *w, const char *name, const kf_moments *shape, int has_shift,
                               int64_t n) {
    uint32_t name_len = (uint32_t)strlen(name), d = (uint32_t)shape->d, topk = (uint32_t)shape->topk;
    uint32_t hs = (uint32_t)has_shift;
    uint64_t nb = entry_bytes(name_len, d, topk);
    if (w->ok && fwrite(&nb, sizeof nb, 1, w->fp) != 1) w->ok = 0;
    w->hash = FNV_OFFSET;
    wr(w, &name_len, 4);
    wr(w, name, name_len);
    wr(w, &d, 4);
    wr(w, &topk, 4);
    wr(w, &shape->eps, 4);
    wr(w, &hs, 4);
    wr(w, &n, 8);
}

void kf_statsfile_writer_data(kf_statsfile_writer *w, const void *p, size_t n) { wr(w, p, n); }

void kf_statsfile_writer_end(kf_statsfile_writer *w) {
    uint64_t h = w->hash;
    if (w->ok && fwrite(&h, sizeof h, 1, w->fp) != 1) w->ok = 0;
    w->n_written++;
}

void kf_statsfile_writer_entry(kf_statsfile_writer *w, const char *name, const kf_moments *m) {
    const void *p[9];
    size_t n[9];
    kf_statsfile_writer_begin(w, name, m, m->has_shift, m->n);
    for (int i = 0, k = kf_statsfile_entry_arrays(m, p, n); i < k; i++) wr(w, p[i], n[i]);
    kf_statsfile_writer_end(w);
}

kf_status kf_statsfile_writer_add(kf_statsfile_writer *w, const kf_statsfile *f, kf_error *err) {
    for (int i = 0; i < f->n && w->ok; i++) kf_statsfile_writer_entry(w, f->entries[i]->name, &f->entries[i]->m);
    if (!w->ok) return kf_error_set(err, KF_ERR_IO, "%s: write failed", w->tmp);
    return KF_OK;
}

kf_status kf_statsfile_writer_close(kf_statsfile_writer *w, kf_error *err) {
    if (!w->fp) return KF_OK;
    const int counted = w->n_written == w->n_expected;
    kf_status st = kf_file_commit(w->fp, w->ok && counted, w->tmp, w->path, err);
    w->fp = NULL;
    if (w->ok && !counted)
        st = kf_error_set(err, KF_ERR_INTERNAL, "%s: %d of %d entries written", w->path, w->n_written, w->n_expected);
    return st;
}

void kf_statsfile_writer_abort(kf_statsfile_writer *w) {
    if (!w->fp) return;
    kf_error e;
    kf_file_commit(w->fp, false, w->tmp, w->path, &e);
    w->fp = NULL;
}

kf_status kf_statsfile_save(const kf_statsfile *f, const char *path, kf_error *err) {
    kf_statsfile_writer w;
    kf_status st = kf_statsfile_writer_open(&w, path, f->fingerprint, &f->protocol, f->n, err);
    if (st != KF_OK) return st;
    st = kf_statsfile_writer_add(&w, f, err);
    if (st != KF_OK) {
        kf_statsfile_writer_abort(&w);
        return st;
    }
    return kf_statsfile_writer_close(&w, err);
}

typedef struct {
    const uint8_t *p;
    size_t size, off;
} stats_reader;

static int rd(stats_reader *r, void *dst, size_t n) {
    if (!kf_range_ok(r->off, n, r->size)) return 0;
    if (n) memcpy(dst, r->p + r->off, n);
    r->off += n;
    return 1;
}

// Parses entry idx at r->off (already checked to hold n_bytes bytes) into f.
static kf_status read_entry(kf_statsfile *f, stats_reader *r, uint64_t nb, int idx, const char *path, kf_error *err) {
    size_t start = r->off;
    uint32_t name_len, d, topk, has_shift;
    float eps;
    int64_t n;
    char name[KF_STATSFILE_NAME_MAX + 1];
    if (nb < 8 || !rd(r, &name_len, 4))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: entry %d: truncated", path, idx);
    if (name_len == 0 || name_len > KF_STATSFILE_NAME_MAX)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: entry %d: bad name length %u", path, idx, name_len);
    if (!rd(r, name, name_len) || !rd(r, &d, 4) || !rd(r, &topk, 4) || !rd(r, &eps, 4) || !rd(r, &has_shift, 4) ||
        !rd(r, &n, 8))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: entry %d: truncated", path, idx);
    name[name_len] = 0;
    if (strlen(name) != name_len) return kf_error_set(err, KF_ERR_FORMAT, "%s: entry %d: NUL in name", path, idx);
    char esc[KF_ESC_NAME];
    const char *shown = kf_str_escape(esc, sizeof esc, name, name_len); // for messages
    if (d == 0 || d > (1u << 20) || topk > d || !(eps >= 0) || has_shift > 1 || n < 0 || (n > 0 && !has_shift))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: entry '%s': bad header (d=%u topk=%u n=%lld)", path, shown, d, topk,
                            (long long)n);
    if (nb != entry_bytes(name_len, d, topk))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: entry '%s': size %llu does not match d=%u topk=%u", path, shown,
                            (unsigned long long)nb, d, topk);
    uint64_t sum_stored;
    memcpy(&sum_stored, r->p + start + nb - 8, 8);
    if (fnv1a(FNV_OFFSET, r->p + start, nb - 8) != sum_stored)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: entry '%s': checksum mismatch (corrupted file)", path, shown);
    if (kf_statsfile_get(f, name))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: duplicate entry '%s'", path, shown);
    kf_moments *m;
    kf_status st = kf_statsfile_add(f, name, (int)d, (int)topk, eps, &m, err);
    if (st != KF_OK) return st;
    m->n = n;
    m->has_shift = (int)has_shift;
    // All sizes were checked against nb above, so these reads stay in range.
    rd(r, m->shift, 8 * (size_t)d);
    rd(r, m->sum, 8 * (size_t)d);
    rd(r, m->sxx, 8 * ((size_t)d * (d + 1) / 2));
    rd(r, m->n_pos, 8 * (size_t)d);
    rd(r, m->n_nz, 8 * (size_t)d);
    rd(r, m->sum_abs, 8 * (size_t)d);
    rd(r, m->max, 4 * (size_t)d);
    rd(r, m->min, 4 * (size_t)d);
    if (topk > 0) rd(r, m->coact, 4 * ((size_t)d * (d + 1) / 2));
    r->off += 8; // checksum
    if (r->off != start + nb) return kf_error_set(err, KF_ERR_INTERNAL, "%s: entry '%s': size bookkeeping", path, shown);
    return KF_OK;
}

// The protocol fields of a version 2 header.
static kf_status read_protocol(stats_reader *r, kf_calib_protocol *p, const char *path, kf_error *err) {
    int32_t v[4];
    int64_t n_tokens;
    if (!rd(r, v, sizeof v) || !rd(r, &n_tokens, 8))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: truncated header", path);
    *p = (kf_calib_protocol){.ctx = v[0], .batch = v[1], .bos_id = v[2], .n_ranks = v[3], .max_tokens = n_tokens};
    if (p->ctx < 2 || p->batch < 1 || p->bos_id < -1 || p->n_ranks < 1 || n_tokens < 0)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: bad calibration protocol (ctx %d, batch %d, BOS %d, %d ranks)",
                            path, p->ctx, p->batch, p->bos_id, p->n_ranks);
    return KF_OK;
}

kf_status kf_statsfile_load(kf_statsfile *f, const char *path, uint64_t fingerprint, const kf_calib_protocol *want,
                            kf_error *err) {
    memset(f, 0, sizeof *f);
    f->fingerprint = fingerprint;
    kf_mmap mm;
    kf_status st = kf_mmap_open(&mm, path, err);
    if (st != KF_OK) return st;
    stats_reader r = {mm.data, mm.size, 0};
    char magic[8];
    uint32_t version = 0, n_entries = 0;
    uint64_t fp = 0;
    if (!rd(&r, magic, 8) || memcmp(magic, KF_STATS_MAGIC, 8) != 0) {
        st = kf_error_set(err, KF_ERR_FORMAT, "%s: bad magic (not a kfuse statistics file)", path);
    } else if (!rd(&r, &version, 4) || !rd(&r, &n_entries, 4) || !rd(&r, &fp, 8)) {
        st = kf_error_set(err, KF_ERR_FORMAT, "%s: truncated header", path);
    } else if (version == 1) {
        st = kf_error_set(err, KF_ERR_UNSUPPORTED,
                          "%s: version 1 does not record its calibration windows; gather it again with kfuse analyze",
                          path);
    } else if (version != KF_STATSFILE_VERSION) {
        st = kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: version %u, this build reads version %d", path, version,
                          KF_STATSFILE_VERSION);
    } else if (fp != fingerprint) {
        st = kf_error_set(err, KF_ERR_ARG, "%s: model fingerprint %016llx does not match the model's %016llx", path,
                          (unsigned long long)fp, (unsigned long long)fingerprint);
    } else if ((st = read_protocol(&r, &f->protocol, path, err)) == KF_OK && want) {
        st = kf_calib_check_same(&f->protocol, want, path, err);
    }
    for (uint32_t i = 0; st == KF_OK && i < n_entries; i++) {
        uint64_t nb;
        if (!rd(&r, &nb, 8) || !kf_range_ok(r.off, nb, r.size))
            st = kf_error_set(err, KF_ERR_FORMAT, "%s: truncated in entry %u of %u", path, i, n_entries);
        else
            st = read_entry(f, &r, nb, (int)i, path, err);
    }
    if (st == KF_OK && r.off != r.size)
        st = kf_error_set(err, KF_ERR_FORMAT, "%s: %zu trailing bytes after %u entries", path, r.size - r.off,
                          n_entries);
    kf_mmap_close(&mm);
    if (st != KF_OK) kf_statsfile_free(f);
    return st;
}

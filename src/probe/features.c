// Feature extraction at hook points into .npy feature files (probe/features.h).
#define _GNU_SOURCE // pwrite, ftruncate
#include "probe/features.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/progress.h"
#include "core/tensor.h"
#include "runtime/forward.h"

kf_status kf_feat_layout_init(kf_feat_layout *lay, const kf_model *m, kf_feat_kind kind, kf_error *err) {
    memset(lay, 0, sizeof *lay);
    lay->kind = kind;
    lay->n_blocks = kind == KF_FEAT_RESID ? m->n_layer + 1 : m->n_layer;
    lay->col = malloc(((size_t)lay->n_blocks + 1) * sizeof *lay->col);
    if (!lay->col) return kf_error_set(err, KF_ERR_NOMEM, "features: out of memory");
    lay->col[0] = 0;
    for (int b = 0; b < lay->n_blocks; b++)
        lay->col[b + 1] = lay->col[b] + (kind == KF_FEAT_RESID ? m->n_embd : m->layers[b].n_ff);
    return KF_OK;
}

void kf_feat_layout_free(kf_feat_layout *lay) {
    if (!lay) return;
    free(lay->col);
    lay->col = NULL;
}

// ---- .npy -----------------------------------------------------------------------

// The v1.0 header of a (rows, cols) array into h (cap >= 128); returns its length,
// a multiple of 64 as numpy writes it.
static size_t npy_header(char *h, size_t cap, const char *descr, int64_t rows, int64_t cols) {
    char dict[112], shape[48];
    if (cols < 0) snprintf(shape, sizeof shape, "(%" PRId64 ",)", rows);
    else snprintf(shape, sizeof shape, "(%" PRId64 ", %" PRId64 ")", rows, cols);
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
    size_t total = (10 + (size_t)n + 1 + 63) / 64 * 64;
    if (total > cap) return 0;
    memcpy(h, "\x93NUMPY\x01\x00", 8);
    size_t hl = total - 10;
    h[8] = (char)(hl & 0xFF);
    h[9] = (char)(hl >> 8);
    memcpy(h + 10, dict, (size_t)n);
    memset(h + 10 + n, ' ', total - 10 - (size_t)n - 1);
    h[total - 1] = '\n';
    return total;
}

kf_status kf_npy_write(const char *path, const char *descr, const void *data, size_t elem, int64_t rows,
                       int64_t cols, kf_error *err) {
    char h[256], tmp[1100];
    size_t hl = npy_header(h, sizeof h, descr, rows, cols);
    FILE *f;
    kf_status s = kf_file_begin(path, tmp, sizeof tmp, &f, err);
    if (s != KF_OK) return s;
    size_t n = (size_t)rows * (size_t)(cols < 0 ? 1 : cols);
    bool ok = hl > 0 && fwrite(h, 1, hl, f) == hl && (n == 0 || fwrite(data, elem, n, f) == n);
    return kf_file_commit(f, ok, tmp, path, err);
}

kf_status kf_features_open(kf_features *f, const char *path, kf_error *err) {
    memset(f, 0, sizeof *f);
    kf_status s = kf_mmap_open(&f->map, path, err);
    if (s != KF_OK) return s;
    const char *d = f->map.data;
    size_t size = f->map.size;
    if (size < 10 || memcmp(d, "\x93NUMPY\x01\x00", 8) != 0) {
        kf_mmap_close(&f->map);
        return kf_error_set(err, KF_ERR_FORMAT, "%s: not a .npy v1.0 file", path);
    }
    size_t hl = (unsigned char)d[8] | (size_t)(unsigned char)d[9] << 8;
    char dict[512];
    if (!kf_range_ok(10, hl, size) || hl >= sizeof dict) {
        kf_mmap_close(&f->map);
        return kf_error_set(err, KF_ERR_FORMAT, "%s: .npy header of %zu bytes runs past the file", path, hl);
    }
    memcpy(dict, d + 10, hl);
    dict[hl] = 0;
    long long rows = -1, cols = -1;
    const char *sh = strstr(dict, "'shape': (");
    bool f32 = strstr(dict, "'descr': '<f4'") != NULL, f16 = strstr(dict, "'descr': '<f2'") != NULL;
    if (!sh || sscanf(sh, "'shape': (%lld, %lld)", &rows, &cols) != 2 || rows < 0 || cols < 1 || (!f32 && !f16) ||
        !strstr(dict, "'fortran_order': False")) {
        kf_mmap_close(&f->map);
        return kf_error_set(err, KF_ERR_FORMAT, "%s: expected a C-order 2-D '<f4' or '<f2' array", path);
    }
    size_t elem = f16 ? 2 : 4;
    if ((unsigned long long)rows > SIZE_MAX / elem / (unsigned long long)cols ||
        !kf_range_ok(10 + hl, (size_t)rows * (size_t)cols * elem, size)) {
        kf_mmap_close(&f->map);
        return kf_error_set(err, KF_ERR_FORMAT, "%s: %lld x %lld values do not fit the file", path, rows, cols);
    }
    f->n_rows = rows;
    f->n_cols = cols;
    f->f16 = f16;
    f->data = d + 10 + hl;
    return KF_OK;
}

void kf_features_close(kf_features *f) {
    if (!f) return;
    kf_mmap_close(&f->map);
    memset(f, 0, sizeof *f);
}

void kf_features_gather(const kf_features *f, const int64_t *cols, int n, float *dst) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < f->n_rows; r++) {
        float *o = dst + r * n;
        if (f->f16) {
            const uint16_t *row = (const uint16_t *)f->data + r * f->n_cols;
            for (int j = 0; j < n; j++) o[j] = kf_f16_to_f32_1(row[cols[j]]);
        } else {
            const float *row = (const float *)f->data + r * f->n_cols;
            for (int j = 0; j < n; j++) o[j] = row[cols[j]];
        }
    }
}

// ---- extraction ------------------------------------------------------------------

// What the hook needs to turn one forward call into rows.
typedef struct {
    const kf_feat_layout *lay;
    kf_feat_agg agg;
    int T;            // positions per sequence of this call
    int n_items;      // items of this call
    int32_t *item_b;  // (batch_tokens) sequence of each item within the call
    const int32_t **item_span; // (batch_tokens) its [start, end)
    float *rows;      // (batch_tokens, n_cols)
    int64_t n_cols;
} feat_hook;

static void on_hook(void *user, int layer, kf_hook_point p, float *x, int n, int dim) {
    feat_hook *h = user;
    int blk;
    if (h->lay->kind == KF_FEAT_RESID) {
        if (p == KF_HOOK_BLOCK_IN && layer != 0) return;
        blk = p == KF_HOOK_BLOCK_IN ? 0 : layer + 1;
    } else {
        blk = layer;
    }
    const int64_t c0 = h->lay->col[blk];
    // x (n = B*T, dim): item i reads rows b*T + [start, end)
#pragma omp parallel for schedule(static) if (h->n_items * dim >= 65536)
    for (int i = 0; i < h->n_items; i++) {
        const int s = h->item_span[i][0], e = h->item_span[i][1];
        const float *base = x + ((int64_t)h->item_b[i] * h->T) * dim;
        float *o = h->rows + (int64_t)i * h->n_cols + c0;
        if (h->agg == KF_AGG_MEAN) {
            memset(o, 0, sizeof(float) * (size_t)dim);
            for (int t = s; t < e; t++) {
                const float *xr = base + (int64_t)t * dim;
                for (int j = 0; j < dim; j++) o[j] += xr[j];
            }
            const float inv = 1.0f / (float)(e - s);
            for (int j = 0; j < dim; j++) o[j] *= inv;
        } else {
            const int t = h->agg == KF_AGG_LAST ? e - 1 : s;
            memcpy(o, base + (int64_t)t * dim, sizeof(float) * (size_t)dim);
        }
    }
}

// Sorts int64 keys ascending.
static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

kf_status kf_features_extract(const kf_model *m, const kf_task_tokens *t, const kf_feat_opts *o, const char *path,
                              kf_feat_stats *stats, kf_feat_progress_fn progress, void *user, kf_error *err) {
    memset(stats, 0, sizeof *stats);
    kf_feat_layout lay;
    kf_status s = kf_feat_layout_init(&lay, m, o->kind, err);
    if (s != KF_OK) return s;
    int bt = o->batch_tokens > 0 ? o->batch_tokens : 1024;
    if (bt < t->max_len) bt = t->max_len;
    const int64_t D = lay.col[lay.n_blocks];
    const size_t elem = o->f16 ? 2 : 4;
    int64_t *order = malloc((size_t)t->n_sent * sizeof *order);
    int32_t *tokens = malloc((size_t)bt * sizeof *tokens);
    int32_t *item_b = malloc((size_t)bt * sizeof *item_b);
    const int32_t **item_span = malloc((size_t)bt * sizeof *item_span);
    int64_t *item_idx = malloc((size_t)bt * sizeof *item_idx);
    float *rows = malloc((size_t)bt * (size_t)D * sizeof *rows);
    uint16_t *half = o->f16 ? malloc((size_t)D * sizeof *half) : NULL;
    kf_ctx *ctx = NULL;
    FILE *f = NULL;
    char tmp[1100];
    if (!order || !tokens || !item_b || !item_span || !item_idx || !rows || (o->f16 && !half)) {
        s = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory for a batch of features", path);
        goto done;
    }
    s = kf_ctx_init(&ctx, m, bt, 0, err);
    if (s != KF_OK) goto done;
    s = kf_file_begin(path, tmp, sizeof tmp, &f, err);
    if (s != KF_OK) goto done;
    char h[256];
    size_t hl = npy_header(h, sizeof h, o->f16 ? "<f2" : "<f4", t->n_items, D);
    bool ok = hl > 0 && fwrite(h, 1, hl, f) == hl && fflush(f) == 0 &&
              ftruncate(fileno(f), (off_t)(hl + (size_t)t->n_items * (size_t)D * elem)) == 0;

    // Sentences in order of length, then index (key len << 32 | index), so
    // that the B sentences of one call pad little.
    for (int si = 0; si < t->n_sent; si++) order[si] = (t->tok_off[si + 1] - t->tok_off[si]) << 32 | si;
    qsort(order, (size_t)t->n_sent, sizeof *order, cmp_i64);

    feat_hook hk = {.lay = &lay, .agg = o->agg, .item_b = item_b, .item_span = item_span, .rows = rows, .n_cols = D};
    kf_ctx_set_hook(ctx, on_hook, &hk, o->kind == KF_FEAT_RESID ? (1u << KF_HOOK_BLOCK_IN) | (1u << KF_HOOK_BLOCK_OUT)
                                                               : 1u << KF_HOOK_FFN_ACT);
    const int64_t total = t->tok_off[t->n_sent];
    const double t0 = kf_time_now();
    for (int next = 0; ok && next < t->n_sent;) {
        // B sentences of the next lengths (ascending), padded to the longest.
        int B = 0, T = 0;
        while (next + B < t->n_sent) {
            int si = (int)(order[next + B] & 0xFFFFFFFF);
            int len = (int)(t->tok_off[si + 1] - t->tok_off[si]);
            if ((int64_t)(B + 1) * len > bt) break;
            T = len;
            B++;
        }
        int n_items = 0;
        for (int b = 0; b < B; b++) {
            int si = (int)(order[next + b] & 0xFFFFFFFF);
            int len = (int)(t->tok_off[si + 1] - t->tok_off[si]);
            memcpy(tokens + (int64_t)b * T, t->tokens + t->tok_off[si], sizeof *tokens * (size_t)len);
            for (int p = len; p < T; p++) tokens[(int64_t)b * T + p] = t->tokens[t->tok_off[si]];
            for (int64_t k = t->item_off[si]; k < t->item_off[si + 1]; k++, n_items++) {
                item_b[n_items] = b;
                item_span[n_items] = t->span + 2 * k;
                item_idx[n_items] = k;
            }
            stats->n_tokens += len;
            stats->n_padded += T - len;
        }
        hk.T = T;
        hk.n_items = n_items;
        s = kf_forward_prefill(ctx, tokens, B, T, NULL, err);
        if (s != KF_OK) {
            ok = false;
            break;
        }
        for (int i = 0; i < n_items && ok; i++) {
            const float *r = rows + (int64_t)i * D;
            const void *src = r;
            if (o->f16) {
                kf_f32_to_dtype(KF_DTYPE_F16, r, half, D);
                src = half;
            }
            off_t off = (off_t)(hl + (size_t)item_idx[i] * (size_t)D * elem);
            ok = pwrite(fileno(f), src, (size_t)D * elem, off) == (ssize_t)((size_t)D * elem);
        }
        next += B;
        if (progress) progress(user, stats->n_tokens, total);
    }
    stats->seconds = kf_time_now() - t0;
    stats->n_rows = t->n_items;
    kf_ctx_set_hook(ctx, NULL, NULL, 0);
    if (s == KF_OK && !ok) s = kf_error_set(err, KF_ERR_IO, "%s: cannot write the features", path);
    {
        kf_status cs = kf_file_commit(f, s == KF_OK, tmp, path, s == KF_OK ? err : NULL);
        if (s == KF_OK) s = cs;
    }
done:
    kf_ctx_free(ctx);
    kf_feat_layout_free(&lay);
    free(order);
    free(tokens);
    free(item_b);
    free(item_span);
    free(item_idx);
    free(rows);
    free(half);
    return s;
}

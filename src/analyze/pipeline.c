#include "analyze/pipeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef KF_HAVE_MPI
#include <mpi.h>
#endif

#include "analyze/recorder.h"
#include "analyze/steps.h"
#include "calib/calib.h"
#include "core/file.h"
#include "core/progress.h"
#include "core/rng.h"
#include "runtime/forward.h"

void kf_analyze_opts_default(kf_analyze_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_tokens = 65536;
    o->ctx = 256;
    o->batch = 4;
    o->threshold = 0.3;
    o->seed = 1;
    o->epsilon = 0.05;
    o->sample_tokens = 2048;
    o->context_tokens = 8192;
    o->n_contexts = 5;
    o->context_radius = 4;
    o->joint_max_dims = 8192;
    o->resid_stride = 4;
    o->bos_id = -1;
    o->n_ranks = 1;
}

// ---------------------------------------------------------------- helpers

// Replaces bytes that are not valid UTF-8 (a context cut through a
// multi-byte character) by '?', so the JSON and HTML stay valid.
static void utf8_sanitize(char *s) {
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        int len = *p < 0x80 ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : (*p >> 3) == 30 ? 4 : 0;
        int ok = len > 0;
        for (int i = 1; ok && i < len; i++) ok = (p[i] & 0xC0) == 0x80;
        if (!ok) {
            *p++ = '?';
            continue;
        }
        p += len;
    }
}

static double seconds_since(double t0) { return kf_time_now() - t0; }

// ---------------------------------------------------------------- recording


static void rec_store_resid(recorder *r, int rep, const float *x, int n) {
    const size_t C = (size_t)r->C;
    memcpy(r->resid_buf + (size_t)rep * r->N * C, x, (size_t)n * C * sizeof *x);
    if (r->resid_sample)
        for (int i = 0; i < n; i++)
            if (r->slot[i] >= 0)
                memcpy(r->resid_sample + ((size_t)rep * r->S + r->slot[i]) * C, x + i * C, C * sizeof *x);
}

// After the last block of a call: Block Influence, residual moments, CKA.
static void rec_finish_call(recorder *r, int n) {
    const size_t C = (size_t)r->C, NC = (size_t)r->N * C;
    for (int l = 0; l < r->L; l++)
        kf_bi_add(&r->bi[l], r->resid_buf + l * NC, r->resid_buf + (l + 1) * NC, n, r->C);
    if (r->joint) { // rows of tokens whose index is a multiple of the stride, in blocks
        const size_t RC = (size_t)r->R * C;
        int i = (int)((r->stride - r->t0 % r->stride) % r->stride);
        while (i < n && r->st == KF_OK) {
            int nb = 0;
            for (; nb < KF_MOMENTS_BLOCK && i < n; nb++, i += r->stride)
                for (int rep = 0; rep < r->R; rep++)
                    memcpy(r->rows + nb * RC + rep * C, r->resid_buf + rep * NC + (size_t)i * C, C * sizeof(float));
            r->st = kf_moments_add(r->resid_all, r->rows, nb, &r->err);
        }
        return;
    }
    for (int rep = 0; rep < r->R && r->st == KF_OK; rep++)
        r->st = kf_moments_add(r->resid[rep], r->resid_buf + rep * NC, n, &r->err);
    // minibatch CKA on pieces of 256..511 rows (at least 4)
    int np = n / 256 > 0 ? n / 256 : 1;
    for (int p = 0; p < np && r->st == KF_OK; p++) {
        int a = (int)((int64_t)n * p / np), b = (int)((int64_t)n * (p + 1) / np);
        if (b - a < 4) break;
        for (int rep = 0; rep < r->R && r->st == KF_OK; rep++)
            r->st = kf_cka_mb_layer(&r->cka, rep, r->resid_buf + rep * NC + (size_t)a * C, b - a, r->C, &r->err);
        if (r->st == KF_OK) r->st = kf_cka_mb_commit(&r->cka, &r->err);
    }
}

static void rec_hook(void *user, int layer, kf_hook_point p, float *x, int n, int dim) {
    recorder *r = user;
#ifdef KF_HAVE_MPI
    if (r->shard && p == KF_HOOK_BLOCK_IN && layer == 0) kf_analyze_shard_call(r, r->t0, n); // collectives: every call
    if (r->shard && p == KF_HOOK_FFN_ACT) {
        kf_analyze_shard_ffn(r, layer, x, n, dim);
        return;
    }
#endif
    if (r->st != KF_OK) return;
    if (p == KF_HOOK_BLOCK_IN && layer == 0) {
        rec_store_resid(r, 0, x, n);
    } else if (p == KF_HOOK_FFN_ACT) {
        r->st = kf_moments_add(r->ffn[layer], x, n, &r->err);
        float *smp = r->ffn_sample[layer];
        for (int i = 0; i < n; i++)
            if (r->slot[i] >= 0) memcpy(smp + (size_t)r->slot[i] * dim, x + (size_t)i * dim, (size_t)dim * sizeof *x);
    } else if (p == KF_HOOK_BLOCK_OUT) {
        rec_store_resid(r, layer + 1, x, n);
        if (layer == r->L - 1) rec_finish_call(r, n);
    }
}

// Sorted sample of S distinct token indices in [0, n) (Floyd's algorithm).
static kf_status choose_sample(int64_t n, int S, uint64_t seed, int64_t *pos, kf_error *err) {
    unsigned char *taken = calloc((size_t)(n + 7) / 8, 1);
    if (!taken) return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the token sample");
    uint64_t s = seed ^ 0x5A17u;
    for (int64_t j = n - S; j < n; j++) {
        int64_t t = (int64_t)(kf_rng_splitmix64(&s) % (uint64_t)(j + 1));
        if (taken[t >> 3] & (1u << (t & 7))) t = j;
        taken[t >> 3] |= (unsigned char)(1u << (t & 7));
    }
    int k = 0;
    for (int64_t t = 0; t < n; t++)
        if (taken[t >> 3] & (1u << (t & 7))) pos[k++] = t;
    free(taken);
    return KF_OK;
}

void kf_analyze_fill_slots(int32_t *slot, int64_t t0, int n, const int64_t *pos, int S) {
    int lo = 0, hi = S; // first sample >= t0
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (pos[mid] < t0) lo = mid + 1;
        else hi = mid;
    }
    for (int i = 0; i < n; i++) slot[i] = -1;
    for (int k = lo; k < S && pos[k] < t0 + n; k++) slot[pos[k] - t0] = k;
}

// ---------------------------------------------------------------- contexts

typedef struct {
    int k, M;
    const int32_t *labels; // (F)
    double *size;          // (k)
    double *score;         // (k, M) descending
    int64_t *pos;          // (k, M), -1 empty
} topctx;

typedef struct {
    topctx *act, *wgt;   // (L) each
    double *const *mu, *const *isd; // (L) each (F): mean and 1/std of the neurons
    double *csum;        // (max k) scratch
    float *z;            // (max F) scratch
    int64_t t0;          // token index of the call's first row
    const kf_analyze_opts *o;
} ctxpass;

static void topctx_push(topctx *tc, int c, double s, int64_t pos) {
    double *sc = tc->score + (size_t)c * tc->M;
    int64_t *ps = tc->pos + (size_t)c * tc->M;
    if (ps[tc->M - 1] >= 0 && s <= sc[tc->M - 1]) return;
    int p = tc->M - 1;
    while (p > 0 && (ps[p - 1] < 0 || s > sc[p - 1])) {
        sc[p] = sc[p - 1];
        ps[p] = ps[p - 1];
        p--;
    }
    sc[p] = s;
    ps[p] = pos;
}

static void topctx_row(topctx *tc, const float *z, int F, double *csum, int64_t pos) {
    memset(csum, 0, (size_t)tc->k * sizeof *csum);
    for (int j = 0; j < F; j++) csum[tc->labels[j]] += z[j];
    for (int c = 0; c < tc->k; c++)
        if (tc->size[c] > 0) topctx_push(tc, c, csum[c] / tc->size[c], pos);
}

static void ctx_hook(void *user, int layer, kf_hook_point p, float *x, int n, int dim) {
    ctxpass *cp = user;
    const double *mu = cp->mu[layer], *isd = cp->isd[layer];
    for (int i = 0; i < n; i++) {
        if (cp->o->bos_id >= 0 && (cp->t0 + i) % cp->o->ctx == 0) continue; // BOS, not the text's token there
        const float *a = x + (size_t)i * dim;
        for (int j = 0; j < dim; j++) cp->z[j] = (float)((a[j] - mu[j]) * isd[j]);
        topctx_row(&cp->act[layer], cp->z, dim, cp->csum, cp->t0 + i);
        topctx_row(&cp->wgt[layer], cp->z, dim, cp->csum, cp->t0 + i);
    }
}

static kf_status topctx_init(topctx *tc, const kf_analysis_kmeans *cl, int F, int M, kf_error *err) {
    tc->k = cl->k;
    tc->M = M;
    tc->labels = cl->labels;
    tc->size = calloc((size_t)cl->k, sizeof *tc->size);
    tc->score = calloc((size_t)cl->k * M, sizeof *tc->score);
    tc->pos = malloc((size_t)cl->k * M * sizeof *tc->pos);
    if (!tc->size || !tc->score || !tc->pos) return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for contexts");
    for (size_t i = 0; i < (size_t)cl->k * M; i++) tc->pos[i] = -1;
    for (int j = 0; j < F; j++) tc->size[cl->labels[j]]++;
    return KF_OK;
}

static void topctx_free(topctx *tc) {
    free(tc->size);
    free(tc->score);
    free(tc->pos);
}

// Text of ids[a, b) as the tokenizer writes it after token prev.
static void detok(const kf_tokenizer *tok, const int32_t *ids, int64_t a, int64_t b, int32_t prev, char *out,
                  size_t cap) {
    size_t len = 0;
    out[0] = 0;
    for (int64_t i = a; i < b && len + 1 < cap; i++) {
        len += kf_tokenizer_decode_piece(tok, prev, ids[i], out + len, cap - len);
        prev = ids[i];
    }
    utf8_sanitize(out);
}

static char *text_dup(const char *s, kf_error *err) {
    char *d = strdup(s);
    if (!d) kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for contexts");
    return d;
}

// The top contexts of tc into km's clusters: position, score, the ids of up
// to radius tokens on each side and, with a tokenizer, their text.
static kf_status contexts_fill(const topctx *tc, const kf_tokenizer *tok, const int32_t *ids, int64_t n_ids,
                               int radius, kf_analysis_kmeans *km, kf_error *err) {
    char left[512], mid[128], right[512];
    for (int c = 0; c < tc->k; c++) {
        int n = 0;
        while (n < tc->M && tc->pos[(size_t)c * tc->M + n] >= 0) n++;
        kf_status st = kf_analysis_cluster_init_contexts(&km->clusters[c], n, err);
        if (st != KF_OK) return st;
        for (int q = 0; q < n; q++) {
            kf_analysis_context *e = &km->clusters[c].contexts[q];
            int64_t pos = tc->pos[(size_t)c * tc->M + q];
            int64_t a = pos - radius > 0 ? pos - radius : 0, b = pos + 1 + radius < n_ids ? pos + 1 + radius : n_ids;
            e->pos = pos;
            e->score = tc->score[(size_t)c * tc->M + q];
            if (tok) {
                detok(tok, ids, a, pos, a > 0 ? ids[a - 1] : -1, left, sizeof left);
                detok(tok, ids, pos, pos + 1, pos > 0 ? ids[pos - 1] : -1, mid, sizeof mid);
                detok(tok, ids, pos + 1, b, ids[pos], right, sizeof right);
                if (!(e->left = text_dup(left, err)) || !(e->token = text_dup(mid, err)) ||
                    !(e->right = text_dup(right, err)))
                    return KF_ERR_NOMEM;
            }
            if (!(e->ids = malloc((size_t)(b - a) * sizeof *e->ids)))
                return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for contexts");
            memcpy(e->ids, ids + a, (size_t)(b - a) * sizeof *e->ids);
            e->n_ids = (int)(b - a);
        }
    }
    return KF_OK;
}


// ---------------------------------------------------------------- driver

static void progress(const kf_analyze_opts *o, const char *stage, int64_t done, int64_t total) {
    if (o->progress) o->progress(o->progress_user, stage, done, total);
}

// Co-activation set size of a layer of F neurons.
static int ffn_topk(const kf_analyze_opts *o, int F) {
    int topk = o->coact_topk > 0 ? o->coact_topk : F / 32 > 4 ? F / 32 : 4;
    return topk > F ? F : topk;
}

// The residual-stream part of the recorder (moments, CKA, Block Influence,
// buffers); the accumulators themselves belong to their statsfile.
static void recorder_drop_resid(recorder *r) {
    free(r->resid);
    kf_cka_mb_free(&r->cka);
    free(r->bi);
    free(r->resid_buf);
    free(r->rows);
    r->resid = NULL, r->bi = NULL, r->resid_buf = NULL, r->rows = NULL, r->resid_all = NULL;
}

static void recorder_free(recorder *r) {
    recorder_drop_resid(r);
    free(r->calls);
    free(r->gather);
    free(r->slot_other);
    free(r->ffn);
    free(r->slot);
}

// Owner of every layer's FFN statistics among n_ranks ranks, balanced by
// bytes (kf_moments_bytes): the largest layers first, each to the rank
// holding the fewest bytes so far (the lowest rank on a tie).
// load (n_ranks) gets the bytes of each rank.
static void layer_owners(const kf_model *m, const kf_analyze_opts *o, int n_ranks, int32_t *owner, int64_t *load) {
    const int L = m->n_layer;
    for (int i = 0; i < n_ranks; i++) load[i] = 0;
    for (int l = 0; l < L; l++) owner[l] = -1;
    for (int done = 0; done < L; done++) {
        int best = -1;
        int64_t best_b = -1;
        for (int l = 0; l < L; l++) {
            int F = m->layers[l].n_ff;
            int64_t b = kf_moments_bytes(F, ffn_topk(o, F), !o->f64_products);
            if (owner[l] < 0 && b > best_b) best = l, best_b = b;
        }
        int rk = 0;
        for (int i = 1; i < n_ranks; i++)
            if (load[i] < load[rk]) rk = i;
        owner[best] = rk;
        load[rk] += best_b;
    }
}

// Shapes, sample slots and (sharded) the layer gather's buffers, shared by
// every pass; no accumulator yet.
static kf_status recorder_init(recorder *r, const kf_model *m, const kf_analyze_opts *o, kf_analysis *a,
                               kf_error *err) {
    memset(r, 0, sizeof *r);
    r->m = m;
    r->L = m->n_layer;
    r->C = m->n_embd;
    r->R = m->n_layer + 1;
    r->N = o->batch * o->ctx;
    r->joint = (int64_t)r->R * r->C <= o->joint_max_dims;
    r->stride = o->resid_stride;
    r->S = a->S;
    r->ffn_sample = a->ffn_sample;
    r->resid_sample = a->resid_sample;
    r->first = 0, r->end = r->L;
    r->cache_in = r->cache_out = -1;
    r->ffn = calloc((size_t)r->L, sizeof *r->ffn);
    r->slot = malloc((size_t)r->N * sizeof *r->slot);
    if (!r->ffn || !r->slot) return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the recorder");
    r->shard = a->shard;
    r->rank = o->rank;
    r->n_ranks = o->n_ranks;
    r->owner = a->layer_owner;
    r->sample_pos = a->sample_pos;
    if (r->shard) {
        int max_F = 0;
        for (int l = 0; l < r->L; l++)
            if (r->owner[l] == r->rank && m->layers[l].n_ff > max_F) max_F = m->layers[l].n_ff;
        if ((int64_t)r->N * max_F > INT32_MAX)
            return kf_error_set(err, KF_ERR_ARG, "analyze: %d rows x %d neurons exceed one MPI message", r->N, max_F);
        r->calls = calloc((size_t)r->n_ranks * 2, sizeof *r->calls);
        r->slot_other = malloc((size_t)r->N * sizeof *r->slot_other);
        r->gather = max_F > 0 ? malloc((size_t)r->N * max_F * sizeof *r->gather) : NULL;
        if (!r->calls || !r->slot_other || (max_F > 0 && !r->gather))
            return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the layer gather");
    }
    return KF_OK;
}

// FFN accumulators "layer.<l>.ffn_act" of layers [l0, l1) into stats
// (sharded: only the layers this rank owns).
static kf_status recorder_add_ffn(recorder *r, kf_statsfile *stats, const kf_analyze_opts *o, int l0, int l1,
                                  kf_error *err) {
    char name[64];
    kf_status st;
    for (int l = l0; l < l1; l++) {
        if (r->shard && r->owner[l] != r->rank) continue; // another rank holds it
        int F = r->m->layers[l].n_ff;
        snprintf(name, sizeof name, "layer.%d.ffn_act", l);
        if ((st = kf_statsfile_add(stats, name, F, ffn_topk(o, F), 1e-6f, &r->ffn[l], err)) != KF_OK) return st;
        if (!o->f64_products && (st = kf_moments_set_f32(r->ffn[l], err)) != KF_OK) return st;
    }
    return KF_OK;
}

// Residual-stream accumulators ("resid.all" or "resid.<r>") into stats, with
// the CKA, Block Influence and the buffers the recording needs.
static kf_status recorder_add_resid(recorder *r, kf_statsfile *stats, const kf_analyze_opts *o, kf_error *err) {
    r->resid = calloc((size_t)r->R, sizeof *r->resid);
    r->bi = calloc((size_t)r->L, sizeof *r->bi);
    r->resid_buf = malloc((size_t)r->R * r->N * r->C * sizeof *r->resid_buf);
    if (r->joint) r->rows = malloc((size_t)KF_MOMENTS_BLOCK * r->R * r->C * sizeof *r->rows);
    if (!r->resid || !r->bi || !r->resid_buf || (r->joint && !r->rows))
        return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the recorder");
    char name[64];
    kf_status st;
    if (r->joint) {
        if ((st = kf_statsfile_add(stats, "resid.all", r->R * r->C, 0, 1e-6f, &r->resid_all, err)) != KF_OK)
            return st;
        return o->f64_products ? KF_OK : kf_moments_set_f32(r->resid_all, err);
    }
    for (int rep = 0; rep < r->R; rep++) {
        snprintf(name, sizeof name, "resid.%d", rep);
        if ((st = kf_statsfile_add(stats, name, r->C, 0, 1e-6f, &r->resid[rep], err)) != KF_OK) return st;
        if (!o->f64_products && (st = kf_moments_set_f32(r->resid[rep], err)) != KF_OK) return st;
    }
    return kf_cka_mb_init(&r->cka, r->R, r->N < 256 ? r->N : 511, err);
}

// The calibration protocol of the recording pass; the context pass runs the
// same windows, its first context_tokens ones, on one rank.
static kf_calib_protocol rec_protocol(const kf_analyze_opts *o) {
    return (kf_calib_protocol){.ctx = o->ctx, .batch = o->batch, .bos_id = o->bos_id, .max_tokens = o->n_tokens,
                               .rank = o->rank, .n_ranks = o->n_ranks};
}

typedef struct {
    recorder *r;
    const kf_analyze_opts *o;
    const int64_t *sample_pos;
    const char *stage;      // progress stage
    int64_t base, total;    // progress of this pass: tokens before it and in all its stage's passes
} rec_run;

static kf_status rec_before(void *user, kf_calib_batch *b, kf_error *err) {
    (void)err;
    rec_run *rr = user;
    rr->r->t0 = b->first * b->ctx;
    kf_analyze_fill_slots(rr->r->slot, rr->r->t0, b->n * b->ctx, rr->sample_pos, rr->r->S);
    return KF_OK;
}

static kf_status rec_after(void *user, kf_calib_batch *b, kf_error *err) {
    rec_run *rr = user;
    if (rr->r->st != KF_OK) {
        *err = rr->r->err;
        return rr->r->st;
    }
    progress(rr->o, rr->stage, rr->base + b->done * b->ctx, rr->total);
    return KF_OK;
}

// A layer group's pass: the stream entering block `first` comes from the
// cache, the group's FFN activations are recorded, the stream leaving block
// end-1 goes to the next group's cache.
static void grp_hook(void *user, int layer, kf_hook_point p, float *x, int n, int dim) {
    recorder *r = user;
    if (r->st != KF_OK) return;
    const size_t bytes = (size_t)n * dim * sizeof *x;
    const off_t off = (off_t)(r->t0 * dim * (int64_t)sizeof *x);
    if (p == KF_HOOK_BLOCK_IN && layer == r->first && r->cache_in >= 0) {
        if (!kf_file_pio(r->cache_in, x, bytes, off, false))
            r->st = kf_error_set(&r->err, KF_ERR_IO, "analyze: cannot read the cached residual stream of layer %d",
                                 layer);
    } else if (p == KF_HOOK_FFN_ACT && r->ffn[layer]) {
        r->st = kf_moments_add(r->ffn[layer], x, n, &r->err);
        float *smp = r->ffn_sample[layer];
        for (int i = 0; i < n; i++)
            if (r->slot[i] >= 0) memcpy(smp + (size_t)r->slot[i] * dim, x + (size_t)i * dim, (size_t)dim * sizeof *x);
    } else if (p == KF_HOOK_BLOCK_OUT && layer == r->end - 1 && r->cache_out >= 0) {
        if (!kf_file_pio(r->cache_out, x, bytes, off, true))
            r->st = kf_error_set(&r->err, KF_ERR_IO, "analyze: cannot write the residual stream after layer %d "
                                 "to the temporary cache (disk full?)", layer);
    }
}

// Runs this rank's share of the calibration batches through blocks
// [r->first, r->end) with the hook installed on the given points.
static kf_status record(recorder *r, kf_ctx *ctx, const kf_model *m, const int32_t *ids, int64_t n_ids,
                        const kf_analyze_opts *o, const int64_t *sample_pos, kf_hook_fn hook, unsigned points,
                        rec_run *rr, kf_error *err) {
    const kf_calib_protocol p = rec_protocol(o);
    if (rr->base == 0) progress(o, rr->stage, 0, rr->total); // starts the clock of the rate and ETA
    kf_status st = kf_ctx_set_layers(ctx, r->first, r->end, err);
    if (st != KF_OK) return st;
    kf_ctx_set_hook(ctx, hook, r, points);
    rr->r = r, rr->o = o, rr->sample_pos = sample_pos;
    kf_calib_sink sink = {.before = rec_before, .after = rec_after, .user = rr};
    st = kf_calib_run(ctx, m, ids, n_ids, &p, &sink, err);
    kf_ctx_set_hook(ctx, NULL, NULL, 0);
    kf_status s2 = kf_ctx_set_layers(ctx, 0, m->n_layer, err);
    return st != KF_OK ? st : s2;
}

static kf_status check_opts(const kf_model *m, const int32_t *ids, int64_t n_ids, const kf_analyze_opts *o,
                            kf_error *err) {
    if (o->ctx < 4 || o->batch < 1 || (int64_t)o->ctx * o->batch > (1 << 24))
        return kf_error_set(err, KF_ERR_ARG, "analyze: bad context %d or batch %d", o->ctx, o->batch);
    if (m->pos == KF_POS_LEARNED && o->ctx > m->n_ctx_train)
        return kf_error_set(err, KF_ERR_ARG, "analyze: ctx %d exceeds the model's %d positions", o->ctx, m->n_ctx_train);
    int64_t n_use = o->n_tokens < n_ids ? o->n_tokens : n_ids;
    if (n_use / o->ctx < 1)
        return kf_error_set(err, KF_ERR_ARG, "analyze: %lld calibration tokens, need at least one sequence of %d",
                            (long long)n_use, o->ctx);
    if (!(o->threshold >= 0 && o->threshold <= 1) || !(o->epsilon > 0) || o->k < 0 || o->sample_tokens < 1 ||
        o->n_contexts < 1 || o->context_radius < 0 || o->resid_stride < 1 || o->rank < 0 || o->rank >= o->n_ranks)
        return kf_error_set(err, KF_ERR_ARG, "analyze: bad option (threshold, epsilon, k, sample or rank)");
    for (int64_t i = 0; i < n_use; i++)
        if (ids[i] < 0 || ids[i] >= m->n_vocab)
            return kf_error_set(err, KF_ERR_ARG, "analyze: token %lld has id %d outside the vocabulary of %d",
                                (long long)i, ids[i], m->n_vocab);
    return KF_OK;
}

// Per-neuron mean and 1/std of one accumulator (0 for a constant neuron).
static void mean_isd(const kf_moments *mo, double *mu, double *isd) {
    double n = (double)mo->n;
    for (int j = 0; j < mo->d; j++) {
        mu[j] = mo->shift[j] + mo->sum[j] / n;
        double var = n > 1 ? (mo->sxx[kf_packed_index(mo->d, j, j)] - mo->sum[j] * mo->sum[j] / n) / (n - 1) : 0;
        isd[j] = var > 0 ? 1 / sqrt(var) : 0;
    }
}

static kf_status ctx_before(void *user, kf_calib_batch *b, kf_error *err) {
    (void)err;
    ((ctxpass *)user)->t0 = b->first * b->ctx;
    return KF_OK;
}

static kf_status ctx_after(void *user, kf_calib_batch *b, kf_error *err) {
    (void)err;
    progress(((ctxpass *)user)->o, "contexts", b->done * b->ctx, b->total * b->ctx);
    return KF_OK;
}

// The second, short pass: the top-activating tokens of every cluster, with
// each layer's neurons standardised by mu, isd (L) each (F).
static kf_status find_contexts(const kf_model *m, kf_ctx *ctx, const kf_tokenizer *tok, const int32_t *ids,
                               int64_t n_rec, double *const *mu, double *const *isd, kf_analysis_layer *layers,
                               const kf_analyze_opts *o, kf_error *err) {
    const int L = m->n_layer;
    int max_F = 0, max_k = 1;
    for (int l = 0; l < L; l++) {
        if (m->layers[l].n_ff > max_F) max_F = m->layers[l].n_ff;
        if (layers[l].activation.k > max_k) max_k = layers[l].activation.k;
        if (layers[l].weight.k > max_k) max_k = layers[l].weight.k;
    }
    ctxpass cp = {0};
    cp.act = calloc((size_t)L, sizeof *cp.act);
    cp.wgt = calloc((size_t)L, sizeof *cp.wgt);
    cp.mu = mu;
    cp.isd = isd;
    cp.csum = malloc((size_t)max_k * sizeof *cp.csum);
    cp.z = malloc((size_t)max_F * sizeof *cp.z);
    kf_status st = KF_OK;
    if (!cp.act || !cp.wgt || !cp.csum || !cp.z) {
        st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the context pass");
        goto done;
    }
    for (int l = 0; l < L; l++) {
        int F = m->layers[l].n_ff;
        if ((st = topctx_init(&cp.act[l], &layers[l].activation, F, o->n_contexts, err)) != KF_OK ||
            (st = topctx_init(&cp.wgt[l], &layers[l].weight, F, o->n_contexts, err)) != KF_OK)
            goto done;
    }
    kf_calib_protocol p = rec_protocol(o);
    p.rank = 0, p.n_ranks = 1;
    p.max_tokens = o->context_tokens < n_rec ? o->context_tokens : n_rec;
    if (p.max_tokens < o->ctx) p.max_tokens = o->ctx;
    cp.o = o;
    progress(o, "contexts", 0, kf_calib_n_windows(&p, n_rec) * o->ctx);
    kf_ctx_set_hook(ctx, ctx_hook, &cp, 1u << KF_HOOK_FFN_ACT);
    st = kf_calib_run(ctx, m, ids, n_rec, &p, &(kf_calib_sink){.before = ctx_before, .after = ctx_after, .user = &cp},
                      err);
    kf_ctx_set_hook(ctx, NULL, NULL, 0);
    for (int l = 0; l < L && st == KF_OK; l++)
        if ((st = contexts_fill(&cp.act[l], tok, ids, n_rec, o->context_radius, &layers[l].activation, err)) == KF_OK)
            st = contexts_fill(&cp.wgt[l], tok, ids, n_rec, o->context_radius, &layers[l].weight, err);
done:
    for (int l = 0; l < L && cp.act && cp.wgt; l++) {
        topctx_free(&cp.act[l]);
        topctx_free(&cp.wgt[l]);
    }
    free(cp.act);
    free(cp.wgt);
    free(cp.csum);
    free(cp.z);
    return st;
}
// Model, calibration and options of the run into res.
static kf_status describe_run(const kf_model *m, const kf_analyze_opts *o, int64_t resid_tokens, int64_t n_ids,
                              int64_t n_seq, const kf_analysis *out, double rec_s, kf_analysis_result *res,
                              kf_error *err) {
    const int64_t n_rec = n_seq * o->ctx;
    res->model_path = strdup(m->path);
    res->arch = strdup(kf_arch_name(m->arch));
    if (!res->model_path || !res->arch) return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory");
    res->fingerprint = out->stats.fingerprint;
    res->n_embd = m->n_embd;
    res->n_params = kf_model_n_params(m);
    for (int l = 0; l < m->n_layer; l++) res->layers[l].n_ff = m->layers[l].n_ff;
    res->n_tokens_available = n_ids;
    res->n_tokens = n_rec;
    res->n_sequences = n_seq;
    res->ctx = o->ctx;
    res->batch = o->batch;
    res->bos_id = o->bos_id;
    res->ranks = o->n_ranks;
    res->sample_tokens = out->S;
    res->seed = o->seed;
    res->record_seconds = rec_s;
    res->tokens_per_s = rec_s > 0 ? (double)n_rec / rec_s : 0;
    res->threshold = o->threshold;
    res->k = o->k;
    res->epsilon = o->epsilon;
    res->coact_topk = ffn_topk(o, m->layers[0].n_ff);
    res->context_tokens = o->context_tokens;
    res->resid_stride = o->resid_stride;
    res->f64_products = o->f64_products != 0;
    res->resid_tokens = resid_tokens;
    res->grid_step = 0.01;
    return KF_OK;
}

// Layer level: CKA and Block Influence; correlation clustering of each
// residual representation and, with the joint covariance, of all of them.
static kf_status analyze_layers(recorder *rec, const kf_analyze_opts *o, kf_analysis_result *res, kf_error *err) {
    const int L = rec->L, C = rec->C, R = rec->R;
    const size_t RC = (size_t)R * C;
    double *big = NULL, *corr = NULL;
    kf_linkage z = {0};
    kf_status st = KF_OK;
    progress(o, "analysis: CKA", 0, 1);
    res->cka_exact = rec->joint;
    if (rec->joint) {
        if (!(big = malloc(RC * RC * sizeof *big))) {
            st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the residual covariance");
            goto done;
        }
        if ((st = kf_moments_cov(rec->resid_all, big, err)) != KF_OK ||
            (st = kf_analyze_cka_exact(big, R, C, res->cka, err)) != KF_OK)
            goto done;
    } else if ((st = kf_cka_mb_value(&rec->cka, res->cka, err)) != KF_OK) {
        goto done;
    }
    for (int l = 0; l < L; l++)
        if ((st = kf_bi_value(&rec->bi[l], &res->layers[l].block_influence, err)) != KF_OK) goto done;

    if (!(corr = malloc((size_t)C * C * sizeof *corr))) {
        st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for residual clustering");
        goto done;
    }
    if (rec->joint && (st = kf_moments_corr(rec->resid_all, big, err)) != KF_OK) goto done;
    for (int rep = 0; rep < R; rep++) {
        progress(o, "analysis: residual clustering", rep, R + 1);
        if (rec->joint) {
            for (int i = 0; i < C; i++)
                memcpy(corr + (size_t)i * C, big + ((size_t)rep * C + i) * RC + (size_t)rep * C, (size_t)C * sizeof *corr);
        } else if ((st = kf_moments_corr(rec->resid[rep], corr, err)) != KF_OK) {
            goto done;
        }
        st = kf_analyze_redundancy(corr, C, &z, res->resid_redundancy + (size_t)rep * KF_ANALYSIS_N_T,
                                   &res->resid_seconds[rep], err);
        kf_linkage_free(&z);
        if (st != KF_OK) goto done;
    }
    if (rec->joint) {
        if ((st = kf_analyze_redundancy(big, (int)RC, &z, res->resid_all, &res->resid_all_seconds, err)) != KF_OK)
            goto done;
        res->has_resid_all = 1;
        res->resid_all_at_threshold = kf_linkage_redundancy(&z, o->threshold);
        res->resid_all_n = (int64_t)RC;
    }
done:
    kf_linkage_free(&z);
    free(big);
    free(corr);
    return st;
}

// Neuron level, layer l (clustering, dynamic threshold, statistics, concept
// clusters), and the neurons' mean and 1/std for the context pass.
static kf_status analyze_ffn_layer(const kf_model *m, int l, const kf_moments *mo, const kf_analysis *out,
                                   const kf_analyze_opts *o, double *corr, float *X, float *W, double *mu, double *isd,
                                   kf_analysis_result *res, kf_error *err) {
    mean_isd(mo, mu, isd);
    return kf_analyze_ffn_layer(m, l, mo, out->ffn_sample[l], out->S, o, corr, X, W, &res->layers[l],
                                &res->thresholds_seconds, &res->kmeans_seconds, err);
}

// Whether m keeps a layer's FFN weights in a dtype other than F32 (the
// analysis then decodes w_down into a scratch).
static int ffn_dtype_kept(const kf_model *m) {
    for (int l = 0; l < m->n_layer; l++)
        if (m->layers[l].w_down.dtype != KF_DTYPE_F32) return 1;
    return 0;
}

// Scratch of the FFN analysis: corr (max F^2), X (max F * max(S, 2C)), W (C * max F, dtype-kept weights only).
typedef struct {
    double *corr;
    float *X, *W;
} ffn_scratch;

// Sized for every layer, or with owner (L) for the layers rank holds.
static kf_status ffn_scratch_init(ffn_scratch *sc, const kf_model *m, int S, const int32_t *owner, int rank,
                                  kf_error *err) {
    const int C = m->n_embd;
    int max_F = 0;
    for (int l = 0; l < m->n_layer; l++)
        if ((!owner || owner[l] == rank) && m->layers[l].n_ff > max_F) max_F = m->layers[l].n_ff;
    if (max_F == 0) return KF_OK;
    size_t xd = (size_t)(S > 2 * C ? S : 2 * C);
    sc->corr = malloc((size_t)max_F * max_F * sizeof *sc->corr);
    sc->X = malloc((size_t)max_F * xd * sizeof *sc->X);
    sc->W = ffn_dtype_kept(m) ? malloc((size_t)C * max_F * sizeof *sc->W) : NULL;
    if (!sc->corr || !sc->X || (ffn_dtype_kept(m) && !sc->W))
        return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for FFN analysis");
    return KF_OK;
}

static void ffn_scratch_free(ffn_scratch *sc) {
    free(sc->corr);
    free(sc->X);
    free(sc->W);
    memset(sc, 0, sizeof *sc);
}

// Neuron level: every FFN layer this rank holds.
static kf_status analyze_ffn(const kf_model *m, const recorder *rec, const kf_analysis *out, const kf_analyze_opts *o,
                             double **mu, double **isd, kf_analysis_result *res, kf_error *err) {
    ffn_scratch sc = {0};
    kf_status st = ffn_scratch_init(&sc, m, out->S, rec->shard ? rec->owner : NULL, rec->rank, err);
    for (int l = 0; l < m->n_layer && st == KF_OK; l++) {
        if (!rec->ffn[l]) continue;
        progress(o, "analysis: FFN layers", l, m->n_layer);
        st = analyze_ffn_layer(m, l, rec->ffn[l], out, o, sc.corr, sc.X, sc.W, mu[l], isd[l], res, err);
    }
    ffn_scratch_free(&sc);
    return st;
}

// ---------------------------------------------------------------- memory plan

#define MIB 1048576.0

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

kf_status kf_analyze_plan_make(const kf_model *m, int64_t n_ids, const kf_analyze_opts *o, kf_analyze_plan *p,
                               kf_error *err) {
    memset(p, 0, sizeof *p);
    const int L = m->n_layer, C = m->n_embd, R = L + 1, f32 = !o->f64_products;
    const int64_t n_use = o->n_tokens < n_ids ? o->n_tokens : n_ids, n_rec = n_use / o->ctx * o->ctx;
    const int64_t S = o->sample_tokens < n_rec ? o->sample_tokens : n_rec, N = (int64_t)o->batch * o->ctx;
    const int64_t RC = (int64_t)R * C, B = N < 256 ? N : 511;
    const int keep_samples = o->keep_resid_sample; // the .npy dump needs every sample at the end
    int64_t max_F = 0, samples_all = 0;
    for (int l = 0; l < L; l++) {
        max_F = max64(max_F, m->layers[l].n_ff);
        samples_all += S * m->layers[l].n_ff * 4;
    }
    // kept to the end: samples for the .npy dump; the mean and 1/std of every neuron
    int64_t common = (keep_samples ? samples_all + (int64_t)R * S * C * 4 : 0);
    for (int l = 0; l < L; l++) common += 16 * (int64_t)m->layers[l].n_ff;
    // residual part: buffers, accumulators, analysis (covariance, correlation, linkage distances)
    int64_t resid = (int64_t)R * N * C * 4;
    if (RC <= o->joint_max_dims)
        resid += kf_moments_bytes((int)RC, 0, f32) + (int64_t)KF_MOMENTS_BLOCK * RC * 4 + RC * RC * 8 + 2 * RC * RC +
                 (int64_t)C * C * 8;
    else
        resid += R * kf_moments_bytes(C, 0, f32) + R * B * B * 8 + R * B * 8 + (int64_t)R * R * 8 +
                 B * KF_CKA_MB_COLS * 8 + (int64_t)C * C * 10;
    // FFN analysis of one layer at its peak (the threshold: correlation,
    // covariance and G = W^T W in double, G in float) plus the k-means rows
    // and, for dtype-kept weights, w_down in fp32
    const int64_t xd = S > 2 * C ? S : 2 * C;
    int64_t scratch = 28 * max_F * max_F + max_F * xd * 4 + (ffn_dtype_kept(m) ? (int64_t)C * max_F * 4 : 0);
    int64_t *layer = malloc(sizeof *layer * (size_t)L);
    p->group_first = malloc(sizeof *p->group_first * (size_t)(L + 1));
    if (!layer || !p->group_first) {
        free(layer);
        return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the memory plan");
    }
    int64_t layers_all = 0;
    for (int l = 0; l < L; l++) {
        int F = m->layers[l].n_ff;
        layer[l] = kf_moments_bytes(F, ffn_topk(o, F), f32) + (keep_samples ? 0 : S * F * 4);
        layers_all += layer[l];
        p->layer_bytes_max = max64(p->layer_bytes_max, layer[l]);
    }
    if (o->shard_layers && o->n_ranks > 1) { // each rank holds its layers only, and one call's gathered rows
        int32_t *owner = malloc(sizeof *owner * (size_t)L);
        int64_t *load = calloc((size_t)o->n_ranks, sizeof *load);
        if (!owner || !load) {
            free(owner);
            free(load);
            free(layer);
            return kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the memory plan");
        }
        layer_owners(m, o, o->n_ranks, owner, load);
        memset(load, 0, sizeof *load * (size_t)o->n_ranks);
        layers_all = 0;
        for (int l = 0; l < L; l++) layers_all = max64(layers_all, load[owner[l]] += layer[l]);
        layers_all += N * max_F * 4;
        free(owner);
        free(load);
    }
    p->resid_bytes = resid;
    p->scratch_bytes = scratch;
    p->bytes_one_pass = common + resid + layers_all + scratch;
    p->bytes_min = common + max64(resid, scratch + p->layer_bytes_max);
    kf_status st = KF_OK;
    if (o->max_memory <= 0 || p->bytes_one_pass <= o->max_memory) {
        p->n_groups = 1, p->n_passes = 1;
        p->group_first[0] = 0, p->group_first[1] = L;
        p->bytes = p->bytes_one_pass;
    } else if (p->bytes_min > o->max_memory) {
        st = kf_error_set(err, KF_ERR_ARG,
                          "analyze: --max-memory %.1f MiB is too small: one layer needs %.1f MiB (residual statistics "
                          "%.1f MiB, widest FFN layer with its analysis %.1f MiB)",
                          o->max_memory / MIB, p->bytes_min / MIB, (common + resid) / MIB,
                          (common + scratch + p->layer_bytes_max) / MIB);
    } else if (o->n_ranks > 1) {
        st = kf_error_set(err, KF_ERR_ARG, "analyze: --max-memory %.1f MiB needs layer groups, which run in one process "
                          "only (one pass needs %.1f MiB)", o->max_memory / MIB, p->bytes_one_pass / MIB);
    } else if (!o->stats_path) {
        st = kf_error_set(err, KF_ERR_ARG, "analyze: layer groups need a statistics path to write as they finish");
    } else {
        int64_t group = 0, worst = resid;
        p->group_first[0] = 0;
        for (int l = 0; l < L; l++) {
            if (l > p->group_first[p->n_groups] && common + scratch + group + layer[l] > o->max_memory) {
                worst = max64(worst, scratch + group);
                p->group_first[++p->n_groups] = l;
                group = 0;
            }
            group += layer[l];
        }
        worst = max64(worst, scratch + group);
        p->group_first[++p->n_groups] = L;
        p->n_passes = 1 + p->n_groups;
        p->bytes = common + worst;
    }
    free(layer);
    if (st != KF_OK) kf_analyze_plan_free(p);
    return st;
}

void kf_analyze_plan_free(kf_analyze_plan *p) {
    free(p->group_first);
    memset(p, 0, sizeof *p);
}

static int64_t ffn_stats_bytes(const recorder *r);

// The layer-group passes of kf_analyze_run after its residual pass: each
// group records, is analysed and written to the statistics file, then
// freed. *ffn_bytes gets the FFN statistics bytes of the largest group.
static kf_status run_groups(recorder *rec, kf_ctx *ctx, const kf_model *m, const int32_t *ids, int64_t n_ids,
                            const kf_analyze_opts *o, const kf_analyze_plan *plan, kf_analysis *out,
                            kf_statsfile_writer *w, double **mu, double **isd, kf_analysis_result *res,
                            double *rec_s, int64_t *ffn_bytes, kf_error *err) {
    const int L = m->n_layer;
    const kf_calib_protocol proto = rec_protocol(o);
    const int64_t pass_tokens = kf_calib_n_rank_windows(&proto, n_ids) * o->ctx;
    int fd[2] = {kf_file_temp_fd(), kf_file_temp_fd()};
    ffn_scratch sc = {0};
    kf_status st = KF_OK;
    if (fd[0] < 0 || fd[1] < 0) st = kf_error_set(err, KF_ERR_IO, "analyze: cannot create a temporary file for the "
                                                  "residual stream (TMPDIR)");
    if (st == KF_OK) st = ffn_scratch_init(&sc, m, out->S, NULL, 0, err);
    rec_run rr = {.stage = "recording layer groups", .total = plan->n_groups * pass_tokens};
    for (int g = 0; g < plan->n_groups && st == KF_OK; g++) {
        const int l0 = plan->group_first[g], l1 = plan->group_first[g + 1];
        kf_statsfile part;
        kf_statsfile_init(&part, out->stats.fingerprint, &out->stats.protocol);
        for (int l = l0; l < l1 && st == KF_OK; l++)
            if (!out->ffn_sample[l] && !(out->ffn_sample[l] = calloc((size_t)out->S * m->layers[l].n_ff, sizeof(float))))
                st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the activation sample");
        if (st == KF_OK) st = recorder_add_ffn(rec, &part, o, l0, l1, err);
        const int64_t group_bytes = ffn_stats_bytes(rec);
        if (group_bytes > *ffn_bytes) *ffn_bytes = group_bytes;
        rec->first = l0, rec->end = l1;
        rec->cache_in = l0 > 0 ? fd[g % 2] : -1;
        rec->cache_out = l1 < L ? fd[(g + 1) % 2] : -1;
        rr.base = g * pass_tokens;
        double t0 = kf_time_now();
        if (st == KF_OK)
            st = record(rec, ctx, m, ids, n_ids, o, out->sample_pos, grp_hook,
                        (1u << KF_HOOK_BLOCK_IN) | (1u << KF_HOOK_FFN_ACT) | (1u << KF_HOOK_BLOCK_OUT), &rr, err);
        *rec_s += seconds_since(t0);
        double t_an = kf_time_now();
        for (int l = l0; l < l1 && st == KF_OK; l++) {
            progress(o, "analysis: FFN layers", l, L);
            st = analyze_ffn_layer(m, l, rec->ffn[l], out, o, sc.corr, sc.X, sc.W, mu[l], isd[l], res, err);
        }
        res->analysis_seconds += seconds_since(t_an);
        if (st == KF_OK) st = kf_statsfile_writer_add(w, &part, err);
        kf_statsfile_free(&part);
        for (int l = l0; l < l1; l++) {
            rec->ffn[l] = NULL;
            if (!o->keep_resid_sample) {
                free(out->ffn_sample[l]);
                out->ffn_sample[l] = NULL;
            }
        }
    }
    rec->first = 0, rec->end = L, rec->cache_in = rec->cache_out = -1;
    ffn_scratch_free(&sc);
    for (int i = 0; i < 2; i++)
        if (fd[i] >= 0) close(fd[i]);
    return st;
}

#ifdef KF_HAVE_MPI
// The rounds of sharded recording a rank without a batch there still joins
// (its share of the batches is one short of the others', or none at all).
static void shard_idle_rounds(recorder *r, const kf_analyze_opts *o, int64_t n_ids) {
    const kf_calib_protocol p = rec_protocol(o);
    const int64_t n_win = kf_calib_n_windows(&p, n_ids), n_batches = (n_win + o->batch - 1) / o->batch;
    const int64_t rounds = (n_batches + o->n_ranks - 1) / o->n_ranks;
    const int64_t mine = n_batches > o->rank ? (n_batches - 1 - o->rank) / o->n_ranks + 1 : 0;
    for (int64_t k = mine; k < rounds; k++) {
        kf_analyze_shard_call(r, 0, 0);
        for (int l = 0; l < r->L; l++) kf_analyze_shard_ffn(r, l, NULL, 0, r->m->layers[l].n_ff);
    }
}
#endif

// Bytes of the FFN statistics this rank holds; of the residual ones (before
// the MPI reduction, which replaces the accumulators).
static int64_t ffn_stats_bytes(const recorder *r) {
    int64_t b = 0;
    for (int l = 0; l < r->L; l++)
        if (r->ffn[l]) b += kf_moments_bytes(r->ffn[l]->d, r->ffn[l]->topk, r->ffn[l]->blockf != NULL);
    return b;
}

static int64_t resid_stats_bytes(const recorder *r) {
    if (r->joint) return kf_moments_bytes(r->resid_all->d, 0, r->resid_all->blockf != NULL);
    int64_t b = 0;
    for (int rep = 0; rep < r->R; rep++) b += kf_moments_bytes(r->resid[rep]->d, 0, r->resid[rep]->blockf != NULL);
    return b;
}

#ifdef KF_HAVE_MPI
// Sharded: the mean and 1/std of every layer another rank holds, from its
// owner into mu, isd (L) on rank 0 (collective).
static void mean_isd_to_root(const kf_model *m, const recorder *rec, double **mu, double **isd) {
    for (int l = 0; l < rec->L; l++) {
        kf_analyze_mpi_to_root(mu[l], (size_t)m->layers[l].n_ff, rec->owner[l], rec->rank, l);
        kf_analyze_mpi_to_root(isd[l], (size_t)m->layers[l].n_ff, rec->owner[l], rec->rank, l);
    }
}
#endif

kf_status kf_analyze_run(const kf_model *m, const kf_tokenizer *tok, const int32_t *ids, int64_t n_ids,
                         const kf_analyze_opts *o, kf_analysis *out, kf_error *err) {
    memset(out, 0, sizeof *out);
    kf_status st = check_opts(m, ids, n_ids, o, err);
    if (st != KF_OK) return st;
    const int L = m->n_layer, C = m->n_embd, R = L + 1;
    const int64_t n_use = o->n_tokens < n_ids ? o->n_tokens : n_ids, n_seq = n_use / o->ctx, n_rec = n_seq * o->ctx;
    int mpi_up = 0;
#ifdef KF_HAVE_MPI
    MPI_Initialized(&mpi_up);
#endif
    mpi_up = mpi_up && o->n_ranks > 1;
    if (o->shard_layers && o->n_ranks > 1 && !mpi_up)
        return kf_error_set(err, KF_ERR_ARG, "analyze: sharding layers across %d ranks needs MPI running", o->n_ranks);
    kf_analyze_plan plan;
    if ((st = kf_analyze_plan_make(m, n_ids, o, &plan, err)) != KF_OK) return st;
    const int grouped = plan.n_passes > 1;
    kf_calib_protocol proto = rec_protocol(o);
    proto.max_tokens = kf_calib_n_rank_windows(&proto, n_ids) * o->ctx; // the tokens these statistics hold
    kf_statsfile_init(&out->stats, kf_model_fingerprint(m), &proto);
    out->n_layer = L;
    out->resid_dim = C;
    out->rank = o->rank;
    out->n_ranks = o->n_ranks;
    out->shard = o->shard_layers && mpi_up;
    out->S = o->sample_tokens < n_rec ? o->sample_tokens : (int)n_rec;
    out->sample_pos = malloc((size_t)out->S * sizeof *out->sample_pos);
    out->ffn_sample = calloc((size_t)L, sizeof *out->ffn_sample);
    out->layer_owner = calloc((size_t)L, sizeof *out->layer_owner);
    int64_t *load = calloc((size_t)o->n_ranks, sizeof *load);
    double **mu = calloc((size_t)L, sizeof *mu), **isd = calloc((size_t)L, sizeof *isd);
    recorder rec;
    kf_ctx *ctx = NULL;
    kf_analysis_result *res = NULL;
    kf_statsfile_writer writer = {0};
    memset(&rec, 0, sizeof rec);
    if (!out->sample_pos || !out->ffn_sample || !out->layer_owner || !load || !mu || !isd) {
        free(load);
        st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory");
        goto done;
    }
    if (out->shard) layer_owners(m, o, o->n_ranks, out->layer_owner, load);
    free(load);
    for (int l = 0; l < L; l++) {
        // rank 0 gets every layer's mean and 1/std for the context pass; an owner those of its layers
        if (out->shard && o->rank != 0 && out->layer_owner[l] != o->rank) continue;
        mu[l] = malloc((size_t)m->layers[l].n_ff * sizeof **mu);
        isd[l] = malloc((size_t)m->layers[l].n_ff * sizeof **isd);
        if (!mu[l] || !isd[l]) {
            st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory");
            goto done;
        }
    }
    for (int l = 0; l < L && (!grouped || o->keep_resid_sample); l++)
        if ((!out->shard || out->layer_owner[l] == o->rank) &&
            !(out->ffn_sample[l] = calloc((size_t)out->S * m->layers[l].n_ff, sizeof(float)))) {
            st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the activation sample");
            goto done;
        }
    if (o->keep_resid_sample && !(out->resid_sample = calloc((size_t)R * out->S * C, sizeof(float)))) {
        st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for the residual sample");
        goto done;
    }
    if ((st = choose_sample(n_rec, out->S, o->seed, out->sample_pos, err)) != KF_OK) goto done;
    if ((st = recorder_init(&rec, m, o, out, err)) != KF_OK) goto done;
    if ((st = kf_ctx_init(&ctx, m, o->batch * o->ctx, 0, err)) != KF_OK) goto done;
    if (!grouped && ((st = recorder_add_ffn(&rec, &out->stats, o, 0, L, err)) != KF_OK ||
                     (st = recorder_add_resid(&rec, &out->stats, o, err)) != KF_OK))
        goto done;

    // the first pass: everything (one group), or the residual-stream statistics
    kf_statsfile resid_part;
    kf_statsfile_init(&resid_part, out->stats.fingerprint, &out->stats.protocol);
    if (grouped && ((st = kf_statsfile_writer_open(&writer, o->stats_path, out->stats.fingerprint, &proto,
                                                   L + (rec.joint ? 1 : R), err)) != KF_OK ||
                    (st = recorder_add_resid(&rec, &resid_part, o, err)) != KF_OK)) {
        kf_statsfile_free(&resid_part);
        goto done;
    }
    int64_t ffn_bytes = ffn_stats_bytes(&rec); // as allocated (grouped: the largest group's, below)
    const int64_t resid_bytes = resid_stats_bytes(&rec);
    double t_rec = kf_time_now();
    rec_run rr = {.stage = "recording", .total = proto.max_tokens};
    st = record(&rec, ctx, m, ids, n_ids, o, out->sample_pos, rec_hook,
                grouped ? (1u << KF_HOOK_BLOCK_IN) | (1u << KF_HOOK_BLOCK_OUT)
                        : (1u << KF_HOOK_BLOCK_IN) | (1u << KF_HOOK_FFN_ACT) | (1u << KF_HOOK_BLOCK_OUT),
                &rr, err);
#ifdef KF_HAVE_MPI
    if (rec.shard) shard_idle_rounds(&rec, o, n_ids); // collectives: every rank joins every round
    if (st == KF_OK && rec.st != KF_OK) {
        *err = rec.err;
        st = rec.st;
    }
    if (st == KF_OK && mpi_up) st = kf_analyze_mpi_reduce(&rec, err);
    if (st == KF_OK && mpi_up) out->stats.protocol.max_tokens = n_rec;
#endif
    double rec_s = seconds_since(t_rec);
    if (st != KF_OK || (o->rank != 0 && !rec.shard)) {
        kf_statsfile_free(&resid_part);
        goto done;
    }
    const int64_t resid_tokens = rec.joint ? rec.resid_all->n : n_rec;

    double t_an = kf_time_now();
    if (!(res = malloc(sizeof *res))) {
        st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory");
    } else if ((st = kf_analysis_result_init(res, L, o->n_ranks, err)) != KF_OK) {
        free(res);
        res = NULL;
    }
    if (st == KF_OK && o->rank == 0) st = analyze_layers(&rec, o, res, err);
    if (st == KF_OK && grouped) st = kf_statsfile_writer_add(&writer, &resid_part, err);
    kf_statsfile_free(&resid_part);
    if (grouped) recorder_drop_resid(&rec);
    if (st != KF_OK) goto done;
    for (int l = 0; l < L; l++) res->layers[l].n_ff = m->layers[l].n_ff;
    if (!grouped) {
        if ((st = analyze_ffn(m, &rec, out, o, mu, isd, res, err)) != KF_OK) goto done;
        res->analysis_seconds = seconds_since(t_an);
    } else {
        res->analysis_seconds = seconds_since(t_an);
        ffn_bytes = 0;
        if ((st = run_groups(&rec, ctx, m, ids, n_ids, o, &plan, out, &writer, mu, isd, res, &rec_s, &ffn_bytes,
                             err)) != KF_OK)
            goto done;
    }
    for (int i = 0; i < o->n_ranks; i++) res->rank_ffn_stats_bytes[i] = ffn_bytes;
#ifdef KF_HAVE_MPI
    if (rec.shard) {
        double t_gather = kf_time_now();
        if ((st = kf_analyze_mpi_gather_layers(out->layer_owner, L, o->rank, res->layers, &res->thresholds_seconds,
                                               &res->kmeans_seconds, err)) != KF_OK)
            goto done;
        MPI_Gather(&ffn_bytes, 1, MPI_INT64_T, res->rank_ffn_stats_bytes, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
        mean_isd_to_root(m, &rec, mu, isd);
        res->analysis_seconds += seconds_since(t_gather);
    }
#endif
    res->shard_layers = rec.shard;
    memcpy(res->layer_owner, out->layer_owner, (size_t)L * sizeof *res->layer_owner);
    res->resid_stats_bytes = resid_bytes;
    // one pass: the statistics now (every rank when sharded: the owners send); groups wrote theirs already
    if (!grouped && o->stats_path && (st = kf_analysis_save_stats(out, o->stats_path, err)) != KF_OK) goto done;
    if (o->rank != 0) goto done;
    if ((st = describe_run(m, o, resid_tokens, n_ids, n_seq, out, rec_s, res, err)) != KF_OK) goto done;

    double t_ctx = kf_time_now();
    if ((st = find_contexts(m, ctx, tok, ids, n_rec, mu, isd, res->layers, o, err)) != KF_OK) goto done;
    res->contexts_seconds = seconds_since(t_ctx);
    if (grouped && (st = kf_statsfile_writer_close(&writer, err)) != KF_OK) goto done;
    out->result = res;
    res = NULL;
done:
    kf_statsfile_writer_abort(&writer);
    if (res) kf_analysis_result_free(res);
    free(res);
    for (int l = 0; l < L && mu && isd; l++) {
        free(mu[l]);
        free(isd[l]);
    }
    free(mu);
    free(isd);
    kf_ctx_free(ctx);
    recorder_free(&rec);
    kf_analyze_plan_free(&plan);
    return st;
}

kf_status kf_analysis_save_stats(const kf_analysis *a, const char *path, kf_error *err) {
#ifdef KF_HAVE_MPI
    if (a->shard) return kf_analyze_mpi_save_stats(a, path, err);
#endif
    return a->rank == 0 ? kf_statsfile_save(&a->stats, path, err) : KF_OK;
}

void kf_analysis_free(kf_analysis *a) {
    if (a->result) kf_analysis_result_free(a->result);
    free(a->result);
    kf_statsfile_free(&a->stats);
    for (int l = 0; l < a->n_layer && a->ffn_sample; l++) free(a->ffn_sample[l]);
    free(a->ffn_sample);
    free(a->resid_sample);
    free(a->sample_pos);
    free(a->layer_owner);
    memset(a, 0, sizeof *a);
}

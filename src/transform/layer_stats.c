// The statistics compress works from (compress_internal.h): calibration
// passes through calib/ recording FFN activations or Block Influence, or a
// statistics file of the original model; per-layer second moments.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analyze/cka.h"
#include "calib/calib.h"
#include "runtime/forward.h"
#include "transform/compress_internal.h"
#include "transform/refit.h"

// ---- calibration passes ----------------------------------------------------

typedef struct {
    kf_moments **mo; // (n_layer) accumulator per layer, NULL = not recorded
    float *bin;      // (N, C) block input kept until the block output (Block Influence)
    kf_bi_acc *bi;   // (n_layer) or NULL
    int first, end;  // blocks run
    int fd_in;       // the stream entering block first (rows at t*C floats), or -1: the embeddings
    int fd_out;      // where the stream leaving block end-2 goes (the input of the recorded block end-1), or -1
    int64_t t0;      // calibration row of the call's first row
    kf_status st;
    kf_error err;
} pass_user;

static void pass_hook(void *user, int layer, kf_hook_point point, float *x, int n, int dim) {
    pass_user *u = user;
    if (u->st != KF_OK) return;
    const size_t bytes = sizeof *x * (size_t)n * dim;
    const off_t off = (off_t)(u->t0 * dim * (int64_t)sizeof *x);
    if (point == KF_HOOK_BLOCK_IN && layer == u->first && u->fd_in >= 0) {
        if (!kf_file_pio(u->fd_in, x, bytes, off, false))
            u->st = kf_error_set(&u->err, KF_ERR_IO, "compress: cannot read the cached residual stream of layer %d",
                                 layer);
        if (u->bi) memcpy(u->bin, x, bytes);
    } else if (point == KF_HOOK_BLOCK_OUT && layer == u->end - 2 && u->fd_out >= 0) {
        if (!kf_file_pio(u->fd_out, x, bytes, off, true))
            u->st = kf_error_set(&u->err, KF_ERR_IO, "compress: cannot write the residual stream after layer %d to "
                                 "the temporary cache (disk full?)", layer);
    } else if (point == KF_HOOK_FFN_ACT && u->mo && u->mo[layer]) u->st = kf_moments_add(u->mo[layer], x, n, &u->err);
    else if (point == KF_HOOK_BLOCK_IN && u->bi) memcpy(u->bin, x, sizeof *x * (size_t)n * dim);
    else if (point == KF_HOOK_BLOCK_OUT && u->bi) kf_bi_add(&u->bi[layer], u->bin, x, n, dim);
}

static kf_status pass_before(void *user, kf_calib_batch *b, kf_error *err) {
    (void)err;
    ((pass_user *)user)->t0 = b->first * b->ctx;
    return KF_OK;
}

static kf_status pass_after(void *user, kf_calib_batch *b, kf_error *err) {
    (void)b;
    pass_user *u = user;
    if (u->st != KF_OK) *err = u->err;
    return u->st;
}

// Runs every calibration window (calib/'s protocol: ctx, batch, BOS) through
// blocks [u->first, u->end) of m with the hook installed (u->end 0: all).
static kf_status calib_pass(const kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id, int ctx, int batch,
                            pass_user *u, unsigned points, kf_error *err) {
    if (u->end == 0) u->first = 0, u->end = m->n_layer, u->fd_in = u->fd_out = -1;
    kf_calib_protocol p = kf_calib_protocol_make(ctx, bos_id);
    p.batch = batch;
    if (!ids) n_ids = 0;
    kf_status s = kf_calib_check(&p, m, n_ids, "compress: calibration", err);
    if (s != KF_OK) return s;
    kf_ctx *c = NULL;
    if ((s = kf_ctx_init(&c, m, kf_calib_max_rows(&p, n_ids), 0, err)) != KF_OK) return s;
    u->st = KF_OK;
    kf_ctx_set_hook(c, pass_hook, u, points);
    if ((s = kf_ctx_set_layers(c, u->first, u->end, err)) == KF_OK)
        s = kf_calib_run(c, m, ids, n_ids, &p, &(kf_calib_sink){.before = pass_before, .after = pass_after, .user = u},
                         err);
    kf_ctx_free(c);
    return s;
}

kf_status kf_cmp_record_ffn(const kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id,
                            const kf_compress_opts *o, kf_moments **mo, kf_error *err) {
    pass_user u = {.mo = mo};
    return calib_pass(m, ids, n_ids, bos_id, o->ctx, o->batch, &u, 1u << KF_HOOK_FFN_ACT, err);
}

// Block Influence with analyze's accumulator (kf_bi_add, kf_bi_value): the
// hook keeps each block's input until its output arrives.
kf_status kf_compress_block_influence(const kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id, int ctx,
                                      int batch, double *bi, kf_error *err) {
    const int L = m->n_layer;
    pass_user u = {0};
    u.bi = calloc((size_t)L, sizeof *u.bi);
    u.bin = malloc(sizeof *u.bin * (size_t)batch * ctx * m->n_embd);
    kf_status s = KF_OK;
    if (!u.bi || !u.bin) s = kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory for block influence");
    if (s == KF_OK)
        s = calib_pass(m, ids, n_ids, bos_id, ctx, batch, &u, 1u << KF_HOOK_BLOCK_IN | 1u << KF_HOOK_BLOCK_OUT, err);
    for (int l = 0; l < L && s == KF_OK; l++) s = kf_bi_value(&u.bi[l], &bi[l], err);
    free(u.bi);
    free(u.bin);
    return s;
}

// ---- per-layer statistics ------------------------------------------------------

void kf_cmp_stats_free(kf_cmp_stats *ls) {
    free(ls->M);
    free(ls->corr);
    free(ls->cov);
    free(ls->sum_abs);
    free(ls->sum_sq);
    free(ls->ls_removed);
    memset(ls, 0, sizeof *ls);
}

kf_status kf_cmp_stats_init(kf_cmp_stats *ls, const kf_moments *mo, int want_corr, int l, kf_error *err) {
    const int F = mo->d;
    const size_t FF = (size_t)F * F;
    memset(ls, 0, sizeof *ls);
    if (mo->n < 2) return kf_error_set(err, KF_ERR_ARG, "compress: layer %d statistics hold %lld rows, need 2", l, (long long)mo->n);
    ls->F = F;
    ls->n = mo->n;
    ls->M = malloc(sizeof *ls->M * FF);
    ls->sum_abs = malloc(sizeof *ls->sum_abs * (size_t)F);
    ls->sum_sq = malloc(sizeof *ls->sum_sq * (size_t)F);
    if (want_corr) {
        ls->corr = malloc(sizeof *ls->corr * FF);
        ls->cov = malloc(sizeof *ls->cov * FF);
    }
    kf_status s = KF_OK;
    if (!ls->M || !ls->sum_abs || !ls->sum_sq || (want_corr && (!ls->corr || !ls->cov))) {
        s = kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory for layer %d statistics (%d neurons)", l, F);
        goto fail;
    }
    if ((s = kf_refit_second_moment(mo, ls->M, err)) != KF_OK) goto fail;
    for (int j = 0; j < F; j++) {
        ls->sum_abs[j] = mo->sum_abs[j];
        ls->sum_sq[j] = ls->M[(size_t)j * F + j];
    }
    if (want_corr && ((s = kf_moments_corr(mo, ls->corr, err)) != KF_OK || (s = kf_moments_cov(mo, ls->cov, err)) != KF_OK))
        goto fail;
    return KF_OK;
fail:
    kf_cmp_stats_free(ls);
    return s;
}

int kf_cmp_needs_stats(const kf_compress_opts *o) {
    return o->refit || o->method == KF_CMP_FOLD || o->method == KF_CMP_PRUNE_WANDA || o->method == KF_CMP_PRUNE_ACT;
}

kf_status kf_cmp_stream_init(kf_cmp_stream *s, kf_error *err) {
    s->cur = s->at = 0;
    for (int i = 0; i < 2; i++) s->fd[i] = kf_file_temp_fd();
    if (s->fd[0] < 0 || s->fd[1] < 0) {
        kf_cmp_stream_free(s);
        return kf_error_set(err, KF_ERR_IO, "compress: cannot create a temporary file for the residual stream (TMPDIR)");
    }
    return KF_OK;
}

void kf_cmp_stream_free(kf_cmp_stream *s) {
    for (int i = 0; i < 2; i++)
        if (s->fd[i] >= 0) close(s->fd[i]);
    s->fd[0] = s->fd[1] = -1;
}

// Statistics of layer l: from the file, or recorded on the model as it is now.
kf_status kf_cmp_layer_moments(const kf_model *m, int l, const int32_t *ids, int64_t n_ids, int bos_id,
                               const kf_compress_opts *o, kf_cmp_stream *stream, kf_moments *own,
                               const kf_moments **out, kf_error *err) {
    if (o->stats) {
        char name[64];
        snprintf(name, sizeof name, "layer.%d.ffn_act", l);
        const kf_moments *mo = kf_statsfile_get(o->stats, name);
        if (!mo) return kf_error_set(err, KF_ERR_FORMAT, "compress: statistics file has no entry %s", name);
        if (mo->d != m->layers[l].n_ff)
            return kf_error_set(err, KF_ERR_FORMAT, "compress: statistics %s have %d dims, layer %d has %d neurons", name,
                                mo->d, l, m->layers[l].n_ff);
        *out = mo;
        return KF_OK;
    }
    kf_status s = kf_moments_init(own, m->layers[l].n_ff, 0, 0.0f, err);
    if (s != KF_OK) return s;
    kf_moments **arr = calloc((size_t)m->n_layer, sizeof *arr);
    if (!arr) return kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory");
    arr[l] = own;
    *out = own;
    if (!stream) {
        s = kf_cmp_record_ffn(m, ids, n_ids, bos_id, o, arr, err);
        free(arr);
        return s;
    }
    if (l < stream->at) {
        free(arr);
        return kf_error_set(err, KF_ERR_INTERNAL, "compress: layer %d asked after layer %d", l, stream->at);
    }
    pass_user u = {.mo = arr, .first = stream->at, .end = l + 1, .fd_in = stream->at > 0 ? stream->fd[stream->cur] : -1,
                   .fd_out = l > stream->at ? stream->fd[!stream->cur] : -1};
    s = calib_pass(m, ids, n_ids, bos_id, o->ctx, o->batch, &u,
                   1u << KF_HOOK_FFN_ACT | 1u << KF_HOOK_BLOCK_IN | 1u << KF_HOOK_BLOCK_OUT, err);
    free(arr);
    if (s == KF_OK && l > stream->at) stream->cur = !stream->cur, stream->at = l;
    return s;
}

// Block surgery (compress.h): drop whole blocks by Block Influence
// (ShortGPT), optionally merging each dropped block's FFN into a kept one.
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "transform/compress_internal.h"

// Merge option of drop-layers (compress.h). The merged FFN reads dst's normalised input u = x^ g_d + b_d,
// while src's neurons were trained on x^ g_s + b_s = (u - b_d) r + b_s with
// r = g_s / g_d, so src's gate/up columns are scaled by r and its up bias
// gains W_up_s (b_s - r b_d); down columns are concatenated and the down
// biases added. Exact when both blocks see the same normalised residual
// (a block that changes the stream little: low Block Influence).
kf_status kf_compress_merge_ffn(kf_model *m, int dst, int src, kf_error *err) {
    kf_layer *D = &m->layers[dst];
    const kf_layer *S = &m->layers[src];
    const int C = m->n_embd, Fd = D->n_ff, Fs = S->n_ff, F = Fd + Fs;
    const bool ln = kf_tensor_present(&D->ffn_norm_b);
    double *r = malloc(sizeof *r * (size_t)C);
    if (!r) return kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory");
    for (int c = 0; c < C; c++) {
        if (D->ffn_norm_w.data[c] == 0.0f) {
            free(r);
            return kf_error_set(err, KF_ERR_ARG, "compress: cannot merge block %d into %d: its FFN norm weight %d is 0",
                                src, dst, c);
        }
        r[c] = (double)S->ffn_norm_w.data[c] / D->ffn_norm_w.data[c];
    }
    kf_tensor up = {0}, gate = {0}, down = {0}, b_up = {0};
    kf_status s = kf_model_alloc_tensor(m, &up, 2, (int64_t[]){F, C}, err);
    if (s == KF_OK && m->gated_ffn) s = kf_model_alloc_tensor(m, &gate, 2, (int64_t[]){F, C}, err);
    if (s == KF_OK) s = kf_model_alloc_tensor(m, &down, 2, (int64_t[]){C, F}, err);
    bool bias = kf_tensor_present(&D->b_up) || kf_tensor_present(&S->b_up) || ln;
    if (s == KF_OK && bias) s = kf_model_alloc_tensor(m, &b_up, 1, (int64_t[]){F}, err);
    if (s != KF_OK) {
        free(r);
        return s;
    }
    // rows (F, C): dst's rows as they are, then src's scaled by r
    for (int k = 0; k < 2; k++) {
        const kf_tensor *wd = k ? &D->w_gate : &D->w_up, *ws = k ? &S->w_gate : &S->w_up;
        kf_tensor *out = k ? &gate : &up;
        if (k && !m->gated_ffn) continue;
        memcpy(out->data, wd->data, sizeof(float) * (size_t)Fd * C);
        for (int j = 0; j < Fs; j++)
            for (int c = 0; c < C; c++)
                out->data[(int64_t)(Fd + j) * C + c] = (float)(ws->data[(int64_t)j * C + c] * r[c]);
    }
    if (bias)
        for (int j = 0; j < F; j++) {
            const bool from_s = j >= Fd;
            const kf_tensor *b = from_s ? &S->b_up : &D->b_up;
            double v = kf_tensor_present(b) ? b->data[from_s ? j - Fd : j] : 0;
            if (from_s && ln) // + W_up_s (b_s - r b_d)
                for (int c = 0; c < C; c++)
                    v += (double)S->w_up.data[(int64_t)(j - Fd) * C + c] *
                         (S->ffn_norm_b.data[c] - r[c] * D->ffn_norm_b.data[c]);
            b_up.data[j] = (float)v;
        }
    for (int c = 0; c < C; c++) { // down (C, F) = [down_d | down_s]
        memcpy(down.data + (int64_t)c * F, D->w_down.data + (int64_t)c * Fd, sizeof(float) * (size_t)Fd);
        memcpy(down.data + (int64_t)c * F + Fd, S->w_down.data + (int64_t)c * Fs, sizeof(float) * (size_t)Fs);
    }
    if (kf_tensor_present(&S->b_down)) {
        if (!kf_tensor_present(&D->b_down)) {
            free(r);
            return kf_error_set(err, KF_ERR_ARG, "compress: cannot merge block %d into %d: only one has a down bias",
                                src, dst);
        }
        kf_tensor bd = {0};
        if ((s = kf_model_alloc_tensor(m, &bd, 1, (int64_t[]){C}, err)) != KF_OK) {
            free(r);
            return s;
        }
        for (int c = 0; c < C; c++) bd.data[c] = D->b_down.data[c] + S->b_down.data[c];
        D->b_down = bd;
    }
    free(r);
    D->w_up = up;
    if (m->gated_ffn) D->w_gate = gate;
    D->w_down = down;
    if (bias) D->b_up = b_up;
    D->n_ff = F;
    return KF_OK;
}

kf_status kf_cmp_drop_layers(kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id, const kf_compress_opts *o,
                             kf_compress_report *rep, kf_error *err) {
    const int L = m->n_layer;
    if (o->n_drop < 1 || o->n_drop >= L)
        return kf_error_set(err, KF_ERR_ARG, "compress: cannot drop %d of %d blocks (need 1 .. %d)", o->n_drop, L, L - 1);
    rep->block_influence = malloc(sizeof *rep->block_influence * (size_t)L);
    rep->dropped = malloc(sizeof *rep->dropped * (size_t)o->n_drop);
    if (!rep->block_influence || !rep->dropped) return kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory");
    if (o->progress) o->progress(o->progress_user, "block influence", 0, L);
    kf_status s = kf_compress_block_influence(m, ids, n_ids, bos_id, o->ctx, o->batch, rep->block_influence, err);
    if (s != KF_OK) return s;
    // ShortGPT: remove the blocks that change the residual stream least.
    unsigned char *drop = calloc((size_t)L, 1);
    if (!drop) return kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory");
    for (int d = 0; d < o->n_drop; d++) { // n_drop < L: a kept block is always left
        int best = 0;
        while (drop[best]) best++;
        for (int l = best + 1; l < L; l++)
            if (!drop[l] && rep->block_influence[l] < rep->block_influence[best]) best = l;
        drop[best] = 1;
    }
    if (o->merge) {
        rep->merged_into = malloc(sizeof *rep->merged_into * (size_t)o->n_drop);
        if (!rep->merged_into) {
            free(drop);
            return kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory");
        }
    }
    for (int l = 0, i = 0; l < L && o->merge; l++) {
        if (!drop[l]) continue;
        int dst = l + 1; // the nearest kept block after, else before
        while (dst < L && drop[dst]) dst++;
        if (dst >= L)
            for (dst = l - 1; drop[dst]; dst--) {}
        if ((s = kf_compress_merge_ffn(m, dst, l, err)) != KF_OK) {
            free(drop);
            return s;
        }
        rep->merged_into[i++] = dst;
    }
    int w = 0;
    for (int l = 0; l < L; l++) {
        rep->layers[l].n_ff_after = drop[l] ? 0 : m->layers[l].n_ff;
        if (drop[l]) rep->dropped[rep->n_dropped++] = l;
        else m->layers[w++] = m->layers[l];
    }
    m->n_layer = w;
    free(drop);
    return kf_model_validate(m, "compressed model", err);
}

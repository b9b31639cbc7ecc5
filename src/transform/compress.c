// The compress driver (compress.h): options, report, and kf_compress_run,
// which plans and applies every layer's new FFN in turn.
#include "transform/compress.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "transform/compress_internal.h"
#include "transform/refit.h"

void kf_compress_opts_default(kf_compress_opts *o) {
    memset(o, 0, sizeof *o);
    o->method = KF_CMP_FOLD;
    o->group = KF_GROUP_LS;
    o->refit = 1;
    o->lambda_rel = KF_REFIT_LAMBDA;
    o->seed = 1;
    o->ctx = 256;
    o->batch = 4;
}

void kf_compress_report_free(kf_compress_report *r) {
    free(r->layers);
    free(r->dropped);
    free(r->merged_into);
    free(r->block_influence);
    memset(r, 0, sizeof *r);
}

int64_t kf_compress_neuron_params(const kf_model *m, int l) {
    const kf_layer *ly = &m->layers[l];
    int64_t C = m->n_embd;
    return C * (kf_tensor_present(&ly->w_gate) ? 3 : 2) + (kf_tensor_present(&ly->b_up) ? 1 : 0);
}

// Whether layer l's FFN weights are kept in a dtype other than fp32.
static int ffn_dtype_kept(const kf_layer *ly) {
    return ly->w_gate.dtype != KF_DTYPE_F32 || ly->w_up.dtype != KF_DTYPE_F32 || ly->w_down.dtype != KF_DTYPE_F32 ||
           ly->b_up.dtype != KF_DTYPE_F32;
}

int64_t kf_compress_layer_bytes(const kf_model *m, int l, const kf_compress_opts *o) {
    const int64_t F = m->layers[l].n_ff, C = m->n_embd, FF = F * F;
    if (!kf_cmp_needs_stats(o)) return 0;
    // the moments (recorded here; a statistics file is held whole by the caller)
    int64_t b = o->stats ? 0 : kf_moments_bytes((int)F, 0, 0);
    // kf_cmp_stats: M, and for fold the correlation and covariance
    b += 8 * FF * (o->method == KF_CMP_FOLD ? 3 : 1) + 16 * F;
    // the selection (ls: the inverse of M + lambda I and two (F, C) panels;
    // correlation groups: the linkage's distances) and the refit (G, X, w_down in double)
    if (o->method == KF_CMP_FOLD && o->group == KF_GROUP_LS) b += 8 * FF + 16 * F * C;
    else if (o->method == KF_CMP_FOLD) b += 2 * FF;
    if (o->refit) b += 8 * FF + 8 * F * C;
    return b;
}

int64_t kf_compress_bytes(const kf_model *m, const kf_compress_opts *o, const int *widths, int *worst_layer) {
    int64_t most = 0;
    *worst_layer = 0;
    for (int l = 0; l < m->n_layer; l++) {
        if (widths && widths[l] == m->layers[l].n_ff) continue; // untouched
        int64_t b = kf_compress_layer_bytes(m, l, o);
        if (b > most) most = b, *worst_layer = l;
    }
    return most;
}

kf_status kf_compress_run(kf_model *m, const int32_t *ids, int64_t n_ids, int bos_id, const kf_compress_opts *o,
                          kf_compress_report *rep, kf_error *err) {
    memset(rep, 0, sizeof *rep);
    const int L = m->n_layer, C = m->n_embd;
    if (o->ctx < 2 || o->batch < 1) return kf_error_set(err, KF_ERR_ARG, "compress: bad --ctx or batch");
    rep->n_layer_before = L;
    rep->n_calib_tokens = o->stats ? 0 : (ids ? n_ids / o->ctx * o->ctx : 0);
    rep->layers = calloc((size_t)L, sizeof *rep->layers);
    if (!rep->layers) return kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory");
    for (int l = 0; l < L; l++)
        rep->layers[l] = (kf_compress_layer){.layer = l, .n_ff_before = m->layers[l].n_ff, .n_ff_after = m->layers[l].n_ff,
                                             .t_cut = NAN, .rel_err = NAN};
    if (o->method == KF_CMP_DROP_LAYERS) return kf_cmp_drop_layers(m, ids, n_ids, bos_id, o, rep, err);
    if (!o->widths && !(o->method == KF_CMP_FOLD && o->thresholds))
        return kf_error_set(err, KF_ERR_ARG, "compress: no target (widths, target params or fold thresholds)");
    for (int l = 0; l < L; l++)
        if (o->widths && (o->widths[l] < 1 || o->widths[l] > m->layers[l].n_ff))
            return kf_error_set(err, KF_ERR_ARG, "compress: width %d for layer %d is not in [1, %d]", o->widths[l], l,
                                m->layers[l].n_ff);
    int worst;
    const int64_t need = kf_compress_bytes(m, o, o->widths, &worst);
    if (o->max_memory > 0 && need > o->max_memory)
        return kf_error_set(err, KF_ERR_ARG, "compress: --max-memory %.1f MiB is too small: layer %d needs %.1f MiB",
                            o->max_memory / 1048576.0, worst, need / 1048576.0);
    int Fmax = 0;
    for (int l = 0; l < L; l++) Fmax = m->layers[l].n_ff > Fmax ? m->layers[l].n_ff : Fmax;
    int *idx = malloc(sizeof *idx * (size_t)Fmax);
    float *w_new = malloc(sizeof *w_new * (size_t)C * Fmax);
    kf_cmp_stream stream = {{-1, -1}, 0, 0};
    const int streamed = kf_cmp_needs_stats(o) && !o->stats && !o->recompute;
    kf_status s = KF_OK;
    if (!idx || !w_new) s = kf_error_set(err, KF_ERR_NOMEM, "compress: out of memory");
    if (s == KF_OK && streamed) s = kf_cmp_stream_init(&stream, err);
    for (int l = 0; l < L && s == KF_OK; l++) {
        int F = m->layers[l].n_ff, k_want = o->widths ? o->widths[l] : 0;
        if (k_want == F) continue; // nothing removed: layer untouched
        if (o->progress) o->progress(o->progress_user, "layer", l, L);
        kf_moments own = {0};
        const kf_moments *mo = NULL;
        kf_cmp_stats ls = {0};
        int have = kf_cmp_needs_stats(o);
        if (have && (s = kf_cmp_layer_moments(m, l, ids, n_ids, bos_id, o, streamed ? &stream : NULL, &own, &mo, err)) == KF_OK)
            s = kf_cmp_stats_init(&ls, mo, o->method == KF_CMP_FOLD, l, err);
        // a layer kept in its file's dtype is transformed in fp32, then stored back in that dtype
        const kf_layer orig = m->layers[l];
        const int converted = ffn_dtype_kept(&orig);
        kf_layer *ly = &m->layers[l];
        kf_tensor *ffn[4] = {&ly->w_gate, &ly->w_up, &ly->w_down, &ly->b_up};
        for (int i = 0; i < 4 && converted && s == KF_OK; i++) s = kf_model_tensor_to_f32(m, ffn[i], err);
        const kf_layer f32 = *ly;
        int k = 0;
        double t_cut, rel;
        if (s == KF_OK)
            s = kf_cmp_plan_layer(m, l, have ? &ls : NULL, o, k_want, o->thresholds ? o->thresholds[l] : 0, idx,
                                  w_new, &k, &t_cut, &rel, NULL, err);
        if (s == KF_OK) s = kf_ffn_select(m, l, idx, k, w_new, err);
        const kf_dtype dts[4] = {orig.w_gate.dtype, orig.w_up.dtype, orig.w_down.dtype, orig.b_up.dtype};
        for (int i = 0; i < 4 && converted && s == KF_OK; i++) s = kf_model_tensor_store(m, ffn[i], dts[i], err);
        if (s == KF_OK && converted) {
            const kf_tensor *gone[8] = {&f32.w_gate, &f32.w_up, &f32.w_down, &f32.b_up,
                                        &orig.w_gate, &orig.w_up, &orig.w_down, &orig.b_up};
            for (int i = 0; i < 8; i++) // the fp32 copies, and the loaded weights' pages
                if (i < 4 ? gone[i]->data != gone[i + 4]->data : gone[i]->dtype != KF_DTYPE_F32)
                    kf_model_release_tensor(m, gone[i]);
        }
        if (s == KF_OK) {
            rep->layers[l].n_ff_after = k;
            rep->layers[l].t_cut = t_cut;
            rep->layers[l].rel_err = rel;
            rep->layers[l].refit_centred = o->refit && have && kf_refit_centred(ls.n, k);
        }
        kf_cmp_stats_free(&ls);
        kf_moments_free(&own);
    }
    kf_cmp_stream_free(&stream);
    free(idx);
    free(w_new);
    if (s == KF_OK) s = kf_model_validate(m, "compressed model", err);
    return s;
}

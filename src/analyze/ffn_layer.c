// The FFN neurons of one layer: correlation clustering, the dynamic
// threshold, activation statistics and the two k-means concept clusterings.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analyze/kmeans.h"
#include "analyze/steps.h"
#include "analyze/threshold.h"
#include "core/progress.h"

#define MAX_CAND 4 // k-means candidates when k is automatic: 4, 8, 16, 32 (at most n_ff/4)

// k-means of the rows of X (F, d) with k given or chosen by silhouette among
// powers of two; the clustering and its summaries into out.
static kf_status concept_clusters(const float *X, int F, int d, const double *corr, const kf_analyze_opts *o,
                                  kf_analysis_kmeans *out, kf_error *err) {
    int cand[MAX_CAND], nc = 0;
    if (o->k > 0) cand[nc++] = o->k < F ? o->k : F;
    else
        for (int k = 4; k <= 32 && nc < MAX_CAND; k *= 2)
            if (k <= F / 4) cand[nc++] = k;
    if (nc == 0) cand[nc++] = F >= 2 ? 2 : 1;
    kf_kmeans_opts ko = {.max_iter = 30, .n_init = 3, .seed = o->seed, .balanced = 0};
    int k_max = 1;
    for (int c = 0; c < nc; c++) k_max = cand[c] > k_max ? cand[c] : k_max;
    float *centres = malloc((size_t)k_max * d * sizeof *centres);
    int32_t *labels = malloc((size_t)F * sizeof *labels), *best = malloc((size_t)F * sizeof *best);
    double sil[MAX_CAND], obj_best = NAN, sil_best = -INFINITY;
    double *npair = NULL;
    int k_best = cand[0];
    kf_status st = KF_OK;
    if (!centres || !labels || !best) {
        st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for k-means");
        goto done;
    }
    for (int c = 0; c < nc; c++) {
        double objective, s = NAN;
        st = kf_kmeans_fit(X, F, d, cand[c], &ko, centres, labels, &objective, err);
        if (st != KF_OK) goto done;
        int nonempty = 0;
        for (int i = 0; i < F && nonempty < 2; i++) nonempty = labels[i] != labels[0] ? 2 : 1;
        if (cand[c] >= 2 && nonempty == 2) {
            st = kf_silhouette(X, F, d, labels, cand[c], F <= 1024 ? 0 : 1024, o->seed, &s, NULL, err);
            if (st != KF_OK) goto done;
        }
        sil[c] = s;
        if (c == 0 || (isfinite(s) && s > sil_best)) {
            sil_best = isfinite(s) ? s : -INFINITY;
            k_best = cand[c];
            obj_best = objective;
            memcpy(best, labels, (size_t)F * sizeof *best);
        }
    }
    const int k = k_best;
    if ((st = kf_analysis_kmeans_init(out, k, nc, F, err)) != KF_OK) goto done;
    if (!(npair = calloc((size_t)k, sizeof *npair))) {
        st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for cluster summaries");
        goto done;
    }
    memcpy(out->labels, best, (size_t)F * sizeof *best);
    out->silhouette = isfinite(sil_best) ? sil_best : NAN;
    out->objective = obj_best;
    for (int c = 0; c < nc; c++) {
        out->k_candidates[c] = cand[c];
        out->silhouette_by_k[c] = sil[c];
    }
    kf_analysis_cluster *cl = out->clusters;
    for (int i = 0; i < F; i++) {
        int ci = best[i];
        cl[ci].size++;
        for (int j = i + 1; j < F; j++)
            if (best[j] == ci) {
                cl[ci].mean_abs_corr += fabs(corr[(size_t)i * F + j]);
                npair[ci]++;
            }
    }
    for (int c = 0; c < k; c++) cl[c].mean_abs_corr = npair[c] > 0 ? cl[c].mean_abs_corr / npair[c] : NAN;
done:
    free(npair);
    free(centres);
    free(labels);
    free(best);
    return st;
}

// Per-layer dynamic threshold: the largest grid t whose cut, and every
// smaller one, keeps the relative FFN output error <= eps.
// w_down (C, F) in fp32: the weight itself, or decoded into W (C*F floats)
// when the model keeps it in its file's dtype.
static const float *down_f32(const kf_layer *ly, int C, float *W) {
    if (ly->w_down.dtype == KF_DTYPE_F32) return ly->w_down.data;
    for (int c = 0; c < C; c++) kf_tensor_row_f32(&ly->w_down, c, W + (size_t)c * ly->n_ff);
    return W;
}

static kf_status dynamic_threshold(const kf_model *m, int l, const kf_moments *mo, const kf_linkage *z,
                                   const kf_analyze_opts *o, float *W, kf_analysis_layer *out, kf_error *err) {
    const int F = m->layers[l].n_ff, C = m->n_embd;
    const size_t uF = (size_t)F;
    double *cov = malloc(uF * uF * sizeof *cov), *mean = malloc(uF * sizeof *mean);
    int32_t *labels = malloc(uF * sizeof *labels);
    double *errs = out->err_curve;
    kf_thresh_layer th = {0};
    kf_status st = KF_OK;
    if (!cov || !mean || !labels) {
        st = kf_error_set(err, KF_ERR_NOMEM, "analyze: out of memory for thresholds of layer %d", l);
        goto done;
    }
    if ((st = kf_moments_cov(mo, cov, err)) != KF_OK || (st = kf_moments_mean(mo, mean, err)) != KF_OK) goto done;
    double pop = (double)(mo->n - 1) / (double)mo->n; // unbiased -> population covariance
    for (size_t i = 0; i < uF * uF; i++) cov[i] *= pop;
    st = kf_thresh_init(&th, down_f32(&m->layers[l], C, W), C, F, cov, mean, err);
    cov = NULL; // th's now
    if (st != KF_OK) goto done;
    int j_best = -1, width = F, ok = 1;
    double err_best = 0;
    for (int j = 0, nc_prev = -1; j < KF_ANALYSIS_N_GRID; j++) {
        int nc;
        if ((st = kf_linkage_cut(z, j / 100.0, labels, &nc, err)) != KF_OK) goto done;
        // Cuts of one dendrogram are nested: the same count is the same partition.
        if (nc == nc_prev) errs[j] = errs[j - 1];
        else if ((st = kf_thresh_error(&th, labels, nc, &errs[j], NULL, err)) != KF_OK) goto done;
        nc_prev = nc;
        if (ok && errs[j] <= o->epsilon) {
            j_best = j;
            width = nc;
            err_best = errs[j];
        } else {
            ok = 0;
        }
    }
    for (int i = 0; i < KF_ANALYSIS_N_T; i++) out->err_at_t[i] = errs[(i + 1) * 10];
    out->t = j_best >= 0 ? j_best / 100.0 : NAN;
    out->width = width;
    out->rel_err = err_best;
done:
    kf_thresh_free(&th);
    free(cov);
    free(mean);
    free(labels);
    return st;
}

// Activation profiles (F, S): neuron j's sampled activations, standardised
// over the sample (a constant neuron gets a zero profile).
static void activation_profiles(const float *smp, int S, int F, float *X) {
    for (int j = 0; j < F; j++) {
        double s = 0, ss = 0;
        for (int t = 0; t < S; t++) s += smp[(size_t)t * F + j];
        double mu = s / S;
        for (int t = 0; t < S; t++) {
            double d = smp[(size_t)t * F + j] - mu;
            ss += d * d;
        }
        double isd = ss > 0 ? 1 / sqrt(ss / S) : 0;
        for (int t = 0; t < S; t++) X[(size_t)j * S + t] = (float)((smp[(size_t)t * F + j] - mu) * isd);
    }
}

// Weight vectors (F, D): row j of w_gate and w_up concatenated (w_up alone
// when not gated), scaled to unit length so clusters group directions.
static int weight_vectors(const kf_layer *ly, int C, float *X) {
    const int F = ly->n_ff, gated = kf_tensor_present(&ly->w_gate), D = gated ? 2 * C : C;
    for (int j = 0; j < F; j++) {
        float *x = X + (size_t)j * D;
        if (gated) kf_tensor_row_f32(&ly->w_gate, j, x);
        kf_tensor_row_f32(&ly->w_up, j, x + (gated ? C : 0));
        double nn = 0;
        for (int i = 0; i < D; i++) nn += (double)x[i] * x[i];
        float inv = nn > 0 ? (float)(1 / sqrt(nn)) : 0;
        for (int i = 0; i < D; i++) x[i] *= inv;
    }
    return D;
}

kf_status kf_analyze_ffn_layer(const kf_model *m, int l, const kf_moments *mo, const float *sample, int S,
                               const kf_analyze_opts *o, double *corr, float *X, float *W, kf_analysis_layer *out,
                               double *thr_s, double *km_s, kf_error *err) {
    const int F = m->layers[l].n_ff;
    kf_linkage z = {0};
    kf_status st;
    if ((st = kf_moments_corr(mo, corr, err)) != KF_OK) return st;
    if ((st = kf_analyze_redundancy(corr, F, &z, out->redundancy, &out->clustering_seconds, err)) != KF_OK) return st;
    out->redundancy_at_threshold = kf_linkage_redundancy(&z, o->threshold);
    double t_th = kf_time_now();
    st = dynamic_threshold(m, l, mo, &z, o, W, out, err);
    *thr_s += kf_time_now() - t_th;
    kf_linkage_free(&z);
    if (st != KF_OK) return st;

    double fsum = 0, asum = 0;
    int dead = 0;
    for (int j = 0; j < F; j++) {
        fsum += (double)mo->n_pos[j] / (double)mo->n;
        asum += mo->sum_abs[j] / (double)mo->n;
        dead += mo->n_nz[j] == 0;
    }
    out->act_freq_mean = fsum / F;
    out->mean_abs_act = asum / F;
    out->dead = dead;

    double t_km = kf_time_now();
    activation_profiles(sample, S, F, X);
    if ((st = concept_clusters(X, F, S, corr, o, &out->activation, err)) != KF_OK) return st;
    int D = weight_vectors(&m->layers[l], m->n_embd, X);
    if ((st = concept_clusters(X, F, D, corr, o, &out->weight, err)) != KF_OK) return st;
    *km_s += kf_time_now() - t_km;
    return KF_OK;
}

#include "transform/ffn.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

// Copies rows idx of src (F,C) into a new (k,C) tensor of the model.
static kf_status take_rows(kf_model *m, kf_tensor *t, const int *idx, int k, int64_t C, kf_error *err) {
    if (!kf_tensor_present(t)) return KF_OK;
    kf_tensor nt = {0};
    int64_t ne[2] = {k, C}; // a 1-D bias uses ne[0] only, with C = 1
    kf_status s = kf_model_alloc_tensor(m, &nt, t->ndim, ne, err);
    if (s != KF_OK) return s;
    for (int i = 0; i < k; i++) memcpy(nt.data + (size_t)i * C, t->data + (size_t)idx[i] * C, sizeof(float) * (size_t)C);
    nt.src_dtype = t->src_dtype;
    *t = nt;
    return KF_OK;
}

kf_status kf_ffn_select(kf_model *m, int l, const int *idx, int k, const float *w_down_new, kf_error *err) {
    if (l < 0 || l >= m->n_layer) return kf_error_set(err, KF_ERR_ARG, "transform: layer %d out of range", l);
    kf_layer *ly = &m->layers[l];
    const int F = ly->n_ff, C = m->n_embd;
    if (k < 1 || k > F)
        return kf_error_set(err, KF_ERR_ARG, "transform: layer %d: width %d is not in [1, %d]", l, k, F);
    for (int i = 0; i < k; i++)
        if (idx[i] < 0 || idx[i] >= F || (i > 0 && idx[i] == idx[i - 1]))
            return kf_error_set(err, KF_ERR_INTERNAL, "transform: layer %d: bad neuron index %d", l, idx[i]);
    kf_status s;
    if ((s = take_rows(m, &ly->w_gate, idx, k, C, err)) != KF_OK) return s;
    if ((s = take_rows(m, &ly->w_up, idx, k, C, err)) != KF_OK) return s;
    if ((s = take_rows(m, &ly->b_up, idx, k, 1, err)) != KF_OK) return s;
    kf_tensor nd = {0};
    int64_t ne[2] = {C, k};
    if ((s = kf_model_alloc_tensor(m, &nd, 2, ne, err)) != KF_OK) return s;
    for (int c = 0; c < C; c++)
        for (int i = 0; i < k; i++)
            nd.data[(size_t)c * k + i] = w_down_new ? w_down_new[(size_t)c * k + i] : ly->w_down.data[(size_t)c * F + idx[i]];
    nd.src_dtype = ly->w_down.src_dtype;
    ly->w_down = nd;
    ly->n_ff = k;
    return KF_OK;
}

void kf_ffn_scores(const kf_model *m, int l, kf_score_kind kind, const double *sum_sq, const double *sum_abs, int64_t n,
                   uint64_t seed, double *score) {
    const kf_layer *ly = &m->layers[l];
    const int F = ly->n_ff, C = m->n_embd;
    const float *wd = ly->w_down.data;
    kf_rng rng;
    kf_rng_seed(&rng, seed * 0x9E3779B97F4A7C15ull + (uint64_t)l + 1);
    for (int j = 0; j < F; j++) {
        double col2 = 0, col1 = 0, row2 = 0;
        for (int c = 0; c < C; c++) {
            double w = wd[(size_t)c * F + j];
            col2 += w * w;
            col1 += fabs(w);
        }
        for (int c = 0; c < C; c++) {
            double u = ly->w_up.data[(size_t)j * C + c];
            double g = kf_tensor_present(&ly->w_gate) ? ly->w_gate.data[(size_t)j * C + c] : 0;
            row2 += u * u + g * g;
        }
        switch (kind) {
        case KF_SCORE_MAGNITUDE: score[j] = sqrt(row2) * sqrt(col2); break;
        case KF_SCORE_WANDA: score[j] = sqrt(sum_sq[j] / (double)n) * col1; break;
        case KF_SCORE_ACT: score[j] = sum_abs[j] / (double)n; break;
        case KF_SCORE_RANDOM: score[j] = kf_rng_uniform(&rng); break;
        }
    }
}

typedef struct {
    double s;
    int j;
} scored;

static int by_score_desc(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? 1 : -1;
    return x->j - y->j;
}

static int int_cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

kf_status kf_ffn_top_k(const double *score, int F, int k, int *idx, kf_error *err) {
    if (k < 1 || k > F) return kf_error_set(err, KF_ERR_ARG, "transform: width %d is not in [1, %d]", k, F);
    scored *v = malloc(sizeof *v * (size_t)F);
    if (!v) return kf_error_set(err, KF_ERR_NOMEM, "transform: out of memory for %d scores", F);
    for (int j = 0; j < F; j++) v[j] = (scored){isnan(score[j]) ? -INFINITY : score[j], j};
    qsort(v, (size_t)F, sizeof *v, by_score_desc);
    for (int i = 0; i < k; i++) idx[i] = v[i].j;
    qsort(idx, (size_t)k, sizeof *idx, int_cmp);
    free(v);
    return KF_OK;
}

void kf_ffn_merge_down(const kf_model *m, int l, const double *cov, const int32_t *labels, const int *reps, int k,
                       float *w_down_new) {
    const kf_layer *ly = &m->layers[l];
    const int F = ly->n_ff, C = m->n_embd;
    memset(w_down_new, 0, sizeof *w_down_new * (size_t)C * k);
    for (int j = 0; j < F; j++) {
        int g = labels[j], r = reps[g];
        double vr = cov[(size_t)r * F + r];
        double beta = j == r ? 1.0 : vr > 0 ? cov[(size_t)j * F + r] / vr : 0.0;
        for (int c = 0; c < C; c++) w_down_new[(size_t)c * k + g] += (float)(beta * ly->w_down.data[(size_t)c * F + j]);
    }
}

#define LS_BATCH_DIV 128 // a removal batch holds at most |S| / 128 neurons
#define LS_PCORR_MAX 0.3 // neurons this partially correlated never leave in one batch
#define LS_LAMBDA_MIN 1e-9

static int by_score_asc(const void *a, const void *b) { return -by_score_desc(a, b); }

kf_status kf_ffn_select_ls(const double *M, const float *w_down, int C, int F, int k, double lambda_rel, int *idx,
                           float *w_new, double *t_cut, int *removed, kf_error *err) {
    if (k < 1 || k > F || C < 1 || !(lambda_rel >= 0))
        return kf_error_set(err, KF_ERR_ARG, "fold: bad least-squares selection (k=%d F=%d C=%d)", k, F, C);
    const size_t FF = (size_t)F * F, FC = (size_t)F * C;
    const int bcap = F / LS_BATCH_DIV > 1 ? F / LS_BATCH_DIV : 1;
    double *Hi = malloc(sizeof *Hi * FF), *Vt = malloc(sizeof *Vt * FC), *Wd = malloc(sizeof *Wd * FC);
    double *HiB = malloc(sizeof *HiB * (size_t)bcap * F), *T = malloc(sizeof *T * (size_t)bcap * F);
    double *VtB = malloc(sizeof *VtB * (size_t)bcap * C), *Hbb = malloc(sizeof *Hbb * (size_t)bcap * bcap);
    int *pos = malloc(sizeof *pos * (size_t)F), *B = malloc(sizeof *B * (size_t)bcap);
    unsigned char *out = malloc((size_t)F);
    scored *order = malloc(sizeof *order * (size_t)F);
    kf_status s = KF_OK;
    if (!Hi || !Vt || !Wd || !HiB || !T || !VtB || !Hbb || !pos || !B || !out || !order) {
        s = kf_error_set(err, KF_ERR_NOMEM, "fold: out of memory for the least-squares selection of %d neurons", F);
        goto done;
    }
    double tr = 0;
    for (int j = 0; j < F; j++) tr += M[(size_t)j * F + j];
    // floored so that dead or duplicated neurons keep H invertible at --lambda 0
    const double lambda = (lambda_rel > LS_LAMBDA_MIN ? lambda_rel : LS_LAMBDA_MIN) * (tr > 0 ? tr / F : 1.0);
    // Hi = (M + lambda I)^-1, full
    memcpy(Hi, M, sizeof *Hi * FF);
    for (int j = 0; j < F; j++) Hi[(size_t)j * F + j] += lambda;
    if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', F, Hi, F) != 0 || LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'U', F, Hi, F) != 0) {
        s = kf_error_set(err, KF_ERR_INTERNAL, "fold: activation Gram matrix plus ridge is not positive definite; raise --lambda");
        goto done;
    }
    for (int i = 0; i < F; i++)
        for (int j = 0; j < i; j++) Hi[(size_t)i * F + j] = Hi[(size_t)j * F + i];
    // V^T = Hi M W^T (F,C): the refitted down columns of all neurons, one per row
    for (size_t i = 0; i < FC; i++) Wd[i] = w_down[i];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, F, C, F, 1.0, M, F, Wd, F, 0.0, Vt, C);
    double energy = 0; // tr(W M W^T): the layer's output energy, the scale of the costs
    for (int j = 0; j < F; j++)
        for (int c = 0; c < C; c++) energy += Wd[(size_t)c * F + j] * Vt[(size_t)j * C + c];
    double worst = 0;
    memcpy(Wd, Vt, sizeof *Wd * FC);
    cblas_dsymm(CblasRowMajor, CblasLeft, CblasUpper, F, C, 1.0, Hi, F, Wd, C, 0.0, Vt, C);
    for (int j = 0; j < F; j++) pos[j] = j;
    // Hi and Vt hold D rows (D >= S alive ones, dead ones marked in out[]):
    // removed rows are compacted away only once they are an eighth of D.
    memset(out, 0, (size_t)F);
    for (int S = F, D = F; S > k;) {
        int bmax = S / LS_BATCH_DIV > 1 ? S / LS_BATCH_DIV : 1;
        if (bmax > S - k) bmax = S - k;
        int na = 0;
        for (int i = 0; i < D; i++) {
            if (out[i]) continue;
            double v2 = 0, h = Hi[(size_t)i * D + i];
            for (int c = 0; c < C; c++) v2 += Vt[(size_t)i * C + c] * Vt[(size_t)i * C + c];
            order[na++] = (scored){h > 0 ? v2 / h : INFINITY, i};
        }
        qsort(order, (size_t)na, sizeof *order, by_score_asc);
        int b = 0;
        for (int q = 0; q < na && b < bmax; q++) {
            int i = order[q].j, ok = 1;
            for (int a = 0; a < b && ok; a++) {
                double hij = Hi[(size_t)i * D + B[a]];
                ok = hij * hij < LS_PCORR_MAX * LS_PCORR_MAX * Hi[(size_t)i * D + i] * Hi[(size_t)B[a] * D + B[a]];
            }
            if (ok) B[b++] = i, worst = fmax(worst, order[q].s);
        }
        // Remove batch B: T = Hi_BB^-1 Hi_B: (b,D); Hi -= Hi_B:^T T; V^T -= T^T V^T_B
        for (int a = 0; a < b; a++) {
            memcpy(HiB + (size_t)a * D, Hi + (size_t)B[a] * D, sizeof *HiB * (size_t)D);
            memcpy(VtB + (size_t)a * C, Vt + (size_t)B[a] * C, sizeof *VtB * (size_t)C);
            for (int c = 0; c < b; c++) Hbb[(size_t)a * b + c] = Hi[(size_t)B[a] * D + B[c]];
        }
        memcpy(T, HiB, sizeof *T * (size_t)b * D);
        if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', b, Hbb, b) != 0 ||
            LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'U', b, D, Hbb, b, T, D) != 0) {
            s = kf_error_set(err, KF_ERR_INTERNAL, "fold: least-squares selection lost precision at %d neurons; raise --lambda", S);
            goto done;
        }
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D, D, b, -1.0, HiB, D, T, D, 1.0, Hi, D);
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D, C, b, -1.0, T, D, VtB, C, 1.0, Vt, C);
        for (int a = 0; a < b; a++) {
            out[B[a]] = 1;
            if (removed) removed[F - S + a] = pos[B[a]];
        }
        S -= b;
        if (S > k && D - S <= D / 8) continue;
        // Compact in place (every destination precedes its source).
        int r = 0;
        for (int i = 0; i < D; i++) {
            if (out[i]) continue;
            int c2 = 0;
            for (int j = 0; j < D; j++)
                if (!out[j]) Hi[(size_t)r * S + c2++] = Hi[(size_t)i * D + j];
            memmove(Vt + (size_t)r * C, Vt + (size_t)i * C, sizeof *Vt * (size_t)C);
            pos[r++] = pos[i];
        }
        D = S;
        memset(out, 0, (size_t)D);
    }
    memcpy(idx, pos, sizeof *idx * (size_t)k);
    if (t_cut) *t_cut = energy > 0 ? worst / energy : 0;
    if (w_new)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < k; i++) w_new[(size_t)c * k + i] = (float)Vt[(size_t)i * C + c];
done:
    free(Hi);
    free(Vt);
    free(Wd);
    free(HiB);
    free(T);
    free(VtB);
    free(Hbb);
    free(pos);
    free(B);
    free(out);
    free(order);
    return s;
}

kf_status kf_ffn_error(const double *M, int64_t n, const float *w_down, int C, int F, const int *idx, int k,
                       const float *w_new, double *err_out, double *ref, kf_error *err) {
    double *W = malloc(sizeof *W * (size_t)C * F), *Wn = malloc(sizeof *Wn * (size_t)C * k);
    double *P = malloc(sizeof *P * (size_t)C * F), *G = malloc(sizeof *G * (size_t)k * k);
    double *X = malloc(sizeof *X * (size_t)k * F);
    kf_status s = KF_OK;
    if (!W || !Wn || !P || !G || !X) {
        s = kf_error_set(err, KF_ERR_NOMEM, "transform: out of memory for the error of a %d-wide layer", F);
        goto done;
    }
    for (int64_t i = 0; i < (int64_t)C * F; i++) W[i] = w_down[i];
    for (int64_t i = 0; i < (int64_t)C * k; i++) Wn[i] = w_new[i];
    for (int a = 0; a < k; a++) {
        const double *row = M + (size_t)idx[a] * F;
        for (int b = 0; b < k; b++) G[(size_t)a * k + b] = row[idx[b]];
        memcpy(X + (size_t)a * F, row, sizeof *X * (size_t)F);
    }
    // ||A W^T - A_k Wn^T||^2 = tr(W M W^T) - 2 tr(Wn X W^T) + tr(Wn G Wn^T)
    double t0 = 0, t1 = 0, t2 = 0;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, C, F, F, 1.0, W, F, M, F, 0.0, P, F);
    for (int64_t i = 0; i < (int64_t)C * F; i++) t0 += P[i] * W[i];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, C, F, k, 1.0, Wn, k, X, F, 0.0, P, F);
    for (int64_t i = 0; i < (int64_t)C * F; i++) t1 += P[i] * W[i];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, C, k, k, 1.0, Wn, k, G, k, 0.0, P, k);
    for (int64_t i = 0; i < (int64_t)C * k; i++) t2 += P[i] * Wn[i];
    double e = (t0 - 2 * t1 + t2) / (double)n;
    *err_out = e > 0 ? e : 0;
    *ref = t0 / (double)n;
done:
    free(W);
    free(Wn);
    free(P);
    free(G);
    free(X);
    return s;
}

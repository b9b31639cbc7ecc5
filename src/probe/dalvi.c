// Dalvi et al.'s layer and neuron selection (probe/dalvi.h).
#include "probe/dalvi.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyze/corrclust.h"
#include "core/progress.h"
#include "core/tensor.h"

kf_status kf_probe_col_stats(const kf_features *x, double *mean, double *inv_std, kf_error *err) {
    const int64_t D = x->n_cols, N = x->n_rows;
    double *sq = calloc((size_t)D, sizeof *sq);
    if (!sq) return kf_error_set(err, KF_ERR_NOMEM, "probe: out of memory for column statistics");
    for (int64_t j = 0; j < D; j++) mean[j] = 0;
    // One pass over the memory map: sums and sums of squares in double.
    for (int64_t i = 0; i < N; i++) {
        for (int64_t j = 0; j < D; j++) {
            double v = x->f16 ? kf_f16_to_f32_1(((const uint16_t *)x->data)[i * D + j]) : ((const float *)x->data)[i * D + j];
            mean[j] += v, sq[j] += v * v;
        }
    }
    const double n = (double)(N > 0 ? N : 1);
    for (int64_t j = 0; j < D; j++) {
        mean[j] /= n;
        double var = sq[j] / n - mean[j] * mean[j];
        inv_std[j] = var > 1e-12 * (1 + mean[j] * mean[j]) ? 1 / sqrt(var) : 1;
    }
    free(sq);
    return KF_OK;
}

void kf_dalvi_result_free(kf_dalvi_result *r) {
    if (!r) return;
    free(r->block_dev), free(r->block_test), free(r->block_ctrl), free(r->prefix_dev);
    free(r->grid_dev), free(r->grid_test), free(r->grid_n), free(r->selected), free(r->selected_per_block);
    free(r->confusion), free(r->runs), free(r->final_mean), free(r->final_inv_std), free(r->block_w);
    kf_logreg_free(&r->final_model);
    memset(r, 0, sizeof *r);
}

typedef struct {
    const kf_feat_layout *lay;
    const kf_probe_split *sp[3]; // train, dev, test
    int K;
    const kf_dalvi_opts *o;
    double *mean, *inv;
    kf_dalvi_result *r;
    kf_dalvi_progress_fn progress;
    void *user;
    int cap_runs;
} run_ctx;

// dst (rows, n) = standardised columns cols of split x.
static kf_status gather(run_ctx *c, const kf_features *x, const int64_t *cols, int n, float **dst, kf_error *err) {
    *dst = malloc((size_t)x->n_rows * (size_t)n * sizeof **dst);
    if (!*dst) return kf_error_set(err, KF_ERR_NOMEM, "probe: out of memory for %lld x %d features", (long long)x->n_rows, n);
    kf_features_gather(x, cols, n, *dst);
    float *d = *dst;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < x->n_rows; i++)
        for (int j = 0; j < n; j++)
            d[i * n + j] = (float)((d[i * n + j] - c->mean[cols[j]]) * c->inv[cols[j]]);
    return KF_OK;
}

static kf_status accuracy(const kf_logreg *m, const float *X, const int32_t *y, int64_t N, int64_t *confusion,
                          double *acc, kf_error *err) {
    int32_t *pred = malloc((size_t)(N > 0 ? N : 1) * sizeof *pred);
    if (!pred) return kf_error_set(err, KF_ERR_NOMEM, "probe: out of memory");
    kf_status s = kf_logreg_predict(m, X, N, pred, err);
    int64_t hit = 0;
    for (int64_t i = 0; s == KF_OK && i < N; i++) {
        hit += pred[i] == y[i];
        if (confusion) confusion[(int64_t)y[i] * m->n_classes + pred[i]]++;
    }
    *acc = N > 0 ? (double)hit / (double)N : NAN;
    free(pred);
    return s;
}

// Trains the task probe (and, when control is set and the splits have
// control labels, the control probe) on columns cols. Task accuracies into
// *dev/*test, control test accuracy into *ctrl; the task model into keep
// (may be NULL); confusion (K,K) of the task probe on test (may be NULL).
static kf_status probe(run_ctx *c, const char *name, const int64_t *cols, int n, bool control, double *dev,
                       double *test, double *ctrl, kf_logreg *keep, int64_t *confusion, kf_error *err) {
    float *X[3] = {0};
    kf_status s = KF_OK;
    for (int k = 0; k < 3 && s == KF_OK; k++) s = gather(c, c->sp[k]->x, cols, n, &X[k], err);
    if (ctrl) *ctrl = NAN;
    for (int pass = 0; pass < 2 && s == KF_OK; pass++) {
        bool is_ctrl = pass == 1;
        if (is_ctrl && (!control || !c->sp[0]->y_ctrl)) break;
        const int32_t *y[3];
        for (int k = 0; k < 3; k++) y[k] = is_ctrl ? c->sp[k]->y_ctrl : c->sp[k]->y;
        if (c->r->n_runs == c->cap_runs) {
            int cap = c->cap_runs ? 2 * c->cap_runs : 64;
            kf_probe_run *nr = realloc(c->r->runs, (size_t)cap * sizeof *nr);
            if (!nr) {
                s = kf_error_set(err, KF_ERR_NOMEM, "probe: out of memory");
                break;
            }
            c->r->runs = nr;
            c->cap_runs = cap;
        }
        kf_probe_run *run = &c->r->runs[c->r->n_runs];
        memset(run, 0, sizeof *run);
        snprintf(run->name, sizeof run->name, "%s%s", name, is_ctrl ? " control" : "");
        if (c->progress) c->progress(c->user, c->r->n_runs, run->name);
        double t0 = kf_time_now();
        kf_logreg m;
        s = kf_logreg_train(&m, X[0], y[0], c->sp[0]->x->n_rows, n, c->K, &c->o->lr, err);
        if (s != KF_OK) break;
        run->seconds = kf_time_now() - t0;
        run->n_features = n;
        run->iters = m.iters;
        run->converged = m.converged;
        run->objective = m.objective;
        s = accuracy(&m, X[1], y[1], c->sp[1]->x->n_rows, NULL, &run->dev_acc, err);
        if (s == KF_OK)
            s = accuracy(&m, X[2], y[2], c->sp[2]->x->n_rows, is_ctrl ? NULL : confusion, &run->test_acc, err);
        c->r->n_runs++;
        if (is_ctrl) {
            if (ctrl) *ctrl = run->test_acc;
        } else {
            if (dev) *dev = run->dev_acc;
            if (test) *test = run->test_acc;
        }
        if (keep && !is_ctrl) *keep = m;
        else kf_logreg_free(&m);
    }
    for (int k = 0; k < 3; k++) free(X[k]);
    return s;
}

static int block_of(const kf_feat_layout *lay, int64_t col) {
    int b = 0;
    while (b + 1 < lay->n_blocks && col >= lay->col[b + 1]) b++;
    return b;
}

// Weight share ranking: columns by sum_k |W_kj|, descending (ties: lower column first).
typedef struct {
    double score;
    int j;
} ranked;
static int cmp_ranked(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->j > y->j) - (x->j < y->j);
}

kf_status kf_dalvi_run(const kf_feat_layout *lay, const kf_probe_split *train, const kf_probe_split *dev,
                       const kf_probe_split *test, int n_classes, const kf_dalvi_opts *o, kf_dalvi_result *out,
                       kf_dalvi_progress_fn progress, void *user, kf_error *err) {
    memset(out, 0, sizeof *out);
    const int nb = lay->n_blocks;
    const int64_t D = lay->col[nb];
    const kf_probe_split *sp[3] = {train, dev, test};
    for (int k = 0; k < 3; k++)
        if (sp[k]->x->n_cols != D)
            return kf_error_set(err, KF_ERR_ARG, "probe: features of %lld columns, the model has %lld",
                                (long long)sp[k]->x->n_cols, (long long)D);
    double t_start = kf_time_now();
    run_ctx c = {.lay = lay, .sp = {train, dev, test}, .K = n_classes, .o = o, .r = out, .progress = progress, .user = user};
    kf_dalvi_result *r = out;
    r->n_blocks = nb;
    r->n_classes = n_classes;
    r->n_neurons = D;
    c.mean = malloc((size_t)D * sizeof *c.mean);
    c.inv = malloc((size_t)D * sizeof *c.inv);
    int64_t *cols = malloc((size_t)D * sizeof *cols);
    r->block_dev = malloc((size_t)nb * sizeof(double));
    r->block_test = malloc((size_t)nb * sizeof(double));
    r->block_ctrl = malloc((size_t)nb * sizeof(double));
    r->prefix_dev = malloc((size_t)nb * sizeof(double));
    r->grid_dev = malloc((size_t)(o->n_grid > 0 ? o->n_grid : 1) * sizeof(double));
    r->grid_test = malloc((size_t)(o->n_grid > 0 ? o->n_grid : 1) * sizeof(double));
    r->grid_n = calloc((size_t)(o->n_grid > 0 ? o->n_grid : 1), sizeof(int));
    r->selected_per_block = calloc((size_t)nb, sizeof(int));
    r->confusion = calloc((size_t)n_classes * (size_t)n_classes, sizeof(int64_t));
    r->block_w = calloc((size_t)n_classes * (size_t)D, sizeof(float));
    int64_t *reps = NULL;
    ranked *rank = NULL;
    double *corr = NULL;
    float *corrf = NULL;
    int32_t *labels = NULL;
    kf_logreg cc_model = {0};
    kf_linkage z = {0};
    kf_status s = KF_OK;
    if (!c.mean || !c.inv || !cols || !r->block_dev || !r->block_test || !r->block_ctrl || !r->prefix_dev ||
        !r->grid_dev || !r->grid_test || !r->grid_n || !r->selected_per_block || !r->confusion || !r->block_w) {
        s = kf_error_set(err, KF_ERR_NOMEM, "probe: out of memory");
        goto done;
    }
    for (int i = 0; i < nb; i++) r->prefix_dev[i] = NAN;
    r->oracle_dev = r->oracle_test = r->oracle_ctrl = r->ls_dev = r->ls_test = r->cc_dev = r->cc_test = NAN;
    r->final_dev = r->final_test = r->final_ctrl = r->selectivity = NAN;
    for (int i = 0; i < o->n_grid; i++) r->grid_dev[i] = r->grid_test[i] = NAN;
    for (int64_t j = 0; j < D; j++) cols[j] = j;
    s = kf_probe_col_stats(train->x, c.mean, c.inv, err);

    // 1. a probe per block, and the oracle
    char name[32];
    for (int b = 0; s == KF_OK && b < nb; b++) {
        snprintf(name, sizeof name, "block %d", b);
        const int nc = (int)(lay->col[b + 1] - lay->col[b]);
        kf_logreg bm = {0};
        s = probe(&c, name, cols + lay->col[b], nc, true, &r->block_dev[b], &r->block_test[b], &r->block_ctrl[b],
                  &bm, NULL, err);
        for (int k = 0; s == KF_OK && k < n_classes; k++)
            memcpy(r->block_w + (int64_t)k * D + lay->col[b], bm.w + (int64_t)k * nc, sizeof(float) * (size_t)nc);
        kf_logreg_free(&bm);
    }
    if (s == KF_OK && o->blocks_only) goto done;
    if (s == KF_OK)
        s = probe(&c, "oracle", cols, (int)D, true, &r->oracle_dev, &r->oracle_test, &r->oracle_ctrl, NULL, NULL,
                  err);
    if (s != KF_OK) goto done;

    // 2. LayerSelector: the smallest prefix within delta of the oracle (dev)
    const double ls_goal = (1 - o->delta) * r->oracle_dev;
    r->ls_blocks = nb;
    r->ls_dev = r->oracle_dev, r->ls_test = r->oracle_test;
    for (int k = 0; s == KF_OK && k < nb; k++) {
        double dv, te;
        if (k == 0) dv = r->block_dev[0], te = r->block_test[0];
        else if (k == nb - 1) dv = r->oracle_dev, te = r->oracle_test;
        else {
            snprintf(name, sizeof name, "blocks 0-%d", k);
            s = probe(&c, name, cols, (int)lay->col[k + 1], false, &dv, &te, NULL, NULL, NULL, err);
            if (s != KF_OK) break;
        }
        r->prefix_dev[k] = dv;
        if (dv >= ls_goal) {
            r->ls_blocks = k + 1;
            r->ls_dev = dv, r->ls_test = te;
            break;
        }
    }
    if (s != KF_OK) goto done;

    // 3. correlation clustering of the kept neurons, on standardised training rows
    const int n_ls = (int)lay->col[r->ls_blocks];
    reps = malloc((size_t)n_ls * sizeof *reps);
    labels = malloc((size_t)n_ls * sizeof *labels);
    if (!reps || !labels) {
        s = kf_error_set(err, KF_ERR_NOMEM, "probe: out of memory");
        goto done;
    }
    {
        float *Xt;
        s = gather(&c, train->x, cols, n_ls, &Xt, err);
        if (s != KF_OK) goto done;
        corrf = malloc((size_t)n_ls * (size_t)n_ls * sizeof *corrf);
        corr = malloc((size_t)n_ls * (size_t)n_ls * sizeof *corr);
        if (!corrf || !corr) {
            free(Xt);
            s = kf_error_set(err, KF_ERR_NOMEM, "probe: out of memory for a %d x %d correlation matrix", n_ls, n_ls);
            goto done;
        }
        // corr (n, n) = Xt^T Xt / N: the columns have mean 0 and variance 1
        const int64_t N = train->x->n_rows;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_ls, n_ls, (int)N, 1.0f / (float)N, Xt, n_ls, Xt, n_ls,
                    0.0f, corrf, n_ls);
        free(Xt);
        for (int64_t j = 0; j < (int64_t)n_ls * n_ls; j++) corr[j] = corrf[j];
        free(corrf);
        corrf = NULL;
    }
    int n_cl = 1;
    if (n_ls >= 2) {
        s = kf_corrclust_run(corr, n_ls, &z, err);
        if (s == KF_OK) s = kf_linkage_cut(&z, o->cc_threshold, labels, &n_cl, err);
        if (s != KF_OK) goto done;
    } else {
        labels[0] = 0;
    }
    free(corr);
    corr = NULL;
    {
        // one neuron per cluster: its lowest column (labels number clusters by first appearance)
        int seen = 0;
        for (int j = 0; j < n_ls; j++)
            if (labels[j] == seen) reps[seen++] = j;
        r->cc_neurons = seen;
    }
    s = probe(&c, "ls+cc", reps, r->cc_neurons, true, &r->cc_dev, &r->cc_test, NULL, &cc_model, NULL, err);
    if (s != KF_OK) goto done;

    // 4. feature selection by weight share, smallest grid point within delta of LS+CC
    rank = malloc((size_t)r->cc_neurons * sizeof *rank);
    r->selected = malloc((size_t)r->cc_neurons * sizeof *r->selected);
    if (!rank || !r->selected) {
        s = kf_error_set(err, KF_ERR_NOMEM, "probe: out of memory");
        goto done;
    }
    for (int j = 0; j < r->cc_neurons; j++) {
        double sc = 0;
        for (int k = 0; k < n_classes; k++) sc += fabs(cc_model.w[(int64_t)k * r->cc_neurons + j]);
        rank[j] = (ranked){sc, j};
    }
    qsort(rank, (size_t)r->cc_neurons, sizeof *rank, cmp_ranked);
    for (int j = 0; j < r->cc_neurons; j++) r->selected[j] = reps[rank[j].j];
    r->n_selected = r->cc_neurons;
    r->final_dev = r->cc_dev, r->final_test = r->cc_test;
    const double fs_goal = (1 - o->delta) * r->cc_dev;
    int prev_n = 0;
    for (int gi = 0; gi < o->n_grid; gi++) {
        int n_p = (int)lround(o->grid[gi] / 100.0 * r->cc_neurons);
        if (n_p < 1) n_p = 1;
        if (n_p > r->cc_neurons) n_p = r->cc_neurons;
        r->grid_n[gi] = n_p;
        if (n_p == prev_n) {
            r->grid_dev[gi] = r->grid_dev[gi - 1], r->grid_test[gi] = r->grid_test[gi - 1];
        } else {
            snprintf(name, sizeof name, "top %g%%", o->grid[gi]);
            s = probe(&c, name, r->selected, n_p, false, &r->grid_dev[gi], &r->grid_test[gi], NULL, NULL, NULL,
                      err);
            if (s != KF_OK) goto done;
        }
        prev_n = n_p;
        if (r->grid_dev[gi] >= fs_goal) {
            r->n_selected = n_p;
            r->final_dev = r->grid_dev[gi], r->final_test = r->grid_test[gi];
            break;
        }
    }
    // The final set: its test confusion matrix and its control probe.
    s = probe(&c, "final", r->selected, r->n_selected, true, &r->final_dev, &r->final_test, &r->final_ctrl,
              &r->final_model, r->confusion, err);
    if (s != KF_OK) goto done;
    r->final_mean = malloc((size_t)r->n_selected * sizeof *r->final_mean);
    r->final_inv_std = malloc((size_t)r->n_selected * sizeof *r->final_inv_std);
    if (!r->final_mean || !r->final_inv_std) {
        s = kf_error_set(err, KF_ERR_NOMEM, "probe: out of memory");
        goto done;
    }
    for (int j = 0; j < r->n_selected; j++)
        r->final_mean[j] = c.mean[r->selected[j]], r->final_inv_std[j] = c.inv[r->selected[j]];
    r->selectivity = r->final_test - r->final_ctrl;
    for (int j = 0; j < r->n_selected; j++) r->selected_per_block[block_of(lay, r->selected[j])]++;
done:
    r->seconds = kf_time_now() - t_start;
    free(c.mean), free(c.inv), free(cols), free(reps), free(rank), free(corr), free(corrf), free(labels);
    kf_logreg_free(&cc_model);
    kf_linkage_free(&z);
    if (s != KF_OK) kf_dalvi_result_free(r);
    return s;
}

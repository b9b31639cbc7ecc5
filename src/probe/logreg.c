// Elastic-net multinomial logistic regression by OWL-QN (probe/logreg.h).
#include "probe/logreg.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

kf_logreg_opts kf_logreg_defaults(void) {
    return (kf_logreg_opts){.l1 = 1e-5, .l2 = 1e-5, .balanced = false, .max_iter = 500, .tol = 1e-7, .history = 10};
}

void kf_logreg_free(kf_logreg *m) {
    if (!m) return;
    free(m->w);
    free(m->b);
    m->w = m->b = NULL;
}

// z (N, K) = X (N, D) W^T (K, D) + b
static void logits(float *z, const float *X, const float *w, const float *b, int64_t N, int D, int K) {
    for (int64_t i = 0; i < N; i++) memcpy(z + i * K, b, sizeof(float) * (size_t)K);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, K, D, 1.0f, X, D, w, D, 1.0f, z, K);
}

double kf_logreg_smooth(const double *theta, const float *X, const int32_t *y, const float *sw, int64_t N, int D,
                        int K, double l2, float *z, float *wf, double *g) {
    const int64_t KD = (int64_t)K * D;
    for (int64_t j = 0; j < KD + K; j++) wf[j] = (float)theta[j]; // W (K, D) then b (K)
    logits(z, X, wf, wf + KD, N, D, K);
    double loss = 0;
    // Each row of z becomes s_i/N (softmax(z_i) - onehot(y_i)): dF/dz_i.
#pragma omp parallel for reduction(+ : loss) schedule(static)
    for (int64_t i = 0; i < N; i++) {
        float *zi = z + i * K;
        float mx = zi[0];
        for (int k = 1; k < K; k++) mx = zi[k] > mx ? zi[k] : mx;
        double sum = 0;
        for (int k = 0; k < K; k++) sum += exp((double)(zi[k] - mx));
        const double lse = mx + log(sum);
        loss += sw[i] * (lse - zi[y[i]]);
        const double scale = sw[i] / (double)N;
        for (int k = 0; k < K; k++) zi[k] = (float)(scale * (exp((double)zi[k] - lse) - (k == y[i])));
    }
    double f = loss / (double)N, reg = 0;
    for (int64_t j = 0; j < KD; j++) reg += theta[j] * theta[j];
    f += l2 * reg;
    if (!g) return f;
    // dW (K, D) = dZ^T (K, N) X (N, D), through wf as float scratch
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, D, (int)N, 1.0f, z, K, X, D, 0.0f, wf, D);
    for (int64_t j = 0; j < KD; j++) g[j] = wf[j] + 2 * l2 * theta[j];
    for (int k = 0; k < K; k++) g[KD + k] = 0;
    for (int64_t i = 0; i < N; i++)
        for (int k = 0; k < K; k++) g[KD + k] += z[i * K + k];
    return f;
}

static double l1_norm(const double *w, int64_t n) {
    double s = 0;
    for (int64_t j = 0; j < n; j++) s += fabs(w[j]);
    return s;
}

// OWL-QN pseudo-gradient of f + l1 |w|_1 (the first n_l1 coordinates are penalised).
static void pseudo_grad(double *pg, const double *x, const double *g, int64_t n, int64_t n_l1, double l1) {
    for (int64_t j = 0; j < n; j++) {
        if (j >= n_l1 || l1 == 0) pg[j] = g[j];
        else if (x[j] > 0) pg[j] = g[j] + l1;
        else if (x[j] < 0) pg[j] = g[j] - l1;
        else if (g[j] + l1 < 0) pg[j] = g[j] + l1;
        else if (g[j] - l1 > 0) pg[j] = g[j] - l1;
        else pg[j] = 0;
    }
}

static double dot(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t j = 0; j < n; j++) s += a[j] * b[j];
    return s;
}

// Sample weights sw (N) and the class counts (K).
static void sample_weights(float *sw, const int32_t *y, int64_t N, int K, bool balanced, int64_t *count) {
    memset(count, 0, sizeof *count * (size_t)K);
    for (int64_t i = 0; i < N; i++) count[y[i]]++;
    int present = 0;
    for (int k = 0; k < K; k++) present += count[k] > 0;
    for (int64_t i = 0; i < N; i++)
        sw[i] = balanced ? (float)((double)N / ((double)present * (double)count[y[i]])) : 1.0f;
}

kf_status kf_logreg_train(kf_logreg *out, const float *X, const int32_t *y, int64_t N, int D, int K,
                          const kf_logreg_opts *o, kf_error *err) {
    memset(out, 0, sizeof *out);
    if (N < 1 || D < 1 || K < 2 || N > INT32_MAX)
        return kf_error_set(err, KF_ERR_ARG, "logreg: %lld rows of %d features in %d classes", (long long)N, D, K);
    for (int64_t i = 0; i < N; i++)
        if (y[i] < 0 || y[i] >= K) return kf_error_set(err, KF_ERR_ARG, "logreg: label %d of row %lld outside [0, %d)", y[i], (long long)i, K);
    const int m = o->history > 0 ? o->history : 10;
    const int max_iter = o->max_iter > 0 ? o->max_iter : 500;
    // Train on the classes present (Kp of them), then place the rows back.
    int64_t *count = calloc((size_t)K, sizeof *count);
    int32_t *map = malloc((size_t)K * sizeof *map);
    int32_t *yc = malloc((size_t)N * sizeof *yc);
    float *sw = malloc((size_t)N * sizeof *sw);
    if (!count || !map || !yc || !sw) {
        free(count), free(map), free(yc), free(sw);
        return kf_error_set(err, KF_ERR_NOMEM, "logreg: out of memory");
    }
    sample_weights(sw, y, N, K, o->balanced, count);
    int Kp = 0;
    for (int k = 0; k < K; k++) map[k] = count[k] > 0 ? Kp++ : -1;
    for (int64_t i = 0; i < N; i++) yc[i] = map[y[i]];
    kf_status st = KF_OK;
    const int64_t KD = (int64_t)Kp * D, n = KD + Kp;
    double *x = NULL, *xn = NULL, *g = NULL, *gn = NULL, *pg = NULL, *d = NULL, *S = NULL, *Y = NULL, *rho = NULL,
           *alpha = NULL;
    float *z = NULL, *wf = NULL;
    if (Kp < 2) {
        // One class only: it is always predicted.
        out->n_classes = K, out->dim = D;
        out->w = calloc((size_t)K * (size_t)D, sizeof *out->w);
        out->b = malloc((size_t)K * sizeof *out->b);
        if (!out->w || !out->b) st = kf_error_set(err, KF_ERR_NOMEM, "logreg: out of memory");
        else
            for (int k = 0; k < K; k++) out->b[k] = count[k] > 0 ? 0.0f : -1e30f;
        out->converged = true;
        goto done;
    }
    x = calloc((size_t)n, sizeof *x), xn = malloc((size_t)n * sizeof *xn), g = malloc((size_t)n * sizeof *g);
    gn = malloc((size_t)n * sizeof *gn), pg = malloc((size_t)n * sizeof *pg), d = malloc((size_t)n * sizeof *d);
    S = malloc((size_t)m * (size_t)n * sizeof *S), Y = malloc((size_t)m * (size_t)n * sizeof *Y);
    rho = malloc((size_t)m * sizeof *rho), alpha = malloc((size_t)m * sizeof *alpha);
    z = malloc((size_t)N * (size_t)Kp * sizeof *z);
    wf = malloc((size_t)(KD > n ? KD : n) * sizeof *wf);
    if (!x || !xn || !g || !gn || !pg || !d || !S || !Y || !rho || !alpha || !z || !wf) {
        st = kf_error_set(err, KF_ERR_NOMEM, "logreg: out of memory for %d x %d parameters", Kp, D);
        goto done;
    }
    double f = kf_logreg_smooth(x, X, yc, sw, N, D, Kp, o->l2, z, wf, g);
    double F = f + o->l1 * l1_norm(x, KD);
    enum { PAST = 5 };
    double hist[PAST];
    int n_pairs = 0, head = 0, it = 0;
    bool converged = false;
    for (it = 0; it < max_iter; it++) {
        hist[it % PAST] = F;
        pseudo_grad(pg, x, g, n, KD, o->l1);
        // d = -H pg by the two-loop recursion over the stored (s, y) pairs
        for (int64_t j = 0; j < n; j++) d[j] = -pg[j];
        for (int c = 0; c < n_pairs; c++) {
            int p = (head - 1 - c + m) % m;
            alpha[p] = rho[p] * dot(S + (int64_t)p * n, d, n);
            for (int64_t j = 0; j < n; j++) d[j] -= alpha[p] * Y[(int64_t)p * n + j];
        }
        if (n_pairs > 0) {
            int p = (head - 1 + m) % m;
            double yy = dot(Y + (int64_t)p * n, Y + (int64_t)p * n, n);
            double gamma = 1.0 / (rho[p] * yy);
            for (int64_t j = 0; j < n; j++) d[j] *= gamma;
        }
        for (int c = n_pairs - 1; c >= 0; c--) {
            int p = (head - 1 - c + m) % m;
            double beta = rho[p] * dot(Y + (int64_t)p * n, d, n);
            for (int64_t j = 0; j < n; j++) d[j] += (alpha[p] - beta) * S[(int64_t)p * n + j];
        }
        // Keep the direction where it agrees with -pg in sign (OWL-QN).
        for (int64_t j = 0; j < KD; j++)
            if (d[j] * pg[j] >= 0) d[j] = 0;
        double dd = dot(pg, d, n);
        if (!(dd < 0)) { // no descent: restart from the steepest direction
            n_pairs = 0;
            for (int64_t j = 0; j < n; j++) d[j] = -pg[j];
            dd = dot(pg, d, n);
            if (!(dd < 0)) {
                converged = true; // pseudo-gradient zero: optimal
                break;
            }
        }
        double t = n_pairs == 0 ? 1.0 / sqrt(-dd) : 1.0, Fn = F, fn = f;
        bool accepted = false;
        for (int ls = 0; ls < 40; ls++, t *= 0.5) {
            for (int64_t j = 0; j < n; j++) {
                xn[j] = x[j] + t * d[j];
                if (j < KD && o->l1 > 0) {
                    // the orthant of x, or of -pg where x is zero
                    double xi = x[j] != 0 ? x[j] : -pg[j];
                    if (xn[j] * xi <= 0) xn[j] = 0;
                }
            }
            fn = kf_logreg_smooth(xn, X, yc, sw, N, D, Kp, o->l2, z, wf, gn);
            Fn = fn + o->l1 * l1_norm(xn, KD);
            double decrease = 0;
            for (int64_t j = 0; j < n; j++) decrease += pg[j] * (xn[j] - x[j]);
            if (Fn <= F + 1e-4 * decrease) {
                accepted = true;
                break;
            }
        }
        if (!accepted) {
            converged = true; // no step decreases F at float precision
            break;
        }
        double *sp = S + (int64_t)head * n, *yp = Y + (int64_t)head * n;
        for (int64_t j = 0; j < n; j++) sp[j] = xn[j] - x[j], yp[j] = gn[j] - g[j];
        double sy = dot(sp, yp, n);
        if (sy > 1e-16) {
            rho[head] = 1.0 / sy;
            head = (head + 1) % m;
            if (n_pairs < m) n_pairs++;
        }
        memcpy(x, xn, sizeof *x * (size_t)n);
        memcpy(g, gn, sizeof *g * (size_t)n);
        f = fn;
        double Fold = hist[(it + 1) % PAST]; // F before the last PAST steps
        F = Fn;
        if (it + 1 >= PAST && (Fold - F) / PAST < o->tol * fabs(F)) {
            converged = true;
            it++;
            break;
        }
    }
    out->n_classes = K;
    out->dim = D;
    out->w = calloc((size_t)K * (size_t)D, sizeof *out->w);
    out->b = malloc((size_t)K * sizeof *out->b);
    if (!out->w || !out->b) {
        st = kf_error_set(err, KF_ERR_NOMEM, "logreg: out of memory");
        goto done;
    }
    for (int k = 0; k < K; k++) {
        if (map[k] < 0) {
            out->b[k] = -1e30f;
            continue;
        }
        for (int j = 0; j < D; j++) out->w[(int64_t)k * D + j] = (float)x[(int64_t)map[k] * D + j];
        out->b[k] = (float)x[KD + map[k]];
    }
    out->objective = F;
    out->iters = it;
    out->converged = converged;
done:
    if (st != KF_OK) kf_logreg_free(out);
    free(count), free(map), free(yc), free(sw);
    free(x), free(xn), free(g), free(gn), free(pg), free(d), free(S), free(Y), free(rho), free(alpha), free(z), free(wf);
    return st;
}

double kf_logreg_objective(const kf_logreg *m, const float *X, const int32_t *y, int64_t N, const kf_logreg_opts *o) {
    const int K = m->n_classes, D = m->dim;
    int64_t *count = calloc((size_t)K, sizeof *count);
    float *sw = malloc((size_t)N * sizeof *sw), *z = malloc((size_t)N * (size_t)K * sizeof *z);
    double f = NAN;
    if (count && sw && z) {
        sample_weights(sw, y, N, K, o->balanced, count);
        logits(z, X, m->w, m->b, N, D, K);
        double loss = 0, l1 = 0, l2 = 0;
        for (int64_t i = 0; i < N; i++) {
            const float *zi = z + i * K;
            float mx = zi[0];
            for (int k = 1; k < K; k++) mx = zi[k] > mx ? zi[k] : mx;
            double sum = 0;
            for (int k = 0; k < K; k++) sum += exp((double)(zi[k] - mx));
            loss += sw[i] * (mx + log(sum) - zi[y[i]]);
        }
        for (int64_t j = 0; j < (int64_t)K * D; j++) l1 += fabs(m->w[j]), l2 += (double)m->w[j] * m->w[j];
        f = loss / (double)N + o->l1 * l1 + o->l2 * l2;
    }
    free(count), free(sw), free(z);
    return f;
}

kf_status kf_logreg_predict(const kf_logreg *m, const float *X, int64_t N, int32_t *pred, kf_error *err) {
    const int K = m->n_classes;
    enum { CHUNK = 4096 };
    float *z = malloc((size_t)CHUNK * (size_t)K * sizeof *z);
    if (!z) return kf_error_set(err, KF_ERR_NOMEM, "logreg: out of memory");
    for (int64_t i0 = 0; i0 < N; i0 += CHUNK) {
        int64_t n = N - i0 < CHUNK ? N - i0 : CHUNK;
        logits(z, X + i0 * m->dim, m->w, m->b, n, m->dim, K);
        for (int64_t i = 0; i < n; i++) {
            const float *zi = z + i * K;
            int best = 0;
            for (int k = 1; k < K; k++)
                if (zi[k] > zi[best]) best = k;
            pred[i0 + i] = best;
        }
    }
    free(z);
    return KF_OK;
}

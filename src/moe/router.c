// Similarity and trained routers, and their recall of the oracle (router.h).
#include "moe/router.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "runtime/moe.h"

void kf_router_train_opts_default(kf_router_train_opts *o) {
    *o = (kf_router_train_opts){.hidden = 0, .epochs = 8, .batch = 256, .lr = 5e-3f, .seed = 1};
}

kf_status kf_router_similarity(kf_model *m, int l, int E, kf_error *err) {
    kf_layer *L = &m->layers[l];
    const int C = m->n_embd, F = L->n_ff, S = F / E;
    const kf_tensor *in = m->gated_ffn ? &L->w_gate : &L->w_up;
    kf_tensor w = {0}, b = {0};
    kf_status s = kf_model_alloc_tensor(m, &w, 2, (int64_t[]){E, C}, err);
    if (s == KF_OK && kf_tensor_present(&L->b_up)) s = kf_model_alloc_tensor(m, &b, 1, (int64_t[]){E}, err);
    if (s != KF_OK) return s;
    for (int e = 0; e < E; e++)
        for (int j = e * S; j < (e + 1) * S; j++) {
            for (int c = 0; c < C; c++) w.data[(int64_t)e * C + c] += in->data[(int64_t)j * C + c] / (float)S;
            if (b.data) b.data[e] += L->b_up.data[j] / (float)S;
        }
    L->router = KF_ROUTER_LINEAR;
    L->router_w = w;
    L->router_b = b;
    L->router_w2 = L->router_b2 = (kf_tensor){0};
    return KF_OK;
}

// Uniform in (-1, 1) scaled: a simple, seeded initialiser.
static float uniform(uint64_t *x, float scale) {
    return scale * (float)(2.0 * kf_rng_unit(kf_rng_splitmix64(x)) - 1.0);
}

typedef struct {
    float *p, *g, *m, *v; // parameters, gradient, Adam moments
    int64_t n;
} param;

static void adam_step(param *P, float lr, int t) {
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    const float c1 = 1.0f - powf(b1, (float)t), c2 = 1.0f - powf(b2, (float)t);
    for (int64_t i = 0; i < P->n; i++) {
        P->m[i] = b1 * P->m[i] + (1 - b1) * P->g[i];
        P->v[i] = b2 * P->v[i] + (1 - b2) * P->g[i] * P->g[i];
        P->p[i] -= lr * (P->m[i] / c1) / (sqrtf(P->v[i] / c2) + eps);
    }
}

kf_status kf_router_train(kf_model *m, int l, int E, const float *X, const float *Y, int n,
                          const kf_router_train_opts *o, double *loss, kf_error *err) {
    kf_layer *L = &m->layers[l];
    const int C = m->n_embd, H = o->hidden, B = o->batch;
    const int O1 = H > 0 ? H : E; // rows of the first layer
    if (n < 1 || E < 1 || B < 1 || o->epochs < 1 || H < 0)
        return kf_error_set(err, KF_ERR_ARG, "moefy: router training needs samples (%d), experts and a batch", n);
    kf_tensor w1 = {0}, b1 = {0}, w2 = {0}, b2 = {0};
    kf_status s;
    if ((s = kf_model_alloc_tensor(m, &w1, 2, (int64_t[]){O1, C}, err)) != KF_OK ||
        (s = kf_model_alloc_tensor(m, &b1, 1, (int64_t[]){O1}, err)) != KF_OK)
        return s;
    if (H > 0 && ((s = kf_model_alloc_tensor(m, &w2, 2, (int64_t[]){E, H}, err)) != KF_OK ||
                  (s = kf_model_alloc_tensor(m, &b2, 1, (int64_t[]){E}, err)) != KF_OK))
        return s;

    // target scale: mean contribution
    double mean = 0;
    for (int64_t i = 0; i < (int64_t)n * E; i++) mean += Y[i];
    mean /= (double)n * E;
    const float inv = mean > 0 ? (float)(1.0 / mean) : 1.0f;

    param P[4] = {{w1.data, 0, 0, 0, (int64_t)O1 * C}, {b1.data, 0, 0, 0, O1}};
    int n_par = 2;
    if (H > 0) {
        P[2] = (param){w2.data, 0, 0, 0, (int64_t)E * H};
        P[3] = (param){b2.data, 0, 0, 0, E};
        n_par = 4;
    }
    int64_t tot = 0;
    for (int i = 0; i < n_par; i++) tot += P[i].n;
    float *mem = calloc((size_t)tot * 3, sizeof(float));
    float *xb = malloc(sizeof(float) * (size_t)B * C), *yb = malloc(sizeof(float) * (size_t)B * E);
    float *hp = malloc(sizeof(float) * (size_t)B * O1), *pr = malloc(sizeof(float) * (size_t)B * E);
    float *dh = malloc(sizeof(float) * (size_t)B * O1);
    int *order = malloc(sizeof(int) * (size_t)n);
    if (!mem || !xb || !yb || !hp || !pr || !dh || !order) {
        s = kf_error_set(err, KF_ERR_NOMEM, "moefy: out of memory training the router of layer %d", l);
        goto done;
    }
    for (int i = 0, off = 0; i < n_par; off += (int)P[i].n, i++) {
        P[i].g = mem + off;
        P[i].m = mem + tot + off;
        P[i].v = mem + 2 * tot + off;
    }
    // initialisation
    uint64_t rng = o->seed * 0x2545F4914F6CDD1Dull + (uint64_t)l;
    float *bias_out = NULL;
    if (H > 0) {
        float s1 = sqrtf(6.0f / (float)C), s2 = 0.1f / sqrtf((float)H);
        for (int64_t i = 0; i < P[0].n; i++) w1.data[i] = uniform(&rng, s1);
        for (int64_t i = 0; i < P[2].n; i++) w2.data[i] = uniform(&rng, s2);
        bias_out = b2.data;
    } else {
        bias_out = b1.data;
    }
    for (int e = 0; e < E; e++) { // output bias = mean normalised target of the expert
        double me = 0;
        for (int r = 0; r < n; r++) me += Y[(int64_t)r * E + e];
        bias_out[e] = (float)(me / n) * inv;
    }
    for (int i = 0; i < n; i++) order[i] = i;

    double last = 0;
    int t = 0;
    for (int ep = 0; ep < o->epochs; ep++) {
        for (int i = n - 1; i > 0; i--) { // Fisher-Yates
            int j = (int)(kf_rng_splitmix64(&rng) % (uint64_t)(i + 1)), tmp = order[i];
            order[i] = order[j];
            order[j] = tmp;
        }
        double sum_loss = 0;
        for (int b0 = 0; b0 < n; b0 += B) {
            const int nb = n - b0 < B ? n - b0 : B;
            for (int i = 0; i < nb; i++) {
                memcpy(xb + (int64_t)i * C, X + (int64_t)order[b0 + i] * C, sizeof(float) * (size_t)C);
                for (int e = 0; e < E; e++) yb[(int64_t)i * E + e] = Y[(int64_t)order[b0 + i] * E + e] * inv;
            }
            // forward: hp (nb, O1) = xb w1^T + b1
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, O1, C, 1.0f, xb, C, w1.data, C, 0.0f, hp, O1);
            for (int i = 0; i < nb; i++)
                for (int k = 0; k < O1; k++) hp[(int64_t)i * O1 + k] += b1.data[k];
            const float *pred = hp;
            if (H > 0) { // pr (nb, E) = relu(hp) w2^T + b2; dh keeps relu(hp)
                for (int64_t i = 0; i < (int64_t)nb * H; i++) dh[i] = hp[i] > 0 ? hp[i] : 0;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, E, H, 1.0f, dh, H, w2.data, H, 0.0f, pr, E);
                for (int i = 0; i < nb; i++)
                    for (int e = 0; e < E; e++) pr[(int64_t)i * E + e] += b2.data[e];
                pred = pr;
            }
            // dp (nb, E) = 2 (pred - y) / (nb E), into yb
            const float sc = 2.0f / (float)(nb * E);
            for (int64_t i = 0; i < (int64_t)nb * E; i++) {
                float d = pred[i] - yb[i];
                sum_loss += (double)d * d;
                yb[i] = sc * d;
            }
            for (int p = 0; p < n_par; p++) memset(P[p].g, 0, sizeof(float) * (size_t)P[p].n);
            const float *dfirst = yb; // gradient at the first layer's output (nb, O1)
            if (H > 0) {
                // gw2 (E, H) = dp^T relu(hp); gb2 = colsum dp; dh = (dp w2) * (hp > 0)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, E, H, nb, 1.0f, yb, E, dh, H, 0.0f, P[2].g, H);
                for (int i = 0; i < nb; i++)
                    for (int e = 0; e < E; e++) P[3].g[e] += yb[(int64_t)i * E + e];
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, H, E, 1.0f, yb, E, w2.data, H, 0.0f, dh, H);
                for (int64_t i = 0; i < (int64_t)nb * H; i++)
                    if (hp[i] <= 0) dh[i] = 0;
                dfirst = dh;
            }
            // gw1 (O1, C) = dfirst^T xb; gb1 = colsum dfirst
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O1, C, nb, 1.0f, dfirst, O1, xb, C, 0.0f, P[0].g, C);
            for (int i = 0; i < nb; i++)
                for (int k = 0; k < O1; k++) P[1].g[k] += dfirst[(int64_t)i * O1 + k];
            t++;
            for (int p = 0; p < n_par; p++) adam_step(&P[p], o->lr, t);
        }
        last = sum_loss / ((double)n * E);
    }
    L->router = H > 0 ? KF_ROUTER_MLP : KF_ROUTER_LINEAR;
    L->router_w = w1;
    L->router_b = b1;
    L->router_w2 = w2;
    L->router_b2 = b2;
    if (loss) *loss = last;
done:
    free(mem);
    free(xb);
    free(yb);
    free(hp);
    free(pr);
    free(dh);
    free(order);
    return s;
}

kf_status kf_router_recall(const kf_layer *L, int E, const float *X, const float *Y, int n, int k, double *recall,
                           double *share, kf_error *err) {
    const int Hr = L->router == KF_ROUTER_MLP ? (int)L->router_w.ne[0] : 1;
    float *P = malloc(sizeof(float) * (size_t)n * E), *hidden = malloc(sizeof(float) * (size_t)n * Hr);
    int *a = malloc(sizeof(int) * (size_t)E * 3);
    if (!P || !hidden || !a) {
        free(P);
        free(hidden);
        free(a);
        return kf_error_set(err, KF_ERR_NOMEM, "moefy: out of memory measuring router recall");
    }
    int *b = a + E, *order = a + 2 * E;
    kf_moe_router_scores(L, X, n, P, hidden);
    double hit = 0, picked = 0;
    for (int r = 0; r < n; r++) {
        const float *p = P + (int64_t)r * E, *y = Y + (int64_t)r * E;
        int na = kf_moe_select(p, E, k, 0, a, order), nb = kf_moe_select(y, E, k, 0, b, order);
        for (int i = 0, j = 0; i < na && j < nb;) { // both increasing
            if (a[i] == b[j]) hit++, i++, j++;
            else if (a[i] < b[j]) i++;
            else j++;
        }
        picked += kf_moe_select(p, E, L->top_k, L->coverage, a, order);
    }
    *recall = n > 0 ? hit / ((double)n * k) : 0;
    if (share) *share = n > 0 ? picked / ((double)n * E) : 0;
    free(P);
    free(hidden);
    free(a);
    return KF_OK;
}

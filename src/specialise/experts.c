// Important neurons against the experts of a MoEfied copy (specialise.h).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "specialise/sets.h"
#include "specialise/specialise.h"

// FNV-1a of a neuron's input rows (w_up, and w_gate when gated).
static uint64_t row_hash(const kf_layer *L, int j, int C) {
    uint64_t h = 1469598103934665603ull;
    const kf_tensor *t[2] = {&L->w_up, &L->w_gate};
    for (int i = 0; i < 2; i++) {
        if (!kf_tensor_present(t[i])) continue;
        const unsigned char *p = (const unsigned char *)(t[i]->data + (int64_t)j * C);
        for (size_t b = 0; b < sizeof(float) * (size_t)C; b++) h = (h ^ p[b]) * 1099511628211ull;
    }
    return h;
}

static bool same_rows(const kf_layer *a, int i, const kf_layer *b, int j, int C) {
    if (memcmp(a->w_up.data + (int64_t)i * C, b->w_up.data + (int64_t)j * C, sizeof(float) * (size_t)C)) return false;
    return !kf_tensor_present(&a->w_gate) ||
           !memcmp(a->w_gate.data + (int64_t)i * C, b->w_gate.data + (int64_t)j * C, sizeof(float) * (size_t)C);
}

kf_status kf_spec_expert_map(const kf_model *m, const kf_model *moe, int32_t *expert_of, int *n_expert, int *k,
                             kf_error *err) {
    if (moe->n_layer != m->n_layer || moe->n_embd != m->n_embd || moe->arch != m->arch)
        return kf_error_set(err, KF_ERR_ARG, "%s: not a MoEfication of %s (other shape)", moe->path, m->path);
    const int C = m->n_embd;
    int64_t off = 0;
    for (int l = 0; l < m->n_layer; l++) {
        const kf_layer *D = &m->layers[l], *M = &moe->layers[l];
        const int F = D->n_ff;
        if (M->n_ff != F)
            return kf_error_set(err, KF_ERR_ARG, "%s: layer %d has %d neurons, %s has %d", moe->path, l, M->n_ff,
                                m->path, F);
        n_expert[l] = M->n_expert;
        k[l] = M->n_expert > 0 ? (M->top_k > 0 ? M->top_k : (M->n_expert + 3) / 4) : 0;
        if (M->n_expert == 0) {
            for (int j = 0; j < F; j++) expert_of[off + j] = -1;
            off += F;
            continue;
        }
        // open-addressing table of the dense layer's rows
        int cap = 1;
        while (cap < 2 * F) cap <<= 1;
        int32_t *slot = malloc(sizeof *slot * (size_t)cap);
        uint64_t *hash = malloc(sizeof *hash * (size_t)cap);
        if (!slot || !hash) {
            free(slot), free(hash);
            return kf_error_set(err, KF_ERR_NOMEM, "specialise: out of memory");
        }
        for (int i = 0; i < cap; i++) slot[i] = -1;
        for (int j = 0; j < F; j++) {
            uint64_t h = row_hash(D, j, C);
            int i = (int)(h & (uint64_t)(cap - 1));
            while (slot[i] >= 0) i = (i + 1) & (cap - 1);
            slot[i] = j;
            hash[i] = h;
            expert_of[off + j] = -1;
        }
        const int S = F / M->n_expert;
        kf_status s = KF_OK;
        for (int n = 0; s == KF_OK && n < F; n++) {
            uint64_t h = row_hash(M, n, C);
            int i = (int)(h & (uint64_t)(cap - 1)), found = -1;
            for (; slot[i] >= 0; i = (i + 1) & (cap - 1))
                if (hash[i] == h && expert_of[off + slot[i]] < 0 && same_rows(D, slot[i], M, n, C)) {
                    found = slot[i];
                    break;
                }
            if (found < 0)
                s = kf_error_set(err, KF_ERR_ARG, "%s: not a MoEfication of %s (layer %d neuron %d has no equal neuron)",
                                 moe->path, m->path, l, n);
            else expert_of[off + found] = n / S;
        }
        free(slot), free(hash);
        if (s != KF_OK) return s;
        off += F;
    }
    return KF_OK;
}

kf_status kf_spec_concentrate(const kf_spec_result *r, const int32_t *expert_of, const int *n_expert, const int *k,
                              int n_draws, uint64_t seed, kf_spec_conc *conc, kf_error *err) {
    int max_ff = 0, max_e = 1;
    for (int l = 0; l < r->n_layer; l++) {
        int F = (int)(r->off[l + 1] - r->off[l]);
        if (F > max_ff) max_ff = F;
        if (n_expert[l] > max_e) max_e = n_expert[l];
    }
    int32_t *set = malloc(sizeof *set * (size_t)max_ff), *perm = malloc(sizeof *perm * (size_t)max_ff);
    kf_spec_ranked *ranked = malloc(sizeof *ranked * (size_t)max_ff);
    int *counts = malloc(sizeof *counts * (size_t)max_e);
    if (!set || !perm || !ranked || !counts) {
        free(set), free(perm), free(ranked), free(counts);
        return kf_error_set(err, KF_ERR_NOMEM, "specialise: out of memory");
    }
    kf_rng rng;
    kf_rng_seed(&rng, seed);
    for (int d = 0; d < r->n_data; d++)
        for (int f = 0; f < r->n_frac; f++)
            for (int l = 0; l < r->n_layer; l++) {
                kf_spec_conc *c = &conc[((int64_t)d * r->n_frac + f) * r->n_layer + l];
                const int F = (int)(r->off[l + 1] - r->off[l]), E = n_expert[l];
                const int32_t *eo = expert_of + r->off[l];
                if (E == 0) {
                    *c = (kf_spec_conc){NAN, NAN, NAN, NAN, NAN};
                    continue;
                }
                const int t = kf_spec_n_of(r->fracs[f], F);
                kf_spec_top_k(r->importance + (int64_t)d * r->n_neuron + r->off[l], F, t, set, ranked);
                kf_spec_concentration(set, t, eo, E, k[l], counts, &c->share, &c->entropy);
                for (int j = 0; j < F; j++) perm[j] = j;
                double ms = 0, me = 0;
                int ge = 0;
                for (int i = 0; i < n_draws; i++) {
                    double sh, en;
                    kf_spec_random_set(F, t, perm, set, &rng);
                    kf_spec_concentration(set, t, eo, E, k[l], counts, &sh, &en);
                    ms += sh / n_draws;
                    me += en / n_draws;
                    ge += sh >= c->share - 1e-12;
                }
                c->rand_share = ms;
                c->rand_entropy = me;
                c->p_share = (1.0 + ge) / (1.0 + n_draws);
            }
    free(set), free(perm), free(ranked), free(counts);
    return KF_OK;
}

#include "analyze/analysis.h"

#include <stdlib.h>
#include <string.h>

static kf_status nomem(kf_error *err) { return kf_error_set(err, KF_ERR_NOMEM, "analysis: out of memory"); }

kf_status kf_analysis_result_init(kf_analysis_result *r, int n_layer, int n_ranks, kf_error *err) {
    memset(r, 0, sizeof *r);
    if (n_layer < 1 || n_ranks < 1) return kf_error_set(err, KF_ERR_ARG, "analysis: %d layers, %d ranks", n_layer, n_ranks);
    const size_t R = (size_t)n_layer + 1;
    r->n_layer = n_layer;
    r->cka = calloc(R * R, sizeof *r->cka);
    r->resid_redundancy = calloc(R * KF_ANALYSIS_N_T, sizeof *r->resid_redundancy);
    r->resid_seconds = calloc(R, sizeof *r->resid_seconds);
    r->layers = calloc((size_t)n_layer, sizeof *r->layers);
    r->ranks = n_ranks;
    r->layer_owner = calloc((size_t)n_layer, sizeof *r->layer_owner);
    r->rank_ffn_stats_bytes = calloc((size_t)n_ranks, sizeof *r->rank_ffn_stats_bytes);
    return r->cka && r->resid_redundancy && r->resid_seconds && r->layers && r->layer_owner && r->rank_ffn_stats_bytes
               ? KF_OK
               : nomem(err);
}

kf_status kf_analysis_kmeans_init(kf_analysis_kmeans *km, int k, int n_candidates, int n_ff, kf_error *err) {
    memset(km, 0, sizeof *km);
    if (k < 1 || n_candidates < 0 || n_ff < 1)
        return kf_error_set(err, KF_ERR_ARG, "analysis: %d clusters of %d neurons", k, n_ff);
    km->k = k;
    km->n_candidates = n_candidates;
    km->k_candidates = calloc((size_t)n_candidates + 1, sizeof *km->k_candidates);
    km->silhouette_by_k = calloc((size_t)n_candidates + 1, sizeof *km->silhouette_by_k);
    km->clusters = calloc((size_t)k, sizeof *km->clusters);
    km->labels = calloc((size_t)n_ff, sizeof *km->labels);
    return km->k_candidates && km->silhouette_by_k && km->clusters && km->labels ? KF_OK : nomem(err);
}

kf_status kf_analysis_cluster_init_contexts(kf_analysis_cluster *c, int n, kf_error *err) {
    c->n_contexts = 0;
    c->contexts = n > 0 ? calloc((size_t)n, sizeof *c->contexts) : NULL;
    if (n > 0 && !c->contexts) return nomem(err);
    c->n_contexts = n;
    return KF_OK;
}

static void kmeans_free(kf_analysis_kmeans *km) {
    for (int c = 0; c < km->k && km->clusters; c++) {
        kf_analysis_cluster *cl = &km->clusters[c];
        for (int i = 0; i < cl->n_contexts; i++) {
            kf_analysis_context *x = &cl->contexts[i];
            free(x->left);
            free(x->token);
            free(x->right);
            free(x->ids);
        }
        free(cl->contexts);
    }
    free(km->clusters);
    free(km->k_candidates);
    free(km->silhouette_by_k);
    free(km->labels);
    memset(km, 0, sizeof *km);
}

void kf_analysis_result_free(kf_analysis_result *r) {
    for (int l = 0; l < r->n_layer && r->layers; l++) {
        kmeans_free(&r->layers[l].activation);
        kmeans_free(&r->layers[l].weight);
    }
    free(r->layers);
    free(r->model_path);
    free(r->arch);
    free(r->cka);
    free(r->resid_redundancy);
    free(r->resid_seconds);
    free(r->layer_owner);
    free(r->rank_ffn_stats_bytes);
    memset(r, 0, sizeof *r);
}

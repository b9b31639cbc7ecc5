// kfuse info MODEL [--json]: architecture, per-layer shapes, parameters, bytes, dtypes.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"

static void count_dtypes(const kf_model *m, int counts[KF_DTYPE_COUNT], int64_t bytes[KF_DTYPE_COUNT]) {
    int n = kf_model_list_tensors(m, NULL, 0);
    kf_named_tensor *ts = malloc(sizeof *ts * (size_t)n);
    if (!ts) kf_cli_failf("out of memory");
    kf_model_list_tensors(m, ts, n);
    for (int i = 0; i < n; i++) {
        kf_dtype d = ts[i].t->src_dtype;
        counts[d]++;
        bytes[d] += (int64_t)kf_dtype_size(d, kf_tensor_nelem(ts[i].t));
    }
    free(ts);
}

static int64_t layer_params(const kf_layer *L, bool ffn) {
    const kf_tensor *attn[] = {&L->attn_norm_w, &L->attn_norm_b, &L->wq, &L->wk, &L->wv,
                               &L->bq,          &L->bk,          &L->bv, &L->wo, &L->bo};
    const kf_tensor *mlp[] = {&L->ffn_norm_w, &L->ffn_norm_b, &L->w_gate, &L->w_up,
                              &L->b_up,       &L->w_down,     &L->b_down};
    const kf_tensor *const *ts = ffn ? mlp : attn;
    size_t n = ffn ? sizeof mlp / sizeof mlp[0] : sizeof attn / sizeof attn[0];
    int64_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (kf_tensor_present(ts[i])) total += kf_tensor_nelem(ts[i]);
    return total;
}

int kf_cmd_info(int argc, char **argv) {
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = true;
        else if (argv[i][0] == '-') kf_cli_failf("info: unknown option %s", argv[i]);
        else if (!path) path = argv[i];
        else kf_cli_failf("info: unexpected argument %s", argv[i]);
    }
    if (!path) path = kf_cli_default_model();
    kf_model *m = kf_cli_load_model_run(path, NULL);
    int counts[KF_DTYPE_COUNT] = {0};
    int64_t bytes[KF_DTYPE_COUNT] = {0}, file_bytes = 0;
    count_dtypes(m, counts, bytes);
    for (int d = 0; d < KF_DTYPE_COUNT; d++) file_bytes += bytes[d];
    int64_t n_params = kf_model_n_params(m);
    const char *norm = m->norm == KF_NORM_RMS ? "RMSNorm" : "LayerNorm";
    const char *act = m->act == KF_ACT_SILU ? "silu" : "gelu_tanh";
    const char *pos = m->pos == KF_POS_ROPE ? "rope" : "learned";

    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "path", m->path);
        cJSON_AddStringToObject(o, "format", m->format);
        cJSON_AddStringToObject(o, "arch", kf_arch_name(m->arch));
        cJSON_AddStringToObject(o, "norm", norm);
        cJSON_AddStringToObject(o, "act", act);
        cJSON_AddBoolToObject(o, "gated_ffn", m->gated_ffn);
        cJSON_AddStringToObject(o, "pos", pos);
        cJSON_AddNumberToObject(o, "rope_theta", m->rope_theta);
        cJSON_AddNumberToObject(o, "n_vocab", m->n_vocab);
        cJSON_AddNumberToObject(o, "n_embd", m->n_embd);
        cJSON_AddNumberToObject(o, "n_layer", m->n_layer);
        cJSON_AddNumberToObject(o, "n_head", m->n_head);
        cJSON_AddNumberToObject(o, "n_head_kv", m->n_head_kv);
        cJSON_AddNumberToObject(o, "head_dim", m->head_dim);
        cJSON_AddNumberToObject(o, "n_ctx_train", m->n_ctx_train);
        cJSON_AddBoolToObject(o, "tied_head", m->tied_head);
        cJSON_AddNumberToObject(o, "n_params", (double)n_params);
        cJSON_AddNumberToObject(o, "file_weight_bytes", (double)file_bytes);
        cJSON_AddNumberToObject(o, "fp32_bytes", (double)n_params * 4);
        cJSON *dt = cJSON_AddObjectToObject(o, "dtypes");
        for (int d = 0; d < KF_DTYPE_COUNT; d++)
            if (counts[d]) cJSON_AddNumberToObject(dt, kf_dtype_name(d), counts[d]);
        cJSON *layers = cJSON_AddArrayToObject(o, "layers");
        for (int l = 0; l < m->n_layer; l++) {
            cJSON *L = cJSON_CreateObject();
            cJSON_AddNumberToObject(L, "n_ff", m->layers[l].n_ff);
            cJSON_AddNumberToObject(L, "attn_params", (double)layer_params(&m->layers[l], false));
            cJSON_AddNumberToObject(L, "ffn_params", (double)layer_params(&m->layers[l], true));
            cJSON_AddItemToArray(layers, L);
        }
        kf_cli_print_json(o, true);
    } else {
        printf("model       %s (%s)\n", m->path, m->format);
        printf("arch        %s: %s, %s%s, %s positions", kf_arch_name(m->arch), norm, m->gated_ffn ? "gated " : "",
               act, pos);
        if (m->pos == KF_POS_ROPE) printf(" (theta %g)", m->rope_theta);
        printf("\nshape       vocab %d, embd %d, layers %d, heads %d (kv %d), head_dim %d, ctx %d, %s head\n",
               m->n_vocab, m->n_embd, m->n_layer, m->n_head, m->n_head_kv, m->head_dim, m->n_ctx_train,
               m->tied_head ? "tied" : "untied");
        printf("parameters  %lld (%.2f M)\n", (long long)n_params, (double)n_params / 1e6);
        printf("bytes       %lld in the file's dtypes, %lld as fp32 in memory\n", (long long)file_bytes,
               (long long)n_params * 4);
        printf("dtypes     ");
        for (int d = 0; d < KF_DTYPE_COUNT; d++)
            if (counts[d]) printf(" %s: %d tensors (%lld bytes)", kf_dtype_name(d), counts[d], (long long)bytes[d]);
        printf("\n\n%5s %8s %12s %12s\n", "layer", "ffn", "attn params", "ffn params");
        for (int l = 0; l < m->n_layer; l++)
            printf("%5d %8d %12lld %12lld\n", l, m->layers[l].n_ff, (long long)layer_params(&m->layers[l], false),
                   (long long)layer_params(&m->layers[l], true));
    }
    kf_model_free(m);
    return 0;
}

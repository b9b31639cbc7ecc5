#include "report/analysis_json.h"

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"

#define SCHEMA "kfuse-analysis/1"

// ---------------------------------------------------------------- writing

typedef struct {
    int ok; // 0 once an allocation failed
} jw;

// Adds item under key (or appended when key is NULL); returns it, or NULL
// (and marks w) when it or the add failed.
static cJSON *put(jw *w, cJSON *parent, const char *key, cJSON *item) {
    if (!item) {
        w->ok = 0;
        return NULL;
    }
    if (!parent || !(key ? cJSON_AddItemToObject(parent, key, item) : cJSON_AddItemToArray(parent, item))) {
        cJSON_Delete(item);
        w->ok = 0;
        return NULL;
    }
    return item;
}

static void num(jw *w, cJSON *o, const char *key, double v) { put(w, o, key, cJSON_CreateNumber(v)); }

static cJSON *row(jw *w, cJSON *parent, const char *key, const double *v, int n) {
    return put(w, parent, key, cJSON_CreateDoubleArray(v, n));
}

static void matrix(jw *w, cJSON *o, const char *key, const double *v, int rows, int cols) {
    cJSON *a = put(w, o, key, cJSON_CreateArray());
    for (int i = 0; i < rows; i++) row(w, a, NULL, v + (size_t)i * cols, cols);
}

static void int_row(jw *w, cJSON *o, const char *key, const int32_t *v, int n) {
    cJSON *a = put(w, o, key, cJSON_CreateArray());
    for (int i = 0; i < n; i++) put(w, a, NULL, cJSON_CreateNumber(v[i]));
}

// One number of every layer, picked by get.
static void per_layer(jw *w, cJSON *o, const char *key, const kf_analysis_result *r,
                      double (*get)(const kf_analysis_layer *)) {
    cJSON *a = put(w, o, key, cJSON_CreateArray());
    for (int l = 0; l < r->n_layer; l++) put(w, a, NULL, cJSON_CreateNumber(get(&r->layers[l])));
}

static double get_n_ff(const kf_analysis_layer *ly) { return ly->n_ff; }
static double get_bi(const kf_analysis_layer *ly) { return ly->block_influence; }
static double get_red_at(const kf_analysis_layer *ly) { return ly->redundancy_at_threshold; }
static double get_red_secs(const kf_analysis_layer *ly) { return ly->clustering_seconds; }

static void kmeans_json(jw *w, cJSON *o, const kf_analysis_kmeans *km, int n_ff) {
    num(w, o, "k", km->k);
    num(w, o, "silhouette", km->silhouette);
    num(w, o, "objective", km->objective);
    cJSON *kc = put(w, o, "k_candidates", cJSON_CreateArray());
    for (int c = 0; c < km->n_candidates; c++) put(w, kc, NULL, cJSON_CreateNumber(km->k_candidates[c]));
    row(w, o, "silhouette_by_k", km->silhouette_by_k, km->n_candidates);
    cJSON *sz = put(w, o, "sizes", cJSON_CreateArray()), *mac = put(w, o, "mean_abs_corr", cJSON_CreateArray());
    for (int c = 0; c < km->k; c++) {
        put(w, sz, NULL, cJSON_CreateNumber(km->clusters[c].size));
        put(w, mac, NULL, cJSON_CreateNumber(km->clusters[c].mean_abs_corr));
    }
    int_row(w, o, "labels", km->labels, n_ff);
    cJSON *all = put(w, o, "contexts", cJSON_CreateArray());
    for (int c = 0; c < km->k; c++) {
        const kf_analysis_cluster *cl = &km->clusters[c];
        cJSON *list = put(w, all, NULL, cJSON_CreateArray());
        for (int q = 0; q < cl->n_contexts; q++) {
            const kf_analysis_context *x = &cl->contexts[q];
            cJSON *e = put(w, list, NULL, cJSON_CreateObject());
            num(w, e, "pos", (double)x->pos);
            num(w, e, "score", x->score);
            if (x->left) {
                put(w, e, "left", cJSON_CreateString(x->left));
                put(w, e, "token", cJSON_CreateString(x->token));
                put(w, e, "right", cJSON_CreateString(x->right));
            }
            int_row(w, e, "ids", x->ids, x->n_ids);
        }
    }
}

cJSON *kf_report_analysis_to_json(const kf_analysis_result *r) {
    const int L = r->n_layer, R = L + 1;
    jw w = {1};
    cJSON *root = cJSON_CreateObject();
    put(&w, root, "schema", cJSON_CreateString(SCHEMA));

    cJSON *mo = put(&w, root, "model", cJSON_CreateObject());
    char fp[24];
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)r->fingerprint);
    put(&w, mo, "path", cJSON_CreateString(r->model_path ? r->model_path : ""));
    put(&w, mo, "arch", cJSON_CreateString(r->arch ? r->arch : ""));
    put(&w, mo, "fingerprint", cJSON_CreateString(fp));
    num(&w, mo, "n_layer", L);
    num(&w, mo, "n_embd", r->n_embd);
    num(&w, mo, "n_params", (double)r->n_params);
    per_layer(&w, mo, "n_ff", r, get_n_ff);

    cJSON *ca = put(&w, root, "calibration", cJSON_CreateObject());
    num(&w, ca, "n_tokens_available", (double)r->n_tokens_available);
    num(&w, ca, "n_tokens", (double)r->n_tokens);
    num(&w, ca, "n_sequences", (double)r->n_sequences);
    num(&w, ca, "ctx", r->ctx);
    num(&w, ca, "batch", r->batch);
    num(&w, ca, "bos_id", r->bos_id);
    num(&w, ca, "ranks", r->ranks);
    num(&w, ca, "sample_tokens", r->sample_tokens);
    num(&w, ca, "seed", (double)r->seed);
    num(&w, ca, "record_seconds", r->record_seconds);
    num(&w, ca, "tokens_per_s", r->tokens_per_s);
    put(&w, ca, "shard_layers", cJSON_CreateBool(r->shard_layers != 0));
    int_row(&w, ca, "layer_owner", r->layer_owner, L);
    cJSON *rb = put(&w, ca, "rank_ffn_stats_bytes", cJSON_CreateArray());
    for (int i = 0; i < r->ranks; i++) put(&w, rb, NULL, cJSON_CreateNumber((double)r->rank_ffn_stats_bytes[i]));
    num(&w, ca, "resid_stats_bytes", (double)r->resid_stats_bytes);

    cJSON *op = put(&w, root, "options", cJSON_CreateObject());
    num(&w, op, "threshold", r->threshold);
    num(&w, op, "k", r->k);
    num(&w, op, "epsilon", r->epsilon);
    num(&w, op, "coact_topk", r->coact_topk);
    num(&w, op, "context_tokens", (double)r->context_tokens);
    num(&w, op, "resid_stride", r->resid_stride);
    put(&w, op, "f64_products", cJSON_CreateBool(r->f64_products != 0));
    num(&w, op, "resid_tokens", (double)r->resid_tokens);

    cJSON *ly = put(&w, root, "layers", cJSON_CreateObject());
    cJSON *lbl = put(&w, ly, "labels", cJSON_CreateArray());
    put(&w, lbl, NULL, cJSON_CreateString("emb"));
    for (int l = 0; l < L; l++) {
        char s[16];
        snprintf(s, sizeof s, "L%d", l);
        put(&w, lbl, NULL, cJSON_CreateString(s));
    }
    put(&w, ly, "cka_method", cJSON_CreateString(r->cka_exact ? "exact" : "minibatch"));
    matrix(&w, ly, "cka", r->cka, R, R);
    per_layer(&w, ly, "block_influence", r, get_bi);

    cJSON *red = put(&w, root, "redundancy", cJSON_CreateObject());
    double tg[KF_ANALYSIS_N_T];
    for (int i = 0; i < KF_ANALYSIS_N_T; i++) tg[i] = (i + 1) / 10.0;
    row(&w, red, "t", tg, KF_ANALYSIS_N_T);
    matrix(&w, red, "resid", r->resid_redundancy, R, KF_ANALYSIS_N_T);
    row(&w, red, "resid_seconds", r->resid_seconds, R);
    if (r->has_resid_all) {
        row(&w, red, "resid_all", r->resid_all, KF_ANALYSIS_N_T);
        num(&w, red, "resid_all_at_threshold", r->resid_all_at_threshold);
        num(&w, red, "resid_all_n", (double)r->resid_all_n);
        num(&w, red, "resid_all_seconds", r->resid_all_seconds);
    } else {
        put(&w, red, "resid_all", cJSON_CreateNull());
    }
    cJSON *rf = put(&w, red, "ffn", cJSON_CreateArray());
    for (int l = 0; l < L; l++) row(&w, rf, NULL, r->layers[l].redundancy, KF_ANALYSIS_N_T);
    per_layer(&w, red, "ffn_at_threshold", r, get_red_at);
    per_layer(&w, red, "ffn_seconds", r, get_red_secs);

    cJSON *thr = put(&w, root, "thresholds", cJSON_CreateObject());
    num(&w, thr, "epsilon", r->epsilon);
    num(&w, thr, "grid_step", r->grid_step);
    cJSON *thl = put(&w, thr, "layers", cJSON_CreateArray());
    for (int l = 0; l < L; l++) {
        const kf_analysis_layer *a = &r->layers[l];
        cJSON *e = put(&w, thl, NULL, cJSON_CreateObject());
        num(&w, e, "layer", l);
        num(&w, e, "n_ff", a->n_ff);
        num(&w, e, "t", a->t);
        num(&w, e, "width", a->width);
        num(&w, e, "rel_err", a->rel_err);
        row(&w, e, "err_curve", a->err_curve, KF_ANALYSIS_N_GRID);
    }
    cJSON *et = put(&w, thr, "err_at_t", cJSON_CreateArray());
    for (int l = 0; l < L; l++) row(&w, et, NULL, r->layers[l].err_at_t, KF_ANALYSIS_N_T);

    cJSON *neu = put(&w, root, "neurons", cJSON_CreateArray());
    for (int l = 0; l < L; l++) {
        const kf_analysis_layer *a = &r->layers[l];
        cJSON *e = put(&w, neu, NULL, cJSON_CreateObject());
        num(&w, e, "layer", l);
        num(&w, e, "n_ff", a->n_ff);
        num(&w, e, "act_freq_mean", a->act_freq_mean);
        num(&w, e, "mean_abs_act", a->mean_abs_act);
        num(&w, e, "dead", a->dead);
    }

    cJSON *cll = put(&w, put(&w, root, "clusters", cJSON_CreateObject()), "layers", cJSON_CreateArray());
    for (int l = 0; l < L; l++) {
        cJSON *cl = put(&w, cll, NULL, cJSON_CreateObject());
        num(&w, cl, "layer", l);
        kmeans_json(&w, put(&w, cl, "activation", cJSON_CreateObject()), &r->layers[l].activation, r->layers[l].n_ff);
        kmeans_json(&w, put(&w, cl, "weight", cJSON_CreateObject()), &r->layers[l].weight, r->layers[l].n_ff);
    }

    cJSON *tm = put(&w, root, "timing", cJSON_CreateObject());
    num(&w, tm, "record_seconds", r->record_seconds);
    num(&w, tm, "analysis_seconds", r->analysis_seconds);
    num(&w, tm, "thresholds_seconds", r->thresholds_seconds);
    num(&w, tm, "kmeans_seconds", r->kmeans_seconds);
    num(&w, tm, "contexts_seconds", r->contexts_seconds);
    if (!w.ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

// ---------------------------------------------------------------- reading

typedef struct {
    const char *name; // the file, first word of every error
    kf_error *err;
    kf_status st;     // the first failure; later reads do nothing
} jr;

// Sets the error "name: where.key: message" unless one is set already.
static void fail(jr *r, const char *where, const char *key, const char *fmt, ...) {
    if (r->st != KF_OK) return;
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->st = kf_error_set(r->err, KF_ERR_FORMAT, "%s: %s%s%s: %s", r->name, where, *where && key ? "." : "",
                         key ? key : "", msg);
}

static void oom(jr *r) {
    if (r->st == KF_OK) r->st = kf_error_set(r->err, KF_ERR_NOMEM, "%s: out of memory", r->name);
}

// o[key], which must be there.
static const cJSON *item(jr *r, const cJSON *o, const char *where, const char *key) {
    if (r->st != KF_OK) return NULL;
    const cJSON *v = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    if (!v) fail(r, where, key, cJSON_IsObject(o) ? "missing" : "not an object");
    return v;
}

static const cJSON *object(jr *r, const cJSON *o, const char *where, const char *key) {
    const cJSON *v = item(r, o, where, key);
    if (v && !cJSON_IsObject(v)) fail(r, where, key, "not an object");
    return r->st == KF_OK ? v : NULL;
}

// An array of exactly n entries (n < 0: of any length).
static const cJSON *array(jr *r, const cJSON *o, const char *where, const char *key, int n) {
    const cJSON *v = item(r, o, where, key);
    if (v && !cJSON_IsArray(v)) fail(r, where, key, "not an array");
    else if (v && n >= 0 && cJSON_GetArraySize(v) != n) fail(r, where, key, "%d entries, want %d", cJSON_GetArraySize(v), n);
    return r->st == KF_OK ? v : NULL;
}

// A number or null (NaN) of an item already found.
static double value(jr *r, const cJSON *v, const char *where, const char *key) {
    if (r->st != KF_OK || !v) return NAN;
    if (cJSON_IsNull(v)) return NAN;
    if (!cJSON_IsNumber(v)) fail(r, where, key, "not a number");
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static double number(jr *r, const cJSON *o, const char *where, const char *key) {
    return value(r, item(r, o, where, key), where, key);
}

// An integer in [lo, hi].
static int64_t integer(jr *r, const cJSON *o, const char *where, const char *key, int64_t lo, int64_t hi) {
    const cJSON *v = item(r, o, where, key);
    if (r->st != KF_OK) return lo;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d == floor(d) && d >= (double)lo && d <= (double)hi)) {
        fail(r, where, key, "not an integer in [%lld, %lld]", (long long)lo, (long long)hi);
        return lo;
    }
    return (int64_t)d;
}

// A copy of a string item (malloc'd), or NULL.
static char *string(jr *r, const cJSON *o, const char *where, const char *key) {
    const cJSON *v = item(r, o, where, key);
    if (r->st != KF_OK) return NULL;
    if (!cJSON_IsString(v)) {
        fail(r, where, key, "not a string");
        return NULL;
    }
    char *s = strdup(v->valuestring);
    if (!s) oom(r);
    return s;
}

// n numbers (or nulls) of an array into out.
static void numbers(jr *r, const cJSON *o, const char *where, const char *key, double *out, int n) {
    const cJSON *a = array(r, o, where, key, n), *v;
    int i = 0;
    cJSON_ArrayForEach(v, a) out[i++] = value(r, v, where, key);
}

// n integers in [lo, hi) of an array into out.
static void integers(jr *r, const cJSON *o, const char *where, const char *key, int32_t *out, int n, int64_t lo,
                     int64_t hi) {
    const cJSON *a = array(r, o, where, key, n), *v;
    int i = 0;
    cJSON_ArrayForEach(v, a) {
        double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
        if (!(d == floor(d) && d >= (double)lo && d < (double)hi)) {
            fail(r, where, key, "entry %d is not an integer in [%lld, %lld)", i, (long long)lo, (long long)hi);
            return;
        }
        out[i++] = (int32_t)d;
    }
}

// A (rows, cols) matrix of an array of arrays into out.
static void rows_of(jr *r, const cJSON *o, const char *where, const char *key, double *out, int rows, int cols) {
    const cJSON *a = array(r, o, where, key, rows), *v;
    char at[96];
    int i = 0;
    cJSON_ArrayForEach(v, a) {
        snprintf(at, sizeof at, "%s%s%s[%d]", where, *where ? "." : "", key, i);
        const cJSON *e, *q = v;
        if (!cJSON_IsArray(q) || cJSON_GetArraySize(q) != cols) {
            fail(r, at, NULL, "not an array of %d numbers", cols);
            return;
        }
        int j = 0;
        cJSON_ArrayForEach(e, q) out[(size_t)i * cols + j++] = value(r, e, at, NULL);
        i++;
    }
}

// One number per layer (an array of L) into each layer via field offset.
static void layer_numbers(jr *r, const cJSON *o, const char *where, const char *key, kf_analysis_result *res,
                          size_t offset) {
    const cJSON *a = array(r, o, where, key, res->n_layer), *v;
    int l = 0;
    cJSON_ArrayForEach(v, a) *(double *)((char *)&res->layers[l++] + offset) = value(r, v, where, key);
}

static void layer_rows(jr *r, const cJSON *o, const char *where, const char *key, kf_analysis_result *res,
                       size_t offset, int cols) {
    double *m = malloc((size_t)res->n_layer * cols * sizeof *m);
    if (!m) {
        oom(r);
        return;
    }
    rows_of(r, o, where, key, m, res->n_layer, cols);
    for (int l = 0; l < res->n_layer && r->st == KF_OK; l++)
        memcpy((char *)&res->layers[l] + offset, m + (size_t)l * cols, (size_t)cols * sizeof *m);
    free(m);
}

static void read_context(jr *r, const cJSON *e, const char *at, kf_analysis_context *x) {
    if (!cJSON_IsObject(e)) {
        fail(r, at, NULL, "not an object");
        return;
    }
    x->pos = integer(r, e, at, "pos", 0, (int64_t)1 << 52);
    x->score = number(r, e, at, "score");
    if (cJSON_GetObjectItemCaseSensitive(e, "left")) {
        x->left = string(r, e, at, "left");
        x->token = string(r, e, at, "token");
        x->right = string(r, e, at, "right");
    }
    const cJSON *ids = array(r, e, at, "ids", -1);
    if (!ids) return;
    int n = cJSON_GetArraySize(ids);
    if (n > 0 && !(x->ids = malloc((size_t)n * sizeof *x->ids))) {
        oom(r);
        return;
    }
    x->n_ids = n;
    integers(r, e, at, "ids", x->ids, n, 0, INT32_MAX);
}

static void read_kmeans(jr *r, const cJSON *o, const char *where, int n_ff, kf_analysis_kmeans *km) {
    char at[96];
    int k = (int)integer(r, o, where, "k", 1, n_ff);
    const cJSON *kc = array(r, o, where, "k_candidates", -1);
    if (r->st != KF_OK) return;
    int nc = cJSON_GetArraySize(kc);
    if (kf_analysis_kmeans_init(km, k, nc, n_ff, r->err) != KF_OK) {
        oom(r);
        return;
    }
    km->silhouette = number(r, o, where, "silhouette");
    km->objective = number(r, o, where, "objective");
    int32_t *kci = malloc(((size_t)(nc > k ? nc : k) + 1) * sizeof *kci);
    double *v = malloc((size_t)k * sizeof *v);
    if (!kci || !v) oom(r);
    integers(r, o, where, "k_candidates", kci, nc, 1, (int64_t)n_ff + 1);
    for (int c = 0; c < nc && r->st == KF_OK; c++) km->k_candidates[c] = kci[c];
    numbers(r, o, where, "silhouette_by_k", km->silhouette_by_k, nc);
    integers(r, o, where, "sizes", kci, k, 0, (int64_t)n_ff + 1);
    for (int c = 0; c < k && r->st == KF_OK; c++) km->clusters[c].size = kci[c];
    numbers(r, o, where, "mean_abs_corr", v, k);
    for (int c = 0; c < k && r->st == KF_OK; c++) km->clusters[c].mean_abs_corr = v[c];
    free(kci);
    free(v);
    integers(r, o, where, "labels", km->labels, n_ff, 0, k);
    for (int c = 0; c < k && r->st == KF_OK; c++) { // sizes agree with the labels
        int n = 0;
        for (int j = 0; j < n_ff; j++) n += km->labels[j] == c;
        if (n != km->clusters[c].size) fail(r, where, "sizes", "cluster %d has %d labels, size %d", c, n, km->clusters[c].size);
    }
    const cJSON *ctx = array(r, o, where, "contexts", k), *list;
    int c = 0;
    cJSON_ArrayForEach(list, ctx) {
        snprintf(at, sizeof at, "%s.contexts[%d]", where, c);
        if (!cJSON_IsArray(list)) {
            fail(r, at, NULL, "not an array");
            return;
        }
        kf_analysis_cluster *cl = &km->clusters[c++];
        if (kf_analysis_cluster_init_contexts(cl, cJSON_GetArraySize(list), r->err) != KF_OK) {
            oom(r);
            return;
        }
        const cJSON *e;
        int q = 0;
        cJSON_ArrayForEach(e, list) {
            char at2[128];
            snprintf(at2, sizeof at2, "%s[%d]", at, q);
            read_context(r, e, at2, &cl->contexts[q++]);
        }
    }
}

static void read_model(jr *r, const cJSON *root, kf_analysis_result *res) {
    const cJSON *mo = object(r, root, "", "model");
    res->model_path = string(r, mo, "model", "path");
    res->arch = string(r, mo, "model", "arch");
    const cJSON *fp = item(r, mo, "model", "fingerprint");
    char *end = NULL;
    if (r->st == KF_OK && cJSON_IsString(fp) && strlen(fp->valuestring) == 16)
        res->fingerprint = strtoull(fp->valuestring, &end, 16);
    if (r->st == KF_OK && (!end || *end)) fail(r, "model", "fingerprint", "not 16 hex digits");
    res->n_embd = (int)integer(r, mo, "model", "n_embd", 1, 1 << 24);
    res->n_params = integer(r, mo, "model", "n_params", 0, (int64_t)1 << 52);
    const int L = res->n_layer;
    const cJSON *ff = array(r, mo, "model", "n_ff", L), *v;
    int l = 0;
    cJSON_ArrayForEach(v, ff) {
        double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
        if (!(d == floor(d) && d >= 1 && d <= (1 << 24))) {
            fail(r, "model", "n_ff", "entry %d is not a width >= 1", l);
            return;
        }
        res->layers[l++].n_ff = (int)d;
    }
}

static void read_run(jr *r, const cJSON *root, kf_analysis_result *res) {
    const int64_t big = (int64_t)1 << 52;
    const cJSON *ca = object(r, root, "", "calibration");
    res->n_tokens_available = integer(r, ca, "calibration", "n_tokens_available", 0, big);
    res->n_tokens = integer(r, ca, "calibration", "n_tokens", 0, big);
    res->n_sequences = integer(r, ca, "calibration", "n_sequences", 0, big);
    res->ctx = (int)integer(r, ca, "calibration", "ctx", 1, INT32_MAX);
    res->batch = (int)integer(r, ca, "calibration", "batch", 1, INT32_MAX);
    res->bos_id = (int)integer(r, ca, "calibration", "bos_id", -1, INT32_MAX);
    res->ranks = (int)integer(r, ca, "calibration", "ranks", 1, INT32_MAX);
    res->sample_tokens = (int)integer(r, ca, "calibration", "sample_tokens", 0, INT32_MAX);
    double seed = number(r, ca, "calibration", "seed");
    if (r->st == KF_OK && !(seed >= 0 && seed < 18446744073709551616.0 && seed == floor(seed)))
        fail(r, "calibration", "seed", "not an unsigned 64-bit integer");
    res->seed = r->st == KF_OK ? (uint64_t)seed : 0;
    res->record_seconds = number(r, ca, "calibration", "record_seconds");
    res->tokens_per_s = number(r, ca, "calibration", "tokens_per_s");
    const cJSON *sh = item(r, ca, "calibration", "shard_layers");
    if (r->st == KF_OK && !cJSON_IsBool(sh)) fail(r, "calibration", "shard_layers", "not a boolean");
    res->shard_layers = cJSON_IsTrue(sh);
    integers(r, ca, "calibration", "layer_owner", res->layer_owner, res->n_layer, 0, res->ranks);
    const cJSON *rb = array(r, ca, "calibration", "rank_ffn_stats_bytes", res->ranks), *v;
    int i = 0;
    cJSON_ArrayForEach(v, rb) {
        double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
        if (!(d == floor(d) && d >= 0 && d <= 0x1p52)) {
            fail(r, "calibration", "rank_ffn_stats_bytes", "entry %d is not a byte count", i);
            return;
        }
        res->rank_ffn_stats_bytes[i++] = (int64_t)d;
    }
    res->resid_stats_bytes = integer(r, ca, "calibration", "resid_stats_bytes", 0, (int64_t)1 << 52);

    const cJSON *op = object(r, root, "", "options");
    res->threshold = number(r, op, "options", "threshold");
    if (r->st == KF_OK && !(res->threshold >= 0 && res->threshold <= 1))
        fail(r, "options", "threshold", "%g is outside [0, 1]", res->threshold);
    res->k = (int)integer(r, op, "options", "k", 0, INT32_MAX);
    res->epsilon = number(r, op, "options", "epsilon");
    res->coact_topk = (int)integer(r, op, "options", "coact_topk", 0, INT32_MAX);
    res->context_tokens = integer(r, op, "options", "context_tokens", 0, big);
    res->resid_stride = (int)integer(r, op, "options", "resid_stride", 1, INT32_MAX);
    const cJSON *f64 = item(r, op, "options", "f64_products");
    if (r->st == KF_OK && !cJSON_IsBool(f64)) fail(r, "options", "f64_products", "not a boolean");
    res->f64_products = cJSON_IsTrue(f64);
    res->resid_tokens = integer(r, op, "options", "resid_tokens", 0, big);
}

static void read_layers(jr *r, const cJSON *root, kf_analysis_result *res) {
    const int L = res->n_layer, R = L + 1;
    const cJSON *ly = object(r, root, "", "layers");
    const cJSON *lbl = array(r, ly, "layers", "labels", R), *v;
    cJSON_ArrayForEach(v, lbl) if (!cJSON_IsString(v)) fail(r, "layers", "labels", "not an array of strings");
    const cJSON *cm = item(r, ly, "layers", "cka_method");
    const char *method = cJSON_GetStringValue(cm);
    if (r->st == KF_OK && (!method || (strcmp(method, "exact") && strcmp(method, "minibatch"))))
        fail(r, "layers", "cka_method", "not \"exact\" or \"minibatch\"");
    res->cka_exact = method && !strcmp(method, "exact");
    rows_of(r, ly, "layers", "cka", res->cka, R, R);
    layer_numbers(r, ly, "layers", "block_influence", res, offsetof(kf_analysis_layer, block_influence));

    const cJSON *red = object(r, root, "", "redundancy");
    double t[KF_ANALYSIS_N_T];
    numbers(r, red, "redundancy", "t", t, KF_ANALYSIS_N_T);
    for (int i = 0; i < KF_ANALYSIS_N_T && r->st == KF_OK; i++)
        if (t[i] != (i + 1) / 10.0) fail(r, "redundancy", "t", "entry %d is not %g", i, (i + 1) / 10.0);
    rows_of(r, red, "redundancy", "resid", res->resid_redundancy, R, KF_ANALYSIS_N_T);
    numbers(r, red, "redundancy", "resid_seconds", res->resid_seconds, R);
    const cJSON *ra = item(r, red, "redundancy", "resid_all");
    res->has_resid_all = ra && !cJSON_IsNull(ra);
    if (res->has_resid_all) {
        numbers(r, red, "redundancy", "resid_all", res->resid_all, KF_ANALYSIS_N_T);
        res->resid_all_at_threshold = number(r, red, "redundancy", "resid_all_at_threshold");
        res->resid_all_n = integer(r, red, "redundancy", "resid_all_n", 1, (int64_t)1 << 40);
        res->resid_all_seconds = number(r, red, "redundancy", "resid_all_seconds");
    }
    layer_rows(r, red, "redundancy", "ffn", res, offsetof(kf_analysis_layer, redundancy), KF_ANALYSIS_N_T);
    layer_numbers(r, red, "redundancy", "ffn_at_threshold", res, offsetof(kf_analysis_layer, redundancy_at_threshold));
    layer_numbers(r, red, "redundancy", "ffn_seconds", res, offsetof(kf_analysis_layer, clustering_seconds));
}

static void read_thresholds(jr *r, const cJSON *root, kf_analysis_result *res) {
    const int L = res->n_layer;
    char at[64];
    const cJSON *thr = object(r, root, "", "thresholds");
    double eps = number(r, thr, "thresholds", "epsilon");
    if (r->st == KF_OK && eps != res->epsilon) fail(r, "thresholds", "epsilon", "%g differs from options.epsilon", eps);
    res->grid_step = number(r, thr, "thresholds", "grid_step");
    const cJSON *thl = array(r, thr, "thresholds", "layers", -1), *e;
    if (thl && cJSON_GetArraySize(thl) != L)
        fail(r, "thresholds", "layers", "%d layers, model.n_layer is %d", cJSON_GetArraySize(thl), L);
    if (r->st != KF_OK) return;
    int l = 0;
    cJSON_ArrayForEach(e, thl) {
        kf_analysis_layer *a = &res->layers[l];
        snprintf(at, sizeof at, "thresholds.layers[%d]", l);
        if (integer(r, e, at, "layer", 0, L - 1) != l && r->st == KF_OK) fail(r, at, "layer", "is not %d", l);
        if (integer(r, e, at, "n_ff", 1, 1 << 24) != a->n_ff && r->st == KF_OK)
            fail(r, at, "n_ff", "differs from model.n_ff[%d] = %d", l, a->n_ff);
        a->t = number(r, e, at, "t");
        if (r->st == KF_OK && !isnan(a->t) && !(a->t >= 0 && a->t <= 1))
            fail(r, at, "t", "%g is outside [0, 1]", a->t);
        a->width = (int)integer(r, e, at, "width", 1, a->n_ff);
        a->rel_err = number(r, e, at, "rel_err");
        numbers(r, e, at, "err_curve", a->err_curve, KF_ANALYSIS_N_GRID);
        l++;
    }
    layer_rows(r, thr, "thresholds", "err_at_t", res, offsetof(kf_analysis_layer, err_at_t), KF_ANALYSIS_N_T);
}

static void read_neurons(jr *r, const cJSON *root, kf_analysis_result *res) {
    char at[64];
    const cJSON *neu = array(r, root, "", "neurons", res->n_layer), *e;
    int l = 0;
    cJSON_ArrayForEach(e, neu) {
        kf_analysis_layer *a = &res->layers[l];
        snprintf(at, sizeof at, "neurons[%d]", l);
        if (integer(r, e, at, "layer", 0, res->n_layer - 1) != l && r->st == KF_OK) fail(r, at, "layer", "is not %d", l);
        if (integer(r, e, at, "n_ff", 1, 1 << 24) != a->n_ff && r->st == KF_OK)
            fail(r, at, "n_ff", "differs from model.n_ff[%d] = %d", l, a->n_ff);
        a->act_freq_mean = number(r, e, at, "act_freq_mean");
        a->mean_abs_act = number(r, e, at, "mean_abs_act");
        a->dead = (int)integer(r, e, at, "dead", 0, a->n_ff);
        l++;
    }
    const cJSON *cll = array(r, object(r, root, "", "clusters"), "clusters", "layers", res->n_layer);
    l = 0;
    cJSON_ArrayForEach(e, cll) {
        kf_analysis_layer *a = &res->layers[l];
        snprintf(at, sizeof at, "clusters.layers[%d]", l);
        if (integer(r, e, at, "layer", 0, res->n_layer - 1) != l && r->st == KF_OK) fail(r, at, "layer", "is not %d", l);
        char at2[96];
        snprintf(at2, sizeof at2, "%s.activation", at);
        read_kmeans(r, object(r, e, at, "activation"), at2, a->n_ff, &a->activation);
        snprintf(at2, sizeof at2, "%s.weight", at);
        read_kmeans(r, object(r, e, at, "weight"), at2, a->n_ff, &a->weight);
        l++;
    }
}

static void read_timing(jr *r, const cJSON *root, kf_analysis_result *res) {
    const cJSON *tm = object(r, root, "", "timing");
    double rec = number(r, tm, "timing", "record_seconds");
    if (r->st == KF_OK && rec != res->record_seconds && !(isnan(rec) && isnan(res->record_seconds)))
        fail(r, "timing", "record_seconds", "differs from calibration.record_seconds");
    res->analysis_seconds = number(r, tm, "timing", "analysis_seconds");
    res->thresholds_seconds = number(r, tm, "timing", "thresholds_seconds");
    res->kmeans_seconds = number(r, tm, "timing", "kmeans_seconds");
    res->contexts_seconds = number(r, tm, "timing", "contexts_seconds");
}

kf_status kf_report_analysis_from_json(const cJSON *root, const char *name, kf_analysis_result *res, kf_error *err) {
    memset(res, 0, sizeof *res);
    jr r = {name, err, KF_OK};
    if (!cJSON_IsObject(root)) return kf_error_set(err, KF_ERR_FORMAT, "%s: not a JSON object", name);
    const char *schema = cJSON_GetStringValue(item(&r, root, "", "schema"));
    if (r.st == KF_OK && (!schema || strcmp(schema, SCHEMA)))
        fail(&r, "", "schema", "not \"%s\"", SCHEMA);
    int L = (int)integer(&r, object(&r, root, "", "model"), "model", "n_layer", 1, 1 << 20);
    int ranks = (int)integer(&r, object(&r, root, "", "calibration"), "calibration", "ranks", 1, 1 << 20);
    if (r.st != KF_OK) return r.st;
    if (kf_analysis_result_init(res, L, ranks, err) != KF_OK) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", name);
    read_model(&r, root, res);
    read_run(&r, root, res);
    read_layers(&r, root, res);
    read_thresholds(&r, root, res);
    read_neurons(&r, root, res);
    read_timing(&r, root, res);
    return r.st;
}

kf_status kf_report_analysis_read(const char *path, kf_analysis_result *res, kf_error *err) {
    memset(res, 0, sizeof *res);
    char *text;
    size_t len;
    kf_status st = kf_file_read_all(path, &text, &len, err);
    if (st != KF_OK) return st;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (root) // only whitespace may follow the value
        while (end < text + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')) end++;
    if (!root || end != text + len) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        free(text);
        cJSON_Delete(root);
        return kf_error_set(err, KF_ERR_FORMAT, "%s: not valid JSON (near byte %zu)", path, at);
    }
    free(text);
    st = kf_report_analysis_from_json(root, path, res, err);
    cJSON_Delete(root);
    return st;
}

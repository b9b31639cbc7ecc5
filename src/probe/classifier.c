// Exported probe classifiers (probe/classifier.h).
#define _GNU_SOURCE // strdup
#include "probe/classifier.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/tensor.h"
#include "probe/report.h"

int kf_classifier_layers_needed(kf_feat_kind kind, int ls_blocks) {
    int n = kind == KF_FEAT_RESID ? ls_blocks - 1 : ls_blocks;
    return n < 1 ? 1 : n;
}

kf_status kf_model_truncate(kf_model *m, int n_layer, kf_error *err) {
    if (n_layer < 1 || n_layer > m->n_layer)
        return kf_error_set(err, KF_ERR_ARG, "truncate: cannot keep %d of %d layers", n_layer, m->n_layer);
    m->n_layer = n_layer; // the layers beyond stay in the model's buffers, unused
    return kf_model_validate(m, "truncated model", err);
}

void kf_classifier_free(kf_classifier *c) {
    if (!c) return;
    kf_label_set_free(&c->labels);
    free(c->cols), free(c->mean), free(c->inv_std);
    kf_logreg_free(&c->lr);
    memset(c, 0, sizeof *c);
}

static cJSON *f64_array(const double *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static cJSON *f32_array(const float *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

kf_status kf_classifier_write(const kf_classifier *c, const char *path, kf_error *err) {
    const int K = c->lr.n_classes, n = c->n_cols;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "schema", "kfuse-classifier/1");
    cJSON *t = cJSON_AddObjectToObject(o, "task");
    cJSON_AddStringToObject(t, "name", c->task);
    cJSON_AddStringToObject(t, "kind", c->kind == KF_TASK_TOKEN ? "token" : "sentence");
    cJSON_AddStringToObject(t, "text_column", c->text_column);
    cJSON *lab = cJSON_AddArrayToObject(t, "labels");
    for (int i = 0; i < c->labels.n; i++) cJSON_AddItemToArray(lab, cJSON_CreateString(c->labels.names[i]));
    cJSON *fe = cJSON_AddObjectToObject(o, "features");
    cJSON_AddStringToObject(fe, "kind", kf_feat_kind_name(c->features));
    cJSON_AddStringToObject(fe, "aggregation", kf_feat_agg_name(c->agg));
    cJSON_AddStringToObject(fe, "dtype", c->f16 ? "f16" : "f32");
    cJSON_AddNumberToObject(fe, "batch_tokens", c->batch_tokens);
    cJSON *m = cJSON_AddObjectToObject(o, "model");
    cJSON_AddNumberToObject(m, "n_layer_full", c->n_layer_full);
    cJSON_AddNumberToObject(m, "n_layer_kept", c->n_layer_kept);
    cJSON_AddNumberToObject(m, "ls_blocks", c->ls_blocks);
    if (c->random_init) cJSON_AddNumberToObject(m, "random_init", (double)c->init_seed);
    else cJSON_AddNullToObject(m, "random_init");
    cJSON *cols = cJSON_AddArrayToObject(o, "columns");
    for (int j = 0; j < n; j++) cJSON_AddItemToArray(cols, cJSON_CreateNumber((double)c->cols[j]));
    cJSON_AddItemToObject(o, "mean", f64_array(c->mean, n));
    cJSON_AddItemToObject(o, "inv_std", f64_array(c->inv_std, n));
    cJSON *w = cJSON_AddArrayToObject(o, "weights");
    for (int k = 0; k < K; k++) cJSON_AddItemToArray(w, f32_array(c->lr.w + (int64_t)k * n, n));
    cJSON_AddItemToObject(o, "bias", f32_array(c->lr.b, K));
    cJSON *p = cJSON_AddObjectToObject(o, "probe");
    cJSON_AddNumberToObject(p, "dev_accuracy", c->probe_dev_acc);
    cJSON_AddNumberToObject(p, "test_accuracy", c->probe_test_acc);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
    char tmp[1100];
    FILE *f;
    kf_status s = kf_file_begin(path, tmp, sizeof tmp, &f, err);
    if (s == KF_OK) {
        size_t len = strlen(text);
        bool ok = fwrite(text, 1, len, f) == len && fputc('\n', f) != EOF;
        s = kf_file_commit(f, ok, tmp, path, err);
    }
    free(text);
    return s;
}

// ---- reading ---------------------------------------------------------------

static const cJSON *member(const cJSON *o, const char *k, const char *path, kf_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v) kf_error_set(err, KF_ERR_FORMAT, "%s: no \"%s\"", path, k);
    return v;
}

static bool get_int(const cJSON *o, const char *k, long lo, long hi, long *out, const char *path, kf_error *err) {
    const cJSON *v = member(o, k, path, err);
    if (!v) return false;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi) {
        kf_error_set(err, KF_ERR_FORMAT, "%s: \"%s\" is not an integer in [%ld, %ld]", path, k, lo, hi);
        return false;
    }
    *out = (long)v->valuedouble;
    return true;
}

static bool get_str(const cJSON *o, const char *k, char *dst, size_t cap, const char *path, kf_error *err) {
    const cJSON *v = member(o, k, path, err);
    if (!v) return false;
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= cap) {
        kf_error_set(err, KF_ERR_FORMAT, "%s: \"%s\" is not a string of fewer than %zu bytes", path, k, cap);
        return false;
    }
    strcpy(dst, v->valuestring);
    return true;
}

// A numeric array of exactly n entries into dst (double) or dstf (float).
static bool get_nums(const cJSON *o, const char *k, int n, double *dst, float *dstf, const char *path, kf_error *err) {
    const cJSON *a = k ? member(o, k, path, err) : o;
    if (!a) return false;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n) {
        kf_error_set(err, KF_ERR_FORMAT, "%s: \"%s\" is not an array of %d numbers", path, k ? k : "weights", n);
        return false;
    }
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, a) {
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
            kf_error_set(err, KF_ERR_FORMAT, "%s: \"%s\"[%d] is not a finite number", path, k ? k : "weights", i);
            return false;
        }
        if (dst) dst[i] = v->valuedouble;
        else dstf[i] = (float)v->valuedouble;
        i++;
    }
    return true;
}

static kf_status parse(kf_classifier *c, const cJSON *o, const char *path, kf_error *err) {
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(o, "schema");
    if (!cJSON_IsString(schema) || strcmp(schema->valuestring, "kfuse-classifier/1"))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: not a kfuse-classifier/1 file", path);
    const cJSON *t = member(o, "task", path, err), *fe = t ? member(o, "features", path, err) : NULL;
    const cJSON *m = fe ? member(o, "model", path, err) : NULL;
    if (!m) return err->code;
    char kind[16], fk[16], agg[16], dt[8];
    long v;
    if (!get_str(t, "name", c->task, sizeof c->task, path, err) || !get_str(t, "kind", kind, sizeof kind, path, err) ||
        !get_str(t, "text_column", c->text_column, sizeof c->text_column, path, err) ||
        !get_str(fe, "kind", fk, sizeof fk, path, err) || !get_str(fe, "aggregation", agg, sizeof agg, path, err) ||
        !get_str(fe, "dtype", dt, sizeof dt, path, err))
        return err->code;
    if (!strcmp(kind, "token")) c->kind = KF_TASK_TOKEN;
    else if (!strcmp(kind, "sentence")) c->kind = KF_TASK_SENTENCE;
    else return kf_error_set(err, KF_ERR_FORMAT, "%s: task kind '%s' is not token or sentence", path, kind);
    if (!strcmp(fk, "residual")) c->features = KF_FEAT_RESID;
    else if (!strcmp(fk, "ffn")) c->features = KF_FEAT_FFN;
    else return kf_error_set(err, KF_ERR_FORMAT, "%s: feature kind '%s' is not residual or ffn", path, fk);
    if (!strcmp(agg, "last")) c->agg = KF_AGG_LAST;
    else if (!strcmp(agg, "first")) c->agg = KF_AGG_FIRST;
    else if (!strcmp(agg, "mean")) c->agg = KF_AGG_MEAN;
    else return kf_error_set(err, KF_ERR_FORMAT, "%s: aggregation '%s' is not last, first or mean", path, agg);
    if (strcmp(dt, "f32") && strcmp(dt, "f16")) return kf_error_set(err, KF_ERR_FORMAT, "%s: dtype '%s'", path, dt);
    c->f16 = !strcmp(dt, "f16");
    if (!get_int(fe, "batch_tokens", 16, 1 << 20, &v, path, err)) return err->code;
    c->batch_tokens = (int)v;
    if (!get_int(m, "n_layer_full", 1, 1 << 20, &v, path, err)) return err->code;
    c->n_layer_full = (int)v;
    if (!get_int(m, "n_layer_kept", 1, c->n_layer_full, &v, path, err)) return err->code;
    c->n_layer_kept = (int)v;
    if (!get_int(m, "ls_blocks", 1, c->n_layer_full + 1, &v, path, err)) return err->code;
    c->ls_blocks = (int)v;
    // Absent (files written before it existed) or null: the model as stored.
    const cJSON *ri = cJSON_GetObjectItemCaseSensitive(m, "random_init");
    if (ri && !cJSON_IsNull(ri)) {
        if (!get_int(m, "random_init", 0, KF_CLASSIFIER_MAX_SEED, &v, path, err)) return err->code;
        c->random_init = true;
        c->init_seed = (uint64_t)v;
    }
    const cJSON *lab = member(t, "labels", path, err);
    if (!lab) return err->code;
    const int K = cJSON_GetArraySize(lab);
    if (!cJSON_IsArray(lab) || K < 2) return kf_error_set(err, KF_ERR_FORMAT, "%s: \"labels\" is not an array of 2 or more", path);
    c->labels.names = calloc((size_t)K, sizeof *c->labels.names);
    if (!c->labels.names) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
    const cJSON *e;
    cJSON_ArrayForEach(e, lab) {
        if (!cJSON_IsString(e) || !e->valuestring[0])
            return kf_error_set(err, KF_ERR_FORMAT, "%s: label %d is not a non-empty string", path, c->labels.n);
        if (kf_label_set_find(&c->labels, e->valuestring) >= 0)
            return kf_error_set(err, KF_ERR_FORMAT, "%s: label '%s' appears twice", path, e->valuestring);
        if (!(c->labels.names[c->labels.n] = strdup(e->valuestring))) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
        c->labels.n++;
    }
    const cJSON *cols = member(o, "columns", path, err);
    if (!cols) return err->code;
    const int n = cJSON_GetArraySize(cols);
    if (!cJSON_IsArray(cols) || n < 1) return kf_error_set(err, KF_ERR_FORMAT, "%s: \"columns\" is not a non-empty array", path);
    c->n_cols = n;
    c->cols = malloc((size_t)n * sizeof *c->cols);
    c->mean = malloc((size_t)n * sizeof *c->mean);
    c->inv_std = malloc((size_t)n * sizeof *c->inv_std);
    double *cd = malloc((size_t)n * sizeof *cd);
    c->lr = (kf_logreg){.n_classes = K, .dim = n, .w = malloc((size_t)K * (size_t)n * sizeof(float)),
                        .b = malloc((size_t)K * sizeof(float))};
    if (!c->cols || !c->mean || !c->inv_std || !cd || !c->lr.w || !c->lr.b) {
        free(cd);
        return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
    }
    bool ok = get_nums(o, "columns", n, cd, NULL, path, err);
    for (int j = 0; ok && j < n; j++) {
        if (cd[j] < 0 || cd[j] != floor(cd[j]) || cd[j] > 1e15) {
            kf_error_set(err, KF_ERR_FORMAT, "%s: column %d (%g) is not a column index", path, j, cd[j]);
            ok = false;
        }
        c->cols[j] = (int64_t)cd[j];
    }
    free(cd);
    if (!ok || !get_nums(o, "mean", n, c->mean, NULL, path, err) || !get_nums(o, "inv_std", n, c->inv_std, NULL, path, err))
        return err->code;
    const cJSON *w = member(o, "weights", path, err);
    if (!w) return err->code;
    if (!cJSON_IsArray(w) || cJSON_GetArraySize(w) != K)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: \"weights\" is not %d rows (one per label)", path, K);
    int k = 0;
    cJSON_ArrayForEach(e, w) {
        if (!get_nums(e, NULL, n, NULL, c->lr.w + (int64_t)k * n, path, err)) return err->code;
        k++;
    }
    // A class absent from training has a bias of -1e30 (logreg.h): finite, read as it is.
    if (!get_nums(o, "bias", K, NULL, c->lr.b, path, err)) return err->code;
    const cJSON *p = member(o, "probe", path, err);
    if (!p) return err->code;
    const cJSON *da = cJSON_GetObjectItemCaseSensitive(p, "dev_accuracy"), *ta = cJSON_GetObjectItemCaseSensitive(p, "test_accuracy");
    c->probe_dev_acc = cJSON_IsNumber(da) ? da->valuedouble : NAN;
    c->probe_test_acc = cJSON_IsNumber(ta) ? ta->valuedouble : NAN;
    return KF_OK;
}

kf_status kf_classifier_read(kf_classifier *c, const char *path, kf_error *err) {
    memset(c, 0, sizeof *c);
    char *text;
    size_t len;
    kf_status s = kf_file_read_all(path, &text, &len, err);
    if (s != KF_OK) return s;
    cJSON *o = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return kf_error_set(err, KF_ERR_FORMAT, "%s: not a JSON object", path);
    }
    s = parse(c, o, path, err);
    cJSON_Delete(o);
    if (s != KF_OK) kf_classifier_free(c);
    return s;
}

kf_status kf_classifier_predict(const kf_classifier *c, const kf_features *x, int32_t *pred, kf_error *err) {
    const int n = c->n_cols;
    for (int j = 0; j < n; j++)
        if (c->cols[j] >= x->n_cols)
            return kf_error_set(err, KF_ERR_ARG, "classify: column %lld is beyond the model's %lld feature columns",
                                (long long)c->cols[j], (long long)x->n_cols);
    float *X = malloc((size_t)(x->n_rows > 0 ? x->n_rows : 1) * (size_t)n * sizeof *X);
    if (!X) return kf_error_set(err, KF_ERR_NOMEM, "classify: out of memory for %lld rows", (long long)x->n_rows);
    kf_features_gather(x, c->cols, n, X);
    // The probe's standardisation (dalvi.c gather): in double, rounded to float.
    for (int64_t i = 0; i < x->n_rows; i++)
        for (int j = 0; j < n; j++) X[i * n + j] = (float)((X[i * n + j] - c->mean[j]) * c->inv_std[j]);
    kf_status s = kf_logreg_predict(&c->lr, X, x->n_rows, pred, err);
    free(X);
    return s;
}

void kf_task_scores_free(double **scores, int n_layer) {
    if (!scores) return;
    for (int l = 0; l < n_layer; l++) free(scores[l]);
    free(scores);
}

kf_status kf_task_scores_read(const char *dir, kf_task_score kind, const kf_model *m, double ***scores, kf_error *err) {
    *scores = NULL;
    const bool abl = kind == KF_TASK_SCORE_ABLATION;
    char jpath[1100], wpath[1100];
    snprintf(jpath, sizeof jpath, "%s/probe.json", dir);
    snprintf(wpath, sizeof wpath, "%s/%s", dir, abl ? "ablation_scores.npy" : "block_weights.npy");
    char *text;
    size_t len;
    kf_status s = kf_file_read_all(jpath, &text, &len, err);
    if (s != KF_OK) return s;
    cJSON *o = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(o, "options"), *md = cJSON_GetObjectItemCaseSensitive(o, "model");
    const cJSON *fk = cJSON_GetObjectItemCaseSensitive(op, "features"), *nl = cJSON_GetObjectItemCaseSensitive(md, "n_layer");
    if (!cJSON_IsString(fk) || !cJSON_IsNumber(nl)) s = kf_error_set(err, KF_ERR_FORMAT, "%s: not a kfuse probe.json", jpath);
    else if (!abl && strcmp(fk->valuestring, "ffn"))
        s = kf_error_set(err, KF_ERR_FORMAT, "%s: a probe on %s features; the task ranking needs --features ffn", jpath,
                         fk->valuestring);
    else if ((int)nl->valuedouble != m->n_layer)
        s = kf_error_set(err, KF_ERR_FORMAT, "%s: a probe of a model of %d layers, this one has %d", jpath,
                         (int)nl->valuedouble, m->n_layer);
    cJSON_Delete(o);
    if (s != KF_OK) return s;
    kf_features w;
    if ((s = kf_features_open(&w, wpath, err)) != KF_OK) return s;
    int64_t F = 0;
    for (int l = 0; l < m->n_layer; l++) F += m->layers[l].n_ff;
    if (w.n_cols != F || w.f16 || (abl && w.n_rows != 1)) {
        kf_features_close(&w);
        return kf_error_set(err, KF_ERR_FORMAT, "%s: %s%lld f32 columns expected (the model's FFN neurons), not %lld x %lld",
                            wpath, abl ? "1 row of " : "", (long long)F, (long long)w.n_rows, (long long)w.n_cols);
    }
    double **sc = calloc((size_t)m->n_layer, sizeof *sc);
    if (!sc) s = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", wpath);
    const float *W = w.data;
    for (int l = 0, c0 = 0; s == KF_OK && l < m->n_layer; c0 += m->layers[l].n_ff, l++) {
        const int Fl = m->layers[l].n_ff;
        if (!(sc[l] = calloc((size_t)Fl, sizeof **sc))) {
            s = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", wpath);
            break;
        }
        if (abl)
            for (int j = 0; j < Fl; j++) sc[l][j] = W[c0 + j];
        else
            for (int64_t k = 0; k < w.n_rows; k++)
                for (int j = 0; j < Fl; j++) sc[l][j] += fabs((double)W[k * F + c0 + j]);
    }
    kf_features_close(&w);
    if (s != KF_OK) {
        kf_task_scores_free(sc, m->n_layer);
        return s;
    }
    *scores = sc;
    return KF_OK;
}

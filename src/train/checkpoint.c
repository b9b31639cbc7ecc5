// Resumable checkpoints of a recovery run (checkpoint.h).
#include "train/checkpoint.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "formats/safetensors.h"

uint64_t kf_ckpt_hash_ids(const int32_t *ids, int64_t n) {
    uint64_t h = 1469598103934665603ull;
    const uint8_t *p = (const uint8_t *)ids;
    for (int64_t i = 0; i < n * (int64_t)sizeof *ids; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static kf_status step_path(char *out, size_t n, const char *dir, int64_t step, const char *ext, kf_error *err) {
    if ((size_t)snprintf(out, n, "%s/step-%" PRId64 ".%s", dir, step, ext) >= n)
        return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    return KF_OK;
}

// The fingerprint as JSON; numbers that must match exactly are strings.
static cJSON *run_json(const kf_ckpt_run *run) {
    cJSON *o = cJSON_CreateObject();
    char h[32];
    cJSON_AddNumberToObject(o, "steps", (double)run->steps);
    cJSON_AddNumberToObject(o, "n_ids", (double)run->n_ids);
    snprintf(h, sizeof h, "%016" PRIx64, run->ids_hash);
    cJSON_AddStringToObject(o, "ids_hash", h);
    cJSON_AddNumberToObject(o, "batch", run->batch);
    cJSON_AddNumberToObject(o, "ctx", run->ctx);
    cJSON_AddNumberToObject(o, "lr", run->lr);
    cJSON_AddNumberToObject(o, "min_lr_ratio", run->min_lr_ratio);
    cJSON_AddNumberToObject(o, "warmup_share", run->warmup_share);
    cJSON_AddNumberToObject(o, "clip", run->clip);
    cJSON_AddNumberToObject(o, "kl_weight", run->kl_weight);
    cJSON_AddNumberToObject(o, "ce_weight", run->ce_weight);
    snprintf(h, sizeof h, "%016" PRIx64, run->seed);
    cJSON_AddStringToObject(o, "seed", h);
    return o;
}

// A double written with 17 significant digits, so that reading it back gives
// the same bits (cJSON's own printing stops at 15 when that is close enough).
static cJSON *exact(double v) {
    char buf[40];
    if (!isfinite(v)) return cJSON_CreateNull();
    snprintf(buf, sizeof buf, "%.17g", v);
    return cJSON_CreateRaw(buf);
}

static cJSON *curve(const double *v, int64_t n) {
    cJSON *a = cJSON_CreateArray();
    for (int64_t i = 0; i < n; i++) cJSON_AddItemToArray(a, exact(v[i]));
    return a;
}

static kf_status write_text(const char *path, const char *text, kf_error *err) {
    char tmp[1200];
    FILE *f;
    kf_status s = kf_file_begin(path, tmp, sizeof tmp, &f, err);
    if (s != KF_OK) return s;
    return kf_file_commit(f, fputs(text, f) >= 0, tmp, path, err);
}

kf_status kf_ckpt_save(const char *dir, const kf_ckpt_run *run, int64_t step, const kf_param *ps, int n_ps,
                       kf_adamw *opt, const kf_rng *rng, const kf_recover_result *r, kf_error *err) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return kf_error_set(err, KF_ERR_IO, "%s: cannot create folder: %s", dir, strerror(errno));
    int64_t prev;
    kf_status s = kf_ckpt_latest(dir, &prev, err);
    if (s != KF_OK) return s;
    char path[1100], tmp[1200];
    const int n = 3 * n_ps;
    char (*names)[80] = malloc(sizeof *names * (size_t)n);
    const char **np = malloc(sizeof *np * (size_t)n);
    kf_tensor *ts = calloc((size_t)n, sizeof *ts);
    const kf_tensor **tp = malloc(sizeof *tp * (size_t)n);
    cJSON *o = NULL;
    char *text = NULL;
    if (!names || !np || !ts || !tp) {
        s = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    for (int i = 0; i < n_ps; i++) {
        float *data[3] = {ps[i].w, kf_adamw_m(opt, i), kf_adamw_v(opt, i)};
        for (int k = 0; k < 3; k++) {
            int j = 3 * i + k;
            snprintf(names[j], sizeof names[j], "%c.%s", "wmv"[k], ps[i].name);
            ts[j].data = data[k];
            kf_tensor_set_shape(&ts[j], 1, (int64_t[]){ps[i].n});
            np[j] = names[j], tp[j] = &ts[j];
        }
    }
    FILE *f;
    if ((s = step_path(path, sizeof path, dir, step, "safetensors", err)) != KF_OK ||
        (s = kf_file_begin(path, tmp, sizeof tmp, &f, err)) != KF_OK)
        goto done;
    if ((s = kf_file_commit(f, kf_st_write(f, np, tp, n, false), tmp, path, err)) != KF_OK) goto done;

    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", (double)step);
    cJSON_AddNumberToObject(o, "adam_t", (double)kf_adamw_t(opt));
    cJSON *rs = cJSON_AddArrayToObject(o, "rng");
    for (int k = 0; k < 4; k++) {
        char h[32];
        snprintf(h, sizeof h, "%016" PRIx64, rng->s[k]);
        cJSON_AddItemToArray(rs, cJSON_CreateString(h));
    }
    cJSON_AddItemToObject(o, "run", run_json(run));
    cJSON_AddItemToObject(o, "loss", curve(r->loss, step));
    cJSON_AddItemToObject(o, "kl", curve(r->kl, step));
    cJSON_AddItemToObject(o, "ce", curve(r->ce, step));
    cJSON_AddItemToObject(o, "grad_norm", curve(r->grad_norm, step));
    cJSON_AddItemToObject(o, "lr", curve(r->lr, step));
    cJSON *ev = cJSON_AddArrayToObject(o, "evals");
    for (int i = 0; i < r->n_evals; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "step", (double)r->evals[i].step);
        cJSON_AddItemToObject(e, "kl_mean", exact(r->evals[i].kl_mean));
        cJSON_AddNumberToObject(e, "n_scored", (double)r->evals[i].n_scored);
        cJSON_AddItemToArray(ev, e);
    }
    cJSON *sec = cJSON_AddObjectToObject(o, "seconds");
    cJSON_AddItemToObject(sec, "teacher", exact(r->t_teacher));
    cJSON_AddItemToObject(sec, "forward", exact(r->t_forward));
    cJSON_AddItemToObject(sec, "loss", exact(r->t_loss));
    cJSON_AddItemToObject(sec, "backward", exact(r->t_backward));
    cJSON_AddItemToObject(sec, "update", exact(r->t_update));
    text = cJSON_Print(o);
    if (!text) {
        s = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    if ((s = step_path(path, sizeof path, dir, step, "json", err)) != KF_OK ||
        (s = write_text(path, text, err)) != KF_OK)
        goto done;
    char latest[1100], num[32];
    snprintf(num, sizeof num, "%" PRId64 "\n", step);
    if (!kf_path_join(latest, sizeof latest, dir, "latest")) {
        s = kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
        goto done;
    }
    if ((s = write_text(latest, num, err)) != KF_OK) goto done;
    if (prev > 0 && prev != step) {
        if (step_path(path, sizeof path, dir, prev, "safetensors", err) == KF_OK) remove(path);
        if (step_path(path, sizeof path, dir, prev, "json", err) == KF_OK) remove(path);
    }
done:
    cJSON_Delete(o);
    free(text);
    free(names);
    free(np);
    free(ts);
    free(tp);
    return s;
}

kf_status kf_ckpt_latest(const char *dir, int64_t *step, kf_error *err) {
    *step = 0;
    char path[1100];
    if (!kf_path_join(path, sizeof path, dir, "latest")) return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    if (!kf_file_exists(path)) return KF_OK;
    char *text;
    size_t len;
    kf_status s = kf_file_read_all(path, &text, &len, err);
    if (s != KF_OK) return s;
    char *end;
    long long v = strtoll(text, &end, 10);
    bool ok = end != text && (*end == '\n' || *end == '\0') && v > 0;
    free(text);
    if (!ok) return kf_error_set(err, KF_ERR_FORMAT, "%s: not a step number", path);
    *step = v;
    return KF_OK;
}

// Reads n numbers of array key of o into v.
static bool get_curve(const cJSON *o, const char *key, double *v, int64_t n) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n) return false;
    int64_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) {
        if (!cJSON_IsNumber(e)) return false;
        v[i++] = e->valuedouble;
    }
    return true;
}

static bool get_hex(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsString(j)) return false;
    char *end;
    errno = 0;
    *out = strtoull(j->valuestring, &end, 16);
    return errno == 0 && end != j->valuestring && *end == '\0';
}

kf_status kf_ckpt_load(const char *dir, const kf_ckpt_run *run, kf_param *ps, int n_ps, kf_adamw *opt,
                       kf_rng *rng, kf_recover_result *r, int n_evals_max, int64_t *step, kf_error *err) {
    int64_t at;
    kf_status s = kf_ckpt_latest(dir, &at, err);
    if (s != KF_OK) return s;
    if (at == 0) return kf_error_set(err, KF_ERR_ARG, "%s: no checkpoint to resume from", dir);
    char path[1100];
    if ((s = step_path(path, sizeof path, dir, at, "json", err)) != KF_OK) return s;
    char *text;
    size_t len;
    if ((s = kf_file_read_all(path, &text, &len, err)) != KF_OK) return s;
    cJSON *o = cJSON_ParseWithLength(text, len);
    free(text);
    kf_st_set st = {0};
    const char *bad = NULL;
    if (!o) {
        s = kf_error_set(err, KF_ERR_FORMAT, "%s: not valid JSON", path);
        goto done;
    }
    // the run it belongs to must be this one
    cJSON *want = run_json(run), *got = cJSON_GetObjectItemCaseSensitive(o, "run");
    const cJSON *w;
    cJSON_ArrayForEach(w, want) {
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(got, w->string);
        if (!g || !cJSON_Compare(w, g, true)) {
            bad = w->string;
            break;
        }
    }
    if (bad) {
        s = kf_error_set(err, KF_ERR_ARG, "%s: the checkpoint is of another run (%s differs); resume with the same "
                         "options and training text, or use another folder", path, bad);
        cJSON_Delete(want);
        goto done;
    }
    cJSON_Delete(want);
    const cJSON *jstep = cJSON_GetObjectItemCaseSensitive(o, "step"), *jt = cJSON_GetObjectItemCaseSensitive(o, "adam_t");
    const cJSON *jrng = cJSON_GetObjectItemCaseSensitive(o, "rng");
    if (!cJSON_IsNumber(jstep) || jstep->valuedouble != (double)at || at > run->steps) bad = "step";
    else if (!cJSON_IsNumber(jt) || jt->valuedouble < 0) bad = "adam_t";
    else if (!cJSON_IsArray(jrng) || cJSON_GetArraySize(jrng) != 4) bad = "rng";
    for (int k = 0; !bad && k < 4; k++)
        if (!get_hex(cJSON_GetArrayItem(jrng, k), &rng->s[k])) bad = "rng";
    if (!bad && !get_curve(o, "loss", r->loss, at)) bad = "loss";
    if (!bad && !get_curve(o, "kl", r->kl, at)) bad = "kl";
    if (!bad && !get_curve(o, "ce", r->ce, at)) bad = "ce";
    if (!bad && !get_curve(o, "grad_norm", r->grad_norm, at)) bad = "grad_norm";
    if (!bad && !get_curve(o, "lr", r->lr, at)) bad = "lr";
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(o, "evals");
    if (!bad && (!cJSON_IsArray(ev) || cJSON_GetArraySize(ev) > n_evals_max - 1)) bad = "evals";
    r->n_evals = 0;
    const cJSON *e;
    if (!bad) cJSON_ArrayForEach(e, ev) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(e, "step"), *b = cJSON_GetObjectItemCaseSensitive(e, "kl_mean"),
                    *c = cJSON_GetObjectItemCaseSensitive(e, "n_scored");
        if (!cJSON_IsNumber(a) || !cJSON_IsNumber(b) || !cJSON_IsNumber(c)) {
            bad = "evals";
            break;
        }
        r->evals[r->n_evals++] = (kf_recover_eval){(int64_t)a->valuedouble, b->valuedouble, (int64_t)c->valuedouble};
    }
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(o, "seconds");
    double *times[5] = {&r->t_teacher, &r->t_forward, &r->t_loss, &r->t_backward, &r->t_update};
    static const char *const tkeys[5] = {"teacher", "forward", "loss", "backward", "update"};
    for (int k = 0; !bad && k < 5; k++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(sec, tkeys[k]);
        if (!cJSON_IsNumber(x)) bad = "seconds";
        else *times[k] = x->valuedouble;
    }
    if (bad) {
        s = kf_error_set(err, KF_ERR_FORMAT, "%s: missing or bad field '%s'", path, bad);
        goto done;
    }

    if ((s = step_path(path, sizeof path, dir, at, "safetensors", err)) != KF_OK ||
        (s = kf_st_set_add_file(&st, path, err)) != KF_OK || (s = kf_st_set_index(&st, err)) != KF_OK)
        goto done;
    if (st.n_tensors != 3 * n_ps) {
        s = kf_error_set(err, KF_ERR_FORMAT, "%s: %d tensors for %d trainable parameters (expected %d)", path,
                         st.n_tensors, n_ps, 3 * n_ps);
        goto done;
    }
    for (int i = 0; i < n_ps; i++) {
        float *dst[3] = {ps[i].w, kf_adamw_m(opt, i), kf_adamw_v(opt, i)};
        for (int k = 0; k < 3; k++) {
            char name[80];
            snprintf(name, sizeof name, "%c.%s", "wmv"[k], ps[i].name);
            const kf_st_tensor *t = kf_st_set_find(&st, name);
            if (!t || t->dtype != KF_DTYPE_F32 || t->nelem != ps[i].n) {
                s = kf_error_set(err, KF_ERR_FORMAT, "%s: tensor %s is %s (expected F32 of %lld elements)", path, name,
                                 t ? "of another size or dtype" : "missing", (long long)ps[i].n);
                goto done;
            }
            memcpy(dst[k], t->data, sizeof(float) * (size_t)ps[i].n);
        }
    }
    kf_adamw_set_t(opt, (int64_t)jt->valuedouble);
    r->steps = at;
    r->tokens = at * run->batch * run->ctx;
    r->seconds = r->t_teacher + r->t_forward + r->t_loss + r->t_backward + r->t_update;
    *step = at;
done:
    kf_st_set_free(&st);
    cJSON_Delete(o);
    return s;
}

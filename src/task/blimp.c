#include "task/blimp.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "task/utf8.h"

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void kf_blimp_free(kf_blimp_set *set) {
    for (int i = 0; i < set->n_pairs; i++) free(set->pairs[i].good), free(set->pairs[i].bad);
    for (int i = 0; i < set->n_paradigms; i++) free(set->paradigms[i].uid), free(set->paradigms[i].term);
    for (int i = 0; i < set->n_fields; i++) free(set->fields[i]);
    for (int i = 0; i < set->n_files; i++) free(set->files[i]);
    free(set->pairs);
    free(set->paradigms);
    free(set->fields);
    free(set->files);
    memset(set, 0, sizeof *set);
}

// Grows *p (of *cap elements of size sz) to hold at least n.
static bool grow(void **p, int *cap, int n, size_t sz) {
    if (n <= *cap) return true;
    int c = *cap ? *cap * 2 : 64;
    while (c < n) c *= 2;
    void *q = realloc(*p, (size_t)c * sz);
    if (!q) return false;
    *p = q, *cap = c;
    return true;
}

typedef struct {
    kf_blimp_set *set;
    int cap_pairs, cap_paradigms, cap_fields, cap_files;
    int max_per_paradigm;
    int last; // paradigm of the previous line (files hold one UID each)
} loader;

// The string value of key in o, checked: present, a string, non-empty, UTF-8.
static kf_status get_str(const cJSON *o, const char *key, const char *path, int line, const char **out,
                         kf_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v) || !v->valuestring)
        return kf_error_set(err, KF_ERR_FORMAT, "%s:%d: no string \"%s\"", path, line, key);
    size_t n = strlen(v->valuestring), bad = kf_utf8_check(v->valuestring, n);
    if (n == 0) return kf_error_set(err, KF_ERR_FORMAT, "%s:%d: \"%s\" is empty", path, line, key);
    if (bad < n)
        return kf_error_set(err, KF_ERR_FORMAT, "%s:%d: \"%s\" is not valid UTF-8 (byte %zu)", path, line, key, bad);
    *out = v->valuestring;
    return KF_OK;
}

static kf_status nomem(const char *path, kf_error *err) {
    return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
}

// The index of field name f, added when new (-1: out of memory).
static int field_index(loader *L, const char *f) {
    kf_blimp_set *s = L->set;
    for (int i = 0; i < s->n_fields; i++)
        if (!strcmp(s->fields[i], f)) return i;
    if (!grow((void **)&s->fields, &L->cap_fields, s->n_fields + 1, sizeof *s->fields)) return -1;
    if (!(s->fields[s->n_fields] = dup_str(f))) return -1;
    return s->n_fields++;
}

// One parsed line into the set.
static kf_status add_pair(loader *L, const cJSON *o, int file, int line, kf_error *err) {
    kf_blimp_set *s = L->set;
    const char *path = s->files[file], *good = NULL, *bad = NULL, *field = NULL, *term = NULL, *uid = NULL;
    kf_status st;
    if ((st = get_str(o, "sentence_good", path, line, &good, err)) != KF_OK ||
        (st = get_str(o, "sentence_bad", path, line, &bad, err)) != KF_OK ||
        (st = get_str(o, "field", path, line, &field, err)) != KF_OK ||
        (st = get_str(o, "linguistics_term", path, line, &term, err)) != KF_OK ||
        (st = get_str(o, "UID", path, line, &uid, err)) != KF_OK)
        return st;
    int p = L->last;
    if (p < 0 || strcmp(s->paradigms[p].uid, uid) != 0) {
        for (p = 0; p < s->n_paradigms && strcmp(s->paradigms[p].uid, uid) != 0; p++) {}
    }
    char e1[KF_ESC_NAME], e2[KF_ESC_NAME], e3[KF_ESC_NAME];
    if (p == s->n_paradigms) { // a new paradigm
        if (!grow((void **)&s->paradigms, &L->cap_paradigms, p + 1, sizeof *s->paradigms)) return nomem(path, err);
        kf_blimp_paradigm *P = &s->paradigms[p];
        memset(P, 0, sizeof *P);
        if ((P->field = field_index(L, field)) < 0 || !(P->uid = dup_str(uid)) || !(P->term = dup_str(term))) {
            free(P->uid);
            return nomem(path, err);
        }
        s->n_paradigms++;
    } else {
        const kf_blimp_paradigm *P = &s->paradigms[p];
        if (strcmp(s->fields[P->field], field) != 0 || strcmp(P->term, term) != 0)
            return kf_error_set(err, KF_ERR_FORMAT, "%s:%d: UID '%s' has field '%s' / term '%s', earlier '%s' / '%s'",
                                path, line, kf_str_escape(e1, sizeof e1, uid, KF_STR_NUL),
                                kf_str_escape(e2, sizeof e2, field, KF_STR_NUL),
                                kf_str_escape(e3, sizeof e3, term, KF_STR_NUL), s->fields[P->field], P->term);
    }
    L->last = p;
    if (L->max_per_paradigm > 0 && s->paradigms[p].n_pairs >= L->max_per_paradigm) return KF_OK;
    if (!grow((void **)&s->pairs, &L->cap_pairs, s->n_pairs + 1, sizeof *s->pairs)) return nomem(path, err);
    kf_blimp_pair *q = &s->pairs[s->n_pairs];
    *q = (kf_blimp_pair){.good = dup_str(good), .bad = dup_str(bad), .paradigm = p, .file = file, .line = line};
    if (!q->good || !q->bad) {
        free(q->good), free(q->bad);
        return nomem(path, err);
    }
    s->n_pairs++;
    s->paradigms[p].n_pairs++;
    return KF_OK;
}

static kf_status load_file(loader *L, const char *path, kf_error *err) {
    kf_blimp_set *s = L->set;
    if (!grow((void **)&s->files, &L->cap_files, s->n_files + 1, sizeof *s->files)) return nomem(path, err);
    if (!(s->files[s->n_files] = dup_str(path))) return nomem(path, err);
    const int file = s->n_files++;
    char *buf;
    size_t len;
    kf_status st = kf_file_read_all(path, &buf, &len, err);
    if (st != KF_OK) return st;
    int line = 0, parsed = 0;
    for (size_t i = 0; i < len && st == KF_OK;) {
        size_t j = i;
        while (j < len && buf[j] != '\n') j++;
        line++;
        size_t n = j - i;
        if (n && buf[i + n - 1] == '\r') n--;
        size_t k = 0;
        while (k < n && (buf[i + k] == ' ' || buf[i + k] == '\t')) k++;
        if (k < n) { // blank lines are skipped
            cJSON *o = cJSON_ParseWithLength(buf + i, n);
            parsed++;
            if (!cJSON_IsObject(o)) st = kf_error_set(err, KF_ERR_FORMAT, "%s:%d: not a JSON object", path, line);
            else st = add_pair(L, o, file, line, err);
            cJSON_Delete(o);
        }
        i = j + 1;
    }
    free(buf);
    if (st == KF_OK && parsed == 0)
        st = kf_error_set(err, KF_ERR_FORMAT, "%s: no minimal pairs", path);
    return st;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static kf_status load_dir(loader *L, const char *dir, kf_error *err) {
    DIR *d = opendir(dir);
    if (!d) return kf_error_set(err, KF_ERR_IO, "%s: cannot open the folder", dir);
    char **names = NULL;
    int n = 0, cap = 0;
    kf_status st = KF_OK;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        size_t k = strlen(e->d_name);
        if (k <= 6 || strcmp(e->d_name + k - 6, ".jsonl") != 0) continue;
        if (!grow((void **)&names, &cap, n + 1, sizeof *names) || !(names[n] = dup_str(e->d_name))) {
            st = nomem(dir, err);
            break;
        }
        n++;
    }
    closedir(d);
    if (st == KF_OK && n == 0) st = kf_error_set(err, KF_ERR_FORMAT, "%s: no .jsonl files", dir);
    if (st == KF_OK) qsort(names, (size_t)n, sizeof *names, cmp_str);
    char path[4096];
    for (int i = 0; i < n && st == KF_OK; i++) {
        if (!kf_path_join(path, sizeof path, dir, names[i]))
            st = kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
        else
            st = load_file(L, path, err);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return st;
}

kf_status kf_blimp_load(kf_blimp_set *set, const char *path, int max_per_paradigm, kf_error *err) {
    memset(set, 0, sizeof *set);
    if (max_per_paradigm < 0)
        return kf_error_set(err, KF_ERR_ARG, "blimp: pairs per paradigm must be >= 0, got %d", max_per_paradigm);
    loader L = {.set = set, .max_per_paradigm = max_per_paradigm, .last = -1};
    kf_status st = kf_dir_exists(path) ? load_dir(&L, path, err) : load_file(&L, path, err);
    if (st != KF_OK) kf_blimp_free(set);
    return st;
}

kf_status kf_blimp_tokenize(const kf_blimp_set *set, const kf_tokenizer *tok, int32_t **ids_out, int64_t **off_out,
                            kf_error *err) {
    *ids_out = NULL, *off_out = NULL;
    if (kf_tokenizer_bos(tok) < 0)
        return kf_error_set(err, KF_ERR_ARG, "blimp: the tokenizer has no BOS token, which the scoring prepends");
    const int n = 2 * set->n_pairs;
    int64_t *off = malloc(sizeof *off * (size_t)(n + 1)), cap = 0;
    int32_t *ids = NULL;
    if (!off) return kf_error_set(err, KF_ERR_NOMEM, "blimp: out of memory");
    off[0] = 0;
    kf_status st = KF_OK;
    for (int s = 0; s < n && st == KF_OK; s++) {
        const kf_blimp_pair *p = &set->pairs[s / 2];
        const char *text = s % 2 ? p->bad : p->good;
        int32_t *t;
        size_t nt;
        kf_error e = {0};
        if ((st = kf_tokenizer_encode(tok, text, strlen(text), true, &t, &nt, &e)) != KF_OK) {
            kf_error_set(err, st, "%s:%d: %s: %s", set->files[p->file], p->line, s % 2 ? "sentence_bad" : "sentence_good",
                         e.msg);
            break;
        }
        // the tokenizer's add_bos default does not matter: exactly one BOS first
        int skip = nt > 0 && t[0] == kf_tokenizer_bos(tok);
        int64_t need = off[s] + 1 + (int64_t)nt - skip;
        if (need > cap) {
            int64_t c = cap ? cap : 1 << 16;
            while (c < need) c *= 2;
            int32_t *q = realloc(ids, sizeof *ids * (size_t)c);
            if (!q) {
                free(t);
                st = kf_error_set(err, KF_ERR_NOMEM, "blimp: out of memory for %lld token ids", (long long)need);
                break;
            }
            ids = q, cap = c;
        }
        ids[off[s]] = kf_tokenizer_bos(tok);
        memcpy(ids + off[s] + 1, t + skip, sizeof *t * (nt - (size_t)skip));
        off[s + 1] = need;
        free(t);
    }
    if (st != KF_OK) {
        free(ids), free(off);
        return st;
    }
    *ids_out = ids, *off_out = off;
    return KF_OK;
}

kf_status kf_blimp_tally_init(kf_blimp_tally *t, const kf_blimp_set *set, kf_error *err) {
    memset(t, 0, sizeof *t);
    t->paradigm_correct = calloc((size_t)set->n_paradigms + 1, sizeof *t->paradigm_correct);
    t->field_correct = calloc((size_t)set->n_fields + 1, sizeof *t->field_correct);
    t->field_pairs = calloc((size_t)set->n_fields + 1, sizeof *t->field_pairs);
    if (!t->paradigm_correct || !t->field_correct || !t->field_pairs) {
        kf_blimp_tally_free(t);
        return kf_error_set(err, KF_ERR_NOMEM, "blimp: out of memory");
    }
    return KF_OK;
}

void kf_blimp_tally_free(kf_blimp_tally *t) {
    free(t->paradigm_correct);
    free(t->field_correct);
    free(t->field_pairs);
    memset(t, 0, sizeof *t);
}

void kf_blimp_count(kf_blimp_tally *t, const kf_blimp_set *set, const double *lp) {
    for (int p = 0; p < set->n_paradigms; p++) t->paradigm_correct[p] = 0;
    for (int f = 0; f < set->n_fields; f++) t->field_correct[f] = t->field_pairs[f] = 0;
    t->correct = 0, t->n_pairs = set->n_pairs;
    for (int i = 0; i < set->n_pairs; i++) {
        const int p = set->pairs[i].paradigm, f = set->paradigms[p].field, ok = lp[2 * i] > lp[2 * i + 1];
        t->paradigm_correct[p] += ok;
        t->field_correct[f] += ok;
        t->field_pairs[f]++;
        t->correct += ok;
    }
}

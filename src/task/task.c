// Task datasets: CoNLL-U token labels and TSV sentence labels (task/task.h).
#include "task/task.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/file.h"
#include "core/rng.h"

static const char *const conllu_cols[10] = {"ID", "FORM", "LEMMA", "UPOS", "XPOS",
                                            "FEATS", "HEAD", "DEPREL", "DEPS", "MISC"};

int kf_conllu_column(const char *name) {
    for (int i = 0; i < 10; i++)
        if (!strcasecmp(name, conllu_cols[i])) return i;
    return -1;
}

void kf_label_set_free(kf_label_set *l) {
    if (!l) return;
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    l->names = NULL;
    l->n = 0;
}

int kf_label_set_find(const kf_label_set *l, const char *name) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->names[i], name)) return i;
    return -1;
}

void kf_task_split_free(kf_task_split *s) {
    if (!s) return;
    for (int64_t i = 0; i < s->n_items; i++) free(s->words[i]);
    free(s->words);
    free(s->labels);
    free(s->sent_off);
    free(s->sent_line);
    memset(s, 0, sizeof *s);
}

// Length of the valid UTF-8 prefix of s (n bytes): n when all of it is valid
// (no overlong forms, surrogates or code points above U+10FFFF).
static size_t utf8_valid_prefix(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        if (c < 0x80) k = 0;
        else if (c >= 0xC2 && c <= 0xDF) k = 1;
        else if (c >= 0xE0 && c <= 0xEF) k = 2;
        else if (c >= 0xF0 && c <= 0xF4) k = 3;
        else return i;
        if (k >= n - i) return i; // cut short at the end
        for (size_t j = 1; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return i;
        if (c == 0xE0 && s[i + 1] < 0xA0) return i;
        if (c == 0xED && s[i + 1] >= 0xA0) return i;
        if (c == 0xF0 && s[i + 1] < 0x90) return i;
        if (c == 0xF4 && s[i + 1] >= 0x90) return i;
        i += k + 1;
    }
    return n;
}

// Growable arrays of a split being read.
typedef struct {
    kf_task_split s;
    int64_t cap_items, cap_sent;
} split_builder;

static bool push_item(split_builder *b, const char *w, size_t wn, int32_t label) {
    if (b->s.n_items == b->cap_items) {
        int64_t cap = b->cap_items ? 2 * b->cap_items : 1024;
        char **nw = realloc(b->s.words, (size_t)cap * sizeof *nw);
        if (!nw) return false;
        b->s.words = nw;
        int32_t *nl = realloc(b->s.labels, (size_t)cap * sizeof *nl);
        if (!nl) return false;
        b->s.labels = nl;
        b->cap_items = cap;
    }
    char *copy = malloc(wn + 1);
    if (!copy) return false;
    memcpy(copy, w, wn);
    copy[wn] = 0;
    b->s.words[b->s.n_items] = copy;
    b->s.labels[b->s.n_items] = label;
    b->s.n_items++;
    return true;
}

// Starts sentence n_sent at item n_items (sent_off has n_sent + 2 slots after).
static bool push_sent(split_builder *b, int64_t line) {
    if (b->s.n_sent + 2 > b->cap_sent) {
        int64_t cap = b->cap_sent ? 2 * b->cap_sent : 256;
        int64_t *no = realloc(b->s.sent_off, (size_t)cap * sizeof *no);
        if (!no) return false;
        b->s.sent_off = no;
        int64_t *nl = realloc(b->s.sent_line, (size_t)cap * sizeof *nl);
        if (!nl) return false;
        b->s.sent_line = nl;
        b->cap_sent = cap;
    }
    b->s.sent_off[b->s.n_sent] = b->s.n_items;
    b->s.sent_line[b->s.n_sent] = line;
    b->s.n_sent++;
    b->s.sent_off[b->s.n_sent] = b->s.n_items;
    return true;
}

// Label index of name (n bytes), added when grow; -1 and err set otherwise.
static int label_index(kf_label_set *l, const char *name, size_t n, bool grow, const char *path, int64_t line,
                       kf_error *err) {
    char tmp[256];
    if (n == 0 || n >= sizeof tmp) {
        kf_error_set(err, KF_ERR_FORMAT, "%s:%lld: label of %zu bytes (1 to %zu expected)", path, (long long)line, n,
                     sizeof tmp - 1);
        return -1;
    }
    memcpy(tmp, name, n);
    tmp[n] = 0;
    int k = kf_label_set_find(l, tmp);
    if (k >= 0) return k;
    if (!grow) {
        char e[KF_ESC_NAME];
        kf_error_set(err, KF_ERR_FORMAT, "%s:%lld: label '%s' does not occur in the training split", path,
                     (long long)line, kf_str_escape(e, sizeof e, tmp, KF_STR_NUL));
        return -1;
    }
    char **nn = realloc(l->names, (size_t)(l->n + 1) * sizeof *nn);
    if (nn) l->names = nn;
    char *copy = nn ? malloc(n + 1) : NULL;
    if (!copy) {
        kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory for labels", path);
        return -1;
    }
    memcpy(copy, tmp, n + 1);
    nn[l->n] = copy;
    return l->n++;
}

// Splits line [p, end) at tabs into at most cap fields; returns the count
// (cap + 1 when there are more).
static int split_tabs(const char *p, const char *end, const char **f, size_t *fl, int cap) {
    int n = 0;
    for (;;) {
        const char *t = memchr(p, '\t', (size_t)(end - p));
        const char *e = t ? t : end;
        if (n == cap) return cap + 1;
        f[n] = p;
        fl[n] = (size_t)(e - p);
        n++;
        if (!t) return n;
        p = t + 1;
    }
}

static kf_status finish(split_builder *b, kf_task_split *out, kf_status s, const char *path, kf_task_kind kind) {
    if (s == KF_OK) {
        b->s.kind = kind;
        snprintf(b->s.path, sizeof b->s.path, "%s", path);
        *out = b->s;
    } else {
        kf_task_split_free(&b->s);
        memset(out, 0, sizeof *out);
    }
    return s;
}

kf_status kf_task_read_conllu(kf_task_split *out, const char *path, int col, kf_label_set *labels, bool grow,
                              int64_t max_items, kf_error *err) {
    memset(out, 0, sizeof *out);
    if (col < 0 || col > 9) return kf_error_set(err, KF_ERR_ARG, "%s: CoNLL-U has no column %d", path, col);
    char *buf;
    size_t len;
    kf_status s = kf_file_read_all(path, &buf, &len, err);
    if (s != KF_OK) return s;
    size_t ok = utf8_valid_prefix((const unsigned char *)buf, len);
    int64_t line = 1;
    if (ok < len) {
        for (size_t i = 0; i < ok; i++) line += buf[i] == '\n';
        free(buf);
        return kf_error_set(err, KF_ERR_FORMAT, "%s:%lld: not UTF-8 (byte offset %zu)", path, (long long)line, ok);
    }
    split_builder b = {0};
    int64_t sent_items = 0, sent_start = 0; // words of the open sentence, its first line
    bool in_sent = false;
    const char *p = buf, *end = buf + len;
    for (; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *next = nl ? nl + 1 : end;
        if (le > p && le[-1] == '\r') le--;
        if (le == p) { // blank line: ends a sentence
            if (!in_sent) {
                s = kf_error_set(err, KF_ERR_FORMAT, "%s:%lld: empty sentence (a blank line with no word lines before it)",
                                 path, (long long)line);
                break;
            }
            if (sent_items == 0) {
                s = kf_error_set(err, KF_ERR_FORMAT, "%s:%lld: empty sentence (no word lines)", path,
                                 (long long)sent_start);
                break;
            }
            in_sent = false;
            p = next;
            continue;
        }
        if (!in_sent) {
            in_sent = true;
            sent_items = 0;
            sent_start = line;
        }
        if (*p == '#') {
            p = next;
            continue;
        }
        const char *f[10];
        size_t fl[10];
        int nf = split_tabs(p, le, f, fl, 10);
        if (nf != 10) {
            char got[24];
            snprintf(got, sizeof got, nf > 10 ? "more than 10" : "%d", nf);
            s = kf_error_set(err, KF_ERR_FORMAT, "%s:%lld: %s columns on a word line (CoNLL-U has 10, tab-separated)",
                             path, (long long)line, got);
            break;
        }
        if (memchr(f[0], '-', fl[0]) || memchr(f[0], '.', fl[0])) { // multiword range or empty node
            p = next;
            continue;
        }
        if (fl[1] == 0) {
            s = kf_error_set(err, KF_ERR_FORMAT, "%s:%lld: empty FORM", path, (long long)line);
            break;
        }
        if (fl[col] == 1 && f[col][0] == '_') {
            s = kf_error_set(err, KF_ERR_FORMAT, "%s:%lld: no %s value ('_') on a word line", path, (long long)line,
                             conllu_cols[col]);
            break;
        }
        if (sent_items == 0) {
            // The cap keeps whole sentences: stop before one that would cross it.
            if (max_items > 0 && b.s.n_items >= max_items) break;
            if (!push_sent(&b, line)) {
                s = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
        }
        int k = label_index(labels, f[col], fl[col], grow, path, line, err);
        if (k < 0) {
            s = err ? err->code : KF_ERR_FORMAT;
            break;
        }
        if (!push_item(&b, f[1], fl[1], k)) {
            s = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        sent_items++;
        b.s.sent_off[b.s.n_sent] = b.s.n_items;
        p = next;
    }
    if (s == KF_OK && in_sent && sent_items == 0 && p >= end)
        s = kf_error_set(err, KF_ERR_FORMAT, "%s:%lld: empty sentence at the end of the file", path,
                         (long long)sent_start);
    // A cap that falls inside a sentence drops that sentence's words.
    if (s == KF_OK && max_items > 0 && b.s.n_items > max_items && b.s.n_sent > 1) {
        b.s.n_sent--;
        for (int64_t i = b.s.sent_off[b.s.n_sent]; i < b.s.n_items; i++) free(b.s.words[i]);
        b.s.n_items = b.s.sent_off[b.s.n_sent];
    }
    if (s == KF_OK && b.s.n_items == 0) s = kf_error_set(err, KF_ERR_FORMAT, "%s: no sentences", path);
    free(buf);
    return finish(&b, out, s, path, KF_TASK_TOKEN);
}

kf_status kf_task_read_tsv(kf_task_split *out, const char *path, const char *text_col, const char *label_col,
                           kf_label_set *labels, bool grow, int64_t max_items, kf_error *err) {
    memset(out, 0, sizeof *out);
    char *buf;
    size_t len;
    kf_status s = kf_file_read_all(path, &buf, &len, err);
    if (s != KF_OK) return s;
    size_t ok = utf8_valid_prefix((const unsigned char *)buf, len);
    int64_t line = 1;
    if (ok < len) {
        for (size_t i = 0; i < ok; i++) line += buf[i] == '\n';
        free(buf);
        return kf_error_set(err, KF_ERR_FORMAT, "%s:%lld: not UTF-8 (byte offset %zu)", path, (long long)line, ok);
    }
    enum { MAX_COLS = 64 };
    const char *f[MAX_COLS];
    size_t fl[MAX_COLS];
    split_builder b = {0};
    int n_cols = 0, ti = -1, li = -1;
    const char *p = buf, *end = buf + len;
    for (; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *next = nl ? nl + 1 : end;
        if (le > p && le[-1] == '\r') le--;
        int nf = split_tabs(p, le, f, fl, MAX_COLS);
        if (line == 1) {
            if (nf > MAX_COLS) {
                s = kf_error_set(err, KF_ERR_FORMAT, "%s:1: header of more than %d columns", path, MAX_COLS);
                break;
            }
            n_cols = nf;
            for (int i = 0; i < nf; i++) {
                if (strlen(text_col) == fl[i] && !memcmp(f[i], text_col, fl[i])) ti = i;
                if (strlen(label_col) == fl[i] && !memcmp(f[i], label_col, fl[i])) li = i;
            }
            char e[KF_ESC_NAME];
            if (ti < 0 || li < 0) {
                const char *miss = ti < 0 ? text_col : label_col;
                s = kf_error_set(err, KF_ERR_FORMAT, "%s:1: the header has no column '%s'", path,
                                 kf_str_escape(e, sizeof e, miss, KF_STR_NUL));
                break;
            }
            p = next;
            continue;
        }
        if (le == p && !nl) break; // no final line after the last newline
        if (nf != n_cols) {
            s = kf_error_set(err, KF_ERR_FORMAT, "%s:%lld: %d columns, the header has %d", path, (long long)line,
                             nf > MAX_COLS ? MAX_COLS + 1 : nf, n_cols);
            break;
        }
        size_t tn = fl[ti];
        const char *tx = f[ti];
        while (tn > 0 && (tx[tn - 1] == ' ')) tn--;
        while (tn > 0 && *tx == ' ') tx++, tn--;
        if (tn == 0) {
            s = kf_error_set(err, KF_ERR_FORMAT, "%s:%lld: empty sentence", path, (long long)line);
            break;
        }
        if (max_items > 0 && b.s.n_items >= max_items) break;
        int k = label_index(labels, f[li], fl[li], grow, path, line, err);
        if (k < 0) {
            s = err ? err->code : KF_ERR_FORMAT;
            break;
        }
        if (!push_sent(&b, line) || !push_item(&b, tx, tn, k)) {
            s = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        b.s.sent_off[b.s.n_sent] = b.s.n_items;
        p = next;
    }
    if (s == KF_OK && line == 1) s = kf_error_set(err, KF_ERR_FORMAT, "%s: empty file (a header row is needed)", path);
    if (s == KF_OK && b.s.n_items == 0) s = kf_error_set(err, KF_ERR_FORMAT, "%s: no rows after the header", path);
    free(buf);
    return finish(&b, out, s, path, KF_TASK_SENTENCE);
}

int32_t kf_task_control_label(const char *word, const int64_t *counts, int n_labels, uint64_t seed) {
    uint64_t h = 1469598103934665603ull; // FNV-1a of the word type
    for (const unsigned char *c = (const unsigned char *)word; *c; c++) h = (h ^ *c) * 1099511628211ull;
    uint64_t st = h ^ (seed * 0x9E3779B97F4A7C15ull);
    double u = kf_rng_unit(kf_rng_splitmix64(&st));
    int64_t total = 0;
    for (int i = 0; i < n_labels; i++) total += counts[i];
    double acc = 0;
    for (int i = 0; i < n_labels; i++) {
        acc += (double)counts[i] / (double)total;
        if (u < acc) return i;
    }
    return n_labels - 1;
}

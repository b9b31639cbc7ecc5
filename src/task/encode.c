// Tokenizing task items with their sub-word spans (task/encode.h).
#include "task/encode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kf_task_tokens_free(kf_task_tokens *t) {
    if (!t) return;
    free(t->tok_off);
    free(t->tokens);
    free(t->span);
    free(t->item_off);
    memset(t, 0, sizeof *t);
}

// Appends ids to the growing token array.
static bool append(kf_task_tokens *t, int64_t *cap, const int32_t *ids, size_t n) {
    int64_t have = t->tok_off[t->n_sent];
    if (have + (int64_t)n > *cap) {
        int64_t c = *cap ? *cap : 4096;
        while (c < have + (int64_t)n) c *= 2;
        int32_t *nt = realloc(t->tokens, (size_t)c * sizeof *nt);
        if (!nt) return false;
        t->tokens = nt;
        *cap = c;
    }
    memcpy(t->tokens + have, ids, n * sizeof *ids);
    t->tok_off[t->n_sent] = have + (int64_t)n;
    return true;
}

kf_status kf_task_encode(const kf_task_split *s, const kf_tokenizer *tok, int bos_id, int max_len,
                         kf_task_tokens *out, kf_error *err) {
    memset(out, 0, sizeof *out);
    kf_task_tokens t = {0};
    int64_t cap = 0;
    t.tok_off = calloc((size_t)s->n_sent + 1, sizeof *t.tok_off);
    t.span = malloc((size_t)s->n_items * 2 * sizeof *t.span);
    t.item_off = malloc(((size_t)s->n_sent + 1) * sizeof *t.item_off);
    char *word = NULL;
    size_t word_cap = 0;
    kf_status st = KF_OK;
    if (!t.tok_off || !t.span || !t.item_off) st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory for tokens", s->path);
    bool bytelevel = kf_tokenizer_kind(tok) == KF_TOK_BYTELEVEL;
    int32_t bos = bos_id;
    for (int si = 0; st == KF_OK && si < s->n_sent; si++) {
        int64_t start = t.tok_off[si];
        t.tok_off[si + 1] = start;
        t.n_sent = si + 1; // append() extends sentence n_sent - 1
        if (bos_id >= 0 && !append(&t, &cap, &bos, 1)) {
            st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory for tokens", s->path);
            break;
        }
        for (int64_t it = s->sent_off[si]; it < s->sent_off[si + 1]; it++) {
            const char *w = s->words[it];
            size_t wn = strlen(w);
            // Byte-level: " word" for every word after the first of a sentence.
            bool space = bytelevel && s->kind == KF_TASK_TOKEN && it > s->sent_off[si];
            if (wn + 2 > word_cap) {
                size_t c = 2 * (wn + 2);
                char *nw = realloc(word, c);
                if (!nw) {
                    st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory for tokens", s->path);
                    break;
                }
                word = nw;
                word_cap = c;
            }
            word[0] = ' ';
            memcpy(word + 1, w, wn + 1);
            int32_t *ids;
            size_t n;
            st = kf_tokenizer_encode(tok, space ? word : word + 1, space ? wn + 1 : wn, false, &ids, &n, err);
            if (st != KF_OK) {
                char msg[sizeof err->msg];
                snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
                kf_error_set(err, st, "%s:%lld: %s", s->path, (long long)s->sent_line[si], msg);
                break;
            }
            int64_t pos = t.tok_off[si + 1] - start;
            bool ok = append(&t, &cap, ids, n);
            free(ids);
            if (!ok) {
                st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory for tokens", s->path);
                break;
            }
            if (n == 0) {
                st = kf_error_set(err, KF_ERR_FORMAT, "%s:%lld: an item encodes to no tokens", s->path,
                                  (long long)s->sent_line[si]);
                break;
            }
            int64_t len = t.tok_off[si + 1] - start;
            if (len > max_len) {
                st = kf_error_set(err, KF_ERR_FORMAT, "%s:%lld: sentence longer than the %d tokens the model takes",
                                  s->path, (long long)s->sent_line[si], max_len);
                break;
            }
            t.span[2 * it] = (int32_t)pos;
            t.span[2 * it + 1] = (int32_t)len;
            if (len > t.max_len) t.max_len = (int)len;
        }
    }
    free(word);
    if (st != KF_OK) {
        kf_task_tokens_free(&t);
        return st;
    }
    memcpy(t.item_off, s->sent_off, ((size_t)s->n_sent + 1) * sizeof *t.item_off);
    t.n_sent = s->n_sent;
    t.n_items = s->n_items;
    *out = t;
    return KF_OK;
}

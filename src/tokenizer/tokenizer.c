// Tokenizer core: vocabulary tables, the BPE merge loop (heap-ordered, one
// pass over a linked list of symbols), encode/decode, and the in-memory spec.
//
// One merge engine serves all formats. A merge is (left id, right id) ->
// (rank, new id); the lowest rank merges first and, among equal ranks, the
// leftmost pair. Hugging Face and GPT-2 rank merges by their order in the
// merges list; SentencePiece ranks them by the score of the merged piece
// (equal scores share a rank, so ties go to the leftmost pair, as in
// SentencePiece's bpe_model.cc).
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "tokenizer/unicode_tables.h"

#define SPM_SPACE "\xE2\x96\x81" // U+2581 "▁"

// ---------------------------------------------------------------- hashing

static uint32_t hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u; // FNV-1a
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static uint32_t hash_pair(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

static uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static uint32_t table_size(size_t n) {
    uint32_t c = 16;
    while (c < 2 * n) c *= 2;
    return c;
}

int32_t kf_tok_lookup(const kf_tokenizer *t, const char *s, size_t n) {
    for (uint32_t h = hash_bytes(s, n) & t->vocab_mask;; h = (h + 1) & t->vocab_mask) {
        int32_t id = t->vocab_slots[h];
        if (id < 0) return -1;
        if (t->piece_len[id] == n && memcmp(t->arena + t->piece_off[id], s, n) == 0) return id;
    }
}

// The merge of (a, b), or NULL.
static const kf_tok_pair *pair_find(const kf_tokenizer *t, int32_t a, int32_t b) {
    if (t->pair_mask == 0) return NULL;
    uint64_t k = pair_key(a, b);
    for (uint32_t h = hash_pair(k) & t->pair_mask;; h = (h + 1) & t->pair_mask) {
        const kf_tok_pair *p = &t->pairs[h];
        if (p->new_id < 0) return NULL;
        if (p->key == k) return p;
    }
}

// Inserts (a, b) -> (rank, new id) unless present with a lower rank.
static void pair_insert(kf_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t new_id) {
    uint64_t k = pair_key(a, b);
    for (uint32_t h = hash_pair(k) & t->pair_mask;; h = (h + 1) & t->pair_mask) {
        kf_tok_pair *p = &t->pairs[h];
        if (p->new_id < 0 || (p->key == k && rank < p->rank)) {
            *p = (kf_tok_pair){k, rank, new_id};
            return;
        }
        if (p->key == k) return;
    }
}

// ---------------------------------------------------------------- UTF-8

// Offset of the first byte of the first ill-formed sequence (Unicode's
// strict rules: no overlongs, surrogates or code points above U+10FFFF),
// or n when the whole text is valid.
static size_t utf8_invalid_at(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) k = 1;
        else if (c == 0xE0) { k = 2; lo = 0xA0; }
        else if (c >= 0xE1 && c <= 0xEC) k = 2;
        else if (c == 0xED) { k = 2; hi = 0x9F; }
        else if (c >= 0xEE && c <= 0xEF) k = 2;
        else if (c == 0xF0) { k = 3; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) k = 3;
        else if (c == 0xF4) { k = 3; hi = 0x8F; }
        else return i;
        if (k > n - i - 1) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return i;
        i += k + 1;
    }
    return n;
}

// Length of the (valid) UTF-8 sequence starting with byte c.
static size_t utf8_len(uint8_t c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

// Code point at s[i] of validated text; *n gets its byte length.
static uint32_t utf8_decode(const uint8_t *s, size_t i, size_t *n) {
    uint8_t c = s[i];
    *n = utf8_len(c);
    if (*n == 1) return c;
    uint32_t cp = c & (0x7F >> *n);
    for (size_t j = 1; j < *n; j++) cp = (cp << 6) | (s[i + j] & 0x3F);
    return cp;
}

// UTF-8 of a code point below U+10000 (GPT-2's byte map stays below U+0144).
static size_t utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

// ---------------------------------------------------------------- GPT-2 byte map

// GPT-2 shows each byte as a printable character: printable Latin-1 bytes as
// themselves, the other 68 bytes as U+0100.. in byte order.
static void bytes_to_unicode(uint32_t map[256]) {
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        map[b] = printable ? (uint32_t)b : (uint32_t)(256 + extra++);
    }
}

// ---------------------------------------------------------------- build

static bool is_byte_piece(const char *s, uint32_t n, int *byte) {
    static const char hex[] = "0123456789ABCDEF";
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return false;
    const char *h1 = memchr(hex, s[3], 16), *h2 = memchr(hex, s[4], 16);
    if (!h1 || !h2) return false;
    *byte = (int)((h1 - hex) * 16 + (h2 - hex));
    return true;
}

static uint8_t infer_type(kf_tok_kind kind, const char *s, uint32_t n) {
    int b;
    if (strcmp(s, "<unk>") == 0) return KF_PIECE_UNKNOWN;
    if (strcmp(s, "<s>") == 0 || strcmp(s, "</s>") == 0 || strcmp(s, "<|endoftext|>") == 0) return KF_PIECE_CONTROL;
    if (kind == KF_TOK_SPM && is_byte_piece(s, n, &b)) return KF_PIECE_BYTE;
    return KF_PIECE_NORMAL;
}

static bool mergeable(uint8_t type) { return type == KF_PIECE_NORMAL || type == KF_PIECE_USER; }

typedef struct {
    float score;
    int32_t id;
} scored_id;

static int cmp_score_desc(const void *a, const void *b) {
    const scored_id *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

// SentencePiece merges: every split of a mergeable piece into two mergeable
// pieces (at character boundaries), ranked by the piece's score.
static kf_status build_score_merges(kf_tokenizer *t, kf_error *err) {
    int n = t->n_vocab;
    scored_id *order = malloc((size_t)n * sizeof(scored_id));
    int32_t *rank = malloc((size_t)n * sizeof(int32_t));
    if (!order || !rank) {
        free(order);
        free(rank);
        return kf_error_set(err, KF_ERR_NOMEM, "tokenizer: out of memory");
    }
    for (int i = 0; i < n; i++) order[i] = (scored_id){t->scores[i], i};
    qsort(order, (size_t)n, sizeof(scored_id), cmp_score_desc);
    for (int i = 0, r = 0; i < n; i++) {
        if (i > 0 && order[i].score != order[i - 1].score) r++;
        rank[order[i].id] = r;
    }
    for (int32_t id = 0; id < n; id++) {
        if (!mergeable(t->types[id])) continue;
        const char *s = t->arena + t->piece_off[id];
        uint32_t len = t->piece_len[id];
        for (uint32_t k = utf8_len((uint8_t)s[0]); k < len; k += utf8_len((uint8_t)s[k])) {
            int32_t l = kf_tok_lookup(t, s, k), r = kf_tok_lookup(t, s + k, len - k);
            if (l >= 0 && r >= 0 && mergeable(t->types[l]) && mergeable(t->types[r])) pair_insert(t, l, r, rank[id], id);
        }
    }
    free(order);
    free(rank);
    return KF_OK;
}

static kf_status build_rank_merges(kf_tokenizer *t, const kf_tok_build_args *a, const char *name, kf_error *err) {
    size_t cap = 0;
    char *buf = NULL;
    kf_status st = KF_OK;
    for (int k = 0; k < a->n_merges && st == KF_OK; k++) {
        const char *l = a->merge_left[k], *r = a->merge_right[k];
        size_t nl = strlen(l), nr = strlen(r);
        if (nl + nr > cap) {
            cap = 2 * (nl + nr);
            char *nb = realloc(buf, cap);
            if (!nb) {
                st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", name);
                break;
            }
            buf = nb;
        }
        memcpy(buf, l, nl);
        memcpy(buf + nl, r, nr);
        int32_t il = kf_tok_lookup(t, l, nl), ir = kf_tok_lookup(t, r, nr), in = kf_tok_lookup(t, buf, nl + nr);
        char el[KF_ESC_NAME], er[KF_ESC_NAME];
        if (il < 0 || ir < 0 || in < 0)
            st = kf_error_set(err, KF_ERR_FORMAT, "%s: merge %d (\"%s %s\") uses a piece not in the vocabulary", name,
                              k, kf_str_escape(el, sizeof el, l, nl), kf_str_escape(er, sizeof er, r, nr));
        else if (!pair_find(t, il, ir)) {
            pair_insert(t, il, ir, k, in);
            t->merges[2 * t->n_merges] = il;
            t->merges[2 * t->n_merges + 1] = ir;
            t->n_merges++;
        }
    }
    free(buf);
    return st;
}

// What each piece decodes to: SPM "▁" -> ' ' and <0xNN> -> the byte;
// byte-level characters -> their bytes; special tokens -> nothing.
static kf_status build_decoded(kf_tokenizer *t, const char *name, kf_error *err) {
    size_t total = 0;
    for (int i = 0; i < t->n_vocab; i++) total += t->piece_len[i];
    t->dec_arena = malloc(total + 1);
    t->dec_off = malloc((size_t)t->n_vocab * sizeof(uint32_t));
    t->dec_len = malloc((size_t)t->n_vocab * sizeof(uint32_t));
    if (!t->dec_arena || !t->dec_off || !t->dec_len) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", name);
    uint32_t cp_to_byte[512];
    uint32_t map[256];
    bytes_to_unicode(map);
    for (int c = 0; c < 512; c++) cp_to_byte[c] = UINT32_MAX;
    for (int b = 0; b < 256; b++) cp_to_byte[map[b]] = (uint32_t)b;
    size_t o = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        const uint8_t *s = (const uint8_t *)t->arena + t->piece_off[i];
        uint32_t n = t->piece_len[i];
        uint8_t type = t->types[i];
        int byte;
        t->dec_off[i] = (uint32_t)o;
        if (type == KF_PIECE_CONTROL || type == KF_PIECE_UNKNOWN || type == KF_PIECE_UNUSED) {
        } else if (type == KF_PIECE_BYTE && is_byte_piece((const char *)s, n, &byte)) {
            t->dec_arena[o++] = (char)byte;
        } else if (type == KF_PIECE_USER) {
            memcpy(t->dec_arena + o, s, n);
            o += n;
        } else if (t->kind == KF_TOK_SPM) {
            for (uint32_t j = 0; j < n;) {
                if (n - j >= 3 && memcmp(s + j, SPM_SPACE, 3) == 0) {
                    t->dec_arena[o++] = ' ';
                    j += 3;
                } else {
                    t->dec_arena[o++] = (char)s[j++];
                }
            }
        } else {
            // pieces were checked to be valid UTF-8 at build time
            for (uint32_t j = 0; j < n;) {
                size_t k;
                uint32_t cp = utf8_decode(s, j, &k);
                if (cp < 512 && cp_to_byte[cp] != UINT32_MAX) {
                    t->dec_arena[o++] = (char)cp_to_byte[cp];
                } else {
                    memcpy(t->dec_arena + o, s + j, k);
                    o += k;
                }
                j += (uint32_t)k;
            }
        }
        t->dec_len[i] = (uint32_t)(o - t->dec_off[i]);
    }
    return KF_OK;
}

static int32_t find_special(const kf_tokenizer *t, int given, const char *piece) {
    if (given >= 0) return given < t->n_vocab ? given : -1;
    return given == -1 ? kf_tok_lookup(t, piece, strlen(piece)) : -1;
}

kf_status kf_tok_build(kf_tokenizer **out, const kf_tok_build_args *a, const char *name, kf_error *err) {
    *out = NULL;
    if (a->n_vocab <= 0 || a->n_vocab > (1 << 24))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: vocabulary size %d out of range", name, a->n_vocab);
    kf_tokenizer *t = calloc(1, sizeof(*t));
    if (!t) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", name);
    kf_status st = KF_OK;
    int n = a->n_vocab;
    t->kind = a->kind;
    t->n_vocab = n;
    t->prefix_space = a->prefix_space;
    t->split_words = a->split_words;
    t->use_regex = a->use_regex;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!a->pieces[i]) {
            st = kf_error_set(err, KF_ERR_FORMAT, "%s: token %d has no piece", name, i);
            goto fail;
        }
        size_t len = strlen(a->pieces[i]);
        if (utf8_invalid_at((const uint8_t *)a->pieces[i], len) != len) {
            st = kf_error_set(err, KF_ERR_FORMAT, "%s: piece of token %d is not valid UTF-8", name, i);
            goto fail;
        }
        total += len + 1;
    }
    t->arena = malloc(total);
    t->piece_off = malloc((size_t)n * sizeof(uint32_t));
    t->piece_len = malloc((size_t)n * sizeof(uint32_t));
    t->types = malloc((size_t)n);
    t->scores = calloc((size_t)n, sizeof(float));
    uint32_t vcap = table_size((size_t)n);
    t->vocab_slots = malloc(vcap * sizeof(int32_t));
    t->vocab_mask = vcap - 1;
    if (!t->arena || !t->piece_off || !t->piece_len || !t->types || !t->scores || !t->vocab_slots) {
        st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", name);
        goto fail;
    }
    if (total > UINT32_MAX) {
        st = kf_error_set(err, KF_ERR_FORMAT, "%s: vocabulary text too large", name);
        goto fail;
    }
    memset(t->vocab_slots, 0xFF, vcap * sizeof(int32_t));
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(a->pieces[i]);
        memcpy(t->arena + o, a->pieces[i], len + 1);
        t->piece_off[i] = (uint32_t)o;
        t->piece_len[i] = (uint32_t)len;
        o += len + 1;
        uint8_t ty = a->types ? a->types[i] : infer_type(a->kind, t->arena + t->piece_off[i], (uint32_t)len);
        if (ty < KF_PIECE_NORMAL || ty > KF_PIECE_BYTE) ty = KF_PIECE_NORMAL;
        t->types[i] = ty;
        if (a->scores) t->scores[i] = a->scores[i];
        // first id wins for duplicate strings
        if (kf_tok_lookup(t, t->arena + t->piece_off[i], len) >= 0) continue;
        uint32_t h = hash_bytes(t->arena + t->piece_off[i], len) & t->vocab_mask;
        while (t->vocab_slots[h] >= 0) h = (h + 1) & t->vocab_mask;
        t->vocab_slots[h] = i;
    }

    // rank merges: one pair each; score merges: at most one per inner character boundary
    size_t n_pairs = a->n_merges > 0 ? (size_t)a->n_merges : 0;
    if (a->n_merges <= 0 && a->kind == KF_TOK_SPM && a->scores)
        for (int i = 0; i < n; i++)
            for (uint32_t j = 1; j < t->piece_len[i]; j++) n_pairs += (t->arena[t->piece_off[i] + j] & 0xC0) != 0x80;
    if (n_pairs > 0) {
        uint32_t pcap = table_size(n_pairs);
        t->pairs = malloc(pcap * sizeof(kf_tok_pair));
        if (!t->pairs) {
            st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", name);
            goto fail;
        }
        t->pair_mask = pcap - 1;
        for (uint32_t i = 0; i < pcap; i++) t->pairs[i] = (kf_tok_pair){0, 0, -1};
        if (a->n_merges > 0 && !(t->merges = malloc((size_t)a->n_merges * 2 * sizeof(int32_t)))) {
            st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", name);
            goto fail;
        }
        if (a->n_merges > 0) st = build_rank_merges(t, a, name, err);
        else if (a->scores) st = build_score_merges(t, err);
        if (st != KF_OK) goto fail;
    }

    uint32_t map[256];
    bytes_to_unicode(map);
    for (int b = 0; b < 256; b++) {
        char s[8];
        size_t k;
        if (a->kind == KF_TOK_SPM) {
            static const char hex[] = "0123456789ABCDEF";
            memcpy(s, "<0x", 3);
            s[3] = hex[b >> 4];
            s[4] = hex[b & 15];
            s[5] = '>';
            k = 6;
        } else {
            k = utf8_encode(map[b], s);
        }
        t->byte_id[b] = kf_tok_lookup(t, s, k);
        // SPM byte fallback only through pieces typed as bytes
        if (a->kind == KF_TOK_SPM && t->byte_id[b] >= 0 && t->types[t->byte_id[b]] != KF_PIECE_BYTE) t->byte_id[b] = -1;
        if (a->kind == KF_TOK_BYTELEVEL && t->byte_id[b] < 0) {
            st = kf_error_set(err, KF_ERR_FORMAT, "%s: byte-level vocabulary lacks the piece for byte 0x%02X", name, b);
            goto fail;
        }
    }
    t->space_id = kf_tok_lookup(t, SPM_SPACE, 3);
    for (int c = 0; c < 128; c++) {
        char ch = (char)c;
        t->ascii_id[c] = kf_tok_lookup(t, &ch, 1);
    }
    if ((st = build_decoded(t, name, err)) != KF_OK) goto fail;
    // Cutting the text before a "▁" that follows another character is safe
    // when no piece contains such a "▁" (SentencePiece's split_by_whitespace):
    // then no merge can span the cut.
    t->spm_cut_at_space = true;
    for (int i = 0; i < n && t->spm_cut_at_space; i++) {
        const char *p = t->arena + t->piece_off[i];
        for (const char *q = strstr(p, SPM_SPACE); q && t->spm_cut_at_space; q = strstr(q + 3, SPM_SPACE))
            if (q > p && !(q - p >= 3 && memcmp(q - 3, SPM_SPACE, 3) == 0)) t->spm_cut_at_space = false;
    }

    bool spm = a->kind == KF_TOK_SPM;
    t->bos = find_special(t, a->bos, spm ? "<s>" : "<|endoftext|>");
    t->eos = find_special(t, a->eos, spm ? "</s>" : "<|endoftext|>");
    t->unk = find_special(t, a->unk, spm ? "<unk>" : "");
    t->add_bos = a->add_bos;
    *out = t;
    return KF_OK;
fail:
    kf_tokenizer_free(t);
    return st;
}

kf_status kf_tokenizer_init(kf_tokenizer **out, const kf_tokenizer_spec *spec, kf_error *err) {
    *out = NULL;
    if (!spec || spec->n_vocab <= 0 || !spec->pieces)
        return kf_error_set(err, KF_ERR_ARG, "tokenizer spec: no vocabulary");
    if (spec->kind == KF_TOK_SPM && !spec->scores)
        return kf_error_set(err, KF_ERR_ARG, "tokenizer spec: SentencePiece vocabulary without scores");
    if (spec->kind == KF_TOK_BYTELEVEL && spec->n_merges > 0 && !spec->merges)
        return kf_error_set(err, KF_ERR_ARG, "tokenizer spec: n_merges > 0 without merges");
    kf_tok_build_args a = {
        .kind = spec->kind, .n_vocab = spec->n_vocab, .pieces = spec->pieces, .scores = spec->scores,
        .prefix_space = spec->prefix == KF_TOK_PREFIX_DEFAULT ? spec->kind == KF_TOK_SPM : spec->prefix == KF_TOK_PREFIX_ON,
        .split_words = spec->kind == KF_TOK_SPM && spec->split_words, .use_regex = spec->kind == KF_TOK_BYTELEVEL,
        .bos = spec->bos_id < 0 ? -2 : spec->bos_id, .eos = spec->eos_id < 0 ? -2 : spec->eos_id,
        .unk = spec->unk_id < 0 ? -2 : spec->unk_id, .add_bos = spec->add_bos,
    };
    uint8_t *types = NULL;
    char **left = NULL, **right = NULL;
    char *mbuf = NULL;
    kf_status st = KF_OK;
    if (spec->types) {
        types = malloc((size_t)spec->n_vocab);
        if (!types) return kf_error_set(err, KF_ERR_NOMEM, "tokenizer spec: out of memory");
        for (int i = 0; i < spec->n_vocab; i++) types[i] = (uint8_t)(spec->types[i] >= 1 && spec->types[i] <= 6 ? spec->types[i] : 1);
        a.types = types;
    }
    if (spec->kind == KF_TOK_BYTELEVEL && spec->n_merges > 0) {
        size_t total = 0;
        for (int k = 0; k < spec->n_merges; k++) {
            if (!spec->merges[k]) {
                st = kf_error_set(err, KF_ERR_FORMAT, "tokenizer spec: merge %d is missing", k);
                goto done;
            }
            total += strlen(spec->merges[k]) + 1;
        }
        left = malloc((size_t)spec->n_merges * sizeof(char *));
        right = malloc((size_t)spec->n_merges * sizeof(char *));
        mbuf = malloc(total);
        if (!left || !right || !mbuf) {
            st = kf_error_set(err, KF_ERR_NOMEM, "tokenizer spec: out of memory");
            goto done;
        }
        char *p = mbuf;
        for (int k = 0; k < spec->n_merges; k++) {
            size_t len = strlen(spec->merges[k]);
            memcpy(p, spec->merges[k], len + 1);
            char *sp = strchr(p, ' ');
            if (!sp || sp == p || sp[1] == '\0') {
                char esc[KF_ESC_NAME];
                st = kf_error_set(err, KF_ERR_FORMAT, "tokenizer spec: merge %d (\"%s\") is not \"left right\"", k,
                                  kf_str_escape(esc, sizeof esc, spec->merges[k], KF_STR_NUL));
                goto done;
            }
            *sp = '\0';
            left[k] = p;
            right[k] = sp + 1;
            p += len + 1;
        }
        a.n_merges = spec->n_merges;
        a.merge_left = (const char *const *)left;
        a.merge_right = (const char *const *)right;
    }
    st = kf_tok_build(out, &a, "tokenizer spec", err);
done:
    free(types);
    free(left);
    free(right);
    free(mbuf);
    return st;
}

void kf_tokenizer_free(kf_tokenizer *t) {
    if (!t) return;
    free(t->arena);
    free(t->piece_off);
    free(t->piece_len);
    free(t->dec_arena);
    free(t->dec_off);
    free(t->dec_len);
    free(t->types);
    free(t->scores);
    free(t->vocab_slots);
    free(t->pairs);
    free(t->merges);
    free(t);
}

// ---------------------------------------------------------------- BPE

// Candidate: merge the symbol at pos with its right neighbour into new_id.
typedef struct {
    int32_t rank, pos, new_id;
} merge_cand;

// Symbols of the segment being merged, a doubly linked list over arrays, and
// the heap of candidate merges. One per encode call, reused for every
// segment; the arrays grow by doubling to the longest segment.
typedef struct {
    int32_t *id, *prev, *next; // id -1: merged into its left neighbour
    size_t cap;
    merge_cand *heap;
    size_t heap_n, heap_cap;
    bool oom;
} bpe_work;

static bool cand_less(merge_cand a, merge_cand b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(bpe_work *w, merge_cand c) {
    if (w->heap_n == w->heap_cap) {
        size_t cap = w->heap_cap ? 2 * w->heap_cap : 1024;
        merge_cand *h = realloc(w->heap, cap * sizeof(merge_cand));
        if (!h) {
            w->oom = true;
            return;
        }
        w->heap = h;
        w->heap_cap = cap;
    }
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(c, w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
}

static merge_cand heap_pop(bpe_work *w) {
    merge_cand top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_less(w->heap[c + 1], w->heap[c])) c++;
        if (!cand_less(w->heap[c], last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

static void push_pair(const kf_tokenizer *t, bpe_work *w, int32_t a, int32_t b) {
    if (a < 0 || b < 0) return;
    const kf_tok_pair *p = pair_find(t, w->id[a], w->id[b]);
    if (p) heap_push(w, (merge_cand){p->rank, a, p->new_id});
}

// Merges symbols lo..hi-1 until no merge applies and appends the resulting
// ids. Segments are independent: the caller cuts only where no piece spans.
static void bpe_segment(const kf_tokenizer *t, bpe_work *w, int32_t lo, int32_t hi, int32_t *ids, size_t *n_ids) {
    for (int32_t i = lo; i < hi; i++) {
        w->prev[i] = i > lo ? i - 1 : -1;
        w->next[i] = i + 1 < hi ? i + 1 : -1;
    }
    w->heap_n = 0;
    for (int32_t i = lo; i + 1 < hi; i++) push_pair(t, w, i, i + 1);
    while (w->heap_n > 0) {
        merge_cand c = heap_pop(w);
        int32_t a = c.pos, b = w->next[a];
        if (w->id[a] < 0 || b < 0) continue;
        // stale when either side has changed since the candidate was pushed
        const kf_tok_pair *p = pair_find(t, w->id[a], w->id[b]);
        if (!p || p->new_id != c.new_id) continue;
        w->id[a] = c.new_id;
        w->id[b] = -1;
        w->next[a] = w->next[b];
        if (w->next[b] >= 0) w->prev[w->next[b]] = a;
        push_pair(t, w, w->prev[a], a);
        push_pair(t, w, a, w->next[a]);
    }
    for (int32_t i = lo < hi ? lo : -1; i >= 0; i = w->next[i]) ids[(*n_ids)++] = w->id[i];
}

// Makes room for n symbols (capacity doubles, so growth is rare).
static bool work_reserve(bpe_work *w, size_t n) {
    if (n <= w->cap) return true;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < n) cap *= 2;
    int32_t *id = realloc(w->id, cap * sizeof(int32_t));
    if (id) w->id = id;
    int32_t *prev = realloc(w->prev, cap * sizeof(int32_t));
    if (prev) w->prev = prev;
    int32_t *next = realloc(w->next, cap * sizeof(int32_t));
    if (next) w->next = next;
    if (!id || !prev || !next) return false;
    w->cap = cap;
    return true;
}

static void work_free(bpe_work *w) {
    free(w->id);
    free(w->prev);
    free(w->next);
    free(w->heap);
}

// ---------------------------------------------------------------- SPM encode

// Appends the symbols of one character (bytes s[0..k)) at w->id[n..]: its
// piece, else its bytes as <0xNN> pieces, else <unk>. Returns the new count,
// or -1 when none of these exists. Room for k symbols is reserved.
static int32_t spm_add_char(const kf_tokenizer *t, bpe_work *w, int32_t n, const uint8_t *s, size_t k) {
    int32_t id = k == 1 ? t->ascii_id[s[0]] : kf_tok_lookup(t, (const char *)s, k);
    if (id >= 0) {
        w->id[n++] = id;
        return n;
    }
    bool bytes_ok = true;
    for (size_t j = 0; j < k; j++) bytes_ok = bytes_ok && t->byte_id[s[j]] >= 0;
    if (bytes_ok) {
        for (size_t j = 0; j < k; j++) w->id[n++] = t->byte_id[s[j]];
        return n;
    }
    if (t->unk < 0) return -1;
    w->id[n++] = t->unk;
    return n;
}

// The text is one sequence (SentencePiece has no pre-tokenizer). It is cut
// into segments before "▁" where the vocabulary allows (spm_cut_at_space)
// only so that the work stays small and in cache; the ids are the same as
// without cuts. Metaspace's split cuts before every "▁".
static kf_status encode_spm(const kf_tokenizer *t, const uint8_t *s, size_t len, int32_t *ids, size_t *n_ids,
                            kf_error *err) {
    static const uint8_t space[3] = {0xE2, 0x96, 0x81};
    bpe_work w;
    memset(&w, 0, sizeof(w));
    int32_t n = 0;
    bool prev_space = false;
    kf_status st = KF_OK;
    // i == -1 stands for the dummy prefix "▁"
    for (ptrdiff_t i = t->prefix_space && len > 0 ? -1 : 0; i < (ptrdiff_t)len;) {
        size_t k = i < 0 ? 0 : utf8_len(s[i]);
        bool is_space = i < 0 || s[i] == ' ' || (k == 3 && memcmp(s + i, space, 3) == 0);
        if (is_space && n > 0 && (t->split_words || (t->spm_cut_at_space && !prev_space))) {
            bpe_segment(t, &w, 0, n, ids, n_ids);
            n = 0;
        }
        if (!work_reserve(&w, (size_t)n + 4) || w.oom) {
            st = kf_error_set(err, KF_ERR_NOMEM, "tokenizer: out of memory");
            break;
        }
        if (is_space && t->space_id >= 0) w.id[n++] = t->space_id;
        else n = is_space ? spm_add_char(t, &w, n, space, 3) : spm_add_char(t, &w, n, s + i, k);
        if (n < 0) {
            st = kf_error_set(err, KF_ERR_FORMAT, "tokenizer: the character at byte %zd is neither in the vocabulary "
                                                  "nor encodable as bytes, and there is no <unk>", i);
            break;
        }
        prev_space = is_space;
        i += i < 0 ? 1 : (ptrdiff_t)k;
    }
    if (st == KF_OK && n > 0) bpe_segment(t, &w, 0, n, ids, n_ids);
    if (st == KF_OK && w.oom) st = kf_error_set(err, KF_ERR_NOMEM, "tokenizer: out of memory in merges");
    work_free(&w);
    return st;
}

// ---------------------------------------------------------------- byte-level encode

enum { CLS_L, CLS_N, CLS_S, CLS_O };

static int char_class(uint32_t cp) {
    if (kf_unicode_is_letter(cp)) return CLS_L;
    if (kf_unicode_is_number(cp)) return CLS_N;
    if (kf_unicode_is_space(cp)) return CLS_S;
    return CLS_O;
}

static size_t run_end(const uint8_t *s, size_t len, size_t i, int cls) {
    while (i < len) {
        size_t k;
        if (char_class(utf8_decode(s, i, &k)) != cls) break;
        i += k;
    }
    return i;
}

// End of the GPT-2 pre-token starting at i, per the pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (alternatives tried in order, as a backtracking regex engine does).
static size_t gpt2_token_end(const uint8_t *s, size_t len, size_t i) {
    if (s[i] == '\'' && i + 1 < len) {
        uint8_t a = s[i + 1];
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if (i + 2 < len) {
            uint8_t b = s[i + 2];
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
        }
    }
    size_t k;
    int c0 = char_class(utf8_decode(s, i, &k));
    if (c0 != CLS_S) return run_end(s, len, i, c0);
    if (s[i] == ' ' && i + 1 < len) {
        int c1 = char_class(utf8_decode(s, i + 1, &k));
        if (c1 != CLS_S) return run_end(s, len, i + 1, c1);
    }
    size_t j = i, last = i;
    while (j < len) {
        if (char_class(utf8_decode(s, j, &k)) != CLS_S) break;
        last = j;
        j += k;
    }
    if (j == len) return j;
    return last > i ? last : j; // \s+(?!\S) leaves the last space to the next token
}

static kf_status encode_bytelevel(const kf_tokenizer *t, const uint8_t *s, size_t len, int32_t *ids, size_t *n_ids,
                                  kf_error *err) {
    bpe_work w;
    memset(&w, 0, sizeof(w));
    kf_status st = KF_OK;
    for (size_t i = 0; i < len && st == KF_OK;) {
        size_t e = t->use_regex ? gpt2_token_end(s, len, i) : len;
        int32_t n = (int32_t)(e - i);
        if (!work_reserve(&w, (size_t)n)) {
            st = kf_error_set(err, KF_ERR_NOMEM, "tokenizer: out of memory");
            break;
        }
        for (int32_t j = 0; j < n; j++) w.id[j] = t->byte_id[s[i + (size_t)j]];
        bpe_segment(t, &w, 0, n, ids, n_ids);
        if (w.oom) st = kf_error_set(err, KF_ERR_NOMEM, "tokenizer: out of memory in merges");
        i = e;
    }
    work_free(&w);
    return st;
}

// ---------------------------------------------------------------- public API

kf_status kf_tokenizer_encode(const kf_tokenizer *t, const char *text, size_t len, bool add_bos, int32_t **ids,
                              size_t *n_ids, kf_error *err) {
    *ids = NULL;
    *n_ids = 0;
    if (len > 0 && !text) return kf_error_set(err, KF_ERR_ARG, "tokenizer: NULL text");
    if (len >= (size_t)INT32_MAX - 8) return kf_error_set(err, KF_ERR_ARG, "tokenizer: text of %zu bytes too long", len);
    const uint8_t *s = (const uint8_t *)text;
    size_t bad = utf8_invalid_at(s, len);
    if (bad < len) return kf_error_set(err, KF_ERR_FORMAT, "text is not valid UTF-8 at byte offset %zu", bad);
    uint8_t *prefixed = NULL;
    if (t->kind == KF_TOK_BYTELEVEL && t->prefix_space && len > 0 && s[0] != ' ') {
        prefixed = malloc(len + 1);
        if (!prefixed) return kf_error_set(err, KF_ERR_NOMEM, "tokenizer: out of memory");
        prefixed[0] = ' ';
        memcpy(prefixed + 1, s, len);
        s = prefixed;
        len++;
    }
    // at most one id per byte, plus BOS; SPM adds the dummy prefix, and where
    // the vocabulary has no "▁" every space (one byte) and the prefix become
    // the three byte-fallback ids of "▁"
    size_t cap = len + 5;
    if (t->kind == KF_TOK_SPM && t->space_id < 0) {
        size_t n_space = 0;
        for (size_t i = 0; i < len; i++) n_space += s[i] == ' ';
        cap += 2 * n_space;
    }
    int32_t *out = malloc(cap * sizeof(int32_t));
    if (!out) {
        free(prefixed);
        return kf_error_set(err, KF_ERR_NOMEM, "tokenizer: out of memory");
    }
    size_t n = 0;
    if (add_bos && t->bos >= 0) out[n++] = t->bos;
    kf_status st = t->kind == KF_TOK_SPM ? encode_spm(t, s, len, out, &n, err) : encode_bytelevel(t, s, len, out, &n, err);
    free(prefixed);
    if (st != KF_OK) {
        free(out);
        return st;
    }
    *ids = out;
    *n_ids = n;
    return KF_OK;
}

kf_status kf_tokenizer_decode(const kf_tokenizer *t, const int32_t *ids, size_t n, char **text, kf_error *err) {
    *text = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return kf_error_set(err, KF_ERR_ARG, "tokenizer: token id %d at position %zu is outside [0, %d)", ids[i],
                                i, t->n_vocab);
        total += t->dec_len[ids[i]];
    }
    char *s = malloc(total + 1);
    if (!s) return kf_error_set(err, KF_ERR_NOMEM, "tokenizer: out of memory");
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(s + o, t->dec_arena + t->dec_off[ids[i]], t->dec_len[ids[i]]);
        o += t->dec_len[ids[i]];
    }
    s[o] = '\0';
    // the SPM decoder drops the one space the dummy prefix added
    if (t->kind == KF_TOK_SPM && t->prefix_space && o > 0 && s[0] == ' ') memmove(s, s + 1, o);
    *text = s;
    return KF_OK;
}

size_t kf_tokenizer_decode_piece(const kf_tokenizer *t, int32_t prev, int32_t id, char *buf, size_t cap) {
    if (cap == 0) return 0;
    buf[0] = '\0';
    if (id < 0 || id >= t->n_vocab) return 0;
    const char *p = t->dec_arena + t->dec_off[id];
    size_t n = t->dec_len[id];
    bool first = prev < 0 || prev >= t->n_vocab || t->types[prev] == KF_PIECE_CONTROL;
    if (t->kind == KF_TOK_SPM && t->prefix_space && first && n > 0 && p[0] == ' ') {
        p++;
        n--;
    }
    if (n > cap - 1) n = cap - 1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return n;
}

int kf_tokenizer_n_vocab(const kf_tokenizer *t) { return t->n_vocab; }
int kf_tokenizer_bos(const kf_tokenizer *t) { return t->bos; }
int kf_tokenizer_eos(const kf_tokenizer *t) { return t->eos; }
bool kf_tokenizer_add_bos(const kf_tokenizer *t) { return t->add_bos; }
bool kf_tokenizer_prefix_space(const kf_tokenizer *t) { return t->prefix_space; }
kf_tok_kind kf_tokenizer_kind(const kf_tokenizer *t) { return t->kind; }
bool kf_tokenizer_split_words(const kf_tokenizer *t) { return t->split_words; }

bool kf_tokenizer_split_matters(const kf_tokenizer *t) {
    if (!t->split_words) return false;
    for (int i = 0; i < t->n_vocab; i++) {
        const char *p = t->arena + t->piece_off[i];
        if (p[0] && strstr(p + 1, SPM_SPACE)) return true;
    }
    return false;
}

const char *kf_tokenizer_piece(const kf_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab ? t->arena + t->piece_off[id] : NULL;
}

kf_piece_type kf_tokenizer_piece_type(const kf_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab ? (kf_piece_type)t->types[id] : 0;
}

float kf_tokenizer_score(const kf_tokenizer *t, int32_t id) { return id >= 0 && id < t->n_vocab ? t->scores[id] : 0; }

int kf_tokenizer_n_merges(const kf_tokenizer *t) { return t->n_merges; }

bool kf_tokenizer_merge(const kf_tokenizer *t, int i, int32_t *left, int32_t *right) {
    if (i < 0 || i >= t->n_merges) return false;
    *left = t->merges[2 * i];
    *right = t->merges[2 * i + 1];
    return true;
}

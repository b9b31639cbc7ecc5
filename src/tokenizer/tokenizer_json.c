// Hugging Face tokenizer.json (BPE model) of two kinds:
// - SentencePiece-style: normalizer Sequence[Prepend "▁", Replace " " -> "▁"]
//   or the Metaspace pre-tokenizer; byte_fallback <0xNN> pieces.
// - GPT-2 byte-level: the ByteLevel pre-tokenizer.
// BOS/EOS/add_bos come from the post-processor, then tokenizer_config.json,
// then generation_config.json beside tokenizer.json.
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "tokenizer/tok_internal.h"

#define SPM_SPACE "\xE2\x96\x81"

static const char *json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool json_bool(const cJSON *o, const char *key, bool dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static bool is_type(const cJSON *o, const char *type) {
    const char *t = json_str(o, "type");
    return t && strcmp(t, type) == 0;
}

// Parses a JSON file; a missing file is not an error when optional (*root = NULL).
static kf_status parse_json_file(const char *path, bool optional, cJSON **root, kf_error *err) {
    *root = NULL;
    if (!kf_file_exists(path)) {
        if (optional) return KF_OK;
        return kf_error_set(err, KF_ERR_IO, "%s: no such file", path);
    }
    char *buf;
    size_t len;
    kf_status st = kf_file_read_all(path, &buf, &len, err);
    if (st != KF_OK) return st;
    const char *end = NULL;
    *root = cJSON_ParseWithLengthOpts(buf, len, &end, false);
    if (!*root) {
        size_t at = end && end >= buf && end <= buf + len ? (size_t)(end - buf) : 0;
        free(buf);
        return kf_error_set(err, KF_ERR_FORMAT, "%s: malformed JSON near byte %zu", path, at);
    }
    free(buf);
    if (!cJSON_IsObject(*root)) {
        cJSON_Delete(*root);
        *root = NULL;
        return kf_error_set(err, KF_ERR_FORMAT, "%s: top level is not a JSON object", path);
    }
    return KF_OK;
}

// The component of the given type: node itself, or a member of its
// Sequence list (list_key: "normalizers" / "pretokenizers").
static const cJSON *find_component(const cJSON *node, const char *type, const char *list_key) {
    if (!cJSON_IsObject(node)) return NULL;
    if (is_type(node, type)) return node;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(node, list_key);
    const cJSON *c;
    cJSON_ArrayForEach(c, list) if (is_type(c, type)) return c;
    return NULL;
}

// Checks that every component of a normalizer is one of the accepted types.
static bool only_components(const cJSON *node, const char *list_key, const char *const *ok, int n_ok) {
    if (!node || cJSON_IsNull(node)) return true;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(node, list_key);
    const cJSON *one[1] = {node};
    int n = list ? cJSON_GetArraySize(list) : 1;
    for (int i = 0; i < n; i++) {
        const cJSON *c = list ? cJSON_GetArrayItem(list, i) : one[0];
        bool found = false;
        for (int k = 0; k < n_ok; k++) found = found || is_type(c, ok[k]);
        if (!found) return false;
    }
    return true;
}

typedef struct {
    kf_tok_kind kind;
    bool prefix_space, split_words, use_regex;
} hf_kind;

static kf_status detect_kind(const cJSON *root, const char *path, hf_kind *k, kf_error *err) {
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *bl = find_component(pre, "ByteLevel", "pretokenizers");
    if (bl) {
        static const char *const pre_ok[] = {"ByteLevel"};
        if (!only_components(pre, "pretokenizers", pre_ok, 1) || (norm && !cJSON_IsNull(norm)))
            return kf_error_set(err, KF_ERR_UNSUPPORTED,
                                "%s: byte-level tokenizer with a normalizer or extra pre-tokenizers is not supported",
                                path);
        *k = (hf_kind){KF_TOK_BYTELEVEL, json_bool(bl, "add_prefix_space", true), false, json_bool(bl, "use_regex", true)};
        return KF_OK;
    }
    const cJSON *meta = find_component(pre, "Metaspace", "pretokenizers");
    if (meta) {
        const char *rep = json_str(meta, "replacement");
        const char *scheme = json_str(meta, "prepend_scheme");
        static const char *const pre_ok[] = {"Metaspace"};
        if ((rep && strcmp(rep, SPM_SPACE) != 0) || !only_components(pre, "pretokenizers", pre_ok, 1) ||
            (norm && !cJSON_IsNull(norm)))
            return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: Metaspace tokenizer variant not supported", path);
        bool prefix = scheme ? strcmp(scheme, "never") != 0 : json_bool(meta, "add_prefix_space", true);
        *k = (hf_kind){KF_TOK_SPM, prefix, json_bool(meta, "split", true), false};
        return KF_OK;
    }
    char esc[KF_ESC_NAME];
    if (pre && !cJSON_IsNull(pre))
        return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: pre-tokenizer \"%s\" not supported", path,
                            kf_str_escape(esc, sizeof esc, json_str(pre, "type") ? json_str(pre, "type") : "?",
                                          KF_STR_NUL));
    const cJSON *rep = find_component(norm, "Replace", "normalizers");
    const cJSON *prep = find_component(norm, "Prepend", "normalizers");
    static const char *const norm_ok[] = {"Replace", "Prepend"};
    const char *from = rep ? json_str(cJSON_GetObjectItemCaseSensitive(rep, "pattern"), "String") : NULL;
    const char *to = rep ? json_str(rep, "content") : NULL;
    const char *pp = prep ? json_str(prep, "prepend") : NULL;
    if (rep && from && to && strcmp(from, " ") == 0 && strcmp(to, SPM_SPACE) == 0 && (!prep || (pp && strcmp(pp, SPM_SPACE) == 0)) &&
        only_components(norm, "normalizers", norm_ok, 2)) {
        *k = (hf_kind){KF_TOK_SPM, prep != NULL, false, false};
        return KF_OK;
    }
    return kf_error_set(err, KF_ERR_UNSUPPORTED,
                        "%s: neither a SentencePiece-style (\"▁\" normalizer or Metaspace) nor a byte-level BPE tokenizer",
                        path);
}

// "<s>" or {"content": "<s>", ...} -> id, or -1.
static int32_t token_ref(const kf_tokenizer *t, const cJSON *v) {
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v)) return -1;
    return kf_tok_lookup(t, v->valuestring, strlen(v->valuestring));
}

static int32_t id_ref(const kf_tokenizer *t, const cJSON *v) {
    if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= t->n_vocab) return -1;
    return (int32_t)v->valuedouble;
}

// BOS/EOS/add_bos from tokenizer_config.json and generation_config.json in dir.
static kf_status apply_configs(kf_tokenizer *t, const char *dir, kf_error *err) {
    char path[4096];
    cJSON *cfg;
    if (!kf_path_join(path, sizeof(path), dir, "tokenizer_config.json"))
        return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    kf_status st = parse_json_file(path, true, &cfg, err);
    if (st != KF_OK) return st;
    if (cfg) {
        int32_t id;
        if ((id = token_ref(t, cJSON_GetObjectItemCaseSensitive(cfg, "bos_token"))) >= 0) t->bos = id;
        if ((id = token_ref(t, cJSON_GetObjectItemCaseSensitive(cfg, "eos_token"))) >= 0) t->eos = id;
        t->add_bos = json_bool(cfg, "add_bos_token", t->add_bos);
        cJSON_Delete(cfg);
    }
    if (!kf_path_join(path, sizeof(path), dir, "generation_config.json"))
        return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    if ((st = parse_json_file(path, true, &cfg, err)) != KF_OK) return st;
    if (cfg) {
        int32_t id;
        if ((id = id_ref(t, cJSON_GetObjectItemCaseSensitive(cfg, "bos_token_id"))) >= 0) t->bos = id;
        if ((id = id_ref(t, cJSON_GetObjectItemCaseSensitive(cfg, "eos_token_id"))) >= 0) t->eos = id;
        cJSON_Delete(cfg);
    }
    return KF_OK;
}

// The post-processor's template says whether BOS is added, and which token.
static void apply_post_processor(kf_tokenizer *t, const cJSON *root) {
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    if (!is_type(pp, "TemplateProcessing")) return;
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(pp, "single"), 0);
    const cJSON *special = cJSON_GetObjectItemCaseSensitive(first, "SpecialToken");
    t->add_bos = special != NULL;
    if (!special) return;
    int32_t id = token_ref(t, cJSON_GetObjectItemCaseSensitive(special, "id"));
    if (id >= 0) t->bos = id;
}

static kf_status build_from_json(kf_tokenizer **out, const cJSON *root, const char *path, kf_error *err) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return kf_error_set(err, KF_ERR_FORMAT, "%s: no \"model\" object", path);
    const char *mtype = json_str(model, "type");
    char esc[KF_ESC_NAME];
    if (mtype && strcmp(mtype, "BPE") != 0)
        return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: model type \"%s\" not supported (only BPE)", path,
                            kf_str_escape(esc, sizeof esc, mtype, KF_STR_NUL));
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return kf_error_set(err, KF_ERR_FORMAT, "%s: model needs a \"vocab\" object and a \"merges\" array", path);
    hf_kind k = {0};
    kf_status st = detect_kind(root, path, &k, err);
    if (st != KF_OK) return st;

    // vocabulary size: one past the largest id in vocab and added_tokens
    long n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (1 << 24) || e->valuedouble != (int)e->valuedouble)
            return kf_error_set(err, KF_ERR_FORMAT, "%s: vocab entry \"%s\" has a bad id", path,
                                kf_str_escape(esc, sizeof esc, e->string, KF_STR_NUL));
        if ((long)e->valuedouble + 1 > n) n = (long)e->valuedouble + 1;
    }
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= (1 << 24) || !json_str(e, "content"))
            return kf_error_set(err, KF_ERR_FORMAT, "%s: added_tokens entry without a valid id and content", path);
        if ((long)id->valuedouble + 1 > n) n = (long)id->valuedouble + 1;
    }
    // Every id needs a piece: ids past the number of entries are refused
    // before anything is allocated for them.
    int n_entries = cJSON_GetArraySize(vocab) + cJSON_GetArraySize(added);
    if (n > n_entries)
        return kf_error_set(err, KF_ERR_FORMAT, "%s: ids run up to %ld but vocab and added_tokens hold %d entries",
                            path, n - 1, n_entries);
    int n_merges = cJSON_GetArraySize(merges);
    const char **pieces = calloc((size_t)(n > 0 ? n : 1), sizeof(char *));
    uint8_t *types = calloc((size_t)(n > 0 ? n : 1), 1);
    const char **left = calloc((size_t)n_merges + 1, sizeof(char *));
    const char **right = calloc((size_t)n_merges + 1, sizeof(char *));
    char *mbuf = NULL;
    if (!pieces || !types || !left || !right) {
        st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    cJSON_ArrayForEach(e, vocab) {
        int id = (int)e->valuedouble;
        if (pieces[id]) {
            st = kf_error_set(err, KF_ERR_FORMAT, "%s: id %d appears twice in vocab", path, id);
            goto done;
        }
        pieces[id] = e->string;
        types[id] = KF_PIECE_NORMAL;
        if (k.kind == KF_TOK_SPM && json_bool(model, "byte_fallback", false) && strlen(e->string) == 6 &&
            strncmp(e->string, "<0x", 3) == 0)
            types[id] = KF_PIECE_BYTE;
    }
    cJSON_ArrayForEach(e, added) {
        int id = (int)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble;
        pieces[id] = json_str(e, "content");
        types[id] = json_bool(e, "special", false) ? KF_PIECE_CONTROL : KF_PIECE_USER;
    }
    const char *unk = json_str(model, "unk_token");
    for (long i = 0; i < n; i++) {
        if (!pieces[i]) {
            st = kf_error_set(err, KF_ERR_FORMAT, "%s: id %ld has no piece in vocab or added_tokens", path, i);
            goto done;
        }
        if (unk && strcmp(pieces[i], unk) == 0) types[i] = KF_PIECE_UNKNOWN;
    }

    // merges: "left right" strings (split at the first space) or ["left", "right"] pairs
    size_t total = 0;
    cJSON_ArrayForEach(e, merges) if (cJSON_IsString(e)) total += strlen(e->valuestring) + 1;
    mbuf = malloc(total + 1);
    if (!mbuf) {
        st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    char *p = mbuf;
    int m = 0;
    cJSON_ArrayForEach(e, merges) {
        if (cJSON_IsString(e)) {
            size_t len = strlen(e->valuestring);
            memcpy(p, e->valuestring, len + 1);
            char *sp = strchr(p, ' ');
            if (!sp || sp == p || sp[1] == '\0') {
                st = kf_error_set(err, KF_ERR_FORMAT, "%s: merge %d (\"%s\") is not \"left right\"", path, m,
                                  kf_str_escape(esc, sizeof esc, e->valuestring, KF_STR_NUL));
                goto done;
            }
            *sp = '\0';
            left[m] = p;
            right[m] = sp + 1;
            p += len + 1;
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            left[m] = cJSON_GetArrayItem(e, 0)->valuestring;
            right[m] = cJSON_GetArrayItem(e, 1)->valuestring;
        } else {
            st = kf_error_set(err, KF_ERR_FORMAT, "%s: merge %d is neither a string nor a pair of strings", path, m);
            goto done;
        }
        m++;
    }
    kf_tok_build_args a = {
        .kind = k.kind, .n_vocab = (int)n, .pieces = pieces, .types = types, .n_merges = m,
        .merge_left = left, .merge_right = right, .prefix_space = k.prefix_space, .split_words = k.split_words,
        .use_regex = k.use_regex, .bos = -1, .eos = -1, .unk = -1, .add_bos = k.kind == KF_TOK_SPM,
    };
    st = kf_tok_build(out, &a, path, err);
    if (st == KF_OK) apply_post_processor(*out, root);
done:
    free(pieces);
    free(types);
    free(left);
    free(right);
    free(mbuf);
    return st;
}

kf_status kf_tokenizer_load_hf(kf_tokenizer **out, const char *path, kf_error *err) {
    *out = NULL;
    char json_path[4096], dir[4096];
    if (kf_dir_exists(path)) {
        if (!kf_path_join(json_path, sizeof(json_path), path, "tokenizer.json"))
            return kf_error_set(err, KF_ERR_ARG, "%s: path too long", path);
        snprintf(dir, sizeof(dir), "%s", path);
    } else {
        if ((size_t)snprintf(json_path, sizeof(json_path), "%s", path) >= sizeof(json_path))
            return kf_error_set(err, KF_ERR_ARG, "%s: path too long", path);
        const char *slash = strrchr(path, '/');
        if (slash) snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
        else snprintf(dir, sizeof(dir), ".");
        if (slash == path) snprintf(dir, sizeof(dir), "/");
    }
    cJSON *root;
    kf_status st = parse_json_file(json_path, false, &root, err);
    if (st != KF_OK) return st;
    st = build_from_json(out, root, json_path, err);
    cJSON_Delete(root);
    if (st == KF_OK && (st = apply_configs(*out, dir, err)) != KF_OK) {
        kf_tokenizer_free(*out);
        *out = NULL;
    }
    return st;
}

// Shared pieces of the harnesses (fuzz_common.h).
#define _GNU_SOURCE // memmem, nftw
#include "fuzz_common.h"

#include <ftw.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch/arch.h"
#include "core/file.h"
#include "core/rng.h"
#include "io/save.h"

void kf_fuzz_split(const uint8_t *data, size_t size, int n_parts, kf_fuzz_parts *out) {
    const size_t k = sizeof KF_FUZZ_SEP - 1;
    memset(out, 0, sizeof *out);
    const uint8_t *p = data, *end = data + size;
    for (int i = 0; i < n_parts; i++) {
        const uint8_t *q = i + 1 < n_parts ? memmem(p, (size_t)(end - p), KF_FUZZ_SEP, k) : NULL;
        out->p[i] = p;
        out->n[i] = (size_t)((q ? q : end) - p);
        if (!q) break;
        p = q + k;
    }
}

void kf_fuzz_fail(const char *what, const char *detail) {
    fprintf(stderr, "FUZZ FINDING: %s: %s\n", what, detail ? detail : "");
    abort();
}

void kf_fuzz_refused(const kf_error *err) {
    if (getenv("KF_FUZZ_VERBOSE")) fprintf(stderr, "refused: %s\n", err->msg);
}

static char g_dir[64];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    if (ftw->level > 0 || strcmp(path, g_dir) != 0) remove(path);
    return 0;
}

static void remove_dir(void) {
    if (g_dir[0]) {
        nftw(g_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
        rmdir(g_dir);
    }
}

const char *kf_fuzz_dir(void) {
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof g_dir, "/dev/shm/kffuzz-%ld-XXXXXX", (long)getpid());
        if (!mkdtemp(g_dir)) kf_fuzz_fail("mkdtemp", g_dir);
        atexit(remove_dir);
    }
    return g_dir;
}

void kf_fuzz_clean(void) { nftw(kf_fuzz_dir(), rm_entry, 8, FTW_DEPTH | FTW_PHYS); }

const char *kf_fuzz_path(const char *name) {
    static char slots[8][256];
    static int next;
    char *s = slots[next++ & 7];
    snprintf(s, sizeof slots[0], "%s/%s", kf_fuzz_dir(), name);
    return s;
}

const char *kf_fuzz_write(const char *name, const void *data, size_t n) {
    const char *path = kf_fuzz_path(name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) kf_fuzz_fail("cannot write", path);
    return path;
}

// ---- tiny models ----

static void fill(kf_model *m, kf_tensor *t, int ndim, int64_t d0, int64_t d1, kf_rng *rng) {
    int64_t ne[2] = {d0, d1};
    kf_error err = {0};
    if (kf_model_alloc_tensor(m, t, ndim, ne, &err) != KF_OK) kf_fuzz_fail("tiny model", err.msg);
    for (int64_t i = 0; i < kf_tensor_nelem(t); i++) {
        t->data[i] = (float)(kf_rng_below(rng, 256) - 128) / 256.0f;
    }
}

kf_model *kf_fuzz_tiny_model(kf_fuzz_tiny kind) {
    enum { V = 16, C = 8, L = 2, H = 2, HKV = 1, DH = 4, F = 8, T = 16 };
    kf_model *m = kf_model_new();
    if (!m) kf_fuzz_fail("tiny model", "out of memory");
    bool gpt2 = kind == KF_FUZZ_GPT2;
    kf_arch_set_traits(m, gpt2 ? KF_ARCH_GPT2 : KF_ARCH_LLAMA);
    m->n_vocab = V;
    m->n_embd = C;
    m->n_layer = L;
    m->n_head = H;
    m->n_head_kv = gpt2 ? H : HKV;
    m->head_dim = DH;
    m->n_ctx_train = T;
    m->norm_eps = 1e-5f;
    m->rope_theta = 10000.0f;
    m->bos_id = 1;
    m->eos_id = 2;
    m->layers = calloc(L, sizeof *m->layers);
    if (!m->layers) kf_fuzz_fail("tiny model", "out of memory");
    kf_rng rng;
    kf_rng_seed(&rng, 12345u + (uint64_t)kind);
    const int64_t KV = (int64_t)m->n_head_kv * DH;
    fill(m, &m->tok_embd, 2, V, C, &rng);
    if (gpt2) fill(m, &m->pos_embd, 2, T, C, &rng);
    fill(m, &m->out_norm_w, 1, C, 1, &rng);
    if (gpt2) fill(m, &m->out_norm_b, 1, C, 1, &rng);
    for (int l = 0; l < L; l++) {
        kf_layer *y = &m->layers[l];
        y->n_ff = F;
        fill(m, &y->attn_norm_w, 1, C, 1, &rng);
        fill(m, &y->wq, 2, H * DH, C, &rng);
        fill(m, &y->wk, 2, KV, C, &rng);
        fill(m, &y->wv, 2, KV, C, &rng);
        fill(m, &y->wo, 2, C, H * DH, &rng);
        fill(m, &y->ffn_norm_w, 1, C, 1, &rng);
        if (!gpt2) fill(m, &y->w_gate, 2, F, C, &rng);
        fill(m, &y->w_up, 2, F, C, &rng);
        fill(m, &y->w_down, 2, C, F, &rng);
        if (gpt2) {
            fill(m, &y->attn_norm_b, 1, C, 1, &rng);
            fill(m, &y->bq, 1, H * DH, 1, &rng);
            fill(m, &y->bk, 1, KV, 1, &rng);
            fill(m, &y->bv, 1, KV, 1, &rng);
            fill(m, &y->bo, 1, C, 1, &rng);
            fill(m, &y->ffn_norm_b, 1, C, 1, &rng);
            fill(m, &y->b_up, 1, F, 1, &rng);
            fill(m, &y->b_down, 1, C, 1, &rng);
        }
        if (kind == KF_FUZZ_LLAMA_MOE) {
            y->n_expert = 2;
            y->router = KF_ROUTER_LINEAR;
            y->top_k = 1;
            y->coverage = 0.5f;
            fill(m, &y->router_w, 2, 2, C, &rng);
            fill(m, &y->router_b, 1, 2, 1, &rng);
        }
    }
    if (gpt2) {
        m->lm_head = m->tok_embd;
        m->tied_head = true;
    } else {
        fill(m, &m->lm_head, 2, V, C, &rng);
    }
    kf_error err = {0};
    if (kf_model_validate(m, "tiny model", &err) != KF_OK) kf_fuzz_fail("tiny model", err.msg);
    return m;
}

kf_tokenizer *kf_fuzz_tiny_tokenizer(void) {
    static const char *const pieces[16] = {"<unk>", "<s>", "</s>", "<0x0A>", "\xE2\x96\x81", "a", "b", "c",
                                           "\xE2\x96\x81" "a", "ab", "bc", "abc", "\xE2\x96\x81" "ab", "d", "e", ".."};
    float scores[16];
    int32_t types[16];
    for (int i = 0; i < 16; i++) {
        scores[i] = -(float)i;
        types[i] = i == 0 ? KF_PIECE_UNKNOWN : i < 3 ? KF_PIECE_CONTROL : i == 3 ? KF_PIECE_BYTE : KF_PIECE_NORMAL;
    }
    kf_tokenizer_spec spec = {.kind = KF_TOK_SPM, .n_vocab = 16, .pieces = pieces, .scores = scores,
                              .types = types, .bos_id = 1, .eos_id = 2, .unk_id = 0, .add_bos = true};
    kf_tokenizer *tok;
    kf_error err = {0};
    if (kf_tokenizer_init(&tok, &spec, &err) != KF_OK) kf_fuzz_fail("tiny tokenizer", err.msg);
    return tok;
}

// ---- round trip ----

// A writer's result: KF_OK (then the output must load), or a refusal.
static bool written(kf_status s, const char *what, const kf_error *err) {
    if (s == KF_ERR_INTERNAL || s == KF_ERR_IO) kf_fuzz_fail(what, err->msg);
    return s == KF_OK;
}

// Same dense shape: what a format without the MoE fields (llama2.c) keeps.
static bool same_shape(const kf_model *a, const kf_model *b) {
    bool same = a->arch == b->arch && a->norm == b->norm && a->act == b->act && a->pos == b->pos &&
                a->gated_ffn == b->gated_ffn && a->n_vocab == b->n_vocab && a->n_embd == b->n_embd &&
                a->n_layer == b->n_layer && a->n_head == b->n_head && a->n_head_kv == b->n_head_kv &&
                a->head_dim == b->head_dim && a->n_ctx_train == b->n_ctx_train;
    for (int l = 0; l < a->n_layer && same; l++) same = a->layers[l].n_ff == b->layers[l].n_ff;
    return same;
}

static const kf_tensor *find_tensor(const kf_named_tensor *ts, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(ts[i].name, name)) return ts[i].t;
    return NULL;
}

static bool all_zero(const kf_tensor *t) {
    for (int64_t k = 0; k < kf_tensor_nelem(t); k++)
        if (t->data[k] != 0.0f) return false;
    return true;
}

static bool same_bits(const kf_tensor *a, const kf_tensor *b) {
    return a->ndim == b->ndim && !memcmp(a->ne, b->ne, sizeof a->ne) &&
           !memcmp(a->data, b->data, sizeof(float) * (size_t)kf_tensor_nelem(a));
}

// Every tensor of a is in b with the same bits and the other way round; an
// absent tensor equals an all-zero one (a bias a format always stores), an
// absent head the embedding (tied).
static bool same_tensors(const kf_named_tensor *ta, int na, const kf_named_tensor *tb, int nb, char *out, size_t cap) {
    for (int i = 0; i < na; i++) {
        if (!ta[i].name[0]) continue; // not compared
        const kf_tensor *t = find_tensor(tb, nb, ta[i].name);
        if (!t && !strcmp(ta[i].name, "lm_head")) t = find_tensor(tb, nb, "tok_embd");
        if (t ? same_bits(ta[i].t, t) : all_zero(ta[i].t)) continue;
        snprintf(out, cap, "tensor %s %s", ta[i].name, t ? "differs" : "is missing");
        return false;
    }
    return true;
}

// Whether b is the model a that was written; out names the first difference.
// Formats that record everything (`exact`: GGUF, HF) keep the norm epsilon,
// RoPE theta and the MoE fields too.
static bool same_model(const kf_model *a, const kf_model *b, bool exact, char *out, size_t cap) {
    if (!same_shape(a, b)) {
        snprintf(out, cap, "hyper-parameters or widths differ (vocab %d/%d, embd %d/%d, layers %d/%d, heads %d/%d, "
                 "kv %d/%d, ctx %d/%d)", a->n_vocab, b->n_vocab, a->n_embd, b->n_embd, a->n_layer, b->n_layer,
                 a->n_head, b->n_head, a->n_head_kv, b->n_head_kv, a->n_ctx_train, b->n_ctx_train);
        return false;
    }
    if (exact && (a->norm_eps != b->norm_eps || (a->pos == KF_POS_ROPE && a->rope_theta != b->rope_theta))) {
        snprintf(out, cap, "norm epsilon %g/%g or RoPE theta %g/%g differs", a->norm_eps, b->norm_eps, a->rope_theta,
                 b->rope_theta);
        return false;
    }
    for (int l = 0; l < a->n_layer && exact; l++) {
        const kf_layer *x = &a->layers[l], *y = &b->layers[l];
        if (x->n_expert != y->n_expert || (x->n_expert && (x->router != y->router || x->top_k != y->top_k ||
                                                           (x->top_k == 0 && x->coverage != y->coverage)))) {
            snprintf(out, cap, "layer %d: experts %d/%d, router %d/%d, top_k %d/%d or coverage %g/%g differ", l,
                     x->n_expert, y->n_expert, (int)x->router, (int)y->router, x->top_k, y->top_k, x->coverage,
                     y->coverage);
            return false;
        }
    }
    int na = kf_model_list_tensors(a, NULL, 0), nb = kf_model_list_tensors(b, NULL, 0);
    kf_named_tensor *ta = calloc((size_t)na + 1, sizeof *ta), *tb = calloc((size_t)nb + 1, sizeof *tb);
    if (!ta || !tb) kf_fuzz_fail("compare", "out of memory");
    kf_model_list_tensors(a, ta, na);
    kf_model_list_tensors(b, tb, nb);
    // A format without the MoE fields drops the routers: not compared.
    if (!exact)
        for (int i = 0; i < na; i++)
            if (strstr(ta[i].name, "router")) ta[i].name[0] = '\0';
    bool same = same_tensors(ta, na, tb, nb, out, cap) && same_tensors(tb, nb, ta, na, out, cap);
    free(ta);
    free(tb);
    return same;
}

// The written file must load, into the same model.
static void load_back(const kf_model *m, const char *path, const char *what, bool exact) {
    kf_model *b;
    kf_error err = {0};
    if (kf_model_load(&b, path, &err) != KF_OK) kf_fuzz_fail(what, err.msg);
    char diff[256];
    bool same = same_model(m, b, exact, diff, sizeof diff);
    kf_model_free(b);
    if (!same) kf_fuzz_fail(what, diff);
}

void kf_fuzz_roundtrip(const kf_model *m, const kf_tokenizer *tok) {
    kf_error err = {0};
    const char *gguf = kf_fuzz_path("roundtrip.gguf");
    kf_save_opts o = {.format = KF_FORMAT_GGUF, .tok = tok};
    if (written(kf_model_save(m, gguf, &o, &err), "GGUF write", &err)) {
        load_back(m, gguf, "GGUF written by kfuse does not load back", true);
        if (tok) {
            kf_tokenizer *t2;
            if (kf_tokenizer_load_gguf(&t2, gguf, &err) != KF_OK)
                kf_fuzz_fail("GGUF vocabulary written by kfuse does not load back", err.msg);
            bool same = kf_tokenizer_n_vocab(t2) == kf_tokenizer_n_vocab(tok);
            kf_tokenizer_free(t2);
            if (!same) kf_fuzz_fail("GGUF vocabulary written by kfuse", "read back with another size");
        }
    }
    const char *hf = kf_fuzz_path("roundtrip-hf");
    o = (kf_save_opts){.format = KF_FORMAT_HF};
    if (written(kf_model_save(m, hf, &o, &err), "HF write", &err)) load_back(m, hf, "HF folder written by kfuse does not load back", true);
    const char *l2c = kf_fuzz_path("roundtrip.bin");
    o = (kf_save_opts){.format = KF_FORMAT_LLAMA2C};
    if (written(kf_model_save(m, l2c, &o, &err), "llama2.c write", &err))
        load_back(m, l2c, "llama2.c checkpoint written by kfuse does not load back", false);
}

void kf_fuzz_encode_decode(const kf_tokenizer *tok, const uint8_t *text, size_t n) {
    kf_error err = {0};
    for (int bos = 0; bos < 2; bos++) {
        int32_t *ids = NULL;
        size_t n_ids = 0;
        kf_status s = kf_tokenizer_encode(tok, (const char *)text, n, bos, &ids, &n_ids, &err);
        if (s != KF_OK && s != KF_ERR_FORMAT) kf_fuzz_fail("encode", err.msg);
        if (s != KF_OK) return;
        for (size_t i = 0; i < n_ids; i++)
            if (ids[i] < 0 || ids[i] >= kf_tokenizer_n_vocab(tok)) kf_fuzz_fail("encode", "id out of the vocabulary");
        char *out = NULL;
        if (kf_tokenizer_decode(tok, ids, n_ids, &out, &err) != KF_OK) kf_fuzz_fail("decode", err.msg);
        char piece[256];
        for (size_t i = 0; i < n_ids; i++) kf_tokenizer_decode_piece(tok, i ? ids[i - 1] : -1, ids[i], piece, sizeof piece);
        free(out);
        free(ids);
    }
}

// ---- HF folders ----

static const char *const HF_FILES[3] = {"config.json", "model.safetensors", "moe_router.safetensors"};

const char *kf_fuzz_write_hf(const char *name, const void *const data[3], const size_t n[3]) {
    const char *dir = kf_fuzz_path(name);
    if (mkdir(dir, 0700) != 0 && !kf_dir_exists(dir)) kf_fuzz_fail("mkdir", dir);
    for (int i = 0; i < 3; i++) {
        if (!data[i]) continue;
        char file[512];
        snprintf(file, sizeof file, "%s/%s", name, HF_FILES[i]);
        kf_fuzz_write(file, data[i], n[i]);
    }
    return dir;
}

void kf_fuzz_tiny_hf(kf_fuzz_tiny kind, kf_fuzz_files *out) {
    memset(out, 0, sizeof *out);
    kf_model *m = kf_fuzz_tiny_model(kind);
    const char *dir = kf_fuzz_path("tiny-hf");
    kf_error err = {0};
    kf_save_opts o = {.format = KF_FORMAT_HF};
    if (kf_model_save(m, dir, &o, &err) != KF_OK) kf_fuzz_fail("tiny HF folder", err.msg);
    kf_model_free(m);
    for (int i = 0; i < 3; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, HF_FILES[i]);
        if (!kf_file_exists(path)) continue;
        if (kf_file_read_all(path, &out->data[i], &out->n[i], &err) != KF_OK) kf_fuzz_fail("tiny HF folder", err.msg);
    }
    kf_fuzz_clean();
}

void kf_fuzz_files_free(kf_fuzz_files *f) {
    for (int i = 0; i < 3; i++) free(f->data[i]);
    memset(f, 0, sizeof *f);
}

void kf_fuzz_tokenizer_roundtrip(const kf_tokenizer *tok) {
    kf_model *m = kf_fuzz_tiny_model(KF_FUZZ_LLAMA);
    // Only the vocabulary matters: a (V, C) embedding and head of zeros.
    int V = kf_tokenizer_n_vocab(tok);
    kf_error err = {0};
    m->n_vocab = V;
    if (kf_model_alloc_tensor(m, &m->tok_embd, 2, (int64_t[]){V, m->n_embd}, &err) != KF_OK ||
        kf_model_alloc_tensor(m, &m->lm_head, 2, (int64_t[]){V, m->n_embd}, &err) != KF_OK)
        kf_fuzz_fail("tokenizer round trip", err.msg);
    const char *path = kf_fuzz_path("vocab.gguf");
    kf_save_opts o = {.format = KF_FORMAT_GGUF, .tok = tok};
    if (written(kf_model_save(m, path, &o, &err), "GGUF write of a vocabulary", &err)) {
        kf_tokenizer *b;
        if (kf_tokenizer_load_gguf(&b, path, &err) != KF_OK)
            kf_fuzz_fail("GGUF vocabulary written by kfuse does not load back", err.msg);
        bool same = kf_tokenizer_n_vocab(b) == V && kf_tokenizer_kind(b) == kf_tokenizer_kind(tok) &&
                    kf_tokenizer_bos(b) == kf_tokenizer_bos(tok) && kf_tokenizer_eos(b) == kf_tokenizer_eos(tok);
        for (int i = 0; i < V && same; i++)
            same = !strcmp(kf_tokenizer_piece(b, i), kf_tokenizer_piece(tok, i)) &&
                   kf_tokenizer_piece_type(b, i) == kf_tokenizer_piece_type(tok, i);
        kf_tokenizer_free(b);
        if (!same) kf_fuzz_fail("GGUF vocabulary written by kfuse", "reads back different");
    }
    kf_model_free(m);
}

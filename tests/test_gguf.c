// GGUF: models written and read back (Llama, GQA BF16, GPT-2, per-layer FFN
// widths, F16/BF16/Q8_0 storage) equal the originals tensor by tensor and
// reproduce the PyTorch logits; the file layout follows llama.cpp (RoPE rows
// interleaved, fused GPT-2 QKV, INT32 per-layer widths); Q8_0 decoding matches
// a hand-built block; malformed files fail with one line naming the file.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "io/save.h"
#include "io/load.h"
#include "formats/gguf.h"
#include "test_gguf_util.h"

#define LOGITS_TOL 1e-4

// ---- an independent byte builder for hand-made GGUF files ----

typedef struct {
    uint8_t b[4096];
    size_t n;
} bytes;

static void put(bytes *b, const void *p, size_t n) {
    assert_true(b->n + n <= sizeof b->b);
    memcpy(b->b + b->n, p, n);
    b->n += n;
}
static void put_u32(bytes *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(bytes *b, uint64_t v) { put(b, &v, 8); }
static void put_str(bytes *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void put_header(bytes *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    put(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}
static void put_kv_str(bytes *b, const char *key, const char *v) {
    put_str(b, key);
    put_u32(b, KF_GGUF_STRING);
    put_str(b, v);
}
static void put_kv_u32(bytes *b, const char *key, uint32_t v) {
    put_str(b, key);
    put_u32(b, KF_GGUF_UINT32);
    put_u32(b, v);
}
// A tensor info with GGUF (innermost-first) dims.
static void put_tensor(bytes *b, const char *name, uint32_t nd, const uint64_t *dims, uint32_t type, uint64_t off) {
    put_str(b, name);
    put_u32(b, nd);
    for (uint32_t i = 0; i < nd; i++) put_u64(b, dims[i]);
    put_u32(b, type);
    put_u64(b, off);
}
static void put_pad(bytes *b) {
    while (b->n % 32) b->b[b->n++] = 0;
}
static void put_zeros(bytes *b, size_t n) {
    for (size_t i = 0; i < n; i++) b->b[b->n++] = 0;
}

static kf_model *load_hf(const char *rel) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", kf_test_root(), rel);
    kf_model *m;
    kf_error err = {0};
    ASSERT_OK(kf_model_load_hf(&m, dir, &err));
    return m;
}

// The file's rows of `name` are the model's rows in llama.cpp's interleaved
// order: file row h*D + 2i + j is rotate-half row h*D + j*D/2 + i.
static void assert_interleaved_in_file(const kf_gguf *g, const char *name, const kf_tensor *t, int heads) {
    const kf_gguf_tensor *ft = kf_gguf_find_tensor(g, name);
    assert_non_null(ft);
    assert_int_equal(ft->dtype, KF_DTYPE_F32);
    int64_t rows = t->ne[0], cols = t->ndim == 2 ? t->ne[1] : 1, D = rows / heads;
    assert_int_equal(ft->dims[0], cols == 1 && t->ndim == 1 ? rows : cols); // innermost first
    for (int64_t h = 0; h < heads; h++)
        for (int64_t i = 0; i < D / 2; i++)
            for (int64_t j = 0; j < 2; j++)
                assert_memory_equal(ft->data + 4 * (h * D + 2 * i + j) * cols, t->data + (h * D + j * D / 2 + i) * cols,
                                    4 * (size_t)cols);
}

// The F32 Q/K weights of each layer as stored in the file.
static void file_qk(const kf_gguf *f, int n_layer, const float **wq, const float **wk) {
    char name[64];
    for (int l = 0; l < n_layer; l++) {
        snprintf(name, sizeof name, "blk.%d.attn_q.weight", l);
        wq[l] = (const float *)kf_gguf_find_tensor(f, name)->data;
        snprintf(name, sizeof name, "blk.%d.attn_k.weight", l);
        wk[l] = (const float *)kf_gguf_find_tensor(f, name)->data;
    }
}

static void test_llama_1_4m_roundtrip(void **state) {
    (void)state;
    kf_error err = {0};
    kf_model *m = load_hf("models/llama-gutenberg-1.4m"), *g;
    char path[256];
    tmp_file(path, "llama14.gguf");
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF, .tok = NULL}, &err));
    ASSERT_OK(kf_model_load_gguf(&g, path, &err));
    assert_string_equal(g->format, "gguf");
    assert_models_equal(m, g, 0);
    assert_float_equal(g->rope_theta, m->rope_theta, 0);
    assert_true(g->tied_head); // no output.weight written: llama.cpp ties it
    assert_ptr_equal(g->lm_head.data, g->tok_embd.data);
    double d = fixture_logits_diff(g, "llama-gutenberg-1.4m");
    if (d > LOGITS_TOL) fail_msg("logits differ from PyTorch by %g", d);

    kf_gguf *f;
    ASSERT_OK(kf_gguf_open(&f, path, &err));
    assert_null(kf_gguf_find_tensor(f, "output.weight"));
    const kf_gguf_tensor *emb = kf_gguf_find_tensor(f, "token_embd.weight");
    assert_int_equal(emb->dims[0], 128); // innermost first: [C, V]
    assert_int_equal(emb->dims[1], 4096);
    assert_interleaved_in_file(f, "blk.0.attn_q.weight", &m->layers[0].wq, m->n_head);
    assert_interleaved_in_file(f, "blk.3.attn_k.weight", &m->layers[3].wk, m->n_head_kv);
    // llama.cpp's RoPE on the file's own Q/K rows gives PyTorch's logits; the
    // same pass on rotate-half rows does not (the check can fail).
    const float *wq[4], *wk[4], *wq_hf[4], *wk_hf[4];
    file_qk(f, 4, wq, wk);
    for (int l = 0; l < 4; l++) wq_hf[l] = m->layers[l].wq.data, wk_hf[l] = m->layers[l].wk.data;
    d = ref_interleaved_logits_diff(g, wq, wk, "llama-gutenberg-1.4m");
    if (d > LOGITS_TOL) fail_msg("interleaved reference on the file differs from PyTorch by %g", d);
    assert_true(ref_interleaved_logits_diff(g, wq_hf, wk_hf, "llama-gutenberg-1.4m") > 1e-2);
    int64_t v;
    ASSERT_OK(kf_gguf_get_int(f, "llama.feed_forward_length", true, &v, &err));
    assert_int_equal(v, 384);
    ASSERT_OK(kf_gguf_get_int(f, "general.alignment", true, &v, &err));
    assert_int_equal(v, 32);
    kf_gguf_close(f);
    kf_model_free(g);
    kf_model_free(m);
    remove(path);
}

static void test_gqa_bf16_roundtrip(void **state) {
    (void)state;
    kf_error err = {0};
    kf_model *m = load_hf("tests/fixtures/models/llama-gqa-bf16"), *g;
    char path[256];
    tmp_file(path, "gqa.gguf");
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF, .tok = NULL}, &err));
    ASSERT_OK(kf_model_load_gguf(&g, path, &err));
    assert_models_equal(m, g, 0);
    assert_false(g->tied_head);
    assert_float_equal(g->rope_theta, 500000.0f, 0);
    double d = fixture_logits_diff(g, "llama-gqa-bf16");
    if (d > LOGITS_TOL) fail_msg("logits differ from PyTorch by %g", d);
    kf_gguf *f;
    ASSERT_OK(kf_gguf_open(&f, path, &err));
    assert_interleaved_in_file(f, "blk.1.attn_k.weight", &m->layers[1].wk, m->n_head_kv);
    assert_interleaved_in_file(f, "blk.1.attn_q.weight", &m->layers[1].wq, m->n_head);
    const float *wq[2], *wk[2];
    file_qk(f, 2, wq, wk);
    d = ref_interleaved_logits_diff(g, wq, wk, "llama-gqa-bf16");
    if (d > LOGITS_TOL) fail_msg("interleaved reference on the file differs from PyTorch by %g", d);
    kf_gguf_close(f);
    kf_model_free(g);

    // The weights are BF16 values: storing them as BF16 is lossless.
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF, .tok = NULL, .dtype = KF_DTYPE_BF16}, &err));
    ASSERT_OK(kf_model_load_gguf(&g, path, &err));
    assert_int_equal(g->layers[0].wq.src_dtype, KF_DTYPE_BF16);
    assert_int_equal(g->out_norm_w.src_dtype, KF_DTYPE_F32); // norms stay F32
    assert_models_equal(m, g, 0);
    kf_model_free(g);

    // F16 keeps 11 significant bits: relative error at most 2^-11 (these
    // weights are far from F16's subnormal range).
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF, .tok = NULL, .dtype = KF_DTYPE_F16}, &err));
    ASSERT_OK(kf_model_load_gguf(&g, path, &err));
    assert_int_equal(g->layers[1].w_down.src_dtype, KF_DTYPE_F16);
    assert_models_equal(m, g, 1.0f / 2048);
    kf_model_free(g);
    kf_model_free(m);
    remove(path);
}

static void test_gpt2_roundtrip(void **state) {
    (void)state;
    kf_error err = {0};
    kf_model *m = load_hf("tests/fixtures/models/gpt2-tiny"), *g;
    char path[256];
    tmp_file(path, "gpt2.gguf");
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF, .tok = NULL}, &err));
    kf_gguf *f;
    ASSERT_OK(kf_gguf_open(&f, path, &err));
    char *arch;
    ASSERT_OK(kf_gguf_get_str(f, "general.architecture", true, &arch, &err));
    assert_string_equal(arch, "gpt2");
    free(arch);
    // llama.cpp's layout: fused QKV (C, 3C) innermost first, output stored.
    const kf_gguf_tensor *qkv = kf_gguf_find_tensor(f, "blk.1.attn_qkv.weight");
    assert_non_null(qkv);
    assert_int_equal(qkv->dims[0], 32);
    assert_int_equal(qkv->dims[1], 96);
    assert_memory_equal(qkv->data + 4 * 32 * 32, m->layers[1].wk.data, 4 * 32 * 32);
    assert_non_null(kf_gguf_find_tensor(f, "blk.0.attn_qkv.bias"));
    assert_null(kf_gguf_find_tensor(f, "blk.0.attn_q.weight"));
    assert_non_null(kf_gguf_find_tensor(f, "output.weight"));
    assert_non_null(kf_gguf_find_tensor(f, "position_embd.weight"));
    kf_gguf_close(f);
    ASSERT_OK(kf_model_load_gguf(&g, path, &err));
    assert_models_equal(m, g, 0);
    assert_true(g->tied_head); // the stored copy is recognised as the tied head
    double d = fixture_logits_diff(g, "gpt2-tiny");
    if (d > LOGITS_TOL) fail_msg("logits differ from PyTorch by %g", d);
    kf_model_free(g);
    kf_model_free(m);
    remove(path);
}

static void test_per_layer_ffn(void **state) {
    (void)state;
    kf_error err = {0};
    int n_ff[3] = {16, 48, 32};
    kf_model *m = make_llama(3, n_ff, true), *g;
    char path[256];
    tmp_file(path, "ffn.gguf");
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF, .tok = NULL}, &err));
    kf_gguf *f;
    ASSERT_OK(kf_gguf_open(&f, path, &err));
    const kf_gguf_kv *kv = kf_gguf_find_kv(f, "deci.feed_forward_length"); // per-layer widths: llama.cpp's deci
    assert_non_null(kv);
    assert_int_equal(kv->type, KF_GGUF_ARRAY);
    assert_int_equal(kv->arr_type, KF_GGUF_INT32);
    int64_t *w, n;
    ASSERT_OK(kf_gguf_get_int_array(f, "deci.feed_forward_length", &w, &n, &err));
    assert_int_equal(n, 3);
    for (int l = 0; l < 3; l++) assert_int_equal(w[l], n_ff[l]);
    free(w);
    assert_interleaved_in_file(f, "blk.2.attn_q.bias", &m->layers[2].bq, m->n_head);
    assert_interleaved_in_file(f, "blk.2.attn_k.bias", &m->layers[2].bk, m->n_head_kv);
    kf_gguf_close(f);
    ASSERT_OK(kf_model_load_gguf(&g, path, &err));
    assert_models_equal(m, g, 0);
    assert_float_equal(g->rope_theta, 20000.0f, 0);
    assert_false(g->tied_head);
    kf_model_free(g);
    kf_model_free(m);
    remove(path);
}

// A `qwen2` GGUF (as llama.cpp writes Qwen2: same tensor names, Q/K rows
// kept in rotate-half order) loads into the same model.
static void test_qwen2_arch(void **state) {
    (void)state;
    kf_error err = {0};
    int n_ff[2] = {24, 40};
    kf_model *m = make_llama(2, n_ff, true), *g;
    kf_gguf_writer *w;
    ASSERT_OK(kf_gguf_writer_init(&w, &err));
    kf_gguf_writer_add_str(w, "general.architecture", "qwen2");
    kf_gguf_writer_add_u32(w, "qwen2.block_count", 2);
    kf_gguf_writer_add_u32(w, "qwen2.context_length", 16);
    kf_gguf_writer_add_u32(w, "qwen2.embedding_length", 32);
    kf_gguf_writer_add_i32_array(w, "qwen2.feed_forward_length", (int32_t[]){24, 40}, 2);
    kf_gguf_writer_add_u32(w, "qwen2.attention.head_count", 4);
    kf_gguf_writer_add_u32(w, "qwen2.attention.head_count_kv", 2);
    kf_gguf_writer_add_f32(w, "qwen2.attention.layer_norm_rms_epsilon", 1e-6f);
    kf_gguf_writer_add_f32(w, "qwen2.rope.freq_base", 20000.0f);
#define ADD(name, t) kf_gguf_writer_add_tensor(w, name, (t)->ndim, (t)->ne, (t)->data, KF_DTYPE_F32)
    ADD("token_embd.weight", &m->tok_embd);
    ADD("output_norm.weight", &m->out_norm_w);
    ADD("output.weight", &m->lm_head);
    char name[64];
    for (int l = 0; l < 2; l++) {
        const kf_layer *L = &m->layers[l];
        const struct {
            const char *n;
            const kf_tensor *t;
        } ts[] = {
            {"attn_norm.weight", &L->attn_norm_w},
            {"attn_q.weight", &L->wq},
            {"attn_q.bias", &L->bq},
            {"attn_k.weight", &L->wk},
            {"attn_k.bias", &L->bk},
            {"attn_v.weight", &L->wv},
            {"attn_v.bias", &L->bv},
            {"attn_output.weight", &L->wo},
            {"ffn_norm.weight", &L->ffn_norm_w},
            {"ffn_gate.weight", &L->w_gate},
            {"ffn_up.weight", &L->w_up},
            {"ffn_down.weight", &L->w_down},
        };
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
            snprintf(name, sizeof name, "blk.%d.%s", l, ts[i].n);
            ADD(name, ts[i].t);
        }
    }
#undef ADD
    char path[256];
    tmp_file(path, "qwen2.gguf");
    ASSERT_OK(kf_gguf_writer_save(w, path, &err));
    kf_gguf_writer_free(w);
    ASSERT_OK(kf_model_load_gguf(&g, path, &err));
    assert_models_equal(m, g, 0);
    kf_model_free(g);

    // Mixture-of-experts is refused, not misread.
    ASSERT_OK(kf_gguf_writer_init(&w, &err));
    kf_gguf_writer_add_str(w, "general.architecture", "llama");
    kf_gguf_writer_add_u32(w, "llama.block_count", 1);
    kf_gguf_writer_add_u32(w, "llama.context_length", 16);
    kf_gguf_writer_add_u32(w, "llama.embedding_length", 32);
    kf_gguf_writer_add_u32(w, "llama.attention.head_count", 4);
    kf_gguf_writer_add_u32(w, "llama.expert_count", 8);
    kf_gguf_writer_add_tensor(w, "token_embd.weight", 2, m->tok_embd.ne, m->tok_embd.data, KF_DTYPE_F32);
    ASSERT_OK(kf_gguf_writer_save(w, path, &err));
    kf_gguf_writer_free(w);
    ASSERT_FAILS(kf_model_load_gguf(&g, path, &err), path, "mixture-of-experts");
    kf_model_free(m);
    remove(path);
}

static void test_q8_0_hand_built(void **state) {
    (void)state;
    kf_error err = {0};
    // Two blocks: scale 0.5 (f16 0x3800) with q = i - 16, and scale -1
    // (f16 0xBC00) with q = 4i - 64.
    uint8_t blocks[68];
    uint16_t d0 = 0x3800, d1 = 0xBC00;
    memcpy(blocks, &d0, 2);
    memcpy(blocks + 34, &d1, 2);
    for (int i = 0; i < 32; i++) {
        blocks[2 + i] = (uint8_t)(int8_t)(i - 16);
        blocks[36 + i] = (uint8_t)(int8_t)(4 * i - 64);
    }
    bytes b = {0};
    put_header(&b, 3, 1, 0);
    put_tensor(&b, "q", 2, (uint64_t[]){32, 2}, KF_GGML_Q8_0, 0);
    put_pad(&b);
    put(&b, blocks, sizeof blocks);
    char path[256];
    tmp_file(path, "q8.gguf");
    write_bytes(path, b.b, b.n);
    kf_gguf *f;
    ASSERT_OK(kf_gguf_open(&f, path, &err));
    const kf_gguf_tensor *t = kf_gguf_find_tensor(f, "q");
    assert_int_equal(t->dtype, KF_DTYPE_Q8_0);
    assert_int_equal(t->ne[0], 2);
    assert_int_equal(t->ne[1], 32);
    assert_int_equal(t->nbytes, 68);
    float x[64];
    kf_gguf_tensor_to_f32(t, x);
    for (int i = 0; i < 32; i++) {
        assert_float_equal(x[i], 0.5f * (float)(i - 16), 0);
        assert_float_equal(x[32 + i], -1.0f * (float)(4 * i - 64), 0);
    }
    kf_gguf_close(f);

    // The writer's Q8_0: each value within half a quantisation step of the
    // original, the step being max|x| / 127 of its block (+0.2% for the f16 scale).
    int n_ff[1] = {24};
    kf_model *m = make_llama(1, n_ff, false), *g;
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF, .tok = NULL, .dtype = KF_DTYPE_Q8_0}, &err));
    ASSERT_OK(kf_model_load_gguf(&g, path, &err));
    assert_int_equal(g->layers[0].w_up.src_dtype, KF_DTYPE_Q8_0);
    assert_int_equal(g->layers[0].w_down.src_dtype, KF_DTYPE_F16); // rows of 24: no whole Q8_0 block
    assert_int_equal(g->out_norm_w.src_dtype, KF_DTYPE_F32);
    const kf_tensor *pairs[][2] = {
        {&m->layers[0].w_up, &g->layers[0].w_up}, {&m->layers[0].wq, &g->layers[0].wq}, {&m->lm_head, &g->lm_head}};
    for (size_t p = 0; p < 3; p++) {
        const float *a = pairs[p][0]->data, *c = pairs[p][1]->data;
        for (int64_t blk = 0; blk < kf_tensor_nelem(pairs[p][0]) / 32; blk++) {
            float amax = 0;
            for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(a[blk * 32 + i]));
            for (int i = 0; i < 32; i++)
                if (!(fabsf(a[blk * 32 + i] - c[blk * 32 + i]) <= 0.5f * amax / 127 * 1.002f))
                    fail_msg("tensor %zu block %lld: %g decoded as %g", p, (long long)blk, a[blk * 32 + i],
                             c[blk * 32 + i]);
        }
    }
    kf_model_free(g);
    kf_model_free(m);
    remove(path);
}

// ---- malformed files ----

// A valid two-tensor file with `arch` as architecture; the caller patches it.
static void valid_file(bytes *b) {
    put_header(b, 3, 2, 1);
    put_kv_str(b, "general.architecture", "llama");
    put_tensor(b, "a", 1, (uint64_t[]){8}, KF_GGML_F32, 0);
    put_tensor(b, "b", 2, (uint64_t[]){4, 2}, KF_GGML_F16, 32);
    put_pad(b);
    put_zeros(b, 48);
}

static void expect_open_error(const bytes *b, const char *what) {
    kf_error err = {0};
    char path[256];
    tmp_file(path, "bad.gguf");
    write_bytes(path, b->b, b->n);
    kf_gguf *f = NULL;
    ASSERT_FAILS(kf_gguf_open(&f, path, &err), path, what);
    assert_null(f);
    kf_model *m = NULL;
    ASSERT_FAILS(kf_model_load_gguf(&m, path, &err), path, what);
    assert_null(m);
    remove(path);
}

static void test_bad_files(void **state) {
    (void)state;
    kf_error err = {0};
    bytes b = {0};
    valid_file(&b);
    char path[256];
    tmp_file(path, "valid.gguf");
    write_bytes(path, b.b, b.n);
    kf_gguf *f;
    ASSERT_OK(kf_gguf_open(&f, path, &err)); // the base of every case below is valid
    assert_int_equal(f->n_tensors, 2);
    kf_gguf_close(f);
    remove(path);

    b = (bytes){0};
    valid_file(&b);
    b.b[3] = 'X';
    expect_open_error(&b, "bad magic");

    b = (bytes){0};
    valid_file(&b);
    b.b[4] = 7;
    expect_open_error(&b, "version 7");

    b = (bytes){0};
    valid_file(&b);
    b.n = 10;
    expect_open_error(&b, "truncated");

    b = (bytes){0}; // tensor count far beyond what the file can hold
    put_header(&b, 3, (uint64_t)1 << 60, 0);
    put_zeros(&b, 64);
    expect_open_error(&b, "more than the file holds");

    b = (bytes){0}; // value string length past the end of the file
    put_header(&b, 3, 0, 1);
    put_str(&b, "general.architecture");
    put_u32(&b, KF_GGUF_STRING);
    put_u64(&b, 1000);
    put(&b, "llama", 5);
    expect_open_error(&b, "past the end of the file");

    b = (bytes){0}; // string array whose count runs past the end
    put_header(&b, 3, 0, 1);
    put_str(&b, "tokenizer.ggml.tokens");
    put_u32(&b, KF_GGUF_ARRAY);
    put_u32(&b, KF_GGUF_STRING);
    put_u64(&b, 3);
    put_str(&b, "abcdefgh");
    put_str(&b, "ijklmnop");
    expect_open_error(&b, "truncated");

    b = (bytes){0}; // offset beyond the data section
    put_header(&b, 3, 1, 0);
    put_tensor(&b, "a", 1, (uint64_t[]){8}, KF_GGML_F32, 64);
    put_pad(&b);
    put_zeros(&b, 32);
    expect_open_error(&b, "outside the data section");

    b = (bytes){0}; // huge offset: no overflow in the range check
    put_header(&b, 3, 1, 0);
    put_tensor(&b, "a", 1, (uint64_t[]){8}, KF_GGML_F32, UINT64_MAX - 31);
    put_pad(&b);
    put_zeros(&b, 32);
    expect_open_error(&b, "outside the data section");

    b = (bytes){0}; // b starts inside a
    put_header(&b, 3, 2, 0);
    put_tensor(&b, "a", 1, (uint64_t[]){16}, KF_GGML_F32, 0);
    put_tensor(&b, "b", 1, (uint64_t[]){8}, KF_GGML_F32, 32);
    put_pad(&b);
    put_zeros(&b, 96);
    expect_open_error(&b, "overlap");

    b = (bytes){0};
    put_header(&b, 3, 1, 0);
    put_tensor(&b, "a", 5, (uint64_t[]){1, 1, 1, 1, 8}, KF_GGML_F32, 0);
    put_pad(&b);
    put_zeros(&b, 32);
    expect_open_error(&b, "5 dimensions");

    b = (bytes){0};
    put_header(&b, 3, 1, 0);
    put_tensor(&b, "a", 1, (uint64_t[]){32}, 2 /* Q4_0 */, 0);
    put_pad(&b);
    put_zeros(&b, 32);
    expect_open_error(&b, "ggml type 2");

    b = (bytes){0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "x");
    put_u32(&b, 42);
    expect_open_error(&b, "unknown value type 42");

    b = (bytes){0};
    put_header(&b, 3, 1, 1);
    put_kv_u32(&b, "general.alignment", 24);
    put_tensor(&b, "a", 1, (uint64_t[]){8}, KF_GGML_F32, 0);
    put_pad(&b);
    put_zeros(&b, 32);
    expect_open_error(&b, "not a power of two");

    b = (bytes){0}; // two tensors of the same name at distinct, valid places
    put_header(&b, 3, 2, 0);
    put_tensor(&b, "a", 1, (uint64_t[]){8}, KF_GGML_F32, 0);
    put_tensor(&b, "a", 1, (uint64_t[]){8}, KF_GGML_F32, 32);
    put_pad(&b);
    put_zeros(&b, 64);
    expect_open_error(&b, "duplicate tensor 'a'");

    b = (bytes){0}; // data at offset 4 of the default 32-byte alignment, inside the data section
    put_header(&b, 3, 1, 0);
    put_tensor(&b, "a", 1, (uint64_t[]){8}, KF_GGML_F32, 4);
    put_pad(&b);
    put_zeros(&b, 64);
    expect_open_error(&b, "not a multiple of the alignment 32");
}

// Random corruptions of a valid file (bytes of the header, key/values and
// tensor infos changed, or the file cut short) either load or fail with a
// message naming the file; under -DKF_SANITIZE=ON any out-of-bounds read
// would abort the test.
static void test_mutations(void **state) {
    (void)state;
    kf_error err = {0};
    int n_ff[2] = {32, 64};
    kf_model *src = make_llama(2, n_ff, true);
    char path[256];
    tmp_file(path, "mut.gguf");
    ASSERT_OK(kf_model_save(src, path, &(kf_save_opts){.format = KF_FORMAT_GGUF, .tok = NULL, .dtype = KF_DTYPE_F16}, &err));
    kf_model_free(src);
    char *orig;
    size_t n;
    ASSERT_OK(kf_file_read_all(path, &orig, &n, &err));
    kf_gguf *f;
    ASSERT_OK(kf_gguf_open(&f, path, &err));
    size_t meta = f->data_offset; // corrupt what the parser reads, not the weights
    kf_gguf_close(f);
    char *buf = malloc(n);
    int loaded = 0, failed = 0;
    for (int it = 0; it < 400; it++) {
        memcpy(buf, orig, n);
        size_t len = n;
        int flips = 1 + (int)((kf_test_urand() + 1) * 2);
        for (int k = 0; k < flips; k++) {
            size_t at = (size_t)((kf_test_urand() + 1) * 0.5 * (double)meta) % meta;
            buf[at] = (char)(kf_test_urand() * 128);
        }
        if (it % 5 == 0) len = (size_t)((kf_test_urand() + 1) * 0.5 * (double)n) % n;
        write_bytes(path, buf, len);
        kf_model *m = NULL;
        err.msg[0] = 0;
        if (kf_model_load_gguf(&m, path, &err) == KF_OK) {
            loaded++;
            kf_model_free(m);
        } else {
            failed++;
            assert_null(m);
            if (!strstr(err.msg, path)) fail_msg("message does not name the file: %s", err.msg);
        }
    }
    assert_true(failed > 100); // the corruptions do reach the checks
    free(buf);
    free(orig);
    remove(path);
}

// Files that parse but do not describe a model kfuse can build.
static void test_bad_models(void **state) {
    (void)state;
    kf_error err = {0};
    char path[256];
    tmp_file(path, "badmodel.gguf");
    kf_model *m = NULL;

    bytes b = {0}; // a llama without block_count
    put_header(&b, 3, 0, 2);
    put_kv_str(&b, "general.architecture", "llama");
    put_kv_u32(&b, "llama.embedding_length", 32);
    write_bytes(path, b.b, b.n);
    ASSERT_FAILS(kf_model_load_gguf(&m, path, &err), path, "missing key llama.block_count");

    b = (bytes){0};
    put_header(&b, 3, 0, 1);
    put_kv_str(&b, "general.architecture", "mamba");
    write_bytes(path, b.b, b.n);
    ASSERT_FAILS(kf_model_load_gguf(&m, path, &err), path, "architecture 'mamba' is not supported");

    b = (bytes){0};
    put_header(&b, 3, 0, 0);
    write_bytes(path, b.b, b.n);
    ASSERT_FAILS(kf_model_load_gguf(&m, path, &err), path, "missing key general.architecture");

    // Hyper-parameters and globals but no layer tensors.
    int n_ff[1] = {32};
    kf_model *src = make_llama(1, n_ff, false);
    kf_gguf_writer *w;
    ASSERT_OK(kf_gguf_writer_init(&w, &err));
    kf_gguf_writer_add_str(w, "general.architecture", "llama");
    kf_gguf_writer_add_u32(w, "llama.block_count", 1);
    kf_gguf_writer_add_u32(w, "llama.embedding_length", 32);
    kf_gguf_writer_add_u32(w, "llama.context_length", 16);
    kf_gguf_writer_add_u32(w, "llama.feed_forward_length", 32);
    kf_gguf_writer_add_u32(w, "llama.attention.head_count", 4);
    kf_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    kf_gguf_writer_add_tensor(w, "token_embd.weight", 2, src->tok_embd.ne, src->tok_embd.data, KF_DTYPE_F32);
    kf_gguf_writer_add_tensor(w, "output_norm.weight", 1, src->out_norm_w.ne, src->out_norm_w.data, KF_DTYPE_F32);
    ASSERT_OK(kf_gguf_writer_save(w, path, &err));
    kf_gguf_writer_free(w);
    ASSERT_FAILS(kf_model_load_gguf(&m, path, &err), path, "missing tensor layer 0 attn_norm");
    assert_null(m);
    kf_model_free(src);
    remove(path);
}

// The SentencePiece vocabulary of the 1.4m model (llama2.c tokenizer.bin,
// with scores) written into the GGUF and read back by
// kf_tokenizer_load_for_model: same pieces, scores, types, ids for a text.
static void test_tokenizer_spm_roundtrip(void **state) {
    (void)state;
    kf_error err = {0};
    char tp[1024], path[256];
    snprintf(tp, sizeof tp, "%s/models/llama-gutenberg-1.4m/tokenizer.bin", kf_test_root());
    kf_tokenizer *tok, *back;
    ASSERT_OK(kf_tokenizer_load_llama2c(&tok, tp, 4096, &err));
    kf_model *m = load_hf("models/llama-gutenberg-1.4m");
    tmp_file(path, "tok.gguf");
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF, .tok = tok}, &err));
    kf_gguf *f;
    ASSERT_OK(kf_gguf_open(&f, path, &err));
    char *model;
    ASSERT_OK(kf_gguf_get_str(f, "tokenizer.ggml.model", true, &model, &err));
    assert_string_equal(model, "llama");
    free(model);
    kf_gguf_close(f);
    ASSERT_OK(kf_tokenizer_load_for_model(&back, path, 4096, &err));
    assert_int_equal(kf_tokenizer_kind(back), KF_TOK_SPM);
    assert_int_equal(kf_tokenizer_n_vocab(back), 4096);
    assert_int_equal(kf_tokenizer_bos(back), kf_tokenizer_bos(tok));
    assert_int_equal(kf_tokenizer_eos(back), kf_tokenizer_eos(tok));
    assert_int_equal(kf_tokenizer_add_bos(back), kf_tokenizer_add_bos(tok));
    for (int i = 0; i < 4096; i++) {
        assert_string_equal(kf_tokenizer_piece(back, i), kf_tokenizer_piece(tok, i));
        assert_float_equal(kf_tokenizer_score(back, i), kf_tokenizer_score(tok, i), 0);
        assert_int_equal(kf_tokenizer_piece_type(back, i), kf_tokenizer_piece_type(tok, i));
    }
    const char *text = "It was the best of times, it was the worst of times; caf\xc3\xa9 \xe2\x80\x94 1984!\n";
    int32_t *a, *b;
    size_t na, nb;
    ASSERT_OK(kf_tokenizer_encode(tok, text, strlen(text), true, &a, &na, &err));
    ASSERT_OK(kf_tokenizer_encode(back, text, strlen(text), true, &b, &nb, &err));
    assert_true(na > 10);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, sizeof *a * na);
    free(a);
    free(b);
    kf_tokenizer_free(back);
    kf_tokenizer_free(tok);
    kf_model_free(m);
    remove(path);
}

// The first 200 kB of path (cut at a line end, so no UTF-8 sequence is
// split) give identical ids through tok and back.
static void assert_same_ids(const kf_tokenizer *tok, const kf_tokenizer *back, const char *path, bool bos) {
    kf_error err = {0};
    char *text;
    size_t len;
    ASSERT_OK(kf_file_read_all(path, &text, &len, &err));
    if (len > 200000) len = 200000;
    while (len > 0 && text[len - 1] != '\n') len--;
    int32_t *a, *b;
    size_t na, nb;
    ASSERT_OK(kf_tokenizer_encode(tok, text, len, bos, &a, &na, &err));
    ASSERT_OK(kf_tokenizer_encode(back, text, len, bos, &b, &nb, &err));
    assert_true(na > 30000);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, sizeof *a * na);
    free(a);
    free(b);
    free(text);
}

// A tokenizer.json vocabulary (merges, no scores) written as GGUF scores
// -id tokenizes WikiText-2 (first 200 KB) exactly as the original.
static void test_tokenizer_json_to_gguf(void **state) {
    (void)state;
    kf_error err = {0};
    char dir[1024], wiki[1024], path[256];
    snprintf(dir, sizeof dir, "%s/models/llama-gutenberg-1.4m", kf_test_root());
    snprintf(wiki, sizeof wiki, "%s/data/wikitext-2-raw/wiki.test.raw", kf_test_root());
    kf_tokenizer *tok, *back;
    ASSERT_OK(kf_tokenizer_load_hf(&tok, dir, &err));
    kf_model *m = load_hf("models/llama-gutenberg-1.4m");
    tmp_file(path, "tokjson.gguf");
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF, .tok = tok}, &err));
    ASSERT_OK(kf_tokenizer_load_gguf(&back, path, &err));
    assert_same_ids(tok, back, wiki, true);
    kf_tokenizer_free(back);
    kf_tokenizer_free(tok);

    kf_model_free(m);
    remove(path);
}

// ids of text under tok, as a fresh array of *n.
static int32_t *ids_of(const kf_tokenizer *tok, const char *text, size_t *n) {
    kf_error err = {0};
    int32_t *ids;
    ASSERT_OK(kf_tokenizer_encode(tok, text, strlen(text), false, &ids, n, &err));
    return ids;
}

// Metaspace's split (tokenizer.json) survives a GGUF as
// kfuse.tokenizer.split_words: the GGUF tokenizes runs of spaces as the
// folder does, which differs from the same vocabulary without the split.
static void test_tokenizer_split_to_gguf(void **state) {
    (void)state;
    kf_error err = {0};
    char src[1024], path[256], json_path[256];
    snprintf(src, sizeof src, "%s/models/llama-gutenberg-1.4m/tokenizer.json", kf_test_root());
    char *buf;
    size_t size;
    ASSERT_OK(kf_file_read_all(src, &buf, &size, &err));
    cJSON *root = cJSON_ParseWithLength(buf, size);
    assert_non_null(root);
    free(buf);
    cJSON_ReplaceItemInObject(root, "normalizer", cJSON_CreateNull());
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "type", "Metaspace");
    cJSON_AddStringToObject(meta, "replacement", "\xE2\x96\x81");
    cJSON_AddStringToObject(meta, "prepend_scheme", "first");
    cJSON_AddBoolToObject(meta, "split", true);
    cJSON_ReplaceItemInObject(root, "pre_tokenizer", meta);
    tmp_file(json_path, "split.tokenizer.json");
    char *json = cJSON_PrintUnformatted(root);
    write_bytes(json_path, json, strlen(json));
    free(json);
    cJSON_Delete(root);

    kf_tokenizer *plain, *split, *back;
    ASSERT_OK(kf_tokenizer_load_hf(&plain, src, &err));
    ASSERT_OK(kf_tokenizer_load_hf(&split, json_path, &err));
    assert_true(kf_tokenizer_split_words(split));
    assert_true(kf_tokenizer_split_matters(split)); // the vocabulary has "▁▁"
    assert_false(kf_tokenizer_split_words(plain));
    kf_model *m = load_hf("models/llama-gutenberg-1.4m");
    tmp_file(path, "split.gguf");
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF, .tok = split}, &err));
    ASSERT_OK(kf_tokenizer_load_gguf(&back, path, &err));
    assert_true(kf_tokenizer_split_words(back));
    const char *text = "Hello  world,   said  he.\n\n    Indented    text";
    size_t n_plain, n_split, n_back;
    int32_t *a = ids_of(plain, text, &n_plain), *b = ids_of(split, text, &n_split), *c = ids_of(back, text, &n_back);
    assert_true(n_plain != n_split || memcmp(a, b, sizeof *a * n_plain) != 0);
    assert_int_equal(n_split, n_back);
    assert_memory_equal(b, c, sizeof *b * n_split);
    free(a), free(b), free(c);
    kf_tokenizer_free(back);

    // Without the split, no key: the plain vocabulary reads back unsplit.
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF, .tok = plain}, &err));
    ASSERT_OK(kf_tokenizer_load_gguf(&back, path, &err));
    assert_false(kf_tokenizer_split_words(back));
    kf_tokenizer_free(back);
    kf_tokenizer_free(split);
    kf_tokenizer_free(plain);
    kf_model_free(m);
    remove(path);
    remove(json_path);
}

// A GPT-2 tokenizer folder through a GGUF tokenizes WikiText-2 (first 200 KB)
// exactly as the folder's tokenizer.json.
static void gpt2_to_gguf(const char *dir) {
    kf_error err = {0};
    char wiki[1024], path[256];
    snprintf(wiki, sizeof wiki, "%s/data/wikitext-2-raw/wiki.test.raw", kf_test_root());
    kf_tokenizer *tok, *back;
    ASSERT_OK(kf_tokenizer_load_hf(&tok, dir, &err));
    int n_ff[1] = {32};
    kf_model *m = make_llama_vocab(1, n_ff, false, kf_tokenizer_n_vocab(tok));
    tmp_file(path, "gpt2tok.gguf");
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF, .tok = tok}, &err));
    ASSERT_OK(kf_tokenizer_load_gguf(&back, path, &err));
    assert_int_equal(kf_tokenizer_kind(back), KF_TOK_BYTELEVEL);
    assert_int_equal(kf_tokenizer_n_merges(back), kf_tokenizer_n_merges(tok));
    assert_int_equal(kf_tokenizer_eos(back), kf_tokenizer_eos(tok));
    assert_same_ids(tok, back, wiki, false);
    kf_tokenizer_free(back);
    kf_tokenizer_free(tok);
    kf_model_free(m);
    remove(path);
}

// The shipped 1000-merge cut of GPT-2 always; GPT-2's real tokenizer (50257
// pieces, 50000 merges) when the shared data folder is beside the repository.
static void test_tokenizer_gpt2_to_gguf(void **state) {
    (void)state;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/tokenizer/gpt2-small", kf_test_root());
    gpt2_to_gguf(dir);
    snprintf(dir, sizeof dir, "%s/../shared/models/gpt2-tokenizer", kf_test_root());
    if (kf_test_have(dir)) gpt2_to_gguf(dir);
}

// GPT-2's byte-to-character map (printable bytes stand for themselves, the
// others for 256 + n), as UTF-8 into out.
static void byte_char(int byte, char *out) {
    int cp = byte, n = 0;
    bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE && byte <= 0xFF);
    if (!printable) {
        for (int b = 0; b < byte; b++)
            if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp, out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
    }
}

// A byte-level vocabulary made by hand in GGUF metadata: the 256 byte
// pieces, three merges and <|endoftext|>.
static void test_tokenizer_bytelevel_gguf(void **state) {
    (void)state;
    kf_error err = {0};
    char chars[256][4], path[256];
    const char *tokens[260];
    int32_t types[260];
    for (int b = 0; b < 256; b++) {
        byte_char(b, chars[b]);
        tokens[b] = chars[b];
        types[b] = 1;
    }
    tokens[256] = "he", tokens[257] = "ll", tokens[258] = "hell", tokens[259] = "<|endoftext|>";
    types[256] = types[257] = types[258] = 1;
    types[259] = 3;
    const char *merges[3] = {"h e", "l l", "he ll"};
    kf_gguf_writer *w;
    ASSERT_OK(kf_gguf_writer_init(&w, &err));
    kf_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    kf_gguf_writer_add_str(w, "tokenizer.ggml.pre", "gpt-2");
    kf_gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", tokens, 260);
    kf_gguf_writer_add_i32_array(w, "tokenizer.ggml.token_type", types, 260);
    kf_gguf_writer_add_str_array(w, "tokenizer.ggml.merges", merges, 3);
    kf_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 259);
    tmp_file(path, "bytelevel.gguf");
    ASSERT_OK(kf_gguf_writer_save(w, path, &err));
    kf_gguf_writer_free(w);
    kf_tokenizer *tok;
    ASSERT_OK(kf_tokenizer_load_gguf(&tok, path, &err));
    assert_int_equal(kf_tokenizer_kind(tok), KF_TOK_BYTELEVEL);
    assert_int_equal(kf_tokenizer_eos(tok), 259);
    assert_false(kf_tokenizer_add_bos(tok));
    int32_t *ids;
    size_t n;
    ASSERT_OK(kf_tokenizer_encode(tok, "hello hell", 10, false, &ids, &n, &err));
    int32_t want[4] = {258, 'o', ' ', 258}; // "hell" "o" " " "hell": byte pieces have the byte's id
    assert_int_equal(n, 4);
    assert_memory_equal(ids, want, sizeof want);
    free(ids);
    // Through the model writer (vocabulary padded to 264 embedding rows)
    // and back: same pieces, merges and ids.
    int n_ff[1] = {32};
    kf_model *m = make_llama_vocab(1, n_ff, false, 264);
    ASSERT_OK(kf_model_save(m, path, &(kf_save_opts){.format = KF_FORMAT_GGUF, .tok = tok}, &err));
    kf_tokenizer *back;
    ASSERT_OK(kf_tokenizer_load_for_model(&back, path, 264, &err));
    assert_int_equal(kf_tokenizer_n_vocab(back), 264);
    assert_string_equal(kf_tokenizer_piece(back, 258), "hell");
    assert_string_equal(kf_tokenizer_piece(back, 263), "[PAD263]");
    assert_int_equal(kf_tokenizer_n_merges(back), 3);
    int32_t l, r;
    assert_true(kf_tokenizer_merge(back, 2, &l, &r));
    assert_int_equal(l, 256);
    assert_int_equal(r, 257);
    assert_int_equal(kf_tokenizer_eos(back), 259);
    ASSERT_OK(kf_tokenizer_encode(back, "hello hell", 10, false, &ids, &n, &err));
    assert_int_equal(n, 4);
    assert_memory_equal(ids, want, sizeof want);
    free(ids);
    kf_tokenizer_free(back);
    kf_model_free(m);
    kf_tokenizer_free(tok);

    // Another pre-tokenizer is refused rather than tokenised differently.
    ASSERT_OK(kf_gguf_writer_init(&w, &err));
    kf_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    kf_gguf_writer_add_str(w, "tokenizer.ggml.pre", "qwen2");
    kf_gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", tokens, 260);
    kf_gguf_writer_add_str_array(w, "tokenizer.ggml.merges", merges, 3);
    ASSERT_OK(kf_gguf_writer_save(w, path, &err));
    kf_gguf_writer_free(w);
    ASSERT_FAILS(kf_tokenizer_load_gguf(&tok, path, &err), path, "pre-tokenizer 'qwen2'");
    // A token id outside the vocabulary.
    ASSERT_OK(kf_gguf_writer_init(&w, &err));
    kf_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    kf_gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", tokens, 260);
    kf_gguf_writer_add_str_array(w, "tokenizer.ggml.merges", merges, 3);
    kf_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 260);
    ASSERT_OK(kf_gguf_writer_save(w, path, &err));
    kf_gguf_writer_free(w);
    ASSERT_FAILS(kf_tokenizer_load_gguf(&tok, path, &err), path, "outside the vocabulary");
    remove(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_1_4m_roundtrip),
        cmocka_unit_test(test_gqa_bf16_roundtrip),
        cmocka_unit_test(test_gpt2_roundtrip),
        cmocka_unit_test(test_per_layer_ffn),
        cmocka_unit_test(test_qwen2_arch),
        cmocka_unit_test(test_q8_0_hand_built),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_bad_models),
        cmocka_unit_test(test_tokenizer_spm_roundtrip),
        cmocka_unit_test(test_tokenizer_json_to_gguf),
        cmocka_unit_test(test_tokenizer_split_to_gguf),
        cmocka_unit_test(test_tokenizer_gpt2_to_gguf),
        cmocka_unit_test(test_tokenizer_bytelevel_gguf),
    };
    return kf_test_status(cmocka_run_group_tests(tests, NULL, NULL));
}

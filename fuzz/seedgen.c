// Writes the seeds made from the tiny models (fuzz_common.h) into
// OUT/<harness>/: make_seeds.sh adds the repository's own files.
// Usage: fuzz_seedgen OUT
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "fuzz_common.h"
#include "io/save.h"

static const char *g_out;

static FILE *open_seed(const char *harness, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", g_out, harness);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", g_out, harness, name);
    FILE *f = fopen(path, "wb");
    if (!f) kf_fuzz_fail("cannot create", path);
    return f;
}

// Writes the parts joined by KF_FUZZ_SEP (a NULL part ends the list).
static void seed(const char *harness, const char *name, int n, const char *const *p, const size_t *len) {
    FILE *f = open_seed(harness, name);
    for (int i = 0; i < n; i++) {
        if (i) fputs(KF_FUZZ_SEP, f);
        fwrite(p[i], 1, len[i], f);
    }
    if (fclose(f) != 0) kf_fuzz_fail("cannot write seed", name);
}

static void read_file(const char *path, char **buf, size_t *n) {
    kf_error err = {0};
    if (kf_file_read_all(path, buf, n, &err) != KF_OK) kf_fuzz_fail("read", err.msg);
}

// A llama2.c tokenizer.bin of the tiny tokenizer ("▁" back to ' ').
static void write_tokenizer_bin(const kf_tokenizer *tok, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) kf_fuzz_fail("cannot create", path);
    int32_t max_len = 16;
    fwrite(&max_len, 4, 1, f);
    for (int i = 0; i < kf_tokenizer_n_vocab(tok); i++) {
        char piece[64];
        const char *s = kf_tokenizer_piece(tok, i);
        size_t o = 0;
        for (; *s && o < sizeof piece; s++)
            if (!strncmp(s, "\xE2\x96\x81", 3)) piece[o++] = ' ', s += 2;
            else piece[o++] = *s;
        if (!strcmp(kf_tokenizer_piece(tok, i), "<s>")) o = 5, memcpy(piece, "\n<s>\n", 5);
        if (!strcmp(kf_tokenizer_piece(tok, i), "</s>")) o = 6, memcpy(piece, "\n</s>\n", 6);
        float score = kf_tokenizer_score(tok, i);
        int32_t len = (int32_t)o;
        fwrite(&score, 4, 1, f);
        fwrite(&len, 4, 1, f);
        fwrite(piece, 1, o, f);
    }
    if (fclose(f) != 0) kf_fuzz_fail("cannot write", path);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT\n", argv[0]);
        return 2;
    }
    g_out = argv[1];
    mkdir(g_out, 0755);
    static const char *const kinds[] = {"llama", "gpt2", "llama-moe"};
    kf_tokenizer *tok = kf_fuzz_tiny_tokenizer();
    kf_error err = {0};
    for (int k = 0; k < 3; k++) {
        char name[64];
        kf_fuzz_files hf;
        kf_fuzz_tiny_hf((kf_fuzz_tiny)k, &hf);
        int n = hf.n[2] ? 3 : 2;
        snprintf(name, sizeof name, "tiny-%s", kinds[k]);
        seed("hf", name, n, (const char *const *)hf.data, hf.n);
        seed("config", name, 1, (const char *const *)hf.data, hf.n);
        if (k == KF_FUZZ_LLAMA) seed("safetensors", name, 1, (const char *const *)hf.data + 1, hf.n + 1);
        if (k == KF_FUZZ_LLAMA_MOE) {
            cJSON *cfg = cJSON_ParseWithLength(hf.data[0], hf.n[0]);
            char *moe = cJSON_PrintUnformatted(cJSON_GetObjectItem(cfg, "kfuse_moe"));
            const char *parts[2] = {moe, hf.data[2]};
            size_t lens[2] = {strlen(moe), hf.n[2]};
            seed("moe", "tiny-hf", 2, parts, lens);
            free(moe);
            cJSON_Delete(cfg);
        }
        kf_fuzz_files_free(&hf);

        kf_model *m = kf_fuzz_tiny_model((kf_fuzz_tiny)k);
        const char *gguf = kf_fuzz_path("tiny.gguf"), *bin = kf_fuzz_path("tiny.bin");
        kf_save_opts gguf_opts = {.format = KF_FORMAT_GGUF, .tok = tok}, l2c_opts = {.format = KF_FORMAT_LLAMA2C};
        if (kf_model_save(m, gguf, &gguf_opts, &err) != KF_OK) kf_fuzz_fail("tiny GGUF", err.msg);
        char *buf;
        size_t len;
        read_file(gguf, &buf, &len);
        seed(k == KF_FUZZ_LLAMA_MOE ? "moe" : "gguf", name, 1, (const char *const *)&buf, &len);
        if (k == KF_FUZZ_LLAMA_MOE) seed("gguf", name, 1, (const char *const *)&buf, &len);
        free(buf);
        if (k == KF_FUZZ_LLAMA) {
            // The tiny model and vocabulary for kfuse analyze and moefy (make_seeds.sh).
            char path[1024];
            snprintf(path, sizeof path, "%s/tiny-llama.gguf", g_out);
            if (kf_model_save(m, path, &gguf_opts, &err) != KF_OK) kf_fuzz_fail("tiny GGUF", err.msg);
            if (kf_model_save(m, bin, &l2c_opts, &err) != KF_OK) kf_fuzz_fail("tiny llama2.c", err.msg);
            const char *tbin = kf_fuzz_path("tokenizer.bin");
            write_tokenizer_bin(tok, tbin);
            char *p[2];
            size_t n[2];
            read_file(bin, &p[0], &n[0]);
            read_file(tbin, &p[1], &n[1]);
            seed("llama2c", name, 2, (const char *const *)p, n);
            snprintf(path, sizeof path, "%s/tiny-llama.bin", g_out);
            FILE *f = fopen(path, "wb");
            if (!f || fwrite(p[0], 1, n[0], f) != n[0] || fclose(f) != 0) kf_fuzz_fail("cannot write", path);
            free(p[0]);
            free(p[1]);
        }
        kf_model_free(m);
        kf_fuzz_clean();
    }
    kf_tokenizer_free(tok);
    return 0;
}

// kf_model_save (save.h): every model file kfuse writes goes through here.
#define _GNU_SOURCE // renameat2
#include "io/save.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch/arch.h"
#include "core/file.h"
#include "formats/safetensors.h"
#include "io/llama2c.h"
#include "io/moe_fields.h"
#include "tokenizer/vocab_gguf.h"

kf_dtype kf_save_default_dtype(kf_dtype model_dtype, kf_format f) {
    if (f == KF_FORMAT_LLAMA2C) return KF_DTYPE_F32;
    if (f == KF_FORMAT_HF && model_dtype == KF_DTYPE_Q8_0) return KF_DTYPE_F16;
    return model_dtype < KF_DTYPE_COUNT ? model_dtype : KF_DTYPE_F32;
}

bool kf_format_parse(const char *name, kf_format *out) {
    static const char *names[] = {"hf", "gguf", "llama2c"};
    for (int i = 0; i < 3; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = (kf_format)i;
            return true;
        }
    return false;
}

static kf_status check_writable(const kf_model *m, const char *path, kf_error *err) {
    kf_status s = kf_model_validate(m, "model to write", err);
    if (s != KF_OK) return s;
    if (m->tied_head && m->lm_head.data != m->tok_embd.data)
        return kf_error_set(err, KF_ERR_ARG, "model to write: tied head does not alias the embeddings");
    if (!kf_arch_traits_match(m))
        return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: this %s model's norm/activation/position mix is not %s's",
                            path, kf_arch_name(m->arch), kf_arch_name(m->arch));
    return KF_OK;
}

// ---- Hugging Face folder ----------------------------------------------------------------

// The files a kfuse HF folder may hold: what the writer writes and the tokenizer files it copies.
static const char *const HF_FILES[] = {"model.safetensors", "model.safetensors.index.json", "config.json",
                                       KF_MOE_ROUTER_FILE, "tokenizer.json", "tokenizer_config.json",
                                       "tokenizer.model", "tokenizer.bin", "generation_config.json",
                                       "special_tokens_map.json"};
#define N_HF_FILES (int)(sizeof HF_FILES / sizeof HF_FILES[0])
#define FIRST_TOKENIZER_FILE 4

// model-00001-of-00003.safetensors
static bool is_shard_name(const char *name) {
    int i, n, len = 0;
    return sscanf(name, "model-%5d-of-%5d.safetensors%n", &i, &n, &len) == 2 && len == (int)strlen(name) &&
           strlen(name) == strlen("model-00001-of-00001.safetensors") && i >= 1 && i <= n;
}

static bool is_hf_file(const char *name) {
    for (int i = 0; i < N_HF_FILES; i++)
        if (strcmp(name, HF_FILES[i]) == 0) return true;
    return is_shard_name(name);
}

// A folder kfuse may replace: absent, or holding only files kfuse writes.
static kf_status check_replaceable(const char *dir, kf_error *err) {
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? KF_OK : kf_error_set(err, KF_ERR_IO, "%s: cannot open: %s", dir, strerror(errno));
    kf_status s = KF_OK;
    for (struct dirent *e; s == KF_OK && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || is_hf_file(e->d_name)) continue;
        s = kf_error_set(err, KF_ERR_ARG, "%s: holds '%.64s', which kfuse did not write; write to another folder",
                         dir, e->d_name);
    }
    closedir(d);
    return s;
}

// Removes the kfuse files of a folder, then the folder (best effort: cleanup).
static void remove_hf_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    char p[1200];
    for (struct dirent *e; (e = readdir(d));)
        if (is_hf_file(e->d_name) && kf_path_join(p, sizeof p, dir, e->d_name)) remove(p);
    closedir(d);
    rmdir(dir);
}

// mkdir -p of dir's parent folders.
static kf_status make_parents(const char *dir, kf_error *err) {
    char p[1024];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    char *slash = strrchr(p, '/');
    if (!slash || slash == p) return KF_OK;
    *slash = 0;
    for (char *q = p + 1;; q++) {
        if (*q != '/' && *q != 0) continue;
        char c = *q;
        *q = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return kf_error_set(err, KF_ERR_IO, "%s: cannot create folder: %s", p, strerror(errno));
        *q = c;
        if (!c) break;
    }
    return KF_OK;
}

static kf_status write_bytes(const char *path, const void *data, size_t n, bool newline, kf_error *err) {
    FILE *f = fopen(path, "wb");
    if (!f) return kf_error_set(err, KF_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    bool ok = fwrite(data, 1, n, f) == n && (!newline || fputc('\n', f) != EOF);
    ok = (fclose(f) == 0) && ok;
    return ok ? KF_OK : kf_error_set(err, KF_ERR_IO, "%s: write failed: %s", path, strerror(errno));
}

static kf_status copy_file(const char *src, const char *dst, kf_error *err) {
    char *buf;
    size_t len;
    kf_status s = kf_file_read_all(src, &buf, &len, err);
    if (s != KF_OK) return s;
    s = write_bytes(dst, buf, len, false, err);
    free(buf);
    return s;
}

static const char *torch_dtype(kf_dtype d) {
    return d == KF_DTYPE_F16 ? "float16" : d == KF_DTYPE_BF16 ? "bfloat16" : "float32";
}

// Writes tensors [a, b) of the list as one safetensors file.
static kf_status write_st(const char *path, const char **names, const kf_tensor **ts, const kf_dtype *dts, int a,
                          int b, kf_error *err) {
    FILE *f = fopen(path, "wb");
    bool ok = f && kf_st_write_dt(f, names + a, ts + a, dts + a, b - a, true);
    if (f) ok = (fclose(f) == 0) && ok;
    return ok ? KF_OK : kf_error_set(err, KF_ERR_IO, "%s: write failed: %s", path, strerror(errno));
}

// The tensors as model.safetensors, or, above shard_bytes, as shards in
// list order (a shard closes before the tensor that would overflow it) plus
// model.safetensors.index.json mapping each name to its shard.
static kf_status write_weights(const char *dir, const char **names, const kf_tensor **ts, const kf_dtype *dts, int n,
                               int64_t shard_bytes, kf_error *err) {
    char p[1200];
    uint64_t total = 0;
    for (int i = 0; i < n; i++) total += kf_st_nbytes(ts[i], dts[i]);
    if (total <= (uint64_t)shard_bytes) {
        kf_path_join(p, sizeof p, dir, "model.safetensors");
        return write_st(p, names, ts, dts, 0, n, err);
    }
    int *first = malloc(sizeof *first * (size_t)(n + 1)), n_shards = 0; // shard k: tensors [first[k], first[k+1])
    if (!first) return kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", dir);
    uint64_t in_shard = 0;
    for (int i = 0; i < n; i++) {
        uint64_t b = kf_st_nbytes(ts[i], dts[i]);
        if (i == 0 || (in_shard > 0 && in_shard + b > (uint64_t)shard_bytes)) {
            first[n_shards++] = i;
            in_shard = 0;
        }
        in_shard += b;
    }
    first[n_shards] = n;
    kf_status s = n_shards > 99999 ? kf_error_set(err, KF_ERR_ARG, "%s: %d shards exceed 99999", dir, n_shards) : KF_OK;
    cJSON *index = cJSON_CreateObject(), *map = NULL;
    if (!index) s = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", dir);
    if (s == KF_OK) {
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(index, "metadata"), "total_size", (double)total);
        map = cJSON_AddObjectToObject(index, "weight_map");
    }
    for (int k = 0; s == KF_OK && k < n_shards; k++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, n_shards);
        for (int i = first[k]; i < first[k + 1]; i++) cJSON_AddStringToObject(map, names[i], name);
        kf_path_join(p, sizeof p, dir, name);
        s = write_st(p, names, ts, dts, first[k], first[k + 1], err);
    }
    char *text = s == KF_OK ? cJSON_Print(index) : NULL;
    if (s == KF_OK && !text) s = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", dir);
    if (s == KF_OK && kf_path_join(p, sizeof p, dir, "model.safetensors.index.json"))
        s = write_bytes(p, text, strlen(text), true, err);
    free(text);
    cJSON_Delete(index);
    free(first);
    return s;
}

// Writes the folder's files into dir (a fresh temporary folder).
static kf_status write_hf_files(const kf_model *m, const char *dir, const kf_save_opts *o, kf_hf_outs *outs,
                                cJSON *cfg, kf_error *err) {
    char p[1200];
    kf_status s = kf_arch_get(m->arch)->hf_export(m, cfg, outs, err);
    if (s != KF_OK) return s;
    if (m->bos_id >= 0) cJSON_AddNumberToObject(cfg, "bos_token_id", m->bos_id);
    if (m->eos_id >= 0) cJSON_AddNumberToObject(cfg, "eos_token_id", m->eos_id);
    cJSON_AddStringToObject(cfg, "torch_dtype", torch_dtype(o->dtype));
    kf_moe_hf_config(m, cfg);
    const char **names = malloc(sizeof *names * (size_t)(outs->n + 1));
    const kf_tensor **ts = malloc(sizeof *ts * (size_t)(outs->n + 1));
    kf_dtype *dts = malloc(sizeof *dts * (size_t)(outs->n + 1));
    char *text = cJSON_Print(cfg);
    if (!names || !ts || !dts || !text) s = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", dir);
    for (int i = 0; s == KF_OK && i < outs->n; i++) {
        names[i] = outs->t[i].name;
        ts[i] = &outs->t[i].t;
        dts[i] = ts[i]->ndim == 2 ? o->dtype : KF_DTYPE_F32; // norms and biases stay F32
    }
    if (s == KF_OK)
        s = write_weights(dir, names, ts, dts, outs->n, o->shard_bytes > 0 ? o->shard_bytes : KF_SAVE_SHARD_BYTES, err);
    if (s == KF_OK && kf_path_join(p, sizeof p, dir, "config.json")) s = write_bytes(p, text, strlen(text), true, err);
    if (s == KF_OK && kf_path_join(p, sizeof p, dir, KF_MOE_ROUTER_FILE)) s = kf_moe_hf_write_routers(m, p, err);
    for (int i = FIRST_TOKENIZER_FILE; s == KF_OK && o->tokenizer_dir && i < N_HF_FILES; i++) {
        char src[1200];
        if (!kf_path_join(src, sizeof src, o->tokenizer_dir, HF_FILES[i]) || !kf_file_exists(src)) continue;
        if (kf_path_join(p, sizeof p, dir, HF_FILES[i])) s = copy_file(src, p, err);
    }
    free(text);
    free(names);
    free(ts);
    free(dts);
    return s;
}

// Moves the finished temporary folder to dir: a plain rename when dir is
// new, else an atomic exchange with the old folder, which is then removed.
static kf_status commit_dir(const char *tmp, const char *dir, kf_error *err) {
    if (rename(tmp, dir) == 0) return KF_OK;
    if (errno != ENOTEMPTY && errno != EEXIST)
        return kf_error_set(err, KF_ERR_IO, "%s: cannot rename to %s: %s", tmp, dir, strerror(errno));
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) != 0)
        return kf_error_set(err, KF_ERR_IO, "%s: cannot replace with %s: %s", dir, tmp, strerror(errno));
    remove_hf_dir(tmp); // now the old folder
    return KF_OK;
}

static kf_status save_hf(const kf_model *m, const char *path, const kf_save_opts *o, kf_error *err) {
    if (o->dtype != KF_DTYPE_F32 && o->dtype != KF_DTYPE_F16 && o->dtype != KF_DTYPE_BF16)
        return kf_error_set(err, KF_ERR_ARG, "%s: safetensors stores F32, F16 or BF16, not %s", path,
                            kf_dtype_name(o->dtype));
    char dir[1024], tmp[1100];
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    if (n >= sizeof dir) return kf_error_set(err, KF_ERR_ARG, "%s: path too long", path);
    memcpy(dir, path, n);
    dir[n] = 0;
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    kf_status s = check_replaceable(dir, err);
    if (s == KF_OK && kf_file_exists(dir) && !kf_dir_exists(dir))
        s = kf_error_set(err, KF_ERR_ARG, "%s: exists and is not a folder", dir);
    if (s == KF_OK) s = check_replaceable(tmp, err);
    if (s != KF_OK) return s;
    remove_hf_dir(tmp); // left by an interrupted run
    if ((s = make_parents(dir, err)) != KF_OK) return s;
    if (mkdir(tmp, 0755) != 0) return kf_error_set(err, KF_ERR_IO, "%s: cannot create folder: %s", tmp, strerror(errno));
    kf_hf_outs outs = {.dir = dir};
    cJSON *cfg = cJSON_CreateObject();
    s = cfg ? write_hf_files(m, tmp, o, &outs, cfg, err) : kf_error_set(err, KF_ERR_NOMEM, "out of memory");
    cJSON_Delete(cfg);
    kf_hf_outs_free(&outs);
    if (s == KF_OK) s = commit_dir(tmp, dir, err);
    if (s != KF_OK) remove_hf_dir(tmp);
    return s;
}

// ---- GGUF ---------------------------------------------------------------------------------

static kf_status save_gguf(const kf_model *m, const char *path, const kf_save_opts *o, kf_error *err) {
    if (m->n_ctx_train <= 0)
        return kf_error_set(err, KF_ERR_ARG, "%s: the model has no context length to record", path);
    kf_dtype wtype = o->dtype;
    if (wtype != KF_DTYPE_F32 && wtype != KF_DTYPE_F16 && wtype != KF_DTYPE_BF16 && wtype != KF_DTYPE_Q8_0)
        return kf_error_set(err, KF_ERR_ARG, "%s: cannot store weights as dtype %d", path, (int)wtype);
    const kf_arch_desc *d = kf_arch_get(m->arch);
    const char *arch = d->gguf_export_name(m);
    kf_gguf_out out = {.wtype = wtype};
    kf_status s = kf_gguf_writer_init(&out.w, err);
    if (s != KF_OK) return s;
    const kf_model *mv = m; // what is written: m, or m with its FFNs padded to one width
    if (d->gguf_pad_ffn && kf_moe_model_has_experts(m) && kf_gguf_out_pad_ffn(&out, m) != m)
        s = kf_error_set(err, KF_ERR_UNSUPPORTED,
                         "%s: llama.cpp's %s has one FFN width and padding would break the experts' neuron ranges; "
                         "write the dense equivalent (kfuse convert --dense) or a Hugging Face folder",
                         path, arch);
    else if (d->gguf_pad_ffn && !(mv = kf_gguf_out_pad_ffn(&out, m)))
        s = kf_error_set(err, out.err.code, "%s: %s", path, out.err.msg);
    if (s != KF_OK) {
        kf_gguf_writer_free(out.w);
        kf_gguf_out_free(&out);
        return s;
    }
    kf_gguf_out_hparams(&out, mv, arch);
    d->gguf_export_keys(&out, mv, arch);
    if (o->tok) {
        s = kf_vocab_gguf_add(out.w, o->tok, m->n_vocab, path, err);
    } else { // keep the model's special ids even without a vocabulary
        if (m->bos_id >= 0) kf_gguf_writer_add_u32(out.w, "tokenizer.ggml.bos_token_id", (uint32_t)m->bos_id);
        if (m->eos_id >= 0) kf_gguf_writer_add_u32(out.w, "tokenizer.ggml.eos_token_id", (uint32_t)m->eos_id);
    }
    if (s == KF_OK) d->gguf_export_tensors(&out, mv);
    if (s == KF_OK && out.err.code != KF_OK) s = kf_error_set(err, out.err.code, "%s: %s", path, out.err.msg);
    // A MoE model's routers go to a companion file, so that the model file
    // holds exactly the tensors llama.cpp expects (moe_fields.h).
    char routers[1100];
    bool moe = kf_moe_model_has_experts(m);
    if (s == KF_OK && moe && !kf_moe_gguf_router_path(path, routers, sizeof routers))
        s = kf_error_set(err, KF_ERR_ARG, "%s: path too long", path);
    if (s == KF_OK) s = kf_moe_gguf_add(out.w, m, routers, err);
    if (s == KF_OK && moe) s = kf_moe_gguf_write_routers(m, routers, err);
    if (s == KF_OK) s = kf_gguf_writer_save(out.w, path, err);
    if (s != KF_OK && moe) remove(routers);
    kf_gguf_writer_free(out.w);
    kf_gguf_out_free(&out);
    return s;
}

kf_status kf_model_save(const kf_model *m, const char *path, const kf_save_opts *o, kf_error *err) {
    kf_status s = check_writable(m, path, err);
    if (s != KF_OK) return s;
    switch (o->format) {
    case KF_FORMAT_HF: return save_hf(m, path, o, err);
    case KF_FORMAT_GGUF: return save_gguf(m, path, o, err);
    case KF_FORMAT_LLAMA2C:
        if (kf_moe_model_has_experts(m))
            return kf_error_set(err, KF_ERR_UNSUPPORTED, "%s: llama2.c has no place for experts' routers", path);
        return kf_llama2c_write(m, path, err);
    }
    return kf_error_set(err, KF_ERR_ARG, "%s: unknown format %d", path, (int)o->format);
}

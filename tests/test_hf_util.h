// Helpers shared by the Hugging Face tests: temporary folders and a small,
// independent .safetensors writer for hand-made (and deliberately broken) files.
#ifndef KF_TEST_HF_UTIL_H
#define KF_TEST_HF_UTIL_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "test_util.h"

// A fresh folder under /tmp; out must hold 64 bytes.
static inline void tmp_dir(char *out) {
    snprintf(out, 64, "/tmp/kf_hf_test_XXXXXX");
    if (!mkdtemp(out)) {
        perror("mkdtemp");
        exit(1);
    }
}

// Removes a flat folder and the files in it.
static inline void rm_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[1200];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(dir);
}

static inline void write_text_file(const char *dir, const char *name, const char *text) {
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    write_bytes(p, text, strlen(text));
}

typedef struct {
    char name[128];
    char dtype[16];
    int ndim;
    int64_t ne[4];
    uint64_t begin, end; // data_offsets
} st_entry;

static inline size_t st_elem_size(const char *dtype) {
    if (!strcmp(dtype, "F32")) return 4;
    if (!strcmp(dtype, "F16") || !strcmp(dtype, "BF16")) return 2;
    return 1;
}

// Lays entries out back to back; returns the data size.
static inline uint64_t st_layout(st_entry *e, int n) {
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t k = st_elem_size(e[i].dtype);
        for (int d = 0; d < e[i].ndim; d++) k *= (uint64_t)e[i].ne[d];
        e[i].begin = off;
        e[i].end = off += k;
    }
    return off;
}

// Header JSON, padded with spaces to a multiple of 8 plus `extra` (so extra
// != 0 misaligns the data section). Caller frees.
static inline char *st_header(const st_entry *e, int n, int extra, size_t *len) {
    size_t cap = 256 + (size_t)n * 256 + 16;
    char *h = malloc(cap);
    size_t k = (size_t)snprintf(h, cap, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        k += (size_t)snprintf(h + k, cap - k, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", e[i].name, e[i].dtype);
        for (int d = 0; d < e[i].ndim; d++) k += (size_t)snprintf(h + k, cap - k, d ? ",%lld" : "%lld", (long long)e[i].ne[d]);
        k += (size_t)snprintf(h + k, cap - k, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)e[i].begin,
                              (unsigned long long)e[i].end);
    }
    k += (size_t)snprintf(h + k, cap - k, "}");
    while (k % 8 != 0) h[k++] = ' ';
    for (int i = 0; i < extra; i++) h[k++] = ' ';
    h[k] = 0;
    *len = k;
    return h;
}

// Writes u64 header length, header, data.
static inline void write_st(const char *path, const st_entry *e, int n, const void *data, size_t data_len, int extra) {
    size_t hlen;
    char *h = st_header(e, n, extra, &hlen);
    size_t total = 8 + hlen + data_len;
    uint8_t *buf = malloc(total);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, h, hlen);
    if (data_len) memcpy(buf + 8 + hlen, data, data_len);
    write_bytes(path, buf, total);
    free(buf);
    free(h);
}

// Needs cmocka and cJSON included first.
// Reads tensor `name` (F32) of a .safetensors file straight from disk.
static inline float *read_raw(const char *path, const char *name, int64_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint64_t hlen = 0;
    assert_int_equal(fread(&hlen, 8, 1, f), 1);
    char *h = calloc(hlen + 1, 1);
    assert_int_equal(fread(h, 1, hlen, f), hlen);
    cJSON *j = cJSON_Parse(h);
    assert_non_null(j);
    cJSON *e = cJSON_GetObjectItem(j, name);
    assert_non_null(e);
    assert_string_equal(cJSON_GetObjectItem(e, "dtype")->valuestring, "F32");
    cJSON *off = cJSON_GetObjectItem(e, "data_offsets");
    long b = (long)cJSON_GetArrayItem(off, 0)->valuedouble, en = (long)cJSON_GetArrayItem(off, 1)->valuedouble;
    *n = (en - b) / 4;
    float *x = malloc((size_t)(en - b));
    assert_int_equal(fseek(f, 8 + (long)hlen + b, SEEK_SET), 0);
    assert_int_equal(fread(x, 1, (size_t)(en - b), f), (size_t)(en - b));
    cJSON_Delete(j);
    free(h);
    fclose(f);
    return x;
}

#endif

// The sampled activations of an analysis as NumPy .npy files.
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "analyze/pipeline.h"
#include "core/file.h"

// NumPy format v1: magic, version 1.0, u16 header length, a dict padded
// with spaces and a newline so that the data starts at a multiple of 64.
static kf_status npy_write(const char *path, const char *descr, const void *data, size_t elem, int64_t rows,
                           int64_t cols, kf_error *err) {
    char dict[160], shape[64];
    if (cols >= 0) snprintf(shape, sizeof shape, "(%lld, %lld)", (long long)rows, (long long)cols);
    else snprintf(shape, sizeof shape, "(%lld,)", (long long)rows);
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
    int total = 10 + n + 1, pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f) return kf_error_set(err, KF_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    unsigned hl = (unsigned)(n + pad + 1);
    unsigned char head[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 0xFF), (unsigned char)(hl >> 8)};
    size_t count = (size_t)rows * (size_t)(cols >= 0 ? cols : 1);
    int ok = fwrite(head, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)n, f) == (size_t)n;
    for (int i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF && fwrite(data, elem, count, f) == count;
    if (fclose(f) != 0) ok = 0;
    return ok ? KF_OK : kf_error_set(err, KF_ERR_IO, "%s: write failed", path);
}

kf_status kf_analysis_dump_npy(const kf_analysis *a, const char *dir, kf_error *err) {
    char path[1024], name[64];
    kf_status st;
    if (a->shard)
        return kf_error_set(err, KF_ERR_ARG, "%s: the activation samples are sharded across the ranks; "
                            "dump them from a run without --shard-layers", dir);
    for (int l = 0; l < a->n_layer; l++) {
        snprintf(name, sizeof name, "ffn_act.%d.npy", l);
        if (!kf_path_join(path, sizeof path, dir, name))
            return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
        int64_t F = (int64_t)(a->stats.n > l ? a->stats.entries[l]->m.d : 0);
        if ((st = npy_write(path, "<f4", a->ffn_sample[l], sizeof(float), a->S, F, err)) != KF_OK) return st;
    }
    for (int r = 0; a->resid_sample && r <= a->n_layer; r++) {
        snprintf(name, sizeof name, "resid.%d.npy", r);
        if (!kf_path_join(path, sizeof path, dir, name))
            return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
        if ((st = npy_write(path, "<f4", a->resid_sample + (size_t)r * a->S * a->resid_dim, sizeof(float), a->S,
                            a->resid_dim, err)) != KF_OK)
            return st;
    }
    if (!kf_path_join(path, sizeof path, dir, "sample_pos.npy"))
        return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    return npy_write(path, "<i8", a->sample_pos, sizeof(int64_t), a->S, -1, err);
}

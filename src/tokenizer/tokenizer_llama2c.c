// llama2.c tokenizer.bin: int32 max_token_length, then per token
// float32 score, int32 len, len bytes (little-endian). Spaces in pieces are
// raw ' ' (SentencePiece's "▁"), BOS/EOS are written "\n<s>\n", "\n</s>\n".
// Encoding is SentencePiece BPE: merge the pair whose merged piece has the
// highest score, leftmost first, after a dummy "▁" prefix.
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "tokenizer/tok_internal.h"

static int32_t read_i32(const uint8_t *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t r;
    memcpy(&r, &v, 4);
    return r;
}

static float read_f32(const uint8_t *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &v, 4);
    return f;
}

// Piece bytes as SentencePiece writes them: ' ' -> "▁", BOS/EOS unwrapped.
static char *piece_from_bin(const uint8_t *s, int32_t len) {
    if (len == 5 && memcmp(s, "\n<s>\n", 5) == 0) return strdup("<s>");
    if (len == 6 && memcmp(s, "\n</s>\n", 6) == 0) return strdup("</s>");
    size_t n = 0;
    for (int32_t i = 0; i < len; i++) n += s[i] == ' ' ? 3 : 1;
    char *p = malloc(n + 1);
    if (!p) return NULL;
    size_t o = 0;
    for (int32_t i = 0; i < len; i++) {
        if (s[i] == ' ') {
            memcpy(p + o, "\xE2\x96\x81", 3);
            o += 3;
        } else {
            p[o++] = (char)s[i];
        }
    }
    p[o] = '\0';
    return p;
}

kf_status kf_tokenizer_load_llama2c(kf_tokenizer **out, const char *path, int vocab_size, kf_error *err) {
    *out = NULL;
    char *buf;
    size_t size;
    kf_status st = kf_file_read_all(path, &buf, &size, err);
    if (st != KF_OK) return st;
    const uint8_t *b = (const uint8_t *)buf;
    if (size < 4) {
        free(buf);
        return kf_error_set(err, KF_ERR_FORMAT, "%s: truncated (%zu bytes, no header)", path, size);
    }
    int32_t max_len = read_i32(b);
    if (max_len <= 0 || max_len > (1 << 20)) {
        free(buf);
        return kf_error_set(err, KF_ERR_FORMAT, "%s: max_token_length %d out of range", path, max_len);
    }
    // Each entry takes at least 8 bytes (score, length): a vocabulary the file
    // cannot hold is refused before anything is allocated for it.
    if (vocab_size > 0 && (size_t)vocab_size > (size - 4) / 8) {
        free(buf);
        return kf_error_set(err, KF_ERR_FORMAT, "%s: %zu bytes cannot hold the model's %d tokens (8 bytes each at least)",
                            path, size, vocab_size);
    }
    // vocab_size <= 0: read entries up to the end of the file
    size_t cap = vocab_size > 0 ? (size_t)vocab_size : size / 8;
    char **pieces = calloc(cap ? cap : 1, sizeof(char *));
    float *scores = calloc(cap ? cap : 1, sizeof(float));
    int n = 0;
    size_t off = 4;
    if (!pieces || !scores) {
        st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    while ((size_t)n < cap && (vocab_size > 0 || off < size)) {
        if (!kf_range_ok(off, 8, size)) {
            st = kf_error_set(err, KF_ERR_FORMAT, "%s: truncated at token %d of %d (byte offset %zu)", path, n,
                              vocab_size, off);
            goto done;
        }
        float score = read_f32(b + off);
        int32_t len = read_i32(b + off + 4);
        off += 8;
        if (len < 0 || len > max_len || !kf_range_ok(off, (size_t)len, size)) {
            st = kf_error_set(err, KF_ERR_FORMAT, "%s: token %d has length %d (max %d, %zu bytes left): truncated or corrupt",
                              path, n, len, max_len, size - off);
            goto done;
        }
        if (memchr(b + off, '\0', (size_t)len)) {
            st = kf_error_set(err, KF_ERR_FORMAT, "%s: token %d contains a NUL byte", path, n);
            goto done;
        }
        scores[n] = score;
        if (!(pieces[n] = piece_from_bin(b + off, len))) {
            st = kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        off += (size_t)len;
        n++;
    }
    kf_tok_build_args a = {
        .kind = KF_TOK_SPM, .n_vocab = n, .pieces = (const char *const *)pieces, .scores = scores,
        .prefix_space = true, .bos = -1, .eos = -1, .unk = -1, .add_bos = true,
    };
    st = kf_tok_build(out, &a, path, err);
done:
    for (size_t i = 0; i < cap && pieces; i++) free(pieces[i]);
    free(pieces);
    free(scores);
    free(buf);
    return st;
}

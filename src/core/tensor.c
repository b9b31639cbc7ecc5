#include "core/tensor.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#ifdef __F16C__
#include <immintrin.h>
#endif

int64_t kf_tensor_nelem(const kf_tensor *t) {
    if (t->ndim == 0) return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->ne[i];
    return n;
}

void kf_tensor_set_shape(kf_tensor *t, int ndim, const int64_t *ne) {
    t->ndim = ndim;
    for (int i = 0; i < KF_MAX_DIMS; i++) t->ne[i] = i < ndim ? ne[i] : 1;
}

const char *kf_tensor_shape_str(const kf_tensor *t, char *buf, size_t n) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, n - off, "(");
    for (int i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ", %lld" : "%lld", (long long)t->ne[i]);
    if (off < n) snprintf(buf + off, n - off, ")");
    return buf;
}

int64_t kf_tensor_row_len(const kf_tensor *t) { return t->ndim > 0 && t->ne[0] > 0 ? kf_tensor_nelem(t) / t->ne[0] : 0; }

size_t kf_tensor_nbytes(const kf_tensor *t) { return kf_dtype_size(t->dtype, kf_tensor_nelem(t)); }

const void *kf_tensor_row(const kf_tensor *t, int64_t r) {
    return (const char *)t->data + kf_dtype_size(t->dtype, r * kf_tensor_row_len(t));
}

void kf_tensor_row_f32(const kf_tensor *t, int64_t r, float *dst) {
    kf_dtype_to_f32(t->dtype, kf_tensor_row(t, r), dst, kf_tensor_row_len(t));
}

float kf_tensor_get_f32(const kf_tensor *t, int64_t i) {
    const uint8_t *p = (const uint8_t *)t->data;
    uint16_t h;
    switch (t->dtype) {
    case KF_DTYPE_F16: memcpy(&h, p + 2 * i, 2); return kf_f16_to_f32_1(h);
    case KF_DTYPE_BF16: {
        memcpy(&h, p + 2 * i, 2);
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    case KF_DTYPE_Q8_0: {
        const uint8_t *b = p + (i / 32) * 34; // f16 scale, then 32 int8
        memcpy(&h, b, 2);
        return kf_f16_to_f32_1(h) * (float)(int8_t)b[2 + i % 32];
    }
    default: return t->data[i];
    }
}

const char *kf_dtype_name(kf_dtype d) {
    switch (d) {
    case KF_DTYPE_F32: return "F32";
    case KF_DTYPE_F16: return "F16";
    case KF_DTYPE_BF16: return "BF16";
    case KF_DTYPE_Q8_0: return "Q8_0";
    default: return "?";
    }
}

bool kf_dtype_parse(const char *name, kf_dtype *out) {
    for (int d = 0; d < KF_DTYPE_COUNT; d++)
        if (strcasecmp(name, kf_dtype_name((kf_dtype)d)) == 0) {
            *out = (kf_dtype)d;
            return true;
        }
    return false;
}

size_t kf_dtype_size(kf_dtype d, int64_t n) {
    switch (d) {
    case KF_DTYPE_F32: return (size_t)n * 4;
    case KF_DTYPE_F16:
    case KF_DTYPE_BF16: return (size_t)n * 2;
    case KF_DTYPE_Q8_0: return (size_t)(n / 32) * 34;
    default: return 0;
    }
}

float kf_f16_to_f32_1(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float f;
    if (exp == 0) {
        f = ldexpf((float)man, -24); // subnormal or zero
        uint32_t u;
        memcpy(&u, &f, 4);
        u |= sign;
        memcpy(&f, &u, 4);
        return f;
    }
    uint32_t u = exp == 31 ? sign | 0x7f800000u | (man << 13)
                           : sign | ((exp + 112) << 23) | (man << 13);
    memcpy(&f, &u, 4);
    return f;
}

// Sources may sit at any byte offset in a file map (GGUF with alignment 1,
// safetensors), so 16-bit values are loaded through memcpy.
static uint16_t load_u16(const uint8_t *p, int64_t i) {
    uint16_t v;
    memcpy(&v, p + 2 * i, 2);
    return v;
}

void kf_f16_to_f32(const void *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = kf_f16_to_f32_1(load_u16(src, i));
}

void kf_bf16_to_f32(const void *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)load_u16(src, i) << 16;
        memcpy(&dst[i], &u, 4);
    }
}

uint16_t kf_f32_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

uint16_t kf_f32_to_f16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffff;
    if (((u >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; // may carry into exponent: correct
    return (uint16_t)h;
}

void kf_q8_0_to_f32(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / 32; b++, p += 34) {
        uint16_t d16;
        memcpy(&d16, p, 2);
        float d = kf_f16_to_f32_1(d16);
        const int8_t *q = (const int8_t *)(p + 2);
        for (int i = 0; i < 32; i++) dst[b * 32 + i] = d * (float)q[i];
    }
}

void kf_dtype_to_f32(kf_dtype d, const void *src, float *dst, int64_t n) {
    switch (d) {
    case KF_DTYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case KF_DTYPE_F16: kf_f16_to_f32(src, dst, n); break;
    case KF_DTYPE_BF16: kf_bf16_to_f32(src, dst, n); break;
    case KF_DTYPE_Q8_0: kf_q8_0_to_f32(src, dst, n); break;
    default: break;
    }
}

// Q8_0: blocks of 32 values as an f16 scale d = max|x|/127 and int8 round(x/d).
static void q8_0_from_f32(const float *x, uint8_t *dst, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++, x += 32, dst += 34) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
        // Quantise with the scale as stored (f16), so the decoded error stays
        // within half a step; |x|/d then exceeds 127 by at most 0.06, except
        // that a subnormal scale can round far down (|x|/d up to 190, which
        // wrapped in int8): then the next f16 up, which keeps |q| <= 127.
        uint16_t h = kf_f32_to_f16(amax / 127.0f);
        float d = kf_f16_to_f32_1(h), id = d > 0 ? 1.0f / d : 0.0f;
        if (amax * id >= 127.5f) {
            d = kf_f16_to_f32_1(++h);
            id = 1.0f / d;
        }
        memcpy(dst, &h, 2);
        for (int i = 0; i < 32; i++) dst[2 + i] = (uint8_t)(int8_t)lrintf(x[i] * id);
    }
}

// out (n f16, any alignment) = src rounded to nearest even: kf_f32_to_f16
// (the reference) value by value, or 8 at a time by F16C where the build has
// it; a group of 8 holding a NaN goes through the reference, whose NaN keeps
// no payload, so both give the same bits for every input.
static void f16_from_f32(const float *src, uint8_t *out, int64_t n) {
    int64_t i = 0;
#ifdef __F16C__
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(src + i);
        if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))) {
            for (int k = 0; k < 8; k++) {
                uint16_t h = kf_f32_to_f16(src[i + k]);
                memcpy(out + 2 * (i + k), &h, 2);
            }
            continue;
        }
        _mm_storeu_si128((__m128i *)(out + 2 * i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
#endif
    for (; i < n; i++) {
        uint16_t h = kf_f32_to_f16(src[i]);
        memcpy(out + 2 * i, &h, 2);
    }
}

void kf_f32_to_dtype(kf_dtype d, const float *src, void *dst, int64_t n) {
    uint8_t *out = dst;
    uint16_t h;
    switch (d) {
    case KF_DTYPE_F16: f16_from_f32(src, out, n); break;
    case KF_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            h = kf_f32_to_bf16(src[i]);
            memcpy(out + 2 * i, &h, 2);
        }
        break;
    case KF_DTYPE_Q8_0: q8_0_from_f32(src, dst, n); break;
    default: memcpy(dst, src, sizeof(float) * (size_t)n); break;
    }
}

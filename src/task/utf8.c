#include "task/utf8.h"

bool kf_utf8_next(const char *s, size_t len, size_t *i, uint32_t *cp) {
    const unsigned char *p = (const unsigned char *)s + *i;
    const size_t left = len - *i;
    if (left == 0) return false;
    int n;
    uint32_t c, min;
    if (p[0] < 0x80) n = 1, c = p[0], min = 0;
    else if ((p[0] & 0xE0) == 0xC0) n = 2, c = p[0] & 0x1F, min = 0x80;
    else if ((p[0] & 0xF0) == 0xE0) n = 3, c = p[0] & 0x0F, min = 0x800;
    else if ((p[0] & 0xF8) == 0xF0) n = 4, c = p[0] & 0x07, min = 0x10000;
    else return false;
    if ((size_t)n > left) return false;
    for (int k = 1; k < n; k++) {
        if ((p[k] & 0xC0) != 0x80) return false;
        c = (c << 6) | (p[k] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return false;
    *cp = c;
    *i += (size_t)n;
    return true;
}

int kf_utf8_put(char *out, uint32_t cp) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t kf_utf8_check(const char *s, size_t len) {
    size_t i = 0;
    uint32_t cp;
    while (i < len)
        if (!kf_utf8_next(s, len, &i, &cp)) return i;
    return len;
}

#include "core/status.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

kf_status kf_error_set(kf_error *err, kf_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

const char *kf_status_name(kf_status code) {
    switch (code) {
    case KF_OK: return "ok";
    case KF_ERR_IO: return "i/o error";
    case KF_ERR_FORMAT: return "format error";
    case KF_ERR_UNSUPPORTED: return "unsupported";
    case KF_ERR_ARG: return "bad argument";
    case KF_ERR_NOMEM: return "out of memory";
    case KF_ERR_INTERNAL: return "internal error";
    }
    return "unknown";
}

// The escape of byte c into e (up to 4 bytes); returns its length.
static size_t escape_byte(unsigned char c, char *e) {
    static const char hex[] = "0123456789ABCDEF";
    if (c == '\\') return e[0] = e[1] = '\\', 2;
    if (c >= 0x20 && c < 0x7F) return e[0] = (char)c, 1;
    e[0] = '\\', e[1] = 'x', e[2] = hex[c >> 4], e[3] = hex[c & 15];
    return 4;
}

const char *kf_str_escape(char *buf, size_t cap, const char *s, size_t n) {
    if (cap == 0) return buf;
    if (n == KF_STR_NUL) n = strlen(s);
    char e[4];
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += escape_byte((unsigned char)s[i], e);
    // Cut: whole escapes up to cap - 4 bytes, then "...".
    bool cut = total > cap - 1;
    size_t limit = !cut ? cap - 1 : cap >= 4 ? cap - 4 : 0, o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = escape_byte((unsigned char)s[i], e);
        if (o + k > limit) break;
        memcpy(buf + o, e, k);
        o += k;
    }
    if (cut && cap >= 4) memcpy(buf + o, "...", 3), o += 3;
    buf[o] = '\0';
    return buf;
}

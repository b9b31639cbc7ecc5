#include "core/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool reserve(kf_strbuf *b, size_t extra) {
    if (b->oom) return false;
    if (b->len + extra + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->oom = true;
        return false;
    }
    b->s = s;
    b->cap = cap;
    return true;
}

void kf_strbuf_printf(kf_strbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void kf_strbuf_puts(kf_strbuf *b, const char *s) {
    size_t n = strlen(s);
    if (!reserve(b, n)) return;
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}

void kf_strbuf_escape(kf_strbuf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': kf_strbuf_puts(b, "&amp;"); break;
        case '<': kf_strbuf_puts(b, "&lt;"); break;
        case '>': kf_strbuf_puts(b, "&gt;"); break;
        case '"': kf_strbuf_puts(b, "&quot;"); break;
        case '\'': kf_strbuf_puts(b, "&#39;"); break;
        default:
            if (reserve(b, 1)) {
                b->s[b->len++] = *s;
                b->s[b->len] = 0;
            }
        }
    }
}

void kf_strbuf_free(kf_strbuf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

// A growable string for building reports (HTML, SVG, JSON text).
#ifndef KF_CORE_STRBUF_H
#define KF_CORE_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *s;      // NUL-terminated; NULL until the first append
    size_t len, cap;
    bool oom;     // set when an append failed; later appends are ignored
} kf_strbuf;

void kf_strbuf_printf(kf_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kf_strbuf_puts(kf_strbuf *b, const char *s);
// Appends s with &, <, >, " and ' escaped for HTML/SVG text and attributes.
void kf_strbuf_escape(kf_strbuf *b, const char *s);
void kf_strbuf_free(kf_strbuf *b);

#endif

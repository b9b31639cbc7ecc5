// UTF-8 decoding and encoding of single code points, for the task readers and
// the text perturbation: strict (RFC 3629: no overlong forms, no surrogates,
// nothing above U+10FFFF).
#ifndef KF_TASK_UTF8_H
#define KF_TASK_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Decodes the code point at s[*i] (len bytes in all) into *cp and advances *i
// past it; false (and *i unchanged) on an invalid or truncated sequence.
bool kf_utf8_next(const char *s, size_t len, size_t *i, uint32_t *cp);

// Writes cp (a valid scalar value) as 1-4 bytes at out; returns the count.
int kf_utf8_put(char *out, uint32_t cp);

// Byte offset of the first invalid sequence in s, or len when s is valid.
size_t kf_utf8_check(const char *s, size_t len);

#endif

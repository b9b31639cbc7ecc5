// Unicode classes for GPT-2's pre-tokenizer: \p{L}, \p{N} and \s.
#ifndef KF_TOKENIZER_UNICODE_TABLES_H
#define KF_TOKENIZER_UNICODE_TABLES_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    uint32_t lo, hi; // inclusive
} kf_unicode_range;

// Sorted, disjoint ranges (generated: tests/ref/tokenize_gen_unicode.py).
extern const kf_unicode_range kf_unicode_letters[];
extern const int kf_unicode_letters_count;
extern const kf_unicode_range kf_unicode_numbers[];
extern const int kf_unicode_numbers_count;

static inline bool kf_unicode_in(const kf_unicode_range *r, int n, uint32_t cp) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid].lo) hi = mid - 1;
        else if (cp > r[mid].hi) lo = mid + 1;
        else return true;
    }
    return false;
}

static inline bool kf_unicode_is_letter(uint32_t cp) {
    if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    return kf_unicode_in(kf_unicode_letters, kf_unicode_letters_count, cp);
}

static inline bool kf_unicode_is_number(uint32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    return kf_unicode_in(kf_unicode_numbers, kf_unicode_numbers_count, cp);
}

// The Unicode White_Space property: what \s matches in Oniguruma (used by
// Hugging Face tokenizers) and in Python's regex module.
static inline bool kf_unicode_is_space(uint32_t cp) {
    if (cp < 0x80) return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

#endif

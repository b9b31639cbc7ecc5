#include "task/perturb.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "task/utf8.h"

enum { EDIT_SWAP = 0, EDIT_DROP, EDIT_INSERT, EDIT_SUB };

kf_status kf_perturb_parse(const char *spec, kf_perturb_opts *out, kf_error *err) {
    char e[KF_ESC_NAME];
    *out = (kf_perturb_opts){0};
    if (strncmp(spec, "typo:", 5) != 0)
        return kf_error_set(err, KF_ERR_ARG, "--perturb '%s': expected typo:RATE[,seed:S]",
                            kf_str_escape(e, sizeof e, spec, KF_STR_NUL));
    const char *p = spec + 5;
    char *end;
    errno = 0;
    double r = strtod(p, &end);
    if (errno || end == p || !(r >= 0 && r <= 1) || (*end && *end != ','))
        return kf_error_set(err, KF_ERR_ARG, "--perturb '%s': RATE must be a number in [0, 1]",
                            kf_str_escape(e, sizeof e, spec, KF_STR_NUL));
    out->rate = r;
    if (*end == ',') {
        p = end + 1;
        if (strncmp(p, "seed:", 5) != 0 || p[5] == '-' || p[5] == '\0')
            return kf_error_set(err, KF_ERR_ARG, "--perturb '%s': expected seed:S after the comma",
                                kf_str_escape(e, sizeof e, spec, KF_STR_NUL));
        errno = 0;
        unsigned long long s = strtoull(p + 5, &end, 10);
        if (errno || *end)
            return kf_error_set(err, KF_ERR_ARG, "--perturb '%s': seed must be a non-negative integer",
                                kf_str_escape(e, sizeof e, spec, KF_STR_NUL));
        out->seed = s;
    }
    return KF_OK;
}

static bool eligible(uint32_t cp) { return cp > 0x20 && cp != 0x7F && !(cp >= 0x80 && cp <= 0xA0); }

// A random letter, upper case when like is an upper-case ASCII letter.
static uint32_t letter(kf_rng *r, uint32_t like) {
    const uint32_t base = like >= 'A' && like <= 'Z' ? 'A' : 'a';
    return base + (uint32_t)kf_rng_below(r, 26);
}

kf_status kf_perturb_typo(const char *text, size_t len, const kf_perturb_opts *o, char **out, size_t *out_len,
                          kf_perturb_stats *st, kf_error *err) {
    *out = NULL, *out_len = 0;
    memset(st, 0, sizeof *st);
    if (!(o->rate >= 0 && o->rate <= 1))
        return kf_error_set(err, KF_ERR_ARG, "perturb: rate %g outside [0, 1]", o->rate);
    size_t bad = kf_utf8_check(text, len);
    if (bad < len) return kf_error_set(err, KF_ERR_FORMAT, "perturb: invalid UTF-8 at byte offset %zu", bad);
    // every code point becomes at most itself plus one inserted ASCII letter
    char *y = malloc(2 * len + 1);
    if (!y) return kf_error_set(err, KF_ERR_NOMEM, "perturb: out of memory for %zu bytes", 2 * len + 1);
    kf_rng r;
    kf_rng_seed(&r, o->seed);
    size_t i = 0, n = 0;
    while (i < len) {
        uint32_t cp, next = 0;
        const size_t at = i;
        kf_utf8_next(text, len, &i, &cp);
        if (!eligible(cp)) {
            n += (size_t)kf_utf8_put(y + n, cp);
            continue;
        }
        st->n_eligible++;
        st->n_considered++;
        if (kf_rng_uniform(&r) >= o->rate) {
            memcpy(y + n, text + at, i - at);
            n += i - at;
            continue;
        }
        size_t j = i;
        const bool can_swap = kf_utf8_next(text, len, &j, &next) && eligible(next);
        int op = kf_rng_below(&r, 4);
        if (op == EDIT_SWAP && !can_swap) op = 1 + kf_rng_below(&r, 3);
        uint32_t c;
        switch (op) {
        case EDIT_SWAP:
            n += (size_t)kf_utf8_put(y + n, next);
            n += (size_t)kf_utf8_put(y + n, cp);
            i = j;
            st->n_eligible++; // the next code point, taken by the swap
            st->n_swap++;
            break;
        case EDIT_DROP:
            st->n_drop++;
            break;
        case EDIT_INSERT:
            n += (size_t)kf_utf8_put(y + n, cp);
            n += (size_t)kf_utf8_put(y + n, letter(&r, cp));
            st->n_insert++;
            break;
        default:
            do c = letter(&r, cp);
            while (c == cp);
            n += (size_t)kf_utf8_put(y + n, c);
            st->n_sub++;
            break;
        }
    }
    y[n] = '\0';
    *out = y, *out_len = n;
    return KF_OK;
}

// Reader for the named-array text fixtures written by tests/ref/analyze_ref.py:
//   name rows cols
//   v v v ...   (rows*cols values, row-major)
// Shared by test_stats.c and test_analyze.c; aborts the test on any problem.
#ifndef KF_TEST_ANALYZE_FIXTURE_H
#define KF_TEST_ANALYZE_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"

static char *fx_text(const char *name) {
    const char *root = getenv("KF_ROOT");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/analyze/%s", root ? root : ".", name);
    char *buf = NULL;
    size_t len;
    kf_error err;
    if (kf_file_read_all(path, &buf, &len, &err) != KF_OK) {
        fprintf(stderr, "fixture: %s\n", err.msg);
        abort();
    }
    return buf;
}

// Array `name` of the fixture text as doubles (malloc'd); rows/cols may be NULL.
static double *fx_get(const char *text, const char *name, int *rows, int *cols) {
    size_t nl = strlen(name);
    const char *p = text;
    while (p && *p) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ' ') {
            char *e;
            long r = strtol(p + nl, &e, 10), c = strtol(e, &e, 10);
            double *v = malloc((size_t)(r * c) * sizeof *v);
            if (!v) abort();
            for (long i = 0; i < r * c; i++) {
                char *q;
                v[i] = strtod(e, &q);
                if (q == e) {
                    fprintf(stderr, "fixture: array %s ends early\n", name);
                    abort();
                }
                e = q;
            }
            if (rows) *rows = (int)r;
            if (cols) *cols = (int)c;
            return v;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    fprintf(stderr, "fixture: no array %s\n", name);
    abort();
}

// Same as float (exact for the float32 arrays the script writes).
static float *fx_get_f32(const char *text, const char *name, int *rows, int *cols) {
    int r, c;
    double *v = fx_get(text, name, &r, &c);
    float *f = malloc((size_t)r * c * sizeof *f);
    if (!f) abort();
    for (long i = 0; i < (long)r * c; i++) f[i] = (float)v[i];
    free(v);
    if (rows) *rows = r;
    if (cols) *cols = c;
    return f;
}

#endif

// Streamed statistics (src/stats): moments vs numpy, merge == union, and the
// statistics file format (round trip, corrupted files).
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "stats/moments.h"
#include "stats/statsfile.h"
#include "test_analyze_fixture.h"

static char *g_text; // moments.txt
static float *g_X;   // (n,d)
static int g_n, g_d, g_topk, g_split;
static float g_eps;

static int setup(void **state) {
    g_text = fx_text("moments.txt");
    g_X = fx_get_f32(g_text, "X", &g_n, &g_d);
    double *p = fx_get(g_text, "params", NULL, NULL);
    g_eps = (float)p[0];
    g_topk = (int)p[1];
    g_split = (int)p[2];
    free(p);
    return 0;
}

static int teardown(void **state) {
    free(g_text);
    free(g_X);
    return 0;
}

// Adds rows [r0, r1) in chunks of `chunk` rows.
static void add_rows(kf_moments *m, int r0, int r1, int chunk) {
    kf_error err;
    for (int r = r0; r < r1; r += chunk) {
        int nb = r1 - r < chunk ? r1 - r : chunk;
        assert_int_equal(kf_moments_add(m, g_X + (size_t)r * g_d, nb, &err), KF_OK);
    }
}

// Covariance and correlation within tol of numpy's (relative to the entry's
// natural scale sqrt(var_i var_j)); means, counters and co-activations as
// exact as the double path gives them.
static void moments_vs_numpy(int f32, double tol) {
    kf_moments m;
    kf_error err;
    assert_int_equal(kf_moments_init(&m, g_d, g_topk, g_eps, &err), KF_OK);
    if (f32) assert_int_equal(kf_moments_set_f32(&m, &err), KF_OK);
    add_rows(&m, 0, g_n, 50);
    assert_int_equal(m.n, g_n);
    int d = g_d;
    double *mean = malloc(d * sizeof *mean), *cov = malloc((size_t)d * d * sizeof *cov);
    double *corr = malloc((size_t)d * d * sizeof *corr);
    double *rmean = fx_get(g_text, "mean", NULL, NULL), *rcov = fx_get(g_text, "cov", NULL, NULL);
    double *rcorr = fx_get(g_text, "corr", NULL, NULL), *npos = fx_get(g_text, "n_pos", NULL, NULL);
    double *nnz = fx_get(g_text, "n_nz", NULL, NULL), *sabs = fx_get(g_text, "sum_abs", NULL, NULL);
    double *mx = fx_get(g_text, "max", NULL, NULL), *mn = fx_get(g_text, "min", NULL, NULL);
    double *coact = fx_get(g_text, "coact", NULL, NULL);
    assert_int_equal(kf_moments_mean(&m, mean, &err), KF_OK);
    assert_int_equal(kf_moments_cov(&m, cov, &err), KF_OK);
    assert_int_equal(kf_moments_corr(&m, corr, &err), KF_OK);
    for (int i = 0; i < d; i++) {
        // mean of column 0 is ~1000: relative 1e-12
        assert_true(fabs(mean[i] - rmean[i]) <= 1e-12 * fmax(1.0, fabs(rmean[i])));
        assert_int_equal(m.n_pos[i], (int64_t)npos[i]);
        assert_int_equal(m.n_nz[i], (int64_t)nnz[i]);
        assert_true(fabs(m.sum_abs[i] - sabs[i]) <= 1e-12 * sabs[i]);
        assert_true(m.max[i] == (float)mx[i] && m.min[i] == (float)mn[i]);
        for (int j = 0; j < d; j++) {
            size_t p = (size_t)i * d + j;
            double scale = sqrt(rcov[(size_t)i * d + i] * rcov[(size_t)j * d + j]);
            assert_true(fabs(cov[p] - rcov[p]) <= tol * scale);
            assert_true(fabs(corr[p] - rcorr[p]) <= tol);
            assert_int_equal(kf_moments_coact(&m, i, j), (uint32_t)coact[p]);
        }
    }
    free(mean); free(cov); free(corr); free(rmean); free(rcov); free(rcorr);
    free(npos); free(nnz); free(sabs); free(mx); free(mn); free(coact);
    kf_moments_free(&m);
}

static void test_moments_vs_numpy(void **state) { moments_vs_numpy(0, 1e-9); }

// Float products per block: float rounding of one block, not more (the
// column of mean ~1000 is shifted before the products are taken).
static void test_moments_f32_vs_numpy(void **state) { moments_vs_numpy(1, 2e-6); }

// Widths of several panels of the packed products (KF_MOMENTS_PANEL rows of
// Sxx per gemm) and row counts of several blocks: covariance against a
// two-pass reference in double, for both product modes, and a merge of two
// halves against the whole.
static void test_moments_panels(void **state) {
    const int d = 2 * KF_MOMENTS_PANEL + 88, n = 2 * KF_MOMENTS_BLOCK + 76;
    float *X = malloc((size_t)n * d * sizeof *X);
    uint64_t s = 12345;
    for (size_t i = 0; i < (size_t)n * d; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        X[i] = (float)((double)(s >> 40) / (double)(1 << 24) - 0.5) + (float)(i % d % 7); // column means 0..6
    }
    for (int r = 0; r < n; r++) X[(size_t)r * d + 300] += X[(size_t)r * d + 5]; // correlated columns across panels
    double *mean = calloc((size_t)d, sizeof *mean), *ref = calloc((size_t)d * d, sizeof *ref);
    double *cov = malloc((size_t)d * d * sizeof *cov), *cov2 = malloc((size_t)d * d * sizeof *cov2);
    for (int r = 0; r < n; r++)
        for (int j = 0; j < d; j++) mean[j] += X[(size_t)r * d + j];
    for (int j = 0; j < d; j++) mean[j] /= n;
    for (int r = 0; r < n; r++)
        for (int i = 0; i < d; i++) {
            double xi = X[(size_t)r * d + i] - mean[i];
            for (int j = i; j < d; j++) ref[(size_t)i * d + j] += xi * (X[(size_t)r * d + j] - mean[j]);
        }
    kf_error err;
    for (int f32 = 0; f32 < 2; f32++) {
        kf_moments m, a, b;
        assert_int_equal(kf_moments_init(&m, d, 3, 0.f, &err), KF_OK);
        assert_int_equal(kf_moments_init(&a, d, 3, 0.f, &err), KF_OK);
        assert_int_equal(kf_moments_init(&b, d, 3, 0.f, &err), KF_OK);
        if (f32) assert_int_equal(kf_moments_set_f32(&m, &err), KF_OK);
        assert_int_equal(kf_moments_add(&m, X, n, &err), KF_OK);
        assert_int_equal(kf_moments_add(&a, X, 700, &err), KF_OK);
        assert_int_equal(kf_moments_add(&b, X + (size_t)700 * d, n - 700, &err), KF_OK);
        assert_int_equal(kf_moments_merge(&a, &b, &err), KF_OK);
        assert_int_equal(kf_moments_cov(&m, cov, &err), KF_OK);
        assert_int_equal(kf_moments_cov(&a, cov2, &err), KF_OK);
        const double tol = f32 ? 2e-6 : 1e-12;
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) {
                double r = (i <= j ? ref[(size_t)i * d + j] : ref[(size_t)j * d + i]) / (n - 1);
                double scale = sqrt(ref[(size_t)i * d + i] * ref[(size_t)j * d + j]) / (n - 1);
                assert_true(fabs(cov[(size_t)i * d + j] - r) <= tol * scale);
                assert_true(fabs(cov2[(size_t)i * d + j] - r) <= 1e-12 * scale);
            }
        kf_moments_free(&m);
        kf_moments_free(&a);
        kf_moments_free(&b);
    }
    free(X), free(mean), free(ref), free(cov), free(cov2);
}

static void assert_moments_close(const kf_moments *a, const kf_moments *b) {
    kf_error err;
    int d = a->d;
    assert_int_equal(a->n, b->n);
    double *ca = malloc((size_t)d * d * sizeof *ca), *cb = malloc((size_t)d * d * sizeof *cb);
    double ma[64], mb[64];
    assert_true(d <= 64);
    assert_int_equal(kf_moments_cov(a, ca, &err), KF_OK);
    assert_int_equal(kf_moments_cov(b, cb, &err), KF_OK);
    assert_int_equal(kf_moments_mean(a, ma, &err), KF_OK);
    assert_int_equal(kf_moments_mean(b, mb, &err), KF_OK);
    for (int i = 0; i < d; i++) {
        assert_true(fabs(ma[i] - mb[i]) <= 1e-12 * fmax(1.0, fabs(mb[i])));
        assert_int_equal(a->n_pos[i], b->n_pos[i]);
        assert_int_equal(a->n_nz[i], b->n_nz[i]);
        assert_true(fabs(a->sum_abs[i] - b->sum_abs[i]) <= 1e-12 * b->sum_abs[i]);
        assert_true(a->max[i] == b->max[i] && a->min[i] == b->min[i]);
        for (int j = 0; j < d; j++) {
            size_t p = (size_t)i * d + j;
            assert_true(fabs(ca[p] - cb[p]) <= 1e-11 * sqrt(cb[(size_t)i * d + i] * cb[(size_t)j * d + j]));
            if (a->topk) assert_int_equal(kf_moments_coact(a, i, j), kf_moments_coact(b, i, j));
        }
    }
    free(ca);
    free(cb);
}

static void test_moments_merge_union(void **state) {
    kf_moments u, a, b, e;
    kf_error err;
    assert_int_equal(kf_moments_init(&u, g_d, g_topk, g_eps, &err), KF_OK);
    assert_int_equal(kf_moments_init(&a, g_d, g_topk, g_eps, &err), KF_OK);
    assert_int_equal(kf_moments_init(&b, g_d, g_topk, g_eps, &err), KF_OK);
    assert_int_equal(kf_moments_init(&e, g_d, g_topk, g_eps, &err), KF_OK);
    add_rows(&u, 0, g_n, 300);
    add_rows(&a, 0, g_split, 41);
    add_rows(&b, g_split, g_n, 17); // different shift from a (column 4 jumps at row 150)
    assert_true(a.shift[4] != b.shift[4]);
    assert_int_equal(kf_moments_merge(&e, &a, &err), KF_OK); // into an empty accumulator
    assert_int_equal(kf_moments_merge(&e, &b, &err), KF_OK);
    assert_moments_close(&e, &u);
    assert_int_equal(kf_moments_merge(&b, &a, &err), KF_OK); // the other order
    assert_moments_close(&b, &u);

    kf_moments other;
    assert_int_equal(kf_moments_init(&other, g_d, 0, g_eps, &err), KF_OK);
    assert_int_equal(kf_moments_merge(&other, &a, &err), KF_ERR_ARG);
    kf_moments_free(&other);
    kf_moments_free(&u);
    kf_moments_free(&a);
    kf_moments_free(&b);
    kf_moments_free(&e);
}

static void test_moments_constant_dim(void **state) {
    // X (4,3): column 1 constant -> correlation 0 off the diagonal, 1 on it
    const float X[] = {1, 7, 2, 2, 7, 4, 3, 7, 5, 4, 7, 9};
    kf_moments m;
    kf_error err;
    double corr[9];
    assert_int_equal(kf_moments_init(&m, 3, 0, 0.f, &err), KF_OK);
    assert_int_equal(kf_moments_cov(&m, corr, &err), KF_ERR_ARG); // no rows yet
    assert_int_equal(kf_moments_add(&m, X, 4, &err), KF_OK);
    assert_int_equal(kf_moments_corr(&m, corr, &err), KF_OK);
    assert_true(corr[1] == 0 && corr[3] == 0 && corr[5] == 0 && corr[7] == 0);
    assert_true(corr[0] == 1 && corr[4] == 1 && corr[8] == 1);
    assert_true(corr[2] > 0.9 && corr[2] < 1);
    kf_moments_free(&m);
    assert_int_equal(kf_moments_init(&m, 0, 0, 0.f, &err), KF_ERR_ARG);
    assert_int_equal(kf_moments_init(&m, 3, 4, 0.f, &err), KF_ERR_ARG); // top-k > d
}

static void tmp_path(char *buf, size_t n, const char *tag) {
    const char *dir = getenv("KF_BUILD");
    snprintf(buf, n, "%s/test_stats_%s_%d.bin", dir ? dir : "/tmp", tag, (int)getpid());
}

// The windows make_file's statistics were gathered on.
static const kf_calib_protocol g_proto = {.ctx = 128, .batch = 3, .bos_id = -1, .max_tokens = 12800, .n_ranks = 2};

// A file with two accumulators: "layer.0.act" (topk) and "layer.1.res" (none).
static void make_file(kf_statsfile *f, uint64_t fp) {
    kf_error err;
    kf_moments *m0, *m1;
    kf_statsfile_init(f, fp, &g_proto);
    assert_int_equal(kf_statsfile_add(f, "layer.0.act", g_d, g_topk, g_eps, &m0, &err), KF_OK);
    assert_int_equal(kf_statsfile_add(f, "layer.1.res", 4, 0, 0.f, &m1, &err), KF_OK);
    assert_int_equal(kf_statsfile_add(f, "layer.1.res", 4, 0, 0.f, &m1, &err), KF_ERR_ARG); // duplicate
    add_rows(m0, 0, 100, 64);
    float rows[8] = {1, -2, 3, 0.5f, 2, 0, -1, 4};
    assert_int_equal(kf_moments_add(m1, rows, 2, &err), KF_OK);
}

static void assert_same_moments(const kf_moments *a, const kf_moments *b) {
    int d = a->d;
    assert_int_equal(a->d, b->d);
    assert_int_equal(a->topk, b->topk);
    assert_true(a->eps == b->eps);
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->has_shift, b->has_shift);
    assert_memory_equal(a->shift, b->shift, d * sizeof(double));
    assert_memory_equal(a->sum, b->sum, d * sizeof(double));
    assert_memory_equal(a->sxx, b->sxx, (size_t)d * (d + 1) / 2 * sizeof(double));
    assert_memory_equal(a->n_pos, b->n_pos, d * sizeof(int64_t));
    assert_memory_equal(a->n_nz, b->n_nz, d * sizeof(int64_t));
    assert_memory_equal(a->sum_abs, b->sum_abs, d * sizeof(double));
    assert_memory_equal(a->max, b->max, d * sizeof(float));
    assert_memory_equal(a->min, b->min, d * sizeof(float));
    if (a->topk) assert_memory_equal(a->coact, b->coact, (size_t)d * (d + 1) / 2 * sizeof(uint32_t));
}

static void test_statsfile_roundtrip(void **state) {
    char path[1024];
    tmp_path(path, sizeof path, "rt");
    kf_statsfile f, g, h;
    kf_error err;
    make_file(&f, 0x1234abcd5678ef90ull);
    assert_int_equal(kf_statsfile_save(&f, path, &err), KF_OK);
    assert_int_equal(kf_statsfile_load(&g, path, 0x1234abcd5678ef90ull, NULL, &err), KF_OK);
    assert_int_equal(g.n, 2);
    assert_memory_equal(&g.protocol, &g_proto, sizeof g_proto);
    for (int i = 0; i < 2; i++) {
        assert_string_equal(g.entries[i]->name, f.entries[i]->name);
        assert_same_moments(&g.entries[i]->m, &f.entries[i]->m);
    }
    // merging the file into itself doubles the counts
    kf_statsfile_init(&h, 0x1234abcd5678ef90ull, &(kf_calib_protocol){.ctx = 128, .batch = 3, .bos_id = -1, .n_ranks = 2});
    assert_int_equal(kf_statsfile_merge(&h, &f, &err), KF_OK);
    assert_int_equal(kf_statsfile_merge(&h, &g, &err), KF_OK);
    assert_int_equal(h.protocol.max_tokens, 2 * g_proto.max_tokens); // the tokens of both parts
    assert_int_equal(kf_statsfile_get(&h, "layer.0.act")->n, 200);
    assert_int_equal(kf_moments_coact(kf_statsfile_get(&h, "layer.0.act"), 2, 3),
                     2 * kf_moments_coact(kf_statsfile_get(&f, "layer.0.act"), 2, 3));
    assert_null(kf_statsfile_get(&h, "nope"));
    kf_statsfile_free(&h);
    kf_statsfile_init(&h, 1, &g_proto);
    assert_int_equal(kf_statsfile_merge(&h, &f, &err), KF_ERR_ARG); // other model
    kf_statsfile_free(&h);
    kf_statsfile_init(&h, 0x1234abcd5678ef90ull, &(kf_calib_protocol){.ctx = 128, .batch = 3, .bos_id = 1, .n_ranks = 2});
    assert_int_equal(kf_statsfile_merge(&h, &f, &err), KF_ERR_ARG); // other windows
    assert_non_null(strstr(err.msg, "gathered with ctx 128 and no BOS; this run uses ctx 128 with BOS 1"));
    kf_statsfile_free(&h);
    kf_statsfile_free(&f);
    kf_statsfile_free(&g);
    unlink(path);
}

// The entry-by-entry writer (what analyze --shard-layers' rank 0 uses) fed
// each array in 7-byte pieces, from a shape that owns no arrays, writes the
// same bytes as kf_statsfile_save, and the file loads back.
static void test_statsfile_writer_pieces(void **state) {
    (void)state;
    char a[1024], b[1024];
    tmp_path(a, sizeof a, "whole");
    tmp_path(b, sizeof b, "pieces");
    kf_statsfile f, g;
    kf_error err;
    make_file(&f, 0x77ull);
    assert_int_equal(kf_statsfile_save(&f, a, &err), KF_OK);
    kf_statsfile_writer w;
    assert_int_equal(kf_statsfile_writer_open(&w, b, f.fingerprint, &f.protocol, f.n, &err), KF_OK);
    for (int i = 0; i < f.n; i++) {
        const kf_moments *m = &f.entries[i]->m;
        kf_moments shape = {.d = m->d, .topk = m->topk, .eps = m->eps};
        const void *p[9], *q[9];
        size_t n[9], nq[9];
        int k = kf_statsfile_entry_arrays(m, p, n);
        assert_int_equal(kf_statsfile_entry_arrays(&shape, q, nq), k);
        assert_int_equal(k, m->topk > 0 ? 9 : 8);
        kf_statsfile_writer_begin(&w, f.entries[i]->name, &shape, m->has_shift, m->n);
        for (int j = 0; j < k; j++) {
            assert_int_equal(nq[j], n[j]);
            for (size_t o = 0; o < n[j]; o += 7)
                kf_statsfile_writer_data(&w, (const char *)p[j] + o, n[j] - o < 7 ? n[j] - o : 7);
        }
        kf_statsfile_writer_end(&w);
    }
    assert_int_equal(kf_statsfile_writer_close(&w, &err), KF_OK);
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    assert_non_null(fa);
    assert_non_null(fb);
    int ca, cb;
    long len = 0;
    do {
        ca = fgetc(fa), cb = fgetc(fb);
        assert_int_equal(ca, cb);
        len++;
    } while (ca != EOF);
    fclose(fa);
    fclose(fb);
    assert_true(len > 1000);
    assert_int_equal(kf_statsfile_load(&g, b, 0x77ull, NULL, &err), KF_OK);
    assert_int_equal(g.n, f.n);
    for (int i = 0; i < f.n; i++) assert_same_moments(&g.entries[i]->m, &f.entries[i]->m);
    kf_statsfile_free(&f);
    kf_statsfile_free(&g);
    unlink(a);
    unlink(b);
}

// The writer fed whole statsfiles (what analyze --max-memory's layer groups
// use): two parts load back as the whole; one entry short of the header's
// count, or aborted, nothing is left at the path.
static void test_statsfile_writer_parts(void **state) {
    (void)state;
    char b[1024];
    tmp_path(b, sizeof b, "parts");
    kf_statsfile f, first, rest, g;
    kf_error err;
    make_file(&f, 0x99ull);
    assert_true(f.n >= 2);
    first = f; // views: the first entry, the others
    first.n = 1;
    rest = f;
    rest.entries = f.entries + 1;
    rest.n = f.n - 1;
    kf_statsfile_writer w;
    assert_int_equal(kf_statsfile_writer_open(&w, b, f.fingerprint, &f.protocol, f.n, &err), KF_OK);
    assert_int_equal(kf_statsfile_writer_add(&w, &first, &err), KF_OK);
    assert_int_equal(kf_statsfile_writer_add(&w, &rest, &err), KF_OK);
    assert_int_equal(kf_statsfile_writer_close(&w, &err), KF_OK);
    kf_statsfile_writer_abort(&w); // closed: nothing to do
    assert_int_equal(kf_statsfile_load(&g, b, 0x99ull, NULL, &err), KF_OK);
    assert_int_equal(g.n, f.n);
    for (int i = 0; i < f.n; i++) assert_same_moments(&g.entries[i]->m, &f.entries[i]->m);
    kf_statsfile_free(&g);
    unlink(b);
    assert_int_equal(kf_statsfile_writer_open(&w, b, f.fingerprint, &f.protocol, f.n, &err), KF_OK);
    assert_int_equal(kf_statsfile_writer_add(&w, &rest, &err), KF_OK);
    assert_int_equal(kf_statsfile_writer_close(&w, &err), KF_ERR_INTERNAL);
    assert_non_null(strstr(err.msg, "entries written"));
    assert_int_equal(access(b, F_OK), -1);
    assert_int_equal(kf_statsfile_writer_open(&w, b, f.fingerprint, &f.protocol, f.n, &err), KF_OK);
    assert_int_equal(kf_statsfile_writer_add(&w, &first, &err), KF_OK);
    kf_statsfile_writer_abort(&w);
    assert_int_equal(access(b, F_OK), -1);
    kf_statsfile_free(&f);
}

static void write_bytes(const char *path, const unsigned char *b, size_t n) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, n, fp), n);
    fclose(fp);
}

// Loads path and checks the status and that the message names the file.
static void expect_load_error(const char *path, uint64_t fp, kf_status code, const char *what) {
    kf_statsfile g;
    kf_error err;
    kf_status st = kf_statsfile_load(&g, path, fp, NULL, &err);
    if (st != code) fail_msg("expected %s, got %s (%s)", kf_status_name(code), kf_status_name(st), st ? err.msg : "");
    assert_non_null(strstr(err.msg, path));
    if (what && !strstr(err.msg, what)) fail_msg("'%s' not in '%s'", what, err.msg);
    assert_int_equal(g.n, 0);
}

static void test_statsfile_errors(void **state) {
    char path[1024], bad[1024];
    tmp_path(path, sizeof path, "good");
    tmp_path(bad, sizeof bad, "bad");
    kf_statsfile f;
    kf_error err;
    const uint64_t fp = 42;
    make_file(&f, fp);
    assert_int_equal(kf_statsfile_save(&f, path, &err), KF_OK);
    kf_statsfile_free(&f);
    char *buf;
    size_t len;
    assert_int_equal(kf_file_read_all(path, &buf, &len, &err), KF_OK);
    unsigned char *b = (unsigned char *)buf;

    expect_load_error(path, 43, KF_ERR_ARG, "fingerprint");
    expect_load_error("/nonexistent/stats.bin", fp, KF_ERR_IO, NULL);
    // truncations are detected (and read in bounds under ASan): every length
    // through the first entry's header, then every 7th, then the last 16
    for (size_t n = 0; n < len; n += n < 64 || n + 16 >= len ? 1 : 7) {
        write_bytes(bad, b, n);
        expect_load_error(bad, fp, KF_ERR_FORMAT, NULL);
    }
    unsigned char *c = malloc(len + 1);
    memcpy(c, b, len);
    c[0] = 'X';
    write_bytes(bad, c, len);
    expect_load_error(bad, fp, KF_ERR_FORMAT, "magic");
    memcpy(c, b, len);
    c[8] = 3; // version
    write_bytes(bad, c, len);
    expect_load_error(bad, fp, KF_ERR_UNSUPPORTED, "version");
    c[8] = 1; // the version before the protocol: one line saying so
    write_bytes(bad, c, len);
    expect_load_error(bad, fp, KF_ERR_UNSUPPORTED, "does not record its calibration windows; gather it again");
    memcpy(c, b, len);
    c[24] = 1; // ctx 1: not a protocol
    write_bytes(bad, c, len);
    expect_load_error(bad, fp, KF_ERR_FORMAT, "bad calibration protocol");
    memcpy(c, b, len);
    c[len / 2] ^= 0x10; // a payload bit
    write_bytes(bad, c, len);
    expect_load_error(bad, fp, KF_ERR_FORMAT, "checksum");
    memcpy(c, b, len);
    c[12] = 9; // n_entries beyond the file
    write_bytes(bad, c, len);
    expect_load_error(bad, fp, KF_ERR_FORMAT, "truncated");
    memcpy(c, b, len);
    c[len] = 0; // trailing byte
    write_bytes(bad, c, len + 1);
    expect_load_error(bad, fp, KF_ERR_FORMAT, "trailing");
    memcpy(c, b, len);
    c[48 + 8 + 4 + 11] = 0xff; // d of the first entry: size no longer matches
    c[48 + 8 + 4 + 11 + 3] = 0x7f;
    write_bytes(bad, c, len);
    expect_load_error(bad, fp, KF_ERR_FORMAT, "bad header");
    free(c);
    free(buf);
    unlink(bad);
    unlink(path);
}

// Loading checks the windows against the run's: another ctx or BOS policy is
// refused with one line naming the file and both protocols; batch, ranks and
// token count (rounding and sample size only) are not compared.
static void test_statsfile_protocol(void **state) {
    char path[1024], want_msg[1200];
    tmp_path(path, sizeof path, "proto");
    kf_statsfile f, g;
    kf_error err;
    make_file(&f, 7);
    assert_int_equal(kf_statsfile_save(&f, path, &err), KF_OK);
    kf_statsfile_free(&f);
    kf_calib_protocol run = kf_calib_protocol_make(128, -1);
    assert_int_equal(kf_statsfile_load(&g, path, 7, &run, &err), KF_OK); // batch 4, one rank: the same windows
    kf_statsfile_free(&g);
    run = kf_calib_protocol_make(256, 1);
    assert_int_equal(kf_statsfile_load(&g, path, 7, &run, &err), KF_ERR_ARG);
    snprintf(want_msg, sizeof want_msg, "%s was gathered with ctx 128 and no BOS; this run uses ctx 256 with BOS 1", path);
    assert_string_equal(err.msg, want_msg);
    assert_int_equal(g.n, 0);
    run = kf_calib_protocol_make(128, 1); // only the BOS policy differs
    assert_int_equal(kf_statsfile_load(&g, path, 7, &run, &err), KF_ERR_ARG);
    run = kf_calib_protocol_make(64, -1); // only ctx differs
    assert_int_equal(kf_statsfile_load(&g, path, 7, &run, &err), KF_ERR_ARG);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_moments_vs_numpy),     cmocka_unit_test(test_moments_merge_union),
        cmocka_unit_test(test_moments_constant_dim), cmocka_unit_test(test_statsfile_roundtrip),
        cmocka_unit_test(test_statsfile_errors),     cmocka_unit_test(test_moments_f32_vs_numpy),
        cmocka_unit_test(test_statsfile_protocol),   cmocka_unit_test(test_moments_panels),
        cmocka_unit_test(test_statsfile_writer_pieces), cmocka_unit_test(test_statsfile_writer_parts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

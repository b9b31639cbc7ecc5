#include "report/analysis_report.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/strbuf.h"
#include "report/svg.h"

#define MAX_SERIES 256

static const cJSON *get(const cJSON *o, const char *key) { return cJSON_GetObjectItemCaseSensitive(o, key); }

static double num(const cJSON *o, const char *key) {
    const cJSON *v = get(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

// Numbers of a JSON array into out (at most cap; null -> NaN); returns the count.
static int nums(const cJSON *arr, double *out, int cap) {
    int n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) {
        if (n == cap) break;
        out[n++] = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    }
    return n;
}

// A (rows, cols) matrix of a JSON array of arrays, malloc'd; NULL if ragged or empty.
static double *matrix(const cJSON *arr, int *rows, int *cols) {
    *rows = cJSON_GetArraySize(arr);
    *cols = *rows > 0 ? cJSON_GetArraySize(cJSON_GetArrayItem(arr, 0)) : 0;
    if (*rows < 1 || *cols < 1) return NULL;
    double *m = malloc((size_t)*rows * *cols * sizeof *m);
    if (!m) return NULL;
    for (int i = 0; i < *rows; i++)
        if (nums(cJSON_GetArrayItem(arr, i), m + (size_t)i * *cols, *cols) != *cols) {
            free(m);
            return NULL;
        }
    return m;
}

// Escaped text with line breaks shown as a visible mark.
static void text_cell(kf_strbuf *b, const char *s) {
    char one[2] = {0, 0};
    for (; s && *s; s++) {
        if (*s == '\n') kf_strbuf_puts(b, "<span class=\"nl\">&#8629;</span>");
        else if (*s == '\r' || *s == '\t') kf_strbuf_puts(b, " ");
        else {
            one[0] = *s;
            kf_strbuf_escape(b, one);
        }
    }
}

static const char *CSS =
    "body{font-family:sans-serif;max-width:1180px;margin:24px auto;padding:0 16px;color:#222;line-height:1.4}"
    "h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}"
    "h3{font-size:15px;margin-bottom:4px}table{border-collapse:collapse;margin:8px 0;font-size:13px}"
    "td,th{border:1px solid #ddd;padding:3px 8px;text-align:right;vertical-align:top}th{background:#f4f4f4}"
    "td.l,th.l{text-align:left}.plots{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}"
    ".note{color:#555;font-size:13px;max-width:900px}.ctx{font-family:monospace;white-space:pre-wrap;text-align:left}"
    ".ctx b{background:#ffe08a;font-weight:normal}.nl{color:#aaa}details{margin:6px 0}summary{cursor:pointer}"
    "svg.plot{border:1px solid #eee;background:#fff}";

static void summary(kf_strbuf *b, const cJSON *a) {
    const cJSON *mo = get(a, "model"), *ca = get(a, "calibration"), *op = get(a, "options");
    const cJSON *ff = get(mo, "n_ff");
    kf_strbuf_puts(b, "<h1>kfuse analyze: ");
    kf_strbuf_escape(b, cJSON_GetStringValue(get(mo, "path")) ? cJSON_GetStringValue(get(mo, "path")) : "model");
    kf_strbuf_puts(b, "</h1>\n<table>\n");
    kf_strbuf_printf(b, "<tr><th class=l>architecture</th><td class=l>%s, %g layers, width %g, %.4g M parameters</td></tr>\n",
                     cJSON_GetStringValue(get(mo, "arch")) ? cJSON_GetStringValue(get(mo, "arch")) : "?",
                     num(mo, "n_layer"), num(mo, "n_embd"), num(mo, "n_params") / 1e6);
    kf_strbuf_puts(b, "<tr><th class=l>FFN widths</th><td class=l>");
    const cJSON *v;
    cJSON_ArrayForEach(v, ff) kf_strbuf_printf(b, "%g ", v->valuedouble);
    kf_strbuf_printf(b, "</td></tr>\n<tr><th class=l>calibration</th><td class=l>%g tokens (%g sequences of %g; "
                        "%g available), %g sampled tokens for k-means, %g rank(s)</td></tr>\n",
                     num(ca, "n_tokens"), num(ca, "n_sequences"), num(ca, "ctx"), num(ca, "n_tokens_available"),
                     num(ca, "sample_tokens"), num(ca, "ranks"));
    kf_strbuf_printf(b, "<tr><th class=l>recording</th><td class=l>%.2f s, %.0f tokens/s</td></tr>\n",
                     num(ca, "record_seconds"), num(ca, "tokens_per_s"));
    kf_strbuf_printf(b, "<tr><th class=l>options</th><td class=l>threshold t = %g, k = %s, epsilon = %g, seed %g</td></tr>\n",
                     num(op, "threshold"), num(op, "k") > 0 ? "given" : "auto (silhouette)", num(op, "epsilon"),
                     num(ca, "seed"));
    kf_strbuf_printf(b, "<tr><th class=l>fingerprint</th><td class=l>%s</td></tr>\n</table>\n",
                     cJSON_GetStringValue(get(mo, "fingerprint")) ? cJSON_GetStringValue(get(mo, "fingerprint")) : "");
}

static void layer_section(kf_strbuf *b, const cJSON *a) {
    const cJSON *ly = get(a, "layers");
    int R, R2;
    double *cka = matrix(get(ly, "cka"), &R, &R2);
    if (!cka || R != R2) {
        free(cka);
        return;
    }
    const char *labels[MAX_SERIES];
    int nl = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, get(ly, "labels")) if (nl < MAX_SERIES) labels[nl++] = cJSON_GetStringValue(v);
    double bi[MAX_SERIES];
    int nb = nums(get(ly, "block_influence"), bi, MAX_SERIES);
    kf_strbuf_puts(b, "<h2>Layer similarity</h2>\n<p class=note>Linear CKA between the residual stream after each block "
                      "(<i>emb</i> = embeddings, <i>Lk</i> = output of block k): 1 means the two representations "
                      "are the same up to rotation and scale. Block Influence (ShortGPT) = 1 &minus; mean cosine "
                      "between a block's input and output: blocks with low influence change the stream little and "
                      "are candidates for removal.</p>\n<div class=plots>\n");
    char title[96];
    snprintf(title, sizeof title, "Linear CKA (%s)", cJSON_GetStringValue(get(ly, "cka_method")) ? cJSON_GetStringValue(get(ly, "cka_method")) : "");
    kf_plot_opts ho = {.title = title, .width = 460, .height = 420};
    kf_svg_heatmap(b, &ho, cka, R, R, nl == R ? labels : NULL, nl == R ? labels : NULL, 0, 1);
    const char *bl[MAX_SERIES];
    char bls[MAX_SERIES][12];
    for (int l = 0; l < nb; l++) {
        snprintf(bls[l], sizeof bls[l], "L%d", l);
        bl[l] = bls[l];
    }
    kf_plot_opts bo = {.title = "Block Influence", .xlabel = "block", .ylabel = "1 - mean cos(in, out)", .width = 420, .height = 300};
    kf_svg_bars(b, &bo, bi, nb, bl);
    kf_strbuf_puts(b, "</div>\n");
    // adjacent-layer summary
    int most = -1, least = -1;
    for (int l = 0; l < nb; l++) {
        if (most < 0 || bi[l] < bi[most]) most = l;
        if (least < 0 || bi[l] > bi[least]) least = l;
    }
    if (most >= 0 && most + 1 < R)
        kf_strbuf_printf(b, "<p>Most redundant block: <b>L%d</b> (Block Influence %.4f, CKA(in, out) %.4f). "
                            "Least redundant: <b>L%d</b> (Block Influence %.4f, CKA(in, out) %.4f).</p>\n",
                         most, bi[most], cka[most * R + most + 1], least, bi[least], cka[least * R + least + 1]);
    free(cka);
}

static void redundancy_section(kf_strbuf *b, const cJSON *a) {
    const cJSON *red = get(a, "redundancy"), *op = get(a, "options");
    double t[16];
    int nt = nums(get(red, "t"), t, 16), L, nt2, R, nt3;
    double *ffn = matrix(get(red, "ffn"), &L, &nt2), *res = matrix(get(red, "resid"), &R, &nt3);
    if (!ffn || !res || nt2 != nt || nt3 != nt || L > MAX_SERIES || R + 1 > MAX_SERIES) {
        free(ffn);
        free(res);
        return;
    }
    kf_strbuf_printf(b, "<h2>Neuron redundancy (correlation clustering)</h2>\n<p class=note>Dalvi et al. (2020): neurons "
                        "are clustered by average linkage on 1 &minus; |Pearson &rho;| over the calibration tokens and "
                        "the tree is cut at distance t. A neuron is redundant when another neuron of its cluster stands "
                        "for it, so the share of redundant neurons is (n &minus; clusters) / n. Larger t merges more.</p>\n"
                        "<div class=plots>\n");
    const char *names[MAX_SERIES];
    char nm[MAX_SERIES][16];
    for (int l = 0; l < L; l++) {
        snprintf(nm[l], sizeof nm[l], "FFN L%d", l);
        names[l] = nm[l];
    }
    kf_plot_opts o1 = {.title = "FFN neurons: redundant share vs t", .xlabel = "threshold t", .ylabel = "redundant share"};
    kf_svg_lines(b, &o1, t, nt, ffn, L, names);
    double *rs = malloc((size_t)(R + 1) * nt * sizeof *rs);
    const char *rn[MAX_SERIES];
    char rnm[MAX_SERIES][24];
    int ns = R;
    if (rs) {
        memcpy(rs, res, (size_t)R * nt * sizeof *rs);
        for (int r = 0; r < R; r++) {
            if (r == 0) snprintf(rnm[r], sizeof rnm[r], "emb");
            else snprintf(rnm[r], sizeof rnm[r], "resid L%d", r - 1);
            rn[r] = rnm[r];
        }
        if (nums(get(red, "resid_all"), rs + (size_t)R * nt, nt) == nt) {
            rn[R] = "all layers";
            ns = R + 1;
        }
        kf_plot_opts o2 = {.title = "Residual stream: redundant share vs t", .xlabel = "threshold t", .ylabel = "redundant share"};
        kf_svg_lines(b, &o2, t, nt, rs, ns, rn);
    }
    kf_strbuf_puts(b, "</div>\n");
    double at[MAX_SERIES], fs[MAX_SERIES], rsec[MAX_SERIES];
    nums(get(red, "ffn_at_threshold"), at, L);
    nums(get(red, "ffn_seconds"), fs, L);
    nums(get(red, "resid_seconds"), rsec, R);
    kf_strbuf_printf(b, "<table><tr><th class=l>layer</th><th>FFN neurons</th><th>redundant at t = %g</th>"
                        "<th>FFN clustering ms</th><th>residual redundant at t = %g</th><th>residual clustering ms</th></tr>\n",
                     num(op, "threshold"), num(op, "threshold"));
    const cJSON *ffw = get(get(a, "model"), "n_ff");
    int ti = (int)lround(num(op, "threshold") * 10) - 1; // headline grid index, when t is on it
    for (int l = 0; l < L; l++) {
        const cJSON *w = cJSON_GetArrayItem(ffw, l);
        kf_strbuf_printf(b, "<tr><td class=l>L%d</td><td>%g</td><td>%.1f%%</td><td>%.1f</td>", l, w ? w->valuedouble : NAN,
                         100 * at[l], 1000 * fs[l]);
        if (ti >= 0 && ti < nt && fabs((ti + 1) / 10.0 - num(op, "threshold")) < 1e-9)
            kf_strbuf_printf(b, "<td>%.1f%%</td>", 100 * res[(size_t)(l + 1) * nt + ti]);
        else kf_strbuf_puts(b, "<td>&ndash;</td>");
        kf_strbuf_printf(b, "<td>%.2f</td></tr>\n", 1000 * rsec[l + 1]);
    }
    kf_strbuf_puts(b, "</table>\n");
    if (ns == R + 1)
        kf_strbuf_printf(b, "<p>Whole residual stream across layers (%g neurons, cross-layer correlations from the "
                            "joint covariance): %.1f%% redundant at t = %g; clustering took %.3f s.</p>\n",
                         num(red, "resid_all_n"), 100 * num(red, "resid_all_at_threshold"), num(op, "threshold"),
                         num(red, "resid_all_seconds"));
    free(rs);
    free(ffn);
    free(res);
}

static void threshold_section(kf_strbuf *b, const cJSON *a) {
    const cJSON *thr = get(a, "thresholds"), *e;
    int L = cJSON_GetArraySize(get(thr, "layers"));
    if (L < 1 || L > MAX_SERIES) return;
    kf_strbuf_printf(b, "<h2>Dynamic per-layer thresholds</h2>\n<p class=note>For each layer, the largest t (on a grid of "
                        "step 0.01) such that merging every cluster of the cut, and of every smaller cut, into one "
                        "representative neuron (the others predicted by least squares, a<sub>j</sub> &asymp; "
                        "&beta;<sub>j</sub> a<sub>r</sub> + c<sub>j</sub>) keeps the FFN output's relative error "
                        "E&#8214;W<sub>down</sub>(a &minus; &acirc;)&#8214;&sup2; / E&#8214;W<sub>down</sub> a&#8214;&sup2; "
                        "&le; &epsilon; = %g, estimated from the second moments.</p>\n",
                     num(thr, "epsilon"));
    kf_strbuf_puts(b, "<div class=plots><table><tr><th class=l>layer</th><th>t</th><th>width</th><th>of</th>"
                      "<th>kept</th><th>rel. error</th></tr>\n");
    double *curves = NULL;
    int ng = 0, l = 0;
    cJSON_ArrayForEach(e, get(thr, "layers")) {
        double t = num(e, "t"), w = num(e, "width"), f = num(e, "n_ff");
        if (isfinite(t))
            kf_strbuf_printf(b, "<tr><td class=l>L%g</td><td>%.2f</td><td>%g</td><td>%g</td><td>%.1f%%</td><td>%.4f</td></tr>\n",
                             num(e, "layer"), t, w, f, 100 * w / f, num(e, "rel_err"));
        else
            kf_strbuf_printf(b, "<tr><td class=l>L%g</td><td>none</td><td>%g</td><td>%g</td><td>100%%</td><td>&ndash;</td></tr>\n",
                             num(e, "layer"), w, f);
        const cJSON *cv = get(e, "err_curve");
        if (!curves) {
            ng = cJSON_GetArraySize(cv);
            curves = ng > 0 ? calloc((size_t)L * ng, sizeof *curves) : NULL;
        }
        if (curves && nums(cv, curves + (size_t)l * ng, ng) == ng)
            for (int i = 0; i < ng; i++) curves[(size_t)l * ng + i] = fmin(curves[(size_t)l * ng + i], 1.0);
        l++;
    }
    kf_strbuf_puts(b, "</table>\n");
    if (curves) {
        double *x = malloc((size_t)ng * sizeof *x);
        const char *names[MAX_SERIES];
        char nm[MAX_SERIES][16];
        for (int i = 0; i < L; i++) {
            snprintf(nm[i], sizeof nm[i], "FFN L%d", i);
            names[i] = nm[i];
        }
        if (x) {
            for (int i = 0; i < ng; i++) x[i] = i / (double)(ng - 1);
            kf_plot_opts o = {.title = "Relative FFN output error vs t (clipped at 1)", .xlabel = "threshold t",
                              .ylabel = "relative error", .width = 600};
            kf_svg_lines(b, &o, x, ng, curves, L, names);
        }
        free(x);
        free(curves);
    }
    kf_strbuf_puts(b, "</div>\n");
}

static void contexts_table(kf_strbuf *b, const cJSON *kind, int max_clusters, int max_ctx) {
    const cJSON *ctxs = get(kind, "contexts");
    double sizes[4096], mac[4096];
    int k = nums(get(kind, "sizes"), sizes, 4096);
    nums(get(kind, "mean_abs_corr"), mac, 4096);
    if (!ctxs || k < 1) return;
    int order[4096];
    for (int c = 0; c < k; c++) order[c] = c;
    for (int i = 1; i < k; i++) // by size, descending
        for (int j = i; j > 0 && sizes[order[j]] > sizes[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    kf_strbuf_puts(b, "<table><tr><th class=l>cluster</th><th>size</th><th>mean |&rho;|</th>"
                      "<th class=l>top activating contexts (token highlighted, &plusmn;4 tokens)</th></tr>\n");
    for (int q = 0; q < k && q < max_clusters; q++) {
        int c = order[q];
        kf_strbuf_printf(b, "<tr><td class=l>%d</td><td>%g</td><td>%.3f</td><td class=ctx>", c, sizes[c], mac[c]);
        const cJSON *e;
        int n = 0;
        cJSON_ArrayForEach(e, cJSON_GetArrayItem(ctxs, c)) {
            if (n++ == max_ctx) break;
            text_cell(b, cJSON_GetStringValue(get(e, "left")));
            kf_strbuf_puts(b, "<b>");
            text_cell(b, cJSON_GetStringValue(get(e, "token")));
            kf_strbuf_puts(b, "</b>");
            text_cell(b, cJSON_GetStringValue(get(e, "right")));
            kf_strbuf_printf(b, " <span class=nl>(%.2f)</span>\n", num(e, "score"));
        }
        kf_strbuf_puts(b, "</td></tr>\n");
    }
    kf_strbuf_puts(b, "</table>\n");
}

static void sizes_plot(kf_strbuf *b, const cJSON *kind, const char *title) {
    double sizes[4096];
    int k = nums(get(kind, "sizes"), sizes, 4096);
    for (int i = 1; i < k; i++)
        for (int j = i; j > 0 && sizes[j] > sizes[j - 1]; j--) {
            double t = sizes[j];
            sizes[j] = sizes[j - 1];
            sizes[j - 1] = t;
        }
    kf_plot_opts o = {.title = title, .xlabel = "clusters, largest first", .ylabel = "neurons", .width = 420, .height = 260};
    kf_svg_bars(b, &o, sizes, k, NULL);
}

static void cluster_section(kf_strbuf *b, const cJSON *a) {
    const cJSON *cl = get(get(a, "clusters"), "layers"), *e;
    if (!cl) return;
    kf_strbuf_puts(b, "<h2>Concept clusters (k-means)</h2>\n<p class=note>Per layer, k-means (k-means++, restarts, "
                      "seeded) on the FFN neurons, twice: on activation profiles (a neuron = its standardised "
                      "activations over the sampled calibration tokens) and on weight vectors (its gate and up input "
                      "rows, concatenated and scaled to unit length). Quality: silhouette, and per cluster the mean "
                      "|&rho;| between its members. A cluster's contexts are the calibration tokens where the mean "
                      "standardised activation of its members is highest.</p>\n");
    kf_strbuf_puts(b, "<table><tr><th class=l>layer</th><th>k (activation)</th><th>silhouette</th>"
                      "<th>k (weight)</th><th>silhouette</th></tr>\n");
    cJSON_ArrayForEach(e, cl) {
        const cJSON *ac = get(e, "activation"), *wg = get(e, "weight");
        kf_strbuf_printf(b, "<tr><td class=l>L%g</td><td>%g</td><td>%.4f</td><td>%g</td><td>%.4f</td></tr>\n",
                         num(e, "layer"), num(ac, "k"), num(ac, "silhouette"), num(wg, "k"), num(wg, "silhouette"));
    }
    kf_strbuf_puts(b, "</table>\n");
    int first = 1;
    cJSON_ArrayForEach(e, cl) {
        const cJSON *ac = get(e, "activation"), *wg = get(e, "weight");
        kf_strbuf_printf(b, "<details%s><summary><b>Layer L%g</b>: %g activation clusters (silhouette %.3f), "
                            "%g weight clusters (silhouette %.3f)</summary>\n<div class=plots>\n",
                         first ? " open" : "", num(e, "layer"), num(ac, "k"), num(ac, "silhouette"), num(wg, "k"),
                         num(wg, "silhouette"));
        first = 0;
        sizes_plot(b, ac, "Activation clusters: sizes");
        sizes_plot(b, wg, "Weight clusters: sizes");
        kf_strbuf_puts(b, "</div>\n<h3>Activation clusters</h3>\n");
        contexts_table(b, ac, 16, 3);
        kf_strbuf_puts(b, "<h3>Weight clusters</h3>\n");
        contexts_table(b, wg, 8, 2);
        kf_strbuf_puts(b, "</details>\n");
    }
}

static kf_status write_file(const char *dir, const char *name, const char *text, kf_error *err) {
    char path[1024];
    if (!kf_path_join(path, sizeof path, dir, name)) return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    FILE *f = fopen(path, "wb");
    if (!f) return kf_error_set(err, KF_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n;
    if (fclose(f) != 0) ok = 0;
    return ok ? KF_OK : kf_error_set(err, KF_ERR_IO, "%s: write failed", path);
}

kf_status kf_report_analysis_write(const cJSON *a, const char *dir, kf_error *err) {
    char *json = cJSON_Print(a);
    if (!json) return kf_error_set(err, KF_ERR_NOMEM, "report: out of memory printing analysis.json");
    kf_status st = write_file(dir, "analysis.json", json, err);
    free(json);
    if (st != KF_OK) return st;
    kf_strbuf b = {0};
    kf_strbuf_printf(&b, "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>kfuse analyze</title>"
                         "<style>%s</style></head><body>\n",
                     CSS);
    summary(&b, a);
    layer_section(&b, a);
    redundancy_section(&b, a);
    threshold_section(&b, a);
    cluster_section(&b, a);
    kf_strbuf_puts(&b, "<p class=note>Every number on this page is in analysis.json beside it "
                       "(schema: docs/analysis-json.md).</p>\n</body></html>\n");
    if (b.oom) {
        kf_strbuf_free(&b);
        return kf_error_set(err, KF_ERR_NOMEM, "report: out of memory building report.html");
    }
    st = write_file(dir, "report.html", b.s, err);
    kf_strbuf_free(&b);
    return st;
}

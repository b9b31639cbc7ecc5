#include "report/analysis_report.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/strbuf.h"
#include "report/analysis_json.h"
#include "report/svg.h"

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

static void summary(kf_strbuf *b, const kf_analysis_result *a) {
    kf_strbuf_puts(b, "<h1>kfuse analyze: ");
    kf_strbuf_escape(b, a->model_path ? a->model_path : "model");
    kf_strbuf_puts(b, "</h1>\n<table>\n");
    kf_strbuf_printf(b, "<tr><th class=l>architecture</th><td class=l>%s, %g layers, width %g, %.4g M parameters</td></tr>\n",
                     a->arch ? a->arch : "?", (double)a->n_layer, (double)a->n_embd, (double)a->n_params / 1e6);
    kf_strbuf_puts(b, "<tr><th class=l>FFN widths</th><td class=l>");
    for (int l = 0; l < a->n_layer; l++) kf_strbuf_printf(b, "%g ", (double)a->layers[l].n_ff);
    kf_strbuf_printf(b, "</td></tr>\n<tr><th class=l>calibration</th><td class=l>%g tokens (%g sequences of %g; "
                        "%g available), %g sampled tokens for k-means, %g rank(s)</td></tr>\n",
                     (double)a->n_tokens, (double)a->n_sequences, (double)a->ctx, (double)a->n_tokens_available,
                     (double)a->sample_tokens, (double)a->ranks);
    kf_strbuf_printf(b, "<tr><th class=l>recording</th><td class=l>%.2f s, %.0f tokens/s</td></tr>\n", a->record_seconds,
                     a->tokens_per_s);
    kf_strbuf_printf(b, "<tr><th class=l>options</th><td class=l>threshold t = %g, k = %s, epsilon = %g, seed %g</td></tr>\n",
                     a->threshold, a->k > 0 ? "given" : "auto (silhouette)", a->epsilon, (double)a->seed);
    char fp[24];
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)a->fingerprint);
    kf_strbuf_printf(b, "<tr><th class=l>fingerprint</th><td class=l>%s</td></tr>\n</table>\n", fp);
}

// Series names "<prefix><l>" for l < n, in names (n pointers) over one block.
static char *series_names(const char *prefix, int n, const char **names) {
    const size_t w = strlen(prefix) + 12;
    char *buf = malloc((size_t)n * w + 1);
    for (int l = 0; buf && l < n; l++) {
        snprintf(buf + (size_t)l * w, w, "%s%d", prefix, l);
        names[l] = buf + (size_t)l * w;
    }
    return buf;
}

static void layer_section(kf_strbuf *b, const kf_analysis_result *a) {
    const int L = a->n_layer, R = L + 1;
    const double *cka = a->cka;
    const char **labels = malloc((size_t)R * sizeof *labels), **bl = malloc((size_t)L * sizeof *bl);
    double *bi = malloc((size_t)L * sizeof *bi);
    char *lbuf = labels ? series_names("L", L, labels + 1) : NULL, *bbuf = bl ? series_names("L", L, bl) : NULL;
    if (!labels || !bl || !bi || !lbuf || !bbuf) {
        b->oom = 1;
        goto done;
    }
    labels[0] = "emb";
    for (int l = 0; l < L; l++) bi[l] = a->layers[l].block_influence;
    kf_strbuf_puts(b, "<h2>Layer similarity</h2>\n<p class=note>Linear CKA between the residual stream after each block "
                      "(<i>emb</i> = embeddings, <i>Lk</i> = output of block k): 1 means the two representations "
                      "are the same up to rotation and scale. Block Influence (ShortGPT) = 1 &minus; mean cosine "
                      "between a block's input and output: blocks with low influence change the stream little and "
                      "are candidates for removal.</p>\n<div class=plots>\n");
    char title[96];
    snprintf(title, sizeof title, "Linear CKA (%s)", a->cka_exact ? "exact" : "minibatch");
    kf_plot_opts ho = {.title = title, .width = 460, .height = 420};
    kf_svg_heatmap(b, &ho, cka, R, R, labels, labels, 0, 1);
    kf_plot_opts bo = {.title = "Block Influence", .xlabel = "block", .ylabel = "1 - mean cos(in, out)", .width = 420, .height = 300};
    kf_svg_bars(b, &bo, bi, L, bl);
    kf_strbuf_puts(b, "</div>\n");
    // adjacent-layer summary
    int most = -1, least = -1;
    for (int l = 0; l < L; l++) {
        if (most < 0 || bi[l] < bi[most]) most = l;
        if (least < 0 || bi[l] > bi[least]) least = l;
    }
    kf_strbuf_printf(b, "<p>Most redundant block: <b>L%d</b> (Block Influence %.4f, CKA(in, out) %.4f). "
                        "Least redundant: <b>L%d</b> (Block Influence %.4f, CKA(in, out) %.4f).</p>\n",
                     most, bi[most], cka[most * R + most + 1], least, bi[least], cka[least * R + least + 1]);
done:
    free(labels);
    free(bl);
    free(bi);
    free(lbuf);
    free(bbuf);
}

static void redundancy_section(kf_strbuf *b, const kf_analysis_result *a) {
    const int L = a->n_layer, R = L + 1, nt = KF_ANALYSIS_N_T;
    double t[KF_ANALYSIS_N_T];
    for (int i = 0; i < nt; i++) t[i] = (i + 1) / 10.0;
    double *ffn = malloc((size_t)L * nt * sizeof *ffn), *rs = malloc((size_t)(R + 1) * nt * sizeof *rs);
    const char **names = malloc((size_t)L * sizeof *names), **rn = malloc((size_t)(R + 1) * sizeof *rn);
    char *nbuf = names ? series_names("FFN L", L, names) : NULL, *rbuf = rn ? series_names("resid L", L, rn + 1) : NULL;
    if (!ffn || !rs || !names || !rn || !nbuf || !rbuf) {
        b->oom = 1;
        goto done;
    }
    for (int l = 0; l < L; l++) memcpy(ffn + (size_t)l * nt, a->layers[l].redundancy, sizeof a->layers[l].redundancy);
    kf_strbuf_printf(b, "<h2>Neuron redundancy (correlation clustering)</h2>\n<p class=note>Dalvi et al. (2020): neurons "
                        "are clustered by average linkage on 1 &minus; |Pearson &rho;| over the calibration tokens and "
                        "the tree is cut at distance t. A neuron is redundant when another neuron of its cluster stands "
                        "for it, so the share of redundant neurons is (n &minus; clusters) / n. Larger t merges more.</p>\n"
                        "<div class=plots>\n");
    kf_plot_opts o1 = {.title = "FFN neurons: redundant share vs t", .xlabel = "threshold t", .ylabel = "redundant share"};
    kf_svg_lines(b, &o1, t, nt, ffn, L, names);
    memcpy(rs, a->resid_redundancy, (size_t)R * nt * sizeof *rs);
    rn[0] = "emb";
    int ns = R;
    if (a->has_resid_all) {
        memcpy(rs + (size_t)R * nt, a->resid_all, sizeof a->resid_all);
        rn[R] = "all layers";
        ns = R + 1;
    }
    kf_plot_opts o2 = {.title = "Residual stream: redundant share vs t", .xlabel = "threshold t", .ylabel = "redundant share"};
    kf_svg_lines(b, &o2, t, nt, rs, ns, rn);
    kf_strbuf_puts(b, "</div>\n");
    kf_strbuf_printf(b, "<table><tr><th class=l>layer</th><th>FFN neurons</th><th>redundant at t = %g</th>"
                        "<th>FFN clustering ms</th><th>residual redundant at t = %g</th><th>residual clustering ms</th></tr>\n",
                     a->threshold, a->threshold);
    int ti = (int)lround(a->threshold * 10) - 1; // headline grid index, when t is on it
    for (int l = 0; l < L; l++) {
        const kf_analysis_layer *ly = &a->layers[l];
        kf_strbuf_printf(b, "<tr><td class=l>L%d</td><td>%g</td><td>%.1f%%</td><td>%.1f</td>", l, (double)ly->n_ff,
                         100 * ly->redundancy_at_threshold, 1000 * ly->clustering_seconds);
        if (ti >= 0 && ti < nt && fabs((ti + 1) / 10.0 - a->threshold) < 1e-9)
            kf_strbuf_printf(b, "<td>%.1f%%</td>", 100 * a->resid_redundancy[(size_t)(l + 1) * nt + ti]);
        else kf_strbuf_puts(b, "<td>&ndash;</td>");
        kf_strbuf_printf(b, "<td>%.2f</td></tr>\n", 1000 * a->resid_seconds[l + 1]);
    }
    kf_strbuf_puts(b, "</table>\n");
    if (a->has_resid_all)
        kf_strbuf_printf(b, "<p>Whole residual stream across layers (%g neurons, cross-layer correlations from the "
                            "joint covariance): %.1f%% redundant at t = %g; clustering took %.3f s.</p>\n",
                         (double)a->resid_all_n, 100 * a->resid_all_at_threshold, a->threshold, a->resid_all_seconds);
done:
    free(ffn);
    free(rs);
    free(names);
    free(rn);
    free(nbuf);
    free(rbuf);
}

static void threshold_section(kf_strbuf *b, const kf_analysis_result *a) {
    const int L = a->n_layer, ng = KF_ANALYSIS_N_GRID;
    kf_strbuf_printf(b, "<h2>Dynamic per-layer thresholds</h2>\n<p class=note>For each layer, the largest t (on a grid of "
                        "step 0.01) such that merging every cluster of the cut, and of every smaller cut, into one "
                        "representative neuron (the others predicted by least squares, a<sub>j</sub> &asymp; "
                        "&beta;<sub>j</sub> a<sub>r</sub> + c<sub>j</sub>) keeps the FFN output's relative error "
                        "E&#8214;W<sub>down</sub>(a &minus; &acirc;)&#8214;&sup2; / E&#8214;W<sub>down</sub> a&#8214;&sup2; "
                        "&le; &epsilon; = %g, estimated from the second moments.</p>\n",
                     a->epsilon);
    kf_strbuf_puts(b, "<div class=plots><table><tr><th class=l>layer</th><th>t</th><th>width</th><th>of</th>"
                      "<th>kept</th><th>rel. error</th></tr>\n");
    for (int l = 0; l < L; l++) {
        const kf_analysis_layer *e = &a->layers[l];
        double w = e->width, f = e->n_ff;
        if (isfinite(e->t))
            kf_strbuf_printf(b, "<tr><td class=l>L%g</td><td>%.2f</td><td>%g</td><td>%g</td><td>%.1f%%</td><td>%.4f</td></tr>\n",
                             (double)l, e->t, w, f, 100 * w / f, e->rel_err);
        else
            kf_strbuf_printf(b, "<tr><td class=l>L%g</td><td>none</td><td>%g</td><td>%g</td><td>100%%</td><td>&ndash;</td></tr>\n",
                             (double)l, w, f);
    }
    kf_strbuf_puts(b, "</table>\n");
    double *curves = malloc((size_t)L * ng * sizeof *curves), x[KF_ANALYSIS_N_GRID];
    const char **names = malloc((size_t)L * sizeof *names);
    char *nbuf = names ? series_names("FFN L", L, names) : NULL;
    if (!curves || !names || !nbuf) {
        b->oom = 1;
    } else {
        for (int l = 0; l < L; l++)
            for (int i = 0; i < ng; i++) curves[(size_t)l * ng + i] = fmin(a->layers[l].err_curve[i], 1.0);
        for (int i = 0; i < ng; i++) x[i] = i / (double)(ng - 1);
        kf_plot_opts o = {.title = "Relative FFN output error vs t (clipped at 1)", .xlabel = "threshold t",
                          .ylabel = "relative error", .width = 600};
        kf_svg_lines(b, &o, x, ng, curves, L, names);
    }
    free(curves);
    free(names);
    free(nbuf);
    kf_strbuf_puts(b, "</div>\n");
}

// Cluster indices of km by size, descending (stable), into order (k).
static void by_size(const kf_analysis_kmeans *km, int *order) {
    const int k = km->k;
    for (int c = 0; c < k; c++) order[c] = c;
    for (int i = 1; i < k; i++)
        for (int j = i; j > 0 && km->clusters[order[j]].size > km->clusters[order[j - 1]].size; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
}

static void contexts_table(kf_strbuf *b, const kf_analysis_kmeans *km, const int *order, int max_clusters, int max_ctx) {
    kf_strbuf_puts(b, "<table><tr><th class=l>cluster</th><th>size</th><th>mean |&rho;|</th>"
                      "<th class=l>top activating contexts (token highlighted, &plusmn;4 tokens)</th></tr>\n");
    for (int q = 0; q < km->k && q < max_clusters; q++) {
        const kf_analysis_cluster *cl = &km->clusters[order[q]];
        kf_strbuf_printf(b, "<tr><td class=l>%d</td><td>%g</td><td>%.3f</td><td class=ctx>", order[q], (double)cl->size,
                         cl->mean_abs_corr);
        for (int n = 0; n < cl->n_contexts && n < max_ctx; n++) {
            const kf_analysis_context *e = &cl->contexts[n];
            text_cell(b, e->left);
            kf_strbuf_puts(b, "<b>");
            text_cell(b, e->token);
            kf_strbuf_puts(b, "</b>");
            text_cell(b, e->right);
            kf_strbuf_printf(b, " <span class=nl>(%.2f)</span>\n", e->score);
        }
        kf_strbuf_puts(b, "</td></tr>\n");
    }
    kf_strbuf_puts(b, "</table>\n");
}

static void sizes_plot(kf_strbuf *b, const kf_analysis_kmeans *km, const int *order, const char *title) {
    double *sizes = malloc((size_t)km->k * sizeof *sizes);
    if (!sizes) {
        b->oom = 1;
        return;
    }
    for (int c = 0; c < km->k; c++) sizes[c] = km->clusters[order[c]].size;
    kf_plot_opts o = {.title = title, .xlabel = "clusters, largest first", .ylabel = "neurons", .width = 420, .height = 260};
    kf_svg_bars(b, &o, sizes, km->k, NULL);
    free(sizes);
}

static void cluster_section(kf_strbuf *b, const kf_analysis_result *a) {
    kf_strbuf_puts(b, "<h2>Concept clusters (k-means)</h2>\n<p class=note>Per layer, k-means (k-means++, restarts, "
                      "seeded) on the FFN neurons, twice: on activation profiles (a neuron = its standardised "
                      "activations over the sampled calibration tokens) and on weight vectors (its gate and up input "
                      "rows, concatenated and scaled to unit length). Quality: silhouette, and per cluster the mean "
                      "|&rho;| between its members. A cluster's contexts are the calibration tokens where the mean "
                      "standardised activation of its members is highest.</p>\n");
    kf_strbuf_puts(b, "<table><tr><th class=l>layer</th><th>k (activation)</th><th>silhouette</th>"
                      "<th>k (weight)</th><th>silhouette</th></tr>\n");
    for (int l = 0; l < a->n_layer; l++) {
        const kf_analysis_kmeans *ac = &a->layers[l].activation, *wg = &a->layers[l].weight;
        kf_strbuf_printf(b, "<tr><td class=l>L%g</td><td>%g</td><td>%.4f</td><td>%g</td><td>%.4f</td></tr>\n",
                         (double)l, (double)ac->k, ac->silhouette, (double)wg->k, wg->silhouette);
    }
    kf_strbuf_puts(b, "</table>\n");
    for (int l = 0; l < a->n_layer; l++) {
        const kf_analysis_kmeans *ac = &a->layers[l].activation, *wg = &a->layers[l].weight;
        int *oa = malloc((size_t)ac->k * sizeof *oa), *ow = malloc((size_t)wg->k * sizeof *ow);
        if (!oa || !ow) {
            free(oa);
            free(ow);
            b->oom = 1;
            return;
        }
        by_size(ac, oa);
        by_size(wg, ow);
        kf_strbuf_printf(b, "<details%s><summary><b>Layer L%g</b>: %g activation clusters (silhouette %.3f), "
                            "%g weight clusters (silhouette %.3f)</summary>\n<div class=plots>\n",
                         l == 0 ? " open" : "", (double)l, (double)ac->k, ac->silhouette, (double)wg->k, wg->silhouette);
        sizes_plot(b, ac, oa, "Activation clusters: sizes");
        sizes_plot(b, wg, ow, "Weight clusters: sizes");
        kf_strbuf_puts(b, "</div>\n<h3>Activation clusters</h3>\n");
        contexts_table(b, ac, oa, 16, 3);
        kf_strbuf_puts(b, "<h3>Weight clusters</h3>\n");
        contexts_table(b, wg, ow, 8, 2);
        kf_strbuf_puts(b, "</details>\n");
        free(oa);
        free(ow);
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

kf_status kf_report_analysis_write(const kf_analysis_result *a, const char *dir, kf_error *err) {
    cJSON *tree = kf_report_analysis_to_json(a);
    char *json = tree ? cJSON_Print(tree) : NULL;
    cJSON_Delete(tree);
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

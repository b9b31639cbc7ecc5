// probe.json and report.html (probe/report.h).
#include "probe/report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/strbuf.h"
#include "report/svg.h"

const char *kf_feat_kind_name(kf_feat_kind k) { return k == KF_FEAT_FFN ? "ffn" : "residual"; }
const char *kf_feat_agg_name(kf_feat_agg a) { return a == KF_AGG_FIRST ? "first" : a == KF_AGG_MEAN ? "mean" : "last"; }

static const char *split_names[3] = {"train", "dev", "test"};

// A number, or null for NAN (no control labels).
static void add_num(cJSON *o, const char *k, double v) {
    if (isnan(v)) cJSON_AddNullToObject(o, k);
    else cJSON_AddNumberToObject(o, k, v);
}

static cJSON *num_array(const double *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, isnan(v[i]) ? cJSON_CreateNull() : cJSON_CreateNumber(v[i]));
    return a;
}

static cJSON *int_array(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

cJSON *kf_probe_to_json(const kf_probe_info *in, const kf_dalvi_result *r) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "schema", "kfuse-probe/1");
    cJSON *m = cJSON_AddObjectToObject(o, "model");
    cJSON_AddStringToObject(m, "path", in->model_path);
    cJSON_AddStringToObject(m, "arch", in->arch);
    cJSON_AddNumberToObject(m, "n_layer", in->n_layer);
    cJSON_AddNumberToObject(m, "n_embd", in->n_embd);
    if (in->random_init) cJSON_AddNumberToObject(m, "random_init", (double)in->init_seed);
    else cJSON_AddNullToObject(m, "random_init");
    cJSON *t = cJSON_AddObjectToObject(o, "task");
    cJSON_AddStringToObject(t, "name", in->task);
    cJSON_AddStringToObject(t, "kind", in->kind == KF_TASK_TOKEN ? "token" : "sentence");
    cJSON *labels = cJSON_AddArrayToObject(t, "labels");
    for (int i = 0; i < in->labels->n; i++) cJSON_AddItemToArray(labels, cJSON_CreateString(in->labels->names[i]));
    cJSON *splits = cJSON_AddObjectToObject(t, "splits");
    for (int k = 0; k < 3; k++) {
        cJSON *s = cJSON_AddObjectToObject(splits, split_names[k]);
        cJSON_AddStringToObject(s, "path", in->paths[k]);
        cJSON_AddNumberToObject(s, "sentences", in->n_sent[k]);
        cJSON_AddNumberToObject(s, "items", (double)in->n_items[k]);
        cJSON_AddNumberToObject(s, "tokens", (double)in->extract[k].n_tokens);
        cJSON_AddNumberToObject(s, "padded", (double)in->extract[k].n_padded);
        cJSON_AddNumberToObject(s, "extract_seconds", in->extract[k].seconds);
        cJSON_AddNumberToObject(s, "extract_tokens_per_s",
                                in->extract[k].seconds > 0 ? (double)in->extract[k].n_tokens / in->extract[k].seconds : 0);
    }
    cJSON *op = cJSON_AddObjectToObject(o, "options");
    cJSON_AddStringToObject(op, "features", kf_feat_kind_name(in->features));
    cJSON_AddStringToObject(op, "aggregation", kf_feat_agg_name(in->agg));
    cJSON_AddStringToObject(op, "dtype", in->f16 ? "f16" : "f32");
    cJSON_AddNumberToObject(op, "l1", in->opts->lr.l1);
    cJSON_AddNumberToObject(op, "l2", in->opts->lr.l2);
    cJSON_AddBoolToObject(op, "balanced", in->opts->lr.balanced);
    cJSON_AddNumberToObject(op, "max_iter", in->opts->lr.max_iter);
    cJSON_AddNumberToObject(op, "tol", in->opts->lr.tol);
    cJSON_AddNumberToObject(op, "delta", in->opts->delta);
    cJSON_AddNumberToObject(op, "cc_threshold", in->opts->cc_threshold);
    cJSON_AddItemToObject(op, "grid", num_array(in->opts->grid, in->opts->n_grid));
    cJSON_AddBoolToObject(op, "control", in->control);
    cJSON_AddNumberToObject(op, "seed", (double)in->seed);
    cJSON_AddNumberToObject(op, "threads", in->threads);

    cJSON *res = cJSON_AddObjectToObject(o, "result");
    cJSON_AddNumberToObject(res, "n_neurons", (double)r->n_neurons);
    cJSON *bl = cJSON_AddObjectToObject(res, "blocks");
    cJSON_AddItemToObject(bl, "dev", num_array(r->block_dev, r->n_blocks));
    cJSON_AddItemToObject(bl, "test", num_array(r->block_test, r->n_blocks));
    cJSON_AddItemToObject(bl, "control", num_array(r->block_ctrl, r->n_blocks));
    double *sel = malloc(sizeof(double) * (size_t)r->n_blocks);
    for (int b = 0; sel && b < r->n_blocks; b++) sel[b] = r->block_test[b] - r->block_ctrl[b];
    if (sel) cJSON_AddItemToObject(bl, "selectivity", num_array(sel, r->n_blocks));
    free(sel);
    if (in->opts->blocks_only) goto runs;
    cJSON *or = cJSON_AddObjectToObject(res, "oracle");
    cJSON_AddNumberToObject(or, "dev", r->oracle_dev);
    cJSON_AddNumberToObject(or, "test", r->oracle_test);
    add_num(or, "control", r->oracle_ctrl);
    cJSON *ls = cJSON_AddObjectToObject(res, "layer_selector");
    cJSON_AddNumberToObject(ls, "blocks_kept", r->ls_blocks);
    cJSON_AddItemToObject(ls, "prefix_dev", num_array(r->prefix_dev, r->n_blocks));
    cJSON_AddNumberToObject(ls, "dev", r->ls_dev);
    cJSON_AddNumberToObject(ls, "test", r->ls_test);
    cJSON *cc = cJSON_AddObjectToObject(res, "correlation_clustering");
    cJSON_AddNumberToObject(cc, "neurons", r->cc_neurons);
    cJSON_AddNumberToObject(cc, "dev", r->cc_dev);
    cJSON_AddNumberToObject(cc, "test", r->cc_test);
    cJSON *fs = cJSON_AddObjectToObject(res, "feature_selection");
    cJSON_AddItemToObject(fs, "grid_neurons", int_array(r->grid_n, in->opts->n_grid));
    cJSON_AddItemToObject(fs, "grid_dev", num_array(r->grid_dev, in->opts->n_grid));
    cJSON_AddItemToObject(fs, "grid_test", num_array(r->grid_test, in->opts->n_grid));
    cJSON *fin = cJSON_AddObjectToObject(res, "final");
    cJSON_AddNumberToObject(fin, "neurons", r->n_selected);
    cJSON_AddNumberToObject(fin, "neurons_share", (double)r->n_selected / (double)r->n_neurons);
    cJSON_AddNumberToObject(fin, "dev", r->final_dev);
    cJSON_AddNumberToObject(fin, "test", r->final_test);
    cJSON_AddNumberToObject(fin, "of_oracle", r->final_test / r->oracle_test);
    add_num(fin, "control", r->final_ctrl);
    add_num(fin, "selectivity", r->selectivity);
    cJSON_AddItemToObject(fin, "per_block", int_array(r->selected_per_block, r->n_blocks));
    cJSON *nr = cJSON_AddArrayToObject(fin, "columns");
    for (int j = 0; j < r->n_selected; j++) cJSON_AddItemToArray(nr, cJSON_CreateNumber((double)r->selected[j]));
    cJSON *cf = cJSON_AddArrayToObject(fin, "confusion");
    for (int a = 0; a < r->n_classes; a++) {
        cJSON *row = cJSON_CreateArray();
        for (int b = 0; b < r->n_classes; b++)
            cJSON_AddItemToArray(row, cJSON_CreateNumber((double)r->confusion[(int64_t)a * r->n_classes + b]));
        cJSON_AddItemToArray(cf, row);
    }
runs:;
    cJSON *runs = cJSON_AddArrayToObject(res, "runs");
    for (int i = 0; i < r->n_runs; i++) {
        const kf_probe_run *p = &r->runs[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", p->name);
        cJSON_AddNumberToObject(e, "features", p->n_features);
        cJSON_AddNumberToObject(e, "iterations", p->iters);
        cJSON_AddBoolToObject(e, "converged", p->converged);
        cJSON_AddNumberToObject(e, "objective", p->objective);
        cJSON_AddNumberToObject(e, "seconds", p->seconds);
        cJSON_AddNumberToObject(e, "dev", p->dev_acc);
        cJSON_AddNumberToObject(e, "test", p->test_acc);
        cJSON_AddItemToArray(runs, e);
    }
    cJSON_AddNumberToObject(res, "seconds", r->seconds);
    return o;
}

static kf_status write_text(const char *dir, const char *name, const char *text, kf_error *err) {
    char path[1024], tmp[1100];
    if (!kf_path_join(path, sizeof path, dir, name)) return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    FILE *f;
    kf_status s = kf_file_begin(path, tmp, sizeof tmp, &f, err);
    if (s != KF_OK) return s;
    size_t n = strlen(text);
    return kf_file_commit(f, fwrite(text, 1, n, f) == n, tmp, path, err);
}

static const char *CSS =
    "body{font-family:sans-serif;max-width:1180px;margin:24px auto;padding:0 16px;color:#222;line-height:1.4}"
    "h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}"
    "table{border-collapse:collapse;margin:8px 0;font-size:13px}"
    "td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}"
    ".plots{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}.note{color:#555;font-size:13px;max-width:900px}"
    "svg.plot{border:1px solid #eee;background:#fff}";

static void row(kf_strbuf *b, const char *what, const char *fmt, double v) {
    kf_strbuf_printf(b, "<tr><th class=l>%s</th><td>", what);
    if (isnan(v)) kf_strbuf_puts(b, "&ndash;");
    else kf_strbuf_printf(b, fmt, v);
    kf_strbuf_puts(b, "</td></tr>\n");
}

static void html(kf_strbuf *b, const kf_probe_info *in, const kf_dalvi_result *r) {
    const int nb = r->n_blocks;
    kf_strbuf_printf(b, "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>kfuse probe</title>"
                        "<style>%s</style></head><body>\n<h1>kfuse probe: ", CSS);
    kf_strbuf_escape(b, in->task);
    kf_strbuf_puts(b, " on ");
    kf_strbuf_escape(b, in->model_path);
    if (in->random_init)
        kf_strbuf_printf(b, " re-initialised at random (seed %llu, the untrained control)",
                         (unsigned long long)in->init_seed);
    kf_strbuf_puts(b, "</h1>\n<table>\n");
    for (int k = 0; k < 3; k++) {
        kf_strbuf_printf(b, "<tr><th class=l>%s</th><td class=l>", split_names[k]);
        kf_strbuf_escape(b, in->paths[k]);
        kf_strbuf_printf(b, ": %d sentences, %lld items, %lld tokens (%.0f tokens/s extracted)</td></tr>\n",
                         in->n_sent[k], (long long)in->n_items[k], (long long)in->extract[k].n_tokens,
                         in->extract[k].seconds > 0 ? (double)in->extract[k].n_tokens / in->extract[k].seconds : 0.0);
    }
    kf_strbuf_printf(b, "<tr><th class=l>neurons</th><td class=l>%s, %lld in %d blocks; %d labels; sub-words: %s</td></tr>\n",
                     kf_feat_kind_name(in->features), (long long)r->n_neurons, nb, in->labels->n,
                     kf_feat_agg_name(in->agg));
    kf_strbuf_puts(b, "</table>\n");
    if (!in->opts->blocks_only) {
    kf_strbuf_puts(b, "<h2>Dalvi et al. table</h2>\n<table>\n");
    row(b, "oracle accuracy (test)", "%.4f", r->oracle_test);
    row(b, "oracle control accuracy", "%.4f", r->oracle_ctrl);
    row(b, "blocks kept (LayerSelector)", "%.0f", (double)r->ls_blocks);
    row(b, "LS accuracy", "%.4f", r->ls_test);
    row(b, "neurons after correlation clustering", "%.0f", (double)r->cc_neurons);
    row(b, "LS+CC accuracy", "%.4f", r->cc_test);
    row(b, "neurons kept", "%.0f", (double)r->n_selected);
    row(b, "% of all neurons", "%.2f", 100.0 * (double)r->n_selected / (double)r->n_neurons);
    row(b, "final accuracy", "%.4f", r->final_test);
    row(b, "% of oracle", "%.2f", 100.0 * r->final_test / r->oracle_test);
    row(b, "final control accuracy", "%.4f", r->final_ctrl);
    row(b, "selectivity", "%.4f", r->selectivity);
    kf_strbuf_puts(b, "</table>\n");
    }
    kf_strbuf_puts(b, "<div class=plots>\n");

    // per-block accuracy with the oracle and control lines
    double *x = malloc(sizeof(double) * (size_t)(nb > in->opts->n_grid ? nb : in->opts->n_grid) + sizeof(double));
    double *y = malloc(sizeof(double) * 3 * (size_t)nb + sizeof(double));
    if (x && y) {
        // series: the block probes, then the oracle (a flat line) and the control probes when run
        int ns = 0;
        const char *names[3];
        for (int i = 0; i < nb; i++) x[i] = i, y[i] = r->block_test[i];
        names[ns++] = "block probe";
        if (!isnan(r->oracle_test)) {
            for (int i = 0; i < nb; i++) y[ns * nb + i] = r->oracle_test;
            names[ns++] = "oracle";
        }
        if (!isnan(r->block_ctrl[0])) {
            for (int i = 0; i < nb; i++) y[ns * nb + i] = r->block_ctrl[i];
            names[ns++] = "control";
        }
        kf_plot_opts po = {.title = "Test accuracy per block (0 = embeddings)", .xlabel = "block", .ylabel = "accuracy"};
        kf_svg_lines(b, &po, x, nb, y, ns, names);
    }
    free(y);
    if (in->opts->blocks_only) {
        free(x);
        goto table;
    }
    // accuracy vs neurons over the feature-selection grid that was trained
    int ng = 0;
    for (int i = 0; i < in->opts->n_grid; i++)
        if (!isnan(r->grid_test[i])) ng++;
    double *gy = malloc(sizeof(double) * 2 * (size_t)(ng > 0 ? ng : 1));
    if (x && gy && ng > 0) {
        for (int i = 0, k = 0; i < in->opts->n_grid; i++)
            if (!isnan(r->grid_test[i])) x[k] = r->grid_n[i], gy[k] = r->grid_test[i], gy[ng + k] = r->cc_test, k++;
        const char *names[2] = {"top neurons by weight share", "LS+CC probe"};
        kf_plot_opts po = {.title = "Test accuracy vs neurons kept", .xlabel = "neurons", .ylabel = "accuracy"};
        kf_svg_lines(b, &po, x, ng, gy, 2, names);
    }
    free(gy);
    free(x);
    double *per = malloc(sizeof(double) * (size_t)nb);
    if (per) {
        for (int i = 0; i < nb; i++) per[i] = r->selected_per_block[i];
        kf_plot_opts po = {.title = "Selected neurons per block", .xlabel = "block", .ylabel = "neurons"};
        kf_svg_bars(b, &po, per, nb, NULL);
    }
    free(per);
    // confusion matrix of the final probe, rows normalised
    const int K = r->n_classes;
    double *cm = malloc(sizeof(double) * (size_t)K * (size_t)K);
    if (cm) {
        for (int a = 0; a < K; a++) {
            double tot = 0;
            for (int c = 0; c < K; c++) tot += (double)r->confusion[(int64_t)a * K + c];
            for (int c = 0; c < K; c++) cm[(int64_t)a * K + c] = tot > 0 ? (double)r->confusion[(int64_t)a * K + c] / tot : 0;
        }
        kf_plot_opts po = {.title = "Final probe: confusion on test (row = true label, share of its rows)",
                           .width = K > 20 ? 900 : 560, .height = K > 20 ? 900 : 560};
        kf_svg_heatmap(b, &po, cm, K, K, (const char *const *)in->labels->names,
                       (const char *const *)in->labels->names, 0, 1);
    }
    free(cm);
table:
    kf_strbuf_puts(b, "</div>\n<h2>Probes trained</h2>\n<table>\n<tr><th class=l>probe</th><th>neurons</th>"
                      "<th>iterations</th><th>converged</th><th>seconds</th><th>dev</th><th>test</th></tr>\n");
    for (int i = 0; i < r->n_runs; i++) {
        const kf_probe_run *p = &r->runs[i];
        kf_strbuf_printf(b, "<tr><td class=l>%s</td><td>%d</td><td>%d</td><td>%s</td><td>%.2f</td><td>%.4f</td>"
                            "<td>%.4f</td></tr>\n",
                         p->name, p->n_features, p->iters, p->converged ? "yes" : "no", p->seconds, p->dev_acc,
                         p->test_acc);
    }
    kf_strbuf_puts(b, "</table>\n<p class=note>Every number on this page is in probe.json beside it "
                      "(schema: docs/probe-json.md).</p>\n</body></html>\n");
}

kf_status kf_probe_report_write(const kf_probe_info *in, const kf_dalvi_result *r, const char *dir, kf_error *err) {
    cJSON *tree = kf_probe_to_json(in, r);
    char *json = tree ? cJSON_Print(tree) : NULL;
    cJSON_Delete(tree);
    if (!json) return kf_error_set(err, KF_ERR_NOMEM, "probe: out of memory printing probe.json");
    kf_status s = write_text(dir, "probe.json", json, err);
    free(json);
    if (s != KF_OK) return s;
    kf_strbuf b = {0};
    html(&b, in, r);
    if (b.oom) {
        kf_strbuf_free(&b);
        return kf_error_set(err, KF_ERR_NOMEM, "probe: out of memory building report.html");
    }
    s = write_text(dir, "report.html", b.s, err);
    kf_strbuf_free(&b);
    return s;
}

// specialise.json and report.html (report.h).
#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/strbuf.h"
#include "report/svg.h"
#include "specialise/report.h"

// ---- JSON ----------------------------------------------------------------------

static cJSON *number(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

static void put(cJSON *o, const char *key, double v) { cJSON_AddItemToObject(o, key, number(v)); }

static cJSON *numbers(const double *v, int n, int64_t stride) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, number(v[(int64_t)i * stride]));
    return a;
}

static const kf_spec_overlap *cell(const kf_spec_result *r, int f, int l, int a, int b) {
    return &r->overlap[(((int64_t)f * r->n_layer + l) * r->n_data + a) * r->n_data + b];
}

// A (D, D) matrix of one overlap field.
static cJSON *matrix(const kf_spec_result *r, int f, int l, size_t field) {
    cJSON *m = cJSON_CreateArray();
    for (int a = 0; a < r->n_data; a++) {
        cJSON *row = cJSON_CreateArray();
        for (int b = 0; b < r->n_data; b++)
            cJSON_AddItemToArray(row, number(*(const double *)((const char *)cell(r, f, l, a, b) + field)));
        cJSON_AddItemToArray(m, row);
    }
    return m;
}

static cJSON *run_json(const kf_spec_result *r, const kf_spec_data *data, const char *kind) {
    const int D = r->n_data, L = r->n_layer, Q = r->n_frac, A = r->ablate_top;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", kind);
    put(o, "seconds", r->seconds);
    cJSON_AddItemToObject(o, "base_loss", numbers(r->base_loss, D, 1));
    cJSON *ov = cJSON_AddArrayToObject(o, "overlap");
    static const struct {
        const char *key;
        size_t off;
    } fields[] = {{"iou", offsetof(kf_spec_overlap, iou)},           {"iou_lo", offsetof(kf_spec_overlap, iou_lo)},
                  {"iou_hi", offsetof(kf_spec_overlap, iou_hi)},     {"contain", offsetof(kf_spec_overlap, contain)},
                  {"null_mean", offsetof(kf_spec_overlap, null_mean)}, {"null_q95", offsetof(kf_spec_overlap, null_q95)},
                  {"p", offsetof(kf_spec_overlap, p)}};
    for (int f = 0; f < Q; f++) {
        cJSON *fo = cJSON_CreateObject();
        put(fo, "frac", r->fracs[f]);
        cJSON *layers = cJSON_AddArrayToObject(fo, "layers");
        for (int l = 0; l < L; l++) {
            cJSON *lo = cJSON_CreateObject();
            put(lo, "layer", l);
            put(lo, "set_size", kf_spec_n_of(r->fracs[f], (int)(r->off[l + 1] - r->off[l])));
            for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
                cJSON_AddItemToObject(lo, fields[i].key, matrix(r, f, l, fields[i].off));
            cJSON_AddItemToArray(layers, lo);
        }
        cJSON_AddItemToArray(ov, fo);
    }
    cJSON *pr = cJSON_AddArrayToObject(o, "pruning");
    for (int f = 0; f < Q; f++) {
        cJSON *fo = cJSON_CreateObject();
        put(fo, "frac", r->fracs[f]);
        put(fo, "n_removed", r->n_removed[f]);
        cJSON *ra = cJSON_AddObjectToObject(fo, "random");
        cJSON_AddItemToObject(ra, "loss_mean", numbers(r->rand_mean + (int64_t)f * D, D, 1));
        cJSON_AddItemToObject(ra, "loss_sd", numbers(r->rand_sd + (int64_t)f * D, D, 1));
        cJSON *sel = cJSON_AddArrayToObject(fo, "selective");
        for (int a = 0; a < D; a++)
            for (int b = 0; b < D; b++) {
                if (a == b) continue;
                const int64_t i = ((int64_t)a * D + b) * Q + f;
                cJSON *so = cJSON_CreateObject();
                cJSON_AddStringToObject(so, "focus", data[a].name);
                cJSON_AddStringToObject(so, "retain", data[b].name);
                put(so, "loss_focus", r->sel_focus[i]);
                put(so, "loss_retain", r->sel_retain[i]);
                put(so, "d_focus", r->sel_focus[i] - r->base_loss[a]);
                put(so, "d_retain", r->sel_retain[i] - r->base_loss[b]);
                put(so, "d_random_focus", r->rand_mean[(int64_t)f * D + a] - r->base_loss[a]);
                put(so, "d_random_retain", r->rand_mean[(int64_t)f * D + b] - r->base_loss[b]);
                cJSON_AddItemToArray(sel, so);
            }
        cJSON_AddItemToArray(pr, fo);
    }
    cJSON *ab = cJSON_AddArrayToObject(o, "ablation");
    for (int d = 0; d < D && A > 0; d++) {
        cJSON *dobj = cJSON_CreateObject();
        cJSON_AddStringToObject(dobj, "dataset", data[d].name);
        const double *fo = r->first_order && !data[d].task ? r->first_order + (int64_t)d * r->n_neuron : NULL;
        double *pool_fo = malloc(sizeof(double) * ((size_t)L * A + 1)), *pool_dl = malloc(sizeof(double) * ((size_t)L * A + 1));
        double *est = malloc(sizeof(double) * ((size_t)A + 1));
        cJSON *layers = cJSON_AddArrayToObject(dobj, "layers");
        for (int l = 0; l < L; l++) {
            const int64_t base = ((int64_t)d * L + l) * A;
            const int F = (int)(r->off[l + 1] - r->off[l]);
            cJSON *lo = cJSON_CreateObject(), *idx = cJSON_CreateArray(), *imp = cJSON_CreateArray();
            put(lo, "layer", l);
            for (int i = 0; i < A; i++) {
                const int32_t j = r->ablate_idx[base + i];
                cJSON_AddItemToArray(idx, cJSON_CreateNumber(j));
                cJSON_AddItemToArray(imp, number(r->importance[(int64_t)d * r->n_neuron + r->off[l] + j]));
            }
            cJSON_AddItemToObject(lo, "neurons", idx);
            cJSON_AddItemToObject(lo, "importance", imp);
            cJSON_AddItemToObject(lo, "d_loss", numbers(r->ablate_dloss + base, A, 1));
            if (fo && pool_fo && pool_dl && est) {
                const double *fl = fo + r->off[l];
                for (int i = 0; i < A; i++) {
                    est[i] = fl[r->ablate_idx[base + i]];
                    pool_fo[l * A + i] = est[i];
                    pool_dl[l * A + i] = r->ablate_dloss[base + i];
                }
                cJSON_AddItemToObject(lo, "first_order", numbers(est, A, 1));
                put(lo, "rank_corr", kf_spec_spearman(est, r->ablate_dloss + base, A));
                double mean = 0, mx = -INFINITY;
                int arg = 0;
                for (int j = 0; j < F; j++) {
                    mean += fl[j] / F;
                    if (fl[j] > mx) mx = fl[j], arg = j;
                }
                put(lo, "first_order_mean", mean);
                put(lo, "first_order_max", mx);
                put(lo, "first_order_argmax", arg);
                put(lo, "rank_corr_importance",
                    kf_spec_spearman(fl, r->importance + (int64_t)d * r->n_neuron + r->off[l], F));
            }
            cJSON_AddItemToArray(layers, lo);
        }
        if (fo && pool_fo && pool_dl) put(dobj, "rank_corr", kf_spec_spearman(pool_fo, pool_dl, L * A));
        free(pool_fo), free(pool_dl), free(est);
        cJSON_AddItemToArray(ab, dobj);
    }
    return o;
}

static cJSON *moe_json(const kf_spec_moe_view *v, const kf_spec_result *r, const kf_spec_data *data) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", v->path);
    cJSON *ne = cJSON_AddArrayToObject(o, "n_expert"), *k = cJSON_AddArrayToObject(o, "k");
    for (int l = 0; l < r->n_layer; l++) {
        cJSON_AddItemToArray(ne, cJSON_CreateNumber(v->n_expert[l]));
        cJSON_AddItemToArray(k, cJSON_CreateNumber(v->k[l]));
    }
    cJSON *cells = cJSON_AddArrayToObject(o, "concentration");
    for (int d = 0; d < r->n_data; d++)
        for (int f = 0; f < r->n_frac; f++) {
            cJSON *c = cJSON_CreateObject();
            cJSON_AddStringToObject(c, "dataset", data[d].name);
            put(c, "frac", r->fracs[f]);
            const kf_spec_conc *cc = v->conc + ((int64_t)d * r->n_frac + f) * r->n_layer;
            cJSON_AddItemToObject(c, "share", numbers(&cc->share, r->n_layer, sizeof *cc / sizeof(double)));
            cJSON_AddItemToObject(c, "entropy", numbers(&cc->entropy, r->n_layer, sizeof *cc / sizeof(double)));
            cJSON_AddItemToObject(c, "random_share", numbers(&cc->rand_share, r->n_layer, sizeof *cc / sizeof(double)));
            cJSON_AddItemToObject(c, "random_entropy",
                                  numbers(&cc->rand_entropy, r->n_layer, sizeof *cc / sizeof(double)));
            cJSON_AddItemToObject(c, "p_share", numbers(&cc->p_share, r->n_layer, sizeof *cc / sizeof(double)));
            cJSON_AddItemToArray(cells, c);
        }
    return o;
}

static cJSON *to_json(const kf_spec_report *rep) {
    const kf_spec_result *r = rep->trained;
    const kf_spec_opts *o = rep->o;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "schema", "kfuse-specialise/1");
    cJSON *mo = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(mo, "path", rep->model_path);
    cJSON_AddStringToObject(mo, "arch", rep->arch);
    put(mo, "n_params", (double)rep->n_params);
    put(mo, "n_layer", r->n_layer);
    cJSON *nff = cJSON_AddArrayToObject(mo, "n_ff");
    for (int l = 0; l < r->n_layer; l++) cJSON_AddItemToArray(nff, cJSON_CreateNumber((double)(r->off[l + 1] - r->off[l])));
    cJSON *op = cJSON_AddObjectToObject(root, "options");
    put(op, "ctx", o->ctx);
    put(op, "bos_id", o->bos_id);
    put(op, "tokens", (double)o->tokens);
    put(op, "eval_tokens", (double)o->eval_tokens);
    cJSON_AddStringToObject(op, "importance", kf_imp_kind_name(o->kind));
    cJSON_AddItemToObject(op, "fracs", numbers(r->fracs, r->n_frac, 1));
    put(op, "chunks", o->n_chunk);
    put(op, "bootstrap", o->n_boot);
    put(op, "null_draws", o->n_null);
    put(op, "random_draws", o->n_random);
    put(op, "ablate_top", o->ablate_top);
    cJSON_AddBoolToObject(op, "first_order", o->first_order);
    cJSON_AddStringToObject(op, "task_loss", kf_spec_task_loss_name(o->task_loss));
    put(op, "seed", (double)o->seed);
    if (rep->control) put(op, "control_seed", (double)rep->control_seed);
    cJSON *ds = cJSON_AddArrayToObject(root, "datasets");
    for (int d = 0; d < r->n_data; d++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "name", rep->data[d].name);
        cJSON_AddStringToObject(x, "file", rep->files[d]);
        put(x, "n_tokens", (double)rep->data[d].n_ids);
        put(x, "tokens_used", (double)r->tokens_used[d]);
        put(x, "eval_tokens_used", (double)r->eval_tokens_used[d]);
        cJSON_AddStringToObject(x, "kind", rep->data[d].task ? "task" : "text");
        if (rep->data[d].task) {
            cJSON *t = cJSON_AddObjectToObject(x, "task");
            put(t, "n_labels", rep->data[d].task->n_labels);
            put(t, "train_items", (double)r->items_used[2 * d]);
            put(t, "eval_items", (double)r->items_used[2 * d + 1]);
            cJSON_AddStringToObject(t, "loss", kf_spec_task_loss_name(o->task_loss));
        }
        cJSON_AddItemToArray(ds, x);
    }
    cJSON *runs = cJSON_AddArrayToObject(root, "runs");
    cJSON_AddItemToArray(runs, run_json(r, rep->data, "trained"));
    if (rep->control) cJSON_AddItemToArray(runs, run_json(rep->control, rep->data, "random_init"));
    cJSON *moe = cJSON_AddArrayToObject(root, "experts");
    for (int i = 0; i < rep->n_moe; i++) cJSON_AddItemToArray(moe, moe_json(&rep->moe[i], r, rep->data));
    return root;
}

// ---- HTML ----------------------------------------------------------------------

static const char *CSS =
    "body{font-family:sans-serif;max-width:1180px;margin:24px auto;padding:0 16px;color:#222;line-height:1.4}"
    "h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}"
    "h3{font-size:15px;margin-bottom:4px}table{border-collapse:collapse;margin:8px 0;font-size:13px}"
    "td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}"
    ".plots{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}.note{color:#555;font-size:13px;max-width:900px}"
    "svg.plot{border:1px solid #eee;background:#fff}";

// Mean off-diagonal IoU of a layer at fraction f, and the null mean there.
static double mean_iou(const kf_spec_result *r, int f, int l, bool null) {
    double s = 0;
    int n = 0;
    for (int a = 0; a < r->n_data; a++)
        for (int b = a + 1; b < r->n_data; b++, n++) s += null ? cell(r, f, l, a, b)->null_mean : cell(r, f, l, a, b)->iou;
    return n ? s / n : NAN;
}

static void overlap_section(kf_strbuf *b, const kf_spec_report *rep) {
    const kf_spec_result *runs[2] = {rep->trained, rep->control};
    const char *run_names[2] = {"trained", "random init"};
    const kf_spec_result *r = rep->trained;
    const int D = r->n_data, L = r->n_layer, f = r->n_frac - 1;
    const char **names = malloc(sizeof *names * (size_t)D);
    double *x = malloc(sizeof *x * (size_t)L), *y = malloc(sizeof *y * 4 * (size_t)L), *v = malloc(sizeof *v * (size_t)D * D);
    if (!names || !x || !y || !v) {
        b->oom = true;
        free(names), free(x), free(y), free(v);
        return;
    }
    for (int d = 0; d < D; d++) names[d] = rep->data[d].name;
    kf_strbuf_printf(b, "<h2>Overlap of the important neurons</h2>\n<p class=note>For each layer, the top %.3g%% of "
                        "neurons by %s importance on each dataset; IoU of every pair of these sets. Random sets of "
                        "the same size overlap by the null line; cells carry the 95%% bootstrap interval over "
                        "calibration windows on hover in specialise.json.</p>\n<div class=plots>",
                     100 * r->fracs[f], kf_imp_kind_name(rep->o->kind));
    int n_series = 0;
    const char *series[4];
    for (int i = 0; i < 2; i++) {
        if (!runs[i]) continue;
        for (int l = 0; l < L; l++) {
            x[l] = l;
            y[n_series * L + l] = mean_iou(runs[i], f, l, false);
            y[(n_series + 1) * L + l] = mean_iou(runs[i], f, l, true);
        }
        series[n_series] = i == 0 ? "trained: mean IoU" : "random init: mean IoU";
        series[n_series + 1] = i == 0 ? "trained: null" : "random init: null";
        n_series += 2;
    }
    kf_svg_lines(b, &(kf_plot_opts){.title = "mean pairwise IoU per layer", .xlabel = "layer", .ylabel = "IoU"}, x, L,
                 y, n_series, series);
    kf_strbuf_puts(b, "</div>\n");
    for (int i = 0; i < 2; i++) {
        if (!runs[i]) continue;
        kf_strbuf_printf(b, "<h3>%s</h3>\n<div class=plots>", run_names[i]);
        for (int l = 0; l < L; l++) {
            for (int a = 0; a < D; a++)
                for (int c = 0; c < D; c++) v[a * D + c] = cell(runs[i], f, l, a, c)->iou;
            char title[64];
            snprintf(title, sizeof title, "layer %d: IoU", l);
            kf_svg_heatmap(b, &(kf_plot_opts){.title = title, .width = 260, .height = 240}, v, D, D, names, names, 0, 1);
        }
        kf_strbuf_puts(b, "</div>\n");
    }
    free(names), free(x), free(y), free(v);
}

// Measured single-neuron ablation against the first-order estimate: the
// rank correlation over each dataset's candidates, per run.
static void ablation_section(kf_strbuf *b, const kf_spec_report *rep) {
    const kf_spec_result *runs[2] = {rep->trained, rep->control};
    const int D = rep->trained->n_data, L = rep->trained->n_layer, A = rep->trained->ablate_top;
    if (!rep->trained->first_order || A < 2) return;
    double *fo = malloc(sizeof *fo * (size_t)L * A);
    if (!fo) return;
    kf_strbuf_printf(b, "<h2>Single-neuron ablation: measured and first-order</h2>\n<p class=note>For the %d most "
                        "important neurons of each dataset in each layer, the measured loss increase when that neuron "
                        "alone is removed against the first-order estimate &minus;&Sigma; a &middot; &part;L/&part;a "
                        "(one backward pass, importance tokens): Spearman rank correlation over the %d candidates, "
                        "and the mean of each.</p>\n<table><tr><th class=l>dataset</th><th class=l>model</th>"
                        "<th>rank correlation</th><th>mean measured</th><th>mean estimate</th></tr>\n",
                     A, L * A);
    for (int d = 0; d < D; d++) {
        if (rep->data[d].task) continue;
        for (int i = 0; i < 2; i++) {
            const kf_spec_result *r = runs[i];
            if (!r || !r->first_order) continue;
            const double *dl = r->ablate_dloss + (int64_t)d * L * A;
            double mm = 0, me = 0;
            for (int l = 0; l < L; l++)
                for (int k = 0; k < A; k++) {
                    const int64_t c = (int64_t)l * A + k;
                    fo[c] = r->first_order[(int64_t)d * r->n_neuron + r->off[l] + r->ablate_idx[(int64_t)d * L * A + c]];
                    mm += dl[c] / (L * A), me += fo[c] / (L * A);
                }
            kf_strbuf_puts(b, "<tr><td class=l>");
            kf_strbuf_escape(b, rep->data[d].name);
            kf_strbuf_printf(b, "</td><td class=l>%s</td><td>%.3f</td><td>%.5f</td><td>%.5f</td></tr>\n",
                             i == 0 ? "trained" : "random init", kf_spec_spearman(fo, dl, L * A), mm, me);
        }
    }
    kf_strbuf_puts(b, "</table>\n");
    free(fo);
}

static void pruning_section(kf_strbuf *b, const kf_spec_report *rep) {
    const kf_spec_result *r = rep->trained;
    const int D = r->n_data, Q = r->n_frac;
    kf_strbuf_puts(b, "<h2>Selective pruning</h2>\n<p class=note>In every layer, the neurons most specific to the "
                      "focus dataset (importance on it over importance on the retain dataset) are removed; the loss "
                      "increase (nats per token, on windows the importance pass did not see) on the focus and on "
                      "the retain dataset, against removing as many random neurons.</p>\n");
    const kf_spec_result *runs[2] = {rep->trained, rep->control};
    for (int i = 0; i < 2; i++) {
        const kf_spec_result *R = runs[i];
        if (!R) continue;
        kf_strbuf_printf(b, "<h3>%s</h3>\n<table><tr><th class=l>focus</th><th class=l>retain</th>",
                         i ? "random init" : "trained");
        for (int f = 0; f < Q; f++)
            kf_strbuf_printf(b, "<th>&Delta;focus %.3g%%</th><th>&Delta;retain</th><th>&Delta;random (focus)</th>",
                             100 * R->fracs[f]);
        kf_strbuf_puts(b, "</tr>\n");
        for (int a = 0; a < D; a++)
            for (int c = 0; c < D; c++) {
                if (a == c) continue;
                kf_strbuf_puts(b, "<tr><td class=l>");
                kf_strbuf_escape(b, rep->data[a].name);
                kf_strbuf_puts(b, "</td><td class=l>");
                kf_strbuf_escape(b, rep->data[c].name);
                kf_strbuf_puts(b, "</td>");
                for (int f = 0; f < Q; f++) {
                    const int64_t k = ((int64_t)a * D + c) * Q + f;
                    kf_strbuf_printf(b, "<td>%.4f</td><td>%.4f</td><td>%.4f</td>", R->sel_focus[k] - R->base_loss[a],
                                     R->sel_retain[k] - R->base_loss[c], R->rand_mean[(int64_t)f * D + a] - R->base_loss[a]);
                }
                kf_strbuf_puts(b, "</tr>\n");
            }
        kf_strbuf_puts(b, "</table>\n");
    }
    // differential damage per focus dataset over f, averaged over retain sets
    double *x = malloc(sizeof *x * (size_t)Q), *y = malloc(sizeof *y * (size_t)Q * (2 * D + 1));
    const char **series = malloc(sizeof *series * (size_t)(2 * D + 1));
    char *names = malloc((size_t)(2 * D + 1) * 96);
    if (!x || !y || !series || !names) {
        b->oom = true;
        free(x), free(y), free(series), free(names);
        return;
    }
    for (int f = 0; f < Q; f++) x[f] = 100 * r->fracs[f];
    for (int a = 0; a < D; a++) {
        for (int f = 0; f < Q; f++) {
            double df = 0, dr = 0;
            for (int c = 0; c < D; c++) {
                if (c == a) continue;
                const int64_t k = ((int64_t)a * D + c) * Q + f;
                df += (r->sel_focus[k] - r->base_loss[a]) / (D - 1);
                dr += (r->sel_retain[k] - r->base_loss[c]) / (D - 1);
            }
            y[(2 * a) * Q + f] = df;
            y[(2 * a + 1) * Q + f] = dr;
        }
        snprintf(names + 2 * a * 96, 96, "%.40s: focus", rep->data[a].name);
        snprintf(names + (2 * a + 1) * 96, 96, "%.40s: retain", rep->data[a].name);
        series[2 * a] = names + 2 * a * 96;
        series[2 * a + 1] = names + (2 * a + 1) * 96;
    }
    for (int f = 0; f < Q; f++) {
        double m = 0;
        for (int d = 0; d < D; d++) m += (r->rand_mean[(int64_t)f * D + d] - r->base_loss[d]) / D;
        y[2 * D * Q + f] = m;
    }
    series[2 * D] = "random neurons (mean over datasets)";
    kf_strbuf_puts(b, "<div class=plots>");
    kf_svg_lines(b, &(kf_plot_opts){.title = "trained: loss increase vs share removed", .xlabel = "% of each layer removed",
                                    .ylabel = "delta nats/token", .width = 640, .height = 360},
                 x, Q, y, 2 * D + 1, series);
    kf_strbuf_puts(b, "</div>\n");
    free(x), free(y), free(series), free(names);
}

static void experts_section(kf_strbuf *b, const kf_spec_report *rep) {
    if (rep->n_moe == 0) return;
    const kf_spec_result *r = rep->trained;
    const int D = r->n_data, L = r->n_layer, f = r->n_frac - 1;
    kf_strbuf_printf(b, "<h2>Experts and important neurons</h2>\n<p class=note>Share of each dataset's top %.3g%% "
                        "neurons that lie in its k most-populated experts (k = the experts a token selects), against "
                        "random sets of the same size.</p>\n<div class=plots>",
                     100 * r->fracs[f]);
    double *x = malloc(sizeof *x * (size_t)L), *y = malloc(sizeof *y * (size_t)L * (D + 1));
    const char **series = malloc(sizeof *series * (size_t)(D + 1));
    if (!x || !y || !series) {
        b->oom = true;
        free(x), free(y), free(series);
        return;
    }
    for (int i = 0; i < rep->n_moe; i++) {
        const kf_spec_moe_view *v = &rep->moe[i];
        for (int l = 0; l < L; l++) {
            x[l] = l;
            double rs = 0;
            for (int d = 0; d < D; d++) {
                const kf_spec_conc *c = &v->conc[((int64_t)d * r->n_frac + f) * L + l];
                y[d * L + l] = c->share;
                rs += c->rand_share / D;
            }
            y[D * L + l] = rs;
        }
        for (int d = 0; d < D; d++) series[d] = rep->data[d].name;
        series[D] = "random sets";
        char title[160];
        snprintf(title, sizeof title, "%.120s", v->path);
        kf_svg_lines(b, &(kf_plot_opts){.title = title, .xlabel = "layer", .ylabel = "share in best k experts"}, x, L,
                     y, D + 1, series);
    }
    kf_strbuf_puts(b, "</div>\n");
    free(x), free(y), free(series);
}

static void summary(kf_strbuf *b, const kf_spec_report *rep) {
    const kf_spec_result *r = rep->trained;
    kf_strbuf_puts(b, "<h1>kfuse specialise: ");
    kf_strbuf_escape(b, rep->model_path);
    kf_strbuf_printf(b, "</h1>\n<p class=note>%s, %d layers, %.4g M parameters; importance: %s; windows of %d "
                        "tokens.</p>\n<table><tr><th class=l>dataset</th><th class=l>file</th><th>tokens</th>"
                        "<th>importance tokens</th><th>evaluation tokens</th><th>loss (trained)</th>%s</tr>\n",
                     rep->arch, r->n_layer, (double)rep->n_params / 1e6, kf_imp_kind_name(rep->o->kind), rep->o->ctx,
                     rep->control ? "<th>loss (random init)</th>" : "");
    for (int d = 0; d < r->n_data; d++) {
        kf_strbuf_puts(b, "<tr><td class=l>");
        kf_strbuf_escape(b, rep->data[d].name);
        kf_strbuf_puts(b, "</td><td class=l>");
        kf_strbuf_escape(b, rep->files[d]);
        kf_strbuf_printf(b, "</td><td>%lld</td><td>%lld</td><td>%lld</td><td>%.4f</td>", (long long)rep->data[d].n_ids,
                         (long long)r->tokens_used[d], (long long)r->eval_tokens_used[d], r->base_loss[d]);
        if (rep->control) kf_strbuf_printf(b, "<td>%.4f</td>", rep->control->base_loss[d]);
        kf_strbuf_puts(b, "</tr>\n");
    }
    kf_strbuf_puts(b, "</table>\n");
}

static kf_status commit_text(const char *dir, const char *name, const char *text, kf_error *err) {
    char path[1024], tmp[1100];
    if (!kf_path_join(path, sizeof path, dir, name)) return kf_error_set(err, KF_ERR_ARG, "%s: path too long", dir);
    FILE *f;
    kf_status s = kf_file_begin(path, tmp, sizeof tmp, &f, err);
    if (s != KF_OK) return s;
    const size_t n = strlen(text);
    return kf_file_commit(f, fwrite(text, 1, n, f) == n, tmp, path, err);
}

kf_status kf_spec_report_write(const kf_spec_report *rep, const char *dir, kf_error *err) {
    cJSON *tree = to_json(rep);
    char *json = tree ? cJSON_Print(tree) : NULL;
    cJSON_Delete(tree);
    if (!json) return kf_error_set(err, KF_ERR_NOMEM, "specialise: out of memory printing specialise.json");
    kf_status s = commit_text(dir, "specialise.json", json, err);
    free(json);
    if (s != KF_OK) return s;
    kf_strbuf b = {0};
    kf_strbuf_printf(&b, "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>kfuse specialise</title>"
                         "<style>%s</style></head><body>\n",
                     CSS);
    summary(&b, rep);
    overlap_section(&b, rep);
    pruning_section(&b, rep);
    ablation_section(&b, rep);
    experts_section(&b, rep);
    kf_strbuf_puts(&b, "<p class=note>Every number on this page is in specialise.json beside it (schema: "
                       "docs/specialise-json.md).</p>\n</body></html>\n");
    if (b.oom) {
        kf_strbuf_free(&b);
        return kf_error_set(err, KF_ERR_NOMEM, "specialise: out of memory building report.html");
    }
    s = commit_text(dir, "report.html", b.s, err);
    kf_strbuf_free(&b);
    return s;
}

// kfuse probe MODEL --task conllu:COLUMN|tsv:LABEL --train F --dev F --test F -o DIR [options]
// Dalvi et al.'s probing pipeline (src/probe/dalvi.h, docs/probe-json.md).
// --random-init SEED probes MODEL's architecture and shape re-initialised
// (kf_model_randomize), with MODEL's tokenizer: the untrained control model.
#include <cjson/cJSON.h>
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "core/file.h"
#include "core/progress.h"
#include "io/save.h"
#include "probe/classifier.h"
#include "probe/dalvi.h"
#include "probe/features.h"
#include "probe/report.h"
#include "specialise/task.h"
#include "task/encode.h"
#include "task/task.h"

typedef struct {
    kf_progress bar;
    bool quiet;
} probe_view;

static void on_extract(void *user, int64_t done, int64_t total) {
    probe_view *v = user;
    (void)total;
    kf_progress_update(&v->bar, done, NULL);
}

static void on_probe(void *user, int step, const char *what) {
    probe_view *v = user;
    kf_progress_update(&v->bar, step, what);
}

static void make_dir(const char *dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) kf_cli_failf("%s: cannot create directory: %s", dir, strerror(errno));
    if (!kf_dir_exists(dir)) kf_cli_failf("%s: not a directory", dir);
}

// Parses "1,2,5" into at most cap ascending percentages in (0, 100].
static int parse_grid(const char *s, double *g, int cap) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || !(v > 0 && v <= 100) || (n > 0 && v <= g[n - 1]) || n == cap)
            kf_cli_failf("probe: --grid wants ascending percentages in (0, 100], at most %d: %s", cap, s);
        g[n++] = v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') kf_cli_failf("probe: --grid: cannot read '%s'", s);
    }
    if (n == 0) kf_cli_failf("probe: --grid is empty");
    return n;
}

// --ablation: DIR/ablation_scores.npy (f32, (1, sum F_l)), the first-order
// estimate of each FFN neuron's cost to a probe of the last block's output
// (the task ranking of `compress --task DIR --task-score ablation`), and
// DIR/ablation.json with that probe's loss and cost.
static void write_ablation(kf_model *m, const kf_task_tokens *tt, const int32_t *y, int K, const kf_logreg_opts *lo,
                           const char *out_dir, bool json) {
    kf_error err = {0};
    const kf_spec_task_part part = {.tok = tt, .y = y, .s0 = 0, .s1 = tt->n_sent};
    const int64_t n = kf_spec_part_items(&part);
    const int C = m->n_embd;
    int64_t F = 0;
    for (int l = 0; l < m->n_layer; l++) F += m->layers[l].n_ff;
    float *feats = malloc(sizeof *feats * (size_t)(n * C)), *fo32 = malloc(sizeof *fo32 * (size_t)F);
    double *fo = malloc(sizeof *fo * (size_t)F), loss = 0;
    if (!feats || !fo || !fo32) kf_cli_failf("probe: out of memory for the ablation scores");
    const double t0 = kf_time_now();
    kf_spec_probe pr;
    if (kf_spec_task_run(m, &part, NULL, NULL, feats, &err) != KF_OK ||
        kf_spec_probe_train(&pr, feats, y, n, C, K, lo, &err) != KF_OK ||
        kf_spec_task_first_order(m, &part, &pr, fo, &loss, &err) != KF_OK)
        kf_cli_fail(&err);
    const double secs = kf_time_now() - t0;
    for (int64_t j = 0; j < F; j++) fo32[j] = (float)fo[j];
    char path[1100];
    snprintf(path, sizeof path, "%s/ablation_scores.npy", out_dir);
    if (kf_npy_write(path, "<f4", fo32, 4, 1, F, &err) != KF_OK) kf_cli_fail(&err);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "schema", "kfuse-probe-ablation/1");
    cJSON_AddStringToObject(o, "scores", "ablation_scores.npy");
    cJSON_AddStringToObject(o, "estimate", "-sum_tokens a dL/da, L = mean cross-entropy of the last block's probe");
    cJSON_AddNumberToObject(o, "items", (double)n);
    cJSON_AddNumberToObject(o, "probe_iterations", pr.lr.iters);
    cJSON_AddBoolToObject(o, "probe_converged", pr.lr.converged);
    cJSON_AddNumberToObject(o, "loss", loss);
    cJSON_AddNumberToObject(o, "seconds", secs);
    snprintf(path, sizeof path, "%s/ablation.json", out_dir);
    char *text = cJSON_Print(o), tmp[1100];
    cJSON_Delete(o);
    FILE *f;
    if (!text) kf_cli_failf("probe: out of memory");
    if (kf_file_begin(path, tmp, sizeof tmp, &f, &err) != KF_OK ||
        kf_file_commit(f, fputs(text, f) >= 0 && fputc('\n', f) != EOF, tmp, path, &err) != KF_OK)
        kf_cli_fail(&err);
    free(text);
    if (!json)
        fprintf(stderr, "probe: ablation scores of %lld FFN neurons (probe loss %.4f on %lld items, %.1f s): %s/ablation_scores.npy\n",
                (long long)F, loss, (long long)n, secs, out_dir);
    kf_spec_probe_free(&pr);
    free(feats), free(fo), free(fo32);
}

int kf_cmd_probe(int argc, char **argv) {
    const char *path = NULL, *task = NULL, *out_dir = NULL, *export_dir = NULL, *files[3] = {NULL, NULL, NULL};
    const char *text_col = "sentence", *agg_name = NULL, *feat_name = "residual";
    int64_t max_train = 150000, max_eval = 0;
    bool f16 = false, control = true, json = false, random_init = false, ablation = false;
    uint64_t seed = 1, init_seed = 0;
    int batch_tokens = 1024;
    static double grid[64] = {1, 2, 3, 5, 10, 15, 20, 30, 50, 75, 100};
    kf_dalvi_opts o = {.lr = kf_logreg_defaults(), .delta = 0.01, .cc_threshold = 0.3, .grid = grid, .n_grid = 11};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--task")) task = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--train")) files[0] = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--dev")) files[1] = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--test")) files[2] = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "-o")) out_dir = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--export")) export_dir = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--text-column")) text_col = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--agg")) agg_name = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--features")) feat_name = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--max-train")) max_train = kf_cli_long(argc, argv, &i, 0, 1L << 40);
        else if (!strcmp(argv[i], "--max-eval")) max_eval = kf_cli_long(argc, argv, &i, 0, 1L << 40);
        else if (!strcmp(argv[i], "--f16")) f16 = true;
        else if (!strcmp(argv[i], "--no-control")) control = false;
        else if (!strcmp(argv[i], "--blocks-only")) o.blocks_only = true;
        else if (!strcmp(argv[i], "--ablation")) ablation = true;
        else if (!strcmp(argv[i], "--balanced")) o.lr.balanced = true;
        else if (!strcmp(argv[i], "--l1")) o.lr.l1 = kf_cli_double(argc, argv, &i, 0, 1e3);
        else if (!strcmp(argv[i], "--l2")) o.lr.l2 = kf_cli_double(argc, argv, &i, 0, 1e3);
        else if (!strcmp(argv[i], "--max-iter")) o.lr.max_iter = (int)kf_cli_long(argc, argv, &i, 1, 1000000);
        else if (!strcmp(argv[i], "--tol")) o.lr.tol = kf_cli_double(argc, argv, &i, 0, 1);
        else if (!strcmp(argv[i], "--delta")) o.delta = kf_cli_double(argc, argv, &i, 0, 1);
        else if (!strcmp(argv[i], "--cc-threshold")) o.cc_threshold = kf_cli_double(argc, argv, &i, 0, 1);
        else if (!strcmp(argv[i], "--grid")) o.n_grid = parse_grid(kf_cli_str(argc, argv, &i), grid, 64);
        else if (!strcmp(argv[i], "--seed")) seed = (uint64_t)kf_cli_long(argc, argv, &i, 0, 1L << 62);
        else if (!strcmp(argv[i], "--random-init")) {
            random_init = true;
            init_seed = (uint64_t)kf_cli_long(argc, argv, &i, 0, KF_CLASSIFIER_MAX_SEED);
        }
        else if (!strcmp(argv[i], "--batch-tokens")) batch_tokens = (int)kf_cli_long(argc, argv, &i, 16, 1 << 20);
        else if (!strcmp(argv[i], "-t")) omp_set_num_threads((int)kf_cli_long(argc, argv, &i, 1, 1024));
        else if (!strcmp(argv[i], "--json")) json = true;
        else if (argv[i][0] == '-') kf_cli_failf("probe: unknown option %s", argv[i]);
        else if (!path) path = argv[i];
        else kf_cli_failf("probe: unexpected argument %s", argv[i]);
    }
    if (!task) kf_cli_failf("probe: --task conllu:COLUMN or tsv:LABEL_COLUMN is required");
    if (!files[0] || !files[1] || !files[2]) kf_cli_failf("probe: --train, --dev and --test are required");
    if (!out_dir) kf_cli_failf("probe: -o DIR is required");
    if (!path) path = kf_cli_default_model();
    if (export_dir && o.blocks_only) kf_cli_failf("probe: --export needs the whole pipeline, not --blocks-only");
    if (export_dir && ablation) kf_cli_failf("probe: --ablation and --export: run them as two probes");
    kf_task_kind kind;
    int col = -1;
    const char *label_col = NULL;
    if (!strncmp(task, "conllu:", 7)) {
        kind = KF_TASK_TOKEN;
        col = kf_conllu_column(task + 7);
        if (col < 0 || col == 0)
            kf_cli_failf("probe: --task %s: no such CoNLL-U label column (FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC)",
                         task);
    } else if (!strncmp(task, "tsv:", 4) && task[4]) {
        kind = KF_TASK_SENTENCE;
        label_col = task + 4;
    } else {
        kf_cli_failf("probe: --task wants conllu:COLUMN or tsv:LABEL_COLUMN, not '%s'", task);
    }
    kf_feat_agg agg = KF_AGG_LAST;
    if (agg_name && !strcmp(agg_name, "first") && kind == KF_TASK_TOKEN) agg = KF_AGG_FIRST;
    else if (agg_name && !strcmp(agg_name, "mean")) agg = KF_AGG_MEAN;
    else if (agg_name && strcmp(agg_name, "last"))
        kf_cli_failf("probe: --agg wants last|first|mean (sentence tasks: last|mean), not '%s'", agg_name);
    if (ablation && agg != KF_AGG_LAST) kf_cli_failf("probe: --ablation's probe reads the last sub-word: --agg last");
    kf_feat_kind fkind = KF_FEAT_RESID;
    if (!strcmp(feat_name, "ffn")) fkind = KF_FEAT_FFN;
    else if (strcmp(feat_name, "residual")) kf_cli_failf("probe: --features wants residual|ffn, not '%s'", feat_name);

    // Every input is read and checked before anything is written.
    kf_error err = {0};
    kf_label_set labels = {0};
    kf_task_split sp[3];
    for (int k = 0; k < 3; k++) {
        int64_t cap = k == 0 ? max_train : max_eval;
        kf_status s = kind == KF_TASK_TOKEN ? kf_task_read_conllu(&sp[k], files[k], col, &labels, k == 0, cap, &err)
                                            : kf_task_read_tsv(&sp[k], files[k], text_col, label_col, &labels, k == 0, cap, &err);
        if (s != KF_OK) kf_cli_fail(&err);
    }
    if (labels.n < 2) kf_cli_failf("%s: one label only ('%s'): nothing to classify", files[0], labels.names[0]);
    kf_tokenizer *tok;
    kf_model *m = kf_cli_load_model(path, &tok);
    if (random_init && kf_model_randomize(m, init_seed, &err) != KF_OK) kf_cli_fail(&err);
    kf_task_tokens tt[3];
    int max_len = m->n_ctx_train > 0 ? m->n_ctx_train : 1 << 20;
    for (int k = 0; k < 3; k++)
        if (kf_task_encode(&sp[k], tok, kf_tokenizer_bos(tok), max_len, &tt[k], &err) != KF_OK) kf_cli_fail(&err);
    // Control labels (token tasks): per word type, from the training label counts.
    int32_t *ctrl[3] = {NULL, NULL, NULL};
    control = control && kind == KF_TASK_TOKEN;
    if (control) {
        int64_t *counts = calloc((size_t)labels.n, sizeof *counts);
        if (!counts) kf_cli_failf("probe: out of memory");
        for (int64_t i = 0; i < sp[0].n_items; i++) counts[sp[0].labels[i]]++;
        for (int k = 0; k < 3; k++) {
            ctrl[k] = malloc((size_t)sp[k].n_items * sizeof *ctrl[k]);
            if (!ctrl[k]) kf_cli_failf("probe: out of memory");
            for (int64_t i = 0; i < sp[k].n_items; i++)
                ctrl[k][i] = kf_task_control_label(sp[k].words[i], counts, labels.n, seed);
        }
        free(counts);
    }

    make_dir(out_dir);
    char feat_dir[1024], fpath[3][1100], p2[1100];
    if (!kf_path_join(feat_dir, sizeof feat_dir, out_dir, "features")) kf_cli_failf("%s: path too long", out_dir);
    make_dir(feat_dir);
    static const char *names[3] = {"train", "dev", "test"};
    kf_feat_opts fo = {.kind = fkind, .agg = agg, .f16 = f16, .batch_tokens = batch_tokens};
    kf_probe_info info = {.model_path = path, .arch = kf_arch_name(m->arch), .n_layer = m->n_layer, .n_embd = m->n_embd,
                          .random_init = random_init, .init_seed = init_seed,
                          .task = task, .kind = kind, .labels = &labels, .features = fkind, .agg = agg, .f16 = f16,
                          .control = control, .seed = seed, .threads = omp_get_max_threads(), .opts = &o};
    probe_view view = {0};
    for (int k = 0; k < 3; k++) {
        snprintf(fpath[k], sizeof fpath[k], "%s/%s.npy", feat_dir, names[k]);
        char label[32];
        snprintf(label, sizeof label, "features %s", names[k]);
        kf_progress_init(&view.bar, label, "tokens", tt[k].tok_off[tt[k].n_sent]);
        kf_status s = kf_features_extract(m, &tt[k], &fo, fpath[k], &info.extract[k], on_extract, &view, &err);
        kf_progress_done(&view.bar);
        if (s != KF_OK) kf_cli_fail(&err);
        snprintf(p2, sizeof p2, "%s/%s_labels.npy", feat_dir, names[k]);
        if (kf_npy_write(p2, "<i4", sp[k].labels, 4, sp[k].n_items, -1, &err) != KF_OK) kf_cli_fail(&err);
        if (ctrl[k]) {
            snprintf(p2, sizeof p2, "%s/%s_control.npy", feat_dir, names[k]);
            if (kf_npy_write(p2, "<i4", ctrl[k], 4, sp[k].n_items, -1, &err) != KF_OK) kf_cli_fail(&err);
        }
        info.paths[k] = files[k];
        info.n_sent[k] = sp[k].n_sent;
        info.n_items[k] = sp[k].n_items;
        if (!json)
            fprintf(stderr, "probe: %s: %d sentences, %lld items, %lld tokens, %.0f tokens/s\n", names[k], sp[k].n_sent,
                    (long long)sp[k].n_items, (long long)info.extract[k].n_tokens,
                    info.extract[k].seconds > 0 ? (double)info.extract[k].n_tokens / info.extract[k].seconds : 0.0);
    }
    kf_feat_layout lay;
    if (kf_feat_layout_init(&lay, m, fkind, &err) != KF_OK) kf_cli_fail(&err);
    kf_features fx[3];
    kf_probe_split ps[3];
    for (int k = 0; k < 3; k++) {
        if (kf_features_open(&fx[k], fpath[k], &err) != KF_OK) kf_cli_fail(&err);
        ps[k] = (kf_probe_split){.x = &fx[k], .y = sp[k].labels, .y_ctrl = ctrl[k]};
    }
    kf_dalvi_result r;
    kf_progress_init(&view.bar, "probes", "probes", 0);
    kf_status s = kf_dalvi_run(&lay, &ps[0], &ps[1], &ps[2], labels.n, &o, &r, on_probe, &view, &err);
    kf_progress_done(&view.bar);
    if (s != KF_OK) kf_cli_fail(&err);
    if (kf_probe_report_write(&info, &r, out_dir, &err) != KF_OK) kf_cli_fail(&err);
    // Every per-block probe's weights (K, columns): the task ranking `kfuse compress --task` reads.
    snprintf(p2, sizeof p2, "%s/block_weights.npy", out_dir);
    if (kf_npy_write(p2, "<f4", r.block_w, 4, labels.n, r.n_neurons, &err) != KF_OK) kf_cli_fail(&err);
    if (ablation) write_ablation(m, &tt[0], sp[0].labels, labels.n, &o.lr, out_dir, json);
    if (export_dir) {
        // The model truncated after the last block LayerSelector kept, and the final probe.
        kf_classifier cl = {.kind = kind, .features = fkind, .agg = agg, .f16 = f16, .batch_tokens = batch_tokens,
                            .labels = labels, .n_layer_full = m->n_layer, .ls_blocks = r.ls_blocks,
                            .random_init = random_init, .init_seed = init_seed,
                            .n_cols = r.n_selected, .cols = r.selected, .mean = r.final_mean,
                            .inv_std = r.final_inv_std, .lr = r.final_model, .probe_dev_acc = r.final_dev,
                            .probe_test_acc = r.final_test};
        snprintf(cl.task, sizeof cl.task, "%s", task);
        snprintf(cl.text_column, sizeof cl.text_column, "%s", text_col);
        cl.n_layer_kept = kf_classifier_layers_needed(fkind, r.ls_blocks);
        if (kf_model_truncate(m, cl.n_layer_kept, &err) != KF_OK) kf_cli_fail(&err);
        make_dir(export_dir);
        char mdir[1100], cpath[1100];
        snprintf(mdir, sizeof mdir, "%s/model", export_dir);
        snprintf(cpath, sizeof cpath, "%s/classifier.json", export_dir);
        kf_save_opts so = {.format = KF_FORMAT_HF, .dtype = kf_cli_save_dtype("probe", NULL, m, KF_FORMAT_HF),
                           .tok = tok, .tokenizer_dir = kf_dir_exists(path) ? path : NULL};
        kf_cli_save_model("probe", m, mdir, &so);
        if (kf_classifier_write(&cl, cpath, &err) != KF_OK) kf_cli_fail(&err);
        if (!json)
            fprintf(stderr, "probe: exported %d of %d layers and a classifier of %d neurons to %s\n", cl.n_layer_kept,
                    cl.n_layer_full, cl.n_cols, export_dir);
    }
    if (json) {
        kf_cli_print_json(kf_probe_to_json(&info, &r), true);
    } else {
        printf("block  dev     test    control\n");
        for (int b = 0; b < r.n_blocks; b++)
            printf("%5d  %.4f  %.4f  %.4f\n", b, r.block_dev[b], r.block_test[b], r.block_ctrl[b]);
        if (!o.blocks_only) {
            printf("oracle: %.4f (control %.4f)\n", r.oracle_test, r.oracle_ctrl);
            printf("LayerSelector: blocks 0-%d, %.4f\n", r.ls_blocks - 1, r.ls_test);
            printf("correlation clustering: %d neurons, %.4f\n", r.cc_neurons, r.cc_test);
            printf("final: %d neurons (%.2f%% of %lld), %.4f = %.2f%% of oracle, selectivity %.4f\n", r.n_selected,
                   100.0 * r.n_selected / (double)r.n_neurons, (long long)r.n_neurons, r.final_test,
                   100.0 * r.final_test / r.oracle_test, r.selectivity);
        }
        fprintf(stderr, "probe: %d probes in %.1f s; %s/report.html, %s/probe.json\n", r.n_runs, r.seconds, out_dir,
                out_dir);
    }
    kf_dalvi_result_free(&r);
    for (int k = 0; k < 3; k++) {
        kf_features_close(&fx[k]);
        kf_task_tokens_free(&tt[k]);
        kf_task_split_free(&sp[k]);
        free(ctrl[k]);
    }
    kf_feat_layout_free(&lay);
    kf_label_set_free(&labels);
    kf_tokenizer_free(tok);
    kf_model_free(m);
    return 0;
}

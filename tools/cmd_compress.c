// kfuse compress MODEL [-f CALIB.txt] --method fold|prune-magnitude|prune-wanda|prune-act|random|drop-layers|
//   prune-task --task PROBE_DIR (the FFN neurons a `kfuse probe --features ffn` ranks highest)
//   [--widths w0,w1,.. | --ffn-keep F | --target-params F | --max-ppl-increase P | --thresholds analysis.json |
//    --drop N [--merge]]
//   [--uniform --no-refit --lambda X --group ls|corr-energy|corr|kmeans-act|kmeans-weight --stats FILE
//    --tokens N --ctx N --seed S --json --max-memory SIZE --recompute] -o OUT [--format hf|gguf|llama2c]
//   [--dtype f32|f16|bf16|q8_0]
//   [--recover TRAIN.txt --recover-train all|ffn|lora --recover-tokens N --recover-lr LR --recover-batch B
//    --recover-ctx T --recover-eval FILE]
// Weights are written in the dtype the model was loaded from unless --dtype says otherwise.
// Everything is computed before anything is written: a target that cannot be
// met, bad widths or statistics from another model stop with one line and no
// output. --recover distils the result from MODEL before it is saved
// (tools/recover_chain.h), as `kfuse recover` on the saved model would.
// One layer's statistics are held at a time; --max-memory (default: half the
// memory the weights leave) must allow the largest layer's, checked with a
// plan line before any work. Each layer's calibration pass starts from the
// residual stream cached on disk (--recompute: from the embeddings).
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/save.h"
#include "analyze/pipeline.h"
#include "calib/calib.h"
#include "cli.h"
#include "recover_chain.h"
#include "core/file.h"
#include "core/progress.h"
#include "eval/perplexity.h"
#include "probe/classifier.h"
#include "report/analysis_json.h"
#include "transform/compress.h"
#include "transform/refit.h"

static const char *method_names[] = {"fold",   "prune-magnitude", "prune-wanda", "prune-act",
                                     "random", "drop-layers",     "prune-task"};
static const char *group_names[] = {"corr", "kmeans-act", "kmeans-weight", "corr-energy", "ls"};
#define N_NAMES(a) ((int)(sizeof(a) / sizeof *(a)))

static int pick(const char *v, const char *const *names, int n, const char *opt) {
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i])) return i;
    kf_cli_failf("compress: %s '%s' is not known", opt, v);
}

static int parse_widths(const char *s, int *w, int cap) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (errno || end == p || x < 1 || x > 1 << 24 || (*end && *end != ',') || n == cap)
            kf_cli_failf("compress: --widths '%s' is not a list of positive integers", s);
        w[n++] = (int)x;
        p = *end ? end + 1 : end;
    }
    return n;
}

// Per-layer correlation cut "t" from analyze's analysis.json
// (thresholds.layers[].t) of a model of L layers; malloc'd.
static double *read_thresholds(const char *path, int L) {
    kf_analysis_result a;
    kf_error err = {0};
    if (kf_report_analysis_read(path, &a, &err) != KF_OK) kf_cli_fail(&err);
    if (a.n_layer != L) kf_cli_failf("%s: thresholds of %d layers, the model has %d", path, a.n_layer, L);
    double *t = malloc((size_t)L * sizeof *t);
    if (!t) kf_cli_failf("compress: out of memory");
    for (int l = 0; l < L; l++) {
        t[l] = a.layers[l].t;
        if (isnan(t[l])) kf_cli_failf("%s: layer %d has no threshold t (none keeps the error within epsilon)", path, l);
    }
    kf_analysis_result_free(&a);
    return t;
}


static void on_progress(void *user, const char *stage, int layer, int n_layer) {
    char extra[64];
    snprintf(extra, sizeof extra, "%s %d", stage, layer);
    kf_progress_update(user, layer, extra);
}

static void on_trial(void *user, double keep, double ppl, double limit) {
    (void)user;
    fprintf(stderr, "compress: keep %.3f of the parameters: validation ppl %.3f (limit %.3f)\n", keep, ppl, limit);
}

int kf_cmd_compress(int argc, char **argv) {
    const char *path = NULL, *calib = NULL, *out = NULL, *format = "hf", *stats_path = NULL, *thr_path = NULL,
               *dtype_name = NULL, *task_dir = NULL, *task_score = NULL;
    int method = -1, group = KF_GROUP_LS, n_w = 0, n_drop = 0, ctx = 256;
    int widths[1024];
    double keep = 0, target = 0, max_inc = -1, lambda = KF_REFIT_LAMBDA;
    long n_tokens = 65536, seed = 1;
    int64_t max_memory = 0;
    bool recompute = false;
    bool refit = true, uniform = false, json = false, merge = false;
    kf_cli_recover_chain rc;
    kf_cli_recover_chain_init(&rc);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (kf_cli_recover_chain_arg(&rc, argc, argv, &i)) continue;
        if (!strcmp(a, "-f")) calib = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "-o")) out = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--method")) method = pick(kf_cli_str(argc, argv, &i), method_names, N_NAMES(method_names), "--method");
        else if (!strcmp(a, "--group")) group = pick(kf_cli_str(argc, argv, &i), group_names, N_NAMES(group_names), "--group");
        else if (!strcmp(a, "--format")) format = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--dtype")) dtype_name = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--widths")) n_w = parse_widths(kf_cli_str(argc, argv, &i), widths, 1024);
        else if (!strcmp(a, "--ffn-keep")) keep = kf_cli_double(argc, argv, &i, 1e-9, 1);
        else if (!strcmp(a, "--target-params")) target = kf_cli_double(argc, argv, &i, 1e-9, 1);
        else if (!strcmp(a, "--max-ppl-increase")) max_inc = kf_cli_double(argc, argv, &i, 0, 1e6);
        else if (!strcmp(a, "--thresholds")) thr_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--drop")) n_drop = (int)kf_cli_long(argc, argv, &i, 1, 1 << 20);
        else if (!strcmp(a, "--task")) task_dir = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--task-score")) task_score = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--stats")) stats_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--lambda")) lambda = kf_cli_double(argc, argv, &i, 0, 1e6);
        else if (!strcmp(a, "--tokens")) n_tokens = kf_cli_long(argc, argv, &i, 2, 1L << 40);
        else if (!strcmp(a, "--ctx")) ctx = (int)kf_cli_long(argc, argv, &i, 2, 1 << 20);
        else if (!strcmp(a, "--seed")) seed = kf_cli_long(argc, argv, &i, 0, 1L << 62);
        else if (!strcmp(a, "--no-refit")) refit = false;
        else if (!strcmp(a, "--uniform")) uniform = true;
        else if (!strcmp(a, "--merge")) merge = true;
        else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--max-memory")) max_memory = (int64_t)kf_cli_bytes(argc, argv, &i);
        else if (!strcmp(a, "--recompute")) recompute = true;
        else if (a[0] == '-') kf_cli_failf("compress: unknown option %s", a);
        else if (!path) path = a;
        else kf_cli_failf("compress: unexpected argument %s", a);
    }
    if (!path) kf_cli_failf("compress: MODEL is required");
    if (task_dir && method < 0) method = KF_CMP_PRUNE_TASK;
    if ((method == KF_CMP_PRUNE_TASK) != (task_dir != NULL))
        kf_cli_failf("compress: --task PROBE_DIR goes with --method prune-task (its default), and only with it");
    kf_task_score score_kind = KF_TASK_SCORE_WEIGHT;
    if (task_score && !task_dir) kf_cli_failf("compress: --task-score goes with --task PROBE_DIR");
    if (task_score && !strcmp(task_score, "ablation")) score_kind = KF_TASK_SCORE_ABLATION;
    else if (task_score && strcmp(task_score, "weight"))
        kf_cli_failf("compress: --task-score wants weight|ablation, not '%s'", task_score);
    if (method < 0) kf_cli_failf("compress: --method is required (%s, ...)", method_names[0]);
    if (!out) kf_cli_failf("compress: -o OUT is required");
    kf_format fmt;
    if (!kf_format_parse(format, &fmt))
        kf_cli_failf("compress: --format must be hf, gguf or llama2c, not '%s'", format);
    int n_targets = (n_w > 0) + (keep > 0) + (target > 0) + (max_inc >= 0) + (thr_path != NULL) + (n_drop > 0);
    if (n_targets != 1)
        kf_cli_failf("compress: give exactly one of --widths, --ffn-keep, --target-params, --max-ppl-increase, "
                     "--thresholds, --drop");
    if ((method == KF_CMP_DROP_LAYERS) != (n_drop > 0))
        kf_cli_failf("compress: --drop N goes with --method drop-layers, and only with it");
    if (merge && n_drop == 0) kf_cli_failf("compress: --merge goes with --method drop-layers --drop N");
    if (thr_path && method != KF_CMP_FOLD) kf_cli_failf("compress: --thresholds needs --method fold");
    if (max_inc >= 0 && (!calib || uniform || stats_path))
        kf_cli_failf("compress: --max-ppl-increase needs -f CALIB.txt, and neither --uniform nor --stats");

    kf_cli_recover_chain_check("compress", &rc);

    // The tokenizer is needed to encode calibration and training text and for GGUF's vocabulary.
    kf_tokenizer *tok = NULL;
    // Compressing layer by layer works on one layer in fp32 at a time (kf_compress_run): the weights stay in
    // their file's dtype; the allocation, drop-layers and recovery read every layer in fp32.
    const bool keep_dtype = method != KF_CMP_DROP_LAYERS && target <= 0 && max_inc < 0 && !rc.text;
    kf_model *m = (keep_dtype ? kf_cli_load_model_run : kf_cli_load_model)(
        path, calib || rc.text || !strcmp(format, "gguf") ? &tok : NULL);
    const kf_dtype dtype = kf_cli_save_dtype("compress", dtype_name, m, fmt); // before any work
    if (rc.text) kf_cli_recover_chain_prepare("compress", &rc, tok);
    const int bos = tok ? kf_tokenizer_bos(tok) : m->bos_id;
    const int L = m->n_layer;
    const int64_t params0 = kf_model_n_params(m), bytes0 = kf_model_weight_bytes(m);
    kf_error err = {0};
    kf_statsfile stats = {0};
    const kf_calib_protocol run = kf_calib_protocol_make(ctx, bos); // a statistics file must share its windows
    if (stats_path && kf_statsfile_load(&stats, stats_path, kf_model_fingerprint(m), &run, &err) != KF_OK)
        kf_cli_fail(&err);
    double **task_scores = NULL;
    if (task_dir && kf_task_scores_read(task_dir, score_kind, m, &task_scores, &err) != KF_OK) kf_cli_fail(&err);
    if (n_w && n_w != L) kf_cli_failf("compress: --widths lists %d widths, the model has %d layers", n_w, L);
    for (int l = 0; l < n_w; l++)
        if (widths[l] > m->layers[l].n_ff)
            kf_cli_failf("compress: width %d for layer %d is larger than the layer (%d neurons)", widths[l], l,
                         m->layers[l].n_ff);
    if (keep > 0)
        for (int l = 0; l < L; l++) widths[l] = (int)fmax(1, lround(keep * m->layers[l].n_ff)), n_w = L;
    if (uniform && n_w)
        for (int l = 1; l < L; l++)
            if (widths[l] != widths[0]) kf_cli_failf("compress: --uniform with widths that differ per layer");

    kf_compress_opts o;
    kf_compress_opts_default(&o);
    o.method = (kf_cmp_method)method;
    o.group = (kf_group_kind)group;
    o.refit = refit && method != KF_CMP_DROP_LAYERS;
    o.lambda_rel = lambda;
    o.seed = (uint64_t)seed;
    o.ctx = ctx;
    o.n_drop = n_drop;
    o.merge = merge;
    o.stats = stats_path ? &stats : NULL;
    o.task_scores = (const double *const *)task_scores;
    o.max_memory = max_memory > 0 ? max_memory : kf_cli_default_max_memory(m);
    o.recompute = recompute;
    {
        int worst;
        const int64_t need = kf_compress_bytes(m, &o, n_w ? widths : NULL, &worst);
        char b0[32], b1[32];
        if (need > o.max_memory)
            kf_cli_failf("compress: --max-memory %s is too small: layer %d needs %s", kf_cli_size_str(b0, sizeof b0,
                         o.max_memory), worst, kf_cli_size_str(b1, sizeof b1, need));
    }

    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (calib) {
        ids = kf_cli_tokenize_file(tok, calib, true, &n_ids);
        if ((long)n_ids > n_tokens) n_ids = (size_t)n_tokens;
    } else if (method == KF_CMP_DROP_LAYERS || (!stats_path && (refit || method == KF_CMP_FOLD ||
                                                                method == KF_CMP_PRUNE_WANDA ||
                                                                method == KF_CMP_PRUNE_ACT))) {
        kf_cli_failf("compress: -f CALIB.txt is required for %s%s", method_names[method],
                     method == KF_CMP_DROP_LAYERS ? "" : refit ? " with refit (or --stats FILE)" : " (or --stats FILE)");
    }

    double *thr = thr_path ? read_thresholds(thr_path, L) : NULL;
    o.thresholds = thr;
    double ppl0 = 0, ppl_found = 0;
    if (max_inc >= 0) {
        // The last quarter of the calibration windows validates, the rest calibrates.
        int64_t n_win = (int64_t)n_ids / ctx, n_v = n_win / 4;
        if (n_v < 1) kf_cli_failf("compress: --max-ppl-increase needs at least 4 calibration windows of %d tokens", ctx);
        n_ids = (size_t)((n_win - n_v) * ctx);
        kf_compress_search_result found;
        if (kf_compress_search(path, ids, (int64_t)n_ids, ids + n_ids, n_v * ctx, bos, &o, max_inc, on_trial, NULL,
                               &found, &err) != KF_OK)
            kf_cli_fail(&err);
        target = found.keep, ppl0 = found.ppl0, ppl_found = found.ppl;
    }
    kf_progress bar;
    kf_progress_init(&bar, "compress", "layers", L);
    o.progress = on_progress;
    o.progress_user = &bar;
    double t0 = kf_time_now();
    if (target > 0) {
        int64_t goal = (int64_t)floor(target * (double)params0);
        if (uniform) {
            // One width k for every layer (layers of equal n_ff): the largest that meets the goal.
            int64_t per = 0, base = params0;
            for (int l = 0; l < L; l++) {
                if (m->layers[l].n_ff != m->layers[0].n_ff) kf_cli_failf("compress: --uniform needs equal layer widths");
                per += kf_compress_neuron_params(m, l);
                base -= (int64_t)m->layers[l].n_ff * kf_compress_neuron_params(m, l);
            }
            int64_t k = per > 0 ? (goal - base) / per : 0;
            if (k < 1)
                kf_cli_failf("compress: target of %lld parameters cannot be met with one FFN width (the rest of the "
                             "model alone has %lld)", (long long)goal, (long long)base);
            if (k > m->layers[0].n_ff) k = m->layers[0].n_ff;
            for (int l = 0; l < L; l++) widths[l] = (int)k;
        } else if (kf_compress_allocate(m, ids, (int64_t)n_ids, bos, &o, goal, widths, &err) != KF_OK) {
            kf_progress_done(&bar);
            kf_cli_fail(&err);
        }
        n_w = L;
    }
    if (n_w) o.widths = widths;
    if (method != KF_CMP_DROP_LAYERS && !stats_path) { // the plan, once the widths are known
        int worst, changed = 0;
        const int64_t need = kf_compress_bytes(m, &o, o.widths, &worst);
        for (int l = 0; l < L; l++) changed += !o.widths || widths[l] != m->layers[l].n_ff;
        char b0[32], b1[32];
        if (need > 0)
            fprintf(stderr, "compress: plan: %d calibration passes (one per layer changed, %s), statistics memory %s "
                            "of --max-memory %s (one layer at a time)\n", changed,
                    recompute ? "each from the embeddings" : "each from the residual stream cached on disk",
                    kf_cli_size_str(b0, sizeof b0, need), kf_cli_size_str(b1, sizeof b1, o.max_memory));
    }
    kf_compress_report rep;
    kf_status s = kf_compress_run(m, ids, (int64_t)n_ids, bos, &o, &rep, &err);
    kf_progress_done(&bar);
    if (s != KF_OK) kf_cli_fail(&err);
    cJSON *rec_js = rc.text ? kf_cli_recover_chain_run("compress", &rc, m, path, tok) : NULL;
    double secs = kf_time_now() - t0;

    // Export: only now is anything written.
    kf_save_opts so = {.format = fmt, .dtype = dtype, .tok = tok, .tokenizer_dir = kf_dir_exists(path) ? path : NULL};
    kf_cli_save_model("compress", m, out, &so);

    cJSON *o_js = cJSON_CreateObject();
    cJSON_AddStringToObject(o_js, "model", path);
    cJSON_AddStringToObject(o_js, "method", method_names[method]);
    if (method == KF_CMP_FOLD) cJSON_AddStringToObject(o_js, "group", group_names[group]);
    if (task_dir) cJSON_AddStringToObject(o_js, "task", task_dir);
    if (task_dir) cJSON_AddStringToObject(o_js, "task_score", score_kind == KF_TASK_SCORE_ABLATION ? "ablation" : "weight");
    cJSON_AddBoolToObject(o_js, "refit", o.refit);
    if (o.refit) cJSON_AddNumberToObject(o_js, "lambda_rel", lambda);
    cJSON_AddStringToObject(o_js, "calibration", calib ? calib : "");
    cJSON_AddNumberToObject(o_js, "calibration_tokens", (double)rep.n_calib_tokens);
    cJSON_AddStringToObject(o_js, "stats", stats_path ? stats_path : "");
    cJSON_AddNumberToObject(o_js, "params_before", (double)params0);
    cJSON_AddNumberToObject(o_js, "params_after", (double)kf_model_n_params(m));
    cJSON_AddNumberToObject(o_js, "weight_bytes_before", (double)bytes0);
    cJSON_AddNumberToObject(o_js, "weight_bytes_after", (double)kf_model_weight_bytes(m));
    cJSON *ly = cJSON_AddArrayToObject(o_js, "layers");
    for (int l = 0; l < rep.n_layer_before; l++) {
        const kf_compress_layer *r = &rep.layers[l];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "layer", r->layer);
        cJSON_AddNumberToObject(e, "n_ff_before", r->n_ff_before);
        cJSON_AddNumberToObject(e, "n_ff_after", r->n_ff_after);
        if (!isnan(r->t_cut)) cJSON_AddNumberToObject(e, "threshold", r->t_cut);
        if (!isnan(r->rel_err)) cJSON_AddNumberToObject(e, "rel_err", r->rel_err);
        if (r->refit_centred) cJSON_AddBoolToObject(e, "refit_centred", 1);
        if (rep.block_influence) cJSON_AddNumberToObject(e, "block_influence", rep.block_influence[l]);
        cJSON_AddItemToArray(ly, e);
    }
    cJSON *dr = cJSON_AddArrayToObject(o_js, "dropped");
    for (int i = 0; i < rep.n_dropped; i++) cJSON_AddItemToArray(dr, cJSON_CreateNumber(rep.dropped[i]));
    if (rep.merged_into) {
        cJSON *mi = cJSON_AddArrayToObject(o_js, "merged_into");
        for (int i = 0; i < rep.n_dropped; i++) cJSON_AddItemToArray(mi, cJSON_CreateNumber(rep.merged_into[i]));
    }
    if (max_inc >= 0) {
        cJSON_AddNumberToObject(o_js, "max_ppl_increase_pct", max_inc);
        cJSON_AddNumberToObject(o_js, "kept_fraction", target);
        cJSON_AddNumberToObject(o_js, "validation_ppl_before", ppl0);
        cJSON_AddNumberToObject(o_js, "validation_ppl_after", ppl_found);
    }
    cJSON_AddStringToObject(o_js, "output", out);
    cJSON_AddStringToObject(o_js, "format", format);
    if (rec_js) cJSON_AddItemToObject(o_js, "recover", rec_js);
    cJSON_AddNumberToObject(o_js, "seconds", secs);
    kf_cli_print_json(o_js, json);
    if (!json)
        fprintf(stderr, "compress: %s, %lld -> %lld parameters in %.1f s, written to %s (%s)\n", method_names[method],
                (long long)params0, (long long)kf_model_n_params(m), secs, out, format);
    kf_compress_report_free(&rep);
    kf_task_scores_free(task_scores, L);
    kf_statsfile_free(&stats);
    free(thr);
    free(ids);
    kf_tokenizer_free(tok);
    kf_model_free(m);
    return 0;
}

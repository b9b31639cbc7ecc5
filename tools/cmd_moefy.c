// kfuse moefy MODEL -f CALIB.txt --experts E [--split kmeans|coact|fold]
//   [--router similarity|linear|mlp|oracle] [--top-k K | --share P | --coverage T]
//   [--stats FILE --tokens N --router-tokens N --ctx N --hidden H --epochs N --lr X
//    --fold-keep P --seed S --format hf|gguf --dtype f32|f16|bf16|q8_0 --json --max-memory SIZE] -o OUT
//   [--recover TRAIN.txt --recover-train router|ffn|all|lora --recover-tokens N --recover-eval FILE]
// --recover distils the MoEfied model from the original before it is saved
// (tools/recover_chain.h; default: the routers only, trained end to end).
// Weights are written in the dtype the model was loaded from unless --dtype
// says otherwise; routers are F32.
// --max-memory (default: half the memory the weights leave) bounds the
// statistics of the coact and fold splits: layers then go in groups, one
// calibration pass each; a plan line says so before any work, and a cap too
// small for one layer fails with one line.
// Turns every FFN layer into E equal experts with a router (src/moe/moefy.h),
// writes the model (HF folder, or GGUF), prints a JSON summary on stdout.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/save.h"
#include "analyze/pipeline.h"
#include "calib/calib.h"
#include "cli.h"
#include "recover_chain.h"
#include "core/file.h"
#include "core/progress.h"
#include "moe/moefy.h"

static const char *split_names[] = {"kmeans", "coact", "fold"};
static const char *router_names[] = {"similarity", "linear", "mlp", "oracle"};

static int pick(const char *v, const char *const *names, int n, const char *opt) {
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i])) return i;
    kf_cli_failf("moefy: %s '%s' is not known", opt, v);
}

static void on_progress(void *user, const char *stage, int layer, int n_layer) {
    char extra[64];
    snprintf(extra, sizeof extra, "%s, layer %d/%d", stage, layer, n_layer);
    kf_progress_update(user, layer, extra);
}

int kf_cmd_moefy(int argc, char **argv) {
    const char *path = NULL, *calib = NULL, *out = NULL, *format = NULL, *stats_path = NULL, *dtype_name = NULL;
    kf_moefy_opts o;
    kf_moefy_opts_default(&o);
    int E = 0, top_k = -1;
    double share = 0, coverage = 0;
    bool json = false;
    kf_cli_recover_chain rc;
    kf_cli_recover_chain_init(&rc);
    rc.mode = "router"; // the MoEfied model's own parameters: DSTI/LTE train the gates
    for (int i = 1; i < argc; i++) {
        if (kf_cli_recover_chain_arg(&rc, argc, argv, &i)) continue;
        const char *a = argv[i];
        if (!strcmp(a, "-f")) calib = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "-o")) out = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--experts")) E = (int)kf_cli_long(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(a, "--split")) o.split = pick(kf_cli_str(argc, argv, &i), split_names, 3, "--split");
        else if (!strcmp(a, "--router")) o.router = pick(kf_cli_str(argc, argv, &i), router_names, 4, "--router");
        else if (!strcmp(a, "--top-k")) top_k = (int)kf_cli_long(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(a, "--share")) share = kf_cli_double(argc, argv, &i, 1e-9, 1);
        else if (!strcmp(a, "--coverage")) coverage = kf_cli_double(argc, argv, &i, 1e-9, 1);
        else if (!strcmp(a, "--stats")) stats_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--tokens")) o.n_tokens = kf_cli_long(argc, argv, &i, 2, 1L << 40);
        else if (!strcmp(a, "--router-tokens")) o.router_tokens = (int)kf_cli_long(argc, argv, &i, 16, 1 << 24);
        else if (!strcmp(a, "--ctx")) o.ctx = (int)kf_cli_long(argc, argv, &i, 2, 1 << 20);
        else if (!strcmp(a, "--hidden")) o.hidden = (int)kf_cli_long(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(a, "--epochs")) o.epochs = (int)kf_cli_long(argc, argv, &i, 1, 100000);
        else if (!strcmp(a, "--lr")) o.lr = (float)kf_cli_double(argc, argv, &i, 1e-9, 10);
        else if (!strcmp(a, "--fold-keep")) o.fold_keep = kf_cli_double(argc, argv, &i, 1e-9, 1);
        else if (!strcmp(a, "--seed")) o.seed = (uint64_t)kf_cli_long(argc, argv, &i, 0, 1L << 62);
        else if (!strcmp(a, "--format")) format = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--dtype")) dtype_name = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--max-memory")) o.max_memory = (int64_t)kf_cli_bytes(argc, argv, &i);
        else if (a[0] == '-') kf_cli_failf("moefy: unknown option %s", a);
        else if (!path) path = a;
        else kf_cli_failf("moefy: unexpected argument %s", a);
    }
    if (!path) kf_cli_failf("moefy: MODEL is required");
    if (!calib) kf_cli_failf("moefy: -f CALIB.txt is required");
    if (!out) kf_cli_failf("moefy: -o OUT is required");
    if (E < 1) kf_cli_failf("moefy: --experts E is required");
    if ((top_k > 0) + (share > 0) + (coverage > 0) > 1)
        kf_cli_failf("moefy: give at most one of --top-k, --share, --coverage");
    if (!format) {
        size_t n = strlen(out);
        format = n > 5 && !strcmp(out + n - 5, ".gguf") ? "gguf" : "hf";
    }
    if (strcmp(format, "hf") && strcmp(format, "gguf")) kf_cli_failf("moefy: --format must be hf or gguf");
    o.n_expert = E;
    if (top_k > E) kf_cli_failf("moefy: --top-k %d exceeds --experts %d", top_k, E);
    if (top_k > 0) o.top_k = top_k;
    else if (share > 0) o.top_k = (int)fmax(1, lround(share * E));
    else if (coverage > 0) o.top_k = 0, o.coverage = (float)coverage;
    else o.top_k = E / 4 > 0 ? E / 4 : 1;

    kf_cli_recover_chain_check("moefy", &rc);

    kf_tokenizer *tok;
    kf_model *m = kf_cli_load_model(path, &tok);
    const kf_format fmt = strcmp(format, "hf") ? KF_FORMAT_GGUF : KF_FORMAT_HF;
    const kf_dtype dtype = kf_cli_save_dtype("moefy", dtype_name, m, fmt); // before any work
    kf_error err = {0};
    kf_statsfile stats = {0};
    if (stats_path) {
        // Statistics from other windows than this run's would not be this run's statistics.
        const kf_calib_protocol run = kf_calib_protocol_make(o.ctx, kf_tokenizer_bos(tok));
        if (kf_statsfile_load(&stats, stats_path, kf_model_fingerprint(m), &run, &err) != KF_OK) kf_cli_fail(&err);
        o.stats = &stats;
    }
    if (o.max_memory == 0) o.max_memory = kf_cli_default_max_memory(m);
    kf_moefy_plan plan;
    if (kf_moefy_plan_make(m, &o, &plan, &err) != KF_OK) kf_cli_fail(&err);
    if (plan.bytes > 0) {
        char b0[32], b1[32], b2[32];
        fprintf(stderr, "moefy: plan: %d statistics pass%s, statistics memory %s of --max-memory %s (one pass would need "
                        "%s)\n", plan.n_groups, plan.n_groups > 1 ? "es (layer groups)" : "",
                kf_cli_size_str(b0, sizeof b0, plan.bytes), kf_cli_size_str(b1, sizeof b1, o.max_memory),
                kf_cli_size_str(b2, sizeof b2, plan.bytes_one_pass));
    }
    kf_moefy_plan_free(&plan);
    size_t n_ids = 0;
    int32_t *ids = kf_cli_tokenize_file(tok, calib, true, &n_ids);
    if (rc.text) kf_cli_recover_chain_prepare("moefy", &rc, tok);

    kf_progress bar;
    kf_progress_init(&bar, "moefy", "layers", m->n_layer);
    o.progress = on_progress;
    o.progress_user = &bar;
    double t0 = kf_time_now();
    kf_moefy_report rep;
    kf_status s = kf_moefy_run(m, ids, (int64_t)n_ids, kf_tokenizer_bos(tok), &o, &rep, &err);
    kf_progress_done(&bar);
    if (s != KF_OK) kf_cli_fail(&err);
    cJSON *rec_js = rc.text ? kf_cli_recover_chain_run("moefy", &rc, m, path, tok) : NULL;
    double secs = kf_time_now() - t0;

    kf_save_opts so = {.format = fmt, .dtype = dtype, .tok = tok, .tokenizer_dir = kf_dir_exists(path) ? path : NULL};
    kf_cli_save_model("moefy", m, out, &so);

    cJSON *js = cJSON_CreateObject();
    cJSON_AddStringToObject(js, "model", path);
    cJSON_AddStringToObject(js, "calibration", calib);
    cJSON_AddNumberToObject(js, "experts", E);
    cJSON_AddStringToObject(js, "split", split_names[o.split]);
    cJSON_AddStringToObject(js, "router", router_names[o.router]);
    if (o.top_k > 0) cJSON_AddNumberToObject(js, "top_k", o.top_k);
    else cJSON_AddNumberToObject(js, "coverage", o.coverage);
    cJSON_AddNumberToObject(js, "statistics_tokens", (double)rep.n_calib_tokens);
    cJSON_AddNumberToObject(js, "router_train_tokens", rep.n_train);
    cJSON_AddNumberToObject(js, "router_heldout_tokens", rep.n_heldout);
    cJSON_AddNumberToObject(js, "recall_k", rep.k_eval);
    double mr = 0, ms = 0, msh = 0;
    cJSON *ly = cJSON_AddArrayToObject(js, "layers");
    for (int l = 0; l < rep.n_layer; l++) {
        const kf_moefy_layer *r = &rep.layers[l];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "layer", l);
        cJSON_AddNumberToObject(e, "recall", r->recall);
        cJSON_AddNumberToObject(e, "recall_similarity", r->recall_similarity);
        cJSON_AddNumberToObject(e, "share", r->share);
        if (!isnan(r->loss)) cJSON_AddNumberToObject(e, "train_mse", r->loss);
        cJSON_AddItemToArray(ly, e);
        mr += r->recall / rep.n_layer;
        ms += r->recall_similarity / rep.n_layer;
        msh += r->share / rep.n_layer;
    }
    cJSON_AddNumberToObject(js, "mean_recall", mr);
    cJSON_AddNumberToObject(js, "mean_recall_similarity", ms);
    cJSON_AddNumberToObject(js, "mean_share", msh);
    cJSON_AddStringToObject(js, "output", out);
    cJSON_AddStringToObject(js, "format", format);
    cJSON_AddNumberToObject(js, "seconds", secs);
    if (rec_js) cJSON_AddItemToObject(js, "recover", rec_js);
    kf_cli_print_json(js, json);
    if (!json)
        fprintf(stderr, "moefy: %d experts (%s split, %s router), recall@%d %.3f (similarity %.3f), share %.3f, %.1f s, written to %s\n",
                E, split_names[o.split], router_names[o.router], rep.k_eval, mr, ms, msh, secs, out);
    kf_moefy_report_free(&rep);
    kf_statsfile_free(&stats);
    free(ids);
    kf_tokenizer_free(tok);
    kf_model_free(m);
    return 0;
}

// kfuse eval MODEL [MODEL...] --ref ORIGINAL -f TEXT [--ctx N --chunks N --json --bench-p N --bench-n N --bench-r N
//   --no-bench --top-k K | --coverage T --perturb typo:RATE[,seed:S]] [--task blimp=PATH --task-pairs N
//   --task-scores FILE]
// Several models are scored in one pass over the text, the reference computed
// once per window; --json then prints an array of the one-model objects.
// --top-k / --coverage change the expert selection of MoE models.
// --perturb scores the same models again on the text with seeded typos
// (task/perturb.h) and reports each side's robustness gap.
// --task blimp=PATH scores BLiMP minimal pairs for every model and the
// reference; with --task, -f (and then --ref) may be left out.
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/progress.h"
#include "eval/bench.h"
#include "eval/compare.h"
#include "eval_task.h"
#include "task/perturb.h"

static void on_chunk(void *user, int chunk, int n_chunks, const kf_ppl_result *r) {
    char extra[64];
    snprintf(extra, sizeof extra, "ppl %.4f", r->ppl);
    kf_progress_update(user, chunk + 1, extra);
}

// What the output says of a model's size, kept after the model is freed.
typedef struct {
    int64_t params, bytes;
} model_size;

static model_size size_of(const kf_model *m) { return (model_size){kf_model_n_params(m), kf_model_weight_bytes(m)}; }

static cJSON *side_json(const char *path, model_size m, const kf_ppl_result *p, const kf_bench_result *b) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", path);
    if (p) {
        cJSON_AddNumberToObject(o, "ppl", p->ppl);
        cJSON_AddNumberToObject(o, "ppl_se", p->ppl_se);
        cJSON_AddNumberToObject(o, "nll_mean", p->nll_mean);
    }
    cJSON_AddNumberToObject(o, "params", (double)m.params);
    cJSON_AddNumberToObject(o, "weight_bytes", (double)m.bytes);
    if (b) {
        cJSON_AddNumberToObject(o, "prefill_tps", b->pp.median);
        cJSON_AddNumberToObject(o, "decode_tps", b->tg.median);
    }
    return o;
}

// What --perturb adds: the same comparison on the perturbed text.
typedef struct {
    const char *spec;
    kf_perturb_stats st;
    size_t n_ids;
    kf_compare_result *r; // per model
} perturbed_run;

static cJSON *ppl_json(const kf_ppl_result *p) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "ppl", p->ppl);
    cJSON_AddNumberToObject(o, "ppl_se", p->ppl_se);
    cJSON_AddNumberToObject(o, "nll_mean", p->nll_mean);
    return o;
}

static cJSON *perturbed_json(const perturbed_run *pr, const kf_compare_result *clean, const kf_compare_result *r) {
    cJSON *o = cJSON_CreateObject(), *ed = cJSON_CreateObject(), *gap = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "perturb", pr->spec);
    cJSON_AddNumberToObject(ed, "eligible", (double)pr->st.n_eligible);
    cJSON_AddNumberToObject(ed, "considered", (double)pr->st.n_considered);
    cJSON_AddNumberToObject(ed, "swap", (double)pr->st.n_swap);
    cJSON_AddNumberToObject(ed, "drop", (double)pr->st.n_drop);
    cJSON_AddNumberToObject(ed, "insert", (double)pr->st.n_insert);
    cJSON_AddNumberToObject(ed, "substitute", (double)pr->st.n_sub);
    cJSON_AddItemToObject(o, "edits", ed);
    cJSON_AddNumberToObject(o, "n_tokens", (double)pr->n_ids);
    cJSON_AddNumberToObject(o, "n_scored", (double)r->n_scored);
    cJSON_AddNumberToObject(o, "kl_mean", r->kl_mean);
    cJSON_AddNumberToObject(o, "kl_p99", r->kl_p99);
    cJSON_AddNumberToObject(o, "kl_max", r->kl_max);
    cJSON_AddNumberToObject(o, "top1_agreement", r->top1);
    cJSON_AddItemToObject(o, "model", ppl_json(&r->model));
    cJSON_AddItemToObject(o, "ref", ppl_json(&r->ref));
    // robustness gap: perturbed over clean perplexity, minus one, per side
    cJSON_AddNumberToObject(gap, "model", r->model.ppl / clean->model.ppl - 1);
    cJSON_AddNumberToObject(gap, "ref", r->ref.ppl / clean->ref.ppl - 1);
    cJSON_AddNumberToObject(gap, "model_nll", r->model.nll_mean - clean->model.nll_mean);
    cJSON_AddNumberToObject(gap, "ref_nll", r->ref.nll_mean - clean->ref.nll_mean);
    cJSON_AddItemToObject(o, "gap", gap);
    return o;
}

static cJSON *result_json(const char *text_path, int ctx, size_t n_ids, const char *path, model_size m,
                          const char *ref_path, const model_size *ref, const kf_compare_result *r,
                          const kf_bench_result *bm, const kf_bench_result *br, const int bench_pnr[3]) {
    cJSON *o = cJSON_CreateObject();
    if (r) {
        cJSON_AddStringToObject(o, "text", text_path);
        cJSON_AddNumberToObject(o, "ctx", ctx);
        cJSON_AddNumberToObject(o, "n_tokens", (double)n_ids);
        cJSON_AddNumberToObject(o, "n_scored", (double)r->n_scored);
        cJSON_AddNumberToObject(o, "kl_mean", r->kl_mean);
        cJSON_AddNumberToObject(o, "kl_p99", r->kl_p99);
        cJSON_AddNumberToObject(o, "kl_max", r->kl_max);
        cJSON_AddNumberToObject(o, "top1_agreement", r->top1);
        cJSON_AddNumberToObject(o, "ffn_share", r->ffn_share);
    }
    cJSON_AddItemToObject(o, "model", side_json(path, m, r ? &r->model : NULL, bm));
    if (ref) cJSON_AddItemToObject(o, "ref", side_json(ref_path, *ref, r ? &r->ref : NULL, br));
    if (bm) {
        cJSON_AddNumberToObject(o, "bench_prompt", bench_pnr[0]);
        cJSON_AddNumberToObject(o, "bench_gen", bench_pnr[1]);
        cJSON_AddNumberToObject(o, "bench_repeats", bench_pnr[2]);
    }
    return o;
}

static void print_text(const char *text_path, int ctx, const char *path, model_size m, model_size ref,
                       const kf_compare_result *r, const kf_bench_result *bm, const kf_bench_result *br,
                       const int bench_pnr[3]) {
    printf("%s vs reference on %s: %lld tokens scored (ctx %d)\n", path, text_path, (long long)r->n_scored, ctx);
    printf("%-10s %12s %12s\n", "", "model", "reference");
    printf("%-10s %12.4f %12.4f\n", "ppl", r->model.ppl, r->ref.ppl);
    printf("%-10s %12lld %12lld\n", "params", (long long)m.params, (long long)ref.params);
    printf("%-10s %12lld %12lld\n", "bytes", (long long)m.bytes, (long long)ref.bytes);
    if (r->ffn_share < 1) printf("%-10s %12.4f %12.4f  (FFN neurons computed per token)\n", "ffn share", r->ffn_share, 1.0);
    if (bm) {
        printf("%-10s %12.1f %12.1f  (tokens/s, prompt %d)\n", "prefill", bm->pp.median, br->pp.median, bench_pnr[0]);
        printf("%-10s %12.1f %12.1f  (tokens/s, %d tokens)\n", "decode", bm->tg.median, br->tg.median, bench_pnr[1]);
    }
    printf("KL(ref||model): mean %.6f  p99 %.6f  max %.6f nats; top-1 agreement %.4f\n", r->kl_mean, r->kl_p99,
           r->kl_max, r->top1);
}

static void print_perturbed(const perturbed_run *pr, const kf_compare_result *clean, const kf_compare_result *r) {
    const kf_perturb_stats *st = &pr->st;
    printf("perturbed (%s): %lld edits of %lld drawn characters (swap %lld, drop %lld, insert %lld, substitute %lld); "
           "%lld tokens scored\n",
           pr->spec, (long long)(st->n_swap + st->n_drop + st->n_insert + st->n_sub), (long long)st->n_considered,
           (long long)st->n_swap, (long long)st->n_drop, (long long)st->n_insert, (long long)st->n_sub,
           (long long)r->n_scored);
    printf("%-10s %12s %12s\n", "", "model", "reference");
    printf("%-10s %12.4f %12.4f\n", "ppl clean", clean->model.ppl, clean->ref.ppl);
    printf("%-10s %12.4f %12.4f\n", "ppl typo", r->model.ppl, r->ref.ppl);
    printf("%-10s %+11.2f%% %+11.2f%%  (robustness gap: perturbed / clean perplexity - 1)\n", "gap",
           100 * (r->model.ppl / clean->model.ppl - 1), 100 * (r->ref.ppl / clean->ref.ppl - 1));
    printf("KL(ref||model): clean mean %.6f p99 %.6f; perturbed mean %.6f p99 %.6f nats; top-1 agreement %.4f -> %.4f\n",
           clean->kl_mean, clean->kl_p99, r->kl_mean, r->kl_p99, clean->top1, r->top1);
}

int kf_cmd_eval(int argc, char **argv) {
    const char *ref_path = NULL, *text_path = NULL, *task = NULL, *scores_path = NULL, *perturb = NULL;
    const char **paths = calloc((size_t)argc, sizeof *paths);
    long chunks = 0; // 0: every whole window of the text
    int n_models = 0, ctx = 256, bench_p = 128, bench_n = 64, bench_r = 3, top_k = 0, task_pairs = 0;
    double coverage = 0;
    bool json = false, bench = true;
    if (!paths) kf_cli_failf("eval: out of memory");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-f")) text_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--ref")) ref_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--ctx") || !strcmp(argv[i], "-c")) ctx = (int)kf_cli_long(argc, argv, &i, 4, 1 << 20);
        else if (!strcmp(argv[i], "--bench-p")) bench_p = (int)kf_cli_long(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(argv[i], "--bench-n")) bench_n = (int)kf_cli_long(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(argv[i], "--bench-r")) bench_r = (int)kf_cli_long(argc, argv, &i, 1, 1000);
        else if (!strcmp(argv[i], "--chunks")) chunks = kf_cli_long(argc, argv, &i, 1, 1L << 40);
        else if (!strcmp(argv[i], "--no-bench")) bench = false;
        else if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "--top-k")) top_k = (int)kf_cli_long(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(argv[i], "--coverage")) coverage = kf_cli_double(argc, argv, &i, 1e-9, 1);
        else if (!strcmp(argv[i], "--task")) task = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--task-pairs")) task_pairs = (int)kf_cli_long(argc, argv, &i, 0, 1 << 30);
        else if (!strcmp(argv[i], "--task-scores")) scores_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--perturb")) perturb = kf_cli_str(argc, argv, &i);
        else if (argv[i][0] == '-') kf_cli_failf("eval: unknown option %s", argv[i]);
        else paths[n_models++] = argv[i];
    }
    if (!n_models) kf_cli_failf("eval: MODEL is required");
    if (top_k > 0 && coverage > 0) kf_cli_failf("eval: give at most one of --top-k, --coverage");
    const char *blimp_path = NULL;
    if (task) {
        if (strncmp(task, "blimp=", 6) != 0 || !task[6])
            kf_cli_failf("eval: --task '%s': expected blimp=PATH (a BLiMP .jsonl file or folder)", task);
        blimp_path = task + 6;
    }
    if ((task_pairs || scores_path) && !task) kf_cli_failf("eval: --task-pairs and --task-scores need --task");
    if (!text_path && !task) kf_cli_failf("eval: -f TEXT is required (or --task blimp=PATH)");
    if (text_path && !ref_path) kf_cli_failf("eval: --ref ORIGINAL is required");
    if (perturb && !text_path) kf_cli_failf("eval: --perturb needs -f TEXT");
    kf_error err = {0};
    kf_perturb_opts popts;
    if (perturb && kf_perturb_parse(perturb, &popts, &err) != KF_OK) kf_cli_fail(&err);
    kf_tokenizer *tok = NULL;
    kf_model **ms = calloc((size_t)n_models, sizeof *ms);
    if (!ms) kf_cli_failf("eval: out of memory");
    for (int k = 0; k < n_models; k++) {
        ms[k] = kf_cli_load_model_run(paths[k], k == 0 ? &tok : NULL);
        if ((top_k > 0 || coverage > 0) && kf_model_set_expert_selection(ms[k], top_k, (float)coverage, &err) != KF_OK)
            kf_cli_fail(&err);
    }
    kf_model *ref = ref_path ? kf_cli_load_model_run(ref_path, NULL) : NULL;
    // one tokenizer (the first model's) serves every model: vocabularies must agree
    const kf_model *vref = ref ? ref : ms[0];
    const char *vpath = ref ? ref_path : paths[0];
    for (int k = 0; k < n_models; k++)
        if (vref->n_vocab != ms[k]->n_vocab) {
            // freed before the exit: nothing is left for the leak checker of the sanitizer builds
            kf_error_set(&err, KF_ERR_ARG, "eval: vocabularies differ: %s has %d entries, %s has %d", paths[k],
                         ms[k]->n_vocab, vpath, vref->n_vocab);
            for (int j = 0; j < n_models; j++) kf_model_free(ms[j]);
            kf_model_free(ref);
            kf_tokenizer_free(tok);
            free(ms);
            free(paths);
            kf_cli_fail(&err);
        }
    // Without BLiMP the reference is needed only for its own pass: it runs
    // first, its logits cached on disk, and is freed before any model runs,
    // so the reference and a model are never resident together (the result
    // is the same, bit for bit).
    const bool ref_first = ref && !blimp_path;
    const model_size ref_size = ref ? size_of(ref) : (model_size){0, 0};
    size_t n_ids = 0;
    int32_t *ids = NULL, *pids = NULL;
    kf_compare_result *r = NULL;
    perturbed_run pr = {.spec = perturb};
    kf_eval_ref_cache cache = {.fd = -1}, pcache = {.fd = -1};
    if (text_path) {
        ids = kf_cli_tokenize_file(tok, text_path, true, &n_ids);
        if (chunks && n_ids > (size_t)chunks * (size_t)ctx) n_ids = (size_t)chunks * (size_t)ctx;
        if (!(r = calloc((size_t)n_models, sizeof *r))) kf_cli_failf("eval: out of memory");
    }
    if (perturb) {
        size_t len, plen;
        char *text = kf_cli_read_text(text_path, &len), *noisy;
        kf_error e = {0};
        if (kf_perturb_typo(text, len, &popts, &noisy, &plen, &pr.st, &e) != KF_OK)
            kf_cli_failf("%s: %s", text_path, e.msg);
        free(text);
        if (kf_tokenizer_encode(tok, noisy, plen, true, &pids, &pr.n_ids, &e) != KF_OK)
            kf_cli_failf("%s (perturbed): %s", text_path, e.msg);
        free(noisy);
        if (chunks && pr.n_ids > (size_t)chunks * (size_t)ctx) pr.n_ids = (size_t)chunks * (size_t)ctx;
        if (!(pr.r = calloc((size_t)n_models, sizeof *pr.r))) kf_cli_failf("eval: out of memory");
    }
    kf_bench_result br;
    if (ref_first) {
        kf_progress bar;
        kf_progress_init(&bar, "eval reference", "windows", 1);
        if (text_path &&
            kf_eval_ref_cache_make(ref, ids, (int64_t)n_ids, ctx, kf_tokenizer_bos(tok), &cache, &err) != KF_OK)
            kf_cli_fail(&err);
        if (perturb &&
            kf_eval_ref_cache_make(ref, pids, (int64_t)pr.n_ids, ctx, kf_tokenizer_bos(tok), &pcache, &err) != KF_OK)
            kf_cli_fail(&err);
        kf_progress_update(&bar, 1, NULL);
        kf_progress_done(&bar);
        if (bench && kf_bench_run(ref, bench_p, bench_n, bench_r, &br, &err) != KF_OK) kf_cli_fail(&err);
        kf_model_free(ref);
        ref = NULL;
    }
    // the comparisons: clean text, then perturbed
    for (int pass = 0; pass < 2; pass++) {
        const int32_t *t = pass ? pids : ids;
        const size_t n = pass ? pr.n_ids : n_ids;
        kf_compare_result *out = pass ? pr.r : r;
        if (!t) continue;
        if (ref_first) {
            for (int k = 0; k < n_models; k++) {
                kf_progress bar;
                kf_progress_init(&bar, pass ? "eval typo" : "eval", "windows", (int64_t)(n / (size_t)ctx));
                kf_status s = kf_eval_compare_cached(ms[k], pass ? &pcache : &cache, t, (int64_t)n, &out[k], on_chunk,
                                                     &bar, &err);
                kf_progress_done(&bar);
                if (s != KF_OK) kf_cli_fail(&err);
            }
        } else {
            kf_progress bar;
            kf_progress_init(&bar, pass ? "eval typo" : "eval", "windows", (int64_t)(n / (size_t)ctx));
            kf_status s = kf_eval_compare_many((const kf_model *const *)ms, n_models, ref, t, (int64_t)n, ctx,
                                               kf_tokenizer_bos(tok), out, on_chunk, &bar, &err);
            kf_progress_done(&bar);
            if (s != KF_OK) kf_cli_fail(&err);
        }
    }
    kf_eval_ref_cache_free(&cache);
    kf_eval_ref_cache_free(&pcache);
    free(ids);
    free(pids);
    // BLiMP columns: the models, then the reference
    const int n_cols = n_models + (ref != NULL);
    kf_cli_blimp blimp = {0};
    const kf_model **cols = calloc((size_t)n_cols, sizeof *cols);
    const char **names = calloc((size_t)n_cols, sizeof *names);
    if (!cols || !names) kf_cli_failf("eval: out of memory");
    for (int k = 0; k < n_models; k++) cols[k] = ms[k], names[k] = paths[k];
    if (ref) cols[n_models] = ref, names[n_models] = ref_path;
    if (blimp_path) {
        kf_cli_blimp_run(&blimp, blimp_path, task_pairs, tok, cols, names, n_cols);
        if (scores_path) kf_cli_blimp_write_scores(&blimp, scores_path, names);
    }
    kf_bench_result *bm = calloc((size_t)n_models, sizeof *bm);
    if (!bm) kf_cli_failf("eval: out of memory");
    if (bench) {
        // All measured in this process, one after the other.
        for (int k = 0; k < n_models; k++)
            if (kf_bench_run(ms[k], bench_p, bench_n, bench_r, &bm[k], &err) != KF_OK) kf_cli_fail(&err);
        if (ref && !ref_first && kf_bench_run(ref, bench_p, bench_n, bench_r, &br, &err) != KF_OK) kf_cli_fail(&err);
    }
    const int pnr[3] = {bench_p, bench_n, bench_r};
    if (json) {
        cJSON *all = n_models > 1 ? cJSON_CreateArray() : NULL;
        for (int k = 0; k < n_models; k++) {
            cJSON *o = result_json(text_path, ctx, n_ids, paths[k], size_of(ms[k]), ref_path, ref_path ? &ref_size : NULL,
                                   r ? &r[k] : NULL, bench ? &bm[k] : NULL, bench && ref_path ? &br : NULL, pnr);
            if (perturb) cJSON_AddItemToObject(o, "perturbed", perturbed_json(&pr, &r[k], &pr.r[k]));
            if (blimp_path) {
                cJSON_AddItemToObject(cJSON_GetObjectItem(o, "model"), "blimp", kf_cli_blimp_json(&blimp, k));
                if (ref_path) cJSON_AddItemToObject(cJSON_GetObjectItem(o, "ref"), "blimp", kf_cli_blimp_json(&blimp, n_models));
            }
            if (!all) kf_cli_print_json(o, true);
            else cJSON_AddItemToArray(all, o);
        }
        if (all) kf_cli_print_json(all, true);
    } else {
        for (int k = 0; k < n_models; k++) {
            if (r) print_text(text_path, ctx, paths[k], size_of(ms[k]), ref_size, &r[k], bench ? &bm[k] : NULL, bench ? &br : NULL, pnr);
            else if (bench)
                printf("%s: prefill %.1f tokens/s (prompt %d), decode %.1f tokens/s (%d tokens)\n", paths[k],
                       bm[k].pp.median, bench_p, bm[k].tg.median, bench_n);
            if (perturb) print_perturbed(&pr, &r[k], &pr.r[k]);
        }
        if (!r && bench && ref_path)
            printf("%s: prefill %.1f tokens/s (prompt %d), decode %.1f tokens/s (%d tokens)\n", ref_path, br.pp.median,
                   bench_p, br.tg.median, bench_n);
        if (blimp_path) kf_cli_blimp_print(&blimp, names);
    }
    kf_cli_blimp_free(&blimp);
    free(cols);
    free(names);
    free(r);
    free(pr.r);
    free(bm);
    kf_tokenizer_free(tok);
    for (int k = 0; k < n_models; k++) kf_model_free(ms[k]);
    free(ms);
    free(paths);
    kf_model_free(ref);
    return 0;
}

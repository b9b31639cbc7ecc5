// kfuse analyze MODEL -f CALIB.txt [--tokens N --ctx N --batch B --threshold t
//   --k K --epsilon e --seed S --sample S --coact-topk K --context-tokens N
//   --resid-stride N --f64-products --dump-npy DIR --shard-layers --max-memory SIZE] -o DIR
// Writes DIR/report.html, DIR/analysis.json and DIR/stats.kfs. Under mpirun
// (built with MPI) the calibration batches are split across the ranks; with
// --shard-layers each rank also holds only its share of the layers' FFN
// statistics (analyze/pipeline.h). --max-memory (default: half the memory
// the weights leave) bounds the statistics: layers then go in groups, one
// calibration pass each, in one process (pipeline.h); a plan line says how
// before any work, and a cap too small for one layer fails before anything
// is written.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifdef KF_HAVE_MPI
#include <mpi.h>
#endif

#include "analyze/pipeline.h"
#include "cli.h"
#include "core/file.h"
#include "core/progress.h"
#include "report/analysis_report.h"
#include "runtime/forward.h"

typedef struct {
    kf_progress bar;
    const char *stage;
} analyze_view;

static void on_progress(void *user, const char *stage, int64_t done, int64_t total) {
    analyze_view *v = user;
    if (v->stage != stage) { // a new stage restarts the rate and ETA
        kf_progress_done(&v->bar);
        kf_progress_init(&v->bar, stage, strncmp(stage, "recording", 9) && strcmp(stage, "contexts") ? "steps" : "tokens",
                         total);
        v->stage = stage;
    }
    kf_progress_update(&v->bar, done, NULL);
}

static void make_dir(const char *dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) kf_cli_failf("%s: cannot create directory: %s", dir, strerror(errno));
    if (!kf_dir_exists(dir)) kf_cli_failf("%s: not a directory", dir);
}

// Started by mpirun (Open MPI or a PMI launcher)?
static int under_mpirun(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

int kf_cmd_analyze(int argc, char **argv) {
    const char *path = NULL, *text_path = NULL, *out_dir = NULL, *npy_dir = NULL;
    kf_analyze_opts o;
    kf_analyze_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-f")) text_path = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "-o")) out_dir = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--tokens")) o.n_tokens = kf_cli_long(argc, argv, &i, 4, 1L << 40);
        else if (!strcmp(argv[i], "--ctx")) o.ctx = (int)kf_cli_long(argc, argv, &i, 4, 1 << 16);
        else if (!strcmp(argv[i], "--batch")) o.batch = (int)kf_cli_long(argc, argv, &i, 1, 1024);
        else if (!strcmp(argv[i], "--threshold")) o.threshold = kf_cli_double(argc, argv, &i, 0, 1);
        else if (!strcmp(argv[i], "--k")) o.k = (int)kf_cli_long(argc, argv, &i, 0, 4096);
        else if (!strcmp(argv[i], "--seed")) o.seed = (uint64_t)kf_cli_long(argc, argv, &i, 0, 1L << 62);
        else if (!strcmp(argv[i], "--epsilon")) o.epsilon = kf_cli_double(argc, argv, &i, 1e-9, 1);
        else if (!strcmp(argv[i], "--sample")) o.sample_tokens = (int)kf_cli_long(argc, argv, &i, 16, 1 << 20);
        else if (!strcmp(argv[i], "--coact-topk")) o.coact_topk = (int)kf_cli_long(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(argv[i], "--context-tokens")) o.context_tokens = (int)kf_cli_long(argc, argv, &i, 4, 1 << 24);
        else if (!strcmp(argv[i], "--resid-stride")) o.resid_stride = (int)kf_cli_long(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(argv[i], "--f64-products")) o.f64_products = 1;
        else if (!strcmp(argv[i], "--dump-npy")) npy_dir = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "--shard-layers")) o.shard_layers = 1;
        else if (!strcmp(argv[i], "--max-memory")) o.max_memory = (int64_t)kf_cli_bytes(argc, argv, &i);
        else if (argv[i][0] == '-') kf_cli_failf("analyze: unknown option %s", argv[i]);
        else if (!path) path = argv[i];
        else kf_cli_failf("analyze: unexpected argument %s", argv[i]);
    }
    if (!text_path) kf_cli_failf("analyze: -f CALIB.txt is required");
    if (!out_dir) kf_cli_failf("analyze: -o DIR is required");
    if (!path) path = kf_cli_default_model();
    o.keep_resid_sample = npy_dir != NULL;
    if (npy_dir && o.shard_layers)
        kf_cli_failf("analyze: --dump-npy needs every layer's activation sample in one process; not with --shard-layers");

    int mpi = 0;
#ifdef KF_HAVE_MPI
    if (under_mpirun()) {
        MPI_Init(&argc, &argv);
        MPI_Comm_rank(MPI_COMM_WORLD, &o.rank);
        MPI_Comm_size(MPI_COMM_WORLD, &o.n_ranks);
        mpi = 1;
    }
#else
    if (under_mpirun()) fprintf(stderr, "analyze: this kfuse was built without MPI; every rank runs alone\n");
#endif
    kf_tokenizer *tok;
    kf_model *m = kf_cli_load_model_run(path, &tok); // weights in their file's dtype; the analysis decodes a layer at a time
    if (o.max_memory == 0) o.max_memory = kf_cli_default_max_memory(m);
    o.bos_id = kf_tokenizer_bos(tok); // every window starts like a document, as in compress, moefy and eval
    size_t len;
    char *text = kf_cli_read_text(text_path, &len);
    // Tokenize a prefix large enough for the tokens asked (a token is rarely
    // over 16 bytes), cut at a line end; all of it when that falls short.
    size_t cut = (size_t)o.n_tokens * 16 + 4096;
    kf_error err = {0};
    int32_t *ids = NULL;
    size_t n_ids = 0;
    for (;;) {
        size_t n = cut < len ? cut : len;
        while (n < len && n > 0 && text[n - 1] != '\n') n--;
        if (n == 0) n = len;
        if (kf_tokenizer_encode(tok, text, n, kf_tokenizer_add_bos(tok), &ids, &n_ids, &err) != KF_OK) {
            kf_error e2;
            kf_error_set(&e2, err.code, "%s: %s", text_path, err.msg);
            kf_cli_fail(&e2);
        }
        if (n == len || n_ids >= (size_t)o.n_tokens) break;
        free(ids);
        cut *= 4;
    }
    free(text);
    if (o.rank == 0)
        fprintf(stderr, "analyze: %zu calibration tokens, using %lld in sequences of %d%s\n", n_ids,
                (long long)((int64_t)(n_ids < (size_t)o.n_tokens ? n_ids : (size_t)o.n_tokens) / o.ctx * o.ctx), o.ctx,
                o.n_ranks > 1 ? " split across ranks" : "");

    char stats_path[1024];
    if (!kf_path_join(stats_path, sizeof stats_path, out_dir, "stats.kfs")) kf_cli_failf("%s: path too long", out_dir);
    o.stats_path = stats_path; // the run writes it (rank 0; sharded, the owners send their layers)
    kf_analyze_plan plan;
    if (kf_analyze_plan_make(m, (int64_t)n_ids, &o, &plan, &err) != KF_OK) kf_cli_fail(&err);
    if (o.rank == 0) {
        fprintf(stderr, "analyze: plan: %d calibration pass%s", plan.n_passes, plan.n_passes > 1 ? "es" : "");
        if (plan.n_passes > 1) {
            fprintf(stderr, " (residual stream, then %d layer groups:", plan.n_groups);
            for (int g = 0; g < plan.n_groups; g++)
                fprintf(stderr, " %d-%d", plan.group_first[g], plan.group_first[g + 1] - 1);
            fprintf(stderr, ")");
        }
        char b0[32], b1[32], b2[32];
        fprintf(stderr, ", statistics memory %s of --max-memory %s (one pass would need %s)\n",
                kf_cli_size_str(b0, sizeof b0, plan.bytes), kf_cli_size_str(b1, sizeof b1, o.max_memory),
                kf_cli_size_str(b2, sizeof b2, plan.bytes_one_pass));
        make_dir(out_dir);
    }
    kf_analyze_plan_free(&plan);

    analyze_view view = {0};
    if (o.rank == 0) {
        o.progress = on_progress;
        o.progress_user = &view;
    }
    kf_analysis a;
    kf_status st = kf_analyze_run(m, tok, ids, (int64_t)n_ids, &o, &a, &err);
    if (view.stage) kf_progress_done(&view.bar);
    if (st != KF_OK) kf_cli_fail(&err);
    if (o.rank == 0) {
        if (kf_report_analysis_write(a.result, out_dir, &err) != KF_OK) kf_cli_fail(&err);
        if (npy_dir) {
            make_dir(npy_dir);
            if (kf_analysis_dump_npy(&a, npy_dir, &err) != KF_OK) kf_cli_fail(&err);
        }
        const kf_analysis_result *r = a.result;
        fprintf(stderr, "analyze: recorded %g tokens in %.2f s (%.0f tokens/s), analysis %.2f s, contexts %.2f s\n",
                (double)r->n_tokens, r->record_seconds, r->tokens_per_s, r->analysis_seconds, r->contexts_seconds);
        for (int i = 0; i < r->ranks; i++) {
            char layers[256] = "";
            for (int l = 0, len = 0; l < r->n_layer && len < (int)sizeof layers - 12; l++)
                if (r->layer_owner[l] == i) len += snprintf(layers + len, sizeof layers - len, "%s%d", len ? "," : "", l);
            fprintf(stderr, "analyze: rank %d holds %.2f MB of FFN statistics (layers %s) and %.2f MB of residual ones\n",
                    i, r->rank_ffn_stats_bytes[i] / 1e6, r->shard_layers ? layers : "all", r->resid_stats_bytes / 1e6);
        }
        printf("%s/report.html\n%s/analysis.json\n%s\n", out_dir, out_dir, stats_path);
    }
    kf_analysis_free(&a);
    free(ids);
    kf_tokenizer_free(tok);
    kf_model_free(m);
#ifdef KF_HAVE_MPI
    if (mpi) MPI_Finalize();
#endif
    (void)mpi;
    return 0;
}

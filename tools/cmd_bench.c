// kfuse bench MODEL [-p 512 -n 128 -r 5 -t THREADS --no-mmap --kernel NAME --json]
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "eval/bench.h"
#include "runtime/matvec_dtype.h"

int kf_cmd_bench(int argc, char **argv) {
    const char *path = NULL, *kernel = NULL;
    int n_prompt = 512, n_gen = 128, repeats = 5;
    bool json = false, no_mmap = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-p")) n_prompt = (int)kf_cli_long(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(argv[i], "-n")) n_gen = (int)kf_cli_long(argc, argv, &i, 1, 1 << 16);
        else if (!strcmp(argv[i], "-r")) repeats = (int)kf_cli_long(argc, argv, &i, 1, 1000);
        else if (!strcmp(argv[i], "-t")) omp_set_num_threads((int)kf_cli_long(argc, argv, &i, 1, 1024));
        else if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "--no-mmap")) no_mmap = true;
        else if (!strcmp(argv[i], "--kernel") && i + 1 < argc) kernel = argv[++i];
        else if (argv[i][0] == '-') kf_cli_failf("bench: unknown option %s", argv[i]);
        else if (!path) path = argv[i];
        else kf_cli_failf("bench: unexpected argument %s", argv[i]);
    }
    if (!path) path = kf_cli_default_model();
    kf_model *m = kf_cli_load_model_run(path, NULL);
    // the decode kernel of the model's weight dtype (that of its attention weights)
    const kf_dtype d = m->layers[0].wq.dtype;
    if (kernel) {
        const int v = kf_mv_variant_parse(kernel);
        if (d == KF_DTYPE_F32) kf_cli_failf("bench: --kernel: %s has F32 weights (kernels are for F16, BF16, Q8_0)", path);
        if (v < 0) kf_cli_failf("bench: --kernel %s: not one of avx2, avx512, avx512_bf16, avx512_vnni", kernel);
        if (!kf_matvec_dt_set_default(d, (kf_mv_variant)v))
            kf_cli_failf("bench: --kernel %s: no %s kernel by that name that this CPU runs", kernel, kf_dtype_name(d));
    }
    const char *kname = d == KF_DTYPE_F32 ? "f32" : kf_mv_variant_name(kf_matvec_dt_default(d));
    const char *pname = d == KF_DTYPE_F32 ? "sgemm" : kf_matmul_dt_path(d);
    kf_bench_result r;
    kf_error err = {0};
    if (no_mmap && kf_model_load_to_memory(m, &err) != KF_OK) kf_cli_fail(&err);
    if (kf_bench_run(m, n_prompt, n_gen, repeats, &r, &err) != KF_OK) kf_cli_fail(&err);
    // One machine-readable row per test, same keys in both outputs.
    const char *fmt_json = "{\"model\": \"%s\", \"test\": \"%s%d\", \"threads\": %d, \"repeats\": %d, "
                           "\"tokens_per_s_median\": %.3f, \"tokens_per_s_min\": %.3f, \"tokens_per_s_max\": %.3f, "
                           "\"weight_bytes\": %.0f, \"kernel\": \"%s\", \"prefill\": \"%s\"}\n";
    const char *fmt_text = "%-40s %6s%-5d %7d %7d %12.2f %12.2f %12.2f\n";
    if (!json)
        printf("%-40s %-11s %7s %7s %12s %12s %12s\n", "model", "test", "threads", "repeats", "t/s median", "t/s min",
               "t/s max");
    const struct {
        const char *name;
        int n;
        kf_bench_stat st;
    } rows[] = {{"pp", r.n_prompt, r.pp}, {"tg", r.n_gen, r.tg}};
    for (int i = 0; i < 2; i++) {
        if (json)
            printf(fmt_json, path, rows[i].name, rows[i].n, r.threads, r.repeats, rows[i].st.median, rows[i].st.min,
                   rows[i].st.max, r.weight_bytes, kname, pname);
        else
            printf(fmt_text, path, rows[i].name, rows[i].n, r.threads, r.repeats, rows[i].st.median, rows[i].st.min,
                   rows[i].st.max);
    }
    if (!json)
        printf("decode reads %.1f MB of weights per token: %.2f GB/s at the median (kernel %s; prefill %s)\n",
               r.weight_bytes / 1e6, r.tg_gbps_median, kname, pname);
    kf_model_free(m);
    return 0;
}

// kfuse generate MODEL -p TEXT [-n N --temp T --top-p P --seed S]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/progress.h"
#include "runtime/forward.h"
#include "sample/sampler.h"

int kf_cmd_generate(int argc, char **argv) {
    const char *path = NULL, *prompt = "";
    int n_gen = 64;
    double temp = 0.8, top_p = 0.9;
    unsigned long long seed = 42;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-p")) prompt = kf_cli_str(argc, argv, &i);
        else if (!strcmp(argv[i], "-n")) n_gen = (int)kf_cli_long(argc, argv, &i, 0, 1 << 20);
        else if (!strcmp(argv[i], "--temp")) temp = kf_cli_double(argc, argv, &i, 0, 100);
        else if (!strcmp(argv[i], "--top-p")) top_p = kf_cli_double(argc, argv, &i, 1e-6, 1);
        else if (!strcmp(argv[i], "--seed")) seed = (unsigned long long)kf_cli_long(argc, argv, &i, 0, 0x7fffffffL);
        else if (argv[i][0] == '-') kf_cli_failf("generate: unknown option %s", argv[i]);
        else if (!path) path = argv[i];
        else kf_cli_failf("generate: unexpected argument %s", argv[i]);
    }
    if (!path) path = kf_cli_default_model();
    kf_tokenizer *tok;
    kf_model *m = kf_cli_load_model_run(path, &tok);
    kf_error err = {0};
    int32_t *ids;
    size_t n_prompt;
    if (kf_tokenizer_encode(tok, prompt, strlen(prompt), kf_tokenizer_add_bos(tok), &ids, &n_prompt, &err) != KF_OK)
        kf_cli_fail(&err);
    if (n_prompt == 0) kf_cli_failf("generate: the prompt is empty and the tokenizer adds no BOS token");
    int kv_len = (int)n_prompt + n_gen;
    if (m->pos == KF_POS_LEARNED && kv_len > m->n_ctx_train)
        kf_cli_failf("generate: prompt (%zu tokens) + %d new tokens exceed the model's %d positions", n_prompt, n_gen,
                     m->n_ctx_train);
    kf_ctx *ctx;
    kf_sampler sampler;
    if (kf_ctx_init(&ctx, m, (int)n_prompt, kv_len, &err) != KF_OK) kf_cli_fail(&err);
    if (kf_sampler_init(&sampler, m->n_vocab, (float)temp, (float)top_p, seed, &err) != KF_OK) kf_cli_fail(&err);
    float *logits = malloc(sizeof *logits * n_prompt * (size_t)m->n_vocab);
    if (!logits) kf_cli_failf("generate: out of memory");

    fputs(prompt, stdout);
    double t0 = kf_time_now();
    if (kf_forward_prefill(ctx, ids, 1, (int)n_prompt, logits, &err) != KF_OK) kf_cli_fail(&err);
    double t_prompt = kf_time_now() - t0, t_gen = 0;
    const float *last = logits + (n_prompt - 1) * (size_t)m->n_vocab;
    int32_t prev = ids[n_prompt - 1];
    int produced = 0;
    char piece[256];
    for (int pos = (int)n_prompt; produced < n_gen; pos++) {
        int32_t next = kf_sampler_sample(&sampler, last);
        if (next == kf_tokenizer_eos(tok)) break;
        kf_tokenizer_decode_piece(tok, prev, next, piece, sizeof piece);
        fputs(piece, stdout);
        fflush(stdout);
        produced++;
        prev = next;
        if (produced == n_gen) break;
        double t1 = kf_time_now();
        if (kf_forward_decode(ctx, next, pos, logits, &err) != KF_OK) kf_cli_fail(&err);
        t_gen += kf_time_now() - t1;
        last = logits;
    }
    printf("\n");
    fprintf(stderr, "generate: prompt %zu tokens (%.1f tokens/s), generated %d tokens (%.1f tokens/s)\n", n_prompt,
            t_prompt > 0 ? (double)n_prompt / t_prompt : 0, produced,
            t_gen > 0 && produced > 1 ? (double)(produced - 1) / t_gen : 0);
    free(logits);
    free(ids);
    kf_sampler_free(&sampler);
    kf_ctx_free(ctx);
    kf_tokenizer_free(tok);
    kf_model_free(m);
    return 0;
}

// `--recover TRAIN.txt` on commands that restructure a model (compress): the
// restructured model is distilled from the original it came from
// (src/train/recover.h) before it is saved, as `kfuse recover` would do on
// the saved file, and the command's summary gains a "recover" object.
#ifndef KF_TOOLS_RECOVER_CHAIN_H
#define KF_TOOLS_RECOVER_CHAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"
#include "tokenizer/tokenizer.h"

struct cJSON;

typedef struct {
    const char *text;  // --recover TRAIN.txt (NULL: no recovery)
    const char *eval;  // --recover-eval FILE: held-out KL before and after, refused when it overlaps the text
    const char *mode;  // --recover-train all|ffn|lora|router (default ffn; moefy: router)
    int64_t tokens;    // --recover-tokens N (default 262144)
    double lr;         // --recover-lr (0: kfuse recover's default, 1e-3)
    int batch, ctx;    // --recover-batch (8), --recover-ctx (256)
    uint64_t max_memory; // --recover-max-memory SIZE: training activations above it are recomputed (default half the RAM)
    int32_t *ids, *eval_ids; // the texts' tokens (kf_cli_recover_chain_prepare)
    size_t n_ids, n_eval;
} kf_cli_recover_chain;

void kf_cli_recover_chain_init(kf_cli_recover_chain *c);
// Takes argv[*i] (and its value) when it is one of the options above.
bool kf_cli_recover_chain_arg(kf_cli_recover_chain *c, int argc, char **argv, int *i);
// Checks the options before any work; fails naming cmd.
void kf_cli_recover_chain_check(const char *cmd, const kf_cli_recover_chain *c);
// Tokenizes the texts and refuses an evaluation text that overlaps the
// training text, before the command's own work.
void kf_cli_recover_chain_prepare(const char *cmd, kf_cli_recover_chain *c, const kf_tokenizer *tok);
// Trains m towards the model at teacher_path (merging LoRA adapters into m);
// returns the summary object, or fails naming cmd. Frees the tokens.
struct cJSON *kf_cli_recover_chain_run(const char *cmd, kf_cli_recover_chain *c, kf_model *m,
                                       const char *teacher_path, const kf_tokenizer *tok);

#endif

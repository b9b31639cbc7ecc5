// Shared helpers of the kfuse subcommands: option parsing with range checks,
// the default model, and the one place that prints errors and exits.
#ifndef KF_TOOLS_CLI_H
#define KF_TOOLS_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "io/save.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

// Prints "kfuse: <message>" and exits with status 1.
_Noreturn void kf_cli_fail(const kf_error *err);
_Noreturn void kf_cli_failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Option parsing: argv[*i] is the option; its value is argv[*i + 1].
const char *kf_cli_str(int argc, char **argv, int *i);
long kf_cli_long(int argc, char **argv, int *i, long lo, long hi);
double kf_cli_double(int argc, char **argv, int *i, double lo, double hi);
// A size: bytes, or a number with K, M, G or T (powers of 1024, optional B).
uint64_t kf_cli_bytes(int argc, char **argv, int *i);
// "1.50 GiB" / "24.0 MiB" into buf.
const char *kf_cli_size_str(char *buf, size_t n, int64_t bytes);
// Physical memory of the machine in bytes (8 GiB when it cannot be read).
uint64_t kf_cli_physical_memory(void);
// --max-memory's default: half of the physical memory the model's weights
// leave free, at least 256 MiB.
int64_t kf_cli_default_max_memory(const kf_model *m);

// The model shipped in the repository (models/llama-gutenberg-6.5m).
const char *kf_cli_default_model(void);
// Loads a model and its tokenizer (tok may be NULL when not needed), or fails.
// Weights are fp32 in memory (what transforms read).
kf_model *kf_cli_load_model(const char *path, kf_tokenizer **tok);
// The same for commands that only run the model: 2-D weights stay in the
// file's dtype (F16, BF16, Q8_0; io/load.h), so a BF16 model takes half the
// memory and decode reads half the bytes.
kf_model *kf_cli_load_model_run(const char *path, kf_tokenizer **tok);
// The dtype a command writes weights in: --dtype NAME (f32, f16, bf16,
// q8_0) when given, checked against the format, else the dtype the model was
// loaded from (kf_save_default_dtype); fails on a bad name or one the format
// cannot store.
kf_dtype kf_cli_save_dtype(const char *cmd, const char *name, const kf_model *m, kf_format f);
// Saves through kf_model_save, or fails. Warns (one line on stderr) when a
// GGUF's tokenizer would encode differently in llama.cpp than in kfuse.
void kf_cli_save_model(const char *cmd, const kf_model *m, const char *out, const kf_save_opts *so);
// Reads a whole text file, or fails.
char *kf_cli_read_text(const char *path, size_t *len);
// Reads and tokenizes a text file (BOS first when add_bos), or fails with a
// line naming the file (e.g. the byte offset of invalid UTF-8).
int32_t *kf_cli_tokenize_file(const kf_tokenizer *tok, const char *path, bool add_bos, size_t *n_ids);
// Prints a JSON object on stdout (indented when pretty) and deletes it.
struct cJSON;
void kf_cli_print_json(struct cJSON *o, bool pretty);

int kf_cmd_info(int argc, char **argv);
int kf_cmd_generate(int argc, char **argv);
int kf_cmd_perplexity(int argc, char **argv);
int kf_cmd_bench(int argc, char **argv);
int kf_cmd_analyze(int argc, char **argv);
int kf_cmd_eval(int argc, char **argv);
int kf_cmd_compress(int argc, char **argv);
int kf_cmd_moefy(int argc, char **argv);
int kf_cmd_specialise(int argc, char **argv);
int kf_cmd_convert(int argc, char **argv);
int kf_cmd_probe(int argc, char **argv);
int kf_cmd_classify(int argc, char **argv);
int kf_cmd_recover(int argc, char **argv);

#endif

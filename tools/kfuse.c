// kfuse command-line interface: thin subcommands over libkfuse.
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"info", kf_cmd_info, "MODEL                       architecture, per-layer shapes, parameters, bytes, dtypes"},
    {"generate", kf_cmd_generate, "MODEL -p TEXT [-n N --temp T --top-p P --seed S]"},
    {"perplexity", kf_cmd_perplexity, "MODEL -f TEXT [--ctx N --json]  llama.cpp protocol"},
    {"bench", kf_cmd_bench, "MODEL [-p 512 -n 128 -r 5 -t T --no-mmap --kernel NAME --json]   prefill and decode tokens/s"},
    {"analyze", kf_cmd_analyze, "MODEL -f CALIB.txt -o DIR [--tokens N --ctx N --threshold t --k K --shard-layers]  redundancy report"},
    {"compress", kf_cmd_compress, "MODEL -f CALIB --method fold|prune-*|random|drop-layers --widths|--ffn-keep|--target-params|--drop N [--merge] -o OUT"},
    {"moefy", kf_cmd_moefy, "MODEL -f CALIB --experts E [--split kmeans|coact|fold --router similarity|linear|mlp|oracle --top-k K|--coverage t] -o OUT"},
    {"convert", kf_cmd_convert, "MODEL -o OUT [--format hf|gguf|llama2c --dtype f32|f16|bf16|q8_0 --dense]  write another format"},
    {"probe", kf_cmd_probe, "MODEL --task conllu:UPOS|tsv:label --train F --dev F --test F -o DIR [--random-init SEED]  probes, layer/neuron selection"},
    {"classify", kf_cmd_classify, "DIR -f INPUT [--max-eval N --predictions FILE --compare MODEL --repeats N]  run an exported probe"},
    {"recover", kf_cmd_recover, "STUDENT --teacher ORIGINAL -f TRAIN.txt [--tokens N --steps S --lr --batch --ctx --train all|ffn|lora --lora-rank r --eval FILE] -o OUT"},
    {"eval", kf_cmd_eval, "MODEL [MODEL...] --ref ORIGINAL -f TEXT [--ctx N --json --top-k K]  ppl, KL, top-1, size, speed"},
    {"specialise", kf_cmd_specialise, "MODEL --data NAME=FILE --data NAME=FILE... [--moe MOEFIED --frac F,..] -o DIR  which neurons serve which dataset"},
};

static void usage(FILE *f) {
    fprintf(f, "kfuse: find and remove redundancy in transformer language models\n\n"
               "usage: kfuse <command> [MODEL] [options]\n\n"
               "MODEL is a Hugging Face folder, a .gguf file or a llama2.c .bin;\n"
               "when omitted, the model shipped in the repository (%s).\n\ncommands:\n",
            kf_cli_default_model());
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "kfuse: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

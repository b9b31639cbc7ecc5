// kfuse command-line interface: thin subcommands over libkfuse.
#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: kfuse <command> [options]\n"
               "commands:\n"
               "  info MODEL                 architecture, per-layer shapes, parameters, bytes\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    fprintf(stderr, "kfuse: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

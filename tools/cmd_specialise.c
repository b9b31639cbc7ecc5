// kfuse specialise MODEL --data NAME=FILE ... [--moe MOEFIED ...] -o DIR
// (a task dataset: --data NAME=conllu:COLUMN:TRAIN[:TEST] or NAME=tsv:LABEL_COLUMN:TRAIN[:TEST])
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "core/file.h"
#include "core/progress.h"
#include "specialise/report.h"
#include "specialise/specialise.h"
#include "task/encode.h"
#include "task/task.h"

#define MAX_DATA 32
#define MAX_MOE 8
#define MAX_FRAC 16

// One progress line per run over all its steps; the stage shows beside it.
typedef struct {
    kf_progress bar;
    bool started;
    const char *run;
} view;

static void on_progress(void *user, const char *stage, int64_t done, int64_t total) {
    view *v = user;
    if (!v->started) {
        kf_progress_init(&v->bar, v->run, "steps", total);
        v->started = true;
    }
    kf_progress_update(&v->bar, done, stage);
}

// A task dataset given as KIND:COLUMN:TRAIN[:TEST] (conllu:upos:FILE, tsv:label:FILE).
typedef struct {
    kf_task_kind kind;
    int col;               // CoNLL-U column
    char *label_col;       // TSV label column
    char *train, *test;    // test NULL: the train file's later sentences evaluate
    kf_label_set labels;
    kf_task_split sp[2];
    kf_task_tokens tt[2];
    kf_spec_task task;
} task_src;

static bool parse_task(const char *spec, task_src *t) {
    const bool conllu = !strncmp(spec, "conllu:", 7), tsv = !strncmp(spec, "tsv:", 4);
    if (!conllu && !tsv) return false;
    memset(t, 0, sizeof *t);
    const char *col = spec + (conllu ? 7 : 4), *c1 = strchr(col, ':');
    if (!c1 || c1 == col || !c1[1])
        kf_cli_failf("specialise: --data %s: a task is conllu:COLUMN:TRAIN[:TEST] or tsv:LABEL_COLUMN:TRAIN[:TEST]", spec);
    const char *c2 = strchr(c1 + 1, ':');
    t->train = c2 ? strndup(c1 + 1, (size_t)(c2 - c1 - 1)) : strdup(c1 + 1);
    t->test = c2 ? strdup(c2 + 1) : NULL;
    if (!t->train || (c2 && !t->test)) kf_cli_failf("specialise: out of memory");
    if (!t->train[0] || (t->test && !t->test[0]))
        kf_cli_failf("specialise: --data %s: empty file name in the task", spec);
    if (conllu) {
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(c1 - col), col);
        t->kind = KF_TASK_TOKEN;
        t->col = kf_conllu_column(name);
        if (t->col <= 0)
            kf_cli_failf("specialise: --data %s: no such CoNLL-U label column '%s' (FORM LEMMA UPOS XPOS FEATS HEAD "
                         "DEPREL DEPS MISC)", spec, name);
    } else {
        t->kind = KF_TASK_SENTENCE;
        if (!(t->label_col = strndup(col, (size_t)(c1 - col)))) kf_cli_failf("specialise: out of memory");
    }
    return true;
}

// Reads, encodes and splits a task: TRAIN's first items (whole sentences
// within `items`) train the probe; TEST's first `eval_items` evaluate it, or,
// without TEST, the sentences of TRAIN after the training ones.
static void load_task(task_src *t, const char *name, const kf_tokenizer *tok, const kf_model *m, const char *text_col,
                      int64_t items, int64_t eval_items) {
    kf_error err = {0};
    const int nf = t->test ? 2 : 1;
    for (int k = 0; k < nf; k++) {
        const char *f = k == 0 ? t->train : t->test;
        const int64_t cap = k == 1 ? eval_items : t->test ? items : items + eval_items;
        kf_status s = t->kind == KF_TASK_TOKEN ? kf_task_read_conllu(&t->sp[k], f, t->col, &t->labels, k == 0, cap, &err)
                                               : kf_task_read_tsv(&t->sp[k], f, text_col, t->label_col, &t->labels, k == 0,
                                                                  cap, &err);
        if (s != KF_OK) kf_cli_fail(&err);
    }
    if (t->labels.n < 2) kf_cli_failf("%s: one label only ('%s'): nothing to classify", t->train, t->labels.names[0]);
    const int max_len = m->n_ctx_train > 0 ? m->n_ctx_train : 1 << 20;
    for (int k = 0; k < nf; k++)
        if (kf_task_encode(&t->sp[k], tok, kf_tokenizer_bos(tok), max_len, &t->tt[k], &err) != KF_OK) kf_cli_fail(&err);
    t->task.n_labels = t->labels.n;
    t->task.train = (kf_spec_task_part){.tok = &t->tt[0], .y = t->sp[0].labels, .s0 = 0, .s1 = t->tt[0].n_sent};
    if (t->test) {
        t->task.eval = (kf_spec_task_part){.tok = &t->tt[1], .y = t->sp[1].labels, .s0 = 0, .s1 = t->tt[1].n_sent};
        return;
    }
    int s_train = 0;
    while (s_train < t->tt[0].n_sent && t->tt[0].item_off[s_train + 1] <= items) s_train++;
    if (s_train == 0 || s_train == t->tt[0].n_sent)
        kf_cli_failf("%s: %d sentences cannot give both training and evaluation items for task %s (--task-items %lld)",
                     t->train, t->tt[0].n_sent, name, (long long)items);
    t->task.train.s1 = s_train;
    t->task.eval = (kf_spec_task_part){.tok = &t->tt[0], .y = t->sp[0].labels, .s0 = s_train, .s1 = t->tt[0].n_sent};
}

static void free_task(task_src *t) {
    for (int k = 0; k < (t->test ? 2 : 1); k++) {
        kf_task_tokens_free(&t->tt[k]);
        kf_task_split_free(&t->sp[k]);
    }
    kf_label_set_free(&t->labels);
    free(t->label_col), free(t->train), free(t->test);
}

static int parse_fracs(const char *s, double *out) {
    int n = 0;
    while (*s) {
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (end == s || errno || n == MAX_FRAC) kf_cli_failf("specialise: --frac %s: a comma-separated list of fractions", s);
        out[n++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') kf_cli_failf("specialise: --frac: unexpected '%c'", *end);
    }
    return n;
}

int kf_cmd_specialise(int argc, char **argv) {
    const char *path = NULL, *out_dir = NULL, *moe_paths[MAX_MOE], *files[MAX_DATA];
    char *names[MAX_DATA];
    int n_data = 0, n_moe = 0;
    double fracs[MAX_FRAC];
    kf_spec_opts o;
    kf_spec_opts_default(&o);
    bool control = true;
    uint64_t control_seed = 1;
    const char *text_col = "sentence";
    int64_t task_items = 4000, task_eval_items = 2000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--data")) {
            const char *v = kf_cli_str(argc, argv, &i), *eq = strchr(v, '=');
            if (!eq || eq == v || !eq[1]) kf_cli_failf("specialise: --data %s: expected NAME=FILE", v);
            if (n_data == MAX_DATA) kf_cli_failf("specialise: at most %d datasets", MAX_DATA);
            names[n_data] = strndup(v, (size_t)(eq - v));
            files[n_data++] = eq + 1;
        } else if (!strcmp(a, "--moe")) {
            if (n_moe == MAX_MOE) kf_cli_failf("specialise: at most %d --moe models", MAX_MOE);
            moe_paths[n_moe++] = kf_cli_str(argc, argv, &i);
        } else if (!strcmp(a, "--frac")) {
            o.n_frac = parse_fracs(kf_cli_str(argc, argv, &i), fracs);
            o.fracs = fracs;
        } else if (!strcmp(a, "-o")) out_dir = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--tokens")) o.tokens = kf_cli_long(argc, argv, &i, 2, 1L << 40);
        else if (!strcmp(a, "--eval-tokens")) o.eval_tokens = kf_cli_long(argc, argv, &i, 2, 1L << 40);
        else if (!strcmp(a, "--ctx")) o.ctx = (int)kf_cli_long(argc, argv, &i, 2, 1 << 16);
        else if (!strcmp(a, "--importance")) {
            const char *v = kf_cli_str(argc, argv, &i);
            int k = kf_imp_kind_parse(v);
            if (k < 0) kf_cli_failf("specialise: --importance %s: expected abs, freq or sq", v);
            o.kind = (kf_imp_kind)k;
        } else if (!strcmp(a, "--chunks")) o.n_chunk = (int)kf_cli_long(argc, argv, &i, 1, 4096);
        else if (!strcmp(a, "--boot")) o.n_boot = (int)kf_cli_long(argc, argv, &i, 0, 100000);
        else if (!strcmp(a, "--null")) o.n_null = (int)kf_cli_long(argc, argv, &i, 1, 1000000);
        else if (!strcmp(a, "--random")) o.n_random = (int)kf_cli_long(argc, argv, &i, 1, 1000);
        else if (!strcmp(a, "--ablate")) o.ablate_top = (int)kf_cli_long(argc, argv, &i, 0, 1024);
        else if (!strcmp(a, "--seed")) o.seed = (uint64_t)kf_cli_long(argc, argv, &i, 0, 1L << 62);
        else if (!strcmp(a, "--control-seed")) control_seed = (uint64_t)kf_cli_long(argc, argv, &i, 0, 1L << 62);
        else if (!strcmp(a, "--no-control")) control = false;
        else if (!strcmp(a, "--no-first-order")) o.first_order = false;
        else if (!strcmp(a, "--task-items")) task_items = kf_cli_long(argc, argv, &i, 1, 1L << 40);
        else if (!strcmp(a, "--task-eval-items")) task_eval_items = kf_cli_long(argc, argv, &i, 1, 1L << 40);
        else if (!strcmp(a, "--text-column")) text_col = kf_cli_str(argc, argv, &i);
        else if (!strcmp(a, "--task-loss")) {
            const char *v = kf_cli_str(argc, argv, &i);
            int k = kf_spec_task_loss_parse(v);
            if (k < 0) kf_cli_failf("specialise: --task-loss %s: expected error or xent", v);
            o.task_loss = (kf_spec_task_loss)k;
        }
        else if (a[0] == '-') kf_cli_failf("specialise: unknown option %s", a);
        else if (!path) path = a;
        else kf_cli_failf("specialise: unexpected argument %s", a);
    }
    if (n_data < 2) kf_cli_failf("specialise: give at least two datasets (--data NAME=FILE)");
    if (!out_dir) kf_cli_failf("specialise: -o DIR is required");
    for (int a = 0; a < n_data; a++)
        for (int b = a + 1; b < n_data; b++)
            if (!strcmp(names[a], names[b])) kf_cli_failf("specialise: dataset name %s given twice", names[a]);
    static task_src tasks[MAX_DATA];
    bool is_task[MAX_DATA];
    for (int d = 0; d < n_data; d++) is_task[d] = parse_task(files[d], &tasks[d]);
    if (!path) path = kf_cli_default_model();
    kf_tokenizer *tok;
    kf_model *m = kf_cli_load_model(path, &tok);
    o.bos_id = kf_tokenizer_bos(tok);
    kf_spec_data data[MAX_DATA];
    for (int d = 0; d < n_data; d++) {
        if (is_task[d]) {
            load_task(&tasks[d], names[d], tok, m, text_col, task_items, task_eval_items);
            data[d] = (kf_spec_data){.name = names[d], .task = &tasks[d].task};
            continue;
        }
        size_t n;
        int32_t *ids = kf_cli_tokenize_file(tok, files[d], true, &n);
        data[d] = (kf_spec_data){.name = names[d], .ids = ids, .n_ids = (int64_t)n};
    }
    // every model is loaded and checked before the long work starts
    kf_model *ctrl = control ? kf_cli_load_model(path, NULL) : NULL;
    kf_model *moe[MAX_MOE];
    for (int i = 0; i < n_moe; i++) moe[i] = kf_cli_load_model(moe_paths[i], NULL);
    kf_error err = {0};
    if (ctrl && kf_model_randomize(ctrl, control_seed, &err) != KF_OK) kf_cli_fail(&err);
    int64_t n_neuron = 0;
    for (int l = 0; l < m->n_layer; l++) n_neuron += m->layers[l].n_ff;
    int32_t *expert_of[MAX_MOE];
    int *n_expert[MAX_MOE], *k[MAX_MOE];
    for (int i = 0; i < n_moe; i++) {
        expert_of[i] = malloc(sizeof(int32_t) * (size_t)n_neuron);
        n_expert[i] = malloc(sizeof(int) * (size_t)m->n_layer);
        k[i] = malloc(sizeof(int) * (size_t)m->n_layer);
        if (!expert_of[i] || !n_expert[i] || !k[i]) kf_cli_failf("specialise: out of memory");
        if (kf_spec_expert_map(m, moe[i], expert_of[i], n_expert[i], k[i], &err) != KF_OK) kf_cli_fail(&err);
        kf_model_free(moe[i]);
    }

    view v = {.run = "specialise (trained)"};
    o.progress = on_progress;
    o.user = &v;
    kf_spec_result trained, random_init;
    if (kf_spec_run(m, data, n_data, &o, &trained, &err) != KF_OK) kf_cli_fail(&err);
    kf_progress_done(&v.bar);
    if (ctrl) {
        v = (view){.run = "specialise (random init)"};
        if (kf_spec_run(ctrl, data, n_data, &o, &random_init, &err) != KF_OK) kf_cli_fail(&err);
        kf_progress_done(&v.bar);
    }
    kf_spec_moe_view views[MAX_MOE];
    for (int i = 0; i < n_moe; i++) {
        kf_spec_conc *conc = malloc(sizeof *conc * (size_t)n_data * o.n_frac * m->n_layer);
        if (!conc) kf_cli_failf("specialise: out of memory");
        if (kf_spec_concentrate(&trained, expert_of[i], n_expert[i], k[i], o.n_null, o.seed, conc, &err) != KF_OK)
            kf_cli_fail(&err);
        views[i] = (kf_spec_moe_view){.path = moe_paths[i], .n_expert = n_expert[i], .k = k[i], .conc = conc};
    }
    kf_spec_report rep = {.model_path = path, .arch = kf_arch_name(m->arch), .n_params = kf_model_n_params(m),
                          .data = data, .files = files, .o = &o, .trained = &trained,
                          .control = ctrl ? &random_init : NULL, .control_seed = control_seed, .moe = views,
                          .n_moe = n_moe};
    // the folder appears only once everything has been measured
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) kf_cli_failf("%s: cannot create directory: %s", out_dir, strerror(errno));
    if (!kf_dir_exists(out_dir)) kf_cli_failf("%s: not a directory", out_dir);
    if (kf_spec_report_write(&rep, out_dir, &err) != KF_OK) kf_cli_fail(&err);
    printf("specialise: %d datasets, %d layers; trained %.1f s%s; wrote %s/report.html and %s/specialise.json\n", n_data,
           m->n_layer, trained.seconds, ctrl ? ", random-init control too" : "", out_dir, out_dir);
    for (int d = 0; d < n_data; d++) {
        printf("  %-16s %s %.4f", names[d],
               !data[d].task ? "loss" : o.task_loss == KF_SPEC_TASK_XENT ? "probe xent" : "probe error",
               trained.base_loss[d]);
        if (ctrl) printf("  (random init %.4f)", random_init.base_loss[d]);
        printf("\n");
    }
    for (int i = 0; i < n_moe; i++) {
        free((void *)views[i].conc);
        free(expert_of[i]), free(n_expert[i]), free(k[i]);
    }
    kf_spec_result_free(&trained);
    if (ctrl) {
        kf_spec_result_free(&random_init);
        kf_model_free(ctrl);
    }
    for (int d = 0; d < n_data; d++) {
        free((void *)data[d].ids);
        if (is_task[d]) free_task(&tasks[d]);
        free(names[d]);
    }
    kf_tokenizer_free(tok);
    kf_model_free(m);
    return 0;
}

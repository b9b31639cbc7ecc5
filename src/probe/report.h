// probe.json (schema `kfuse-probe/1`, docs/probe-json.md) and report.html of
// one `kfuse probe` run.
#ifndef KF_PROBE_REPORT_H
#define KF_PROBE_REPORT_H

#include <cjson/cJSON.h>

#include "core/status.h"
#include "probe/dalvi.h"
#include "probe/features.h"
#include "task/task.h"

typedef struct {
    const char *model_path, *arch;
    int n_layer, n_embd;
    bool random_init;            // the model was re-initialised (kf_model_randomize) with init_seed
    uint64_t init_seed;
    const char *task;            // as given: "conllu:UPOS", "tsv:label"
    kf_task_kind kind;
    const char *paths[3];        // train, dev, test
    int n_sent[3];
    int64_t n_items[3];
    const kf_label_set *labels;
    kf_feat_kind features;
    kf_feat_agg agg;
    bool f16, control;
    uint64_t seed;
    int threads;
    const kf_dalvi_opts *opts;
    kf_feat_stats extract[3];
} kf_probe_info;

// The JSON tree (documented key order); NULL when out of memory.
cJSON *kf_probe_to_json(const kf_probe_info *info, const kf_dalvi_result *r);
// Writes dir/probe.json and dir/report.html (each temp-and-rename).
kf_status kf_probe_report_write(const kf_probe_info *info, const kf_dalvi_result *r, const char *dir, kf_error *err);

const char *kf_feat_kind_name(kf_feat_kind k); // "residual", "ffn"
const char *kf_feat_agg_name(kf_feat_agg a);   // "last", "first", "mean"

#endif

// specialise.json and report.html of kfuse specialise (schema:
// docs/specialise-json.md).
#ifndef KF_SPECIALISE_REPORT_H
#define KF_SPECIALISE_REPORT_H

#include "core/status.h"
#include "specialise/specialise.h"

typedef struct {
    const char *path;     // the MoEfied model
    const int *n_expert;  // (n_layer)
    const int *k;         // (n_layer) experts a token selects
    const kf_spec_conc *conc; // (n_data, n_frac, n_layer)
} kf_spec_moe_view;

typedef struct {
    const char *model_path, *arch;
    int64_t n_params;
    const kf_spec_data *data;
    const char *const *files; // (n_data) where each dataset came from
    const kf_spec_opts *o;
    const kf_spec_result *trained;
    const kf_spec_result *control; // the random-init model, or NULL
    uint64_t control_seed;
    const kf_spec_moe_view *moe;
    int n_moe;
} kf_spec_report;

// Writes DIR/specialise.json and DIR/report.html (each committed whole).
kf_status kf_spec_report_write(const kf_spec_report *rep, const char *dir, kf_error *err);

#endif

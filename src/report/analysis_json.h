// analysis.json (schema `kfuse-analysis/1`, docs/analysis-json.md) to and
// from a kf_analysis_result.
#ifndef KF_REPORT_ANALYSIS_JSON_H
#define KF_REPORT_ANALYSIS_JSON_H

#include <cjson/cJSON.h>

#include "analyze/analysis.h"
#include "core/status.h"

// The JSON tree of r, keys in the documented order; NULL when out of memory.
cJSON *kf_report_analysis_to_json(const kf_analysis_result *r);

// r from a parsed analysis.json; checks every key of the schema, the shapes
// against model.n_layer and model.n_ff, and the ranges (t in [0, 1] or null,
// labels within k, ...). name (the file) starts the one-line error. r must be
// freed with kf_analysis_result_free, also on failure.
kf_status kf_report_analysis_from_json(const cJSON *root, const char *name, kf_analysis_result *r, kf_error *err);

// Reads and checks the file path (as kf_report_analysis_from_json).
kf_status kf_report_analysis_read(const char *path, kf_analysis_result *r, kf_error *err);

#endif

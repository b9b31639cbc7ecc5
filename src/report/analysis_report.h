// The outputs of `kfuse analyze`: DIR/analysis.json (the result as written
// by analysis_json.c; schema in docs/analysis-json.md) and DIR/report.html, a
// self-contained page (inline CSS and SVG, no script, no network) drawn from
// the same result, so every number in the report is in the JSON.
#ifndef KF_REPORT_ANALYSIS_REPORT_H
#define KF_REPORT_ANALYSIS_REPORT_H

#include "analyze/analysis.h"
#include "core/status.h"

// Writes dir/analysis.json and dir/report.html (dir must exist).
kf_status kf_report_analysis_write(const kf_analysis_result *analysis, const char *dir, kf_error *err);

#endif

// Inline SVG plots for self-contained HTML reports: heatmap, bars, lines.
// Every mark carries a <title> so the exact value shows on hover.
#ifndef KF_REPORT_SVG_H
#define KF_REPORT_SVG_H

#include "core/strbuf.h"

typedef struct {
    const char *title;
    const char *xlabel, *ylabel;
    int width, height; // pixels; 0 picks a default
} kf_plot_opts;

// v (rows, cols) row-major, coloured on [vmin, vmax]; labels may be NULL (indices).
void kf_svg_heatmap(kf_strbuf *b, const kf_plot_opts *o, const double *v, int rows, int cols,
                    const char *const *row_labels, const char *const *col_labels, double vmin, double vmax);
// One bar per value; labels may be NULL (indices).
void kf_svg_bars(kf_strbuf *b, const kf_plot_opts *o, const double *v, int n, const char *const *labels);
// n_series lines over the same x (n_x); y (n_series, n_x) row-major.
void kf_svg_lines(kf_strbuf *b, const kf_plot_opts *o, const double *x, int n_x, const double *y, int n_series,
                  const char *const *series_names);

#endif

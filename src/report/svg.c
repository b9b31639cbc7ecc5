#include "report/svg.h"

#include <math.h>
#include <stdio.h>

// Margins leave room for axis labels and ticks.
enum { ML = 56, MR = 16, MT = 32, MB = 44 };

static const char *palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

// Viridis, sampled at 9 stops and interpolated linearly.
static void viridis(double t, int rgb[3]) {
    static const int stops[9][3] = {{68, 1, 84},   {71, 44, 122},  {59, 81, 139},  {44, 113, 142}, {33, 144, 141},
                                    {39, 173, 129}, {92, 200, 99}, {170, 220, 50}, {253, 231, 37}};
    if (!(t >= 0)) t = 0;
    if (t > 1) t = 1;
    double p = t * 8;
    int i = (int)p < 8 ? (int)p : 7;
    double f = p - i;
    for (int c = 0; c < 3; c++) rgb[c] = (int)lround(stops[i][c] + f * (stops[i + 1][c] - stops[i][c]));
}

static void open_svg(kf_strbuf *b, const kf_plot_opts *o, int w, int h) {
    kf_strbuf_printf(b,
                     "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" width=\"%d\" height=\"%d\" "
                     "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"11\">\n",
                     w, h, w, h);
    if (o->title) {
        kf_strbuf_printf(b, "<text x=\"%d\" y=\"18\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">", w / 2);
        kf_strbuf_escape(b, o->title);
        kf_strbuf_puts(b, "</text>\n");
    }
    if (o->xlabel) {
        kf_strbuf_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", ML + (w - ML - MR) / 2, h - 6);
        kf_strbuf_escape(b, o->xlabel);
        kf_strbuf_puts(b, "</text>\n");
    }
    if (o->ylabel) {
        kf_strbuf_printf(b, "<text transform=\"translate(12,%d) rotate(-90)\" text-anchor=\"middle\">",
                         MT + (h - MT - MB) / 2);
        kf_strbuf_escape(b, o->ylabel);
        kf_strbuf_puts(b, "</text>\n");
    }
}

static void label_or_index(kf_strbuf *b, const char *const *labels, int i) {
    if (labels && labels[i]) kf_strbuf_escape(b, labels[i]);
    else kf_strbuf_printf(b, "%d", i);
}

// A "nice" tick step for a range, so axes read 0, 0.2, 0.4 ... not 0.1837.
static double nice_step(double range, int target) {
    double raw = range / target, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

static void y_axis(kf_strbuf *b, double lo, double hi, int w, int h) {
    double step = nice_step(hi - lo, 5);
    for (double t = ceil(lo / step) * step; t <= hi + 1e-9 * step; t += step) {
        double y = MT + (h - MT - MB) * (1 - (t - lo) / (hi - lo));
        kf_strbuf_printf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>", ML, w - MR, y, y);
        kf_strbuf_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", ML - 4, y + 4, t);
    }
    kf_strbuf_printf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n", ML, ML, MT, h - MB);
}

static void range_of(const double *v, int n, double *lo, double *hi) {
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) {
            if (v[i] < *lo) *lo = v[i];
            if (v[i] > *hi) *hi = v[i];
        }
    if (!isfinite(*lo)) *lo = 0, *hi = 1;
    if (*lo > 0) *lo = 0;
    if (*hi <= *lo) *hi = *lo + 1;
    // out to whole tick steps, so the top and bottom of the data have a labelled tick
    double step = nice_step(*hi - *lo, 5);
    *hi = ceil(*hi / step - 1e-9) * step;
    *lo = floor(*lo / step + 1e-9) * step;
}

void kf_svg_heatmap(kf_strbuf *b, const kf_plot_opts *o, const double *v, int rows, int cols,
                    const char *const *row_labels, const char *const *col_labels, double vmin, double vmax) {
    int w = o->width ? o->width : 520, h = o->height ? o->height : 480;
    int pw = w - ML - MR - 60, ph = h - MT - MB; // 60 px for the colour bar
    double cw = (double)pw / cols, ch = (double)ph / rows;
    open_svg(b, o, w, h);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            double x = v[(size_t)i * cols + j];
            int rgb[3];
            viridis(vmax > vmin ? (x - vmin) / (vmax - vmin) : 0, rgb);
            kf_strbuf_printf(b,
                             "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"rgb(%d,%d,%d)\">"
                             "<title>",
                             ML + j * cw, MT + i * ch, cw + 0.3, ch + 0.3, rgb[0], rgb[1], rgb[2]);
            label_or_index(b, row_labels, i);
            kf_strbuf_puts(b, " / ");
            label_or_index(b, col_labels, j);
            kf_strbuf_printf(b, ": %.4g</title></rect>\n", x);
            if (cw >= 30 && ch >= 16 && isfinite(x)) // the value in the cell, dark text on light colours
                kf_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"%s\">%.2f</text>\n",
                                 ML + (j + 0.5) * cw, MT + (i + 0.5) * ch + 4,
                                 vmax > vmin && (x - vmin) / (vmax - vmin) > 0.6 ? "#000" : "#fff", x);
        }
    int every = rows > 24 ? (rows + 23) / 24 : 1; // at most ~24 tick labels per axis
    for (int i = 0; i < rows; i += every) {
        kf_strbuf_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">", ML - 4, MT + (i + 0.5) * ch + 4);
        label_or_index(b, row_labels, i);
        kf_strbuf_puts(b, "</text>\n");
    }
    every = cols > 24 ? (cols + 23) / 24 : 1;
    for (int j = 0; j < cols; j += every) {
        kf_strbuf_printf(b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", ML + (j + 0.5) * cw, MT + ph + 14);
        label_or_index(b, col_labels, j);
        kf_strbuf_puts(b, "</text>\n");
    }
    int bx = w - MR - 40;
    for (int k = 0; k < 32; k++) {
        int rgb[3];
        viridis(1 - (k + 0.5) / 32, rgb);
        kf_strbuf_printf(b, "<rect x=\"%d\" y=\"%.2f\" width=\"14\" height=\"%.2f\" fill=\"rgb(%d,%d,%d)\"/>", bx,
                         MT + k * ph / 32.0, ph / 32.0 + 0.3, rgb[0], rgb[1], rgb[2]);
    }
    kf_strbuf_printf(b, "\n<text x=\"%d\" y=\"%d\">%.3g</text><text x=\"%d\" y=\"%d\">%.3g</text>\n", bx + 17, MT + 9,
                     vmax, bx + 17, MT + ph, vmin);
    kf_strbuf_puts(b, "</svg>\n");
}

void kf_svg_bars(kf_strbuf *b, const kf_plot_opts *o, const double *v, int n, const char *const *labels) {
    int w = o->width ? o->width : 520, h = o->height ? o->height : 300;
    double lo, hi;
    range_of(v, n, &lo, &hi);
    open_svg(b, o, w, h);
    y_axis(b, lo, hi, w, h);
    double bw = (double)(w - ML - MR) / (n > 0 ? n : 1), y0 = MT + (h - MT - MB) * (1 - (0 - lo) / (hi - lo));
    int every = n > 32 ? (n + 31) / 32 : 1;
    for (int i = 0; i < n; i++) {
        double y = MT + (h - MT - MB) * (1 - (v[i] - lo) / (hi - lo));
        double top = y < y0 ? y : y0, height = fabs(y0 - y);
        kf_strbuf_printf(b, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"><title>",
                         ML + i * bw + bw * 0.1, top, bw * 0.8, height, palette[0]);
        label_or_index(b, labels, i);
        kf_strbuf_printf(b, ": %.4g</title></rect>\n", v[i]);
        if (i % every == 0) {
            kf_strbuf_printf(b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", ML + (i + 0.5) * bw, h - MB + 14);
            label_or_index(b, labels, i);
            kf_strbuf_puts(b, "</text>\n");
        }
    }
    kf_strbuf_printf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n</svg>\n", ML, w - MR, y0, y0);
}

void kf_svg_lines(kf_strbuf *b, const kf_plot_opts *o, const double *x, int n_x, const double *y, int n_series,
                  const char *const *series_names) {
    int w = o->width ? o->width : 560, h = o->height ? o->height : 320;
    double lo, hi, xlo, xhi;
    range_of(y, n_x * n_series, &lo, &hi);
    range_of(x, n_x, &xlo, &xhi);
    open_svg(b, o, w, h);
    y_axis(b, lo, hi, w, h);
    int pw = w - ML - MR - 110, ph = h - MT - MB; // 110 px for the legend
    double step = nice_step(xhi - xlo, 8);
    for (double t = ceil(xlo / step) * step; t <= xhi + 1e-9 * step; t += step)
        kf_strbuf_printf(b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n",
                         ML + pw * (t - xlo) / (xhi - xlo), MT + ph + 14, t);
    for (int s = 0; s < n_series; s++) {
        const char *col = palette[s % 10];
        kf_strbuf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", col);
        for (int i = 0; i < n_x; i++)
            kf_strbuf_printf(b, "%.1f,%.1f ", ML + pw * (x[i] - xlo) / (xhi - xlo),
                             MT + ph * (1 - (y[(size_t)s * n_x + i] - lo) / (hi - lo)));
        kf_strbuf_puts(b, "\"/>\n");
        for (int i = 0; i < n_x; i++) {
            kf_strbuf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"><title>",
                             ML + pw * (x[i] - xlo) / (xhi - xlo), MT + ph * (1 - (y[(size_t)s * n_x + i] - lo) / (hi - lo)),
                             col);
            if (series_names && series_names[s]) kf_strbuf_escape(b, series_names[s]);
            kf_strbuf_printf(b, " (%g): %.4g</title></circle>\n", x[i], y[(size_t)s * n_x + i]);
        }
        int ly = MT + 14 * s + 8;
        kf_strbuf_printf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"/>",
                         w - MR - 100, w - MR - 84, ly, ly, col);
        kf_strbuf_printf(b, "<text x=\"%d\" y=\"%d\">", w - MR - 80, ly + 4);
        if (series_names && series_names[s]) kf_strbuf_escape(b, series_names[s]);
        else kf_strbuf_printf(b, "%d", s);
        kf_strbuf_puts(b, "</text>\n");
    }
    kf_strbuf_puts(b, "</svg>\n");
}

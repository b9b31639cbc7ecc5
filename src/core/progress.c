#include "core/progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

double kf_time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void kf_progress_init(kf_progress *p, const char *label, const char *unit, int64_t total) {
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->t_start = kf_time_now();
    p->t_last = 0;
    p->tty = isatty(STDERR_FILENO);
}

void kf_progress_update(kf_progress *p, int64_t done, const char *extra) {
    if (!p->tty) return;
    double now = kf_time_now();
    if (now - p->t_last < 0.1 && done < p->total) return;
    p->t_last = now;
    double el = now - p->t_start, rate = el > 0 ? (double)done / el : 0;
    double eta = rate > 0 && p->total > done ? (double)(p->total - done) / rate : 0;
    fprintf(stderr, "\r\033[K%s  %lld/%lld %s  %.0f %s/s  ETA %.0fs%s%s", p->label, (long long)done,
            (long long)p->total, p->unit, rate, p->unit, eta, extra ? "  " : "", extra ? extra : "");
    fflush(stderr);
}

void kf_progress_done(kf_progress *p) {
    if (p->tty) fprintf(stderr, "\r\033[K");
}

// A one-line progress indicator on stderr, drawn only when stderr is a
// terminal: "label  done/total  rate unit/s  ETA".
#ifndef KF_CORE_PROGRESS_H
#define KF_CORE_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    const char *label;
    const char *unit;
    int64_t total;
    double t_start, t_last;
    bool tty;
} kf_progress;

double kf_time_now(void); // monotonic seconds
void kf_progress_init(kf_progress *p, const char *label, const char *unit, int64_t total);
// Redraws at most ~10 times a second; extra is appended (may be NULL).
void kf_progress_update(kf_progress *p, int64_t done, const char *extra);
void kf_progress_done(kf_progress *p); // clears the line

#endif

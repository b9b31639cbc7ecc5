// Does an evaluation text overlap the training text? Every window of w
// consecutive token ids of the training text (at every offset) is hashed;
// the evaluation text is cut into windows of w ids (non-overlapping, from its
// start) and each is looked up. A shared window of, say, 64 tokens is
// copied text, not chance.
#ifndef KF_TRAIN_OVERLAP_H
#define KF_TRAIN_OVERLAP_H

#include <stdint.h>

#include "core/status.h"

// n_shared (of n_windows) evaluation windows found in the training text.
kf_status kf_train_overlap(const int32_t *train, int64_t n_train, const int32_t *eval, int64_t n_eval, int w,
                           int64_t *n_shared, int64_t *n_windows, kf_error *err);

#endif

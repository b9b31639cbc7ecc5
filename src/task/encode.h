// Task items as model input: each sentence tokenized, BOS first, and each
// item's span of sub-word positions within it.
//
// Token tasks: every word is encoded on its own, as it reads inside a
// sentence of space-separated words: SentencePiece-style tokenizers add the
// "▁" word prefix themselves; byte-level ones get a space before every word
// but the first. The sentence is the concatenation, so word i's sub-words are
// exactly the positions [item_start, item_end). Sentence tasks: the text is
// encoded whole and its span is every position after BOS.
#ifndef KF_TASK_ENCODE_H
#define KF_TASK_ENCODE_H

#include <stdint.h>

#include "core/status.h"
#include "task/task.h"
#include "tokenizer/tokenizer.h"

typedef struct {
    int n_sent;
    int64_t n_items;
    int64_t *tok_off;   // (n_sent + 1): sentence s is tokens [tok_off[s], tok_off[s+1])
    int32_t *tokens;    // (tok_off[n_sent])
    int64_t *item_off;  // (n_sent + 1): sentence s holds items [item_off[s], item_off[s+1])
    int32_t *span;      // (n_items, 2): [start, end) positions of the item inside its sentence
    int max_len;        // longest sentence in tokens
} kf_task_tokens;

// bos_id < 0: no BOS. A sentence longer than max_len tokens is an error
// naming the file and its line.
kf_status kf_task_encode(const kf_task_split *s, const kf_tokenizer *tok, int bos_id, int max_len,
                         kf_task_tokens *out, kf_error *err);
void kf_task_tokens_free(kf_task_tokens *t);

#endif

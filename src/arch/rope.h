// RoPE row layouts. kfuse keeps wq/wk rows in the rotate-half order of
// Hugging Face Llama (row i of a head pairs with i + head_dim/2, model.h);
// GGUF `llama` and llama2.c store them interleaved (row 2i pairs with 2i+1).
// A (n_heads * head_dim, ncols) matrix, or a bias with ncols = 1, is
// permuted per head; one mapping (rope.c) serves both directions: writers
// store row r of the file from row kf_rope_rotate_half_row(r) of the model.
#ifndef KF_ARCH_ROPE_H
#define KF_ARCH_ROPE_H

#include <stdint.h>

// The rotate-half row that interleaved row r holds.
int64_t kf_rope_rotate_half_row(int64_t r, int64_t head_dim);
// order[r] = the rotate-half row that interleaved row r holds (n_heads * head_dim entries).
void kf_rope_interleaved_order(int64_t n_heads, int64_t head_dim, int64_t *order);
// Interleaved rows back to rotate-half; src and dst must not overlap.
void kf_rope_rows_from_interleaved(const float *src, float *dst, int64_t n_heads, int64_t head_dim, int64_t ncols);

#endif

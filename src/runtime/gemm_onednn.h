// BF16 GEMM for prefill through oneDNN's matmul (Debian libdnnl-dev; the
// build defines KF_HAVE_DNNL when it finds oneDNN 2.x).
//
// Prefill multiplies N activation rows by every weight matrix, so it is
// bound by arithmetic, not bandwidth. oneDNN's BF16 matmul (brgemm on
// vdpbf16ps) ran 2.4-3x the GFLOP/s of OpenBLAS sgemm on the 7B shapes on
// this machine (bench/RESULTS.md, "Prefill through oneDNN's BF16 matmul"),
// and it reads the weights in place, without kf_matmul_dt's fp32 tiles. Its
// cost: the activation is rounded to BF16 (relative error 2^-9 per value), as
// llama.cpp's BF16 path does.
#ifndef KF_RUNTIME_GEMM_ONEDNN_H
#define KF_RUNTIME_GEMM_ONEDNN_H

#include <stdint.h>

#include "core/status.h"

// Whether kf_gemm_bf16 runs here: kfuse built with oneDNN, a CPU with
// AVX512-BF16 (without it oneDNN would emulate BF16, slower than the tiles),
// and not KF_KERNELS=exact (kf_kernels_exact: BF16 prefill then stays on
// fp32 tiles, exact weights times fp32 activations, as for F16 and Q8_0).
int kf_gemm_bf16_ok(void);

// Y (N, OC) = X (N, C) W^T for X (N, C) and W (OC, C) both BF16, row-major,
// Y fp32. Threads: OpenMP's, as the rest of kfuse.
kf_status kf_gemm_bf16(float *Y, const uint16_t *X, const void *W, int N, int C, int OC, kf_error *err);

#endif

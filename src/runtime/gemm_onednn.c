// BF16 GEMM through oneDNN (gemm_onednn.h).
#include "runtime/gemm_onednn.h"

#ifdef KF_HAVE_DNNL

#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>

#include "runtime/matvec_dtype.h"

static dnnl_engine_t engine;
static dnnl_stream_t stream;
static int usable; // engine and stream made, and the CPU has AVX512-BF16
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void) {
    if (kf_kernels_exact()) return; // KF_KERNELS=exact: BF16 prefill on kf_matmul_dt's fp32 tiles
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512bf16")) return;
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) return;
    if (dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) return;
    usable = 1;
}

int kf_gemm_bf16_ok(void) {
    pthread_once(&once, init);
    return usable;
}

kf_status kf_gemm_bf16(float *Y, const uint16_t *X, const void *W, int N, int C, int OC, kf_error *err) {
    if (!kf_gemm_bf16_ok()) return kf_error_set(err, KF_ERR_UNSUPPORTED, "gemm: no oneDNN BF16 matmul on this CPU");
    // X (N, C) row-major: tag ab; W (OC, C) row-major is the (C, OC) operand with C innermost: tag ba.
    dnnl_memory_desc_t xd, wd, yd;
    dnnl_dims_t xdims = {N, C}, wdims = {C, OC}, ydims = {N, OC};
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t xm = NULL, wm = NULL, ym = NULL;
    dnnl_matmul_desc_t md;
    dnnl_status_t s = dnnl_memory_desc_init_by_tag(&xd, 2, xdims, dnnl_bf16, dnnl_ab);
    if (s == dnnl_success) s = dnnl_memory_desc_init_by_tag(&wd, 2, wdims, dnnl_bf16, dnnl_ba);
    if (s == dnnl_success) s = dnnl_memory_desc_init_by_tag(&yd, 2, ydims, dnnl_f32, dnnl_ab);
    if (s == dnnl_success) s = dnnl_matmul_desc_init(&md, &xd, &wd, NULL, &yd);
    if (s == dnnl_success) s = dnnl_primitive_desc_create(&pd, &md, NULL, engine, NULL);
    if (s == dnnl_success) s = dnnl_primitive_create(&prim, pd); // oneDNN caches primitives per shape
    if (s == dnnl_success) s = dnnl_memory_create(&xm, &xd, engine, (void *)X);
    if (s == dnnl_success) s = dnnl_memory_create(&wm, &wd, engine, (void *)W);
    if (s == dnnl_success) s = dnnl_memory_create(&ym, &yd, engine, Y);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, ym}};
        s = dnnl_primitive_execute(prim, stream, 3, args);
    }
    if (s == dnnl_success) s = dnnl_stream_wait(stream);
    dnnl_memory_destroy(xm);
    dnnl_memory_destroy(wm);
    dnnl_memory_destroy(ym);
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
    if (s != dnnl_success)
        return kf_error_set(err, KF_ERR_INTERNAL, "gemm: oneDNN BF16 matmul of (%d, %d) x (%d, %d) failed (status %d)", N,
                            C, OC, C, (int)s);
    return KF_OK;
}

#else

int kf_gemm_bf16_ok(void) { return 0; }

kf_status kf_gemm_bf16(float *Y, const uint16_t *X, const void *W, int N, int C, int OC, kf_error *err) {
    (void)Y, (void)X, (void)W, (void)N, (void)C, (void)OC;
    return kf_error_set(err, KF_ERR_UNSUPPORTED, "gemm: kfuse was built without oneDNN");
}

#endif

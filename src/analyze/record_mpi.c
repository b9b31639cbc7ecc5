// MPI reduction of the recording pass (built with KF_HAVE_MPI): the
// accumulators are re-centred on the global mean and their sums
// MPI_Allreduce'd; the sampled activations are summed (each sample row is
// filled by exactly one rank).
#ifdef KF_HAVE_MPI
#include <mpi.h>
#include <stdlib.h>

#include "analyze/recorder.h"

// Sums one accumulator over all ranks: each rank's sums are first re-centred
// on the global mean (kf_moments_merge into an empty accumulator with that
// shift), so the shifted sums add up.
static kf_status mpi_reduce_moments(kf_moments *m, kf_error *err) {
    const int d = m->d;
    int64_t n_all = 0;
    MPI_Allreduce(&m->n, &n_all, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    if (n_all == 0) return KF_OK;
    kf_moments c;
    kf_status st = kf_moments_init(&c, d, m->topk, m->eps, err);
    if (st != KF_OK) return st;
    for (int j = 0; j < d; j++) c.shift[j] = m->n > 0 ? (double)m->n * m->shift[j] + m->sum[j] : 0;
    MPI_Allreduce(MPI_IN_PLACE, c.shift, d, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    for (int j = 0; j < d; j++) c.shift[j] /= (double)n_all;
    c.has_shift = 1;
    st = kf_moments_merge(&c, m, err);
    if (st != KF_OK) {
        kf_moments_free(&c);
        return st;
    }
    MPI_Allreduce(MPI_IN_PLACE, c.sum, d, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    const size_t np = (size_t)d * (d + 1) / 2; // packed upper triangles
    for (size_t p0 = 0; p0 < np; p0 += (size_t)1 << 28) {
        size_t cnt = np - p0 < ((size_t)1 << 28) ? np - p0 : (size_t)1 << 28;
        MPI_Allreduce(MPI_IN_PLACE, c.sxx + p0, (int)cnt, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    }
    MPI_Allreduce(MPI_IN_PLACE, c.n_pos, d, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, c.n_nz, d, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, c.sum_abs, d, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, c.max, d, MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, c.min, d, MPI_FLOAT, MPI_MIN, MPI_COMM_WORLD);
    if (c.topk > 0) {
        for (size_t p0 = 0; p0 < np; p0 += (size_t)1 << 28) {
            size_t cnt = np - p0 < ((size_t)1 << 28) ? np - p0 : (size_t)1 << 28;
            MPI_Allreduce(MPI_IN_PLACE, c.coact + p0, (int)cnt, MPI_UINT32_T, MPI_SUM, MPI_COMM_WORLD);
        }
    }
    c.n = n_all;
    kf_moments old = *m;
    *m = c;
    kf_moments_free(&old);
    return KF_OK;
}

static void mpi_sum_floats(float *x, size_t n) {
    for (size_t p0 = 0; p0 < n; p0 += (size_t)1 << 28) {
        size_t cnt = n - p0 < ((size_t)1 << 28) ? n - p0 : (size_t)1 << 28;
        MPI_Allreduce(MPI_IN_PLACE, x + p0, (int)cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
}

kf_status kf_analyze_mpi_reduce(recorder *r, kf_error *err) {
    for (int l = 0; l < r->L; l++) {
        kf_status st = mpi_reduce_moments(r->ffn[l], err);
        if (st != KF_OK) return st;
        mpi_sum_floats(r->ffn_sample[l], (size_t)r->S * r->m->layers[l].n_ff);
        MPI_Allreduce(MPI_IN_PLACE, &r->bi[l].sum_cos, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        MPI_Allreduce(MPI_IN_PLACE, &r->bi[l].n, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    }
    if (r->resid_sample) mpi_sum_floats(r->resid_sample, (size_t)r->R * r->S * r->C);
    if (r->joint) return mpi_reduce_moments(r->resid_all, err);
    for (int rep = 0; rep < r->R; rep++) {
        kf_status st = mpi_reduce_moments(r->resid[rep], err);
        if (st != KF_OK) return st;
    }
    MPI_Allreduce(MPI_IN_PLACE, r->cka.hsic, r->R * r->R, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &r->cka.n_batches, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    return KF_OK;
}
#else
typedef int kf_analyze_no_mpi; // ISO C forbids an empty translation unit
#endif

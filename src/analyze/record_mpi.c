// MPI reduction of the recording pass (built with KF_HAVE_MPI): the
// accumulators are re-centred on the global mean and their sums
// MPI_Allreduce'd; the sampled activations are summed (each sample row is
// filled by exactly one rank). With --shard-layers (pipeline.h): the
// gather of every layer's FFN activations to its owner during recording,
// and the layer results and statistics that rank 0 collects from the owners.
#ifdef KF_HAVE_MPI
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyze/recorder.h"
#include "stats/statsfile.h"

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
        if (!r->shard) { // sharded, the owner has every rank's rows already
            kf_status st = mpi_reduce_moments(r->ffn[l], err);
            if (st != KF_OK) return st;
            mpi_sum_floats(r->ffn_sample[l], (size_t)r->S * r->m->layers[l].n_ff);
        }
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

void kf_analyze_shard_call(recorder *r, int64_t t0, int n) {
    int64_t mine[2] = {t0, n};
    MPI_Allgather(mine, 2, MPI_INT64_T, r->calls, 2, MPI_INT64_T, MPI_COMM_WORLD);
}

void kf_analyze_shard_ffn(recorder *r, int l, const float *x, int n, int dim) {
    const int owner = r->owner[l];
    if (owner != r->rank) {
        if (n > 0) MPI_Send(x, n * dim, MPI_FLOAT, owner, l, MPI_COMM_WORLD);
        return;
    }
    float *smp = r->ffn_sample[l];
    for (int i = 0; i < r->n_ranks; i++) { // in rank order: the order of the batches in one process
        const int rows_n = (int)r->calls[2 * i + 1];
        if (rows_n == 0) continue;
        const float *rows = x;
        if (i != r->rank) {
            MPI_Recv(r->gather, rows_n * dim, MPI_FLOAT, i, l, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            rows = r->gather;
        }
        if (r->st == KF_OK) r->st = kf_moments_add(r->ffn[l], rows, rows_n, &r->err);
        kf_analyze_fill_slots(r->slot_other, r->calls[2 * i], rows_n, r->sample_pos, r->S);
        for (int k = 0; k < rows_n; k++)
            if (r->slot_other[k] >= 0)
                memcpy(smp + (size_t)r->slot_other[k] * dim, rows + (size_t)k * dim, (size_t)dim * sizeof *rows);
    }
}

// One k-means result from its owner to rank 0 (the contexts come later, on rank 0).
static void send_kmeans(const kf_analysis_kmeans *km, int n_ff, int tag) {
    MPI_Send(km->k_candidates, km->n_candidates, MPI_INT, 0, tag, MPI_COMM_WORLD);
    MPI_Send(km->silhouette_by_k, km->n_candidates, MPI_DOUBLE, 0, tag, MPI_COMM_WORLD);
    MPI_Send(km->clusters, km->k * (int)sizeof *km->clusters, MPI_BYTE, 0, tag, MPI_COMM_WORLD);
    MPI_Send(km->labels, n_ff, MPI_INT32_T, 0, tag, MPI_COMM_WORLD);
}

// km holds the sender's numbers and its pointers, which mean nothing here.
static kf_status recv_kmeans(kf_analysis_kmeans *km, int n_ff, int src, int tag, kf_error *err) {
    const kf_analysis_kmeans got = *km;
    kf_status st = kf_analysis_kmeans_init(km, got.k, got.n_candidates, n_ff, err);
    if (st != KF_OK) return st;
    km->silhouette = got.silhouette;
    km->objective = got.objective;
    MPI_Recv(km->k_candidates, km->n_candidates, MPI_INT, src, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Recv(km->silhouette_by_k, km->n_candidates, MPI_DOUBLE, src, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Recv(km->clusters, km->k * (int)sizeof *km->clusters, MPI_BYTE, src, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Recv(km->labels, n_ff, MPI_INT32_T, src, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    for (int c = 0; c < km->k; c++) {
        km->clusters[c].n_contexts = 0;
        km->clusters[c].contexts = NULL;
    }
    return KF_OK;
}

kf_status kf_analyze_mpi_gather_layers(const int32_t *owner, int L, int rank, kf_analysis_layer *layers, double *thr_s,
                                       double *km_s, kf_error *err) {
    kf_status st = KF_OK;
    for (int l = 0; l < L; l++) {
        if (owner[l] == 0 || (rank != 0 && rank != owner[l])) continue;
        kf_analysis_layer *ly = &layers[l];
        if (rank == owner[l]) {
            MPI_Send(ly, (int)sizeof *ly, MPI_BYTE, 0, l, MPI_COMM_WORLD);
            send_kmeans(&ly->activation, ly->n_ff, l);
            send_kmeans(&ly->weight, ly->n_ff, l);
            continue;
        }
        const int n_ff = ly->n_ff;
        const double bi = ly->block_influence; // rank 0's own numbers
        MPI_Recv(ly, (int)sizeof *ly, MPI_BYTE, owner[l], l, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        ly->n_ff = n_ff;
        ly->block_influence = bi;
        kf_status s1 = recv_kmeans(&ly->activation, n_ff, owner[l], l, err);
        if (s1 != KF_OK) memset(&ly->weight, 0, sizeof ly->weight); // never received: nothing of it to free
        else s1 = recv_kmeans(&ly->weight, n_ff, owner[l], l, err);
        if (st == KF_OK) st = s1;
    }
    double secs[2] = {*thr_s, *km_s};
    MPI_Reduce(rank == 0 ? MPI_IN_PLACE : secs, secs, 2, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    *thr_s = secs[0], *km_s = secs[1];
    return st;
}

void kf_analyze_mpi_to_root(double *buf, size_t n, int owner, int rank, int l) {
    if (owner == 0) return;
    if (rank == owner) MPI_Send(buf, (int)n, MPI_DOUBLE, 0, l, MPI_COMM_WORLD);
    else if (rank == 0) MPI_Recv(buf, (int)n, MPI_DOUBLE, owner, l, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}

#define SAVE_CHUNK ((size_t)1 << 26) // bytes per message of a statistics entry

// An owner's entry to rank 0: a header, then its arrays in file order in
// pieces of at most SAVE_CHUNK bytes.
static void send_entry(const kf_moments *m, int tag) {
    int64_t hdr[4] = {m->d, m->topk, m->has_shift, m->n};
    MPI_Send(hdr, 4, MPI_INT64_T, 0, tag, MPI_COMM_WORLD);
    MPI_Send(&m->eps, 1, MPI_FLOAT, 0, tag, MPI_COMM_WORLD);
    const void *p[9];
    size_t n[9];
    for (int i = 0, k = kf_statsfile_entry_arrays(m, p, n); i < k; i++)
        for (size_t o = 0; o < n[i]; o += SAVE_CHUNK)
            MPI_Send((const char *)p[i] + o, (int)(n[i] - o < SAVE_CHUNK ? n[i] - o : SAVE_CHUNK), MPI_BYTE, 0, tag,
                     MPI_COMM_WORLD);
}

static void recv_entry(kf_statsfile_writer *w, const char *name, int src, int tag, char *buf) {
    int64_t hdr[4];
    kf_moments shape = {0};
    MPI_Recv(hdr, 4, MPI_INT64_T, src, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Recv(&shape.eps, 1, MPI_FLOAT, src, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    shape.d = (int)hdr[0];
    shape.topk = (int)hdr[1];
    kf_statsfile_writer_begin(w, name, &shape, (int)hdr[2], hdr[3]);
    const void *p[9];
    size_t n[9];
    for (int i = 0, k = kf_statsfile_entry_arrays(&shape, p, n); i < k; i++)
        for (size_t o = 0; o < n[i]; o += SAVE_CHUNK) {
            int cnt = (int)(n[i] - o < SAVE_CHUNK ? n[i] - o : SAVE_CHUNK);
            MPI_Recv(buf, cnt, MPI_BYTE, src, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            kf_statsfile_writer_data(w, buf, (size_t)cnt);
        }
    kf_statsfile_writer_end(w);
}

kf_status kf_analyze_mpi_save_stats(const kf_analysis *a, const char *path, kf_error *err) {
    const int L = a->n_layer;
    char name[64];
    kf_statsfile_writer w;
    int ok = 1;
    char *buf = NULL;
    if (a->rank == 0) {
        int n_entries = L;
        for (int i = 0; i < a->stats.n; i++) n_entries += strncmp(a->stats.entries[i]->name, "layer.", 6) != 0;
        ok = (buf = malloc(SAVE_CHUNK)) != NULL;
        if (!ok) kf_error_set(err, KF_ERR_NOMEM, "%s: out of memory for the statistics", path);
        else ok = kf_statsfile_writer_open(&w, path, a->stats.fingerprint, &a->stats.protocol, n_entries, err) == KF_OK;
        if (!ok) free(buf);
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok) return a->rank == 0 ? err->code : kf_error_set(err, KF_ERR_IO, "%s: rank 0 could not write it", path);
    for (int l = 0; l < L; l++) {
        snprintf(name, sizeof name, "layer.%d.ffn_act", l);
        const int owner = a->layer_owner[l];
        if (a->rank == owner && owner != 0) send_entry(kf_statsfile_get(&a->stats, name), l);
        else if (a->rank == 0 && owner == 0) kf_statsfile_writer_entry(&w, name, kf_statsfile_get(&a->stats, name));
        else if (a->rank == 0) recv_entry(&w, name, owner, l, buf);
    }
    if (a->rank != 0) return KF_OK;
    free(buf);
    for (int i = 0; i < a->stats.n; i++)
        if (strncmp(a->stats.entries[i]->name, "layer.", 6) != 0)
            kf_statsfile_writer_entry(&w, a->stats.entries[i]->name, &a->stats.entries[i]->m);
    return kf_statsfile_writer_close(&w, err);
}
#else
typedef int kf_analyze_no_mpi; // ISO C forbids an empty translation unit
#endif

// Data-parallel scoring on several GPUs of one host: one process, one host
// thread per GPU (each holds the weights and scores its share of windows),
// per-group sums combined with ncclAllReduce in fp64. One process keeps one
// mmap of the checkpoint and needs no launcher.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/nccl_common.cuh"
#include "../kernels/cuda_common.cuh"
#include "score_gpu.h"
#include "score_stream.h"

extern "C" {
#include "../engine/partition.h"
#include "../engine/util.h"
}

typedef struct {
    int dev, lo, hi;
    const GpuScoreSpec* sp;
    const int* ids;
    double* score; // (nf, ng) this GPU's sums, then its expert token counts (gpu_spec_counts)
    double seconds;
    size_t peak;
    const StreamPlan* plan; // streamed layers (README "Streaming"), or NULL: resident
    double stats[3];        // streamed: bytes host->GPU, seconds not hidden, the engine's allocations
} Worker;

// This GPU's windows with streamed layers (sp->stream): streamed batches of plan->k engine batches.
static void worker_stream(Worker* w) {
    const GpuScoreSpec* sp = w->sp;
    GpuStreamScorer ss;
    gpu_stream_scorer_init(&ss, sp, w->plan);
    int step = w->plan->k * sp->B;
    long n = (long)sp->nf * sp->gs->n;
    double t0 = time_now();
    for (int i = w->lo; i < w->hi; i += step) {
        int nb = w->hi - i < step ? w->hi - i : step, more = i + nb < w->hi;
        const int* ids = w->ids + (long)i * sp->T;
        double* rows = sp->wscore ? sp->wscore + (size_t)i * n : NULL; // own rows
        if (sp->gradient)
            gpu_stream_score_gradient(&ss, ids, nb, w->score, rows, more);
        else
            gpu_stream_score_kl(&ss, ids, nb, w->score, rows, more);
    }
    cudaCheck(cudaDeviceSynchronize());
    w->seconds = time_now() - t0;
    w->peak = gpu_peak_bytes(ss.e);
    gpu_stream_stats(ss.st, &w->stats[0], &w->stats[1]);
    w->stats[2] = (double)gpu_alloc_bytes(ss.e);
    long nc = gpu_spec_counts(sp);
    if (nc) {
        long* t = (long*)xcalloc(nc, sizeof(long));
        gpu_expert_tokens(ss.e, t);
        for (long i = 0; i < nc; i++) w->score[n + i] += (double)t[i];
        free(t);
    }
    GpuEngine* e = ss.e;
    gpu_stream_scorer_free(&ss);
    gpu_engine_free(e);
}

static void* worker_main(void* arg) {
    Worker* w = (Worker*)arg;
    cudaCheck(cudaSetDevice(w->dev));
    const GpuScoreSpec* sp = w->sp;
    if (w->plan) {
        worker_stream(w);
        return NULL;
    }
    GpuEngine* e = gpu_engine_init(sp->m, sp->T, sp->B, sp->split);
    GpuScorer s;
    gpu_scorer_init(&s, e, sp);
    double t0 = time_now();
    for (int i = w->lo; i < w->hi; i += sp->B) {
        int nb = w->hi - i < sp->B ? w->hi - i : sp->B;
        const int* ids = w->ids + (long)i * sp->T;
        gpu_scorer_windows(&s, sp->wscore ? sp->wscore + (size_t)i * sp->nf * sp->gs->n : NULL); // own rows
        if (sp->gradient)
            gpu_score_gradient(&s, ids, nb, w->score);
        else
            gpu_score_kl(&s, ids, nb, w->score);
    }
    cudaCheck(cudaDeviceSynchronize());
    w->seconds = time_now() - t0;
    w->peak = gpu_peak_bytes(e);
    long nc = gpu_spec_counts(sp), ng = (long)sp->gs->n * sp->nf;
    if (nc) { // counts travel with the sums, as doubles (exact below 2^53)
        long* t = (long*)xcalloc(nc, sizeof(long));
        gpu_expert_tokens(e, t);
        for (long i = 0; i < nc; i++) w->score[ng + i] += (double)t[i];
        free(t);
    }
    gpu_engine_free(e);
    return NULL;
}

static void score_multi(const GpuScoreSpec* sp, const StreamPlan* plan, double* stats, const int* ids, int n,
                        int ngpus, double* score, double* seconds, size_t* peak) {
    setenv("NCCL_NVLS_ENABLE", "0", 1); // never NVLink multicast (see the device notes)
    int ns = sp->gs->n * sp->nf, ng = ns + (int)gpu_spec_counts(sp);
    Worker* w = (Worker*)xcalloc(ngpus, sizeof(Worker));
    pthread_t* th = (pthread_t*)xcalloc(ngpus, sizeof(pthread_t));
    for (int i = 0; i < ngpus; i++) {
        w[i] = (Worker){i, 0, 0, sp, ids, NULL, 0, 0, plan, {0, 0, 0}};
        partition_windows(n, ngpus, i, &w[i].lo, &w[i].hi);
        w[i].score = (double*)xcalloc(ng, sizeof(double));
        if (pthread_create(&th[i], NULL, worker_main, &w[i]) != 0) fail_other("cannot start GPU thread %d", i);
    }
    for (int i = 0; i < ngpus; i++) pthread_join(th[i], NULL);
    // Sum the per-GPU scores with NCCL, in fp64.
    int* devs = (int*)xmalloc(sizeof(int) * ngpus);
    for (int i = 0; i < ngpus; i++) devs[i] = i;
    ncclComm_t* comms = (ncclComm_t*)xcalloc(ngpus, sizeof(ncclComm_t));
    ncclCheck(ncclCommInitAll(comms, ngpus, devs));
    double** buf = (double**)xcalloc(ngpus, sizeof(double*));
    for (int i = 0; i < ngpus; i++) {
        cudaCheck(cudaSetDevice(i));
        cudaCheck(cudaMalloc(&buf[i], sizeof(double) * ng));
        cudaCheck(cudaMemcpy(buf[i], w[i].score, sizeof(double) * ng, cudaMemcpyHostToDevice));
    }
    ncclCheck(ncclGroupStart());
    for (int i = 0; i < ngpus; i++)
        ncclCheck(ncclAllReduce(buf[i], buf[i], ng, ncclFloat64, ncclSum, comms[i], 0));
    ncclCheck(ncclGroupEnd());
    double* total = (double*)xmalloc(sizeof(double) * ng);
    cudaCheck(cudaSetDevice(0));
    cudaCheck(cudaMemcpy(total, buf[0], sizeof(double) * ng, cudaMemcpyDeviceToHost));
    gpu_spec_add_sums(sp, score, total);
    *seconds = 0;
    *peak = 0;
    for (int i = 0; i < ngpus; i++) {
        info_msg("score: GPU %d: windows %d..%d in %.2fs, peak GPU memory %.2f GiB", i, w[i].lo, w[i].hi - 1,
                 w[i].seconds, w[i].peak / 1073741824.0);
        *seconds = w[i].seconds > *seconds ? w[i].seconds : *seconds;
        *peak = w[i].peak > *peak ? w[i].peak : *peak;
        if (plan) {
            info_msg(
                "score: GPU %d: streamed layers: %.2f GiB copied host->GPU, %.3fs of copies not hidden, %.3f "
                "GiB allocated by the engine",
                i, w[i].stats[0] / 1073741824.0, w[i].stats[1], w[i].stats[2] / 1073741824.0);
            stats[0] += w[i].stats[0];
            stats[1] += w[i].stats[1];
            if (w[i].stats[2] > stats[2]) stats[2] = w[i].stats[2];
        }
        cudaCheck(cudaSetDevice(i));
        cudaCheck(cudaFree(buf[i]));
        ncclCommDestroy(comms[i]);
        free(w[i].score);
    }
    cudaCheck(cudaSetDevice(0));
    free(total), free(buf), free(comms), free(devs), free(th), free(w);
}

extern "C" void gpu_score_multi(const GpuScoreSpec* sp, const int* ids, int n, int ngpus, double* score,
                                double* seconds, size_t* peak) {
    score_multi(sp, NULL, NULL, ids, n, ngpus, score, seconds, peak);
}

extern "C" void gpu_score_multi_stream(const GpuScoreSpec* sp, const StreamPlan* plan, double* stats,
                                       const int* ids, int n, int ngpus, double* score, double* seconds,
                                       size_t* peak) {
    score_multi(sp, plan, stats, ids, n, ngpus, score, seconds, peak);
}

// One process per GPU, possibly on several hosts: the NCCL id travels through
// the rendezvous, each rank scores its share, the sums meet in an all-reduce.
extern "C" void gpu_score_ranked(const GpuScoreSpec* sp, const int* ids, int n, int rank, int world,
                                 const RdvSpec* rdv, double* score, double* seconds, size_t* peak) {
    ncclComm_t comm;
    int dev = nccl_join(&comm, rdv, rank, world);
    int ng = sp->gs->n * sp->nf + (int)gpu_spec_counts(sp);
    Worker w = {dev, 0, 0, sp, ids, NULL, 0, 0, NULL, {0, 0, 0}};
    partition_windows(n, world, rank, &w.lo, &w.hi);
    w.score = (double*)xcalloc(ng, sizeof(double));
    worker_main(&w);
    cudaCheck(cudaSetDevice(dev));
    nccl_allreduce_host(w.score, ng, comm);
    // the per-window scores: this rank's rows (written in place) and zeros elsewhere, summed over every rank:
    // each window's rows exactly (partition_place_rows), on every rank
    if (sp->wscore) nccl_allreduce_host(sp->wscore, (long)n * sp->gs->n * sp->nf, comm);
    gpu_spec_add_sums(sp, score, w.score);
    info_msg("score: rank %d of %d: windows %d..%d in %.2fs, peak GPU memory %.2f GiB", rank, world, w.lo,
             w.hi - 1, w.seconds, w.peak / 1073741824.0);
    *seconds = w.seconds;
    *peak = w.peak;
    ncclCommDestroy(comm);
    if (rank == 0) rdv_done(rdv);
    free(w.score);
}

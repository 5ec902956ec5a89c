// Layer-sharded scoring (--shard-layers) for models larger than one GPU: GPU s of N holds a
// contiguous range of decoder layers (the first also the embedding, the last the final norm and
// lm_head), the ranges balanced by work within each GPU's memory (scoring/shard_plan.c); one host
// thread per GPU. Hidden states move forward, and for the gradient
// their gradients move back, with ncclSend/ncclRecv on each GPU's stream. kl: every stage walks
// the passes in the same order, so a stage starts the next group while the later stages finish
// the previous one (the groups are the pipeline's micro-batches). gradient: the batches of windows
// are the micro-batches of a one-forward-one-backward schedule (stage s keeps N - s in flight).
// Each group's score is summed on one stage only (the last for kl, the owner of its layer for
// gradient), so the result equals the one-GPU run.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/nccl_common.cuh"
#include "../kernels/cuda_common.cuh"
#include "score_gpu.h"

extern "C" {
#include "../engine/partition.h"
#include "../engine/util.h"
#include "shard_plan.h"
}

// Time a stage spends computing, as opposed to waiting for a neighbour: CUDA event pairs around
// each compute stretch, read back when the pool fills.
#define BUSY_N 256
typedef struct {
    cudaEvent_t ev[2 * BUSY_N];
    int n;
    double ms;
} Busy;

static void busy_flush(Busy* b) {
    if (b->n == 0) return;
    cudaCheck(cudaEventSynchronize(b->ev[2 * b->n - 1]));
    for (int i = 0; i < b->n; i++) {
        float ms;
        cudaCheck(cudaEventElapsedTime(&ms, b->ev[2 * i], b->ev[2 * i + 1]));
        b->ms += ms;
    }
    b->n = 0;
}

static void busy_mark(Busy* b, int end) {
    if (!end && b->n == BUSY_N) busy_flush(b);
    cudaCheck(cudaEventRecord(b->ev[2 * b->n + end], 0));
    b->n += end;
}

typedef struct {
    int s, n, l0, l1; // stage, stages, its layers
    int base, dev;    // the communicator rank of this pipeline's stage 0; this stage's CUDA device
    ncclComm_t comm;
    const GpuScoreSpec* sp;
    const Model* m;
    const Groups* gs;
    int nf, T, B, nwin;
    const int* ids;
    const int* owner; // stage of each layer
    double* score;    // this stage's sums (nf, groups)
    double* wscore;   // this stage's per-window scores (nwin, nf * groups), or NULL (sp->wscore NULL)
    long* tokens;     // its expert token counts (gpu_spec_counts), or NULL
    double seconds, busy_s;
    size_t peak;
} Stage;

static void send_h(Stage* st, float* buf, int nb, int peer) {
    size_t n = (size_t)nb * st->T * st->m->c.hidden_size;
    ncclCheck(ncclSend(buf, n, ncclFloat32, st->base + peer, st->comm, 0));
}

static void recv_h(Stage* st, float* buf, int nb, int peer) {
    size_t n = (size_t)nb * st->T * st->m->c.hidden_size;
    ncclCheck(ncclRecv(buf, n, ncclFloat32, st->base + peer, st->comm, 0));
}

// One batch of kl: the reference pass, then every group's pass from its own layer on.
static void stage_kl(Stage* st, GpuScorer* sc, Busy* b, const int* ids, int nb) {
    GpuEngine* e = sc->e;
    int last = st->s == st->n - 1;
    gpu_pass_begin(e, 0, ids, nb);
    if (st->s > 0) recv_h(st, gpu_hidden(e), nb, st->s - 1);
    busy_mark(b, 0);
    gpu_forward_layers(e, st->l0, nb, 1);
    if (last) gpu_kl_reference(sc, nb);
    busy_mark(b, 1);
    if (!last) send_h(st, gpu_hidden(e), nb, st->s + 1);
    for (int f = 0; f < st->nf; f++)
        for (int gi = 0; gi < st->gs->n; gi++) {
            const Group* g = &st->gs->g[gi];
            int own = st->owner[g->layer];
            // the group's pass starts on a later stage; a KV-cache format scores KV-cache groups only
            if (g->disabled || own > st->s || !format_fits(&st->sp->fmts[f], g)) continue;
            if (own < st->s) recv_h(st, gpu_hidden(e), nb, st->s - 1);
            busy_mark(b, 0);
            if (own == st->s) {
                gpu_kl_group(sc, g, f, nb);
                gpu_forward_layers(e, g->layer, nb, 0);
                gpu_plan_clear(e);
            } else {
                gpu_forward_layers(e, st->l0, nb, 0);
            }
            if (last) gpu_kl_add(sc, nb, f * st->gs->n + gi);
            busy_mark(b, 1);
            if (!last) send_h(st, gpu_hidden(e), nb, st->s + 1);
        }
    gpu_scorer_end(sc, st->score);
}

// Batch k of the run: its first window and its size.
static int batch_of(const Stage* st, int k, const int** ids) {
    *ids = st->ids + (long)k * st->B * st->T;
    int left = st->nwin - k * st->B;
    return left < st->B ? left : st->B;
}

// Forward of batch k on this stage (its input already received); the last stage also computes the
// loss gradient.
static void grad_forward(Stage* st, GpuScorer* sc, Busy* b, int k) {
    const int* ids;
    int nb = batch_of(st, k, &ids);
    gpu_pass_begin(sc->e, 1, ids, nb);
    gpu_pass_slot(sc->e, k);
    busy_mark(b, 0);
    gpu_forward_layers(sc->e, st->l0, nb, 1);
    if (st->s == st->n - 1) gpu_loss_backward(sc->e, nb);
    busy_mark(b, 1);
}

// Backward of batch k (the gradient of its output already received), adding its scores.
static void grad_backward(Stage* st, GpuScorer* sc, Busy* b, int k) {
    const int* ids;
    int nb = batch_of(st, k, &ids);
    gpu_pass_slot(sc->e, k);
    busy_mark(b, 0);
    if (st->wscore) gpu_scorer_windows(sc, st->wscore + (size_t)k * st->B * st->nf * st->gs->n);
    gpu_grad_backward(sc, nb);
    busy_mark(b, 1);
    gpu_scorer_end(sc, st->score);
}

// Sends `send` to peer ps and receives `recv` from peer pr as one NCCL group, so that two stages
// exchanging in opposite directions cannot wait on each other.
static void exchange(Stage* st, float* send, int nbs, int ps, float* recv, int nbr, int pr) {
    ncclCheck(ncclGroupStart());
    send_h(st, send, nbs, ps);
    recv_h(st, recv, nbr, pr);
    ncclCheck(ncclGroupEnd());
}

// The gradient over all batches, one forward one backward (the non-interleaved schedule of
// Megatron-LM): stage s runs N - s - 1 forwards ahead, then alternates, then drains.
static void stage_gradient(Stage* st, GpuScorer* sc, Busy* b) {
    GpuEngine* e = sc->e;
    int nbat = (st->nwin + st->B - 1) / st->B, first = st->s == 0, last = st->s == st->n - 1;
    int warm = st->n - st->s - 1 < nbat ? st->n - st->s - 1 : nbat, steady = nbat - warm, f = 0, k = 0;
    const int* ids;
    float *h = gpu_hidden(e), *dh;
    for (int i = 0; i < warm; i++, f++) {
        if (!first) recv_h(st, h, batch_of(st, f, &ids), st->s - 1);
        grad_forward(st, sc, b, f);
        send_h(st, h, batch_of(st, f, &ids), st->s + 1);
    }
    if (steady > 0 && !first) recv_h(st, h, batch_of(st, f, &ids), st->s - 1);
    for (int i = 0; i < steady; i++, f++, k++) {
        grad_forward(st, sc, b, f);
        dh = gpu_hidden_grad(e);
        if (!last) exchange(st, h, batch_of(st, f, &ids), st->s + 1, dh, batch_of(st, k, &ids), st->s + 1);
        grad_backward(st, sc, b, k);
        if (first) continue;
        if (i == steady - 1)
            send_h(st, dh, batch_of(st, k, &ids), st->s - 1);
        else
            exchange(st, dh, batch_of(st, k, &ids), st->s - 1, h, batch_of(st, f + 1, &ids), st->s - 1);
    }
    for (int i = 0; i < warm; i++, k++) {
        dh = gpu_hidden_grad(e);
        recv_h(st, dh, batch_of(st, k, &ids), st->s + 1);
        grad_backward(st, sc, b, k);
        if (!first) send_h(st, dh, batch_of(st, k, &ids), st->s - 1);
    }
}

static void* stage_main(void* arg) {
    Stage* st = (Stage*)arg;
    cudaCheck(cudaSetDevice(st->dev));
    const GpuScoreSpec* sp = st->sp;
    int slots = sp->gradient ? st->n - st->s : 1; // batches in flight on this stage
    GpuEngine* e = gpu_engine_init_layers(sp->m, sp->T, sp->B, sp->split, st->l0, st->l1, slots);
    GpuScorer sc;
    gpu_scorer_init(&sc, e, sp);
    Busy* b = (Busy*)xcalloc(1, sizeof(Busy));
    for (int i = 0; i < 2 * BUSY_N; i++) cudaCheck(cudaEventCreate(&b->ev[i]));
    cudaCheck(cudaDeviceSynchronize());
    double t0 = time_now();
    if (sp->gradient) stage_gradient(st, &sc, b);
    for (int i = 0; i < st->nwin && !sp->gradient; i += st->B) {
        int nb = st->nwin - i < st->B ? st->nwin - i : st->B;
        if (st->wscore && st->s == st->n - 1) // the last stage computes every KL
            gpu_scorer_windows(&sc, st->wscore + (size_t)i * st->nf * st->gs->n);
        stage_kl(st, &sc, b, st->ids + (long)i * st->T, nb);
    }
    cudaCheck(cudaDeviceSynchronize());
    st->seconds = time_now() - t0;
    busy_flush(b);
    st->busy_s = b->ms / 1000.0;
    for (int i = 0; i < 2 * BUSY_N; i++) cudaEventDestroy(b->ev[i]);
    free(b);
    st->peak = gpu_peak_bytes(e);
    if (gpu_spec_counts(sp)) {
        st->tokens = (long*)xcalloc(gpu_spec_counts(sp), sizeof(long));
        gpu_expert_tokens(e, st->tokens);
    }
    gpu_engine_free(e);
    return NULL;
}

// Where the n stages cut the layers (bounds, n + 1): by work, each stage within its GPU's memory
// (mem[s]; scoring/shard_plan.c). Every rank of a multi-process pipeline computes the same cuts from the
// same inputs.
static void stage_bounds(const GpuScoreSpec* sp, int n, const double* mem, int* bounds) {
    int L = sp->m->c.num_layers;
    if (n > L) fail_input("--shard-layers: %d stages for %d layers (at most one GPU per layer)", n, L);
    if (!shard_plan(&sp->m->c, sp->gs, sp->nf, sp->gradient, sp->T, sp->B, n, mem, bounds))
        warn_msg("--shard-layers: no split by work fits the GPUs' memory (by autoq's estimate of each stage's "
                 "buffers); the layers are split to need the least memory on the fullest GPU");
}

// Stage s of n, its layers (bounds[s]..bounds[s+1]-1) and the owner of every layer.
static void stage_setup(Stage* st, const GpuScoreSpec* sp, int s, int n, const int* bounds, int* owner) {
    for (int i = 0; i < n; i++)
        for (int l = bounds[i]; l < bounds[i + 1]; l++) owner[l] = i;
    st->l0 = bounds[s], st->l1 = bounds[s + 1];
    st->s = s, st->n = n, st->sp = sp, st->m = sp->m, st->gs = sp->gs;
    st->nf = sp->nf, st->T = sp->T, st->B = sp->B, st->owner = owner;
    st->score = (double*)xcalloc((size_t)sp->gs->n * sp->nf, sizeof(double));
}

static void stage_report(const Stage* st, const char* who) {
    info_msg("score: %s: layers %d..%d, %.2fs, busy %.0f%% (computing, not waiting on a neighbour), peak GPU "
             "memory %.2f GiB",
             who, st->l0, st->l1 - 1, st->seconds, 100 * st->busy_s / st->seconds, st->peak / 1073741824.0);
}

extern "C" void gpu_score_sharded(const GpuScoreSpec* sp, const int* ids, int n, int ngpus, double* score,
                                  double* seconds, size_t* peak) {
    setenv("NCCL_NVLS_ENABLE", "0", 1); // never NVLink multicast (see the device notes)
    int L = sp->m->c.num_layers, ns = sp->gs->n * sp->nf;
    long nc = gpu_spec_counts(sp);
    int* owner = (int*)xmalloc(sizeof(int) * L);
    Stage* st = (Stage*)xcalloc(ngpus, sizeof(Stage));
    int* devs = (int*)xmalloc(sizeof(int) * ngpus);
    for (int i = 0; i < ngpus; i++) devs[i] = i;
    ncclComm_t* comms = (ncclComm_t*)xcalloc(ngpus, sizeof(ncclComm_t));
    ncclCheck(ncclCommInitAll(comms, ngpus, devs));
    pthread_t* th = (pthread_t*)xcalloc(ngpus, sizeof(pthread_t));
    double* mem = (double*)xmalloc(sizeof(double) * ngpus);
    int* bounds = (int*)xmalloc(sizeof(int) * (ngpus + 1));
    for (int i = 0; i < ngpus; i++) {
        size_t fr, tot;
        cudaCheck(cudaSetDevice(i));
        cudaCheck(cudaMemGetInfo(&fr, &tot));
        mem[i] = (double)tot;
    }
    stage_bounds(sp, ngpus, mem, bounds);
    for (int i = 0; i < ngpus; i++) {
        Stage* s = &st[i];
        stage_setup(s, sp, i, ngpus, bounds, owner);
        s->base = 0, s->dev = i, s->comm = comms[i], s->nwin = n, s->ids = ids;
        if (sp->wscore) s->wscore = (double*)xcalloc((size_t)n * ns, sizeof(double));
        if (pthread_create(&th[i], NULL, stage_main, s) != 0) fail_other("cannot start GPU thread %d", i);
    }
    for (int i = 0; i < ngpus; i++) pthread_join(th[i], NULL);
    *seconds = 0;
    *peak = 0;
    for (int i = 0; i < ngpus; i++) {
        Stage* s = &st[i];
        for (int k = 0; k < ns; k++) score[k] += s->score[k]; // each group's sum lives on one stage
        for (size_t k = 0; s->wscore && k < (size_t)n * ns; k++) sp->wscore[k] += s->wscore[k];
        for (long k = 0; k < nc; k++) sp->expert_tokens[k] += s->tokens[k];
        char who[32];
        snprintf(who, sizeof(who), "GPU %d", i);
        stage_report(s, who);
        *seconds = s->seconds > *seconds ? s->seconds : *seconds;
        *peak = s->peak > *peak ? s->peak : *peak;
        ncclCommDestroy(comms[i]);
        free(s->score);
        free(s->wscore);
        free(s->tokens);
    }
    cudaCheck(cudaSetDevice(0));
    free(th), free(st), free(owner), free(devs), free(comms), free(mem), free(bounds);
}

// One process per GPU, on one or several hosts: ranks [p S, p S + S) form pipeline p (a host's
// GPUs), which scores its share of the windows; every group's sum lives on one stage of each
// pipeline, so one all-reduce over all ranks gives the total, as in gpu_score_ranked.
extern "C" void gpu_score_sharded_ranked(const GpuScoreSpec* sp, const int* ids, int n, int stages, int rank,
                                         int world, const RdvSpec* rdv, double* score, double* seconds,
                                         size_t* peak) {
    ncclComm_t comm;
    int dev = nccl_join(&comm, rdv, rank, world);
    int L = sp->m->c.num_layers, ns = sp->gs->n * sp->nf, p = rank / stages, lo, hi;
    long nc = gpu_spec_counts(sp);
    int* owner = (int*)xmalloc(sizeof(int) * L);
    Stage st;
    memset(&st, 0, sizeof(st));
    // every rank's GPU memory to every rank: each stage of a pipeline then computes the same cuts
    size_t fr, tot;
    cudaCheck(cudaMemGetInfo(&fr, &tot));
    double* mem = (double*)xcalloc(world, sizeof(double));
    int* bounds = (int*)xmalloc(sizeof(int) * (stages + 1));
    mem[rank] = (double)tot;
    nccl_allreduce_host(mem, world, comm);
    stage_bounds(sp, stages, mem + p * stages, bounds);
    stage_setup(&st, sp, rank % stages, stages, bounds, owner);
    partition_windows(n, world / stages, p, &lo, &hi);
    st.base = p * stages, st.dev = dev, st.comm = comm, st.nwin = hi - lo;
    st.ids = ids + (long)lo * sp->T;
    if (sp->wscore) st.wscore = (double*)xcalloc((size_t)(hi - lo) * ns, sizeof(double));
    stage_main(&st);
    if (sp->wscore) { // this stage's groups of this pipeline's windows, zeros elsewhere, summed over every rank
        partition_place_rows(sp->wscore, st.wscore, lo, hi, ns);
        nccl_allreduce_host(sp->wscore, (long)n * ns, comm);
    }
    // the stage's sums and counts, all-reduced in fp64 over every rank
    double* h = (double*)xcalloc(ns + nc, sizeof(double));
    memcpy(h, st.score, sizeof(double) * ns);
    for (long k = 0; k < nc; k++) h[ns + k] = (double)st.tokens[k];
    nccl_allreduce_host(h, ns + nc, comm);
    gpu_spec_add_sums(sp, score, h);
    char who[96];
    snprintf(who, sizeof(who), "rank %d of %d (pipeline %d, stage %d, windows %d..%d)", rank, world, p, st.s,
             lo, hi - 1);
    stage_report(&st, who);
    *seconds = st.seconds;
    *peak = st.peak;
    ncclCommDestroy(comm);
    if (rank == 0) rdv_done(rdv);
    free(h), free(owner), free(st.score), free(st.tokens), free(st.wscore), free(mem), free(bounds);
}

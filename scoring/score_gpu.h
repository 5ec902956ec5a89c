// Scoring on the GPU: the kl and gradient scores of scoring/score.c computed by the CUDA engine
// (engine/gpu.h) through its quantization plan and backward hook, on one GPU (score_gpu.cu), data
// parallel over the GPUs of a host or over ranks (score_multi.cu), or layer-sharded over the GPUs of
// a host (score_pipeline.cu). Sums stay on the device in fp64 until a batch ends. C interface.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif
#include "../engine/gpu.h"
#include "../engine/rendezvous.h"
#include "format.h"
#include "groups.h"
#include "score.h"

// What is scored, and how: the same for every GPU of a run.
typedef struct {
    const Model* m;
    const Groups* gs;
    const Format* fmts;
    int nf;
    int gradient;        // method: 1 gradient, 0 kl
    int T, B;            // window length, windows per batch
    int split;           // the GEMM inputs, GEMM_* (see gpu_engine_init)
    long* expert_tokens; // (n_sparse, E): where the tokens routed to each expert add up, or NULL
    // The candidates' weights as given (GPTQ's, qcache_build; nf formats), or NULL: the engines quantize
    // their bf16 weights round-to-nearest. Each engine holds its own layers' as int8 codes (gpu_given_set).
    const QuantCache* qc;
    // Each window's contribution (README §8 /groups/window_scores): host (n windows, nf * groups) where the
    // one-process back ends add them (window i of the run at row i), or NULL: none kept (multi-process runs).
    double* wscore;
    double gpu_mem; // --gpu-memory (bytes, 0: none): the cap the gradient's kept activations stay within
    // host (L), or NULL: set to 1 for every layer a gradient engine recomputes in its backward
    // (gpu_grad_keep_plan)
    unsigned char* recomputed;
} GpuScoreSpec;

// Entries of sp->expert_tokens: n_sparse * E, or 0 without it.
static inline long gpu_spec_counts(const GpuScoreSpec* sp) {
    return sp->expert_tokens ? (long)sp->m->c.n_sparse * sp->m->c.num_experts : 0;
}

// Adds combined sums, laid out as scores (nf, groups) then the expert token counts, to score and
// to sp->expert_tokens.
static inline void gpu_spec_add_sums(const GpuScoreSpec* sp, double* score, const double* total) {
    long ns = (long)sp->gs->n * sp->nf, nc = gpu_spec_counts(sp);
    for (long k = 0; k < ns; k++) score[k] += total[k];
    for (long i = 0; i < nc; i++) sp->expert_tokens[i] += (long)total[ns + i];
}

// One engine's scorer: device sums (nf, groups) and scratch.
typedef struct {
    GpuEngine* e;
    const GpuScoreSpec* sp;
    double* dscore;  // (nf * groups) device
    double* scratch; // (max(B*T, 1024)) device
    float* ref;      // (B*T, V) device: the unquantized logits of a kl batch (last stage)
    // Per-window scores of the batch being scored (gpu_scorer_windows), or NULL: dwscore (B, nf * groups) on
    // the device, added at gpu_scorer_end to wout (host, the batch's first window's row). With them the
    // gradient sums each window apart, and its totals are the sums of its windows (kl keeps its totals as
    // before).
    double* dwscore;
    double* wout;
    int nb; // windows in the batch being scored
} GpuScorer;

// With sp->qc, uploads the given weights of e's layers (its one upload of them).
void gpu_scorer_init(GpuScorer* s, GpuEngine* e, const GpuScoreSpec* sp);
// Adds the device sums to score (host, nf * groups) and zeroes them; with per-window scores also adds the
// batch's (nb rows) to the rows gpu_scorer_windows named.
void gpu_scorer_end(GpuScorer* s, double* score);
// The next batch's per-window scores go to out (host, its first window's row of (windows, nf * groups)); NULL:
// none for it.
void gpu_scorer_windows(GpuScorer* s, double* out);

// A batch in parts, for pipeline stages (the engine's pass already begun, its layers run):
void gpu_kl_reference(GpuScorer* s, int nb); // last stage: the unquantized logits
// Group g quantized with format f from here on; the hidden state restarts at g's layer input.
void gpu_kl_group(GpuScorer* s, const Group* g, int f, int nb);
void gpu_kl_add(GpuScorer* s, int nb, int slot); // last stage: the plan cleared, KL to the reference into slot
void gpu_grad_backward(GpuScorer* s, int nb);    // the backward, adding (dY . dYq)^2 of every linear

// One batch of nb windows (host ids (nb, T)) on one GPU, added to score (host). The gradient
// returns the summed per-window mean CE.
void gpu_score_kl(GpuScorer* s, const int* ids, int nb, double* score);
double gpu_score_gradient(GpuScorer* s, const int* ids, int nb, double* score);

// Every window (ids (n, T)) data parallel over ngpus GPUs of this host; sums combined with NCCL in
// fp64 and added to score. seconds and peak: the slowest GPU's time, the largest peak.
void gpu_score_multi(const GpuScoreSpec* sp, const int* ids, int n, int ngpus, double* score, double* seconds,
                     size_t* peak);
// One rank of a multi-process (multi-host) run: this process's GPU scores its share of the windows;
// the NCCL id comes through the rendezvous; sums all-reduced in fp64.
void gpu_score_ranked(const GpuScoreSpec* sp, const int* ids, int n, int rank, int world, const RdvSpec* rdv,
                      double* score, double* seconds, size_t* peak);
// Layer-sharded pipeline over ngpus GPUs of this host: GPU s holds a contiguous range of decoder
// layers; hidden states (and their gradients) move between stages with ncclSend/ncclRecv. Same
// scores as one GPU. Reports per GPU its layers, time, busy fraction and peak memory.
void gpu_score_sharded(const GpuScoreSpec* sp, const int* ids, int n, int ngpus, double* score, double* seconds,
                       size_t* peak);

// --shard-layers with --nccl-init: one process per GPU; ranks [p S, p S + S) form pipeline p of S
// stages (the GPUs of a host), the pipelines are data parallel (windows split between them) and
// the sums all-reduced over every rank. Same scores as one GPU.
void gpu_score_sharded_ranked(const GpuScoreSpec* sp, const int* ids, int n, int stages, int rank, int world,
                              const RdvSpec* rdv, double* score, double* seconds, size_t* peak);

#ifdef __cplusplus
}
#endif

// The CUDA engine: bf16 weights resident on one GPU, cuBLAS GEMMs with fp32
// accumulation, fp32 norms and softmax statistics, exact int8 GEMMs for the
// quantized group, and the KL score with prefix reuse. C interface.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif
#include "../scoring/format.h"
#include "../scoring/groups.h"
#include "model.h"
#include "rendezvous.h"

typedef struct GpuEngine GpuEngine;

// Number of CUDA devices (0 when none or when built without CUDA).
int gpu_device_count(void);
// Uploads the model (opened with model_open or model_load) for batches of up
// to B windows of T tokens. split: GEMM inputs as bf16 hi + lo pairs (two
// bf16 GEMMs, ~16-bit activations: matches the fp32 CPU engine); 0: plain bf16.
GpuEngine* gpu_engine_init(const Model* m, int T, int B, int split);
void gpu_engine_free(GpuEngine* e);
// A pipeline stage: decoder layers l0..l1-1 only (plus the embedding when l0 == 0, the final norm
// and lm_head when l1 is the last layer), with room for the layer inputs of `slots` batches.
GpuEngine* gpu_engine_init_layers(const Model* m, int T, int B, int split, int l0, int l1, int slots);

// Passes in parts (what a pipeline stage runs; gpu_score_kl / gpu_score_gradient are these in
// sequence). Asynchronous on the device's default stream unless they return host data.
float* gpu_hidden(GpuEngine* e);      // (B*T, D) fp32 residual stream: what stages send / receive
float* gpu_hidden_grad(GpuEngine* e); // its gradient (gradient passes)
// zeroes nscores sums, sets the precision mode, uploads ids (nb, T); the first stage embeds them
void gpu_pass_begin(GpuEngine* e, int gradient, int nscores, const int* ids, int nb);
void gpu_pass_slot(GpuEngine* e, int k); // layer inputs of the next passes go to / come from slot k % slots
void gpu_pass_layers(GpuEngine* e, int from, int nb, int save); // layers from..l1-1 on the hidden state
void gpu_pass_group(GpuEngine* e, const Group* g, const Format* f, int nb); // quantize g, restart at its layer
void gpu_pass_ungroup(GpuEngine* e);
void gpu_pass_kl(GpuEngine* e, int nb, int slot); // last stage: slot < 0 reference logits, else KL into slot
void gpu_pass_grad_head(GpuEngine* e, int nb);    // last stage: loss and its gradient into the hidden grad
void gpu_pass_backward(GpuEngine* e, const Groups* gs, const Format* fmts, int nf, int nb);
double gpu_pass_loss(GpuEngine* e, int nb); // last stage
void gpu_pass_end(GpuEngine* e, double* score,
                  int nscores); // adds this stage's sums to score (host), zeroes them
// Unquantized logits of nb windows (host ids (nb, T)) copied to host (nb*T, V).
void gpu_forward_logits(GpuEngine* e, const int* ids, int nb, float* logits);
// Adds the kl scores of nb windows to score (nf, groups->n) on the host.
void gpu_score_kl(GpuEngine* e, const Groups* gs, const Format* fmts, int nf, const int* ids, int nb,
                  double* score);
// Adds the gradient scores of nb windows; returns the summed per-window mean CE.
double gpu_score_gradient(GpuEngine* e, const Groups* gs, const Format* fmts, int nf, const int* ids, int nb,
                          double* score);
size_t gpu_peak_bytes(GpuEngine* e);
// Data parallelism over ngpus GPUs of this host (engine/gpu_multi.cu): each
// scores a contiguous share of the n windows; sums combined with NCCL in fp64
// and added to score. seconds and peak: the slowest GPU's time, the largest peak.
// One rank of a multi-process (multi-host) run: this process's GPU scores its
// share; the NCCL id comes through the rendezvous; sums all-reduced in fp64.
void gpu_score_ranked(const Model* m, const Groups* gs, const Format* fmts, int nf, int gradient,
                      const int* ids, int n, int T, int B, int split, int rank, int world, const RdvSpec* rdv,
                      double* score, double* seconds, size_t* peak);
void gpu_score_multi(const Model* m, const Groups* gs, const Format* fmts, int nf, int gradient, const int* ids,
                     int n, int T, int B, int split, int ngpus, double* score, double* seconds,
                     size_t* peak); // device memory in use at its peak (cudaMemGetInfo deltas)
// Layer-sharded pipeline over ngpus GPUs of this host (engine/gpu_pipeline.cu): GPU s holds a
// contiguous range of decoder layers; hidden states (and their gradients) move between stages with
// ncclSend/ncclRecv. Same scores as one GPU. Reports per GPU its layers, time, busy fraction (time
// computing rather than waiting on a neighbour) and peak memory.
void gpu_score_sharded(const Model* m, const Groups* gs, const Format* fmts, int nf, int gradient,
                       const int* ids, int n, int T, int B, int split, int ngpus, double* score,
                       double* seconds, size_t* peak);
const char* gpu_name(void);

#ifdef __cplusplus
}
#endif

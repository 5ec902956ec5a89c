// Scoring a model larger than its GPU (README "Streaming"): which decoder layers stay resident and
// which are copied from host memory once per batch, layer-major; how many windows a streamed batch
// holds; where the batch's in-flight states live (on the GPU, or spilled to pinned host memory); and
// the bytes that cross PCIe. Pure arithmetic on byte counts, so the CPU tests check it.
//
// A "state" is one engine batch's (B windows) hidden state, B T D fp32. kl runs layer-major: while
// layer l is on the GPU the reference state and every pass born at or before l (a group's pass is
// born at its own layer from the reference's input there) go through it, so a streamed batch of K
// engine batches holds K (1 + births at layers <= l) states after layer l. The gradient keeps every
// layer's input for the backward (K L states), plus the running state and its gradient (2 K).
// States beyond what fits on the GPU are spilled: the latest-born go to host memory (the earliest
// stay in flight longest), each spilled state crossing once each way per layer it lives through (kl)
// or once each way per batch (the gradient's kept inputs).
#pragma once
#include "../engine/config.h"
#include "../engine/model.h"
#include "format.h"
#include "groups.h"

typedef struct {
    int L;                     // decoder layers
    const double* layer_bytes; // (L) each layer's weights as the GPU holds them
    double slot_pad;           // a layer slot's bytes beyond its layer's: the alignment of its tensors
    double fixed_bytes;        // held whatever streams: embedding, final norm, lm_head, context, workspaces
    double batch_bytes;        // the engine's buffers for one engine batch (activations, logits, plan pool)
    double state_bytes;        // one state: B T D fp32
    double cap;                // bytes autoq may use on the GPU (--gpu-memory, else the GPU's memory)
    int gradient;              // 1 gradient, 0 kl
    int n_births;              // kl: the passes (enabled group, format) and the layer each is born at
    const int* birth_layer;    // (n_births)
    int batches;               // engine batches in the run (windows / B, rounded up)
    int force;                 // stream even when everything fits
    int k_force;               // > 0: this many engine batches per streamed batch when they fit (tests, bench)
    int no_spill;              // every in-flight state on the GPU (kl under AUTOQ_STREAM_SPILL=0)
    // estimates for the batch choice: host->GPU bytes per second, and seconds of compute per engine batch
    double h2d_bw, batch_compute_s;
} StreamSpec;

typedef struct {
    int streamed;          // 0: every layer resident (the model fits), 1: some layers stream
    unsigned char* res;    // (L) 1 when layer l stays resident
    int n_resident;        // layers resident
    int k;                 // engine batches per streamed batch (the windows that share one crossing)
    int states_gpu;        // states the GPU holds at most
    int states_peak;       // states in flight at most (per streamed batch)
    int states_spilled;    // of those, most spilled to host at once
    double gpu_bytes;      // predicted peak GPU memory
    double weight_h2d;     // weight bytes host->GPU per streamed batch
    double spill_h2d;      // spilled-state bytes host->GPU per streamed batch (as many GPU->host)
    double total_h2d;      // over the run: weights (incl. the first upload of resident layers) and spills
    double copy_s, comp_s; // per streamed batch, from the estimates: copies and compute
} StreamPlan;

// kl's passes in birth order, for the layer-major scorers (score_stream.cu, score_merge.cu): every enabled
// (format, group) pair whose format fits the group, by the group's layer (of L), group-major within a layer.
// order gets (format, group) per pass, birth (or NULL) each pass's layer; both have room for nf * gs->n
// passes. Returns the number of passes.
int stream_kl_passes(const Groups* gs, const Format* fmts, int nf, int L, int* order, int* birth);
// States in flight after layer l (kl), per engine batch: 1 + births at layers <= l.
int stream_states_after(const StreamSpec* s, int l);
// Spilled-state bytes each way of one streamed batch of k engine batches with g states on the GPU.
double stream_spill_bytes(const StreamSpec* s, int k, int g);
// Plans the run. Returns 1, or 0 when not even one engine batch with two layer slots and the fewest states
// that work (every in-flight state under no_spill, else three or all when fewer) fits the cap (p->gpu_bytes
// then says what that smallest plan needs: a cap of that size streams).
int stream_plan(const StreamSpec* s, StreamPlan* p);
void stream_plan_free(StreamPlan* p);
// The two device slots that spilled states compute in (scoring/score_stream.cu), kept here so that the CPU
// tests check the bookkeeping: which state each slot holds (-1: free) and the slot to take next (they
// alternate, so that one state's load overlaps the other's compute).
typedef struct {
    int state[2];
    int next;
} StreamRing;
void stream_ring_init(StreamRing* r);
// A slot for state i (the alternate one when the next is still in use); -1 when both are in use.
int stream_ring_take(StreamRing* r, int i);
// The slot that state i holds, now free; -1 when neither holds it. By the state, not by a remembered slot
// index: the same state taken twice in a row sits in the other slot the second time.
int stream_ring_give(StreamRing* r, int i);
// The spec of a scoring run (README "Streaming"): its layers' bf16 bytes, the engine's other buffers by
// shard_stage_bytes's upper estimate (without the embedding table, which stays on the host unless lm_head
// shares it, and with 256 MiB of workspaces instead of its 1 GiB for the CUDA context, which the peak
// does not count), a kl pass born per (format, enabled group) at the group's layer, and compute and bus
// estimates (STREAM_EST_*) for the batch choice. split: the bf16 hi + lo GEMM mode (its low halves of the
// activations and attention probabilities); emu: a format the engine emulates (quant_gpu_emulated: its
// fp32 fake-quantized weights of a whole layer and fp32 inputs and outputs). Allocates what stream_spec_free
// frees.
#define STREAM_EST_FLOPS 200e12 // sustained GEMM rate of an H100 / H200 on these passes
#define STREAM_EST_BW 20e9      // staged host->GPU copies from the checkpoint's mapping
// Given weights (GPTQ's) on the GPU per format, per byte of a bf16 layer: its int8 codes (half) and fp32 row
// scales (4 bytes a row: under 1/16 of the codes for linears of 64 inputs or more)
#define STREAM_GIVEN (0.5 * 17.0 / 16.0)
void stream_spec_model(StreamSpec* s, const Config* c, const Groups* gs, const Format* fmts, int nf,
                       int gradient, int T, int B, int windows, double cap, int split, int emu);
// The engine's buffers of the GEMM mode and emulated formats beyond shard_stage_bytes's estimate (above).
double stream_mode_bytes(const Config* c, int T, int B, int split, int emu);
// Bytes of layer l's weights as the GPU holds them, from the checkpoint: every tensor of the layer, in fp32
// where the engine holds its row of the architecture table so (arch_gpu_f32: the Gated DeltaNet's conv,
// decays and gated norm), else bf16 (the planner's shard_layer_bytes counts the same from the config;
// tests/test_stream_plan.c checks both against the safetensors headers on the dense, MoE and hybrid fixtures).
double stream_layer_bytes(const Model* m, int l);
void stream_spec_free(StreamSpec* s);
// Parses a --gpu-memory SIZE: bytes, or a number with K, M, G, T (powers of 1000) or KiB, MiB, GiB,
// TiB (powers of 1024), B optional. Returns -1 when malformed.
double stream_parse_size(const char* s);
// cmd's --gpu-memory SIZE in bytes (0 when size is NULL); a malformed size is exit 2 naming it.
double stream_parse_cap(const char* cmd, const char* size);

// The CUDA engine: bf16 weights resident on one GPU (or a range of layers of a pipeline stage),
// cuBLAS GEMMs with fp32 accumulation, fp32 norms and softmax statistics, and the linears of a
// quantization plan as exact int8 GEMMs. It runs passes; it never scores: scoring/score_gpu.cu does,
// through the plan and the backward hook, as scoring/score.c does with engine/forward.c. C interface.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif
#include "../kernels/quant.h"
#include "model.h"

typedef struct GpuEngine GpuEngine;

// Number of CUDA devices (0 when none or when built without CUDA).
int gpu_device_count(void);
// Makes device d current for this thread's next CUDA work.
void gpu_select_device(int d);
const char* gpu_name(void);
// The GEMM inputs of an engine: GEMM_BF16 plain bf16; GEMM_BF16X2 bf16 hi + lo pairs (two bf16 GEMMs,
// ~16-bit activations: matches the fp32 CPU engine); GEMM_FP16 fp16 activations and weights (one GEMM,
// 11-bit activations, fp32 GEMM outputs; forward passes with the fused attention kernel only:
// gpu_fp16_supported).
enum { GEMM_BF16 = 0, GEMM_BF16X2 = 1, GEMM_FP16 = 2 };
int gpu_fp16_supported(const Config* c, int T);
// Uploads the model (opened with model_open or model_load) for batches of up to B windows of T
// tokens, with GEMM inputs `gemm` (GEMM_*). GEMM_FP16 rewrites the linears' weights as fp16 (exact for
// every bf16 weight of magnitude 2^-14 to 65504; smaller ones keep fewer bits; larger ones become
// infinities, with a warning, and the scores NaN).
GpuEngine* gpu_engine_init(const Model* m, int T, int B, int gemm);
// A pipeline stage: decoder layers l0..l1-1 only (plus the embedding when l0 == 0, the final norm
// and lm_head when l1 is the last layer), with room for the layer inputs of `slots` batches.
GpuEngine* gpu_engine_init_layers(const Model* m, int T, int B, int gemm, int l0, int l1, int slots);
void gpu_engine_free(GpuEngine* e);
// GPTQ's walk through a dense model with one decoder layer resident: the engine of a single layer
// (gpu_engine_init_layers with l1 = l0 + 1) gets a second set of layer weights. gpu_engine_prefetch(e, l)
// fills it with layer l's weights, from any host thread, at once on a stream of its own: no work still
// queued may read that set (the layer before the resident one, when the set last held it, is done).
// gpu_engine_advance(e, l), after the prefetch returned, makes layer l the resident one.
void gpu_engine_walk_init(GpuEngine* e);
void gpu_engine_prefetch(GpuEngine* e, int l);
void gpu_engine_advance(GpuEngine* e, int l);
size_t gpu_peak_bytes(GpuEngine* e); // device memory in use at its peak (cudaMemGetInfo deltas)
// The engine's own device allocations (never freed before gpu_engine_free): unlike the peak above, blind to
// other processes on the GPU and to the CUDA libraries' workspaces.
size_t gpu_alloc_bytes(GpuEngine* e);
void* gpu_alloc(GpuEngine* e, size_t bytes); // device memory freed with the engine, counted in its peak
// With AUTOQ_GPU_PROFILE=1: the GPU time since the engine's last mark went to computing scores.
void gpu_mark_scores(GpuEngine* e);

// The decoder layers the engine holds: l0..l1-1.
void gpu_engine_layers(const GpuEngine* e, int* l0, int* l1);

// Given candidate weights (GPTQ's, README "GPTQ"): nf sets of int8 codes and per-row scales, set f
// taken for format f by the plan and the hooks instead of quantizing the bf16 weights. They stay on
// the device (nf x the engine's weights, one byte each), so a group's pass uploads nothing.
// gpu_given_init once, then gpu_given_set for every (set, linear) of the engine's layers that may be
// planned: codes (out, in) int8 and scales (out) fp32, host. An expert's codes go to their place in
// their layer's fused layout (moe_plan_set's), so a layer's experts are given all or none.
void gpu_given_init(GpuEngine* e, int nf);
void gpu_given_set(GpuEngine* e, int f, int idx, const int8_t* codes, const float* scales);

// The quantization plan of the next passes (QuantPlan on the CPU): linears[0..n) run with int8
// weight codes (given set f when the engine holds given weights, else quantized now with w) and
// inputs quantized on the fly with in.
// A group never spans layers; a sparse layer's experts are always planned all together.
void gpu_plan_set(GpuEngine* e, const int* linears, int n, QuantSpec w, QuantSpec in, int f);
void gpu_plan_clear(GpuEngine* e);
// The KV-cache plan of the next passes (README §4): full-attention layer l stores K (after k_norm and RoPE)
// and V fake-quantized with q (a KV-cache format's spec, each window's amax), attention reading them. Clears
// the linears' plan; gpu_plan_clear clears it.
void gpu_plan_kv(GpuEngine* e, int l, QuantSpec q);

// A whole recipe at once (search --refine's measurements): linear idx runs on w, its deployed weight (host
// (out, in) fp32, as the checkpoint loads it), with inputs fake-quantized by in (bits 0: none), an fp32 GEMM
// whatever the format; w NULL returns it to its bf16 weight. A sparse layer's experts are set all or none,
// one input spec. Needs fp32 activations (GEMM_BF16X2 or a gradient pass), not GEMM_FP16. Independent of
// the plan; gpu_recipe_clear returns every linear to bf16 (buffers kept).
void gpu_recipe_set(GpuEngine* e, int idx, const float* w, QuantSpec in);
void gpu_recipe_clear(GpuEngine* e);

// ---- forward (gpu_forward.cu), in parts so that a pipeline stage runs its share. Asynchronous on
// the device's default stream unless they return host data. ----
// Sets the precision mode (gradient passes keep fp32 activations; plain-bf16 kl passes keep bf16
// activations), clears the plan, uploads ids (nb, T); the first stage embeds them.
void gpu_pass_begin(GpuEngine* e, int gradient, const int* ids, int nb);
void gpu_pass_slot(GpuEngine* e, int k); // layer inputs of the next passes go to / come from slot k % slots
float* gpu_hidden(GpuEngine* e);         // (B*T, D) fp32 residual stream: what stages send / receive
// Layers from..l1-1 on the hidden state; save keeps each layer's input (prefix reuse, recompute).
void gpu_forward_layers(GpuEngine* e, int from, int nb, int save);
void gpu_restore_layer_input(GpuEngine* e, int l, int nb); // hidden state = saved input of layer l
// Last stage: final norm and lm_head into out (device, (nb*T, V)), or into the engine's own buffer
// when out is NULL; returns where the logits are.
float* gpu_head_logits(GpuEngine* e, int nb, float* out);
// Unquantized logits of nb windows (host ids (nb, T)) copied to host (nb*T, V).
void gpu_forward_logits(GpuEngine* e, const int* ids, int nb, float* logits);

// ---- activation-only backward (gpu_backward.cu) ----
// Called for every linear as the backward reaches it: dy = dL/dY (M, out), x its input (M, in) and
// y its output (M, out) in the unquantized pass; all device pointers. A sparse layer l's experts
// are seen as one block (README §6): linear = -1 - l (moe_hook_index), dy = dL/dY of the block
// output y (M, D), x the block's input m (M, D). Each full-attention layer l also calls it with linear =
// gpu_kv_hook_index(L, l, which) (< -L; L layers): dy = dL/dK (which 0, K after k_norm and RoPE) or dL/dV
// (which 1) as attention reads them, (M, KV heads x head_dim); x and y NULL (gpu_kv_quantized gives them).
typedef void (*GpuGradHook)(GpuEngine* e, int linear, const float* dy, const float* x, const float* y, int M,
                            void* ctx);
float* gpu_hidden_grad(GpuEngine* e); // its gradient (gradient passes)
// Last stage: logits, the loss per row and its gradient into the hidden grad (final norm's input).
void gpu_loss_backward(GpuEngine* e, int nb);
// Layers l1-1..l0 backpropagated from the hidden grad, each on the activations its forward kept
// (gpu_grad_keep_plan), or else recomputed from its saved input first.
void gpu_backward_layers(GpuEngine* e, int nb, GpuGradHook hook, void* ctx);
// Once, before the first gradient pass: which layers' forwards keep what their backward reads (README "GPU
// scoring"), so that gpu_backward_layers skips their recompute. AUTOQ_GRAD_KEEP=0 keeps none, 1 every layer
// that can (exit 2 when they do not fit), unset or auto as many as fit the GPU's free memory, or cap (bytes the
// run may use on the GPU, --gpu-memory; 0: none) less what the engine holds, after a margin. Only dense layers
// of an engine of every layer with one slot of saved inputs can (not sparse or hybrid layers, streamed or
// pipelined engines). Sets recomputed[l] = 1 (host, L entries, may be NULL; any thread) for the engine's layers
// still recomputed. Returns the number of layers kept.
int gpu_grad_keep_plan(GpuEngine* e, double cap, unsigned char* recomputed);
double gpu_loss(GpuEngine* e, int nb); // last stage: the summed per-window mean CE of the batch
// acc (M, out) int32 = Q(x) Q(W)^T of linear idx (inputs quantized with in; weights given set f, or
// quantized with w without given weights), and the per-token and per-channel scales: Yq = acc * sx * sw.
// For hooks, outside quantized passes.
const int32_t* gpu_linear_quantized(GpuEngine* e, int idx, const float* x, int M, QuantSpec w, QuantSpec in,
                                    int f, const float** sx, const float** sw);

// The same for an emulated format (quant_gpu_emulated): Yq (M, out) fp32 = fq(x) fq(W)^T, device memory
// valid until the next call.
const float* gpu_linear_fake(GpuEngine* e, int idx, const float* x, int M, QuantSpec w, QuantSpec in);

// For a KV-cache hook (which 0: K, 1: V of the layer being backpropagated): Yq (M, KV heads x head_dim) fp32 =
// the tensor fake-quantized with q per window (README §4), and *y the tensor itself; device memory valid until
// the next call.
const float* gpu_kv_quantized(GpuEngine* e, int which, int M, QuantSpec q, const float** y);
static inline int gpu_kv_hook_index(int L, int l, int which) { return -1 - L - 2 * l - which; }
static inline int gpu_kv_hook_layer(int L, int index) { return (-1 - L - index) / 2; }
static inline int gpu_kv_hook_which(int L, int index) { return (-1 - L - index) % 2; }

// Calls fn(e, linear, x16, M, ctx) with every dense linear's GEMM input x16 (M, in) bf16 (the high half
// in split mode) as a pass reaches it (GPTQ's Hessians); fn NULL stops it. While set, q, k and v run
// as three GEMMs (each is seen). fn returns 1 to skip the linear's GEMM, whose output nothing will
// read (the last linear of a pass whose result is dropped), else 0.
typedef int (*GpuCapture)(GpuEngine* e, int linear, const void* x16, int M, void* ctx);
void gpu_set_capture(GpuEngine* e, GpuCapture fn, void* ctx);
// Dense linear idx's weight (out, in) bf16 on the device, to be overwritten (GPTQ's sequential
// pipeline runs the next windows through a quantized layer).
void* gpu_linear_weight(GpuEngine* e, int idx);

// For the experts hook of sparse layer l: the block output Yq (M, D, device) with every expert's
// weights given set f (or quantized with w) and inputs quantized with in, on the routing of the pass
// (README §6).
const float* gpu_moe_quantized(GpuEngine* e, int l, int M, QuantSpec w, QuantSpec in, int f);
// Moves the tokens routed to each expert in the engine's reference passes (forward with save) since
// the last call into counts (n_sparse, E), rows in sparse-layer order (added; the engine's zeroed);
// layers outside the engine's range add nothing.
void gpu_expert_tokens(GpuEngine* e, long* counts);

#ifdef __cplusplus
}
#endif

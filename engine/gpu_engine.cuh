// The CUDA engine's state, shared by its parts: gpu_engine.cu (weights, buffers, the quantization
// plan), gpu_forward.cu (mirrors engine/forward.c) and gpu_backward.cu (mirrors engine/backward.c).
#pragma once
#include "../kernels/attention.h"
#include "../kernels/cuda_common.cuh"
#include "../kernels/embed.h"
#include "../kernels/gated_delta.h"
#include "../kernels/hybrid.h"
#include "../kernels/loss.h"
#include "../kernels/matmul.h"
#include "../kernels/moe.h"
#include "../kernels/quant.h"
#include "../kernels/rmsnorm.h"
#include "../kernels/rope.h"
#include "../kernels/swiglu.h"
#include "gpu.h"
#include "gpu_stream.h"

extern "C" {
#include "util.h"
}

// A decoder layer's weights on the device, filled from the architecture table (engine/arch.h): each row's
// LayerWeights field has its GpuLayer twin here (gpu_engine.cu's k_slots); NULL where the layer has no
// such part. bf16 unless said otherwise.
typedef struct {
    __nv_bfloat16 *w_in, *q, *k, *v, *o, *q_norm, *k_norm, *w_post, *gate, *up, *down;
    // a sparse layer (gate, up, down NULL): router (E, D); experts' gate and up rows (E, 2 I, D),
    // gate rows then up rows of each expert (transformers 5's gate_up_proj); down (E, D, I)
    __nv_bfloat16 *router, *ex_gu, *ex_down;
    // hybrid families: a Gated DeltaNet layer's linears (the four of Qwen3.5 or the two fused of Qwen3-Next)
    __nv_bfloat16 *gdn_qkv, *gdn_z, *gdn_b, *gdn_a, *gdn_qkvz, *gdn_ba, *gdn_out;
    float *gdn_conv, *gdn_alog, *gdn_dt, *gdn_norm; // fp32: read by kernels/gated_delta.cu
    // a sparse layer's shared expert and its gate (1, D)
    __nv_bfloat16 *sh_gate, *sh_up, *sh_down, *sh_w;
} GpuLayer;

// The hybrid families' state (gpu_forward.cu, gpu_backward.cu): Gated DeltaNet layers, the attention
// output gate, the shared expert. M = B T rows; C = 2 Hk dk + Hv dv, vd = Hv dv, Hv value heads.
typedef struct {
    int on;                               // the model has any of it
    float w_add;                          // 1: every RMSNorm but the gated one is x / rms(x) (1 + w)
    GdnGpuCache* cache;                   // the Gated DeltaNet core's intermediates (one layer at a time)
    float *qkv, *z, *b, *a, *out;         // (M, C), (M, vd), (M, Hv) x 2, (M, vd): the core's inputs, output
    float *raw, *raw2;                    // (M, C + vd), (M, 2 Hv): Qwen3-Next's fused projections' outputs
    int *map_qkv, *map_z, *map_b, *map_a; // their columns of q | k | v, z, b, a (forward.c's gdn_unfuse)
    __nv_bfloat16 *out16, *out_lo;        // (M, vd) out_proj's GEMM input
    float* att_g;                         // (M, H hd) attention output times sigmoid(gate)
    // the shared expert (M, Ish) x 3, its output (M, D), the gate per row (M)
    float *sh_g, *sh_u, *sh_act, *sh_y, *sh_s;
    __nv_bfloat16 *sh_act16, *sh_act_lo;
    // backward
    float *dqkv, *dz, *dgb, *dga, *dout, *draw, *draw2, *dqraw; // dqraw (M, 2 H hd): q_proj's rows
    float *dsh_y, *dsh_g, *dsh_u, *dsh_act;
} GpuHybrid;

// The sparse layers' working set (gpu_moe.cu), for the layer being run: its routing, the rows of
// its experts (assignments grouped by expert, as engine/forward.c's MoeRows), and the gradients.
// MK = B T K rows, I = moe_intermediate.
typedef struct {
    int E, K, I;
    float *logits, *probs, *w;                 // (M, E), (M, E), (M, K)
    int *idx, *order, *pos, *offs;             // (M K) x 3, (E+1) device: the sort runs on the device
    int* sort_scratch;                         // moe_sort_scratch(M K, E)
    int *h_offs, n_ex, *ex_id;                 // AUTOQ_MOE_GEMM=loop: offs on the host, the experts with rows
    __nv_bfloat16 *xs16, *xs_lo;               // (MK, D) gathered GEMM inputs
    __nv_bfloat16 *r16, *r_lo;                 // (M, D) the router's input as hi + lo (plain bf16 GEMMs)
    float *g, *u, *act, *ye;                   // (MK, I) x 3, (MK, D)
    __nv_bfloat16 *g16, *u16, *act16, *act_lo; // (MK, I)
    float *y, *yq;                             // (M, D) block output, and quantized (gradient hook)
    int8_t* xq;                                // (MK, max(D, I)) int8 rows of a quantized pass
    float *sx, *sxs;                           // (M) per-token scales, (MK) gathered
    int32_t* acc;                              // (MK, max(D, I)), AUTOQ_MOE_GEMM=loop only
    // the plan's experts (q_layer >= 0): codes and scales, same layouts as ex_gu, ex_down
    int q_layer;
    int8_t *wgu, *wdn;
    float *sgu, *sdn;
    // backward
    float *dw, *drl, *dye, *dxs, *dg, *du, *dact; // (M K), (M, E), (MK, D) x 2, (MK, I) x 3
    __nv_bfloat16 *d16, *d_lo;                    // (MK, max(D, I)) bf16 halves of a gradient
    int *tiles, nt;    // the grouped GEMMs' tiles (gpu_moe_tiles), (3, nt) with spare ones
    int grouped;       // the grouped kernels (AUTOQ_MOE_GEMM=loop: one cuBLAS GEMM per expert)
    long long* counts; // (L, E) device: tokens routed to each expert in the reference passes
    int count;         // the current pass counts
} GpuMoe;

// The activation buffers a layer's forward writes and its backward reads (layer_backward, the hook), (B*T,
// width): the normed inputs, q and k before and after their norm and RoPE, v, the attention output, the o_proj
// and down_proj outputs, the residual stream between the halves, the MLP's gate, up and SwiGLU, the norms'
// 1 / rms; the GEMM inputs of attention (q16, k16, v16, lo halves with split). The engine's own (one layer at
// a time) or a kept layer's (acts_bind points e->cur at either: a struct copy).
typedef struct {
    float *a, *q_lin, *k_lin, *v, *att, *y_o, *h_mid, *m_, *g, *u, *act, *y_down;
    float *a_rstd, *m_rstd, *q_rstd, *k_rstd;
    __nv_bfloat16 *q16, *k16, *v16, *q_lo, *k_lo, *v_lo;
} GpuActs;

struct GpuEngine {
    const Model* m;
    int T, B;
    int l0, l1; // the decoder layers held here (a pipeline stage holds a range); hsave is indexed l - l0
    cublasHandle_t blas;
    GpuLayer* layers;
    GpuLayer spare; // a walking engine's second set of layer weights (gpu_engine_walk_init)
    int spare_l;    // the layer gpu_engine_prefetch put there, or -1
    __nv_bfloat16 *embed, *lm_head, *norm;
    float *cos_t, *sin_t;
    int* ids;
    GpuActs cur; // the activation buffers the passes use: the engine's own, or a kept layer's (acts_bind)
    // other activations, (B*T, width); S (B, H, T, T) scores of every head at once
    float *h, *S, *lse, *logits, *hsave;
    // the gradient pass's logits, (head_rows, V): its lm_head runs in chunks of head_rows (whole windows),
    // so the logits and their gradient take a fraction of the (B*T, V) that kl's logits need
    float* glogits;
    int head_rows;
    float* hsave_all; // slots of hsave: a pipeline stage keeps the layer inputs of batches in flight
    int slots;
    // bf16 GEMM inputs; with split, *_lo holds x - bf16(x) so hi + lo carries ~16 mantissa bits
    __nv_bfloat16 *a16, *att16, *m16, *act16, *P;
    __nv_bfloat16 *a_lo, *att_lo, *m_lo, *act_lo, *P_lo;
    int split;
    int f16;       // GEMM_FP16: the linears' weights and every 16-bit GEMM input hold fp16 (no lo halves)
    int grad_mode; // keep each linear's own output (the gradient score needs Y)
    // bf16 activations between GEMMs (plain bf16 mode outside the gradient pass): only the
    // residual stream stays fp32, as in a bf16 PyTorch model with an fp32 residual
    int bf16_act;
    int flash;                // fused attention (plain bf16 inputs; kernels/flash.cu)
    __nv_bfloat16 *g16, *u16; // (B*T, I), bf16_act only
    __nv_bfloat16* qkv16;     // (B*T, (H + 2 KV) hd): q, k, v of the one-GEMM path (bf16_act, flash)
    // pointer arrays of the batched attention GEMMs, one per (buffer, layout); built once (a kept layer's
    // buffers add their own)
    const void** pa_base;
    int *pa_lay, n_pa, cap_pa;
    void*** pa_dev;
    int8_t* xq;
    float* sx;
    const float* xq_src; // what xq holds (gradient pass), quantized with xq_spec
    QuantSpec xq_spec;
    int32_t* acc;
    float* f_rstd; // the final norm's 1 / rms, kept from the forward for the backward
    // The gradient's kept activations (gpu_grad_keep_plan): kept[l - l0] non-NULL for a layer whose forward
    // writes what its backward reads into buffers of its own, so that gpu_backward_layers skips its recompute;
    // fresh[l - l0] once this pass's forward has written them. own: the engine's buffers (e->cur before any
    // acts_bind; acts_bind(e, -1) restores them).
    int keep_ok; // every layer, one slot of saved inputs: the forward and backward of a batch back to back
    int keep_planned;
    GpuActs own;
    GpuActs** kept;
    unsigned char* fresh;
    // gradients (allocated on the first gradient call)
    float *dh, *da, *dq, *dk, *dv, *dk_full, *dv_full, *datt, *dm, *dg, *du, *dact, *dP;
    __nv_bfloat16 *dy16, *dy_lo, *dlog16, *dlog_lo, *datt16, *datt_lo, *dS16, *dS_lo;
    double* loss_rows;
    // the quantization plan: linears q_idx[0..nq) run on int8 codes wq[j] (scales sw[j]), inputs
    // in_spec; the codes live one after another in the pools (sized for a whole layer)
    int8_t* wq_pool;
    float* sw_pool;
    int8_t** wq;
    float** sw;
    int *q_idx, nq, cap_q;
    QuantSpec in_spec;
    // given weights (gpu_given_init): set f of linear idx at gq[f * n_linears + idx] (codes) and
    // gsw[...] (scales), device; NULL where none was given. A sparse layer's experts point into one
    // fused block per set, laid out as moe_plan_set's pool.
    int n_given;
    int8_t** gq;
    float** gsw;
    // Emulated formats (quant_gpu_emulated: FP8, NVFP4, MXFP4, integer groups, weight-only): the plan's
    // weights fake-quantized to fp32 once (wf[j], in wf_pool), each input fake-quantized per call into xf,
    // then an fp32 GEMM (yf: its output when a bf16 one is wanted). Allocated on first use.
    int emu;
    long wmax;           // elements of the largest layer's linears: the pools' size
    float* wf_pool;      // (wmax)
    float** wf;          // (cap_q)
    float *xf, *yf;      // (M, widest linear)
    long xf_cap;         // elements of xf and yf
    const float* xf_src; // what xf holds (gradient pass), quantized with xf_spec
    QuantSpec xf_spec;
    // A whole recipe (gpu_recipe_set, search --refine): linear i runs, while ron[i], on the deployed fp32
    // weight rw[i] with inputs fake-quantized by rin[i], as an emulated linear (fp32 GEMM); every linear of the
    // model at once, each with its own format. rw[i] is allocated on the first set and kept. rxs: a sparse
    // layer's gathered expert rows, (B*T*K, max(D, I)) fp32.
    float** rw;
    unsigned char* ron;
    QuantSpec* rin;
    float* rxs;
    // the KV-cache plan (gpu_plan_kv): layer kv_layer (-1: none) stores K and V quantized with kv_spec;
    // kv_amax (B) each window's amax; kv_x, kv_q (M, KV hd) the gradient hook's tensors (on first use)
    int kv_layer;
    QuantSpec kv_spec;
    float *kv_amax, *kv_x, *kv_q;
    GpuMoe moe;     // sparse layers only (moe.E == 0 otherwise)
    GpuHybrid hy;   // hybrid families only (hy.on == 0 otherwise)
    GpuCapture cap; // gpu_set_capture: sees each dense linear's fp32 input
    void* cap_ctx;
    int up_now; // upload_to copies at once on its own stream (streaming: into a layer slot no queued work
                // reads)
    // layer_alloc carves a layer's buffers out of a stream slot (gpu_stream.cu) instead of allocating them:
    // from carve (carve_cap bytes), or, with carve NULL, only counts them (carve_off: the bytes taken)
    int carving;
    char* carve;
    size_t carve_off, carve_cap;
    size_t free0, min_free;
    size_t alloc_bytes; // what dalloc allocated (this process only, unlike the free-memory peak)
    struct Prof* prof;  // AUTOQ_GPU_PROFILE=1: time per part of the pass
    void** allocs;      // every cudaMalloc, freed by gpu_engine_free
    int n_allocs, cap_allocs;
};

// ---- optional timing by CUDA events (AUTOQ_GPU_PROFILE=1, for bench/): each mark charges the
// GPU time since the previous mark to a part; events are read back every PROF_N marks ----
enum {
    P_NORM,
    P_QKV,
    P_ROPE,
    P_ATT,
    P_O,
    P_ROUTE,
    P_GATE_UP,
    P_SWIGLU,
    P_DOWN,
    P_HEAD,
    P_GROUP,
    P_BWD,
    P_EX_BWD,
    P_EX_Q,
    P_SCORE,
    P_N
};
void prof_mark(GpuEngine* e, int part); // charges the GPU time since the previous mark to part
void prof_init(GpuEngine* e);
void prof_report(GpuEngine* e);

void* dalloc(GpuEngine* e, size_t bytes); // freed with the engine; counted in its peak
// A buffer of a layer's weights (layer_upload, moe_upload): dalloc's, or while e->carving the next piece of
// the stream slot being filled, at a multiple of GPU_SLOT_ALIGN bytes (a non-NULL placeholder, never to be
// written, when e->carve is NULL: the slot's size being measured).
void* layer_alloc(GpuEngine* e, size_t bytes);
// Given set f's codes of linear idx and its scales (*sw); exits when they were never given.
int8_t* given_codes(const GpuEngine* e, int f, int idx, float** sw);
const __nv_bfloat16* weight_of(const GpuEngine* e, int idx);            // linear idx's bf16 weight (out, in)
const StTensor* find_tensor(GpuEngine* e, const char* name, size_t* n); // exits 2 when missing
// Copies a checkpoint tensor to d as bf16 (converted from F16 / F32); returns d + its size.
__nv_bfloat16* upload_to(GpuEngine* e, const char* name, __nv_bfloat16* d);
// Layer l's weights into g (README "The GPU engine"): the norms and attention, and the dense MLP unless the
// layer is sparse (moe_upload). With `alloc`, g's buffers are allocated first (q, k and v rows in one, so
// one GEMM can compute all three); else they exist with the same shapes. `up`: UP_ORDERED after the
// default stream's queued work, UP_NOW at once on the uploading thread's stream; UP_NONE allocates only.
enum { UP_NONE, UP_ORDERED, UP_NOW };
void layer_upload(GpuEngine* e, int l, GpuLayer* g, int alloc, int up);
// Streaming (engine/gpu_stream.cu): an engine of every layer that uploads only those with res[l] (the
// others are copied into layer slots as passes reach them), without the embedding table unless lm_head
// shares it, and with one layer's saved inputs.
GpuEngine* engine_init_stream(const Model* m, int T, int B, int gemm, const unsigned char* res);
// The merged kl scorer (scoring/score_merge.cu): every layer, batch buffers for B windows (its merged batch),
// and the saved inputs of one layer (it runs a layer at a time, narrowing l0..l1 as streaming does).
GpuEngine* engine_init_merge(const Model* m, int T, int B, int gemm);

// Copies checkpoint tensor t to d as bf16; returns d + its size.
__nv_bfloat16* upload_tensor(GpuEngine* e, const StTensor* t, __nv_bfloat16* d);
// The widest linear dimension (rows or columns) among layers l0..l1-1: the shared activation buffers' width.
long widest_linear(const Model* m, int l0, int l1);
void hybrid_alloc(GpuEngine* e, int grad); // the hybrid families' buffers; with grad, the backward's

// gpu_forward.cu
void gemm_bf16(GpuEngine* e, float* y, __nv_bfloat16* y16, const __nv_bfloat16* hi, const __nv_bfloat16* lo,
               const __nv_bfloat16* w, int M, int K, int N, int accumulate);
// y (M, N) fp32 = (hi + lo) . W^T in bf16 whatever the mode: the router, which stays bf16 in the fp16 mode
void gemm_bf16_always(GpuEngine* e, float* y, const __nv_bfloat16* hi, const __nv_bfloat16* lo,
                      const __nv_bfloat16* w, int M, int K, int N);
// The fp16 mode's weights: t (n values) rewritten as fp16 in place, with a warning for values beyond range
void weight_to_f16(GpuEngine* e, __nv_bfloat16* t, size_t n, const char* what);
void gemm_i8(GpuEngine* e, int32_t* acc, const int8_t* xq, const int8_t* wq, int M, int K, int N);
// y (M, N) fp32 (+)= x (M, K) . w (N, K)^T, fp32 inputs and fp32 accumulation (no TF32): emulated formats.
void gemm_f32(GpuEngine* e, float* y, const float* x, const float* w, int M, int K, int N, int accumulate);
void emu_alloc(GpuEngine* e); // the emulation buffers, once
// The quantized linear: int8 inputs (from x, or from x16 when x is NULL) and weights j of the plan.
void linear(GpuEngine* e, int idx, float* y, __nv_bfloat16* y16, const float* x, const __nv_bfloat16* x16,
            const __nv_bfloat16* x_lo, const __nv_bfloat16* w, int M, int accumulate);
enum { LAY_Q, LAY_KV, LAY_S }; // buffer layouts of the batched attention GEMMs
void att_gemm(GpuEngine* e, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
              const __nv_bfloat16* A_hi, const __nv_bfloat16* A_lo, int lda, int la, const __nv_bfloat16* B_hi,
              const __nv_bfloat16* B_lo, int ldb, int lb, void* C, int c16, int ldc, int lc, int nb);
void layer_forward(GpuEngine* e, int l, int M);
// Points the engine's activation buffers at layer l's kept ones (a kept layer), or at its own (l < 0, or a
// layer recomputed).
void acts_bind(GpuEngine* e, int l);
// The KV-cache plan's quantization of layer l's K and V GEMM inputs (gpu_engine.cu): nothing unless planned.
void kv_cache_quant(GpuEngine* e, int l, int M, __nv_bfloat16* k16, __nv_bfloat16* k_lo, __nv_bfloat16* v16,
                    __nv_bfloat16* v_lo, const float* v, long ld);
// The hybrid families' parts of a layer (gpu_forward.cu): a Gated DeltaNet token mixer from e->cur.a into the
// residual stream; the shared expert of a sparse layer from e->cur.m_ (after moe_forward).
void gdn_forward(GpuEngine* e, int l, int M);
void shared_forward(GpuEngine* e, int l, int M);
void head(GpuEngine* e, int M, float* out);                 // final norm and lm_head of e->h
void head_norm(GpuEngine* e, int M);                        // the final norm alone, into the lm_head's inputs
void head_rows(GpuEngine* e, int r0, int rows, float* out); // lm_head of head_norm's rows r0 ..
// gpu_backward.cu
void grad_alloc(GpuEngine* e);
void linear_bwd(GpuEngine* e, float* dx, const float* dy, const __nv_bfloat16* w, int M, int K, int N,
                float beta);
void grad_linear(GpuEngine* e, GpuGradHook hook, void* ctx, int idx, const float* dy, const float* x,
                 const float* y, int M);
// gpu_moe.cu: the MLP half of a sparse layer, from e->cur.m_ / e->m16 (the post-attention norm's output)
void moe_alloc(GpuEngine* e, int grad); // grad: the backward's buffers
// into g, its buffers allocated first (layer_alloc) with alloc, only allocated with alloc < 0
void moe_upload(GpuEngine* e, int l, GpuLayer* g, int alloc);
void moe_plan_set(GpuEngine* e, int l, QuantSpec w, int f); // given set f, or quantized with w
void moe_forward(GpuEngine* e, int l, int M); // h += the block output (kept in moe.y in gradient passes)
void moe_backward(GpuEngine* e, int l, int M, GpuGradHook hook, void* ctx); // dh in, e->dm out

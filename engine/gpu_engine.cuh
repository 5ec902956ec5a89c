// The CUDA engine's state, shared by its parts: gpu_engine.cu (weights, buffers, the quantization
// plan), gpu_forward.cu (mirrors engine/forward.c) and gpu_backward.cu (mirrors engine/backward.c).
#pragma once
#include "../kernels/attention.h"
#include "../kernels/cuda_common.cuh"
#include "../kernels/embed.h"
#include "../kernels/loss.h"
#include "../kernels/matmul.h"
#include "../kernels/quant.h"
#include "../kernels/rmsnorm.h"
#include "../kernels/rope.h"
#include "../kernels/swiglu.h"
#include "gpu.h"

extern "C" {
#include "util.h"
}

typedef struct {
    __nv_bfloat16 *w_in, *q, *k, *v, *o, *q_norm, *k_norm, *w_post, *gate, *up, *down;
} GpuLayer;

struct GpuEngine {
    const Model* m;
    int T, B;
    int l0, l1; // the decoder layers held here (a pipeline stage holds a range); hsave is indexed l - l0
    cublasHandle_t blas;
    GpuLayer* layers;
    __nv_bfloat16 *embed, *lm_head, *norm;
    float *cos_t, *sin_t;
    int* ids;
    // activations, (B*T, width); S (B, H, T, T) scores of every head at once
    float *h, *a, *v, *att, *m_, *g, *u, *act, *S, *lse, *logits, *hsave;
    float* hsave_all; // slots of hsave: a pipeline stage keeps the layer inputs of batches in flight
    int slots;
    // bf16 GEMM inputs; with split, *_lo holds x - bf16(x) so hi + lo carries ~16 mantissa bits
    __nv_bfloat16 *a16, *q16, *k16, *v16, *att16, *m16, *act16, *P;
    __nv_bfloat16 *a_lo, *q_lo, *k_lo, *v_lo, *att_lo, *m_lo, *act_lo, *P_lo;
    int split;
    int grad_mode; // keep each linear's own output (the gradient score needs Y)
    // bf16 activations between GEMMs (plain bf16 mode outside the gradient pass): only the
    // residual stream stays fp32, as in a bf16 PyTorch model with an fp32 residual
    int bf16_act;
    int flash;                // fused attention (plain bf16 inputs; kernels/flash.cu)
    __nv_bfloat16 *g16, *u16; // (B*T, I), bf16_act only
    __nv_bfloat16* qkv16;     // (B*T, (H + 2 KV) hd): q, k, v of the one-GEMM path (bf16_act, flash)
    // pointer arrays of the batched attention GEMMs, one per (buffer, layout); built once
    const void* pa_base[32];
    int pa_lay[32], n_pa;
    void** pa_dev[32];
    int8_t* xq;
    float* sx;
    const float* xq_src; // what xq holds (gradient pass), quantized with xq_spec
    QuantSpec xq_spec;
    int32_t* acc;
    // kept from the forward for the backward (one layer at a time: layers are recomputed)
    float *q_lin, *k_lin, *q_rstd, *k_rstd, *a_rstd, *m_rstd, *f_rstd, *h_mid, *y_o, *y_down;
    // gradients (allocated on the first gradient call)
    float *dh, *da, *dq, *dk, *dv, *dk_full, *dv_full, *datt, *dm, *dg, *du, *dact, *dP;
    __nv_bfloat16 *dy16, *dy_lo, *dlog16, *dlog_lo, *datt16, *datt_lo, *dS16, *dS_lo;
    double* loss_rows;
    // the quantization plan: linears q_idx[0..nq) run on int8 codes wq[j] (scales sw[j]), inputs in_spec
    int8_t* wq[GPU_PLAN_MAX];
    float* sw[GPU_PLAN_MAX];
    int q_idx[GPU_PLAN_MAX], nq;
    QuantSpec in_spec;
    size_t free0, min_free;
    struct Prof* prof; // AUTOQ_GPU_PROFILE=1: time per part of the pass
    void** allocs;     // every cudaMalloc, freed by gpu_engine_free
    int n_allocs, cap_allocs;
};

// ---- optional timing by CUDA events (AUTOQ_GPU_PROFILE=1, for bench/): each mark charges the
// GPU time since the previous mark to a part; events are read back every PROF_N marks ----
enum { P_NORM, P_QKV, P_ROPE, P_ATT, P_O, P_GATE_UP, P_SWIGLU, P_DOWN, P_HEAD, P_GROUP, P_BWD, P_SCORE, P_N };
void prof_mark(GpuEngine* e, int part); // charges the GPU time since the previous mark to part
void prof_init(GpuEngine* e);
void prof_report(GpuEngine* e);

void* dalloc(GpuEngine* e, size_t bytes);                    // freed with the engine; counted in its peak
const __nv_bfloat16* weight_of(const GpuEngine* e, int idx); // linear idx's bf16 weight (out, in)

// gpu_forward.cu
void gemm_bf16(GpuEngine* e, float* y, __nv_bfloat16* y16, const __nv_bfloat16* hi, const __nv_bfloat16* lo,
               const __nv_bfloat16* w, int M, int K, int N, int accumulate);
void gemm_i8(GpuEngine* e, int j, int M, int K, int N);
enum { LAY_Q, LAY_KV, LAY_S }; // buffer layouts of the batched attention GEMMs
void att_gemm(GpuEngine* e, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
              const __nv_bfloat16* A_hi, const __nv_bfloat16* A_lo, int lda, int la, const __nv_bfloat16* B_hi,
              const __nv_bfloat16* B_lo, int ldb, int lb, void* C, int c16, int ldc, int lc, int nb);
void layer_forward(GpuEngine* e, int l, int M);
void head(GpuEngine* e, int M, float* out); // final norm and lm_head of e->h
// gpu_backward.cu
void grad_alloc(GpuEngine* e);

// The CUDA forward pass (README, "Forward pass"): mirrors engine/forward.c. fp32 residual stream;
// GEMMs on cuBLAS with bf16 inputs (hi + lo pairs with split) and fp32 accumulation; the linears of
// the quantization plan as exact int8 GEMMs.
#include <math.h>
#include <string.h>

#include "gpu_engine.cuh"

// y (M, N) fp32 (+)= (hi + lo) (M, K) . W (N, K)^T with bf16 inputs, fp32 accumulation, or y16 (M, N)
// bf16 = hi . W^T when y16 is given. The weights are exact in bf16, so with lo the product keeps ~16
// bits of the fp32 activations. In the fp16 mode hi and W hold fp16 values (and lo is NULL).
static void gemm_16(GpuEngine* e, float* y, __nv_bfloat16* y16, const __nv_bfloat16* hi,
                    const __nv_bfloat16* lo, const __nv_bfloat16* w, int M, int K, int N, int accumulate,
                    cudaDataType it) {
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    void* out = y16 ? (void*)y16 : (void*)y;
    cudaDataType ot = y16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasCheck(cublasGemmEx(e->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, it, K, hi, it, K, &beta, out,
                             ot, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (lo)
        cublasCheck(cublasGemmEx(e->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, it, K, lo, it, K, &one,
                                 out, ot, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void gemm_bf16(GpuEngine* e, float* y, __nv_bfloat16* y16, const __nv_bfloat16* hi, const __nv_bfloat16* lo,
               const __nv_bfloat16* w, int M, int K, int N, int accumulate) {
    if (e->f16 && (y16 || lo)) fail_other("internal: a bf16 output or low half in the fp16 mode");
    gemm_16(e, y, y16, hi, lo, w, M, K, N, accumulate, e->f16 ? CUDA_R_16F : CUDA_R_16BF);
}

void gemm_bf16_always(GpuEngine* e, float* y, const __nv_bfloat16* hi, const __nv_bfloat16* lo,
                      const __nv_bfloat16* w, int M, int K, int N) {
    gemm_16(e, y, NULL, hi, lo, w, M, K, N, 0, CUDA_R_16BF);
}

// acc (M, N) int32 = xq (M, K) . wq (N, K)^T: the quantized linear as an exact integer GEMM.
void gemm_i8(GpuEngine* e, int32_t* acc, const int8_t* xq, const int8_t* wq, int M, int K, int N) {
    const int32_t one = 1, zero = 0;
    cublasCheck(cublasGemmEx(e->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, wq, CUDA_R_8I, K, xq, CUDA_R_8I,
                             K, &zero, acc, CUDA_R_32I, N, CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT));
}

void gemm_f32(GpuEngine* e, float* y, const float* x, const float* w, int M, int K, int N, int accumulate) {
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    cublasCheck(cublasGemmEx(e->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, CUDA_R_32F, K, x, CUDA_R_32F,
                             K, &beta, y, CUDA_R_32F, N, CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT));
}

// An emulated format's linear: the input fake-quantized (from x, or from x16 when x is NULL) into xf, then
// the fp32 GEMM with the plan's fake-quantized weight j: the CPU's fake-quantized product up to the GEMM's
// summation order. A bf16 output goes through yf.
static void gemm_emulated(GpuEngine* e, float* y, __nv_bfloat16* y16, const float* x, const __nv_bfloat16* x16,
                          const float* wf, QuantSpec in, int M, int K, int N, int accumulate) {
    const float* xin = x;
    if (!x || in.bits) {
        if (x)
            gpu_fake_quant_f32(e->xf, x, M, K, in, 0);
        else
            gpu_fake_quant_bf16(e->xf, (const bf16_t*)x16, M, K, in, 0);
        xin = e->xf;
        e->xf_src = NULL;
    }
    if (!y16) {
        gemm_f32(e, y, xin, wf, M, K, N, accumulate);
        return;
    }
    if (accumulate) fail_other("internal: an accumulating bf16 output of an emulated linear");
    gemm_f32(e, e->yf, xin, wf, M, K, N, 0);
    gpu_split_bf16((bf16_t*)y16, NULL, e->yf, (long)M * N);
}

// The quantized linear: int8 inputs (from x, or from x16 when x is NULL) and weights, then per-token
// x per-channel scales into y (+)= or y16.
static void gemm_int8(GpuEngine* e, float* y, __nv_bfloat16* y16, const float* x, const __nv_bfloat16* x16,
                      int j, int M, int K, int N, int accumulate) {
    if (x)
        gpu_quant_rows_f32(e->xq, e->sx, x, M, K, e->in_spec);
    else
        gpu_quant_rows_bf16(e->xq, e->sx, (const bf16_t*)x16, M, K, e->in_spec);
    e->xq_src = NULL;
    gemm_i8(e, e->acc, e->xq, e->wq[j], M, K, N);
    gpu_dequant(y, (bf16_t*)y16, e->acc, e->sx, e->sw[j], M, N, accumulate);
}

// y (+)= linear idx of x, or y16 = it in bf16; x16 and x_lo are x as bf16 halves (x may be NULL
// with bf16 activations).
void linear(GpuEngine* e, int idx, float* y, __nv_bfloat16* y16, const float* x, const __nv_bfloat16* x16,
            const __nv_bfloat16* x_lo, const __nv_bfloat16* w, int M, int accumulate) {
    const Linear* l = &e->m->linears[idx];
    if (e->cap && e->cap(e, idx, x16, M, e->cap_ctx)) return;
    if (e->ron && e->ron[idx]) { // a recipe's linear (gpu_recipe_set)
        gemm_emulated(e, y, y16, x, x16, e->rw[idx], e->rin[idx], M, l->in, l->out, accumulate);
        return;
    }
    for (int j = 0; j < e->nq; j++)
        if (e->q_idx[j] == idx) { // an integer plan quantizes weights and inputs both (the scoring job checks)
            if (e->emu)
                gemm_emulated(e, y, y16, x, x16, e->wf[j], e->in_spec, M, l->in, l->out, accumulate);
            else
                gemm_int8(e, y, y16, x, x16, j, M, l->in, l->out, accumulate);
            return;
        }
    gemm_bf16(e, y, y16, x16, x_lo, w, M, l->in, l->out, accumulate);
}

// Where head h of window b starts in a buffer laid out as (B*T, H, hd) queries, (B*T, KV, hd)
// keys/values (query head h reads kv head h / rep) or (B, H, T, T) scores.
static long lay_offset(const GpuEngine* e, int lay, int b, int h) {
    const Config* c = &e->m->c;
    long T = e->T, hd = c->head_dim, rep = c->num_heads / c->num_kv_heads;
    if (lay == LAY_Q) return b * T * c->num_heads * hd + h * hd;
    if (lay == LAY_KV) return b * T * c->num_kv_heads * hd + h / rep * hd;
    return (b * (long)c->num_heads + h) * T * T;
}

// Device array of the B*H head pointers into base (cached: buffers never move).
static void* const* ptr_array(GpuEngine* e, const void* base, int elt, int lay) {
    if (!base) return NULL;
    for (int i = 0; i < e->n_pa; i++)
        if (e->pa_base[i] == base && e->pa_lay[i] == lay) return e->pa_dev[i];
    if (e->n_pa == e->cap_pa) {
        e->cap_pa = e->cap_pa ? 2 * e->cap_pa : 32;
        e->pa_base = (const void**)xrealloc(e->pa_base, sizeof(void*) * e->cap_pa);
        e->pa_lay = (int*)xrealloc(e->pa_lay, sizeof(int) * e->cap_pa);
        e->pa_dev = (void***)xrealloc(e->pa_dev, sizeof(void**) * e->cap_pa);
    }
    int H = e->m->c.num_heads, n = e->B * H;
    void** h = (void**)xmalloc(sizeof(void*) * n);
    for (int i = 0; i < n; i++) h[i] = (char*)base + elt * lay_offset(e, lay, i / H, i % H);
    void** d = (void**)dalloc(e, sizeof(void*) * n);
    cudaCheck(cudaMemcpy(d, h, sizeof(void*) * n, cudaMemcpyHostToDevice));
    free(h);
    e->pa_base[e->n_pa] = base;
    e->pa_lay[e->n_pa] = lay;
    e->pa_dev[e->n_pa++] = d;
    return d;
}

// C_h = op(A_h) op(B_h) for every head h of nb windows in one batched call per term; C fp32, or
// bf16 with c16. With split, products over hi + lo pairs are hi.hi + hi.lo + lo.hi (lo.lo is below
// 2^-16).
void att_gemm(GpuEngine* e, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
              const __nv_bfloat16* A_hi, const __nv_bfloat16* A_lo, int lda, int la, const __nv_bfloat16* B_hi,
              const __nv_bfloat16* B_lo, int ldb, int lb, void* C, int c16, int ldc, int lc, int nb) {
    const __nv_bfloat16* As[3] = {A_hi, A_hi, A_lo};
    const __nv_bfloat16* Bs[3] = {B_hi, B_lo, B_hi};
    void* const* Cp = ptr_array(e, C, c16 ? 2 : 4, lc);
    int n_terms = e->split ? 3 : 1;
    for (int i = 0; i < n_terms; i++) {
        float beta = i ? 1.0f : 0.0f;
        void* const* Ap = ptr_array(e, As[i], 2, la);
        void* const* Bp = ptr_array(e, Bs[i], 2, lb);
        cublasCheck(cublasGemmBatchedEx(e->blas, ta, tb, m, n, k, &alpha, (const void* const*)Ap, CUDA_R_16BF,
                                        lda, (const void* const*)Bp, CUDA_R_16BF, ldb, &beta, Cp,
                                        c16 ? CUDA_R_16BF : CUDA_R_32F, ldc, nb * e->m->c.num_heads,
                                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
}

// q, k, v bf16 with rows ldq, ldk elements apart: any layout for the fused kernel, e->cur.q16, e->cur.k16,
// e->cur.v16 for the cuBLAS path.
static void attention(GpuEngine* e, int M, const __nv_bfloat16* q, const __nv_bfloat16* k,
                      const __nv_bfloat16* v, long ldq, long ldk) {
    const Config* c = &e->m->c;
    int T = e->T, nb = M / T, H = c->num_heads, hd = c->head_dim;
    int qd = H * hd, kvd = c->num_kv_heads * hd;
    float scale = 1.0f / sqrtf((float)hd);
    if (e->flash) {
        gpu_flash_attention(e->bf16_act ? NULL : e->cur.att, (bf16_t*)e->att16, (const bf16_t*)q, ldq,
                            (const bf16_t*)k, (const bf16_t*)v, ldk, nb, T, H, c->num_kv_heads, hd, e->f16);
        return;
    }
    // S_h^T (col-major) = K_h . Q_h^T, then O_h^T = V_h^T . P_h^T
    att_gemm(e, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hd, scale, e->cur.k16, e->cur.k_lo, kvd, LAY_KV, e->cur.q16,
             e->cur.q_lo, qd, LAY_Q, e->S, 0, T, LAY_S, nb);
    gpu_causal_softmax((bf16_t*)e->P, (bf16_t*)e->P_lo, e->lse, e->S, nb * H, T);
    void* out = e->bf16_act ? (void*)e->att16 : (void*)e->cur.att;
    att_gemm(e, CUBLAS_OP_N, CUBLAS_OP_N, hd, T, T, 1.0f, e->cur.v16, e->cur.v_lo, kvd, LAY_KV, e->P, e->P_lo,
             T, LAY_S, out, e->bf16_act, qd, LAY_Q, nb);
}

// Whether the quantized group has a member among linears lo..hi.
static int quantized_in(const GpuEngine* e, int lo, int hi) {
    for (int j = 0; j < e->nq; j++)
        if (e->q_idx[j] >= lo && e->q_idx[j] <= hi) return 1;
    for (int i = lo; e->ron && i <= hi; i++)
        if (e->ron[i]) return 1;
    return 0;
}

// The MLP half of layer l: post-attention norm, gate/up, SwiGLU, down and its residual add; a sparse layer's
// experts (and shared expert) instead.
static void mlp_block(GpuEngine* e, int l, int M) {
    const Model* md = e->m;
    const Config* c = &md->c;
    const GpuLayer* w = &e->layers[l];
    int D = c->hidden_size, keep = e->grad_mode, a16 = e->bf16_act;
    long I = c->intermediate_size;
    float eps = c->rms_eps;
    gpu_rmsnorm_add(a16 ? NULL : e->cur.m_, (bf16_t*)e->m16, (bf16_t*)e->m_lo, e->cur.m_rstd, e->h,
                    (const bf16_t*)w->w_post, e->hy.w_add, M, D, eps, e->f16);
    prof_mark(e, P_NORM);
    if (model_layer_sparse(md, l)) {
        moe_forward(e, l, M);
        if (c->shared_inter) shared_forward(e, l, M);
        return;
    }
    int lg = model_lin(md, l, LIN_GATE, -1), lu = model_lin(md, l, LIN_UP, -1),
        ld = model_lin(md, l, LIN_DOWN, -1);
    if (a16) {
        linear(e, lg, NULL, e->g16, NULL, e->m16, NULL, w->gate, M, 0);
        linear(e, lu, NULL, e->u16, NULL, e->m16, NULL, w->up, M, 0);
        prof_mark(e, P_GATE_UP);
        gpu_swiglu_bf16((bf16_t*)e->act16, (const bf16_t*)e->g16, (const bf16_t*)e->u16, (long)M * I);
    } else {
        linear(e, lg, e->cur.g, NULL, e->cur.m_, e->m16, e->m_lo, w->gate, M, 0);
        linear(e, lu, e->cur.u, NULL, e->cur.m_, e->m16, e->m_lo, w->up, M, 0);
        prof_mark(e, P_GATE_UP);
        gpu_swiglu(e->cur.act, (bf16_t*)e->act16, (bf16_t*)e->act_lo, e->cur.g, e->cur.u, (long)M * I, e->f16);
    }
    prof_mark(e, P_SWIGLU);
    linear(e, ld, keep ? e->cur.y_down : e->h, NULL, a16 ? NULL : e->cur.act, e->act16, e->act_lo, w->down, M,
           !keep);
    if (keep) gpu_add(e->h, e->cur.y_down, (long)M * D);
    prof_mark(e, P_DOWN);
}

// The shared expert of sparse layer l (README §3): h += sigmoid(m . w_g) down(silu(gate(m)) * up(m)), after
// moe_forward added the routed experts' sum. Its linears keep their outputs (the gradient's Y).
void shared_forward(GpuEngine* e, int l, int M) {
    const Model* md = e->m;
    const GpuLayer* w = &e->layers[l];
    GpuHybrid* y = &e->hy;
    long Is = md->c.shared_inter;
    linear(e, model_lin(md, l, LIN_SH_GATE, -1), y->sh_g, NULL, e->cur.m_, e->m16, e->m_lo, w->sh_gate, M, 0);
    linear(e, model_lin(md, l, LIN_SH_UP, -1), y->sh_u, NULL, e->cur.m_, e->m16, e->m_lo, w->sh_up, M, 0);
    prof_mark(e, P_GATE_UP);
    gpu_swiglu(y->sh_act, (bf16_t*)y->sh_act16, (bf16_t*)y->sh_act_lo, y->sh_g, y->sh_u, M * Is, e->f16);
    prof_mark(e, P_SWIGLU);
    linear(e, model_lin(md, l, LIN_SH_DOWN, -1), y->sh_y, NULL, y->sh_act, y->sh_act16, y->sh_act_lo,
           w->sh_down, M, 0);
    gpu_shared_gate(e->h, y->sh_s, e->cur.m_, (const bf16_t*)w->sh_w, y->sh_y, M, md->c.hidden_size);
    prof_mark(e, P_DOWN);
}

// A Gated DeltaNet token mixer (README §3) from e->cur.a: its input projections (or Qwen3-Next's two fused
// ones, their columns then regrouped), the core (kernels/gated_delta.cu), and out_proj into y (+)= (accumulate:
// the residual add).
static void gdn_mixer(GpuEngine* e, int l, int M, float* y_out, int accumulate) {
    const Model* md = e->m;
    const Config* c = &md->c;
    const GpuLayer* w = &e->layers[l];
    GpuHybrid* y = &e->hy;
    long C = arch_dim(c, DIM_GCONV), vd = arch_dim(c, DIM_GVD), Hv = c->lin_hv;
    if (c->fam->fused_gdn) {
        linear(e, model_lin(md, l, LIN_GDN_QKVZ, -1), y->raw, NULL, e->cur.a, e->a16, e->a_lo, w->gdn_qkvz, M,
               0);
        linear(e, model_lin(md, l, LIN_GDN_BA, -1), y->raw2, NULL, e->cur.a, e->a16, e->a_lo, w->gdn_ba, M, 0);
        gpu_gather_cols(y->qkv, y->raw, y->map_qkv, M, (int)C, C + vd);
        gpu_gather_cols(y->z, y->raw, y->map_z, M, (int)vd, C + vd);
        gpu_gather_cols(y->b, y->raw2, y->map_b, M, (int)Hv, 2 * Hv);
        gpu_gather_cols(y->a, y->raw2, y->map_a, M, (int)Hv, 2 * Hv);
    } else {
        linear(e, model_lin(md, l, LIN_GDN_QKV, -1), y->qkv, NULL, e->cur.a, e->a16, e->a_lo, w->gdn_qkv, M, 0);
        linear(e, model_lin(md, l, LIN_GDN_Z, -1), y->z, NULL, e->cur.a, e->a16, e->a_lo, w->gdn_z, M, 0);
        linear(e, model_lin(md, l, LIN_GDN_B, -1), y->b, NULL, e->cur.a, e->a16, e->a_lo, w->gdn_b, M, 0);
        linear(e, model_lin(md, l, LIN_GDN_A, -1), y->a, NULL, e->cur.a, e->a16, e->a_lo, w->gdn_a, M, 0);
    }
    prof_mark(e, P_QKV);
    GdnShape sh = {e->T, c->lin_hk, c->lin_hv, c->lin_dk, c->lin_dv, c->lin_conv, c->rms_eps};
    GdnParams p = {w->gdn_conv, w->gdn_alog, w->gdn_dt, w->gdn_norm};
    gpu_gdn_forward(&sh, M / e->T, &p, y->qkv, y->z, y->b, y->a, y->out, y->cache);
    if (e->f16)
        gpu_round_f16((uint16_t*)y->out16, y->out, M * vd);
    else
        gpu_split_bf16((bf16_t*)y->out16, (bf16_t*)y->out_lo, y->out, M * vd);
    prof_mark(e, P_ATT);
    linear(e, model_lin(md, l, LIN_GDN_OUT, -1), y_out, NULL, y->out, y->out16, y->out_lo, w->gdn_out, M,
           accumulate);
}

// Full attention of a hybrid family (fp32 activations): q_proj's rows per head are hd query values then (with
// the output gate) hd gate values; the per-head norms take 1 + w and RoPE turns the first rotary_dim of each
// head; o_proj reads att * sigmoid(gate). Into y (+)=.
static void gated_attention(GpuEngine* e, int l, int M, float* y_out, int accumulate) {
    const Model* md = e->m;
    const Config* c = &md->c;
    const GpuLayer* w = &e->layers[l];
    GpuHybrid* y = &e->hy;
    int H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim, gated = c->fam->attn_gate;
    long qd = (long)H * hd, kvd = (long)KV * hd, qrows = arch_dim(c, DIM_QROWS);
    float eps = c->rms_eps;
    linear(e, model_lin(md, l, LIN_Q, -1), e->cur.q_lin, NULL, e->cur.a, e->a16, e->a_lo, w->q, M, 0);
    linear(e, model_lin(md, l, LIN_K, -1), e->cur.k_lin, NULL, e->cur.a, e->a16, e->a_lo, w->k, M, 0);
    linear(e, model_lin(md, l, LIN_V, -1), e->cur.v, NULL, e->cur.a, e->a16, e->a_lo, w->v, M, 0);
    prof_mark(e, P_QKV);
    gpu_qk_norm_rope_part((bf16_t*)e->cur.q16, (bf16_t*)e->cur.q_lo, e->cur.q_rstd, e->cur.q_lin, qrows,
                          gated ? 2 * hd : hd, (const bf16_t*)w->q_norm, y->w_add, e->cos_t, e->sin_t, M, e->T,
                          H, hd, c->rotary_dim, eps, e->f16);
    gpu_qk_norm_rope_part((bf16_t*)e->cur.k16, (bf16_t*)e->cur.k_lo, e->cur.k_rstd, e->cur.k_lin, kvd, hd,
                          (const bf16_t*)w->k_norm, y->w_add, e->cos_t, e->sin_t, M, e->T, KV, hd,
                          c->rotary_dim, eps, e->f16);
    if (e->f16)
        gpu_round_f16((uint16_t*)e->cur.v16, e->cur.v, M * kvd);
    else
        gpu_split_bf16((bf16_t*)e->cur.v16, (bf16_t*)e->cur.v_lo, e->cur.v, M * kvd);
    kv_cache_quant(e, l, M, e->cur.k16, e->cur.k_lo, e->cur.v16, e->cur.v_lo, e->cur.v,
                   kvd); // the cache stores them quantized
    prof_mark(e, P_ROPE);
    attention(e, M, e->cur.q16, e->cur.k16, e->cur.v16, qd, kvd);
    const float* x = e->cur.att;
    if (gated) {
        gpu_attn_gate(y->att_g, (bf16_t*)e->att16, (bf16_t*)e->att_lo, e->cur.att, e->cur.q_lin + hd, 2 * qd,
                      2 * hd, M, H, hd, e->f16);
        x = y->att_g;
    } else if (!e->flash) {
        gpu_split_bf16((bf16_t*)e->att16, (bf16_t*)e->att_lo, e->cur.att, M * qd);
    }
    prof_mark(e, P_ATT);
    linear(e, model_lin(md, l, LIN_O, -1), y_out, NULL, x, e->att16, e->att_lo, w->o, M, accumulate);
}

// One decoder layer of a hybrid family on e->h (fp32 activations, bf16 or hi + lo GEMM inputs): a Gated
// DeltaNet or full-attention token mixer, then the MLP half.
static void hybrid_layer_forward(GpuEngine* e, int l, int M) {
    const Config* c = &e->m->c;
    int D = c->hidden_size, keep = e->grad_mode;
    gpu_rmsnorm_add(e->cur.a, (bf16_t*)e->a16, (bf16_t*)e->a_lo, e->cur.a_rstd, e->h,
                    (const bf16_t*)e->layers[l].w_in, e->hy.w_add, M, D, c->rms_eps, e->f16);
    prof_mark(e, P_NORM);
    // the residual add rides on the GEMM (beta = 1) unless the gradient needs the linear's own output
    if (c->linear[l])
        gdn_mixer(e, l, M, keep ? e->cur.y_o : e->h, !keep);
    else
        gated_attention(e, l, M, keep ? e->cur.y_o : e->h, !keep);
    if (keep) {
        gpu_add(e->h, e->cur.y_o, (long)M * D);
        cudaCheck(cudaMemcpyAsync(e->cur.h_mid, e->h, 4L * M * D, cudaMemcpyDeviceToDevice));
    }
    prof_mark(e, P_O);
    mlp_block(e, l, M);
}

// One decoder layer on e->h (fp32 residual stream). With bf16_act the GEMM outputs and every other
// activation are bf16; otherwise fp32 with bf16 (hi + lo) copies as GEMM inputs.
void layer_forward(GpuEngine* e, int l, int M) {
    if (e->hy.on) {
        hybrid_layer_forward(e, l, M);
        return;
    }
    const Config* c = &e->m->c;
    const GpuLayer* w = &e->layers[l];
    int D = c->hidden_size, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    int base = e->m->lin0[l], keep = e->grad_mode, a16 = e->bf16_act;
    float eps = c->rms_eps;
    gpu_rmsnorm(a16 ? NULL : e->cur.a, (bf16_t*)e->a16, (bf16_t*)e->a_lo, e->cur.a_rstd, e->h,
                (const bf16_t*)w->w_in, M, D, eps, e->f16);
    prof_mark(e, P_NORM);
    const float* a = a16 ? NULL : e->cur.a;
    __nv_bfloat16 *q16 = e->cur.q16, *k16 = e->cur.k16, *v16 = e->cur.v16;
    long ldq = (long)H * hd, ldk = (long)KV * hd;
    if (a16) {
        if (e->flash && !e->cap &&
            !quantized_in(e, base + LIN_Q, base + LIN_V)) { // one GEMM: [q | k | v] per row
            long n = (long)(H + 2 * KV) * hd;
            gemm_bf16(e, NULL, e->qkv16, e->a16, NULL, w->q, M, D, (int)n, 0);
            q16 = e->qkv16, k16 = q16 + ldq, v16 = k16 + ldk, ldq = ldk = n;
        } else {
            linear(e, base + LIN_Q, NULL, q16, NULL, e->a16, NULL, w->q, M, 0);
            linear(e, base + LIN_K, NULL, k16, NULL, e->a16, NULL, w->k, M, 0);
            linear(e, base + LIN_V, NULL, v16, NULL, e->a16, NULL, w->v, M, 0);
        }
        prof_mark(e, P_QKV);
        gpu_qk_norm_rope_bf16((bf16_t*)q16, ldq, NULL, (const bf16_t*)w->q_norm, e->cos_t, e->sin_t, M, e->T, H,
                              hd, eps);
        gpu_qk_norm_rope_bf16((bf16_t*)k16, ldk, NULL, (const bf16_t*)w->k_norm, e->cos_t, e->sin_t, M, e->T,
                              KV, hd, eps);
    } else {
        linear(e, base + LIN_Q, e->cur.q_lin, NULL, a, e->a16, e->a_lo, w->q, M, 0);
        linear(e, base + LIN_K, e->cur.k_lin, NULL, a, e->a16, e->a_lo, w->k, M, 0);
        linear(e, base + LIN_V, e->cur.v, NULL, a, e->a16, e->a_lo, w->v, M, 0);
        prof_mark(e, P_QKV);
        // the rotated q, k are only GEMM inputs: bf16 halves, no fp32 copy
        gpu_qk_norm_rope(NULL, (bf16_t*)e->cur.q16, (bf16_t*)e->cur.q_lo, e->cur.q_rstd, e->cur.q_lin,
                         (const bf16_t*)w->q_norm, e->cos_t, e->sin_t, M, e->T, H, hd, eps, e->f16);
        gpu_qk_norm_rope(NULL, (bf16_t*)e->cur.k16, (bf16_t*)e->cur.k_lo, e->cur.k_rstd, e->cur.k_lin,
                         (const bf16_t*)w->k_norm, e->cos_t, e->sin_t, M, e->T, KV, hd, eps, e->f16);
        if (e->f16)
            gpu_round_f16((uint16_t*)e->cur.v16, e->cur.v, (long)M * KV * hd);
        else
            gpu_split_bf16((bf16_t*)e->cur.v16, (bf16_t*)e->cur.v_lo, e->cur.v, (long)M * KV * hd);
    }
    // the cache stores K and V quantized (a KV-cache plan); attention reads them
    kv_cache_quant(e, l, M, k16, a16 ? NULL : e->cur.k_lo, v16, a16 ? NULL : e->cur.v_lo, a16 ? NULL : e->cur.v,
                   ldk);
    prof_mark(e, P_ROPE);
    attention(e, M, q16, k16, v16, ldq, ldk);
    if (!a16 && !e->flash) gpu_split_bf16((bf16_t*)e->att16, (bf16_t*)e->att_lo, e->cur.att, (long)M * H * hd);
    prof_mark(e, P_ATT);
    // the residual adds ride on the GEMM (beta = 1) unless the gradient needs the linear's own output
    linear(e, base + LIN_O, keep ? e->cur.y_o : e->h, NULL, a16 ? NULL : e->cur.att, e->att16, e->att_lo, w->o,
           M, !keep);
    if (keep) {
        gpu_add(e->h, e->cur.y_o, (long)M * D);
        cudaCheck(cudaMemcpyAsync(e->cur.h_mid, e->h, 4L * M * D, cudaMemcpyDeviceToDevice));
    }
    prof_mark(e, P_O);
    mlp_block(e, l, M);
}

// Layers start..l1-1 on e->h; save: keep each layer's input in hsave, and in a gradient pass a kept layer's
// activations in its own buffers (gpu_grad_keep_plan).
// The saving pass is the unquantized reference of a batch: it counts the tokens of each expert.
static void forward_layers(GpuEngine* e, int start, int M, int save) {
    long D = e->m->c.hidden_size;
    int keep = save && e->grad_mode && e->kept;
    e->moe.count = save;
    for (int l = start; l < e->l1; l++) {
        if (save)
            cudaCheck(cudaMemcpyAsync(e->hsave + (long)(l - e->l0) * M * D, e->h, 4 * M * D,
                                      cudaMemcpyDeviceToDevice));
        if (keep) {
            acts_bind(e, l);
            e->fresh[l - e->l0] = e->kept[l - e->l0] != NULL;
        }
        layer_forward(e, l, M);
    }
    if (keep) acts_bind(e, -1); // the head and any later pass write the engine's own buffers
    e->moe.count = 0;
}

// The final norm and lm_head of e->h into out (the last stage).
void head_norm(GpuEngine* e, int M) {
    const Config* c = &e->m->c;
    gpu_rmsnorm_add(e->bf16_act ? NULL : e->cur.a, (bf16_t*)e->a16, (bf16_t*)e->a_lo, e->f_rstd, e->h,
                    (const bf16_t*)e->norm, e->hy.w_add, M, c->hidden_size, c->rms_eps, e->f16);
}

// out (rows, V) = lm_head of the normed rows r0 .. r0 + rows - 1 (head_norm's a16 / a_lo).
void head_rows(GpuEngine* e, int r0, int rows, float* out) {
    const Config* c = &e->m->c;
    long D = c->hidden_size;
    gemm_bf16(e, out, NULL, e->a16 + r0 * D, e->a_lo ? e->a_lo + r0 * D : NULL, e->lm_head, rows, (int)D,
              c->vocab_size, 0);
}

void head(GpuEngine* e, int M, float* out) {
    head_norm(e, M);
    head_rows(e, 0, M, out);
    prof_mark(e, P_HEAD);
}

static void forward_from(GpuEngine* e, int start, int M, float* out, int save) {
    forward_layers(e, start, M, save);
    head(e, M, out);
}

// Token ids to the device (every stage: the last needs the targets); the first stage embeds them.
static void embed(GpuEngine* e, const int* ids, int nb) {
    int M = nb * e->T;
    cudaCheck(cudaMemcpy(e->ids, ids, sizeof(int) * M, cudaMemcpyHostToDevice));
    if (e->l0 == 0) gpu_embed(e->h, (const bf16_t*)e->embed, e->ids, M, e->m->c.hidden_size);
}

// The mode of the next passes: nothing quantized; fp32 activations kept for a gradient pass, bf16
// activations in a plain-bf16 forward.
static void set_mode(GpuEngine* e, int gradient) {
    if (gradient && e->f16) fail_other("internal: a gradient pass in the fp16 GEMM mode");
    e->nq = 0;
    e->kv_layer = -1;
    e->grad_mode = gradient;
    e->bf16_act = !gradient && !e->split && !e->f16 && !e->hy.on; // the hybrid layers keep fp32 activations
}

// The (B*T, V) logits of the last stage, allocated on first use: a gradient-only run never needs them.
static float* full_logits(GpuEngine* e) {
    if (!e->logits) e->logits = (float*)dalloc(e, 4L * e->B * e->T * e->m->c.vocab_size);
    return e->logits;
}

extern "C" void gpu_forward_logits(GpuEngine* e, const int* ids, int nb, float* logits) {
    int M = nb * e->T;
    set_mode(e, 0);
    embed(e, ids, nb);
    forward_from(e, 0, M, full_logits(e), 0);
    cudaCheck(cudaMemcpy(logits, e->logits, sizeof(float) * M * e->m->c.vocab_size, cudaMemcpyDeviceToHost));
}

// ---- a pass in parts, so that a pipeline stage runs its share ----

extern "C" float* gpu_hidden(GpuEngine* e) { return e->h; }

extern "C" void gpu_pass_begin(GpuEngine* e, int gradient, const int* ids, int nb) {
    if (gradient && !e->dh) grad_alloc(e);
    if (e->fresh) memset(e->fresh, 0, e->l1 - e->l0); // kept activations are this pass's only once written
    set_mode(e, gradient);
    embed(e, ids, nb);
}

extern "C" void gpu_pass_slot(GpuEngine* e, int k) {
    e->hsave = e->hsave_all + (long)(k % e->slots) * e->B * e->T * e->m->c.hidden_size * (e->l1 - e->l0);
}

extern "C" void gpu_forward_layers(GpuEngine* e, int from, int nb, int save) {
    forward_layers(e, from, nb * e->T, save);
}

// h = the input of layer l saved by the last forward with save (prefix reuse).
extern "C" void gpu_restore_layer_input(GpuEngine* e, int l, int nb) {
    long M = (long)nb * e->T, D = e->m->c.hidden_size;
    cudaCheck(cudaMemcpyAsync(e->h, e->hsave + (l - e->l0) * M * D, 4 * M * D, cudaMemcpyDeviceToDevice));
    prof_mark(e, P_GROUP);
}

extern "C" float* gpu_head_logits(GpuEngine* e, int nb, float* out) {
    if (!out) out = full_logits(e);
    head(e, nb * e->T, out);
    return out;
}

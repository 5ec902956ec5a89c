// The CUDA forward pass and the KL scorer (SPEC §3, §6). Mirrors
// engine/forward.c and scoring/score.c; tests/test_gpu.c compares them.
#include <math.h>
#include <string.h>

#include "../kernels/cuda_common.cuh"
#include "../kernels/gpu.h"
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
    cublasHandle_t blas;
    GpuLayer* layers;
    __nv_bfloat16 *embed, *lm_head, *norm;
    float *cos_t, *sin_t;
    int* ids;
    // activations, (B*T, width)
    float *h, *a, *q, *k, *v, *att, *m_, *g, *u, *act, *S, *lse, *logits, *ref_logits, *hsave;
    // bf16 GEMM inputs; with split, *_lo holds x - bf16(x) so hi + lo carries ~16 mantissa bits
    __nv_bfloat16 *a16, *q16, *k16, *v16, *att16, *m16, *act16, *P;
    __nv_bfloat16 *a_lo, *q_lo, *k_lo, *v_lo, *att_lo, *m_lo, *act_lo, *P_lo;
    int split;
    int8_t* xq;
    float* sx;
    int32_t* acc;
    // kept from the forward for the backward (one layer at a time: layers are recomputed)
    float *q_lin, *k_lin, *q_rstd, *k_rstd, *a_rstd, *m_rstd, *f_rstd, *h_mid, *y_o, *y_down;
    // gradients (allocated on the first gradient call)
    float *dh, *da, *dq, *dk, *dv, *datt, *dm, *dg, *du, *dact, *dP, *yq;
    __nv_bfloat16 *dy16, *dy_lo, *dlog16, *dlog_lo, *datt16, *datt_lo, *dS16, *dS_lo;
    double *loss_rows, *grad_scratch;
    // the quantized group: up to three members
    int8_t* wq[3];
    float* sw[3];
    int q_idx[3], nq; // linear indices now quantized
    QuantSpec in_spec;
    double *dscore, *kl_scratch;
    size_t free0, min_free;
    void** allocs; // every cudaMalloc, freed by gpu_engine_free
    int n_allocs, cap_allocs;
};

static void* dalloc(GpuEngine* e, size_t bytes) {
    void* p;
    if (e->n_allocs == e->cap_allocs) {
        e->cap_allocs = e->cap_allocs ? 2 * e->cap_allocs : 256;
        e->allocs = (void**)realloc(e->allocs, sizeof(void*) * e->cap_allocs);
        if (!e->allocs) fail_other("out of memory");
    }
    cudaCheck(cudaMalloc(&p, bytes ? bytes : 16));
    e->allocs[e->n_allocs++] = p;
    size_t fr, tot;
    cudaCheck(cudaMemGetInfo(&fr, &tot));
    if (fr < e->min_free) e->min_free = fr;
    return p;
}

// Uploads a checkpoint tensor as bf16 (BF16 as is, F16/F32 converted).
static __nv_bfloat16* upload(GpuEngine* e, const char* name) {
    const StTensor* t = st_find(&e->m->ck, name);
    if (!t) fail_input("%s: tensor '%s' missing", e->m->dir, name);
    size_t n = t->nbytes / (t->dtype == DT_F32 ? 4 : 2);
    __nv_bfloat16* d = (__nv_bfloat16*)dalloc(e, n * 2);
    if (t->dtype == DT_BF16) {
        cudaCheck(cudaMemcpy(d, t->data, n * 2, cudaMemcpyHostToDevice));
        return d;
    }
    float* f = (float*)xmalloc(n * 4);
    st_to_f32(t, f);
    uint16_t* h = (uint16_t*)xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = f32_to_bf16(f[i]);
    cudaCheck(cudaMemcpy(d, h, n * 2, cudaMemcpyHostToDevice));
    free(f);
    free(h);
    return d;
}

extern "C" int gpu_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
    return n;
}

extern "C" const char* gpu_name(void) {
    static cudaDeviceProp p;
    cudaCheck(cudaGetDeviceProperties(&p, 0));
    return p.name;
}

extern "C" GpuEngine* gpu_engine_init(const Model* m, int T, int B, int split) {
    GpuEngine* e = (GpuEngine*)xcalloc(1, sizeof(GpuEngine));
    e->split = split;
    const Config* c = &m->c;
    e->m = m;
    e->T = T;
    e->B = B;
    size_t tot;
    cudaCheck(cudaMemGetInfo(&e->free0, &tot));
    e->min_free = e->free0;
    cublasCheck(cublasCreate(&e->blas));
    char name[256];
    const char* P = c->prefix;
    e->layers = (GpuLayer*)xcalloc(c->num_layers, sizeof(GpuLayer));
    snprintf(name, sizeof(name), "%sembed_tokens.weight", P);
    e->embed = upload(e, name);
    snprintf(name, sizeof(name), "%snorm.weight", P);
    e->norm = upload(e, name);
    e->lm_head = st_find(&m->ck, "lm_head.weight") ? upload(e, "lm_head.weight") : e->embed;
    for (int l = 0; l < c->num_layers; l++) {
        GpuLayer* g = &e->layers[l];
        __nv_bfloat16** dst[11] = {&g->w_in,   &g->q,      &g->k,    &g->v,  &g->o,   &g->q_norm,
                                   &g->k_norm, &g->w_post, &g->gate, &g->up, &g->down};
        const char* part[11] = {
            "input_layernorm",  "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
            "self_attn.o_proj", "self_attn.q_norm", "self_attn.k_norm", "post_attention_layernorm",
            "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
        for (int i = 0; i < 11; i++) {
            snprintf(name, sizeof(name), "%slayers.%d.%s.weight", P, l, part[i]);
            *dst[i] = upload(e, name);
        }
    }
    // RoPE table as in kernels/rope.c (fp32 inv_freq, fp32 angle).
    RopeTable r;
    rope_init(&r, T, c->head_dim, c->rope_theta);
    size_t rb = sizeof(float) * T * (c->head_dim / 2);
    e->cos_t = (float*)dalloc(e, rb);
    e->sin_t = (float*)dalloc(e, rb);
    cudaCheck(cudaMemcpy(e->cos_t, r.cos, rb, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(e->sin_t, r.sin, rb, cudaMemcpyHostToDevice));
    rope_free(&r);
    long M = (long)B * T, D = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    long qd = (long)c->num_heads * c->head_dim, kvd = (long)c->num_kv_heads * c->head_dim;
    long mx = I > qd ? I : qd;
    mx = mx > D ? mx : D;
    e->ids = (int*)dalloc(e, sizeof(int) * M);
    e->h = (float*)dalloc(e, 4 * M * D);
    e->a = (float*)dalloc(e, 4 * M * D);
    e->q = (float*)dalloc(e, 4 * M * qd);
    e->k = (float*)dalloc(e, 4 * M * kvd);
    e->v = (float*)dalloc(e, 4 * M * kvd);
    e->att = (float*)dalloc(e, 4 * M * qd);
    e->m_ = (float*)dalloc(e, 4 * M * D);
    e->g = (float*)dalloc(e, 4 * M * I);
    e->u = (float*)dalloc(e, 4 * M * I);
    e->act = (float*)dalloc(e, 4 * M * I);
    e->S = (float*)dalloc(e, 4L * c->num_heads * T * T);
    e->P = (__nv_bfloat16*)dalloc(e, 2L * c->num_heads * T * T);
    e->lse = (float*)dalloc(e, 4L * c->num_heads * T);
    e->logits = (float*)dalloc(e, 4 * M * V);
    e->ref_logits = (float*)dalloc(e, 4 * M * V);
    e->hsave = (float*)dalloc(e, 4 * M * D * c->num_layers);
    e->a16 = (__nv_bfloat16*)dalloc(e, 2 * M * D);
    e->q16 = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
    e->k16 = (__nv_bfloat16*)dalloc(e, 2 * M * kvd);
    e->v16 = (__nv_bfloat16*)dalloc(e, 2 * M * kvd);
    e->att16 = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
    e->m16 = (__nv_bfloat16*)dalloc(e, 2 * M * D);
    e->act16 = (__nv_bfloat16*)dalloc(e, 2 * M * I);
    if (split) {
        e->a_lo = (__nv_bfloat16*)dalloc(e, 2 * M * D);
        e->q_lo = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
        e->k_lo = (__nv_bfloat16*)dalloc(e, 2 * M * kvd);
        e->v_lo = (__nv_bfloat16*)dalloc(e, 2 * M * kvd);
        e->att_lo = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
        e->m_lo = (__nv_bfloat16*)dalloc(e, 2 * M * D);
        e->act_lo = (__nv_bfloat16*)dalloc(e, 2 * M * I);
        e->P_lo = (__nv_bfloat16*)dalloc(e, 2L * c->num_heads * T * T);
    }
    e->xq = (int8_t*)dalloc(e, M * mx);
    e->sx = (float*)dalloc(e, 4 * M);
    e->kl_scratch = (double*)dalloc(e, 8 * M);
    e->q_lin = (float*)dalloc(e, 4 * M * qd);
    e->k_lin = (float*)dalloc(e, 4 * M * kvd);
    e->q_rstd = (float*)dalloc(e, 4 * M * c->num_heads);
    e->k_rstd = (float*)dalloc(e, 4 * M * c->num_kv_heads);
    e->a_rstd = (float*)dalloc(e, 4 * M);
    e->m_rstd = (float*)dalloc(e, 4 * M);
    e->f_rstd = (float*)dalloc(e, 4 * M);
    e->h_mid = (float*)dalloc(e, 4 * M * D);
    e->y_o = (float*)dalloc(e, 4 * M * D);
    e->y_down = (float*)dalloc(e, 4 * M * D);
    e->acc = (int32_t*)dalloc(e, 4 * M * mx);
    long wmax = 0;
    for (int i = 0; i < m->n_linears; i++) {
        long n = (long)m->linears[i].out * m->linears[i].in;
        wmax = n > wmax ? n : wmax;
    }
    for (int j = 0; j < 3; j++) {
        e->wq[j] = (int8_t*)dalloc(e, wmax);
        e->sw[j] = (float*)dalloc(e, 4 * mx);
    }
    return e;
}

extern "C" void gpu_engine_free(GpuEngine* e) {
    cublasDestroy(e->blas);
    for (int i = 0; i < e->n_allocs; i++) cudaCheck(cudaFree(e->allocs[i]));
    free(e->allocs);
    free(e->layers);
    free(e);
}

extern "C" size_t gpu_peak_bytes(GpuEngine* e) { return e->free0 - e->min_free; }

// y (M, N) fp32 = (hi + lo) (M, K) . W (N, K)^T with bf16 inputs, fp32 accumulation. The
// weights are exact in bf16, so with lo the product keeps ~16 bits of the fp32 activations.
static void gemm_bf16(GpuEngine* e, float* y, const __nv_bfloat16* hi, const __nv_bfloat16* lo,
                      const __nv_bfloat16* w, int M, int K, int N) {
    const float one = 1.0f, zero = 0.0f;
    cublasCheck(cublasGemmEx(e->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, CUDA_R_16BF, K, hi,
                             CUDA_R_16BF, K, &zero, y, CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (lo)
        cublasCheck(cublasGemmEx(e->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, CUDA_R_16BF, K, lo,
                                 CUDA_R_16BF, K, &one, y, CUDA_R_32F, N, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
}

// The quantized linear as an exact integer GEMM: int8 inputs and weights,
// int32 accumulation, then per-token x per-channel scales.
static void gemm_int8(GpuEngine* e, float* y, const float* x, int j, int M, int K, int N) {
    gpu_quant_rows_f32(e->xq, e->sx, x, M, K, e->in_spec);
    const int32_t one = 1, zero = 0;
    cublasCheck(cublasGemmEx(e->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, e->wq[j], CUDA_R_8I, K, e->xq,
                             CUDA_R_8I, K, &zero, e->acc, CUDA_R_32I, N, CUBLAS_COMPUTE_32I,
                             CUBLAS_GEMM_DEFAULT));
    gpu_dequant(y, e->acc, e->sx, e->sw[j], M, N);
}

static void linear(GpuEngine* e, int idx, float* y, const float* x, const __nv_bfloat16* x16,
                   const __nv_bfloat16* x_lo, const __nv_bfloat16* w, int M) {
    const Linear* l = &e->m->linears[idx];
    for (int j = 0; j < e->nq; j++)
        if (e->q_idx[j] == idx) { // formats have both quantizers here (checked in score_job_load)
            gemm_int8(e, y, x, j, M, l->in, l->out);
            return;
        }
    gemm_bf16(e, y, x16, x_lo, w, M, l->in, l->out);
}

// One batched call per (sample, r): heads kv*rep + r of every kv head. With split,
// X Y^T over hi + lo pairs is hi.hi + hi.lo + lo.hi (lo.lo is below 2^-16).
static void att_gemm(GpuEngine* e, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                     const __nv_bfloat16* A_hi, const __nv_bfloat16* A_lo, long lda, long sa,
                     const __nv_bfloat16* B_hi, const __nv_bfloat16* B_lo, long ldb, long sb, float* C,
                     long ldc, long sc, int batch, float beta0) {
    const __nv_bfloat16* As[3] = {A_hi, A_hi, A_lo};
    const __nv_bfloat16* Bs[3] = {B_hi, B_lo, B_hi};
    int n_terms = e->split ? 3 : 1;
    for (int i = 0; i < n_terms; i++) {
        float beta = i ? 1.0f : beta0;
        cublasCheck(cublasGemmStridedBatchedEx(e->blas, ta, tb, m, n, k, &alpha, As[i], CUDA_R_16BF, lda, sa,
                                               Bs[i], CUDA_R_16BF, ldb, sb, &beta, C, CUDA_R_32F, ldc, sc,
                                               batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
}

static void attention(GpuEngine* e, int M) {
    const Config* c = &e->m->c;
    int T = e->T, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim, rep = H / KV;
    long qd = (long)H * hd, kvd = (long)KV * hd, TT = (long)T * T;
    float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < M / T; b++) {
        long qo = (long)b * T * qd, ko = (long)b * T * kvd;
        for (int r = 0; r < rep; r++) // S^T (col-major) = K_h . Q_h^T
            att_gemm(e, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hd, scale, e->k16 + ko, e->split ? e->k_lo + ko : NULL,
                     kvd, hd, e->q16 + qo + (long)r * hd, e->split ? e->q_lo + qo + (long)r * hd : NULL, qd,
                     (long)rep * hd, e->S + (long)r * TT, T, (long)rep * TT, KV, 0.0f);
        gpu_causal_softmax((bf16_t*)e->P, (bf16_t*)e->P_lo, e->lse, e->S, H, T);
        for (int r = 0; r < rep; r++) // O_h^T (col-major) = V_h^T . P_h^T
            att_gemm(e, CUBLAS_OP_N, CUBLAS_OP_N, hd, T, T, 1.0f, e->v16 + ko, e->split ? e->v_lo + ko : NULL,
                     kvd, hd, e->P + (long)r * TT, e->split ? e->P_lo + (long)r * TT : NULL, T, (long)rep * TT,
                     e->att + qo + (long)r * hd, qd, (long)rep * hd, KV, 0.0f);
    }
}

static void layer_forward(GpuEngine* e, int l, int M) {
    const Config* c = &e->m->c;
    const GpuLayer* w = &e->layers[l];
    int D = c->hidden_size, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    long I = c->intermediate_size;
    int base = l * LIN_PER_LAYER;
    gpu_rmsnorm(e->a, e->a_rstd, e->h, (const bf16_t*)w->w_in, M, D, c->rms_eps);
    gpu_split_bf16((bf16_t*)e->a16, (bf16_t*)e->a_lo, e->a, (long)M * D);
    linear(e, base + LIN_Q, e->q_lin, e->a, e->a16, e->a_lo, w->q, M);
    linear(e, base + LIN_K, e->k_lin, e->a, e->a16, e->a_lo, w->k, M);
    linear(e, base + LIN_V, e->v, e->a, e->a16, e->a_lo, w->v, M);
    // q_lin, k_lin stay for the backward; the norm and RoPE work on copies
    cudaCheck(cudaMemcpyAsync(e->q, e->q_lin, 4L * M * H * hd, cudaMemcpyDeviceToDevice));
    cudaCheck(cudaMemcpyAsync(e->k, e->k_lin, 4L * M * KV * hd, cudaMemcpyDeviceToDevice));
    gpu_qk_norm_rope(e->q, e->q_rstd, (const bf16_t*)w->q_norm, e->cos_t, e->sin_t, M, e->T, H, hd, c->rms_eps);
    gpu_qk_norm_rope(e->k, e->k_rstd, (const bf16_t*)w->k_norm, e->cos_t, e->sin_t, M, e->T, KV, hd,
                     c->rms_eps);
    gpu_split_bf16((bf16_t*)e->q16, (bf16_t*)e->q_lo, e->q, (long)M * H * hd);
    gpu_split_bf16((bf16_t*)e->k16, (bf16_t*)e->k_lo, e->k, (long)M * KV * hd);
    gpu_split_bf16((bf16_t*)e->v16, (bf16_t*)e->v_lo, e->v, (long)M * KV * hd);
    attention(e, M);
    gpu_split_bf16((bf16_t*)e->att16, (bf16_t*)e->att_lo, e->att, (long)M * H * hd);
    linear(e, base + LIN_O, e->y_o, e->att, e->att16, e->att_lo, w->o, M);
    gpu_add(e->h, e->y_o, (long)M * D);
    cudaCheck(cudaMemcpyAsync(e->h_mid, e->h, 4L * M * D, cudaMemcpyDeviceToDevice));
    gpu_rmsnorm(e->m_, e->m_rstd, e->h, (const bf16_t*)w->w_post, M, D, c->rms_eps);
    gpu_split_bf16((bf16_t*)e->m16, (bf16_t*)e->m_lo, e->m_, (long)M * D);
    linear(e, base + LIN_GATE, e->g, e->m_, e->m16, e->m_lo, w->gate, M);
    linear(e, base + LIN_UP, e->u, e->m_, e->m16, e->m_lo, w->up, M);
    gpu_swiglu(e->act, e->g, e->u, (long)M * I);
    gpu_split_bf16((bf16_t*)e->act16, (bf16_t*)e->act_lo, e->act, (long)M * I);
    linear(e, base + LIN_DOWN, e->y_down, e->act, e->act16, e->act_lo, w->down, M);
    gpu_add(e->h, e->y_down, (long)M * D);
}

// Layers start..L-1 from e->h, then the final norm and lm_head into out.
static void forward_from(GpuEngine* e, int start, int M, float* out, int save) {
    const Config* c = &e->m->c;
    long D = c->hidden_size;
    for (int l = start; l < c->num_layers; l++) {
        if (save)
            cudaCheck(cudaMemcpyAsync(e->hsave + (long)l * M * D, e->h, 4 * M * D, cudaMemcpyDeviceToDevice));
        layer_forward(e, l, M);
    }
    gpu_rmsnorm(e->a, e->f_rstd, e->h, (const bf16_t*)e->norm, M, (int)D, c->rms_eps);
    gpu_split_bf16((bf16_t*)e->a16, (bf16_t*)e->a_lo, e->a, M * D);
    gemm_bf16(e, out, e->a16, e->a_lo, e->lm_head, M, (int)D, c->vocab_size);
}

static void embed(GpuEngine* e, const int* ids, int nb) {
    int M = nb * e->T;
    cudaCheck(cudaMemcpy(e->ids, ids, sizeof(int) * M, cudaMemcpyHostToDevice));
    gpu_embed(e->h, (const bf16_t*)e->embed, e->ids, M, e->m->c.hidden_size);
}

extern "C" void gpu_forward_logits(GpuEngine* e, const int* ids, int nb, float* logits) {
    int M = nb * e->T;
    e->nq = 0;
    embed(e, ids, nb);
    forward_from(e, 0, M, e->logits, 0);
    cudaCheck(cudaMemcpy(logits, e->logits, sizeof(float) * M * e->m->c.vocab_size, cudaMemcpyDeviceToHost));
}

static const __nv_bfloat16* weight_of(GpuEngine* e, int idx) {
    const GpuLayer* w = &e->layers[idx / LIN_PER_LAYER];
    const __nv_bfloat16* ws[LIN_PER_LAYER] = {w->q, w->k, w->v, w->o, w->gate, w->up, w->down};
    return ws[idx % LIN_PER_LAYER];
}

static void set_group(GpuEngine* e, const Group* g, const Format* f) {
    e->nq = g->n_members;
    e->in_spec = f->in;
    for (int j = 0; j < g->n_members; j++) {
        int idx = g->members[j];
        const Linear* l = &e->m->linears[idx];
        e->q_idx[j] = idx;
        gpu_quant_rows_bf16(e->wq[j], e->sw[j], (const bf16_t*)weight_of(e, idx), l->out, l->in, f->w);
    }
}

extern "C" void gpu_score_kl(GpuEngine* e, const Groups* gs, const Format* fmts, int nf, const int* ids, int nb,
                             double* score) {
    const Config* c = &e->m->c;
    int M = nb * e->T;
    long D = c->hidden_size;
    if (!e->dscore) e->dscore = (double*)dalloc(e, sizeof(double) * nf * gs->n);
    cudaCheck(cudaMemset(e->dscore, 0, sizeof(double) * nf * gs->n));
    e->nq = 0;
    embed(e, ids, nb);
    forward_from(e, 0, M, e->ref_logits, 1);
    for (int f = 0; f < nf; f++)
        for (int gi = 0; gi < gs->n; gi++) {
            const Group* g = &gs->g[gi];
            if (g->disabled) continue;
            set_group(e, g, &fmts[f]);
            cudaCheck(
                cudaMemcpyAsync(e->h, e->hsave + (long)g->layer * M * D, 4 * M * D, cudaMemcpyDeviceToDevice));
            forward_from(e, g->layer, M, e->logits, 0);
            gpu_kl_rows(e->dscore + (long)f * gs->n + gi, e->kl_scratch, e->ref_logits, e->logits, M,
                        c->vocab_size);
        }
    e->nq = 0;
    double* h = (double*)xmalloc(sizeof(double) * nf * gs->n);
    cudaCheck(cudaMemcpy(h, e->dscore, sizeof(double) * nf * gs->n, cudaMemcpyDeviceToHost));
    for (int i = 0; i < nf * gs->n; i++) score[i] += h[i];
    free(h);
}

// ---- the gradient score: forward, then per layer (last first) recompute and backward ----

static void grad_alloc(GpuEngine* e) {
    const Config* c = &e->m->c;
    long M = (long)e->B * e->T, D = c->hidden_size, I = c->intermediate_size, V = c->vocab_size, T = e->T;
    long qd = (long)c->num_heads * c->head_dim, kvd = (long)c->num_kv_heads * c->head_dim;
    long mx = I > qd ? I : qd;
    mx = mx > D ? mx : D;
    e->dh = (float*)dalloc(e, 4 * M * D);
    e->da = (float*)dalloc(e, 4 * M * D);
    e->dm = (float*)dalloc(e, 4 * M * D);
    e->dq = (float*)dalloc(e, 4 * M * qd);
    e->dk = (float*)dalloc(e, 4 * M * kvd);
    e->dv = (float*)dalloc(e, 4 * M * kvd);
    e->datt = (float*)dalloc(e, 4 * M * qd);
    e->dg = (float*)dalloc(e, 4 * M * I);
    e->du = (float*)dalloc(e, 4 * M * I);
    e->dact = (float*)dalloc(e, 4 * M * I);
    e->yq = (float*)dalloc(e, 4 * M * mx);
    e->dP = (float*)dalloc(e, 4L * c->num_heads * T * T);
    e->dy16 = (__nv_bfloat16*)dalloc(e, 2 * M * mx);
    e->dy_lo = (__nv_bfloat16*)dalloc(e, 2 * M * mx);
    e->dlog16 = (__nv_bfloat16*)dalloc(e, 2 * M * V);
    e->dlog_lo = (__nv_bfloat16*)dalloc(e, 2 * M * V);
    e->datt16 = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
    e->datt_lo = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
    e->dS16 = (__nv_bfloat16*)dalloc(e, 2L * c->num_heads * T * T);
    e->dS_lo = (__nv_bfloat16*)dalloc(e, 2L * c->num_heads * T * T);
    if (!e->P_lo) e->P_lo = (__nv_bfloat16*)dalloc(e, 2L * c->num_heads * T * T);
    e->loss_rows = (double*)dalloc(e, 8 * M);
    e->grad_scratch = (double*)dalloc(e, 8 * 1024);
}

// dX (M, K) (+)= dY (M, N) . W (N, K), dY given as bf16 hi + lo.
static void gemm_bwd(GpuEngine* e, float* dx, const __nv_bfloat16* hi, const __nv_bfloat16* lo,
                     const __nv_bfloat16* w, int M, int K, int N, float beta) {
    const float one = 1.0f;
    cublasCheck(cublasGemmEx(e->blas, CUBLAS_OP_N, CUBLAS_OP_N, K, M, N, &one, w, CUDA_R_16BF, K, hi,
                             CUDA_R_16BF, N, &beta, dx, CUDA_R_32F, K, CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT));
    if (lo)
        cublasCheck(cublasGemmEx(e->blas, CUBLAS_OP_N, CUBLAS_OP_N, K, M, N, &one, w, CUDA_R_16BF, K, lo,
                                 CUDA_R_16BF, N, &one, dx, CUDA_R_32F, K, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
}

static void split_dy(GpuEngine* e, const float* dy, long n) {
    gpu_split_bf16((bf16_t*)e->dy16, e->split ? (bf16_t*)e->dy_lo : NULL, dy, n);
}

typedef struct {
    const Groups* gs;
    const Format* fmts;
    int nf;
} GradJob;

// Adds (dY . (Yq - Y))^2 of linear idx for every format; X is its input in the unquantized pass.
static void grad_linear(GpuEngine* e, const GradJob* job, int idx, const float* dy, const float* x,
                        const float* y, int M) {
    int g = job->gs->group_of[idx];
    if (job->gs->g[g].disabled) return;
    const Linear* l = &e->m->linears[idx];
    for (int f = 0; f < job->nf; f++) {
        const Format* fm = &job->fmts[f];
        e->in_spec = fm->in;
        gpu_quant_rows_bf16(e->wq[0], e->sw[0], (const bf16_t*)weight_of(e, idx), l->out, l->in, fm->w);
        gemm_int8(e, e->yq, x, 0, M, l->in, l->out);
        gpu_grad_score(e->dscore + (long)f * job->gs->n + g, e->grad_scratch, dy, e->yq, y, (long)M * l->out);
    }
}

static void attention_backward(GpuEngine* e, int M) {
    const Config* c = &e->m->c;
    int T = e->T, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim, rep = H / KV;
    long qd = (long)H * hd, kvd = (long)KV * hd, TT = (long)T * T;
    float scale = 1.0f / sqrtf((float)hd);
    int sp = e->split;
    gpu_split_bf16((bf16_t*)e->datt16, sp ? (bf16_t*)e->datt_lo : NULL, e->datt, (long)M * qd);
    for (int b = 0; b < M / T; b++) {
        long qo = (long)b * T * qd, ko = (long)b * T * kvd;
#define LO(p, o) (sp ? (p) + (o) : NULL)
        for (int r = 0; r < rep; r++) { // S^T = K Q^T and dP^T = V dO^T
            att_gemm(e, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hd, scale, e->k16 + ko, LO(e->k_lo, ko), kvd, hd,
                     e->q16 + qo + r * hd, LO(e->q_lo, qo + r * hd), qd, (long)rep * hd, e->S + r * TT, T,
                     (long)rep * TT, KV, 0.0f);
            att_gemm(e, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hd, 1.0f, e->v16 + ko, LO(e->v_lo, ko), kvd, hd,
                     e->datt16 + qo + r * hd, LO(e->datt_lo, qo + r * hd), qd, (long)rep * hd, e->dP + r * TT,
                     T, (long)rep * TT, KV, 0.0f);
        }
        gpu_attention_ds((bf16_t*)e->P, sp ? (bf16_t*)e->P_lo : NULL, (bf16_t*)e->dS16,
                         sp ? (bf16_t*)e->dS_lo : NULL, e->S, e->dP, H, T, scale);
        for (int r = 0; r < rep; r++) {
            float beta = r ? 1.0f : 0.0f; // query heads of one kv head add into its dk, dv
            att_gemm(e, CUBLAS_OP_N, CUBLAS_OP_N, hd, T, T, 1.0f, e->k16 + ko, LO(e->k_lo, ko), kvd, hd,
                     e->dS16 + r * TT, LO(e->dS_lo, r * TT), T, (long)rep * TT, e->dq + qo + r * hd, qd,
                     (long)rep * hd, KV, 0.0f);
            att_gemm(e, CUBLAS_OP_N, CUBLAS_OP_T, hd, T, T, 1.0f, e->q16 + qo + r * hd,
                     LO(e->q_lo, qo + r * hd), qd, (long)rep * hd, e->dS16 + r * TT, LO(e->dS_lo, r * TT), T,
                     (long)rep * TT, e->dk + ko, kvd, hd, KV, beta);
            att_gemm(e, CUBLAS_OP_N, CUBLAS_OP_T, hd, T, T, 1.0f, e->datt16 + qo + r * hd,
                     LO(e->datt_lo, qo + r * hd), qd, (long)rep * hd, e->P + r * TT, LO(e->P_lo, r * TT), T,
                     (long)rep * TT, e->dv + ko, kvd, hd, KV, beta);
        }
#undef LO
    }
}

// dh: dL/d(h_out) of layer l on entry, dL/d(h_in) on exit. Mirrors engine/backward.c.
static void layer_backward(GpuEngine* e, const GradJob* job, int l, int M) {
    const Config* c = &e->m->c;
    const GpuLayer* w = &e->layers[l];
    int D = c->hidden_size, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim, I = c->intermediate_size;
    int qd = H * hd, kvd = KV * hd, base = l * LIN_PER_LAYER;
    const float* h_in = e->hsave + (long)l * M * D;
    grad_linear(e, job, base + LIN_DOWN, e->dh, e->act, e->y_down, M);
    split_dy(e, e->dh, (long)M * D);
    gemm_bwd(e, e->dact, e->dy16, e->split ? e->dy_lo : NULL, w->down, M, I, D, 0.0f);
    gpu_swiglu_backward(e->dg, e->du, e->dact, e->g, e->u, (long)M * I);
    grad_linear(e, job, base + LIN_GATE, e->dg, e->m_, e->g, M);
    grad_linear(e, job, base + LIN_UP, e->du, e->m_, e->u, M);
    split_dy(e, e->dg, (long)M * I);
    gemm_bwd(e, e->dm, e->dy16, e->split ? e->dy_lo : NULL, w->gate, M, D, I, 0.0f);
    split_dy(e, e->du, (long)M * I);
    gemm_bwd(e, e->dm, e->dy16, e->split ? e->dy_lo : NULL, w->up, M, D, I, 1.0f);
    gpu_rmsnorm_backward(e->dh, e->dm, e->h_mid, (const bf16_t*)w->w_post, e->m_rstd, M, D, 1);
    grad_linear(e, job, base + LIN_O, e->dh, e->att, e->y_o, M);
    split_dy(e, e->dh, (long)M * D);
    gemm_bwd(e, e->datt, e->dy16, e->split ? e->dy_lo : NULL, w->o, M, qd, D, 0.0f);
    attention_backward(e, M);
    gpu_qk_norm_rope_backward(e->dq, e->q_lin, (const bf16_t*)w->q_norm, e->q_rstd, e->cos_t, e->sin_t, M, e->T,
                              H, hd);
    gpu_qk_norm_rope_backward(e->dk, e->k_lin, (const bf16_t*)w->k_norm, e->k_rstd, e->cos_t, e->sin_t, M, e->T,
                              KV, hd);
    grad_linear(e, job, base + LIN_Q, e->dq, e->a, e->q_lin, M);
    grad_linear(e, job, base + LIN_K, e->dk, e->a, e->k_lin, M);
    grad_linear(e, job, base + LIN_V, e->dv, e->a, e->v, M);
    split_dy(e, e->dq, (long)M * qd);
    gemm_bwd(e, e->da, e->dy16, e->split ? e->dy_lo : NULL, w->q, M, D, qd, 0.0f);
    split_dy(e, e->dk, (long)M * kvd);
    gemm_bwd(e, e->da, e->dy16, e->split ? e->dy_lo : NULL, w->k, M, D, kvd, 1.0f);
    split_dy(e, e->dv, (long)M * kvd);
    gemm_bwd(e, e->da, e->dy16, e->split ? e->dy_lo : NULL, w->v, M, D, kvd, 1.0f);
    gpu_rmsnorm_backward(e->dh, e->da, h_in, (const bf16_t*)w->w_in, e->a_rstd, M, D, 1);
}

extern "C" double gpu_score_gradient(GpuEngine* e, const Groups* gs, const Format* fmts, int nf, const int* ids,
                                     int nb, double* score) {
    const Config* c = &e->m->c;
    int M = nb * e->T, L = c->num_layers;
    long D = c->hidden_size, V = c->vocab_size;
    if (!e->dh) grad_alloc(e);
    if (!e->dscore) e->dscore = (double*)dalloc(e, sizeof(double) * nf * gs->n);
    cudaCheck(cudaMemset(e->dscore, 0, sizeof(double) * nf * gs->n));
    GradJob job = {gs, fmts, nf};
    e->nq = 0;
    embed(e, ids, nb);
    forward_from(e, 0, M, e->logits, 1);
    gpu_cross_entropy_backward((bf16_t*)e->dlog16, e->split ? (bf16_t*)e->dlog_lo : NULL, e->loss_rows,
                               e->logits, e->ids, M, e->T, (int)V);
    gemm_bwd(e, e->dm, e->dlog16, e->split ? e->dlog_lo : NULL, e->lm_head, M, (int)D, (int)V, 0.0f);
    gpu_rmsnorm_backward(e->dh, e->dm, e->h, (const bf16_t*)e->norm, e->f_rstd, M, (int)D, 0);
    for (int l = L - 1; l >= 0; l--) {
        cudaCheck(cudaMemcpyAsync(e->h, e->hsave + (long)l * M * D, 4 * M * D, cudaMemcpyDeviceToDevice));
        layer_forward(e, l, M); // recompute: only layer inputs were kept
        layer_backward(e, &job, l, M);
    }
    double* h = (double*)xmalloc(sizeof(double) * nf * gs->n);
    cudaCheck(cudaMemcpy(h, e->dscore, sizeof(double) * nf * gs->n, cudaMemcpyDeviceToHost));
    for (int i = 0; i < nf * gs->n; i++) score[i] += h[i];
    free(h);
    double* lr = (double*)xmalloc(sizeof(double) * M);
    cudaCheck(cudaMemcpy(lr, e->loss_rows, sizeof(double) * M, cudaMemcpyDeviceToHost));
    double loss = 0;
    for (int i = 0; i < M; i++) loss += lr[i];
    free(lr);
    return loss / (e->T - 1); // summed over windows of each window's mean CE
}

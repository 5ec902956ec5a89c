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
    float *h, *a, *q, *k, *v, *att, *y, *m_, *g, *u, *act, *S, *lse, *logits, *ref_logits, *hsave;
    // bf16 GEMM inputs; with split, *_lo holds x - bf16(x) so hi + lo carries ~16 mantissa bits
    __nv_bfloat16 *a16, *q16, *k16, *v16, *att16, *m16, *act16, *P;
    __nv_bfloat16 *a_lo, *q_lo, *k_lo, *v_lo, *att_lo, *m_lo, *act_lo, *P_lo;
    int split;
    int8_t* xq;
    float* sx;
    int32_t* acc;
    // the quantized group: up to three members
    int8_t* wq[3];
    float* sw[3];
    int q_idx[3], nq; // linear indices now quantized
    QuantSpec in_spec;
    int in_enable;
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
        __nv_bfloat16** dst[11] = {&g->w_in, &g->q, &g->k, &g->v, &g->o, &g->q_norm, &g->k_norm, &g->w_post,
                                   &g->gate, &g->up, &g->down};
        const char* part[11] = {"input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                "self_attn.o_proj", "self_attn.q_norm", "self_attn.k_norm", "post_attention_layernorm",
                                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
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
    e->y = (float*)dalloc(e, 4 * M * D);
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
    cublasCheck(cublasGemmEx(e->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, CUDA_R_16BF, K, hi, CUDA_R_16BF,
                             K, &zero, y, CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (lo)
        cublasCheck(cublasGemmEx(e->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, CUDA_R_16BF, K, lo,
                                 CUDA_R_16BF, K, &one, y, CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// The quantized linear as an exact integer GEMM: int8 inputs and weights,
// int32 accumulation, then per-token x per-channel scales.
static void gemm_int8(GpuEngine* e, float* y, const float* x, int j, int M, int K, int N) {
    gpu_quant_rows_f32(e->xq, e->sx, x, M, K, e->in_spec);
    const int32_t one = 1, zero = 0;
    cublasCheck(cublasGemmEx(e->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, e->wq[j], CUDA_R_8I, K, e->xq,
                             CUDA_R_8I, K, &zero, e->acc, CUDA_R_32I, N, CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT));
    gpu_dequant(y, e->acc, e->sx, e->sw[j], M, N);
}

static void linear(GpuEngine* e, int idx, float* y, const float* x, const __nv_bfloat16* x16,
                   const __nv_bfloat16* x_lo, const __nv_bfloat16* w, int M) {
    const Linear* l = &e->m->linears[idx];
    for (int j = 0; j < e->nq; j++)
        if (e->q_idx[j] == idx) {
            if (e->in_enable) {
                gemm_int8(e, y, x, j, M, l->in, l->out);
            } else { // weight-only: dequantize on the fly is not needed for w4a8/w8a8
                fail_other("CUDA path: formats without an input quantizer are not supported");
            }
            return;
        }
    gemm_bf16(e, y, x16, x_lo, w, M, l->in, l->out);
}

// One batched call per (sample, r): heads kv*rep + r of every kv head. With split,
// X Y^T over hi + lo pairs is hi.hi + hi.lo + lo.hi (lo.lo is below 2^-16).
static void att_gemm(GpuEngine* e, cublasOperation_t ta, int m, int n, int k, float alpha, const __nv_bfloat16* A_hi,
                     const __nv_bfloat16* A_lo, long lda, long sa, const __nv_bfloat16* B_hi, const __nv_bfloat16* B_lo,
                     long ldb, long sb, float* C, long ldc, long sc, int batch) {
    const __nv_bfloat16* As[3] = {A_hi, A_hi, A_lo};
    const __nv_bfloat16* Bs[3] = {B_hi, B_lo, B_hi};
    int n_terms = e->split ? 3 : 1;
    for (int i = 0; i < n_terms; i++) {
        float beta = i ? 1.0f : 0.0f;
        cublasCheck(cublasGemmStridedBatchedEx(e->blas, ta, CUBLAS_OP_N, m, n, k, &alpha, As[i], CUDA_R_16BF, lda, sa,
                                               Bs[i], CUDA_R_16BF, ldb, sb, &beta, C, CUDA_R_32F, ldc, sc, batch,
                                               CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
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
            att_gemm(e, CUBLAS_OP_T, T, T, hd, scale, e->k16 + ko, e->split ? e->k_lo + ko : NULL, kvd, hd,
                     e->q16 + qo + (long)r * hd, e->split ? e->q_lo + qo + (long)r * hd : NULL, qd, (long)rep * hd,
                     e->S + (long)r * TT, T, (long)rep * TT, KV);
        gpu_causal_softmax((bf16_t*)e->P, (bf16_t*)e->P_lo, e->lse, e->S, H, T);
        for (int r = 0; r < rep; r++) // O_h^T (col-major) = V_h^T . P_h^T
            att_gemm(e, CUBLAS_OP_N, hd, T, T, 1.0f, e->v16 + ko, e->split ? e->v_lo + ko : NULL, kvd, hd,
                     e->P + (long)r * TT, e->split ? e->P_lo + (long)r * TT : NULL, T, (long)rep * TT,
                     e->att + qo + (long)r * hd, qd, (long)rep * hd, KV);
    }
}

static void layer_forward(GpuEngine* e, int l, int M) {
    const Config* c = &e->m->c;
    const GpuLayer* w = &e->layers[l];
    int D = c->hidden_size, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    long I = c->intermediate_size;
    int base = l * LIN_PER_LAYER;
    gpu_rmsnorm(e->a, NULL, NULL, e->h, (const bf16_t*)w->w_in, M, D, c->rms_eps);
    gpu_split_bf16((bf16_t*)e->a16, (bf16_t*)e->a_lo, e->a, (long)M * D);
    linear(e, base + LIN_Q, e->q, e->a, e->a16, e->a_lo, w->q, M);
    linear(e, base + LIN_K, e->k, e->a, e->a16, e->a_lo, w->k, M);
    linear(e, base + LIN_V, e->v, e->a, e->a16, e->a_lo, w->v, M);
    gpu_qk_norm_rope(e->q, NULL, (const bf16_t*)w->q_norm, e->cos_t, e->sin_t, M, e->T, H, hd, c->rms_eps);
    gpu_qk_norm_rope(e->k, NULL, (const bf16_t*)w->k_norm, e->cos_t, e->sin_t, M, e->T, KV, hd, c->rms_eps);
    gpu_split_bf16((bf16_t*)e->q16, (bf16_t*)e->q_lo, e->q, (long)M * H * hd);
    gpu_split_bf16((bf16_t*)e->k16, (bf16_t*)e->k_lo, e->k, (long)M * KV * hd);
    gpu_split_bf16((bf16_t*)e->v16, (bf16_t*)e->v_lo, e->v, (long)M * KV * hd);
    attention(e, M);
    gpu_split_bf16((bf16_t*)e->att16, (bf16_t*)e->att_lo, e->att, (long)M * H * hd);
    linear(e, base + LIN_O, e->y, e->att, e->att16, e->att_lo, w->o, M);
    gpu_add(e->h, e->y, (long)M * D);
    gpu_rmsnorm(e->m_, NULL, NULL, e->h, (const bf16_t*)w->w_post, M, D, c->rms_eps);
    gpu_split_bf16((bf16_t*)e->m16, (bf16_t*)e->m_lo, e->m_, (long)M * D);
    linear(e, base + LIN_GATE, e->g, e->m_, e->m16, e->m_lo, w->gate, M);
    linear(e, base + LIN_UP, e->u, e->m_, e->m16, e->m_lo, w->up, M);
    gpu_swiglu(e->act, NULL, e->g, e->u, (long)M * I);
    gpu_split_bf16((bf16_t*)e->act16, (bf16_t*)e->act_lo, e->act, (long)M * I);
    linear(e, base + LIN_DOWN, e->y, e->act, e->act16, e->act_lo, w->down, M);
    gpu_add(e->h, e->y, (long)M * D);
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
    gpu_rmsnorm(e->a, NULL, NULL, e->h, (const bf16_t*)e->norm, M, (int)D, c->rms_eps);
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
    e->in_enable = f->in_enable;
    for (int j = 0; j < g->n_members; j++) {
        int idx = g->members[j];
        const Linear* l = &e->m->linears[idx];
        e->q_idx[j] = idx;
        if (!f->w_enable) fail_other("CUDA path: formats without a weight quantizer are not supported");
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
            cudaCheck(cudaMemcpyAsync(e->h, e->hsave + (long)g->layer * M * D, 4 * M * D, cudaMemcpyDeviceToDevice));
            forward_from(e, g->layer, M, e->logits, 0);
            gpu_kl_rows(e->dscore + (long)f * gs->n + gi, e->kl_scratch, e->ref_logits, e->logits, M, c->vocab_size);
        }
    e->nq = 0;
    double* h = (double*)xmalloc(sizeof(double) * nf * gs->n);
    cudaCheck(cudaMemcpy(h, e->dscore, sizeof(double) * nf * gs->n, cudaMemcpyDeviceToHost));
    for (int i = 0; i < nf * gs->n; i++) score[i] += h[i];
    free(h);
}

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
    int l0, l1; // the decoder layers held here (a pipeline stage holds a range); hsave is indexed l - l0
    cublasHandle_t blas;
    GpuLayer* layers;
    __nv_bfloat16 *embed, *lm_head, *norm;
    float *cos_t, *sin_t;
    int* ids;
    // activations, (B*T, width); S (B, H, T, T) scores of every head at once
    float *h, *a, *v, *att, *m_, *g, *u, *act, *S, *lse, *logits, *ref_logits, *hsave;
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
    const float* xq_src; // what xq holds (gradient pass), with the format index xq_fmt
    int xq_fmt;
    int32_t* acc;
    // kept from the forward for the backward (one layer at a time: layers are recomputed)
    float *q_lin, *k_lin, *q_rstd, *k_rstd, *a_rstd, *m_rstd, *f_rstd, *h_mid, *y_o, *y_down;
    // gradients (allocated on the first gradient call)
    float *dh, *da, *dq, *dk, *dv, *dk_full, *dv_full, *datt, *dm, *dg, *du, *dact, *dP;
    __nv_bfloat16 *dy16, *dy_lo, *dlog16, *dlog_lo, *datt16, *datt_lo, *dS16, *dS_lo;
    double *loss_rows, *grad_scratch;
    // the quantized group: up to three members
    int8_t* wq[3];
    float* sw[3];
    int q_idx[3], nq; // linear indices now quantized
    QuantSpec in_spec;
    double *dscore, *kl_scratch;
    size_t free0, min_free;
    struct Prof* prof; // AUTOQ_GPU_PROFILE=1: time per part of the pass
    void** allocs;     // every cudaMalloc, freed by gpu_engine_free
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
    P_GATE_UP,
    P_SWIGLU,
    P_DOWN,
    P_HEAD,
    P_KL,
    P_GROUP,
    P_BWD,
    P_SCORE,
    P_N
};
static const char* prof_name[P_N] = {
    "rmsnorm",       "q/k/v GEMMs", "q/k norm+rope", "attention",          "o GEMM+add",
    "gate/up GEMMs", "swiglu",      "down GEMM+add", "final norm+lm_head", "kl",
    "group set-up",  "backward",    "gradient score"};
#define PROF_N 4096
struct Prof {
    cudaEvent_t ev[PROF_N];
    int part[PROF_N], n;
    double ms[P_N];
};

static void prof_flush(struct Prof* p) {
    if (p->n < 2) return;
    cudaCheck(cudaEventSynchronize(p->ev[p->n - 1]));
    for (int i = 1; i < p->n; i++) {
        float ms;
        cudaCheck(cudaEventElapsedTime(&ms, p->ev[i - 1], p->ev[i]));
        p->ms[p->part[i]] += ms;
    }
    cudaEvent_t last = p->ev[p->n - 1]; // keep the last mark as the next start
    p->ev[p->n - 1] = p->ev[0];
    p->ev[0] = last;
    p->n = 1;
}

static void prof_mark(GpuEngine* e, int part) {
    struct Prof* p = e->prof;
    if (!p) return;
    if (p->n == PROF_N) prof_flush(p);
    cudaCheck(cudaEventRecord(p->ev[p->n], 0));
    p->part[p->n++] = part;
}

static void prof_init(GpuEngine* e) {
    const char* v = getenv("AUTOQ_GPU_PROFILE");
    if (!v || strcmp(v, "1") != 0) return;
    e->prof = (struct Prof*)xcalloc(1, sizeof(struct Prof));
    for (int i = 0; i < PROF_N; i++) cudaCheck(cudaEventCreate(&e->prof->ev[i]));
}

static void prof_report(GpuEngine* e) {
    struct Prof* p = e->prof;
    if (!p) return;
    prof_flush(p);
    double tot = 0;
    for (int i = 0; i < P_N; i++) tot += p->ms[i];
    for (int i = 0; i < P_N; i++)
        if (p->ms[i] > 0)
            fprintf(stderr, "autoq: gpu profile: %-20s %9.1f ms %5.1f%%\n", prof_name[i], p->ms[i],
                    100 * p->ms[i] / tot);
    for (int i = 0; i < PROF_N; i++) cudaEventDestroy(p->ev[i]);
    free(p);
    e->prof = NULL;
}

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

static const StTensor* find_tensor(GpuEngine* e, const char* name, size_t* n) {
    const StTensor* t = st_find(&e->m->ck, name);
    if (!t) fail_input("%s: tensor '%s' missing", e->m->dir, name);
    *n = t->nbytes / (t->dtype == DT_F32 ? 4 : 2);
    return t;
}

// Copies a checkpoint tensor to d as bf16 (BF16 as is, F16/F32 converted); returns d + its size.
static __nv_bfloat16* upload_to(GpuEngine* e, const char* name, __nv_bfloat16* d) {
    size_t n;
    const StTensor* t = find_tensor(e, name, &n);
    if (t->dtype == DT_BF16) {
        cudaCheck(cudaMemcpy(d, t->data, n * 2, cudaMemcpyHostToDevice));
        return d + n;
    }
    float* f = (float*)xmalloc(n * 4);
    st_to_f32(t, f);
    uint16_t* h = (uint16_t*)xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = f32_to_bf16(f[i]);
    cudaCheck(cudaMemcpy(d, h, n * 2, cudaMemcpyHostToDevice));
    free(f);
    free(h);
    return d + n;
}

static __nv_bfloat16* upload(GpuEngine* e, const char* name) {
    size_t n;
    find_tensor(e, name, &n);
    __nv_bfloat16* d = (__nv_bfloat16*)dalloc(e, n * 2);
    upload_to(e, name, d);
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
    return gpu_engine_init_layers(m, T, B, split, 0, m->c.num_layers, 1);
}

extern "C" GpuEngine* gpu_engine_init_layers(const Model* m, int T, int B, int split, int l0, int l1,
                                             int slots) {
    GpuEngine* e = (GpuEngine*)xcalloc(1, sizeof(GpuEngine));
    e->slots = slots;
    e->l0 = l0;
    e->l1 = l1;
    e->split = split;
    e->flash = !split && gpu_flash_supported(T, m->c.head_dim);
    const Config* c = &m->c;
    e->m = m;
    e->T = T;
    e->B = B;
    size_t tot;
    cudaCheck(cudaMemGetInfo(&e->free0, &tot));
    e->min_free = e->free0;
    cublasCheck(cublasCreate(&e->blas));
    prof_init(e);
    char name[256];
    const char* P = c->prefix;
    e->layers = (GpuLayer*)xcalloc(c->num_layers, sizeof(GpuLayer));
    // the embedding on the first stage, the final norm and lm_head (maybe the same table) on the last
    int tied = !st_find(&m->ck, "lm_head.weight"), last = l1 == c->num_layers;
    snprintf(name, sizeof(name), "%sembed_tokens.weight", P);
    if (l0 == 0 || (last && tied)) e->embed = upload(e, name);
    if (last) {
        snprintf(name, sizeof(name), "%snorm.weight", P);
        e->norm = upload(e, name);
        e->lm_head = tied ? e->embed : upload(e, "lm_head.weight");
    }
    for (int l = l0; l < l1; l++) {
        GpuLayer* g = &e->layers[l];
        __nv_bfloat16** dst[11] = {&g->w_in,   &g->q,      &g->k,    &g->v,  &g->o,   &g->q_norm,
                                   &g->k_norm, &g->w_post, &g->gate, &g->up, &g->down};
        const char* part[11] = {
            "input_layernorm",  "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
            "self_attn.o_proj", "self_attn.q_norm", "self_attn.k_norm", "post_attention_layernorm",
            "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
        // q, k, v rows in one allocation, so one GEMM can compute all three
        long qkv = (long)(c->num_heads + 2 * c->num_kv_heads) * c->head_dim * c->hidden_size;
        g->q = (__nv_bfloat16*)dalloc(e, 2 * qkv);
        __nv_bfloat16* next = g->q;
        for (int i = 0; i < 11; i++) {
            snprintf(name, sizeof(name), "%slayers.%d.%s.weight", P, l, part[i]);
            if (i >= 1 && i <= 3) { // q_proj, k_proj, v_proj
                *dst[i] = next;
                next = upload_to(e, name, next);
            } else {
                *dst[i] = upload(e, name);
            }
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
    e->v = (float*)dalloc(e, 4 * M * kvd);
    e->att = (float*)dalloc(e, 4 * M * qd);
    e->m_ = (float*)dalloc(e, 4 * M * D);
    e->g = (float*)dalloc(e, 4 * M * I);
    e->u = (float*)dalloc(e, 4 * M * I);
    e->act = (float*)dalloc(e, 4 * M * I);
    long nTT = (long)B * c->num_heads * T * T;
    e->S = (float*)dalloc(e, 4 * nTT);
    e->P = (__nv_bfloat16*)dalloc(e, 2 * nTT);
    e->lse = (float*)dalloc(e, 4L * B * c->num_heads * T);
    if (last) e->logits = (float*)dalloc(e, 4 * M * V);
    e->hsave = e->hsave_all = (float*)dalloc(e, 4 * M * D * (l1 - l0) * slots);
    e->a16 = (__nv_bfloat16*)dalloc(e, 2 * M * D);
    e->q16 = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
    e->k16 = (__nv_bfloat16*)dalloc(e, 2 * M * kvd);
    e->v16 = (__nv_bfloat16*)dalloc(e, 2 * M * kvd);
    e->att16 = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
    e->m16 = (__nv_bfloat16*)dalloc(e, 2 * M * D);
    e->act16 = (__nv_bfloat16*)dalloc(e, 2 * M * I);
    if (!split) {
        e->g16 = (__nv_bfloat16*)dalloc(e, 2 * M * I);
        e->u16 = (__nv_bfloat16*)dalloc(e, 2 * M * I);
    }
    if (e->flash) e->qkv16 = (__nv_bfloat16*)dalloc(e, 2 * M * (qd + 2 * kvd));
    if (split) {
        e->a_lo = (__nv_bfloat16*)dalloc(e, 2 * M * D);
        e->q_lo = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
        e->k_lo = (__nv_bfloat16*)dalloc(e, 2 * M * kvd);
        e->v_lo = (__nv_bfloat16*)dalloc(e, 2 * M * kvd);
        e->att_lo = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
        e->m_lo = (__nv_bfloat16*)dalloc(e, 2 * M * D);
        e->act_lo = (__nv_bfloat16*)dalloc(e, 2 * M * I);
        e->P_lo = (__nv_bfloat16*)dalloc(e, 2 * nTT);
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
    prof_report(e);
    cublasDestroy(e->blas);
    for (int i = 0; i < e->n_allocs; i++) cudaCheck(cudaFree(e->allocs[i]));
    free(e->allocs);
    free(e->layers);
    free(e);
}

extern "C" size_t gpu_peak_bytes(GpuEngine* e) { return e->free0 - e->min_free; }

// y (M, N) fp32 (+)= (hi + lo) (M, K) . W (N, K)^T with bf16 inputs, fp32 accumulation, or y16 (M, N)
// bf16 = hi . W^T when y16 is given. The weights are exact in bf16, so with lo the product keeps ~16
// bits of the fp32 activations.
static void gemm_bf16(GpuEngine* e, float* y, __nv_bfloat16* y16, const __nv_bfloat16* hi,
                      const __nv_bfloat16* lo, const __nv_bfloat16* w, int M, int K, int N, int accumulate) {
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    void* out = y16 ? (void*)y16 : (void*)y;
    cudaDataType ot = y16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasCheck(cublasGemmEx(e->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, CUDA_R_16BF, K, hi,
                             CUDA_R_16BF, K, &beta, out, ot, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (lo)
        cublasCheck(cublasGemmEx(e->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, CUDA_R_16BF, K, lo,
                                 CUDA_R_16BF, K, &one, out, ot, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// acc (M, N) int32 = xq (M, K) . wq[j] (N, K)^T: the quantized linear as an exact integer GEMM.
static void gemm_i8(GpuEngine* e, int j, int M, int K, int N) {
    const int32_t one = 1, zero = 0;
    cublasCheck(cublasGemmEx(e->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, e->wq[j], CUDA_R_8I, K, e->xq,
                             CUDA_R_8I, K, &zero, e->acc, CUDA_R_32I, N, CUBLAS_COMPUTE_32I,
                             CUBLAS_GEMM_DEFAULT));
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
    gemm_i8(e, j, M, K, N);
    gpu_dequant(y, (bf16_t*)y16, e->acc, e->sx, e->sw[j], M, N, accumulate);
}

// y (+)= linear idx of x, or y16 = it in bf16; x16 and x_lo are x as bf16 halves (x may be NULL
// with bf16 activations).
static void linear(GpuEngine* e, int idx, float* y, __nv_bfloat16* y16, const float* x,
                   const __nv_bfloat16* x16, const __nv_bfloat16* x_lo, const __nv_bfloat16* w, int M,
                   int accumulate) {
    const Linear* l = &e->m->linears[idx];
    for (int j = 0; j < e->nq; j++)
        if (e->q_idx[j] == idx) { // formats have both quantizers here (checked in score_job_load)
            gemm_int8(e, y, y16, x, x16, j, M, l->in, l->out, accumulate);
            return;
        }
    gemm_bf16(e, y, y16, x16, x_lo, w, M, l->in, l->out, accumulate);
}

// Where head h of window b starts in a buffer laid out as (B*T, H, hd) queries, (B*T, KV, hd)
// keys/values (query head h reads kv head h / rep) or (B, H, T, T) scores.
enum { LAY_Q, LAY_KV, LAY_S };

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
    if (e->n_pa == 32) fail_other("internal: too many attention pointer arrays");
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
static void att_gemm(GpuEngine* e, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                     const __nv_bfloat16* A_hi, const __nv_bfloat16* A_lo, int lda, int la,
                     const __nv_bfloat16* B_hi, const __nv_bfloat16* B_lo, int ldb, int lb, void* C, int c16,
                     int ldc, int lc, int nb) {
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

// q, k, v bf16 with rows ldq, ldk elements apart: any layout for the fused kernel, e->q16, e->k16,
// e->v16 for the cuBLAS path.
static void attention(GpuEngine* e, int M, const __nv_bfloat16* q, const __nv_bfloat16* k,
                      const __nv_bfloat16* v, long ldq, long ldk) {
    const Config* c = &e->m->c;
    int T = e->T, nb = M / T, H = c->num_heads, hd = c->head_dim;
    int qd = H * hd, kvd = c->num_kv_heads * hd;
    float scale = 1.0f / sqrtf((float)hd);
    if (e->flash) {
        gpu_flash_attention(e->bf16_act ? NULL : e->att, (bf16_t*)e->att16, (const bf16_t*)q, ldq,
                            (const bf16_t*)k, (const bf16_t*)v, ldk, nb, T, H, c->num_kv_heads, hd);
        return;
    }
    // S_h^T (col-major) = K_h . Q_h^T, then O_h^T = V_h^T . P_h^T
    att_gemm(e, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hd, scale, e->k16, e->k_lo, kvd, LAY_KV, e->q16, e->q_lo, qd,
             LAY_Q, e->S, 0, T, LAY_S, nb);
    gpu_causal_softmax((bf16_t*)e->P, (bf16_t*)e->P_lo, e->lse, e->S, nb * H, T);
    void* out = e->bf16_act ? (void*)e->att16 : (void*)e->att;
    att_gemm(e, CUBLAS_OP_N, CUBLAS_OP_N, hd, T, T, 1.0f, e->v16, e->v_lo, kvd, LAY_KV, e->P, e->P_lo, T, LAY_S,
             out, e->bf16_act, qd, LAY_Q, nb);
}

// Whether the quantized group has a member among linears lo..hi.
static int quantized_in(const GpuEngine* e, int lo, int hi) {
    for (int j = 0; j < e->nq; j++)
        if (e->q_idx[j] >= lo && e->q_idx[j] <= hi) return 1;
    return 0;
}

// The MLP half of layer l: post-attention norm, gate/up, SwiGLU, down and its residual add.
static void mlp_block(GpuEngine* e, int l, int M) {
    const Config* c = &e->m->c;
    const GpuLayer* w = &e->layers[l];
    int D = c->hidden_size, base = l * LIN_PER_LAYER, keep = e->grad_mode, a16 = e->bf16_act;
    long I = c->intermediate_size;
    float eps = c->rms_eps;
    gpu_rmsnorm(a16 ? NULL : e->m_, (bf16_t*)e->m16, (bf16_t*)e->m_lo, e->m_rstd, e->h,
                (const bf16_t*)w->w_post, M, D, eps);
    prof_mark(e, P_NORM);
    if (a16) {
        linear(e, base + LIN_GATE, NULL, e->g16, NULL, e->m16, NULL, w->gate, M, 0);
        linear(e, base + LIN_UP, NULL, e->u16, NULL, e->m16, NULL, w->up, M, 0);
        prof_mark(e, P_GATE_UP);
        gpu_swiglu_bf16((bf16_t*)e->act16, (const bf16_t*)e->g16, (const bf16_t*)e->u16, (long)M * I);
    } else {
        linear(e, base + LIN_GATE, e->g, NULL, e->m_, e->m16, e->m_lo, w->gate, M, 0);
        linear(e, base + LIN_UP, e->u, NULL, e->m_, e->m16, e->m_lo, w->up, M, 0);
        prof_mark(e, P_GATE_UP);
        gpu_swiglu(e->act, (bf16_t*)e->act16, (bf16_t*)e->act_lo, e->g, e->u, (long)M * I);
    }
    prof_mark(e, P_SWIGLU);
    linear(e, base + LIN_DOWN, keep ? e->y_down : e->h, NULL, a16 ? NULL : e->act, e->act16, e->act_lo, w->down,
           M, !keep);
    if (keep) gpu_add(e->h, e->y_down, (long)M * D);
    prof_mark(e, P_DOWN);
}

// One decoder layer on e->h (fp32 residual stream). With bf16_act the GEMM outputs and every other
// activation are bf16; otherwise fp32 with bf16 (hi + lo) copies as GEMM inputs.
static void layer_forward(GpuEngine* e, int l, int M) {
    const Config* c = &e->m->c;
    const GpuLayer* w = &e->layers[l];
    int D = c->hidden_size, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    int base = l * LIN_PER_LAYER, keep = e->grad_mode, a16 = e->bf16_act;
    float eps = c->rms_eps;
    gpu_rmsnorm(a16 ? NULL : e->a, (bf16_t*)e->a16, (bf16_t*)e->a_lo, e->a_rstd, e->h, (const bf16_t*)w->w_in,
                M, D, eps);
    prof_mark(e, P_NORM);
    const float* a = a16 ? NULL : e->a;
    __nv_bfloat16 *q16 = e->q16, *k16 = e->k16, *v16 = e->v16;
    long ldq = (long)H * hd, ldk = (long)KV * hd;
    if (a16) {
        if (e->flash && !quantized_in(e, base + LIN_Q, base + LIN_V)) { // one GEMM: [q | k | v] per row
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
        linear(e, base + LIN_Q, e->q_lin, NULL, a, e->a16, e->a_lo, w->q, M, 0);
        linear(e, base + LIN_K, e->k_lin, NULL, a, e->a16, e->a_lo, w->k, M, 0);
        linear(e, base + LIN_V, e->v, NULL, a, e->a16, e->a_lo, w->v, M, 0);
        prof_mark(e, P_QKV);
        // the rotated q, k are only GEMM inputs: bf16 halves, no fp32 copy
        gpu_qk_norm_rope(NULL, (bf16_t*)e->q16, (bf16_t*)e->q_lo, e->q_rstd, e->q_lin, (const bf16_t*)w->q_norm,
                         e->cos_t, e->sin_t, M, e->T, H, hd, eps);
        gpu_qk_norm_rope(NULL, (bf16_t*)e->k16, (bf16_t*)e->k_lo, e->k_rstd, e->k_lin, (const bf16_t*)w->k_norm,
                         e->cos_t, e->sin_t, M, e->T, KV, hd, eps);
        gpu_split_bf16((bf16_t*)e->v16, (bf16_t*)e->v_lo, e->v, (long)M * KV * hd);
    }
    prof_mark(e, P_ROPE);
    attention(e, M, q16, k16, v16, ldq, ldk);
    if (!a16 && !e->flash) gpu_split_bf16((bf16_t*)e->att16, (bf16_t*)e->att_lo, e->att, (long)M * H * hd);
    prof_mark(e, P_ATT);
    // the residual adds ride on the GEMM (beta = 1) unless the gradient needs the linear's own output
    linear(e, base + LIN_O, keep ? e->y_o : e->h, NULL, a16 ? NULL : e->att, e->att16, e->att_lo, w->o, M,
           !keep);
    if (keep) {
        gpu_add(e->h, e->y_o, (long)M * D);
        cudaCheck(cudaMemcpyAsync(e->h_mid, e->h, 4L * M * D, cudaMemcpyDeviceToDevice));
    }
    prof_mark(e, P_O);
    mlp_block(e, l, M);
}

// Layers start..l1-1 on e->h; save: keep each layer's input in hsave.
static void forward_layers(GpuEngine* e, int start, int M, int save) {
    long D = e->m->c.hidden_size;
    for (int l = start; l < e->l1; l++) {
        if (save)
            cudaCheck(cudaMemcpyAsync(e->hsave + (long)(l - e->l0) * M * D, e->h, 4 * M * D,
                                      cudaMemcpyDeviceToDevice));
        layer_forward(e, l, M);
    }
}

// The final norm and lm_head of e->h into out (the last stage).
static void head(GpuEngine* e, int M, float* out) {
    const Config* c = &e->m->c;
    long D = c->hidden_size;
    gpu_rmsnorm(e->bf16_act ? NULL : e->a, (bf16_t*)e->a16, (bf16_t*)e->a_lo, e->f_rstd, e->h,
                (const bf16_t*)e->norm, M, (int)D, c->rms_eps);
    gemm_bf16(e, out, NULL, e->a16, e->a_lo, e->lm_head, M, (int)D, c->vocab_size, 0);
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
    e->nq = 0;
    e->grad_mode = gradient;
    e->bf16_act = !gradient && !e->split;
}

extern "C" void gpu_forward_logits(GpuEngine* e, const int* ids, int nb, float* logits) {
    int M = nb * e->T;
    set_mode(e, 0);
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

// ---- passes in parts, so that a pipeline stage (engine/gpu_pipeline.cu) runs its share; the
// one-GPU scorers below are the same parts in sequence ----

static void grad_alloc(GpuEngine* e); // the gradient buffers, below

extern "C" float* gpu_hidden(GpuEngine* e) { return e->h; }
extern "C" float* gpu_hidden_grad(GpuEngine* e) { return e->dh; }

extern "C" void gpu_pass_begin(GpuEngine* e, int gradient, int nscores, const int* ids, int nb) {
    if (!e->dscore) e->dscore = (double*)dalloc(e, sizeof(double) * nscores);
    cudaCheck(cudaMemset(e->dscore, 0, sizeof(double) * nscores));
    if (gradient && !e->dh) grad_alloc(e);
    if (!gradient && e->l1 == e->m->c.num_layers && !e->ref_logits)
        e->ref_logits = (float*)dalloc(e, 4L * e->B * e->T * e->m->c.vocab_size);
    set_mode(e, gradient);
    embed(e, ids, nb);
}

extern "C" void gpu_pass_slot(GpuEngine* e, int k) {
    e->hsave = e->hsave_all + (long)(k % e->slots) * e->B * e->T * e->m->c.hidden_size * (e->l1 - e->l0);
}

extern "C" void gpu_pass_layers(GpuEngine* e, int from, int nb, int save) {
    forward_layers(e, from, nb * e->T, save);
}

// The quantized group g (in one of this stage's layers): its weights quantized, h its layer's input.
extern "C" void gpu_pass_group(GpuEngine* e, const Group* g, const Format* f, int nb) {
    long M = (long)nb * e->T, D = e->m->c.hidden_size;
    set_group(e, g, f);
    cudaCheck(
        cudaMemcpyAsync(e->h, e->hsave + (g->layer - e->l0) * M * D, 4 * M * D, cudaMemcpyDeviceToDevice));
    prof_mark(e, P_GROUP);
}

extern "C" void gpu_pass_ungroup(GpuEngine* e) { e->nq = 0; }

// Last stage, kl: slot < 0 keeps the reference logits; otherwise adds the KL to score slot.
extern "C" void gpu_pass_kl(GpuEngine* e, int nb, int slot) {
    int M = nb * e->T;
    if (slot < 0) {
        head(e, M, e->ref_logits);
        return;
    }
    head(e, M, e->logits);
    gpu_kl_rows(e->dscore + slot, e->kl_scratch, e->ref_logits, e->logits, M, e->m->c.vocab_size);
    prof_mark(e, P_KL);
}

// Adds this stage's per-group sums to score (host).
extern "C" void gpu_pass_end(GpuEngine* e, double* score, int nscores) {
    e->nq = 0;
    double* h = (double*)xmalloc(sizeof(double) * nscores);
    cudaCheck(cudaMemcpy(h, e->dscore, sizeof(double) * nscores, cudaMemcpyDeviceToHost));
    for (int i = 0; i < nscores; i++) score[i] += h[i];
    free(h);
    cudaCheck(cudaMemset(e->dscore, 0, sizeof(double) * nscores)); // a stage may run backwards back to back
}

extern "C" void gpu_score_kl(GpuEngine* e, const Groups* gs, const Format* fmts, int nf, const int* ids, int nb,
                             double* score) {
    gpu_pass_begin(e, 0, nf * gs->n, ids, nb);
    gpu_pass_layers(e, 0, nb, 1);
    gpu_pass_kl(e, nb, -1);
    for (int f = 0; f < nf; f++)
        for (int gi = 0; gi < gs->n; gi++) {
            const Group* g = &gs->g[gi];
            if (g->disabled) continue;
            gpu_pass_group(e, g, &fmts[f], nb);
            gpu_pass_layers(e, g->layer, nb, 0);
            gpu_pass_ungroup(e);
            gpu_pass_kl(e, nb, f * gs->n + gi);
        }
    gpu_pass_end(e, score, nf * gs->n);
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
    e->dk_full = (float*)dalloc(e, 4 * M * qd);
    e->dv_full = (float*)dalloc(e, 4 * M * qd);
    e->datt = (float*)dalloc(e, 4 * M * qd);
    e->dg = (float*)dalloc(e, 4 * M * I);
    e->du = (float*)dalloc(e, 4 * M * I);
    e->dact = (float*)dalloc(e, 4 * M * I);
    long nTT = (long)e->B * c->num_heads * T * T;
    e->dP = (float*)dalloc(e, 4 * nTT);
    e->dy16 = (__nv_bfloat16*)dalloc(e, 2 * M * mx);
    int last = e->l1 == c->num_layers; // the logits' gradient lives on the last stage only
    if (last) e->dlog16 = (__nv_bfloat16*)dalloc(e, 2 * M * V);
    e->datt16 = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
    e->dS16 = (__nv_bfloat16*)dalloc(e, 2 * nTT);
    if (e->split) { // the low halves
        e->dy_lo = (__nv_bfloat16*)dalloc(e, 2 * M * mx);
        if (last) e->dlog_lo = (__nv_bfloat16*)dalloc(e, 2 * M * V);
        e->datt_lo = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
        e->dS_lo = (__nv_bfloat16*)dalloc(e, 2 * nTT);
    }
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

// dX (M, K) (+)= dY (M, N) . W (N, K) for fp32 dY: split into bf16 halves in dy16 / dy_lo first.
static void linear_bwd(GpuEngine* e, float* dx, const float* dy, const __nv_bfloat16* w, int M, int K, int N,
                       float beta) {
    gpu_split_bf16((bf16_t*)e->dy16, (bf16_t*)e->dy_lo, dy, (long)M * N);
    gemm_bwd(e, dx, e->dy16, e->dy_lo, w, M, K, N, beta);
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
    prof_mark(e, P_BWD);
    const Linear* l = &e->m->linears[idx];
    for (int f = 0; f < job->nf; f++) {
        const Format* fm = &job->fmts[f];
        gpu_quant_rows_bf16(e->wq[0], e->sw[0], (const bf16_t*)weight_of(e, idx), l->out, l->in, fm->w);
        if (e->xq_src != x || e->xq_fmt != f) { // q, k, v (and gate, up) share their input
            gpu_quant_rows_f32(e->xq, e->sx, x, M, l->in, fm->in);
            e->xq_src = x;
            e->xq_fmt = f;
        }
        gemm_i8(e, 0, M, l->in, l->out);
        gpu_grad_score(e->dscore + (long)f * job->gs->n + g, e->grad_scratch, dy, e->acc, e->sx, e->sw[0], y, M,
                       l->out);
    }
    prof_mark(e, P_SCORE);
}

// From dO (datt) and the forward's S, P: dq, dk, dv (before the q/k norm and RoPE backward).
static void attention_backward(GpuEngine* e, int M) {
    const Config* c = &e->m->c;
    int T = e->T, nb = M / T, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    int qd = H * hd, kvd = KV * hd;
    float scale = 1.0f / sqrtf((float)hd);
    gpu_split_bf16((bf16_t*)e->datt16, (bf16_t*)e->datt_lo, e->datt, (long)M * qd);
    if (e->flash) // the fused forward kept no scores: S_h^T = K_h . Q_h^T again
        att_gemm(e, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hd, scale, e->k16, e->k_lo, kvd, LAY_KV, e->q16, e->q_lo,
                 qd, LAY_Q, e->S, 0, T, LAY_S, nb);
    // dP^T = V . dO^T, then dS; dQ^T = K^T dS^T; per query head dK^T = Q^T dS, dV^T = dO^T P
    att_gemm(e, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hd, 1.0f, e->v16, e->v_lo, kvd, LAY_KV, e->datt16, e->datt_lo,
             qd, LAY_Q, e->dP, 0, T, LAY_S, nb);
    gpu_attention_ds((bf16_t*)e->P, (bf16_t*)e->P_lo, (bf16_t*)e->dS16, (bf16_t*)e->dS_lo, e->S, e->dP, nb * H,
                     T, scale);
    att_gemm(e, CUBLAS_OP_N, CUBLAS_OP_N, hd, T, T, 1.0f, e->k16, e->k_lo, kvd, LAY_KV, e->dS16, e->dS_lo, T,
             LAY_S, e->dq, 0, qd, LAY_Q, nb);
    att_gemm(e, CUBLAS_OP_N, CUBLAS_OP_T, hd, T, T, 1.0f, e->q16, e->q_lo, qd, LAY_Q, e->dS16, e->dS_lo, T,
             LAY_S, e->dk_full, 0, qd, LAY_Q, nb);
    att_gemm(e, CUBLAS_OP_N, CUBLAS_OP_T, hd, T, T, 1.0f, e->datt16, e->datt_lo, qd, LAY_Q, e->P, e->P_lo, T,
             LAY_S, e->dv_full, 0, qd, LAY_Q, nb);
    gpu_sum_heads(e->dk, e->dk_full, M, KV, H / KV, hd);
    gpu_sum_heads(e->dv, e->dv_full, M, KV, H / KV, hd);
}

// dh: dL/d(h_out) of layer l on entry, dL/d(h_in) on exit. Mirrors engine/backward.c.
static void layer_backward(GpuEngine* e, const GradJob* job, int l, int M) {
    const Config* c = &e->m->c;
    const GpuLayer* w = &e->layers[l];
    int D = c->hidden_size, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim, I = c->intermediate_size;
    int qd = H * hd, kvd = KV * hd, base = l * LIN_PER_LAYER;
    const float* h_in = e->hsave + (long)(l - e->l0) * M * D;
    e->xq_src = NULL; // the recompute rewrote the inputs
    grad_linear(e, job, base + LIN_DOWN, e->dh, e->act, e->y_down, M);
    linear_bwd(e, e->dact, e->dh, w->down, M, I, D, 0.0f);
    gpu_swiglu_backward(e->dg, e->du, e->dact, e->g, e->u, (long)M * I);
    grad_linear(e, job, base + LIN_GATE, e->dg, e->m_, e->g, M);
    grad_linear(e, job, base + LIN_UP, e->du, e->m_, e->u, M);
    linear_bwd(e, e->dm, e->dg, w->gate, M, D, I, 0.0f);
    linear_bwd(e, e->dm, e->du, w->up, M, D, I, 1.0f);
    gpu_rmsnorm_backward(e->dh, e->dm, e->h_mid, (const bf16_t*)w->w_post, e->m_rstd, M, D, 1);
    grad_linear(e, job, base + LIN_O, e->dh, e->att, e->y_o, M);
    linear_bwd(e, e->datt, e->dh, w->o, M, qd, D, 0.0f);
    attention_backward(e, M);
    gpu_qk_norm_rope_backward(e->dq, e->q_lin, (const bf16_t*)w->q_norm, e->q_rstd, e->cos_t, e->sin_t, M, e->T,
                              H, hd);
    gpu_qk_norm_rope_backward(e->dk, e->k_lin, (const bf16_t*)w->k_norm, e->k_rstd, e->cos_t, e->sin_t, M, e->T,
                              KV, hd);
    grad_linear(e, job, base + LIN_Q, e->dq, e->a, e->q_lin, M);
    grad_linear(e, job, base + LIN_K, e->dk, e->a, e->k_lin, M);
    grad_linear(e, job, base + LIN_V, e->dv, e->a, e->v, M);
    linear_bwd(e, e->da, e->dq, w->q, M, D, qd, 0.0f);
    linear_bwd(e, e->da, e->dk, w->k, M, D, kvd, 1.0f);
    linear_bwd(e, e->da, e->dv, w->v, M, D, kvd, 1.0f);
    gpu_rmsnorm_backward(e->dh, e->da, h_in, (const bf16_t*)w->w_in, e->a_rstd, M, D, 1);
    prof_mark(e, P_BWD);
}

// Last stage, gradient: logits, the loss per row and its gradient into dh (at the final norm's input).
extern "C" void gpu_pass_grad_head(GpuEngine* e, int nb) {
    const Config* c = &e->m->c;
    int M = nb * e->T;
    long D = c->hidden_size, V = c->vocab_size;
    head(e, M, e->logits);
    gpu_cross_entropy_backward((bf16_t*)e->dlog16, (bf16_t*)e->dlog_lo, e->loss_rows, e->logits, e->ids, M,
                               e->T, (int)V);
    gemm_bwd(e, e->dm, e->dlog16, e->dlog_lo, e->lm_head, M, (int)D, (int)V, 0.0f);
    gpu_rmsnorm_backward(e->dh, e->dm, e->h, (const bf16_t*)e->norm, e->f_rstd, M, (int)D, 0);
}

// dh holds dL/d(output of layer l1 - 1); layers l1-1..l0 are recomputed from their saved inputs and
// backpropagated, adding their groups' scores; dh ends as dL/d(input of layer l0).
extern "C" void gpu_pass_backward(GpuEngine* e, const Groups* gs, const Format* fmts, int nf, int nb) {
    long M = (long)nb * e->T, D = e->m->c.hidden_size;
    GradJob job = {gs, fmts, nf};
    for (int l = e->l1 - 1; l >= e->l0; l--) {
        cudaCheck(cudaMemcpyAsync(e->h, e->hsave + (l - e->l0) * M * D, 4 * M * D, cudaMemcpyDeviceToDevice));
        layer_forward(e, l, (int)M); // recompute: only layer inputs were kept
        layer_backward(e, &job, l, (int)M);
    }
}

// Last stage: the summed per-window mean CE of the batch.
extern "C" double gpu_pass_loss(GpuEngine* e, int nb) {
    int M = nb * e->T;
    double* lr = (double*)xmalloc(sizeof(double) * M);
    cudaCheck(cudaMemcpy(lr, e->loss_rows, sizeof(double) * M, cudaMemcpyDeviceToHost));
    double loss = 0;
    for (int i = 0; i < M; i++) loss += lr[i];
    free(lr);
    return loss / (e->T - 1);
}

extern "C" double gpu_score_gradient(GpuEngine* e, const Groups* gs, const Format* fmts, int nf, const int* ids,
                                     int nb, double* score) {
    gpu_pass_begin(e, 1, nf * gs->n, ids, nb);
    gpu_pass_layers(e, 0, nb, 1);
    gpu_pass_grad_head(e, nb);
    gpu_pass_backward(e, gs, fmts, nf, nb);
    gpu_pass_end(e, score, nf * gs->n);
    return gpu_pass_loss(e, nb);
}

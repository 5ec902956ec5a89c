// The CUDA engine's weights and buffers: bf16 weights uploaded straight from the mmapped checkpoint,
// activation buffers for batches of B windows, the quantization plan, and an optional profiler.
#include <math.h>
#include <string.h>

#include "gpu_engine.cuh"

// ---- optional timing by CUDA events (AUTOQ_GPU_PROFILE=1, for bench/): each mark charges the
// GPU time since the previous mark to a part; events are read back every PROF_N marks ----
static const char* prof_name[P_N] = {"rmsnorm",
                                     "q/k/v GEMMs",
                                     "q/k norm+rope",
                                     "attention",
                                     "o GEMM+add",
                                     "experts: routing, gather",
                                     "gate/up GEMMs",
                                     "swiglu",
                                     "down GEMM+add",
                                     "final norm+lm_head",
                                     "group set-up",
                                     "backward",
                                     "experts: backward GEMMs",
                                     "experts: int8 block",
                                     "scores (kl, gradient)"};
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

void prof_mark(GpuEngine* e, int part) {
    struct Prof* p = e->prof;
    if (!p) return;
    if (p->n == PROF_N) prof_flush(p);
    cudaCheck(cudaEventRecord(p->ev[p->n], 0));
    p->part[p->n++] = part;
}

void prof_init(GpuEngine* e) {
    const char* v = getenv("AUTOQ_GPU_PROFILE");
    if (!v || strcmp(v, "1") != 0) return;
    e->prof = (struct Prof*)xcalloc(1, sizeof(struct Prof));
    for (int i = 0; i < PROF_N; i++) cudaCheck(cudaEventCreate(&e->prof->ev[i]));
}

void prof_report(GpuEngine* e) {
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

void* dalloc(GpuEngine* e, size_t bytes) {
    void* p;
    if (e->n_allocs == e->cap_allocs) {
        e->cap_allocs = e->cap_allocs ? 2 * e->cap_allocs : 256;
        e->allocs = (void**)realloc(e->allocs, sizeof(void*) * e->cap_allocs);
        if (!e->allocs) fail_other("out of memory");
    }
    cudaCheck(cudaMalloc(&p, bytes ? bytes : 16));
    e->allocs[e->n_allocs++] = p;
    e->alloc_bytes += bytes;
    size_t fr, tot;
    cudaCheck(cudaMemGetInfo(&fr, &tot));
    if (fr < e->min_free) e->min_free = fr;
    return p;
}

const StTensor* find_tensor(GpuEngine* e, const char* name, size_t* n) {
    const StTensor* t = st_find(&e->m->ck, name);
    if (!t) fail_input("%s: tensor '%s' missing", e->m->dir, name);
    *n = t->nbytes / (t->dtype == DT_F32 ? 4 : 2);
    return t;
}

// Host to device at the bus's speed from pageable memory (the checkpoint's mapping): through two pinned
// buffers of this thread, host copies by every core into one while the other goes over the bus. A plain
// cudaMemcpy from the mapping ran at 5.4 GB/s on an H200 host. Finished when it returns, as cudaMemcpy
// is; `ordered`: after the default stream's work before it (which may still read d), else at once on
// this thread's own stream (d is memory no queued work reads: the walking engine's spare layer).
#define STAGE_BYTES ((size_t)64 << 20)
static void upload_bytes(void* d, const void* src, size_t bytes, int ordered) {
    static __thread char* stage[2];
    static __thread cudaStream_t ss;
    static __thread cudaEvent_t done[2], before;
    static __thread int dev = -1; // the device ss and the events belong to
    int cur;
    cudaCheck(cudaGetDevice(&cur));
    if (dev >= 0 && cur != dev) {                                     // a thread that drives several devices:
        cudaCheck(cudaMemcpy(d, src, bytes, cudaMemcpyHostToDevice)); // the plain copy on the others
        return;
    }
    if (!stage[0]) {
        dev = cur;
        for (int k = 0; k < 2; k++) {
            cudaCheck(cudaMallocHost(&stage[k], STAGE_BYTES));
            cudaCheck(cudaEventCreateWithFlags(&done[k], cudaEventDisableTiming));
        }
        cudaCheck(cudaEventCreateWithFlags(&before, cudaEventDisableTiming));
        cudaCheck(cudaStreamCreateWithFlags(&ss, cudaStreamNonBlocking));
    }
    if (ordered) { // the default stream's earlier work may still read d
        cudaCheck(cudaEventRecord(before, 0));
        cudaCheck(cudaStreamWaitEvent(ss, before, 0));
    }
    cudaPointerAttributes at;
    int pinned = cudaPointerGetAttributes(&at, src) == cudaSuccess && at.type == cudaMemoryTypeHost;
    (void)cudaGetLastError();
    if (bytes < ((size_t)4 << 20) || pinned) { // small, or page-locked (a streamed checkpoint): straight over
        cudaCheck(cudaMemcpyAsync(d, src, bytes, cudaMemcpyHostToDevice, ss));
        cudaCheck(cudaStreamSynchronize(ss));
        return;
    }
    for (size_t off = 0, k = 0; off < bytes; off += STAGE_BYTES, k ^= 1) {
        size_t n = bytes - off < STAGE_BYTES ? bytes - off : STAGE_BYTES, piece = (n + 15) / 16;
        cudaCheck(cudaEventSynchronize(done[k])); // buffer k's last transfer is over
        char* dst = stage[k];
        const char* from = (const char*)src + off;
#pragma omp parallel for
        for (int p = 0; p < 16; p++) {
            size_t a = p * piece, b = a + piece < n ? a + piece : n;
            if (a < b) memcpy(dst + a, from + a, b - a);
        }
        cudaCheck(cudaMemcpyAsync((char*)d + off, dst, n, cudaMemcpyHostToDevice, ss));
        cudaCheck(cudaEventRecord(done[k], ss));
    }
    cudaCheck(cudaStreamSynchronize(ss));
}

// Checkpoint tensor t to d as bf16 (BF16 as is, F16/F32 converted), `ordered` as upload_bytes; returns
// d + its size.
static __nv_bfloat16* upload_st(const StTensor* t, __nv_bfloat16* d, int ordered) {
    size_t n = t->nbytes / (t->dtype == DT_F32 ? 4 : 2);
    if (t->dtype == DT_BF16) {
        upload_bytes(d, t->data, n * 2, ordered);
        return d + n;
    }
    float* f = (float*)xmalloc(n * 4);
    st_to_f32(t, f);
    uint16_t* h = (uint16_t*)xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = f32_to_bf16(f[i]);
    upload_bytes(d, h, n * 2, ordered);
    free(f);
    free(h);
    return d + n;
}

__nv_bfloat16* upload_tensor(GpuEngine* e, const StTensor* t, __nv_bfloat16* d) {
    return upload_st(t, d, !e->up_now);
}

static __nv_bfloat16* upload_into(GpuEngine* e, const char* name, __nv_bfloat16* d, int ordered) {
    size_t n;
    return upload_st(find_tensor(e, name, &n), d, ordered);
}

__nv_bfloat16* upload_to(GpuEngine* e, const char* name, __nv_bfloat16* d) {
    return upload_into(e, name, d, !e->up_now);
}

static __nv_bfloat16* upload(GpuEngine* e, const char* name) {
    size_t n;
    find_tensor(e, name, &n);
    __nv_bfloat16* d = (__nv_bfloat16*)dalloc(e, n * 2);
    upload_to(e, name, d);
    return d;
}

// A checkpoint tensor to d in fp32 (the Gated DeltaNet's conv, decays and gated norm, which its kernels
// read as fp32, as the CPU does). `ordered`: a plain cudaMemcpy (the resident upload, as it ran on a GPU);
// else at once on this thread's own stream as upload_bytes copies (a streamed layer: the queued work goes on).
static void upload_f32(GpuEngine* e, const char* name, float* d, int ordered) {
    size_t n;
    const StTensor* t = find_tensor(e, name, &n);
    float* f = (float*)xmalloc(n * 4);
    st_to_f32(t, f);
    if (ordered)
        cudaCheck(cudaMemcpy(d, f, n * 4, cudaMemcpyHostToDevice));
    else
        upload_bytes(d, f, n * 4, 0);
    free(f);
}

// The fp16 mode's weights: t (n values) rewritten as fp16 in place. A value beyond fp16's range becomes
// an infinity, and every score NaN: the scoring job then scores again with bf16 hi + lo.
void weight_to_f16(GpuEngine* e, __nv_bfloat16* t, size_t n, const char* what) {
    long over = gpu_bf16_to_f16((uint16_t*)t, (long)n);
    if (over) warn_msg("%s: %s holds %ld weights beyond fp16's range (65504)", e->m->dir, what, over);
}

// Where each LayerWeights field of the architecture table lives in a GpuLayer (fp32 or bf16: arch_gpu_f32).
#define SLOT(x)                                                                                                \
    { offsetof(LayerWeights, x), offsetof(GpuLayer, x) }
static const struct {
    size_t lw, gl;
} k_slots[] = {SLOT(w_in),
               SLOT(w_post),
               SLOT(q_norm),
               SLOT(k_norm),
               SLOT(router),
               SLOT(gdn_qkv),
               SLOT(gdn_z),
               SLOT(gdn_b),
               SLOT(gdn_a),
               SLOT(gdn_qkvz),
               SLOT(gdn_ba),
               SLOT(gdn_out),
               SLOT(gdn_conv),
               SLOT(gdn_alog),
               SLOT(gdn_dt),
               SLOT(gdn_norm),
               SLOT(sh_gate),
               SLOT(sh_up),
               SLOT(sh_down),
               SLOT(sh_w),
               {offsetof(LayerWeights, q_proj), offsetof(GpuLayer, q)},
               {offsetof(LayerWeights, k_proj), offsetof(GpuLayer, k)},
               {offsetof(LayerWeights, v_proj), offsetof(GpuLayer, v)},
               {offsetof(LayerWeights, o_proj), offsetof(GpuLayer, o)},
               {offsetof(LayerWeights, gate_proj), offsetof(GpuLayer, gate)},
               {offsetof(LayerWeights, up_proj), offsetof(GpuLayer, up)},
               {offsetof(LayerWeights, down_proj), offsetof(GpuLayer, down)}};

// g's pointer for the table row's LayerWeights field.
static void** slot_of(const GpuLayer* g, size_t lw_field) {
    for (size_t i = 0; i < sizeof(k_slots) / sizeof(k_slots[0]); i++)
        if (k_slots[i].lw == lw_field) return (void**)((char*)g + k_slots[i].gl);
    fail_other("internal: a LayerWeights field the GPU engine does not hold");
}

void* layer_alloc(GpuEngine* e, size_t bytes) {
    if (!e->carving) return dalloc(e, bytes);
    size_t off = e->carve_off;
    e->carve_off += (bytes + GPU_SLOT_ALIGN - 1) / GPU_SLOT_ALIGN * GPU_SLOT_ALIGN;
    if (!e->carve) return (void*)(uintptr_t)(GPU_SLOT_ALIGN + off); // measuring: never written
    if (e->carve_off > e->carve_cap)
        fail_other("internal: layer buffers of %zu bytes past a slot of %zu", e->carve_off, e->carve_cap);
    return e->carve + off;
}

// Layer l's weights into g, from its family's rows of the architecture table (engine/arch.h): every part the
// layer has but the routed experts (moe_upload). With `alloc`, g's buffers are allocated first (layer_alloc;
// q, k and v rows in one, so one GEMM can compute all three); else they exist with the same shapes. `up`:
// UP_ORDERED and UP_NOW upload as upload_bytes's ordered and not; UP_NONE allocates only.
void layer_upload(GpuEngine* e, int l, GpuLayer* g, int alloc, int up) {
    const Config* c = &e->m->c;
    const ArchFamily* f = c->fam;
    char name[256];
    __nv_bfloat16* next = NULL; // where the next of q, k, v goes
    if (arch_layer_has(c, l, PART_ATTN)) {
        long qkv = (arch_dim(c, DIM_QROWS) + 2 * arch_dim(c, DIM_KVD)) * c->hidden_size;
        if (alloc) g->q = (__nv_bfloat16*)layer_alloc(e, 2 * qkv);
        next = g->q;
    }
    for (int i = 0; i < f->n_tensors; i++) {
        const ArchTensor* r = &f->tensors[i];
        if (r->layout == LAYOUT_EXPERTS || !arch_layer_has(c, l, r->part)) continue;
        snprintf(name, sizeof(name), "%slayers.%d.%s", c->prefix, l, r->name);
        size_t n;
        find_tensor(e, name, &n);
        int f32 = arch_gpu_f32(r);
        void** p = slot_of(g, r->field);
        if (r->lin == LIN_Q || r->lin == LIN_K || r->lin == LIN_V)
            *p = next, next += n;
        else if (alloc)
            *p = layer_alloc(e, n * (f32 ? 4 : 2));
        if (up == UP_NONE) continue;
        if (f32)
            upload_f32(e, name, (float*)*p, up == UP_ORDERED);
        else
            upload_into(e, name, (__nv_bfloat16*)*p, up == UP_ORDERED);
        if (e->f16 && r->lin >= 0) weight_to_f16(e, (__nv_bfloat16*)*p, n, name); // linears only
    }
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

extern "C" GpuEngine* gpu_engine_init(const Model* m, int T, int B, int gemm) {
    return gpu_engine_init_layers(m, T, B, gemm, 0, m->c.num_layers, 1);
}

extern "C" int gpu_fp16_supported(const Config* c, int T) {
    return gpu_flash_supported(T, c->head_dim) && c->hidden_size % 16 == 0 &&
           (!c->n_sparse || c->moe_intermediate % 16 == 0); // the experts' grouped GEMMs' shapes
}

// res (streaming, engine/gpu_stream.cu): only layers with res[l] uploaded, no embedding table unless
// lm_head shares it, and the saved inputs of one layer; NULL: every layer of l0..l1-1. one_save: the saved
// inputs of one layer only (the merged kl scorer's engine, scoring/score_merge.cu).
static GpuEngine* engine_init(const Model* m, int T, int B, int gemm, int l0, int l1, int slots,
                              const unsigned char* res, int one_save) {
    if (gemm == GEMM_FP16 && !gpu_fp16_supported(&m->c, T))
        fail_other("internal: the fp16 GEMM mode on a model it does not support");
    GpuEngine* e = (GpuEngine*)xcalloc(1, sizeof(GpuEngine));
    e->slots = slots;
    e->l0 = l0;
    e->l1 = l1;
    int split = gemm == GEMM_BF16X2;
    e->split = split;
    e->f16 = gemm == GEMM_FP16;
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
    if ((l0 == 0 && !res) || (last && tied)) e->embed = upload(e, name);
    if (last) {
        snprintf(name, sizeof(name), "%snorm.weight", P);
        e->norm = upload(e, name);
        e->lm_head = tied ? e->embed : upload(e, "lm_head.weight");
        if (e->f16) {
            size_t n = (size_t)c->vocab_size * c->hidden_size;
            if (tied) { // the embedding lookup still reads bf16
                e->lm_head = (__nv_bfloat16*)dalloc(e, 2 * n);
                cudaCheck(cudaMemcpy(e->lm_head, e->embed, 2 * n, cudaMemcpyDeviceToDevice));
            }
            weight_to_f16(e, e->lm_head, n, "lm_head");
        }
    }
    for (int l = l0; l < l1; l++) {
        if (res && !res[l]) continue;
        if (model_layer_sparse(m, l)) moe_upload(e, l, &e->layers[l], 1);
        layer_upload(e, l, &e->layers[l], 1, UP_ORDERED);
    }
    // RoPE table as in kernels/rope.c (fp32 inv_freq, fp32 angle), over the rotated part of a head.
    RopeTable r;
    rope_init(&r, T, c->rotary_dim, c->rope_theta);
    size_t rb = sizeof(float) * T * (c->rotary_dim / 2);
    e->cos_t = (float*)dalloc(e, rb);
    e->sin_t = (float*)dalloc(e, rb);
    cudaCheck(cudaMemcpy(e->cos_t, r.cos, rb, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(e->sin_t, r.sin, rb, cudaMemcpyHostToDevice));
    rope_free(&r);
    long M = (long)B * T, D = c->hidden_size, I = c->intermediate_size;
    long qd = (long)c->num_heads * c->head_dim, kvd = (long)c->num_kv_heads * c->head_dim;
    long mx = widest_linear(m, l0, l1);
    e->ids = (int*)dalloc(e, sizeof(int) * M);
    e->h = (float*)dalloc(e, 4 * M * D);
    e->cur.a = (float*)dalloc(e, 4 * M * D);
    e->cur.v = (float*)dalloc(e, 4 * M * kvd);
    e->cur.att = (float*)dalloc(e, 4 * M * qd);
    e->cur.m_ = (float*)dalloc(e, 4 * M * D);
    e->cur.g = (float*)dalloc(e, 4 * M * I);
    e->cur.u = (float*)dalloc(e, 4 * M * I);
    e->cur.act = (float*)dalloc(e, 4 * M * I);
    long nTT = (long)B * c->num_heads * T * T;
    e->S = (float*)dalloc(e, 4 * nTT);
    e->P = (__nv_bfloat16*)dalloc(e, 2 * nTT);
    e->lse = (float*)dalloc(e, 4L * B * c->num_heads * T);
    e->hsave = e->hsave_all = (float*)dalloc(e, 4 * M * D * (res || one_save ? 1 : l1 - l0) * slots);
    e->a16 = (__nv_bfloat16*)dalloc(e, 2 * M * D);
    e->cur.q16 = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
    e->cur.k16 = (__nv_bfloat16*)dalloc(e, 2 * M * kvd);
    e->cur.v16 = (__nv_bfloat16*)dalloc(e, 2 * M * kvd);
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
        e->cur.q_lo = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
        e->cur.k_lo = (__nv_bfloat16*)dalloc(e, 2 * M * kvd);
        e->cur.v_lo = (__nv_bfloat16*)dalloc(e, 2 * M * kvd);
        e->att_lo = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
        e->m_lo = (__nv_bfloat16*)dalloc(e, 2 * M * D);
        e->act_lo = (__nv_bfloat16*)dalloc(e, 2 * M * I);
        e->P_lo = (__nv_bfloat16*)dalloc(e, 2 * nTT);
    }
    e->xq = (int8_t*)dalloc(e, M * mx);
    e->sx = (float*)dalloc(e, 4 * M);
    e->cur.q_lin =
        (float*)dalloc(e, 4 * M * arch_dim(c, DIM_QROWS)); // with the output gate: query and gate rows
    e->cur.k_lin = (float*)dalloc(e, 4 * M * kvd);
    e->cur.q_rstd = (float*)dalloc(e, 4 * M * c->num_heads);
    e->cur.k_rstd = (float*)dalloc(e, 4 * M * c->num_kv_heads);
    e->cur.a_rstd = (float*)dalloc(e, 4 * M);
    e->cur.m_rstd = (float*)dalloc(e, 4 * M);
    e->f_rstd = (float*)dalloc(e, 4 * M);
    e->cur.h_mid = (float*)dalloc(e, 4 * M * D);
    e->cur.y_o = (float*)dalloc(e, 4 * M * D);
    e->cur.y_down = (float*)dalloc(e, 4 * M * D);
    e->acc = (int32_t*)dalloc(e, 4 * M * mx);
    // the plan's pools: a group never spans layers, so one layer's linears bound it
    long wmax = 0, smax = 0;
    for (int l = l0; l < l1; l++) {
        long w = 0, o = 0;
        for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++) {
            w += (long)m->linears[i].out * m->linears[i].in;
            o += m->linears[i].out;
        }
        wmax = w > wmax ? w : wmax;
        smax = o > smax ? o : smax;
        e->cap_q = m->lin0[l + 1] - m->lin0[l] > e->cap_q ? m->lin0[l + 1] - m->lin0[l] : e->cap_q;
    }
    e->wmax = wmax;
    e->xf_cap = M * mx;
    e->wq_pool = (int8_t*)dalloc(e, wmax);
    e->sw_pool = (float*)dalloc(e, 4 * smax);
    e->wq = (int8_t**)xcalloc(e->cap_q, sizeof(int8_t*));
    e->sw = (float**)xcalloc(e->cap_q, sizeof(float*));
    e->q_idx = (int*)xcalloc(e->cap_q, sizeof(int));
    e->moe.q_layer = -1;
    e->kv_layer = -1;
    // the gradient may keep activations (gpu_grad_keep_plan) where each batch's backward follows its forward
    e->keep_ok = !res && !one_save && slots == 1 && l0 == 0 && l1 == c->num_layers;
    e->kv_amax = (float*)dalloc(e, sizeof(float) * B);
    if (c->n_sparse) moe_alloc(e, 0);
    if (c->fam->hybrid) hybrid_alloc(e, 0);
    return e;
}

// Qwen3-Next's fused projections: the columns of in_proj_qkvz's output (rows per key head h: q dk | k dk |
// v r dv | z r dv, r = Hv / Hk) and in_proj_ba's (b r | a r) that make q | k | v, z, b and a (forward.c's
// gdn_unfuse). Device arrays.
static void unfuse_maps(GpuEngine* e) {
    const Config* c = &e->m->c;
    GpuHybrid* y = &e->hy;
    int Hk = c->lin_hk, dk = c->lin_dk, r = c->lin_hv / c->lin_hk, rdv = r * c->lin_dv, kd = Hk * dk;
    int C = (int)arch_dim(c, DIM_GCONV), vd = (int)arch_dim(c, DIM_GVD), Hv = c->lin_hv, W = 2 * dk + 2 * rdv;
    int *mq = (int*)xmalloc(sizeof(int) * C), *mz = (int*)xmalloc(sizeof(int) * vd);
    int *mb = (int*)xmalloc(sizeof(int) * Hv), *ma = (int*)xmalloc(sizeof(int) * Hv);
    for (int h = 0; h < Hk; h++) {
        for (int i = 0; i < dk; i++) mq[h * dk + i] = h * W + i, mq[kd + h * dk + i] = h * W + dk + i;
        for (int i = 0; i < rdv; i++)
            mq[2 * kd + h * rdv + i] = h * W + 2 * dk + i, mz[h * rdv + i] = h * W + 2 * dk + rdv + i;
        for (int i = 0; i < r; i++) mb[h * r + i] = 2 * h * r + i, ma[h * r + i] = 2 * h * r + r + i;
    }
    int** dst[4] = {&y->map_qkv, &y->map_z, &y->map_b, &y->map_a};
    int* src[4] = {mq, mz, mb, ma};
    int n[4] = {C, vd, Hv, Hv};
    for (int k = 0; k < 4; k++) {
        *dst[k] = (int*)dalloc(e, sizeof(int) * n[k]);
        cudaCheck(cudaMemcpy(*dst[k], src[k], sizeof(int) * n[k], cudaMemcpyHostToDevice));
        free(src[k]);
    }
}

void hybrid_alloc(GpuEngine* e, int grad) {
    const Config* c = &e->m->c;
    GpuHybrid* y = &e->hy;
    long M = (long)e->B * e->T, D = c->hidden_size, C = arch_dim(c, DIM_GCONV), vd = arch_dim(c, DIM_GVD);
    long Hv = c->lin_hv, qd = arch_dim(c, DIM_QD), Is = c->shared_inter;
    int gdn = 0, attn = 0, fused = c->fam->fused_gdn;
    for (int l = e->l0; l < e->l1; l++) gdn |= c->linear[l], attn |= !c->linear[l];
    if (grad) {
        if (gdn) {
            y->dqkv = (float*)dalloc(e, 4 * M * C);
            y->dz = (float*)dalloc(e, 4 * M * vd);
            y->dgb = (float*)dalloc(e, 4 * M * Hv);
            y->dga = (float*)dalloc(e, 4 * M * Hv);
            y->dout = (float*)dalloc(e, 4 * M * vd);
            if (fused)
                y->draw = (float*)dalloc(e, 4 * M * (C + vd)), y->draw2 = (float*)dalloc(e, 4 * M * 2 * Hv);
        }
        if (attn && c->fam->attn_gate) y->dqraw = (float*)dalloc(e, 4 * M * 2 * qd);
        if (Is) {
            y->dsh_y = (float*)dalloc(e, 4 * M * D);
            y->dsh_g = (float*)dalloc(e, 4 * M * Is);
            y->dsh_u = (float*)dalloc(e, 4 * M * Is);
            y->dsh_act = (float*)dalloc(e, 4 * M * Is);
        }
        return;
    }
    y->on = 1;
    y->w_add = 1.0f; // README §3: (1 + w) norms in every hybrid family
    if (gdn) {
        GdnShape sh = {e->T, c->lin_hk, c->lin_hv, c->lin_dk, c->lin_dv, c->lin_conv, c->rms_eps};
        y->cache = gpu_gdn_cache_init(&sh, e->B); // its own cudaMallocs: counted here, and in the peak by
        e->alloc_bytes += gpu_gdn_cache_bytes(&sh, e->B);
        y->qkv = (float*)dalloc(e, 4 * M * C); // this allocation's look at the free memory
        y->z = (float*)dalloc(e, 4 * M * vd);
        y->b = (float*)dalloc(e, 4 * M * Hv);
        y->a = (float*)dalloc(e, 4 * M * Hv);
        y->out = (float*)dalloc(e, 4 * M * vd);
        y->out16 = (__nv_bfloat16*)dalloc(e, 2 * M * vd);
        if (e->split) y->out_lo = (__nv_bfloat16*)dalloc(e, 2 * M * vd);
        if (fused) {
            y->raw = (float*)dalloc(e, 4 * M * (C + vd));
            y->raw2 = (float*)dalloc(e, 4 * M * 2 * Hv);
            unfuse_maps(e);
        }
    }
    if (attn && c->fam->attn_gate) y->att_g = (float*)dalloc(e, 4 * M * qd);
    if (Is) {
        y->sh_g = (float*)dalloc(e, 4 * M * Is);
        y->sh_u = (float*)dalloc(e, 4 * M * Is);
        y->sh_act = (float*)dalloc(e, 4 * M * Is);
        y->sh_y = (float*)dalloc(e, 4 * M * D);
        y->sh_s = (float*)dalloc(e, 4 * M);
        y->sh_act16 = (__nv_bfloat16*)dalloc(e, 2 * M * Is);
        if (e->split) y->sh_act_lo = (__nv_bfloat16*)dalloc(e, 2 * M * Is);
    }
}

extern "C" GpuEngine* gpu_engine_init_layers(const Model* m, int T, int B, int gemm, int l0, int l1,
                                             int slots) {
    return engine_init(m, T, B, gemm, l0, l1, slots, NULL, 0);
}

GpuEngine* engine_init_stream(const Model* m, int T, int B, int gemm, const unsigned char* res) {
    return engine_init(m, T, B, gemm, 0, m->c.num_layers, 1, res, 0);
}

GpuEngine* engine_init_merge(const Model* m, int T, int B, int gemm) {
    return engine_init(m, T, B, gemm, 0, m->c.num_layers, 1, NULL, 1);
}

extern "C" void gpu_engine_walk_init(GpuEngine* e) {
    if (e->l1 != e->l0 + 1 || e->m->c.n_sparse) fail_other("internal: a walking engine holds one dense layer");
    int l = e->l0;
    memset(&e->spare, 0, sizeof(e->spare));
    layer_upload(e, l, &e->spare, 1, UP_NONE); // every dense layer has these shapes
    e->spare_l = -1;
}

extern "C" void gpu_engine_prefetch(GpuEngine* e, int l) {
    if (l < 0 || l >= e->m->c.num_layers || l == e->l0) fail_other("internal: prefetch of layer %d", l);
    layer_upload(e, l, &e->spare, 0, UP_NOW);
    e->spare_l = l;
}

extern "C" void gpu_engine_advance(GpuEngine* e, int l) {
    if (e->spare_l != l) fail_other("internal: layer %d advanced to before its prefetch", l);
    GpuLayer old = e->layers[e->l0];
    memset(&e->layers[e->l0], 0, sizeof(old));
    e->layers[l] = e->spare;
    e->spare = old;
    e->spare_l = -1;
    e->l0 = l;
    e->l1 = l + 1;
}

extern "C" void gpu_engine_free(GpuEngine* e) {
    prof_report(e);
    cublasDestroy(e->blas);
    for (int i = 0; i < e->n_allocs; i++) cudaCheck(cudaFree(e->allocs[i]));
    free(e->allocs);
    free(e->layers);
    free(e->wq), free(e->sw), free(e->q_idx), free(e->wf);
    free(e->rw), free(e->ron), free(e->rin);
    free(e->gq), free(e->gsw);
    free(e->pa_base), free(e->pa_lay), free(e->pa_dev);
    if (e->kept)
        for (int l = 0; l < e->l1 - e->l0; l++) free(e->kept[l]);
    free(e->kept), free(e->fresh);
    if (e->moe.E) {
        free(e->moe.h_offs), free(e->moe.ex_id);
    }
    gpu_gdn_cache_free(e->hy.cache);
    free(e);
}

extern "C" void gpu_select_device(int d) { cudaCheck(cudaSetDevice(d)); }

extern "C" size_t gpu_peak_bytes(GpuEngine* e) { return e->free0 - e->min_free; }

extern "C" size_t gpu_alloc_bytes(GpuEngine* e) { return e->alloc_bytes; }

extern "C" void* gpu_alloc(GpuEngine* e, size_t bytes) { return dalloc(e, bytes); }

const __nv_bfloat16* weight_of(const GpuEngine* e, int idx) {
    const Linear* l = &e->m->linears[idx];
    const ArchTensor* r = arch_linear(e->m->c.fam, l->kind);
    if (l->expert >= 0 || !r) fail_other("internal: weight_of %s", l->name);
    return *(__nv_bfloat16* const*)slot_of(&e->layers[l->layer], r->field);
}

long widest_linear(const Model* m, int l0, int l1) {
    long mx = m->c.hidden_size;
    for (int i = m->lin0[l0]; i < m->lin0[l1]; i++) {
        mx = m->linears[i].out > mx ? m->linears[i].out : mx;
        mx = m->linears[i].in > mx ? m->linears[i].in : mx;
    }
    return mx;
}

extern "C" void gpu_set_capture(GpuEngine* e, GpuCapture fn, void* ctx) {
    e->cap = fn;
    e->cap_ctx = ctx;
}

extern "C" void* gpu_linear_weight(GpuEngine* e, int idx) {
    const Linear* l = &e->m->linears[idx];
    if (l->expert >= 0) fail_other("internal: gpu_linear_weight on an expert (%s)", l->name);
    return (void*)weight_of(e, idx);
}

extern "C" void gpu_engine_layers(const GpuEngine* e, int* l0, int* l1) {
    *l0 = e->l0;
    *l1 = e->l1;
}

extern "C" void gpu_given_init(GpuEngine* e, int nf) {
    if (e->n_given) fail_other("internal: gpu_given_init called twice");
    long n = (long)nf * e->m->n_linears;
    e->n_given = nf;
    e->gq = (int8_t**)xcalloc(n, sizeof(int8_t*));
    e->gsw = (float**)xcalloc(n, sizeof(float*));
}

// Room for set f of linear idx. A sparse layer's experts share one block per set, laid out as
// moe_plan_set lays out its pool (every expert's gate rows then up rows, then every expert's down
// rows), so that the plan takes the block as it is.
static void given_alloc(GpuEngine* e, int f, int idx) {
    const Model* m = e->m;
    const Linear* l = &m->linears[idx];
    int8_t** gq = e->gq + (long)f * m->n_linears;
    float** gs = e->gsw + (long)f * m->n_linears;
    if (l->expert < 0) {
        gq[idx] = (int8_t*)dalloc(e, (size_t)l->out * l->in);
        gs[idx] = (float*)dalloc(e, sizeof(float) * l->out);
        return;
    }
    long E = m->c.num_experts, I = m->c.moe_intermediate, D = m->c.hidden_size;
    int8_t* q = (int8_t*)dalloc(e, E * 3 * I * D);                 // (E, 2 I, D) then (E, D, I)
    float* s = (float*)dalloc(e, sizeof(float) * E * (2 * I + D)); // (E, 2 I) then (E, D)
    for (int x = 0; x < E; x++) {
        int g = model_lin(m, l->layer, LIN_GATE, x), u = model_lin(m, l->layer, LIN_UP, x);
        int d = model_lin(m, l->layer, LIN_DOWN, x);
        gq[g] = q + x * 2 * I * D, gs[g] = s + x * 2 * I;
        gq[u] = gq[g] + I * D, gs[u] = gs[g] + I;
        gq[d] = q + E * 2 * I * D + x * D * I, gs[d] = s + E * 2 * I + x * D;
    }
}

extern "C" void gpu_given_set(GpuEngine* e, int f, int idx, const int8_t* codes, const float* scales) {
    const Linear* l = &e->m->linears[idx];
    if (f < 0 || f >= e->n_given || l->layer < e->l0 || l->layer >= e->l1)
        fail_other("internal: gpu_given_set: set %d of %s outside the engine", f, l->name);
    long k = (long)f * e->m->n_linears + idx;
    if (!e->gq[k]) given_alloc(e, f, idx);
    cudaCheck(cudaMemcpy(e->gq[k], codes, (size_t)l->out * l->in, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(e->gsw[k], scales, sizeof(float) * l->out, cudaMemcpyHostToDevice));
}

int8_t* given_codes(const GpuEngine* e, int f, int idx, float** sw) {
    long k = (long)f * e->m->n_linears + idx;
    if (f < 0 || f >= e->n_given || !e->gq[k])
        fail_other("internal: no given weights of %s for format %d", e->m->linears[idx].name, f);
    *sw = e->gsw[k];
    return e->gq[k];
}

// The next passes run linears[0..n) quantized: their weights as int8 codes (given ones as they are, or
// quantized now), their inputs on the fly. A sparse layer's experts (always all of them: README §5)
// are quantized together, in their fused layout (moe_plan_set); other linears one by one, their codes
// one after another in the pool. Emulated formats (quant_gpu_emulated) keep fp32 fake-quantized weights
// instead (wf_pool); their experts are not supported (the scoring job refuses them for
// mixture-of-experts models), nor are given weights (int8 GEMMs only: the scoring job refuses GPTQ
// with them).
extern "C" void gpu_plan_set(GpuEngine* e, const int* linears, int n, QuantSpec w, QuantSpec in, int f) {
    gpu_plan_clear(e);
    e->in_spec = in;
    e->emu = quant_gpu_emulated(w, in);
    if (e->emu && e->n_given) fail_other("internal: given weights planned with an emulated format");
    if (e->emu) emu_alloc(e);
    int8_t* wq = e->wq_pool;
    float* sw = e->sw_pool;
    float* wf = e->wf_pool;
    for (int j = 0; j < n; j++) {
        const Linear* l = &e->m->linears[linears[j]];
        if (l->expert >= 0) {
            if (e->emu) fail_other("internal: an emulated format planned for experts");
            if (e->moe.q_layer < 0) moe_plan_set(e, l->layer, w, f);
            continue;
        }
        if (e->nq == e->cap_q) fail_other("internal: a quantization plan spanning layers");
        e->q_idx[e->nq] = linears[j];
        if (e->n_given) { // GPTQ's codes, resident: nothing to quantize
            e->wq[e->nq] = given_codes(e, f, linears[j], &e->sw[e->nq]);
            e->nq++;
            continue;
        }
        if (e->emu) {
            e->wf[e->nq++] = wf;
            if (e->f16) // the same values: fp16 holds the bf16 weights (bar those below 2^-14)
                gpu_fake_quant_f16(wf, (const uint16_t*)weight_of(e, linears[j]), l->out, l->in, w, 1);
            else
                gpu_fake_quant_bf16(wf, (const bf16_t*)weight_of(e, linears[j]), l->out, l->in, w, 1);
            wf += (long)l->out * l->in;
            continue;
        }
        e->wq[e->nq] = wq;
        e->sw[e->nq++] = sw;
        if (e->f16)
            gpu_quant_rows_f16(wq, sw, (const uint16_t*)weight_of(e, linears[j]), l->out, l->in, w);
        else
            gpu_quant_rows_bf16(wq, sw, (const bf16_t*)weight_of(e, linears[j]), l->out, l->in, w);
        wq += (long)l->out * l->in;
        sw += l->out;
    }
}

void emu_alloc(GpuEngine* e) {
    if (e->wf_pool) return;
    e->wf_pool = (float*)dalloc(e, 4 * e->wmax);
    e->wf = (float**)xcalloc(e->cap_q, sizeof(float*));
    e->xf = (float*)dalloc(e, 4 * e->xf_cap);
    e->yf = (float*)dalloc(e, 4 * e->xf_cap);
}

// Linear idx of the next passes on the deployed weight w (host (out, in) fp32: what a checkpoint loads as),
// inputs fake-quantized with in; w NULL: back to its bf16 weight. The weight's buffer is kept for the next set.
extern "C" void gpu_recipe_set(GpuEngine* e, int idx, const float* w, QuantSpec in) {
    const Model* m = e->m;
    if (e->f16) fail_other("internal: a recipe in the fp16 GEMM mode");
    if (!e->ron) {
        e->rw = (float**)xcalloc(m->n_linears, sizeof(float*));
        e->ron = (unsigned char*)xcalloc(m->n_linears, 1);
        e->rin = (QuantSpec*)xcalloc(m->n_linears, sizeof(QuantSpec));
        emu_alloc(e);
    }
    if (!w) {
        e->ron[idx] = 0;
        return;
    }
    const Linear* l = &m->linears[idx];
    size_t bytes = sizeof(float) * (size_t)l->out * l->in;
    if (!e->rw[idx]) e->rw[idx] = (float*)dalloc(e, bytes);
    cudaCheck(cudaMemcpy(e->rw[idx], w, bytes, cudaMemcpyHostToDevice));
    e->rin[idx] = in;
    e->ron[idx] = 1;
    if (l->expert >= 0 && !e->rxs) {
        const Config* c = &m->c;
        long D = c->hidden_size, I = c->moe_intermediate;
        e->rxs = (float*)dalloc(e, 4L * e->B * e->T * c->top_k * (D > I ? D : I));
    }
}

extern "C" void gpu_recipe_clear(GpuEngine* e) {
    if (e->ron) memset(e->ron, 0, e->m->n_linears);
}

extern "C" void gpu_plan_clear(GpuEngine* e) {
    e->nq = 0;
    e->moe.q_layer = -1;
    e->kv_layer = -1;
}

extern "C" void gpu_plan_kv(GpuEngine* e, int l, QuantSpec q) {
    gpu_plan_clear(e);
    if (e->f16) fail_other("internal: a KV-cache format in the fp16 GEMM mode");
    e->kv_layer = l;
    e->kv_spec = q;
}

// layer_forward's KV cache (README §4): K's bf16 GEMM inputs (hi + lo, stride ld) and V's (from its fp32 copy
// when there is one) replaced by their fake-quantized values, each window's amax per tensor.
void kv_cache_quant(GpuEngine* e, int l, int M, __nv_bfloat16* k16, __nv_bfloat16* k_lo, __nv_bfloat16* v16,
                    __nv_bfloat16* v_lo, const float* v, long ld) {
    if (e->kv_layer != l) return;
    int width = e->m->c.num_kv_heads * e->m->c.head_dim;
    gpu_kv_fake_quant(NULL, NULL, (bf16_t*)k16, (bf16_t*)k_lo, NULL, ld, M / e->T, e->T, width, e->kv_spec,
                      e->kv_amax);
    gpu_kv_fake_quant(NULL, NULL, (bf16_t*)v16, (bf16_t*)v_lo, v, ld, M / e->T, e->T, width, e->kv_spec,
                      e->kv_amax);
}

extern "C" const float* gpu_kv_quantized(GpuEngine* e, int which, int M, QuantSpec q, const float** y) {
    if (e->nq || e->kv_layer >= 0) fail_other("internal: gpu_kv_quantized during a quantized pass");
    int width = e->m->c.num_kv_heads * e->m->c.head_dim;
    if (!e->kv_x) {
        e->kv_x = (float*)dalloc(e, sizeof(float) * e->B * e->T * width);
        e->kv_q = (float*)dalloc(e, sizeof(float) * e->B * e->T * width);
    }
    if (which) // V: its fp32 copy
        gpu_kv_fake_quant(e->kv_q, e->kv_x, NULL, NULL, e->cur.v, width, M / e->T, e->T, width, q, e->kv_amax);
    else // K after k_norm and RoPE: the attention GEMMs' inputs
        gpu_kv_fake_quant(e->kv_q, e->kv_x, (bf16_t*)e->cur.k16, (bf16_t*)e->cur.k_lo, NULL, width, M / e->T,
                          e->T, width, q, e->kv_amax);
    *y = e->kv_x;
    return e->kv_q;
}

extern "C" void gpu_mark_scores(GpuEngine* e) { prof_mark(e, P_SCORE); }

// The CUDA activation-only backward: mirrors engine/backward.c. The forward keeps each layer's input, and
// where memory allows (gpu_grad_keep_plan) a dense layer's activations; every other layer is recomputed
// (last first) before its backward, and a hook sees every linear's dL/dY with its input and output.
#include <math.h>
#include <string.h>

#include "gpu_engine.cuh"

extern "C" float* gpu_hidden_grad(GpuEngine* e) { return e->dh; }

void grad_alloc(GpuEngine* e) {
    const Config* c = &e->m->c;
    long M = (long)e->B * e->T, D = c->hidden_size, I = c->intermediate_size, V = c->vocab_size, T = e->T;
    long qd = (long)c->num_heads * c->head_dim, kvd = (long)c->num_kv_heads * c->head_dim;
    long mx = widest_linear(e->m, e->l0, e->l1);
    mx = mx > c->num_experts ? mx : c->num_experts; // the router's backward splits (M, E)
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
    int last = e->l1 == c->num_layers; // the logits and their gradient live on the last stage only
    // lm_head chunks of whole windows, about 512 rows: for Qwen3-8B's batches of 4 x 512 this keeps
    // 0.47 GB of logits and gradient where the whole batch's took 1.87 GB
    e->head_rows = (int)(T * (512 / T > 1 ? (512 / T < e->B ? 512 / T : e->B) : 1));
    long HR = e->head_rows;
    if (last) e->glogits = (float*)dalloc(e, 4 * HR * V);
    if (last) e->dlog16 = (__nv_bfloat16*)dalloc(e, 2 * HR * V);
    e->datt16 = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
    e->dS16 = (__nv_bfloat16*)dalloc(e, 2 * nTT);
    if (e->split) { // the low halves
        e->dy_lo = (__nv_bfloat16*)dalloc(e, 2 * M * mx);
        if (last) e->dlog_lo = (__nv_bfloat16*)dalloc(e, 2 * HR * V);
        e->datt_lo = (__nv_bfloat16*)dalloc(e, 2 * M * qd);
        e->dS_lo = (__nv_bfloat16*)dalloc(e, 2 * nTT);
    }
    e->loss_rows = (double*)dalloc(e, 8 * M);
    if (e->moe.E) moe_alloc(e, 1);
    if (e->hy.on) hybrid_alloc(e, 1);
}

// ---- the gradient's kept activations (README "GPU scoring") ----

// AUTOQ_GRAD_KEEP's default: GRAD_KEEP_AUTO keeps the activations of as many dense layers as the GPU's memory
// (or --gpu-memory's cap) holds. On one H100 (2026-12-07) the kept scores were bit-identical to the recompute's
// (tests/test_gpu.c's keep part, tests/test_gpu_keep.sh) and the Qwen3-8B shape's gradient took 7.07 s instead
// of 8.91 s at a 38.4 GiB peak instead of 18.9 (bench/grad_keep_bench.sh).
#define GRAD_KEEP_AUTO (-1)
#define GRAD_KEEP_DEFAULT GRAD_KEEP_AUTO

static int keep_mode(void) {
    const char* v = getenv("AUTOQ_GRAD_KEEP");
    if (!v || !*v) return GRAD_KEEP_DEFAULT;
    if (!strcmp(v, "0")) return 0;
    if (!strcmp(v, "1")) return 1;
    if (!strcmp(v, "auto")) return GRAD_KEEP_AUTO;
    fail_input("AUTOQ_GRAD_KEEP: '%s' is none of 0 (recompute), 1 (keep every layer) and auto", v);
    return 0;
}

void acts_bind(GpuEngine* e, int l) {
    e->cur = l >= 0 && e->kept && e->kept[l - e->l0] ? *e->kept[l - e->l0] : e->own;
}

// A kept layer's buffers carved from base (NULL: counted only), each as the engine's own buffer of that name
// is sized (engine_init), 256-byte aligned; returns their bytes.
static size_t acts_carve(const GpuEngine* e, char* base, GpuActs* k) {
    const Config* c = &e->m->c;
    size_t M = (size_t)e->B * e->T, D = c->hidden_size, I = c->intermediate_size, H = c->num_heads;
    size_t KV = c->num_kv_heads, qd = H * c->head_dim, kvd = KV * c->head_dim, qr = arch_dim(c, DIM_QROWS);
    float** f[16] = {&k->a, &k->y_o, &k->h_mid, &k->m_,  &k->y_down, &k->q_lin,  &k->att,    &k->k_lin,
                     &k->v, &k->g,   &k->u,     &k->act, &k->a_rstd, &k->m_rstd, &k->q_rstd, &k->k_rstd};
    size_t fn[16] = {D, D, D, D, D, qr, qd, kvd, kvd, I, I, I, 1, 1, H, KV};
    __nv_bfloat16** h[6] = {&k->q16, &k->k16, &k->v16, &k->q_lo, &k->k_lo, &k->v_lo};
    size_t hn[6] = {qd, kvd, kvd, qd, kvd, kvd};
    size_t off = 0;
    for (int i = 0; i < 16; i++) {
        *f[i] = base ? (float*)(base + off) : NULL;
        off += (4 * M * fn[i] + 255) / 256 * 256;
    }
    for (int i = 0; i < 6; i++) {
        *h[i] = NULL;
        if (i >= 3 && !e->split) continue; // lo halves with hi + lo GEMM inputs only
        *h[i] = base ? (__nv_bfloat16*)(base + off) : NULL;
        off += (2 * M * hn[i] + 255) / 256 * 256;
    }
    return off;
}

// A layer whose activations the keep path holds: a dense Qwen3 layer (sparse and hybrid layers keep the
// recompute: their buffers are others).
static int keepable(const GpuEngine* e, int l) {
    return e->keep_ok && !e->hy.on && !model_layer_sparse(e->m, l);
}

// The choice of gpu_grad_keep_plan: allocates a kept layer's buffers for as many keepable layers as fit.
static void keep_decide(GpuEngine* e, double cap) {
    int n = e->l1 - e->l0, want = keep_mode(), eligible = 0, nk;
    for (int l = e->l0; l < e->l1; l++) eligible += keepable(e, l);
    if (want == 1 && !eligible)
        info_msg("score: AUTOQ_GRAD_KEEP=1: no layer of this engine can keep its activations (sparse or hybrid "
                 "layers, or a streamed or pipelined run): every layer recomputed");
    if (want == 0 || !eligible) return;
    if (!e->dh) grad_alloc(e); // the backward's buffers first: what is left after them decides
    GpuActs k;
    double per = (double)acts_carve(e, NULL, &k);
    size_t fr, tot;
    cudaCheck(cudaMemGetInfo(&fr, &tot));
    // what later passes may still allocate: 1 GiB (library workspaces, the hooks' KV-cache buffers, pointer
    // arrays, per-window sums) and an emulated format's fake-quantized weights and inputs
    double margin = 1073741824.0 + (e->wf_pool ? 0 : 4.0 * e->wmax + 8.0 * e->xf_cap);
    double room = (double)fr - margin;
    if (cap > 0) room = fmin(room, cap - ((double)e->free0 - (double)fr) - margin);
    long fit = room > 0 ? (long)(room / per) : 0;
    nk = fit < eligible ? (int)fit : eligible;
    if (want == 1 && nk < eligible)
        fail_input(
            "AUTOQ_GRAD_KEEP=1: keeping the activations of %d layers takes %.2f GiB; %.2f GiB are left %s "
            "(after a margin of %.2f GiB): unset it (or 0) to recompute",
            eligible, eligible * per / 1073741824.0, fmax(room, 0) / 1073741824.0,
            cap > 0 ? "under --gpu-memory" : "on the GPU", margin / 1073741824.0);
    if (nk) {
        e->own = e->cur; // kept layers bind theirs; the others and the head use these
        e->kept = (GpuActs**)xcalloc(n, sizeof(GpuActs*));
        e->fresh = (unsigned char*)xcalloc(n, 1);
        for (int l = e->l1 - 1, got = 0; l >= e->l0 && got < nk; l--) { // any nk layers save the same
            if (!keepable(e, l)) continue;
            GpuActs* a = (GpuActs*)xmalloc(sizeof(GpuActs));
            acts_carve(e, (char*)dalloc(e, (size_t)per), a);
            e->kept[l - e->l0] = a;
            got++;
        }
    }
    info_msg("score: gradient: the forward keeps the activations of %d of %d layers (%.2f GiB), the backward "
             "recomputes the rest (AUTOQ_GRAD_KEEP=0: every layer)",
             nk, n, nk * per / 1073741824.0);
}

extern "C" int gpu_grad_keep_plan(GpuEngine* e, double cap, unsigned char* recomputed) {
    if (!e->keep_planned) keep_decide(e, cap); // once: another scorer on the engine sees the first's choice
    e->keep_planned = 1;
    int nk = 0;
    for (int l = e->l0; l < e->l1; l++) {
        if (e->kept && e->kept[l - e->l0])
            nk++;
        else if (recomputed) // engines of several threads mark the same array
            __atomic_store_n(&recomputed[l], (unsigned char)1, __ATOMIC_RELAXED);
    }
    return nk;
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
void linear_bwd(GpuEngine* e, float* dx, const float* dy, const __nv_bfloat16* w, int M, int K, int N,
                float beta) {
    gpu_split_bf16((bf16_t*)e->dy16, (bf16_t*)e->dy_lo, dy, (long)M * N);
    gemm_bwd(e, dx, e->dy16, e->dy_lo, w, M, K, N, beta);
}

// acc = Q(x) Q(W)^T for linear idx, the weight and input quantized with w and in: what the gradient
// score of a hook needs. x's codes are reused while x and in stay the same (q, k, v share their
// input, as do gate and up); the weight codes are given set f's, or go to the plan's first slot, free
// in a gradient pass.
extern "C" const int32_t* gpu_linear_quantized(GpuEngine* e, int idx, const float* x, int M, QuantSpec w,
                                               QuantSpec in, int f, const float** sx, const float** sw) {
    if (e->nq) fail_other("internal: gpu_linear_quantized during a quantized pass");
    const Linear* l = &e->m->linears[idx];
    int8_t* wq = e->wq_pool;
    float* s = e->sw_pool;
    if (e->n_given)
        wq = given_codes(e, f, idx, &s);
    else
        gpu_quant_rows_bf16(wq, s, (const bf16_t*)weight_of(e, idx), l->out, l->in, w);
    if (e->xq_src != x || memcmp(&e->xq_spec, &in, sizeof(in)) != 0) {
        gpu_quant_rows_f32(e->xq, e->sx, x, M, l->in, in);
        e->xq_src = x;
        e->xq_spec = in;
    }
    gemm_i8(e, e->acc, e->xq, wq, M, l->in, l->out);
    *sx = e->sx;
    *sw = s;
    return e->acc;
}

// yq (M, out) fp32 = fq(x) fq(W)^T for linear idx under an emulated format (quant_gpu_emulated): the
// gradient score's Yq. The weight is fake-quantized into the pool's start (free in a gradient pass); x's
// fake-quantized copy is reused while x and in stay the same.
extern "C" const float* gpu_linear_fake(GpuEngine* e, int idx, const float* x, int M, QuantSpec w,
                                        QuantSpec in) {
    if (e->nq) fail_other("internal: gpu_linear_fake during a quantized pass");
    if (e->n_given) fail_other("internal: given weights with an emulated format");
    emu_alloc(e);
    const Linear* l = &e->m->linears[idx];
    gpu_fake_quant_bf16(e->wf_pool, (const bf16_t*)weight_of(e, idx), l->out, l->in, w, 1);
    const float* xin = x;
    if (in.bits) {
        if (e->xf_src != x || memcmp(&e->xf_spec, &in, sizeof(in)) != 0) {
            gpu_fake_quant_f32(e->xf, x, M, l->in, in, 0);
            e->xf_src = x;
            e->xf_spec = in;
        }
        xin = e->xf;
    }
    gemm_f32(e, e->yf, xin, e->wf_pool, M, l->in, l->out, 0);
    return e->yf;
}

// The hook sees dL/dY of linear idx, its input X and output Y in the unquantized pass.
void grad_linear(GpuEngine* e, GpuGradHook hook, void* ctx, int idx, const float* dy, const float* x,
                 const float* y, int M) {
    prof_mark(e, P_BWD);
    hook(e, idx, dy, x, y, M, ctx);
    prof_mark(e, P_SCORE);
}

// From dO (datt) and the forward's S: dq, dk, dv (before the q/k norm and RoPE backward). new_s: S is not the
// forward's (the fused forward kept none; a kept layer's forward ran before other layers' did), so it is
// computed again from q16 and k16, by the forward's own call.
static void attention_backward(GpuEngine* e, int M, int new_s) {
    const Config* c = &e->m->c;
    int T = e->T, nb = M / T, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    int qd = H * hd, kvd = KV * hd;
    float scale = 1.0f / sqrtf((float)hd);
    gpu_split_bf16((bf16_t*)e->datt16, (bf16_t*)e->datt_lo, e->datt, (long)M * qd);
    if (new_s) // S_h^T = K_h . Q_h^T again
        att_gemm(e, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hd, scale, e->cur.k16, e->cur.k_lo, kvd, LAY_KV, e->cur.q16,
                 e->cur.q_lo, qd, LAY_Q, e->S, 0, T, LAY_S, nb);
    // dP^T = V . dO^T, then dS; dQ^T = K^T dS^T; per query head dK^T = Q^T dS, dV^T = dO^T P
    att_gemm(e, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hd, 1.0f, e->cur.v16, e->cur.v_lo, kvd, LAY_KV, e->datt16,
             e->datt_lo, qd, LAY_Q, e->dP, 0, T, LAY_S, nb);
    gpu_attention_ds((bf16_t*)e->P, (bf16_t*)e->P_lo, (bf16_t*)e->dS16, (bf16_t*)e->dS_lo, e->S, e->dP, nb * H,
                     T, scale);
    att_gemm(e, CUBLAS_OP_N, CUBLAS_OP_N, hd, T, T, 1.0f, e->cur.k16, e->cur.k_lo, kvd, LAY_KV, e->dS16,
             e->dS_lo, T, LAY_S, e->dq, 0, qd, LAY_Q, nb);
    att_gemm(e, CUBLAS_OP_N, CUBLAS_OP_T, hd, T, T, 1.0f, e->cur.q16, e->cur.q_lo, qd, LAY_Q, e->dS16, e->dS_lo,
             T, LAY_S, e->dk_full, 0, qd, LAY_Q, nb);
    att_gemm(e, CUBLAS_OP_N, CUBLAS_OP_T, hd, T, T, 1.0f, e->datt16, e->datt_lo, qd, LAY_Q, e->P, e->P_lo, T,
             LAY_S, e->dv_full, 0, qd, LAY_Q, nb);
    gpu_sum_heads(e->dk, e->dk_full, M, KV, H / KV, hd);
    gpu_sum_heads(e->dv, e->dv_full, M, KV, H / KV, hd);
}

// The KV cache's gradients (README §6): dL/dK after RoPE and dL/dV, as attention read them (before the RoPE
// and k_norm backward turns dk into k_proj's output gradient).
static void kv_hooks(GpuEngine* e, GpuGradHook hook, void* ctx, int l, int M) {
    int L = e->m->c.num_layers;
    grad_linear(e, hook, ctx, gpu_kv_hook_index(L, l, 0), e->dk, NULL, NULL, M);
    grad_linear(e, hook, ctx, gpu_kv_hook_index(L, l, 1), e->dv, NULL, NULL, M);
}

// The shared expert of sparse layer l (backward.c's shared_backward): dh = dL/d(layer output) on entry; dm +=
// its share (moe_backward wrote dm first).
static void shared_backward(GpuEngine* e, GpuGradHook hook, void* ctx, int l, int M) {
    const Model* md = e->m;
    const GpuLayer* w = &e->layers[l];
    GpuHybrid* y = &e->hy;
    int D = md->c.hidden_size, Is = md->c.shared_inter;
    gpu_shared_gate_backward(y->dsh_y, e->dm, e->dh, y->sh_s, y->sh_y, (const bf16_t*)w->sh_w, M, D);
    grad_linear(e, hook, ctx, model_lin(md, l, LIN_SH_DOWN, -1), y->dsh_y, y->sh_act, y->sh_y, M);
    linear_bwd(e, y->dsh_act, y->dsh_y, w->sh_down, M, Is, D, 0.0f);
    gpu_swiglu_backward(y->dsh_g, y->dsh_u, y->dsh_act, y->sh_g, y->sh_u, (long)M * Is);
    grad_linear(e, hook, ctx, model_lin(md, l, LIN_SH_GATE, -1), y->dsh_g, e->cur.m_, y->sh_g, M);
    grad_linear(e, hook, ctx, model_lin(md, l, LIN_SH_UP, -1), y->dsh_u, e->cur.m_, y->sh_u, M);
    linear_bwd(e, e->dm, y->dsh_g, w->sh_gate, M, D, Is, 1.0f);
    linear_bwd(e, e->dm, y->dsh_u, w->sh_up, M, D, Is, 1.0f);
}

// A Gated DeltaNet token mixer (backward.c's gdn_layer_backward): dh = dL/d(out_proj output) on entry; e->da
// = dL/da on exit.
static void gdn_backward(GpuEngine* e, GpuGradHook hook, void* ctx, int l, int M) {
    const Model* md = e->m;
    const Config* c = &md->c;
    const GpuLayer* w = &e->layers[l];
    GpuHybrid* y = &e->hy;
    int D = c->hidden_size, Hv = c->lin_hv, C = (int)arch_dim(c, DIM_GCONV), vd = (int)arch_dim(c, DIM_GVD);
    grad_linear(e, hook, ctx, model_lin(md, l, LIN_GDN_OUT, -1), e->dh, y->out, e->cur.y_o, M);
    linear_bwd(e, y->dout, e->dh, w->gdn_out, M, vd, D, 0.0f);
    GdnShape sh = {e->T, c->lin_hk, Hv, c->lin_dk, c->lin_dv, c->lin_conv, c->rms_eps};
    GdnParams p = {w->gdn_conv, w->gdn_alog, w->gdn_dt, w->gdn_norm};
    gpu_gdn_backward(&sh, M / e->T, &p, y->cache, y->dout, y->dqkv, y->dz, y->dgb, y->dga);
    prof_mark(e, P_BWD);
    if (c->fam->fused_gdn) { // back into the fused projections' columns
        gpu_scatter_cols(y->draw, C + vd, y->dqkv, y->map_qkv, M, C);
        gpu_scatter_cols(y->draw, C + vd, y->dz, y->map_z, M, vd);
        gpu_scatter_cols(y->draw2, 2 * Hv, y->dgb, y->map_b, M, Hv);
        gpu_scatter_cols(y->draw2, 2 * Hv, y->dga, y->map_a, M, Hv);
        grad_linear(e, hook, ctx, model_lin(md, l, LIN_GDN_QKVZ, -1), y->draw, e->cur.a, y->raw, M);
        grad_linear(e, hook, ctx, model_lin(md, l, LIN_GDN_BA, -1), y->draw2, e->cur.a, y->raw2, M);
        linear_bwd(e, e->da, y->draw, w->gdn_qkvz, M, D, C + vd, 0.0f);
        linear_bwd(e, e->da, y->draw2, w->gdn_ba, M, D, 2 * Hv, 1.0f);
        return;
    }
    grad_linear(e, hook, ctx, model_lin(md, l, LIN_GDN_QKV, -1), y->dqkv, e->cur.a, y->qkv, M);
    grad_linear(e, hook, ctx, model_lin(md, l, LIN_GDN_Z, -1), y->dz, e->cur.a, y->z, M);
    grad_linear(e, hook, ctx, model_lin(md, l, LIN_GDN_B, -1), y->dgb, e->cur.a, y->b, M);
    grad_linear(e, hook, ctx, model_lin(md, l, LIN_GDN_A, -1), y->dga, e->cur.a, y->a, M);
    linear_bwd(e, e->da, y->dqkv, w->gdn_qkv, M, D, C, 0.0f);
    linear_bwd(e, e->da, y->dz, w->gdn_z, M, D, vd, 1.0f);
    linear_bwd(e, e->da, y->dgb, w->gdn_b, M, D, Hv, 1.0f);
    linear_bwd(e, e->da, y->dga, w->gdn_a, M, D, Hv, 1.0f);
}

// A hybrid family's full attention (backward.c's attn_backward): dh = dL/d(o_proj output) on entry; e->da on
// exit. With the output gate, q_proj's gradient rows are per head hd query then hd gate values (dqraw).
static void gated_attention_backward(GpuEngine* e, GpuGradHook hook, void* ctx, int l, int M) {
    const Model* md = e->m;
    const Config* c = &md->c;
    const GpuLayer* w = &e->layers[l];
    GpuHybrid* y = &e->hy;
    int D = c->hidden_size, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim, gated = c->fam->attn_gate;
    long qd = (long)H * hd, kvd = (long)KV * hd, qrows = arch_dim(c, DIM_QROWS);
    grad_linear(e, hook, ctx, model_lin(md, l, LIN_O, -1), e->dh, gated ? y->att_g : e->cur.att, e->cur.y_o, M);
    linear_bwd(e, e->datt, e->dh, w->o, M, (int)qd, D, 0.0f);
    float* dq = gated ? y->dqraw : e->dq; // q_proj's output gradient
    if (gated)
        gpu_attn_gate_backward(e->datt, dq + hd, e->datt, e->cur.att, e->cur.q_lin + hd, 2 * qd, 2 * hd, M, H,
                               hd);
    attention_backward(e, M, e->flash);
    kv_hooks(e, hook, ctx, l, M);
    gpu_qk_norm_rope_part_backward(dq, qrows, gated ? 2 * hd : hd, e->dq, e->cur.q_lin,
                                   (const bf16_t*)w->q_norm, y->w_add, e->cur.q_rstd, e->cos_t, e->sin_t, M,
                                   e->T, H, hd, c->rotary_dim);
    gpu_qk_norm_rope_part_backward(e->dk, kvd, hd, e->dk, e->cur.k_lin, (const bf16_t*)w->k_norm, y->w_add,
                                   e->cur.k_rstd, e->cos_t, e->sin_t, M, e->T, KV, hd, c->rotary_dim);
    grad_linear(e, hook, ctx, model_lin(md, l, LIN_Q, -1), dq, e->cur.a, e->cur.q_lin, M);
    grad_linear(e, hook, ctx, model_lin(md, l, LIN_K, -1), e->dk, e->cur.a, e->cur.k_lin, M);
    grad_linear(e, hook, ctx, model_lin(md, l, LIN_V, -1), e->dv, e->cur.a, e->cur.v, M);
    linear_bwd(e, e->da, dq, w->q, M, D, (int)qrows, 0.0f);
    linear_bwd(e, e->da, e->dk, w->k, M, D, (int)kvd, 1.0f);
    linear_bwd(e, e->da, e->dv, w->v, M, D, (int)kvd, 1.0f);
}

// The dense MLP's backward: dh = dL/d(its output) in, e->dm out.
static void mlp_backward(GpuEngine* e, GpuGradHook hook, void* ctx, int l, int M) {
    const Model* md = e->m;
    const GpuLayer* w = &e->layers[l];
    int D = md->c.hidden_size, I = md->c.intermediate_size;
    int lg = model_lin(md, l, LIN_GATE, -1), lu = model_lin(md, l, LIN_UP, -1),
        ld = model_lin(md, l, LIN_DOWN, -1);
    grad_linear(e, hook, ctx, ld, e->dh, e->cur.act, e->cur.y_down, M);
    linear_bwd(e, e->dact, e->dh, w->down, M, I, D, 0.0f);
    gpu_swiglu_backward(e->dg, e->du, e->dact, e->cur.g, e->cur.u, (long)M * I);
    grad_linear(e, hook, ctx, lg, e->dg, e->cur.m_, e->cur.g, M);
    grad_linear(e, hook, ctx, lu, e->du, e->cur.m_, e->cur.u, M);
    linear_bwd(e, e->dm, e->dg, w->gate, M, D, I, 0.0f);
    linear_bwd(e, e->dm, e->du, w->up, M, D, I, 1.0f);
}

// dh: dL/d(h_out) of layer l on entry, dL/d(h_in) on exit. Mirrors engine/backward.c. kept: the layer's
// activations are its forward's kept ones (not a recompute's).
static void layer_backward(GpuEngine* e, GpuGradHook hook, void* ctx, int l, int M, int kept) {
    const Config* c = &e->m->c;
    const GpuLayer* w = &e->layers[l];
    int D = c->hidden_size, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    int qd = H * hd, kvd = KV * hd, base = e->m->lin0[l];
    float w_add = e->hy.w_add;
    const float* h_in = e->hsave + (long)(l - e->l0) * M * D;
    e->xq_src = e->xf_src = NULL; // a recompute rewrote the inputs (or they are a kept layer's)
    if (model_layer_sparse(e->m, l)) {
        moe_backward(e, l, M, hook, ctx);
        if (c->shared_inter) shared_backward(e, hook, ctx, l, M);
    } else {
        mlp_backward(e, hook, ctx, l, M);
    }
    gpu_rmsnorm_backward_add(e->dh, e->dm, e->cur.h_mid, (const bf16_t*)w->w_post, w_add, e->cur.m_rstd, M, D,
                             1);
    if (e->hy.on) {
        if (c->linear[l])
            gdn_backward(e, hook, ctx, l, M);
        else
            gated_attention_backward(e, hook, ctx, l, M);
        gpu_rmsnorm_backward_add(e->dh, e->da, h_in, (const bf16_t*)w->w_in, w_add, e->cur.a_rstd, M, D, 1);
        prof_mark(e, P_BWD);
        return;
    }
    grad_linear(e, hook, ctx, base + LIN_O, e->dh, e->cur.att, e->cur.y_o, M);
    linear_bwd(e, e->datt, e->dh, w->o, M, qd, D, 0.0f);
    attention_backward(e, M, e->flash || kept);
    kv_hooks(e, hook, ctx, l, M);
    gpu_qk_norm_rope_backward(e->dq, e->cur.q_lin, (const bf16_t*)w->q_norm, e->cur.q_rstd, e->cos_t, e->sin_t,
                              M, e->T, H, hd);
    gpu_qk_norm_rope_backward(e->dk, e->cur.k_lin, (const bf16_t*)w->k_norm, e->cur.k_rstd, e->cos_t, e->sin_t,
                              M, e->T, KV, hd);
    grad_linear(e, hook, ctx, base + LIN_Q, e->dq, e->cur.a, e->cur.q_lin, M);
    grad_linear(e, hook, ctx, base + LIN_K, e->dk, e->cur.a, e->cur.k_lin, M);
    grad_linear(e, hook, ctx, base + LIN_V, e->dv, e->cur.a, e->cur.v, M);
    linear_bwd(e, e->da, e->dq, w->q, M, D, qd, 0.0f);
    linear_bwd(e, e->da, e->dk, w->k, M, D, kvd, 1.0f);
    linear_bwd(e, e->da, e->dv, w->v, M, D, kvd, 1.0f);
    gpu_rmsnorm_backward(e->dh, e->da, h_in, (const bf16_t*)w->w_in, e->cur.a_rstd, M, D, 1);
    prof_mark(e, P_BWD);
}

// Last stage, gradient: logits, the loss per row and its gradient into dh (at the final norm's input).
// The lm_head, the loss and their backward run in chunks of head_rows (whole windows, so each row's
// position in its window is unchanged): the same sums as the whole batch at once.
extern "C" void gpu_loss_backward(GpuEngine* e, int nb) {
    const Config* c = &e->m->c;
    int M = nb * e->T;
    long D = c->hidden_size, V = c->vocab_size;
    head_norm(e, M);
    for (int r0 = 0; r0 < M; r0 += e->head_rows) {
        int rows = M - r0 < e->head_rows ? M - r0 : e->head_rows;
        head_rows(e, r0, rows, e->glogits);
        gpu_cross_entropy_backward((bf16_t*)e->dlog16, (bf16_t*)e->dlog_lo, e->loss_rows + r0, e->glogits,
                                   e->ids + r0, rows, e->T, (int)V);
        gemm_bwd(e, e->dm + r0 * D, e->dlog16, e->dlog_lo, e->lm_head, rows, (int)D, (int)V, 0.0f);
    }
    prof_mark(e, P_HEAD);
    gpu_rmsnorm_backward_add(e->dh, e->dm, e->h, (const bf16_t*)e->norm, e->hy.w_add, e->f_rstd, M, (int)D, 0);
}

// dh holds dL/d(output of layer l1 - 1); layers l1-1..l0 are backpropagated, calling hook for every linear,
// each on the activations its forward kept (gpu_grad_keep_plan) or else recomputed from its saved input; dh
// ends as dL/d(input of layer l0).
extern "C" void gpu_backward_layers(GpuEngine* e, int nb, GpuGradHook hook, void* ctx) {
    long M = (long)nb * e->T, D = e->m->c.hidden_size;
    for (int l = e->l1 - 1; l >= e->l0; l--) {
        int kept = e->fresh && e->fresh[l - e->l0];
        if (e->kept) acts_bind(e, kept ? l : -1);
        if (!kept) { // recompute: only the layer's input was kept
            cudaCheck(
                cudaMemcpyAsync(e->h, e->hsave + (l - e->l0) * M * D, 4 * M * D, cudaMemcpyDeviceToDevice));
            layer_forward(e, l, (int)M);
        }
        layer_backward(e, hook, ctx, l, (int)M, kept);
    }
    if (e->kept) acts_bind(e, -1);
}

// Last stage: the summed per-window mean CE of the batch.
extern "C" double gpu_loss(GpuEngine* e, int nb) {
    int M = nb * e->T;
    double* lr = (double*)xmalloc(sizeof(double) * M);
    cudaCheck(cudaMemcpy(lr, e->loss_rows, sizeof(double) * M, cudaMemcpyDeviceToHost));
    double loss = 0;
    for (int i = 0; i < M; i++) loss += lr[i];
    free(lr);
    return loss / (e->T - 1);
}

// Backward through a saved forward pass, gradients with respect to
// activations only. Mirrors model_forward_layer in forward.c step by step.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "util.h"

static float* falloc(long n) { return xmalloc(sizeof(float) * (size_t)n); }

void grad_init(GradState* g, const Model* m, int T) {
    memset(g, 0, sizeof(*g)); // the MoE buffers stay NULL for dense models
    const Config* c = &m->c;
    long D = c->hidden_size, I = c->intermediate_size;
    long qd = (long)c->num_heads * c->head_dim, kvd = (long)c->num_kv_heads * c->head_dim;
    g->dh = falloc(T * D);
    g->dh2 = falloc(T * (D > qd ? D : qd)); // also holds dq before its per-head norm
    g->da = falloc(T * D);
    g->dq = falloc(T * qd);
    g->dk = falloc(T * kvd);
    g->dv = falloc(T * kvd);
    g->datt = falloc(T * qd);
    g->dm = falloc(T * D);
    g->dg = falloc(T * I);
    g->du = falloc(T * I);
    g->dact = falloc(T * I);
    g->dlogits = falloc(T * (long)c->vocab_size);
    if (c->fam->attn_gate) {
        g->dgate = falloc(T * qd);
        g->dqraw = falloc(2 * T * qd);
    }
    if (c->n_linear) {
        long C = 2L * c->lin_hk * c->lin_dk + (long)c->lin_hv * c->lin_dv, vd = (long)c->lin_hv * c->lin_dv;
        g->dg_qkv = falloc(T * C);
        g->dg_z = falloc(T * vd);
        g->dg_b = falloc(T * (long)c->lin_hv);
        g->dg_a = falloc(T * (long)c->lin_hv);
        g->dg_out = falloc(T * vd);
        if (c->fam->fused_gdn) {
            g->dg_raw = falloc(T * (C + vd));
            g->dg_raw2 = falloc(T * 2L * c->lin_hv);
        }
    }
    if (c->shared_inter) {
        long Is = c->shared_inter;
        g->dsh_g = falloc(T * Is);
        g->dsh_u = falloc(T * Is);
        g->dsh_act = falloc(T * Is);
        g->dsh_y = falloc(T * D);
    }
    if (!c->n_sparse) return;
    long TK = (long)T * c->top_k, Im = c->moe_intermediate;
    g->dw = falloc(TK);
    g->drl = falloc(T * (long)c->num_experts);
    g->dye = falloc(TK * D);
    g->dxs = falloc(TK * D);
    g->dgm = falloc(TK * Im);
    g->dum = falloc(TK * Im);
    g->dactm = falloc(TK * Im);
}

void grad_free(GradState* g) {
    float* ps[] = {g->dh,   g->dh2,    g->da,      g->dq,      g->dk,    g->dv,     g->datt,    g->dm,
                   g->dg,   g->du,     g->dact,    g->dlogits, g->dw,    g->drl,    g->dye,     g->dxs,
                   g->dgm,  g->dum,    g->dactm,   g->dgate,   g->dqraw, g->dg_qkv, g->dg_z,    g->dg_b,
                   g->dg_a, g->dg_raw, g->dg_raw2, g->dg_out,  g->dsh_g, g->dsh_u,  g->dsh_act, g->dsh_y};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) free(ps[i]);
}

// A sparse layer's MLP: dh = dL/dy_moe on entry; dm = dL/dm on exit, through the experts and the
// router (routing weights -> renormalisation -> softmax -> router logits -> m), as PyTorch autograd.
static void moe_backward(const Model* m, RunState* s, GradState* g, int l, GradHook hook, void* ctx) {
    const Config* c = &m->c;
    const LayerWeights* w = &m->layers[l];
    LayerActs* a = &s->acts[l];
    int T = s->T, D = c->hidden_size, E = c->num_experts, K = c->top_k, Im = c->moe_intermediate;
    hook(moe_hook_index(l), g->dh, ctx);
    moe_scatter_backward(g->dye, g->dw, g->dh, a->ex.ye, a->w, a->pos, T, K, D);
    for (int e = 0; e < E; e++) {
        long r0 = a->offs[e];
        int n = a->offs[e + 1] - a->offs[e];
        if (n == 0) continue;
        const float* dn = w->ex_down + (long)e * D * Im;
        matmul_backward_input(g->dactm + r0 * Im, g->dye + r0 * D, dn, n, Im, D, 0.0f);
    }
    swiglu_backward(g->dgm, g->dum, g->dactm, a->ex.g, a->ex.u, (long)T * K * Im);
    for (int e = 0; e < E; e++) {
        long r0 = a->offs[e];
        int n = a->offs[e + 1] - a->offs[e];
        if (n == 0) continue;
        long off = (long)e * Im * D;
        matmul_backward_input(g->dxs + r0 * D, g->dgm + r0 * Im, w->ex_gate + off, n, D, Im, 0.0f);
        matmul_backward_input(g->dxs + r0 * D, g->dum + r0 * Im, w->ex_up + off, n, D, Im, 1.0f);
    }
    memset(g->dm, 0, sizeof(float) * (size_t)T * D);
    moe_gather_backward(g->dm, g->dxs, a->pos, T, K, D);
    moe_route_backward(g->drl, g->dw, a->probs, a->idx, T, E, K, c->norm_topk);
    matmul_backward_input(g->dm, g->drl, w->router, T, D, E, 1.0f);
}

// A SwiGLU MLP y = down(silu(gate(x)) * up(x)), I wide: dy = dL/dy -> dx = beta dx + dL/dx (the dense MLP
// writes dm, the shared expert adds to the routed experts' share); dg, du, dact are scratch (T, I); the
// hook sees each linear's output gradient.
static void swiglu_mlp_backward(float* dx, float beta, const float* dy, const float* w_gate, const float* w_up,
                                const float* w_down, const float* g_out, const float* u_out, float* dg,
                                float* du, float* dact, int T, int D, int I, int lin_gate, int lin_up,
                                int lin_down, GradHook hook, void* ctx) {
    hook(lin_down, dy, ctx);
    matmul_backward_input(dact, dy, w_down, T, I, D, 0.0f);
    swiglu_backward(dg, du, dact, g_out, u_out, (long)T * I);
    hook(lin_gate, dg, ctx);
    hook(lin_up, du, ctx);
    matmul_backward_input(dx, dg, w_gate, T, D, I, beta);
    matmul_backward_input(dx, du, w_up, T, D, I, 1.0f);
}

// A dense MLP: h_out = h_mid + down(silu(gate(m)) * up(m)); dm = dL/dm on exit.
static void mlp_backward(const Model* m, RunState* s, GradState* g, int l, GradHook hook, void* ctx) {
    const LayerWeights* w = &m->layers[l];
    LayerActs* a = &s->acts[l];
    int T = s->T, D = m->c.hidden_size, I = m->c.intermediate_size;
    swiglu_mlp_backward(g->dm, 0.0f, g->dh, w->gate_proj, w->up_proj, w->down_proj, a->g, a->u, g->dg, g->du,
                        g->dact, T, D, I, model_lin(m, l, LIN_GATE, -1), model_lin(m, l, LIN_UP, -1),
                        model_lin(m, l, LIN_DOWN, -1), hook, ctx);
}

// The shared expert of sparse layer l: h_out += sh_s * sh_y, sh_s = sigmoid(m sh_w^T); dh = dL/dh_out on
// entry; dm += its share on exit (moe_backward wrote dm first).
static void shared_backward(const Model* m, RunState* s, GradState* g, int l, GradHook hook, void* ctx) {
    const LayerWeights* w = &m->layers[l];
    LayerActs* a = &s->acts[l];
    int T = s->T, D = m->c.hidden_size, Is = m->c.shared_inter;
    for (int t = 0; t < T; t++) {
        double dsig = 0;
        for (long i = (long)t * D; i < (long)(t + 1) * D; i++) {
            g->dsh_y[i] = a->sh_s[t] * g->dh[i];
            dsig += (double)g->dh[i] * a->sh_y[i];
        }
        // the gate's logit: d sigmoid = s (1 - s); its weight row is (1, D)
        float dl = (float)(dsig * a->sh_s[t] * (1.0 - a->sh_s[t]));
        for (int i = 0; i < D; i++) g->dm[(long)t * D + i] += dl * w->sh_w[i];
    }
    swiglu_mlp_backward(g->dm, 1.0f, g->dsh_y, w->sh_gate, w->sh_up, w->sh_down, a->sh_g, a->sh_u, g->dsh_g,
                        g->dsh_u, g->dsh_act, T, D, Is, model_lin(m, l, LIN_SH_GATE, -1),
                        model_lin(m, l, LIN_SH_UP, -1), model_lin(m, l, LIN_SH_DOWN, -1), hook, ctx);
}

// Full attention: dh = dL/d(o_proj output) on entry; da = dL/da on exit. With the output gate, o_proj
// reads att * sigmoid(gate) and q_proj's rows per head are query then gate.
static void attn_backward(const Model* m, RunState* s, GradState* g, int l, GradHook hook, void* ctx) {
    const Config* c = &m->c;
    const LayerWeights* w = &m->layers[l];
    LayerActs* a = &s->acts[l];
    int T = s->T, D = c->hidden_size, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    int qd = H * hd, kvd = KV * hd, gated = c->fam->attn_gate;
    hook(model_lin(m, l, LIN_O, -1), g->dh, ctx);
    matmul_backward_input(g->datt, g->dh, w->o_proj, T, qd, D, 0.0f);
    if (gated)
        for (long i = 0; i < (long)T * qd; i++) {
            float sg = 1.0f / (1.0f + expf(-a->gate[i]));
            g->dgate[i] = g->datt[i] * a->att[i] * sg * (1.0f - sg);
            g->datt[i] *= sg;
        }
    attention_backward(g->dq, g->dk, g->dv, g->datt, a->q, a->k, a->v, a->lse, T, H, KV, hd);
    if (g->kv_hooks) { // the KV cache's gradients: at K and V as the cache stores them (README §6)
        hook(kv_hook_index(c->num_layers, l, 0), g->dk, ctx);
        hook(kv_hook_index(c->num_layers, l, 1), g->dv, ctx);
    }
    rope_backward_heads(g->dq, &s->rope, T, H, hd);
    rope_backward_heads(g->dk, &s->rope, T, KV, hd);
    // dq, dk become gradients of the q_proj / k_proj outputs (through the per-head norms).
    memcpy(g->dh2, g->dq, sizeof(float) * (size_t)T * qd);
    rmsnorm_backward(g->dq, g->dh2, a->q_lin, w->q_norm, a->q_rstd, T * H, hd, 0);
    memcpy(g->dh2, g->dk, sizeof(float) * (size_t)T * kvd);
    rmsnorm_backward(g->dk, g->dh2, a->k_lin, w->k_norm, a->k_rstd, T * KV, hd, 0);
    const float* dqp = g->dq;
    if (gated) { // back into q_proj's rows: per head hd query gradients then hd gate gradients
        for (long th = 0; th < (long)T * H; th++) {
            memcpy(g->dqraw + 2 * th * hd, g->dq + th * hd, sizeof(float) * hd);
            memcpy(g->dqraw + (2 * th + 1) * hd, g->dgate + th * hd, sizeof(float) * hd);
        }
        dqp = g->dqraw;
    }
    hook(model_lin(m, l, LIN_Q, -1), dqp, ctx);
    hook(model_lin(m, l, LIN_K, -1), g->dk, ctx);
    hook(model_lin(m, l, LIN_V, -1), g->dv, ctx);
    matmul_backward_input(g->da, dqp, w->q_proj, T, D, gated ? 2 * qd : qd, 0.0f);
    matmul_backward_input(g->da, g->dk, w->k_proj, T, D, kvd, 1.0f);
    matmul_backward_input(g->da, g->dv, w->v_proj, T, D, kvd, 1.0f);
}

// Qwen3-Next: gradients of q | k | v, z, b, a back into in_proj_qkvz / in_proj_ba's per-key-head-group
// rows (the inverse of forward.c's gdn_unfuse).
static void gdn_refuse(const Config* c, GradState* g, int T) {
    int Hk = c->lin_hk, dk = c->lin_dk, r = c->lin_hv / c->lin_hk, rdv = r * c->lin_dv;
    long kd = (long)Hk * dk, C = 2 * kd + (long)c->lin_hv * c->lin_dv, W = 2L * dk + 2L * rdv,
         vd = (long)Hk * rdv;
    for (long t = 0; t < T; t++) {
        float* x = g->dg_raw + t * Hk * W;
        float* y = g->dg_raw2 + t * 2L * c->lin_hv;
        const float *q = g->dg_qkv + t * C, *z = g->dg_z + t * vd;
        for (int h = 0; h < Hk; h++) {
            float* gr = x + h * W;
            memcpy(gr, q + (long)h * dk, sizeof(float) * dk);
            memcpy(gr + dk, q + kd + (long)h * dk, sizeof(float) * dk);
            memcpy(gr + 2 * dk, q + 2 * kd + (long)h * rdv, sizeof(float) * rdv);
            memcpy(gr + 2 * dk + rdv, z + (long)h * rdv, sizeof(float) * rdv);
            memcpy(y + 2L * h * r, g->dg_b + t * c->lin_hv + (long)h * r, sizeof(float) * r);
            memcpy(y + 2L * h * r + r, g->dg_a + t * c->lin_hv + (long)h * r, sizeof(float) * r);
        }
    }
}

// A Gated DeltaNet token mixer: dh = dL/d(out_proj output) on entry; da = dL/da on exit.
static void gdn_layer_backward(const Model* m, RunState* s, GradState* g, int l, GradHook hook, void* ctx) {
    const Config* c = &m->c;
    const LayerWeights* w = &m->layers[l];
    LayerActs* a = &s->acts[l];
    int T = s->T, D = c->hidden_size, Hv = c->lin_hv;
    int vd = Hv * c->lin_dv, C = 2 * c->lin_hk * c->lin_dk + vd;
    hook(model_lin(m, l, LIN_GDN_OUT, -1), g->dh, ctx);
    matmul_backward_input(g->dg_out, g->dh, w->gdn_out, T, vd, D, 0.0f);
    GdnShape sh = {T, c->lin_hk, Hv, c->lin_dk, c->lin_dv, c->lin_conv, c->rms_eps};
    GdnParams p = {w->gdn_conv, w->gdn_alog, w->gdn_dt, w->gdn_norm};
    gdn_backward(&sh, &p, a->gdn, g->dg_out, g->dg_qkv, g->dg_z, g->dg_b, g->dg_a);
    if (c->fam->fused_gdn) {
        gdn_refuse(c, g, T);
        hook(model_lin(m, l, LIN_GDN_QKVZ, -1), g->dg_raw, ctx);
        hook(model_lin(m, l, LIN_GDN_BA, -1), g->dg_raw2, ctx);
        matmul_backward_input(g->da, g->dg_raw, w->gdn_qkvz, T, D, C + vd, 0.0f);
        matmul_backward_input(g->da, g->dg_raw2, w->gdn_ba, T, D, 2 * Hv, 1.0f);
        return;
    }
    hook(model_lin(m, l, LIN_GDN_QKV, -1), g->dg_qkv, ctx);
    hook(model_lin(m, l, LIN_GDN_Z, -1), g->dg_z, ctx);
    hook(model_lin(m, l, LIN_GDN_B, -1), g->dg_b, ctx);
    hook(model_lin(m, l, LIN_GDN_A, -1), g->dg_a, ctx);
    matmul_backward_input(g->da, g->dg_qkv, w->gdn_qkv, T, D, C, 0.0f);
    matmul_backward_input(g->da, g->dg_z, w->gdn_z, T, D, vd, 1.0f);
    matmul_backward_input(g->da, g->dg_b, w->gdn_b, T, D, Hv, 1.0f);
    matmul_backward_input(g->da, g->dg_a, w->gdn_a, T, D, Hv, 1.0f);
}

// dh holds dL/d(h_out) of layer l on entry and dL/d(h_in) on exit.
static void layer_backward(const Model* m, RunState* s, GradState* g, int l, GradHook hook, void* ctx) {
    const Config* c = &m->c;
    const LayerWeights* w = &m->layers[l];
    LayerActs* a = &s->acts[l];
    int T = s->T, D = c->hidden_size;
    if (model_layer_sparse(m, l)) {
        moe_backward(m, s, g, l, hook, ctx);
        if (c->shared_inter) shared_backward(m, s, g, l, hook, ctx);
    } else {
        mlp_backward(m, s, g, l, hook, ctx);
    }
    rmsnorm_backward(g->dh, g->dm, a->h_mid, w->w_post, a->rstd_post, T, D, 1); // dh is now d h_mid
    if (c->linear[l])
        gdn_layer_backward(m, s, g, l, hook, ctx);
    else
        attn_backward(m, s, g, l, hook, ctx);
    rmsnorm_backward(g->dh, g->da, a->h_in, w->w_in, a->rstd_in, T, D, 1); // dh is now d h_in
}

double model_backward(const Model* m, RunState* s, GradState* g, const int* ids, GradHook hook, void* ctx) {
    const Config* c = &m->c;
    int T = s->T, D = c->hidden_size, V = c->vocab_size;
    double loss = cross_entropy(g->dlogits, s->logits, ids, T, V);
    matmul_backward_input(g->dh2, g->dlogits, m->lm_head, T, D, V, 0.0f);
    rmsnorm_backward(g->dh, g->dh2, s->h_final, m->norm, s->rstd_f, T, D, 0);
    for (int l = c->num_layers - 1; l >= 0; l--) layer_backward(m, s, g, l, hook, ctx);
    return loss;
}

// Backward through a saved forward pass, gradients with respect to
// activations only. Mirrors model_forward_layer in forward.c step by step.
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
    float* ps[] = {g->dh,   g->dh2,     g->da, g->dq,  g->dk,  g->dv,  g->datt, g->dm,  g->dg,   g->du,
                   g->dact, g->dlogits, g->dw, g->drl, g->dye, g->dxs, g->dgm,  g->dum, g->dactm};
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

// A dense MLP: h_out = h_mid + down(silu(gate(m)) * up(m)); dm = dL/dm on exit.
static void mlp_backward(const Model* m, RunState* s, GradState* g, int l, GradHook hook, void* ctx) {
    const LayerWeights* w = &m->layers[l];
    LayerActs* a = &s->acts[l];
    int T = s->T, D = m->c.hidden_size, I = m->c.intermediate_size, base = m->lin0[l];
    hook(base + LIN_DOWN, g->dh, ctx);
    matmul_backward_input(g->dact, g->dh, w->down_proj, T, I, D, 0.0f);
    swiglu_backward(g->dg, g->du, g->dact, a->g, a->u, (long)T * I);
    hook(base + LIN_GATE, g->dg, ctx);
    hook(base + LIN_UP, g->du, ctx);
    matmul_backward_input(g->dm, g->dg, w->gate_proj, T, D, I, 0.0f);
    matmul_backward_input(g->dm, g->du, w->up_proj, T, D, I, 1.0f);
}

// dh holds dL/d(h_out) of layer l on entry and dL/d(h_in) on exit.
static void layer_backward(const Model* m, RunState* s, GradState* g, int l, GradHook hook, void* ctx) {
    const Config* c = &m->c;
    const LayerWeights* w = &m->layers[l];
    LayerActs* a = &s->acts[l];
    int T = s->T, D = c->hidden_size, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    int qd = H * hd, kvd = KV * hd, base = m->lin0[l];
    if (model_layer_sparse(m, l))
        moe_backward(m, s, g, l, hook, ctx);
    else
        mlp_backward(m, s, g, l, hook, ctx);
    rmsnorm_backward(g->dh, g->dm, a->h_mid, w->w_post, a->rstd_post, T, D, 1); // dh is now d h_mid
    // Attention: h_mid = h_in + o_proj(attn(rope(qn(q(a))), rope(kn(k(a))), v(a)))
    hook(base + LIN_O, g->dh, ctx);
    matmul_backward_input(g->datt, g->dh, w->o_proj, T, qd, D, 0.0f);
    attention_backward(g->dq, g->dk, g->dv, g->datt, a->q, a->k, a->v, a->lse, T, H, KV, hd);
    rope_backward(g->dq, &s->rope, T, H);
    rope_backward(g->dk, &s->rope, T, KV);
    // dq, dk become gradients of the q_proj / k_proj outputs (through the per-head norms).
    memcpy(g->dh2, g->dq, sizeof(float) * (size_t)T * qd);
    rmsnorm_backward(g->dq, g->dh2, a->q_lin, w->q_norm, a->q_rstd, T * H, hd, 0);
    memcpy(g->dh2, g->dk, sizeof(float) * (size_t)T * kvd);
    rmsnorm_backward(g->dk, g->dh2, a->k_lin, w->k_norm, a->k_rstd, T * KV, hd, 0);
    hook(base + LIN_Q, g->dq, ctx);
    hook(base + LIN_K, g->dk, ctx);
    hook(base + LIN_V, g->dv, ctx);
    matmul_backward_input(g->da, g->dq, w->q_proj, T, D, qd, 0.0f);
    matmul_backward_input(g->da, g->dk, w->k_proj, T, D, kvd, 1.0f);
    matmul_backward_input(g->da, g->dv, w->v_proj, T, D, kvd, 1.0f);
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

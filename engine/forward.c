#include "forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static float* falloc(long n) { return xmalloc(sizeof(float) * (size_t)n); }

static int* ialloc(long n) { return xmalloc(sizeof(int) * (size_t)n); }

// The routing and expert rows of a sparse layer.
static void acts_alloc_moe(LayerActs* a, const Config* c, int T) {
    long D = c->hidden_size, E = c->num_experts, TK = (long)T * c->top_k, Im = c->moe_intermediate;
    a->r_logits = falloc(T * E);
    a->probs = falloc(T * E);
    a->idx = ialloc(TK);
    a->w = falloc(TK);
    a->order = ialloc(TK);
    a->offs = ialloc(E + 1);
    a->pos = ialloc(TK);
    a->ex.g = falloc(TK * Im);
    a->ex.u = falloc(TK * Im);
    a->ex.act = falloc(TK * Im);
    a->ex.ye = falloc(TK * D);
    a->y_moe = falloc(T * D);
}

// Which buffers a set of activations needs: a layer's own, or for a shared set every kind's.
typedef struct {
    int attn, gdn, dense, moe;
} ActsKinds;

static ActsKinds layer_kinds(const Config* c, int l) {
    ActsKinds k = {!c->linear[l], c->linear[l], !c->sparse[l], c->sparse[l]};
    return k;
}

static ActsKinds all_kinds(const Config* c) {
    ActsKinds k = {c->n_linear<c->num_layers, c->n_linear> 0, c->n_sparse<c->num_layers, c->n_sparse> 0};
    return k;
}

// A Gated DeltaNet layer's buffers (README §3); save: the core's cache for the backward.
static void acts_alloc_gdn(LayerActs* a, const Config* c, int T, int save) {
    long C = 2L * c->lin_hk * c->lin_dk + (long)c->lin_hv * c->lin_dv, vd = (long)c->lin_hv * c->lin_dv;
    if (c->fam->fused_gdn) {
        a->g_raw = falloc(T * (C + vd));
        a->g_raw2 = falloc(T * 2L * c->lin_hv);
    }
    a->g_qkv = falloc(T * C);
    a->g_z = falloc(T * vd);
    a->g_b = falloc((long)T * c->lin_hv);
    a->g_a = falloc((long)T * c->lin_hv);
    a->g_out = falloc(T * vd);
    if (save) {
        GdnShape sh = {T, c->lin_hk, c->lin_hv, c->lin_dk, c->lin_dv, c->lin_conv, c->rms_eps};
        a->gdn = gdn_cache_init(&sh);
    }
}

static void acts_alloc(LayerActs* a, const Config* c, int T, ActsKinds k, int save) {
    int D = c->hidden_size, I = c->intermediate_size, H = c->num_heads, KV = c->num_kv_heads;
    int qd = H * c->head_dim, kvd = KV * c->head_dim;
    a->h_in = falloc((long)T * D);
    a->a = falloc((long)T * D);
    a->rstd_in = falloc(T);
    if (k.attn) {
        a->q_lin = falloc((long)T * qd);
        a->k_lin = falloc((long)T * kvd);
        a->q_rstd = falloc((long)T * H);
        a->k_rstd = falloc((long)T * KV);
        a->q = falloc((long)T * qd);
        a->k = falloc((long)T * kvd);
        a->v = falloc((long)T * kvd);
        a->att = falloc((long)T * qd);
        a->lse = falloc((long)T * H);
        if (c->fam->attn_gate) {
            a->q_raw = falloc(2L * T * qd);
            a->gate = falloc((long)T * qd);
            a->att_g = falloc((long)T * qd);
        }
    }
    if (k.gdn) acts_alloc_gdn(a, c, T, save);
    a->h_mid = falloc((long)T * D);
    a->m = falloc((long)T * D);
    a->rstd_post = falloc(T);
    if (k.dense) {
        a->g = falloc((long)T * I);
        a->u = falloc((long)T * I);
        a->act = falloc((long)T * I);
    }
    if (k.moe) acts_alloc_moe(a, c, T);
    if (k.moe && c->shared_inter) {
        long Is = c->shared_inter;
        a->sh_g = falloc(T * Is);
        a->sh_u = falloc(T * Is);
        a->sh_act = falloc(T * Is);
        a->sh_y = falloc((long)T * D);
        a->sh_s = falloc(T);
    }
}

static void acts_free(LayerActs* a) {
    float* ps[] = {a->h_in,      a->a,     a->rstd_in, a->q_lin,  a->k_lin,    a->q_rstd, a->k_rstd,
                   a->q,         a->k,     a->v,       a->att,    a->lse,      a->h_mid,  a->m,
                   a->rstd_post, a->g,     a->u,       a->act,    a->r_logits, a->probs,  a->w,
                   a->ex.g,      a->ex.u,  a->ex.act,  a->ex.ye,  a->y_moe,    a->q_raw,  a->gate,
                   a->att_g,     a->g_raw, a->g_raw2,  a->g_qkv,  a->g_z,      a->g_b,    a->g_a,
                   a->g_out,     a->sh_g,  a->sh_u,    a->sh_act, a->sh_y,     a->sh_s};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) free(ps[i]);
    int* is[] = {a->idx, a->order, a->offs, a->pos};
    for (size_t i = 0; i < sizeof(is) / sizeof(is[0]); i++) free(is[i]);
    if (a->gdn) gdn_cache_free(a->gdn);
}

int run_rows(const Model* m, int T) { return m->c.n_sparse && m->c.top_k > 1 ? T * m->c.top_k : T; }

static int max_in(const Model* m) {
    int mx = 0;
    for (int i = 0; i < m->n_linears; i++) mx = m->linears[i].in > mx ? m->linears[i].in : mx;
    return mx;
}

void model_check_seq_len(const Model* m, int T, const char* what) {
    if (m->c.max_pos > 0 && T > m->c.max_pos)
        fail_input("%s: windows of %d tokens exceed the model's max_position_embeddings %d (%s/config.json)",
                   what, T, m->c.max_pos, m->dir);
}

void run_init(RunState* s, const Model* m, int T, int save) {
    const Config* c = &m->c;
    memset(s, 0, sizeof(*s));
    s->T = T;
    s->save = save;
    s->acts = xcalloc(c->num_layers, sizeof(LayerActs));
    // saved: each layer its own kind of buffers; shared: one set for every kind of layer
    int any_sparse = c->n_sparse > 0;
    acts_alloc(&s->acts[0], c, T, save ? layer_kinds(c, 0) : all_kinds(c), save);
    for (int l = 1; l < c->num_layers; l++) {
        if (save)
            acts_alloc(&s->acts[l], c, T, layer_kinds(c, l), save);
        else
            s->acts[l] = s->acts[0];
    }
    // Without save the stream is updated in place: layer l's output is layer l+1's input.
    s->h_final = save ? falloc((long)T * c->hidden_size) : s->acts[0].h_in;
    s->hf = falloc((long)T * c->hidden_size);
    s->rstd_f = falloc(T);
    s->logits = falloc((long)T * c->vocab_size);
    s->xq = falloc((long)run_rows(m, T) * max_in(m));
    if (any_sparse) s->xs = falloc((long)T * c->top_k * c->hidden_size);
    rope_init(&s->rope, T, c->rotary_dim, c->rope_theta);
}

void run_free(RunState* s, const Model* m) {
    int n = s->save ? m->c.num_layers : 1;
    for (int l = 0; l < n; l++) acts_free(&s->acts[l]);
    if (s->save) free(s->h_final);
    free(s->acts);
    free(s->hf);
    free(s->rstd_f);
    free(s->logits);
    free(s->xq);
    free(s->xs);
    rope_free(&s->rope);
}

void model_embed(const Model* m, RunState* s, const int* ids) {
    embed_forward(s->acts[0].h_in, m->embed, ids, s->T, m->c.hidden_size);
}

void linear_apply_rows(const Model* m, RunState* s, int index, float* out, const float* x, int n,
                       const QuantPlan* plan) {
    const Linear* lin = &m->linears[index];
    const float* w = lin->w;
    if (plan && plan->wq[index]) w = plan->wq[index];
    if (plan && plan->in_spec[index].bits) {
        quant_input_rows(s->xq, x, n, lin->in, plan->in_spec[index]);
        x = s->xq;
    }
    matmul_forward(out, x, w, n, lin->in, lin->out, 0.0f);
}

void linear_apply(const Model* m, RunState* s, int index, float* out, const float* x, const QuantPlan* plan) {
    linear_apply_rows(m, s, index, out, x, s->T, plan);
}

// Router of sparse layer l on acts[l].m: logits in fp32 (never quantized), softmax, top-k, and the
// assignments sorted by expert.
static void moe_route(const Model* m, RunState* s, int l) {
    const Config* c = &m->c;
    LayerActs* a = &s->acts[l];
    int T = s->T, E = c->num_experts, K = c->top_k;
    matmul_forward(a->r_logits, a->m, m->layers[l].router, T, c->hidden_size, E, 0.0f);
    moe_route_forward(a->probs, a->idx, a->w, a->r_logits, T, E, K, c->norm_topk);
    moe_sort(a->order, a->offs, a->pos, a->idx, T, E, K);
}

void moe_experts_apply(const Model* m, RunState* s, int l, const MoeRows* r, float* y, const QuantPlan* plan) {
    const Config* c = &m->c;
    const LayerActs* a = &s->acts[l];
    int T = s->T, K = c->top_k, D = c->hidden_size, Im = c->moe_intermediate;
    moe_gather(s->xs, a->m, a->order, T * K, K, D);
    for (int e = 0; e < c->num_experts; e++) {
        int r0 = a->offs[e], n = a->offs[e + 1] - r0;
        if (n == 0) continue;
        const float* x = s->xs + (long)r0 * D;
        float *g = r->g + (long)r0 * Im, *u = r->u + (long)r0 * Im, *act = r->act + (long)r0 * Im;
        linear_apply_rows(m, s, model_lin(m, l, LIN_GATE, e), g, x, n, plan);
        linear_apply_rows(m, s, model_lin(m, l, LIN_UP, e), u, x, n, plan);
        swiglu_forward(act, g, u, (long)n * Im);
        linear_apply_rows(m, s, model_lin(m, l, LIN_DOWN, e), r->ye + (long)r0 * D, act, n, plan);
    }
    moe_scatter(y, r->ye, a->w, a->pos, T, K, D);
}

void moe_count_tokens(const Model* m, const RunState* s, int l, long* counts) {
    const LayerActs* a = &s->acts[l];
    for (int e = 0; e < m->c.num_experts; e++) counts[e] += a->offs[e + 1] - a->offs[e];
}

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// The shared expert of sparse layer l on acts[l].m: sh_y = its down output, sh_s = sigmoid of its gate.
static void shared_forward(const Model* m, RunState* s, int l, const QuantPlan* plan) {
    LayerActs* a = &s->acts[l];
    int T = s->T, D = m->c.hidden_size;
    linear_apply(m, s, model_lin(m, l, LIN_SH_GATE, -1), a->sh_g, a->m, plan);
    linear_apply(m, s, model_lin(m, l, LIN_SH_UP, -1), a->sh_u, a->m, plan);
    swiglu_forward(a->sh_act, a->sh_g, a->sh_u, (long)T * m->c.shared_inter);
    linear_apply(m, s, model_lin(m, l, LIN_SH_DOWN, -1), a->sh_y, a->sh_act, plan);
    matmul_forward(a->sh_s, a->m, m->layers[l].sh_w, T, D, 1, 0.0f); // the gate: fp32, never quantized
    for (int t = 0; t < T; t++) a->sh_s[t] = sigmoidf(a->sh_s[t]);
}

// The MLP half of layer l from acts[l].m: dense or experts (and a shared expert); h_out = h_mid + its output.
static void mlp_forward(const Model* m, RunState* s, int l, float* h_out, const QuantPlan* plan) {
    LayerActs* a = &s->acts[l];
    int T = s->T, D = m->c.hidden_size;
    long TD = (long)T * D;
    if (model_layer_sparse(m, l)) {
        moe_route(m, s, l);
        moe_experts_apply(m, s, l, &a->ex, a->y_moe, plan);
        if (!m->c.shared_inter) {
            for (long i = 0; i < TD; i++) h_out[i] = a->y_moe[i] + a->h_mid[i];
            return;
        }
        shared_forward(m, s, l, plan);
        for (int t = 0; t < T; t++)
            for (long i = (long)t * D; i < (long)(t + 1) * D; i++)
                h_out[i] = a->h_mid[i] + (a->y_moe[i] + a->sh_s[t] * a->sh_y[i]);
        return;
    }
    long I = m->c.intermediate_size;
    linear_apply(m, s, model_lin(m, l, LIN_GATE, -1), a->g, a->m, plan);
    linear_apply(m, s, model_lin(m, l, LIN_UP, -1), a->u, a->m, plan);
    swiglu_forward(a->act, a->g, a->u, s->T * I);
    linear_apply(m, s, model_lin(m, l, LIN_DOWN, -1), h_out, a->act, plan);
    for (long i = 0; i < TD; i++) h_out[i] += a->h_mid[i];
}

// Full attention of layer l from acts[l].a into h_mid (o_proj output, before the residual add). With
// the output gate (hybrid families) q_proj's rows per head are hd query values then hd gate values,
// and o_proj reads att * sigmoid(gate).
static void attn_forward(const Model* m, RunState* s, int l, const QuantPlan* plan) {
    const Config* c = &m->c;
    const LayerWeights* w = &m->layers[l];
    LayerActs* a = &s->acts[l];
    int T = s->T, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    long qd = (long)H * hd;
    int gated = c->fam->attn_gate;
    linear_apply(m, s, model_lin(m, l, LIN_Q, -1), gated ? a->q_raw : a->q_lin, a->a, plan);
    linear_apply(m, s, model_lin(m, l, LIN_K, -1), a->k_lin, a->a, plan);
    linear_apply(m, s, model_lin(m, l, LIN_V, -1), a->v, a->a, plan);
    if (gated)
        for (long th = 0; th < (long)T * H; th++) {
            memcpy(a->q_lin + th * hd, a->q_raw + 2 * th * hd, sizeof(float) * hd);
            memcpy(a->gate + th * hd, a->q_raw + (2 * th + 1) * hd, sizeof(float) * hd);
        }
    rmsnorm_forward(a->q, a->q_rstd, a->q_lin, w->q_norm, T * H, hd, c->rms_eps);
    rmsnorm_forward(a->k, a->k_rstd, a->k_lin, w->k_norm, T * KV, hd, c->rms_eps);
    rope_forward_heads(a->q, &s->rope, T, H, hd);
    rope_forward_heads(a->k, &s->rope, T, KV, hd);
    if (plan && plan->kv && plan->kv[l].bits) { // the cache stores K and V quantized; attention reads them
        quant_kv_tensor(a->k, a->k, T * KV, hd, plan->kv[l]);
        quant_kv_tensor(a->v, a->v, T * KV, hd, plan->kv[l]);
    }
    attention_forward(a->att, a->lse, a->q, a->k, a->v, T, H, KV, hd);
    if (gated)
        for (long i = 0; i < T * qd; i++) a->att_g[i] = a->att[i] * sigmoidf(a->gate[i]);
    linear_apply(m, s, model_lin(m, l, LIN_O, -1), a->h_mid, gated ? a->att_g : a->att, plan);
}

// Qwen3-Next's in_proj_qkvz / in_proj_ba rows are grouped per key head: [q dk | k dk | v r dv | z r dv]
// and [b r | a r] with r = Hv / Hk; into q | k | v, z, b, a (transformers' fix_query_key_value_ordering).
static void gdn_unfuse(const Config* c, LayerActs* a, int T) {
    int Hk = c->lin_hk, dk = c->lin_dk, r = c->lin_hv / c->lin_hk, rdv = r * c->lin_dv;
    long kd = (long)Hk * dk, C = 2 * kd + (long)c->lin_hv * c->lin_dv, W = 2L * dk + 2L * rdv,
         vd = (long)Hk * rdv;
    for (long t = 0; t < T; t++) {
        const float* x = a->g_raw + t * Hk * W;
        const float* y = a->g_raw2 + t * 2L * c->lin_hv;
        float *q = a->g_qkv + t * C, *z = a->g_z + t * vd;
        for (int h = 0; h < Hk; h++) {
            const float* g = x + h * W;
            memcpy(q + (long)h * dk, g, sizeof(float) * dk);
            memcpy(q + kd + (long)h * dk, g + dk, sizeof(float) * dk);
            memcpy(q + 2 * kd + (long)h * rdv, g + 2 * dk, sizeof(float) * rdv);
            memcpy(z + (long)h * rdv, g + 2 * dk + rdv, sizeof(float) * rdv);
            memcpy(a->g_b + t * c->lin_hv + (long)h * r, y + 2L * h * r, sizeof(float) * r);
            memcpy(a->g_a + t * c->lin_hv + (long)h * r, y + 2L * h * r + r, sizeof(float) * r);
        }
    }
}

static GdnShape gdn_shape(const Config* c, int T) {
    GdnShape sh = {T, c->lin_hk, c->lin_hv, c->lin_dk, c->lin_dv, c->lin_conv, c->rms_eps};
    return sh;
}

static GdnParams gdn_params(const LayerWeights* w) {
    GdnParams p = {w->gdn_conv, w->gdn_alog, w->gdn_dt, w->gdn_norm};
    return p;
}

// A Gated DeltaNet token mixer (README §3) from acts[l].a into h_mid (out_proj output).
static void gdn_layer_forward(const Model* m, RunState* s, int l, const QuantPlan* plan) {
    const Config* c = &m->c;
    LayerActs* a = &s->acts[l];
    if (c->fam->fused_gdn) {
        linear_apply(m, s, model_lin(m, l, LIN_GDN_QKVZ, -1), a->g_raw, a->a, plan);
        linear_apply(m, s, model_lin(m, l, LIN_GDN_BA, -1), a->g_raw2, a->a, plan);
        gdn_unfuse(c, a, s->T);
    } else {
        linear_apply(m, s, model_lin(m, l, LIN_GDN_QKV, -1), a->g_qkv, a->a, plan);
        linear_apply(m, s, model_lin(m, l, LIN_GDN_Z, -1), a->g_z, a->a, plan);
        linear_apply(m, s, model_lin(m, l, LIN_GDN_B, -1), a->g_b, a->a, plan);
        linear_apply(m, s, model_lin(m, l, LIN_GDN_A, -1), a->g_a, a->a, plan);
    }
    GdnShape sh = gdn_shape(c, s->T);
    GdnParams p = gdn_params(&m->layers[l]);
    gdn_forward(&sh, &p, a->g_qkv, a->g_z, a->g_b, a->g_a, a->g_out, s->save ? a->gdn : NULL);
    linear_apply(m, s, model_lin(m, l, LIN_GDN_OUT, -1), a->h_mid, a->g_out, plan);
}

void model_forward_layer(const Model* m, RunState* s, int l, float* h_out, const QuantPlan* plan) {
    const Config* c = &m->c;
    const LayerWeights* w = &m->layers[l];
    LayerActs* a = &s->acts[l];
    int T = s->T, D = c->hidden_size;
    rmsnorm_forward(a->a, a->rstd_in, a->h_in, w->w_in, T, D, c->rms_eps);
    if (c->linear[l])
        gdn_layer_forward(m, s, l, plan);
    else
        attn_forward(m, s, l, plan);
    for (long i = 0; i < (long)T * D; i++) a->h_mid[i] += a->h_in[i];
    rmsnorm_forward(a->m, a->rstd_post, a->h_mid, w->w_post, T, D, c->rms_eps);
    mlp_forward(m, s, l, h_out, plan);
}

const float* model_linear_input(const RunState* r, const Linear* lin) {
    const LayerActs* a = &r->acts[lin->layer];
    switch (lin->kind) {
    case LIN_O:
        return a->att_g ? a->att_g : a->att;
    case LIN_GDN_OUT:
        return a->g_out;
    case LIN_GATE:
    case LIN_UP:
    case LIN_SH_GATE:
    case LIN_SH_UP:
        return a->m;
    case LIN_DOWN:
        return a->act;
    case LIN_SH_DOWN:
        return a->sh_act;
    default: // q, k, v and the Gated DeltaNet's input projections
        return a->a;
    }
}

void model_forward_from(const Model* m, RunState* s, int start, const QuantPlan* plan) {
    const Config* c = &m->c;
    int L = c->num_layers;
    for (int l = start; l < L; l++)
        model_forward_layer(m, s, l, l + 1 < L ? s->acts[l + 1].h_in : s->h_final, plan);
    rmsnorm_forward(s->hf, s->rstd_f, s->h_final, m->norm, s->T, c->hidden_size, c->rms_eps);
    matmul_forward(s->logits, s->hf, m->lm_head, s->T, c->hidden_size, c->vocab_size, 0.0f);
}

void model_forward(const Model* m, RunState* s, const int* ids, const QuantPlan* plan) {
    model_embed(m, s, ids);
    model_forward_from(m, s, 0, plan);
}

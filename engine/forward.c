#include "forward.h"

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

// dense: the buffers of a dense MLP; moe: those of a sparse layer (both for a shared set).
static void acts_alloc(LayerActs* a, const Config* c, int T, int dense, int moe) {
    int D = c->hidden_size, I = c->intermediate_size, H = c->num_heads, KV = c->num_kv_heads;
    int qd = H * c->head_dim, kvd = KV * c->head_dim;
    a->h_in = falloc((long)T * D);
    a->a = falloc((long)T * D);
    a->rstd_in = falloc(T);
    a->q_lin = falloc((long)T * qd);
    a->k_lin = falloc((long)T * kvd);
    a->q_rstd = falloc((long)T * H);
    a->k_rstd = falloc((long)T * KV);
    a->q = falloc((long)T * qd);
    a->k = falloc((long)T * kvd);
    a->v = falloc((long)T * kvd);
    a->att = falloc((long)T * qd);
    a->lse = falloc((long)T * H);
    a->h_mid = falloc((long)T * D);
    a->m = falloc((long)T * D);
    a->rstd_post = falloc(T);
    if (dense) {
        a->g = falloc((long)T * I);
        a->u = falloc((long)T * I);
        a->act = falloc((long)T * I);
    }
    if (moe) acts_alloc_moe(a, c, T);
}

static void acts_free(LayerActs* a) {
    float* ps[] = {a->h_in,      a->a,    a->rstd_in, a->q_lin, a->k_lin,    a->q_rstd, a->k_rstd,
                   a->q,         a->k,    a->v,       a->att,   a->lse,      a->h_mid,  a->m,
                   a->rstd_post, a->g,    a->u,       a->act,   a->r_logits, a->probs,  a->w,
                   a->ex.g,      a->ex.u, a->ex.act,  a->ex.ye, a->y_moe};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) free(ps[i]);
    int* is[] = {a->idx, a->order, a->offs, a->pos};
    for (size_t i = 0; i < sizeof(is) / sizeof(is[0]); i++) free(is[i]);
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
    // saved: each layer its own kind of MLP buffers; shared: one set for every kind of layer
    int any_sparse = c->n_sparse > 0, any_dense = c->n_sparse < c->num_layers;
    acts_alloc(&s->acts[0], c, T, save ? !c->sparse[0] : any_dense, save ? c->sparse[0] : any_sparse);
    for (int l = 1; l < c->num_layers; l++) {
        if (save)
            acts_alloc(&s->acts[l], c, T, !c->sparse[l], c->sparse[l]);
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
    rope_init(&s->rope, T, c->head_dim, c->rope_theta);
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

// The MLP half of layer l from acts[l].m: dense or experts; h_out = h_mid + its output.
static void mlp_forward(const Model* m, RunState* s, int l, float* h_out, const QuantPlan* plan) {
    LayerActs* a = &s->acts[l];
    long TD = (long)s->T * m->c.hidden_size;
    if (model_layer_sparse(m, l)) {
        moe_route(m, s, l);
        moe_experts_apply(m, s, l, &a->ex, a->y_moe, plan);
        for (long i = 0; i < TD; i++) h_out[i] = a->y_moe[i] + a->h_mid[i];
        return;
    }
    long I = m->c.intermediate_size;
    linear_apply(m, s, model_lin(m, l, LIN_GATE, -1), a->g, a->m, plan);
    linear_apply(m, s, model_lin(m, l, LIN_UP, -1), a->u, a->m, plan);
    swiglu_forward(a->act, a->g, a->u, s->T * I);
    linear_apply(m, s, model_lin(m, l, LIN_DOWN, -1), h_out, a->act, plan);
    for (long i = 0; i < TD; i++) h_out[i] += a->h_mid[i];
}

void model_forward_layer(const Model* m, RunState* s, int l, float* h_out, const QuantPlan* plan) {
    const Config* c = &m->c;
    const LayerWeights* w = &m->layers[l];
    LayerActs* a = &s->acts[l];
    int T = s->T, D = c->hidden_size, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    int base = m->lin0[l];
    rmsnorm_forward(a->a, a->rstd_in, a->h_in, w->w_in, T, D, c->rms_eps);
    linear_apply(m, s, base + LIN_Q, a->q_lin, a->a, plan);
    linear_apply(m, s, base + LIN_K, a->k_lin, a->a, plan);
    linear_apply(m, s, base + LIN_V, a->v, a->a, plan);
    rmsnorm_forward(a->q, a->q_rstd, a->q_lin, w->q_norm, T * H, hd, c->rms_eps);
    rmsnorm_forward(a->k, a->k_rstd, a->k_lin, w->k_norm, T * KV, hd, c->rms_eps);
    rope_forward(a->q, &s->rope, T, H);
    rope_forward(a->k, &s->rope, T, KV);
    attention_forward(a->att, a->lse, a->q, a->k, a->v, T, H, KV, hd);
    linear_apply(m, s, base + LIN_O, a->h_mid, a->att, plan);
    for (long i = 0; i < (long)T * D; i++) a->h_mid[i] += a->h_in[i];
    rmsnorm_forward(a->m, a->rstd_post, a->h_mid, w->w_post, T, D, c->rms_eps);
    mlp_forward(m, s, l, h_out, plan);
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

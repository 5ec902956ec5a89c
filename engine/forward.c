#include "forward.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

static float* falloc(long n) { return xmalloc(sizeof(float) * (size_t)n); }

static void acts_alloc(LayerActs* a, const Config* c, int T) {
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
    a->g = falloc((long)T * I);
    a->u = falloc((long)T * I);
    a->act = falloc((long)T * I);
}

static void acts_free(LayerActs* a) {
    float* ps[] = {a->h_in, a->a,   a->rstd_in, a->q_lin, a->k_lin, a->q_rstd,    a->k_rstd, a->q, a->k,
                   a->v,    a->att, a->lse,     a->h_mid, a->m,     a->rstd_post, a->g,      a->u, a->act};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) free(ps[i]);
}

static int max_in(const Model* m) {
    int mx = 0;
    for (int i = 0; i < m->n_linears; i++) mx = m->linears[i].in > mx ? m->linears[i].in : mx;
    return mx;
}

void run_init(RunState* s, const Model* m, int T, int save) {
    const Config* c = &m->c;
    memset(s, 0, sizeof(*s));
    s->T = T;
    s->save = save;
    s->acts = xcalloc(c->num_layers, sizeof(LayerActs));
    acts_alloc(&s->acts[0], c, T);
    for (int l = 1; l < c->num_layers; l++) {
        if (save)
            acts_alloc(&s->acts[l], c, T);
        else
            s->acts[l] = s->acts[0];
    }
    // Without save the stream is updated in place: layer l's output is layer l+1's input.
    s->h_final = save ? falloc((long)T * c->hidden_size) : s->acts[0].h_in;
    s->hf = falloc((long)T * c->hidden_size);
    s->rstd_f = falloc(T);
    s->logits = falloc((long)T * c->vocab_size);
    s->xq = falloc((long)T * max_in(m));
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
    rope_free(&s->rope);
}

void model_embed(const Model* m, RunState* s, const int* ids) {
    int D = m->c.hidden_size;
    for (int t = 0; t < s->T; t++)
        memcpy(s->acts[0].h_in + (long)t * D, m->embed + (long)ids[t] * D, sizeof(float) * D);
}

void linear_apply(const Model* m, RunState* s, int index, float* out, const float* x, const QuantPlan* plan) {
    const Linear* lin = &m->linears[index];
    const float* w = lin->w;
    if (plan && plan->wq[index]) w = plan->wq[index];
    if (plan && plan->in_spec[index].bits) {
        quant_input_rows(s->xq, x, s->T, lin->in, plan->in_spec[index]);
        x = s->xq;
    }
    matmul_forward(out, x, w, s->T, lin->in, lin->out, 0.0f);
}

static void layer_forward(const Model* m, RunState* s, int l, float* h_out, const QuantPlan* plan) {
    const Config* c = &m->c;
    const LayerWeights* w = &m->layers[l];
    LayerActs* a = &s->acts[l];
    int T = s->T, D = c->hidden_size, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    long I = c->intermediate_size;
    int base = l * LIN_PER_LAYER;
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
    linear_apply(m, s, base + LIN_GATE, a->g, a->m, plan);
    linear_apply(m, s, base + LIN_UP, a->u, a->m, plan);
    swiglu_forward(a->act, a->g, a->u, T * I);
    linear_apply(m, s, base + LIN_DOWN, h_out, a->act, plan);
    for (long i = 0; i < (long)T * D; i++) h_out[i] += a->h_mid[i];
}

void model_forward_from(const Model* m, RunState* s, int start, const QuantPlan* plan) {
    const Config* c = &m->c;
    int L = c->num_layers;
    for (int l = start; l < L; l++) layer_forward(m, s, l, l + 1 < L ? s->acts[l + 1].h_in : s->h_final, plan);
    rmsnorm_forward(s->hf, s->rstd_f, s->h_final, m->norm, s->T, c->hidden_size, c->rms_eps);
    matmul_forward(s->logits, s->hf, m->lm_head, s->T, c->hidden_size, c->vocab_size, 0.0f);
}

void model_forward(const Model* m, RunState* s, const int* ids, const QuantPlan* plan) {
    model_embed(m, s, ids);
    model_forward_from(m, s, 0, plan);
}

#include "score.h"

#include <stdlib.h>
#include <string.h>

#include "../engine/util.h"

void qcache_init(QuantCache* qc, const Model* m, const Groups* gs, const Format* fmts, int nf) {
    qc->nf = nf;
    qc->nl = m->n_linears;
    qc->wq = xcalloc((size_t)nf * m->n_linears, sizeof(float*));
    for (int f = 0; f < nf; f++)
        for (int i = 0; i < m->n_linears; i++) {
            const Linear* l = &m->linears[i];
            if (gs->g[gs->group_of[i]].disabled || fmts[f].kv) continue;
            float* w = xmalloc(sizeof(float) * (size_t)l->out * l->in);
            if (fmts[f].w_enable)
                quant_weight_rows(w, l->w, l->out, l->in, fmts[f].w);
            else
                memcpy(w, l->w, sizeof(float) * (size_t)l->out * l->in);
            qc->wq[(size_t)f * m->n_linears + i] = w;
        }
}

void qcache_free(QuantCache* qc) {
    for (int i = 0; i < qc->nf * qc->nl; i++) free(qc->wq[i]);
    free(qc->wq);
}

void plan_init(QuantPlan* p, const Model* m) {
    p->wq = xcalloc(m->n_linears, sizeof(float*));
    p->in_spec = xcalloc(m->n_linears, sizeof(QuantSpec));
    p->kv = xcalloc(m->c.num_layers, sizeof(QuantSpec));
}

void plan_free(QuantPlan* p) {
    free(p->wq);
    free(p->in_spec);
    free(p->kv);
}

void plan_clear(QuantPlan* p, const Model* m) {
    memset(p->wq, 0, sizeof(float*) * m->n_linears);
    memset(p->in_spec, 0, sizeof(QuantSpec) * m->n_linears);
    memset(p->kv, 0, sizeof(QuantSpec) * m->c.num_layers);
}

void plan_set_group(QuantPlan* p, const QuantCache* qc, const Groups* gs, const Format* fmts, int g, int f) {
    const Group* grp = &gs->g[g];
    if (grp->kv) {
        p->kv[grp->layer] = fmts[f].kvq;
        return;
    }
    for (int j = 0; j < grp->n_members; j++) {
        int i = grp->members[j];
        p->wq[i] = qc->wq[(size_t)f * qc->nl + i];
        if (fmts[f].in_enable)
            p->in_spec[i] = fmts[f].in;
        else
            memset(&p->in_spec[i], 0, sizeof(QuantSpec));
    }
}

const char* method_name(Method m) { return m == METHOD_KL ? "kl" : "gradient"; }

int kl_order_layer_major(void) {
    const char* v = getenv("AUTOQ_KL_ORDER");
    if (!v || !*v || !strcmp(v, "group-major")) return 0;
    if (!strcmp(v, "layer-major")) return 1;
    fail_input("AUTOQ_KL_ORDER: '%s' is neither layer-major nor group-major", v);
    return 0;
}

// The passes of a layer-major kl sample, in the group-major order, and a state for each.
static void passes_init(Scorer* s, int T) {
    int n = 0;
    for (int g = 0; g < s->gs->n; g++) n += !s->gs->g[g].disabled;
    n *= s->nf;
    s->n_pass = 0;
    s->pass_f = xmalloc(sizeof(int) * (n ? n : 1));
    s->pass_g = xmalloc(sizeof(int) * (n ? n : 1));
    for (int f = 0; f < s->nf; f++)
        for (int g = 0; g < s->gs->n; g++)
            if (!s->gs->g[g].disabled) s->pass_f[s->n_pass] = f, s->pass_g[s->n_pass++] = g;
    s->states = xmalloc(sizeof(float) * ((size_t)n ? (size_t)n : 1) * T * s->m->c.hidden_size);
}

void scorer_init(Scorer* s, const Model* m, const Groups* gs, const Format* fmts, int nf, Method method,
                 int T) {
    scorer_init_with(s, m, gs, fmts, nf, method, T, NULL);
}

void scorer_init_with(Scorer* s, const Model* m, const Groups* gs, const Format* fmts, int nf, Method method,
                      int T, const QuantCache* qc) {
    memset(s, 0, sizeof(*s));
    s->m = m;
    s->gs = gs;
    s->fmts = fmts;
    s->nf = nf;
    s->method = method;
    if (qc)
        s->qc = *qc; // the caller's (GPTQ) weights, freed by the caller
    else
        qcache_init(&s->qc, m, gs, fmts, nf);
    s->qc_owned = !qc;
    run_init(&s->ref, m, T, 1);
    plan_init(&s->plan, m);
    s->kv_group = xmalloc(sizeof(int) * m->c.num_layers);
    for (int l = 0; l < m->c.num_layers; l++) s->kv_group[l] = -1;
    for (int g = 0; g < gs->n; g++)
        if (gs->g[g].kv) s->kv_group[gs->g[g].layer] = g;
    if (method == METHOD_KL) {
        run_init(&s->q, m, T, 0);
        s->layer_major = kl_order_layer_major();
        if (s->layer_major) passes_init(s, T);
    } else {
        grad_init(&s->grad, m, T);
        int mo = m->c.num_kv_heads * m->c.head_dim; // a K or V tensor for the KV-cache scores
        for (int i = 0; i < m->n_linears; i++) mo = m->linears[i].out > mo ? m->linears[i].out : mo;
        for (int g = 0; g < gs->n; g++) s->grad.kv_hooks |= gs->g[g].kv;
        s->y = xmalloc(sizeof(float) * (size_t)T * mo);
        s->yq = xmalloc(sizeof(float) * (size_t)T * mo); // o_proj's out is D: holds a block output too
        if (m->c.n_sparse) {
            size_t TK = (size_t)T * m->c.top_k, Im = m->c.moe_intermediate;
            s->mq.g = xmalloc(sizeof(float) * TK * Im);
            s->mq.u = xmalloc(sizeof(float) * TK * Im);
            s->mq.act = xmalloc(sizeof(float) * TK * Im);
            s->mq.ye = xmalloc(sizeof(float) * TK * m->c.hidden_size);
        }
    }
}

void scorer_free(Scorer* s) {
    const Model* m = s->m;
    free(s->pass_f);
    free(s->pass_g);
    free(s->states);
    run_free(&s->ref, m);
    if (s->method == METHOD_KL)
        run_free(&s->q, m);
    else
        grad_free(&s->grad);
    plan_free(&s->plan);
    free(s->kv_group);
    if (s->qc_owned) qcache_free(&s->qc);
    free(s->y);
    free(s->yq);
    free(s->mq.g);
    free(s->mq.u);
    free(s->mq.act);
    free(s->mq.ye);
}

// Expert coverage of the unquantized pass just run (README §6).
static void count_experts(Scorer* s) {
    const Model* m = s->m;
    if (!s->expert_tokens) return;
    for (int l = 0, j = 0; l < m->c.num_layers; l++)
        if (model_layer_sparse(m, l))
            moe_count_tokens(m, &s->ref, l, s->expert_tokens + (size_t)j++ * m->c.num_experts);
}

// KL: the unquantized pass keeps every layer's input; each group's pass
// restarts at its own layer, so early layers are never recomputed.
static void add_sample_kl(Scorer* s, const int* ids) {
    const Model* m = s->m;
    const Config* c = &m->c;
    int T = s->ref.T;
    model_forward(m, &s->ref, ids, NULL);
    count_experts(s);
    for (int f = 0; f < s->nf; f++)
        for (int g = 0; g < s->gs->n; g++) {
            const Group* grp = &s->gs->g[g];
            if (grp->disabled || !format_fits(&s->fmts[f], grp)) continue;
            int l = grp->layer;
            memcpy(s->q.acts[l].h_in, s->ref.acts[l].h_in, sizeof(float) * (size_t)T * c->hidden_size);
            plan_clear(&s->plan, m);
            plan_set_group(&s->plan, &s->qc, s->gs, s->fmts, g, f);
            model_forward_from(m, &s->q, l, &s->plan);
            s->score[(size_t)f * s->gs->n + g] += kl_rows(s->ref.logits, s->q.logits, T, c->vocab_size);
        }
}

// KL, layer-major (README "Streaming"): the order a streamed run needs, each layer once per sample. While
// layer l runs, the reference advances, the passes of l's groups are born from its input there, and every
// pass born so far advances through l; the heads and KLs come after the last layer. Each pass does the
// arithmetic of add_sample_kl's, so the scores are the same to the last bit.
static void add_sample_kl_layer_major(Scorer* s, const int* ids) {
    const Model* m = s->m;
    const Config* c = &m->c;
    int T = s->ref.T, L = c->num_layers;
    size_t TD = (size_t)T * c->hidden_size;
    model_embed(m, &s->ref, ids);
    for (int l = 0; l < L; l++) {
        model_forward_layer(m, &s->ref, l, l + 1 < L ? s->ref.acts[l + 1].h_in : s->ref.h_final, NULL);
        float* shared = s->q.acts[l].h_in; // without save every layer's entry shares these buffers
        for (int p = 0; p < s->n_pass; p++) {
            const Group* grp = &s->gs->g[s->pass_g[p]];
            if (grp->layer > l) continue;
            float* h = s->states + p * TD;
            if (grp->layer == l) memcpy(h, s->ref.acts[l].h_in, sizeof(float) * TD);
            plan_clear(&s->plan, m);
            plan_set_group(&s->plan, &s->qc, s->gs, s->fmts, s->pass_g[p], s->pass_f[p]);
            s->q.acts[l].h_in = h;
            model_forward_layer(m, &s->q, l, h, &s->plan);
            s->q.acts[l].h_in = shared;
        }
    }
    model_forward_from(m, &s->ref, L, NULL); // the final norm and lm_head
    count_experts(s);
    for (int p = 0; p < s->n_pass; p++) {
        memcpy(s->q.h_final, s->states + p * TD, sizeof(float) * TD);
        model_forward_from(m, &s->q, L, NULL);
        s->score[(size_t)s->pass_f[p] * s->gs->n + s->pass_g[p]] +=
            kl_rows(s->ref.logits, s->q.logits, T, c->vocab_size);
    }
}

// The input X_m of linear m in the saved unquantized pass.
static const float* linear_input(const RunState* r, const Linear* lin) { return model_linear_input(r, lin); }

// A sparse layer's experts (README §6): dY = dL/dy_moe, and Yq the block output with every expert's
// weights and inputs quantized on the unquantized pass's routing.
static void grad_hook_experts(Scorer* s, int l, const float* dy) {
    const Model* m = s->m;
    int g = s->gs->group_of[model_lin(m, l, LIN_GATE, 0)];
    if (s->gs->g[g].disabled) return;
    long n = (long)s->ref.T * m->c.hidden_size;
    for (int f = 0; f < s->nf; f++) {
        if (s->fmts[f].kv) continue;
        plan_clear(&s->plan, m);
        plan_set_group(&s->plan, &s->qc, s->gs, s->fmts, g, f);
        moe_experts_apply(m, &s->ref, l, &s->mq, s->yq, &s->plan);
        s->score[(size_t)f * s->gs->n + g] += sq_diff_dot(dy, s->yq, s->ref.acts[l].y_moe, n);
    }
}

// A full-attention layer's KV cache (README §6): dY = dL/dK (which 0) or dL/dV (1) as attention reads them,
// and the quantization error of the tensor the cache stores; K's and V's terms add into one group score.
static void grad_hook_kv(Scorer* s, int l, int which, const float* dy) {
    const Model* m = s->m;
    int g = s->kv_group[l];
    if (g < 0 || s->gs->g[g].disabled) return;
    const LayerActs* a = &s->ref.acts[l];
    const float* x = which ? a->v : a->k;
    int T = s->ref.T, rows = T * m->c.num_kv_heads, hd = m->c.head_dim;
    for (int f = 0; f < s->nf; f++) {
        if (!s->fmts[f].kv) continue;
        quant_kv_tensor(s->yq, x, rows, hd, s->fmts[f].kvq);
        s->score[(size_t)f * s->gs->n + g] += sq_diff_dot(dy, s->yq, x, (long)rows * hd);
    }
}

static void grad_hook(int idx, const float* dy, void* ctx) {
    Scorer* s = ctx;
    const Model* m = s->m;
    if (idx < -m->c.num_layers) {
        int L = m->c.num_layers;
        grad_hook_kv(s, kv_hook_layer(L, idx), kv_hook_which(L, idx), dy);
        return;
    }
    if (idx < 0) {
        grad_hook_experts(s, moe_hook_layer(idx), dy);
        return;
    }
    int g = s->gs->group_of[idx];
    if (s->gs->g[g].disabled) return;
    const Linear* lin = &m->linears[idx];
    const float* x = linear_input(&s->ref, lin);
    int T = s->ref.T;
    long n = (long)T * lin->out;
    matmul_forward(s->y, x, lin->w, T, lin->in, lin->out, 0.0f);
    for (int f = 0; f < s->nf; f++) {
        if (s->fmts[f].kv) continue;
        plan_clear(&s->plan, m);
        plan_set_group(&s->plan, &s->qc, s->gs, s->fmts, g, f);
        linear_apply(m, &s->ref, idx, s->yq, x, &s->plan);
        s->score[(size_t)f * s->gs->n + g] += sq_diff_dot(dy, s->yq, s->y, n);
    }
}

static void add_sample_gradient(Scorer* s, const int* ids) {
    model_forward(s->m, &s->ref, ids, NULL);
    count_experts(s);
    model_backward(s->m, &s->ref, &s->grad, ids, grad_hook, s);
}

void scorer_add_sample(Scorer* s, const int* ids, double* score) {
    s->score = score;
    if (s->method == METHOD_KL && s->layer_major)
        add_sample_kl_layer_major(s, ids);
    else if (s->method == METHOD_KL)
        add_sample_kl(s, ids);
    else
        add_sample_gradient(s, ids);
}

void work_add(Work* w, const Model* m, const Groups* gs, int nf, Method method, int nb, int recompute) {
    if (method == METHOD_GRADIENT) { // a forward and a backward (about twice a forward), maybe a recompute
        w->forward_equiv += nb * (recompute ? 4.0 : 3.0);
        w->naive_equiv += nb * (recompute ? 4.0 : 3.0);
        return;
    }
    int L = m->c.num_layers;
    w->forward_equiv += nb;
    w->naive_equiv += nb * (1.0 + (double)nf * gs->n_enabled);
    for (int g = 0; g < gs->n; g++) // each group's pass restarts at its own layer
        if (!gs->g[g].disabled) w->forward_equiv += (double)nf * nb * (L - gs->g[g].layer) / L;
}

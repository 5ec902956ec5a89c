#include "model.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

const char* const k_linear_names[LIN_PER_LAYER] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

typedef struct {
    char name[192];
    int ndim;
    int64_t shape[2];
    float** dst;
} Want;

static void want(Want* w, int* n, float** dst, int ndim, int64_t a, int64_t b, const char* fmt, ...)
    __attribute__((format(printf, 7, 8)));

static void want(Want* w, int* n, float** dst, int ndim, int64_t a, int64_t b, const char* fmt, ...) {
    Want* x = &w[(*n)++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->name, sizeof(x->name), fmt, ap);
    va_end(ap);
    x->ndim = ndim;
    x->shape[0] = a;
    x->shape[1] = b;
    x->dst = dst;
}

static void check_tensor(const Model* m, const Want* w, const StTensor* t) {
    if (!t) fail_input("%s: tensor '%s' is missing from the checkpoint", m->dir, w->name);
    if (t->dtype != DT_BF16 && t->dtype != DT_F16 && t->dtype != DT_F32)
        fail_input("%s: tensor '%s': dtype %s is not supported (BF16, F16, F32)", t->file, w->name,
                   st_dtype_name(t->dtype));
    int ok = t->ndim == w->ndim;
    for (int i = 0; ok && i < w->ndim; i++) ok = t->shape[i] == w->shape[i];
    if (!ok) {
        char got[64] = "", exp[64];
        for (int i = 0; i < t->ndim && i < 4; i++)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%lld", i ? ", " : "",
                     (long long)t->shape[i]);
        if (w->ndim == 1)
            snprintf(exp, sizeof(exp), "%lld", (long long)w->shape[0]);
        else
            snprintf(exp, sizeof(exp), "%lld, %lld", (long long)w->shape[0], (long long)w->shape[1]);
        fail_input("%s: tensor '%s' has shape [%s] but config.json implies [%s]", t->file, w->name, got, exp);
    }
}

static void load(Model* m, const char* dir, int convert) {
    memset(m, 0, sizeof(*m));
    m->dir = xstrdup(dir);
    config_load(&m->c, dir);
    st_open(&m->ck, dir);
    const Config* c = &m->c;
    int L = c->num_layers, D = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    int qd = c->num_heads * c->head_dim, kvd = c->num_kv_heads * c->head_dim, hd = c->head_dim;
    const char* P = c->prefix;
    m->layers = xcalloc(L, sizeof(LayerWeights));
    int nw = 0;
    Want* w = xcalloc(11 * L + 3, sizeof(Want));
    want(w, &nw, &m->embed, 2, V, D, "%sembed_tokens.weight", P);
    want(w, &nw, &m->norm, 1, D, 0, "%snorm.weight", P);
    int has_head = st_find(&m->ck, "lm_head.weight") != NULL;
    if (has_head || !c->tie_word_embeddings) want(w, &nw, &m->lm_head, 2, V, D, "lm_head.weight");
    for (int l = 0; l < L; l++) {
        LayerWeights* lw = &m->layers[l];
        want(w, &nw, &lw->w_in, 1, D, 0, "%slayers.%d.input_layernorm.weight", P, l);
        want(w, &nw, &lw->q_proj, 2, qd, D, "%slayers.%d.self_attn.q_proj.weight", P, l);
        want(w, &nw, &lw->k_proj, 2, kvd, D, "%slayers.%d.self_attn.k_proj.weight", P, l);
        want(w, &nw, &lw->v_proj, 2, kvd, D, "%slayers.%d.self_attn.v_proj.weight", P, l);
        want(w, &nw, &lw->o_proj, 2, D, qd, "%slayers.%d.self_attn.o_proj.weight", P, l);
        want(w, &nw, &lw->q_norm, 1, hd, 0, "%slayers.%d.self_attn.q_norm.weight", P, l);
        want(w, &nw, &lw->k_norm, 1, hd, 0, "%slayers.%d.self_attn.k_norm.weight", P, l);
        want(w, &nw, &lw->w_post, 1, D, 0, "%slayers.%d.post_attention_layernorm.weight", P, l);
        want(w, &nw, &lw->gate_proj, 2, I, D, "%slayers.%d.mlp.gate_proj.weight", P, l);
        want(w, &nw, &lw->up_proj, 2, I, D, "%slayers.%d.mlp.up_proj.weight", P, l);
        want(w, &nw, &lw->down_proj, 2, D, I, "%slayers.%d.mlp.down_proj.weight", P, l);
    }
    // Validate everything before converting anything.
    for (int i = 0; i < nw; i++) check_tensor(m, &w[i], st_find(&m->ck, w[i].name));
    for (int i = 0; i < nw; i++) {
        const StTensor* t = st_find(&m->ck, w[i].name);
        size_t numel = (size_t)w[i].shape[0] * (w[i].ndim == 2 ? (size_t)w[i].shape[1] : 1);
        m->n_params += numel;
        if (!convert) continue;
        *w[i].dst = xmalloc(numel * sizeof(float));
        st_to_f32(t, *w[i].dst);
    }
    m->host_weights = convert;
    if (!m->lm_head) m->lm_head = m->embed;
    free(w);
    for (int i = 0; i < m->ck.n; i++) m->n_visual += strncmp(m->ck.t[i].name, "model.visual.", 13) == 0;
    m->n_linears = LIN_PER_LAYER * L;
    m->linears = xcalloc(m->n_linears, sizeof(Linear));
    for (int l = 0; l < L; l++) {
        LayerWeights* lw = &m->layers[l];
        float* ws[LIN_PER_LAYER] = {lw->q_proj,    lw->k_proj,  lw->v_proj,   lw->o_proj,
                                    lw->gate_proj, lw->up_proj, lw->down_proj};
        int outs[LIN_PER_LAYER] = {qd, kvd, kvd, D, I, I, D};
        int ins[LIN_PER_LAYER] = {D, D, D, qd, D, D, I};
        for (int k = 0; k < LIN_PER_LAYER; k++) {
            Linear* lin = &m->linears[l * LIN_PER_LAYER + k];
            snprintf(lin->name, sizeof(lin->name), "%slayers.%d.%s", P, l, k_linear_names[k]);
            lin->layer = l;
            lin->kind = k;
            lin->out = outs[k];
            lin->in = ins[k];
            lin->w = ws[k];
        }
    }
}

void model_load(Model* m, const char* dir) { load(m, dir, 1); }

void model_open(Model* m, const char* dir) { load(m, dir, 0); }

void model_free(Model* m) {
    for (int l = 0; l < m->c.num_layers; l++) {
        LayerWeights* lw = &m->layers[l];
        float* ps[] = {lw->w_in,   lw->q_proj, lw->k_proj,    lw->v_proj,  lw->o_proj,   lw->q_norm,
                       lw->k_norm, lw->w_post, lw->gate_proj, lw->up_proj, lw->down_proj};
        for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) free(ps[i]);
    }
    if (m->lm_head != m->embed) free(m->lm_head);
    free(m->embed);
    free(m->norm);
    free(m->layers);
    free(m->linears);
    st_free(&m->ck);
    free(m->dir);
    memset(m, 0, sizeof(*m));
}

#include "model.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

const char* const k_linear_names[LIN_PER_LAYER] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

// How a checkpoint tensor reaches the fp32 weights.
typedef enum {
    W_OWN,       // its own allocation at *dst
    W_EX_GATE,   // expert e's gate (I_moe, D) into ex_gate
    W_EX_UP,     // expert e's up (I_moe, D) into ex_up
    W_EX_DOWN,   // expert e's down (D, I_moe) into ex_down
    W_GU_FUSED,  // (E, 2 I_moe, D): gate rows then up rows of each expert
    W_GU_FUSED4, // (E, D, 2 I_moe), transformers 4: transposed
    W_DN_FUSED,  // (E, D, I_moe) straight into ex_down
    W_DN_FUSED4, // (E, I_moe, D), transformers 4: transposed
} WantHow;

typedef struct {
    char name[192];
    int ndim;
    int64_t shape[3];
    float** dst;
    int how, layer, expert;
    int plus1; // a norm used as 1 + w: 1 is added once at load (README §3)
} Want;

typedef struct {
    Want* w;
    int n, cap;
} Wants;

static Want* want(Wants* ws, float** dst, int ndim, int64_t a, int64_t b, int64_t c, const char* fmt, ...)
    __attribute__((format(printf, 7, 8)));

static Want* want(Wants* ws, float** dst, int ndim, int64_t a, int64_t b, int64_t c, const char* fmt, ...) {
    if (ws->n == ws->cap) {
        ws->cap = ws->cap ? 2 * ws->cap : 64;
        ws->w = xrealloc(ws->w, sizeof(Want) * (size_t)ws->cap);
    }
    Want* x = &ws->w[ws->n++];
    memset(x, 0, sizeof(*x));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->name, sizeof(x->name), fmt, ap);
    va_end(ap);
    x->ndim = ndim;
    x->shape[0] = a;
    x->shape[1] = b;
    x->shape[2] = c;
    x->dst = dst;
    x->expert = -1;
    return x;
}

static void shape_str(char* buf, size_t n, int ndim, const int64_t* shape) {
    buf[0] = 0;
    for (int i = 0; i < ndim && i < 4; i++)
        snprintf(buf + strlen(buf), n - strlen(buf), "%s%lld", i ? ", " : "", (long long)shape[i]);
}

static int shape_is(const StTensor* t, int ndim, const int64_t* shape) {
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    return ok;
}

static void check_tensor(const Model* m, const Want* w, const StTensor* t) {
    if (!t) fail_input("%s: tensor '%s' is missing from the checkpoint", m->dir, w->name);
    if (t->dtype != DT_BF16 && t->dtype != DT_F16 && t->dtype != DT_F32)
        fail_input("%s: tensor '%s': dtype %s is not supported (BF16, F16, F32)", t->file, w->name,
                   st_dtype_name(t->dtype));
    if (!shape_is(t, w->ndim, w->shape)) {
        char got[96], exp[96];
        shape_str(got, sizeof(got), t->ndim, t->shape);
        shape_str(exp, sizeof(exp), w->ndim, w->shape);
        fail_input("%s: tensor '%s' has shape [%s] but config.json implies [%s]", t->file, w->name, got, exp);
    }
}

// Reads the decimal index after name's prefix pre (e.g. the layer of "model.layers.12.mlp"); -1
// when name does not continue with digits then '.' or its end.
static long index_after(const char* name, const char* pre) {
    size_t np = strlen(pre);
    if (strncmp(name, pre, np) != 0) return -1;
    const char* d = name + np;
    long x = 0;
    int digits = 0;
    while (*d >= '0' && *d <= '9' && digits < 10) x = x * 10 + (*d++ - '0'), digits++;
    return digits == 0 || (*d != '.' && *d != 0) ? -1 : x;
}

// A tensor of a layer (or an expert) the config does not have means config and checkpoint
// disagree (e.g. num_hidden_layers or num_experts edited down): refuse rather than ignore it.
static void check_layer_range(const Model* m) {
    const Config* c = &m->c;
    char want[64], ex[96], clip[CLIP_BUF];
    snprintf(want, sizeof(want), "%slayers.", c->prefix);
    for (int i = 0; i < m->ck.n; i++) {
        const char* name = m->ck.t[i].name;
        long layer = index_after(name, want);
        if (layer < 0) continue;
        if (layer >= c->num_layers)
            fail_input("%s: tensor '%s' belongs to layer %ld but config.json has num_hidden_layers %d",
                       m->ck.t[i].file, str_clip(clip, name), layer, c->num_layers);
        if (!c->sparse[layer]) continue;
        snprintf(ex, sizeof(ex), "%s%ld.mlp.experts.", want, layer);
        long e = index_after(name, ex);
        if (e >= c->num_experts)
            fail_input("%s: tensor '%s' belongs to expert %ld but config.json has num_experts %d",
                       m->ck.t[i].file, str_clip(clip, name), e, c->num_experts);
    }
}

// The router and experts of sparse layer l, in whichever layout the checkpoint has (model.h).
static void want_experts(Model* m, Wants* ws, int l) {
    const Config* c = &m->c;
    int E = c->num_experts, I = c->moe_intermediate, D = c->hidden_size;
    const char* P = c->prefix;
    char gu[192];
    snprintf(gu, sizeof(gu), "%slayers.%d.mlp.experts.gate_up_proj", P, l);
    const StTensor* t = st_find(&m->ck, gu);
    if (t) {
        int64_t v5[3] = {E, 2L * I, D};
        int v4 = !shape_is(t, 3, v5) && t->ndim == 3 && t->shape[0] == E && t->shape[1] == D &&
                 t->shape[2] == 2L * I;
        Want* w = v4 ? want(ws, NULL, 3, E, D, 2L * I, "%s", gu) : want(ws, NULL, 3, E, 2L * I, D, "%s", gu);
        w->how = v4 ? W_GU_FUSED4 : W_GU_FUSED;
        w->layer = l;
        w = v4 ? want(ws, NULL, 3, E, I, D, "%slayers.%d.mlp.experts.down_proj", P, l)
               : want(ws, NULL, 3, E, D, I, "%slayers.%d.mlp.experts.down_proj", P, l);
        w->how = v4 ? W_DN_FUSED4 : W_DN_FUSED;
        w->layer = l;
        return;
    }
    for (int e = 0; e < E; e++) {
        const char* parts[3] = {"gate_proj", "up_proj", "down_proj"};
        for (int k = 0; k < 3; k++) {
            Want* w = want(ws, NULL, 2, k == 2 ? D : I, k == 2 ? I : D, 0,
                           "%slayers.%d.mlp.experts.%d.%s.weight", P, l, e, parts[k]);
            w->how = W_EX_GATE + k;
            w->layer = l;
            w->expert = e;
        }
    }
}

void model_transpose_experts(float* dst, const float* src, int E, int a, int b) {
    for (long e = 0; e < E; e++)
        for (long i = 0; i < a; i++)
            for (long j = 0; j < b; j++) dst[(e * b + j) * a + i] = src[(e * a + i) * b + j];
}

// Converts one validated tensor to fp32 where w says.
static void convert_tensor(Model* m, const Want* w, const StTensor* t, size_t numel) {
    if (w->how == W_OWN) {
        *w->dst = xmalloc(size_mul(numel, sizeof(float), w->name));
        st_to_f32(t, *w->dst);
        for (size_t i = 0; w->plus1 && i < numel; i++) (*w->dst)[i] += 1.0f;
        return;
    }
    LayerWeights* lw = &m->layers[w->layer];
    long E = m->c.num_experts, I = m->c.moe_intermediate, D = m->c.hidden_size, one = I * D;
    if (w->how == W_EX_GATE || w->how == W_EX_UP || w->how == W_EX_DOWN) {
        float* base = w->how == W_EX_GATE ? lw->ex_gate : w->how == W_EX_UP ? lw->ex_up : lw->ex_down;
        st_to_f32(t, base + w->expert * one);
        return;
    }
    if (w->how == W_DN_FUSED) {
        st_to_f32(t, lw->ex_down);
        return;
    }
    float* tmp = xmalloc(size_mul(numel, sizeof(float), w->name));
    st_to_f32(t, tmp);
    if (w->how == W_DN_FUSED4) {
        model_transpose_experts(lw->ex_down, tmp, (int)E, (int)I, (int)D);
    } else {
        float* gu = tmp;
        if (w->how == W_GU_FUSED4) { // (E, D, 2I) -> (E, 2I, D)
            gu = xmalloc(size_mul(numel, sizeof(float), w->name));
            model_transpose_experts(gu, tmp, (int)E, (int)D, (int)(2 * I));
        }
        for (long e = 0; e < E; e++) {
            memcpy(lw->ex_gate + e * one, gu + 2 * e * one, sizeof(float) * (size_t)one);
            memcpy(lw->ex_up + e * one, gu + (2 * e + 1) * one, sizeof(float) * (size_t)one);
        }
        if (gu != tmp) free(gu);
    }
    free(tmp);
}

// Linears of layer l's rows in the architecture table: one per linear row, 3 E for the experts.
static long layer_linears(const Config* c, int l) {
    const ArchFamily* f = c->fam;
    long n = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const ArchTensor* r = &f->tensors[i];
        if (r->lin >= 0 && arch_layer_has(c, l, r->part))
            n += r->layout == LAYOUT_EXPERTS ? 3L * c->num_experts : 1;
    }
    return n;
}

// Expert e's gate, up and down of sparse layer l at linears i, i+1, i+2.
static void expert_linears(Model* m, int l, int e, int i) {
    const Config* c = &m->c;
    LayerWeights* lw = &m->layers[l];
    int D = c->hidden_size, Im = c->moe_intermediate;
    const char* parts[3] = {"gate_proj", "up_proj", "down_proj"};
    float* bases[3] = {lw->ex_gate, lw->ex_up, lw->ex_down};
    for (int k = 0; k < 3; k++) {
        Linear* lin = &m->linears[i + k];
        lin->layer = l;
        lin->kind = LIN_GATE + k;
        lin->expert = e;
        snprintf(lin->name, sizeof(lin->name), "%slayers.%d.mlp.experts.%d.%s", c->prefix, l, e, parts[k]);
        lin->out = k == 2 ? D : Im;
        lin->in = k == 2 ? Im : D;
        lin->w = bases[k] ? bases[k] + (size_t)e * Im * D : NULL;
    }
}

// The table of linears (model.h), from the family's rows in the architecture table.
static void build_linears(Model* m) {
    const Config* c = &m->c;
    const ArchFamily* f = c->fam;
    int L = c->num_layers;
    m->lin0 = xcalloc((size_t)L + 1, sizeof(int));
    m->slot = xmalloc(sizeof(int) * (size_t)L * LIN_KINDS);
    for (int l = 0; l < L; l++) {
        long n = layer_linears(c, l);
        if (m->lin0[l] + n > 0x7fffffffL) fail_input("%s: too many linears (%ld in layer %d)", m->dir, n, l);
        m->lin0[l + 1] = m->lin0[l] + (int)n;
    }
    m->n_linears = m->lin0[L];
    m->linears = xcalloc(m->n_linears, sizeof(Linear));
    for (int l = 0; l < L; l++) {
        int* slot = m->slot + (size_t)l * LIN_KINDS;
        for (int k = 0; k < LIN_KINDS; k++) slot[k] = -1;
        int pos = 0;
        for (int i = 0; i < f->n_tensors; i++) {
            const ArchTensor* r = &f->tensors[i];
            if (r->lin < 0 || !arch_layer_has(c, l, r->part)) continue;
            if (r->layout == LAYOUT_EXPERTS) {
                for (int k = 0; k < 3; k++) slot[LIN_GATE + k] = pos + k;
                for (int e = 0; e < c->num_experts; e++, pos += 3) expert_linears(m, l, e, m->lin0[l] + pos);
                continue;
            }
            slot[r->lin] = pos;
            Linear* lin = &m->linears[m->lin0[l] + pos++];
            lin->layer = l;
            lin->kind = r->lin;
            lin->expert = -1;
            size_t nl = strlen(r->name) - strlen(".weight"); // the module: the row's name without .weight
            snprintf(lin->name, sizeof(lin->name), "%slayers.%d.%.*s", c->prefix, l, (int)nl, r->name);
            lin->out = (int)arch_dim(c, r->shape[0]);
            lin->in = (int)arch_dim(c, r->shape[1]);
            lin->w = *(float**)((char*)&m->layers[l] + r->field);
        }
    }
}

// Every tensor of layer l its family's table lists for the parts the layer has.
static void want_layer(Model* m, Wants* ws, int l) {
    const Config* c = &m->c;
    const ArchFamily* f = c->fam;
    for (int i = 0; i < f->n_tensors; i++) {
        const ArchTensor* r = &f->tensors[i];
        if (!arch_layer_has(c, l, r->part)) continue;
        if (r->layout == LAYOUT_EXPERTS) {
            want_experts(m, ws, l);
            continue;
        }
        float** dst = (float**)((char*)&m->layers[l] + r->field);
        Want* w = want(ws, dst, r->ndim, arch_dim(c, r->shape[0]), arch_dim(c, r->shape[1]),
                       arch_dim(c, r->shape[2]), "%slayers.%d.%s", c->prefix, l, r->name);
        w->plus1 = r->plus1 && f->hybrid;
    }
}

static void load(Model* m, const char* dir, int convert) {
    memset(m, 0, sizeof(*m));
    m->dir = xstrdup(dir);
    config_load(&m->c, dir);
    st_open(&m->ck, dir);
    const Config* c = &m->c;
    int L = c->num_layers, D = c->hidden_size, V = c->vocab_size;
    const char* P = c->prefix;
    m->layers = xcalloc(L, sizeof(LayerWeights));
    Wants ws = {0};
    want(&ws, &m->embed, 2, V, D, 0, "%sembed_tokens.weight", P);
    want(&ws, &m->norm, 1, D, 0, 0, "%snorm.weight", P)->plus1 = c->fam->hybrid;
    int has_head = st_find(&m->ck, "lm_head.weight") != NULL;
    if (has_head || !c->tie_word_embeddings) want(&ws, &m->lm_head, 2, V, D, 0, "lm_head.weight");
    for (int l = 0; l < L; l++) want_layer(m, &ws, l);
    // Validate everything before converting anything: shapes first (cheap),
    // then every value finite (one pass over the weights, GPU path included).
    check_layer_range(m);
    Want* w = ws.w;
    int nw = ws.n;
    for (int i = 0; i < nw; i++) check_tensor(m, &w[i], st_find(&m->ck, w[i].name));
    for (int i = 0; i < nw; i++) st_check_finite(st_find(&m->ck, w[i].name));
    size_t ex = size_mul3((size_t)c->num_experts, (size_t)c->moe_intermediate, (size_t)D, "experts");
    for (int l = 0; convert && l < L; l++) {
        if (!c->sparse[l]) continue;
        m->layers[l].ex_gate = xmalloc(size_mul(ex, sizeof(float), "experts"));
        m->layers[l].ex_up = xmalloc(size_mul(ex, sizeof(float), "experts"));
        m->layers[l].ex_down = xmalloc(size_mul(ex, sizeof(float), "experts"));
    }
    for (int i = 0; i < nw; i++) {
        const StTensor* t = st_find(&m->ck, w[i].name);
        size_t numel = 1;
        for (int d = 0; d < w[i].ndim; d++) numel = size_mul(numel, (size_t)w[i].shape[d], w[i].name);
        m->n_params += numel;
        if (convert) convert_tensor(m, &w[i], t, numel);
    }
    m->host_weights = convert;
    if (!m->lm_head) m->lm_head = m->embed;
    free(w);
    for (int i = 0; i < m->ck.n; i++) {
        m->n_visual += strncmp(m->ck.t[i].name, "model.visual.", 13) == 0;
        m->n_mtp += strncmp(m->ck.t[i].name, "mtp.", 4) == 0;
    }
    build_linears(m);
}

void model_load(Model* m, const char* dir) { load(m, dir, 1); }

void model_open(Model* m, const char* dir) { load(m, dir, 0); }

const StTensor* model_weight_tensor(const Model* m, int i, char* name, size_t cap) {
    const Linear* l = &m->linears[i];
    snprintf(name, cap, "%s.weight", l->name);
    const StTensor* t = st_find(&m->ck, name);
    const char* cut = l->expert >= 0 ? strstr(l->name, ".experts.") : NULL;
    if (t || !cut) return t;
    char fused[240];
    snprintf(fused, sizeof(fused), "%.*s.experts.%s", (int)(cut - l->name), l->name,
             l->kind == LIN_DOWN ? "down_proj" : "gate_up_proj");
    return st_find(&m->ck, fused);
}

const float* model_linear_f32(const Model* m, int i, float** tmp) {
    const Linear* l = &m->linears[i];
    *tmp = NULL;
    if (l->w) return l->w;
    char name[240];
    const StTensor* t = model_weight_tensor(m, i, name, sizeof(name));
    if (!t || l->expert >= 0) fail_other("internal: %s: no fp32 weights (model_open) for an expert", l->name);
    *tmp = xmalloc(sizeof(float) * (size_t)l->out * l->in);
    st_to_f32(t, *tmp);
    return *tmp;
}

void model_free(Model* m) {
    // LayerWeights holds only float pointers, each its own allocation or NULL.
    for (int l = 0; m->layers && l < m->c.num_layers; l++) {
        float** ps = (float**)&m->layers[l];
        for (size_t i = 0; i < sizeof(LayerWeights) / sizeof(float*); i++) free(ps[i]);
    }
    if (m->lm_head != m->embed) free(m->lm_head);
    free(m->embed);
    free(m->norm);
    free(m->layers);
    free(m->linears);
    free(m->lin0);
    free(m->slot);
    st_free(&m->ck);
    free(m->dir);
    memset(m, 0, sizeof(*m));
}

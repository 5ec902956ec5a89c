#include "quantizer.h"

#include <stdlib.h>
#include <string.h>

#include "../engine/util.h"
#include "gptq_cache.h"

void quantizer_parse(Quantizer* q, Args* a) {
    memset(q, 0, sizeof(*q));
    q->gptq = gptq_defaults;
    const char* kind = args_str(a, "--quantizer");
    if (kind && strcmp(kind, "gptq") == 0)
        q->kind = QUANTIZER_GPTQ;
    else if (kind && strcmp(kind, "rtn") != 0)
        fail_input("%s: --quantizer must be rtn or gptq (got '%s')", a->cmd, kind);
    const char* damp = args_str(a, "--gptq-dampening");
    const char* order = args_str(a, "--gptq-actorder");
    q->cache_dir = args_str(a, "--gptq-cache");
    if ((damp || order || q->cache_dir) && q->kind != QUANTIZER_GPTQ)
        fail_input("%s: --gptq-dampening, --gptq-actorder and --gptq-cache go with --quantizer gptq", a->cmd);
    if (damp) {
        char* end;
        q->gptq.damp = strtod(damp, &end);
        if (*end || end == damp || !(q->gptq.damp >= 0 && q->gptq.damp <= 1))
            fail_input("%s: --gptq-dampening '%s' must be a number in [0, 1] (a fraction of the mean diagonal)",
                       a->cmd, damp);
    }
    if (order && strcmp(order, "none") == 0)
        q->gptq.order = GPTQ_ORDER_NONE;
    else if (order && strcmp(order, "group") == 0)
        q->gptq.order = GPTQ_ORDER_GROUP;
    else if (order && strcmp(order, "static") != 0)
        fail_input("%s: --gptq-actorder must be none, static or group (got '%s')", a->cmd, order);
}

const char* quantizer_name(const Quantizer* q) { return q->kind == QUANTIZER_GPTQ ? "gptq" : "rtn"; }

void quantizer_check(const Quantizer* q, const Model* m, int use_gpu) {
    if (q->kind != QUANTIZER_GPTQ) return;
    if (use_gpu)
        fail_input(
            "--quantizer gptq: the CUDA engine scores round-to-nearest weights only for now; use --device "
            "cpu");
    if (m->c.n_sparse)
        fail_input("--quantizer gptq: %s has mixture-of-experts layers, whose per-expert Hessians are not "
                   "collected yet; use --quantizer rtn",
                   m->dir);
}

enum { SITE_ATTN, SITE_O, SITE_MLP, SITE_DOWN, SITES };

// Memory for the Hessians held at once while scoring (fp32; Qwen3-8B: 0.8 GB a layer).
#define HESSIAN_BYTES ((size_t)8 << 30)

int hessian_site(const Model* m, int linear) {
    const Linear* l = &m->linears[linear];
    int site = l->kind == LIN_O      ? SITE_O
               : l->kind == LIN_DOWN ? SITE_DOWN
               : l->kind >= LIN_GATE ? SITE_MLP
                                     : SITE_ATTN;
    return l->layer * SITES + site;
}

const float* site_input(const RunState* s, int l, int site) {
    const LayerActs* a = &s->acts[l];
    return site == SITE_O ? a->att : site == SITE_DOWN ? a->act : site == SITE_MLP ? a->m : a->a;
}

// The width of a site's input.
static int site_width(const Model* m, int site) {
    const Config* c = &m->c;
    return site == SITE_O      ? c->num_heads * c->head_dim
           : site == SITE_DOWN ? c->intermediate_size
                               : c->hidden_size;
}

// GPTQ of every linear of layer l that want[i] names, with format want[i]: out[i] gets its weights.
static void gptq_layer(float** out, const Model* m, int l, const Hessian* hs, const Format* fmts,
                       const int* want, const Quantizer* q, Progress* p) {
    float* h = NULL;
    for (int site = 0; site < SITES; site++) {
        int n = site_width(m, site), have = 0;
        for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++) {
            if (want[i] < 0 || hessian_site(m, i) != l * SITES + site) continue;
            const Linear* lin = &m->linears[i];
            const Format* f = &fmts[want[i]];
            out[i] = xmalloc(sizeof(float) * lin->out * lin->in);
            if (!f->w_enable) {
                memcpy(out[i], lin->w, sizeof(float) * lin->out * lin->in);
                continue;
            }
            if (!have) {
                h = xrealloc(h, sizeof(float) * n * n);
                hessian_get(&hs[site], h);
                have = 1;
            }
            if (gptq_quantize(out[i], lin->w, h, lin->out, lin->in, f->w, q->gptq,
                              q->scales ? q->scales[i] : NULL))
                warn_msg(
                    "%s: the dampened Hessian is not positive definite; quantized round-to-nearest instead, "
                    "as llm-compressor does (raise --gptq-dampening or add calibration data)",
                    lin->name);
            if (p) progress_step(p, 1);
        }
    }
    free(h);
}

static void hessians_init(Hessian* hs, const Model* m) {
    for (int site = 0; site < SITES; site++) hessian_init(&hs[site], site_width(m, site));
}

static void hessians_free(Hessian* hs) {
    for (int site = 0; site < SITES; site++) hessian_free(&hs[site]);
}

static void hessians_add(Hessian* hs, const RunState* s, int l) {
    for (int site = 0; site < SITES; site++) hessian_add(&hs[site], site_input(s, l, site), s->T);
}

void qcache_build(QuantCache* qc, const Model* m, const Groups* gs, const Format* fmts, int nf,
                  const Quantizer* q, const TokenIds* ids) {
    if (q->kind == QUANTIZER_RTN) {
        qcache_init(qc, m, gs, fmts, nf);
        return;
    }
    int L = m->c.num_layers, T = ids->t;
    qc->nf = nf;
    qc->nl = m->n_linears;
    qc->wq = xcalloc((size_t)nf * m->n_linears, sizeof(float*));
    GptqCacheKey key;
    gptq_cache_key(&key, "scores", m, ids, fmts, nf, NULL, gs, &q->gptq);
    if (q->scales) fail_other("qcache_build: given scales apply to one recipe (gptq_sequential) only");
    if (q->cache_dir && gptq_cache_load(q->cache_dir, &key, m, qc->wq, nf)) return;
    // Hessians from the unquantized model, for as many layers at a time as HESSIAN_BYTES holds
    // (each chunk one pass over the windows, up to its last layer)
    double t0 = time_now();
    size_t per_layer = 0;
    for (int site = 0; site < SITES; site++)
        per_layer += sizeof(float) * site_width(m, site) * site_width(m, site);
    int chunk = (int)(HESSIAN_BYTES / per_layer) > 1 ? (int)(HESSIAN_BYTES / per_layer) : 1;
    Hessian* hs = xmalloc(sizeof(Hessian) * SITES * (chunk < L ? chunk : L));
    int* want = xmalloc(sizeof(int) * m->n_linears);
    int count = 0;
    for (int i = 0; i < m->n_linears; i++) count += !gs->g[gs->group_of[i]].disabled;
    RunState s;
    run_init(&s, m, T, 1);
    Progress p;
    progress_init(&p, "gptq", (long)count * nf);
    for (int l0 = 0; l0 < L; l0 += chunk) {
        int l1 = l0 + chunk < L ? l0 + chunk : L;
        for (int l = l0; l < l1; l++) hessians_init(hs + SITES * (l - l0), m);
        for (int w = 0; w < ids->n; w++) {
            model_embed(m, &s, ids->ids + (long)w * T);
            for (int l = 0; l < l1; l++) {
                model_forward_layer(m, &s, l, l + 1 < L ? s.acts[l + 1].h_in : s.h_final, NULL);
                if (l >= l0) hessians_add(hs + SITES * (l - l0), &s, l);
            }
        }
        for (int f = 0; f < nf; f++) {
            for (int i = 0; i < m->n_linears; i++) want[i] = gs->g[gs->group_of[i]].disabled ? -1 : f;
            for (int l = l0; l < l1; l++)
                gptq_layer(qc->wq + (size_t)f * m->n_linears, m, l, hs + SITES * (l - l0), fmts, want, q, &p);
        }
        for (int l = l0; l < l1; l++) hessians_free(hs + SITES * (l - l0));
    }
    progress_end(&p);
    run_free(&s, m);
    info_msg("gptq: %d linears x %d format(s) from %d x %d tokens in %.2fs", count, nf, ids->n, T,
             time_now() - t0);
    free(want);
    free(hs);
    if (q->cache_dir) gptq_cache_save(q->cache_dir, &key, m, qc->wq, nf, fmts, NULL);
}

void gptq_sequential(float** wq, const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                     const Quantizer* q) {
    const Config* c = &m->c;
    int L = c->num_layers, T = ids->t, D = c->hidden_size;
    memset(wq, 0, sizeof(float*) * m->n_linears);
    GptqCacheKey key;
    gptq_cache_key(&key, "sequential", m, ids, fmts, 1, choice, NULL, &q->gptq);
    int cache = q->cache_dir && !q->scales; // the cache holds weights on RTN's scales only
    if (cache && gptq_cache_load(q->cache_dir, &key, m, wq, 1)) return;
    double t0 = time_now();
    size_t TD = (size_t)T * D;
    float* h = xmalloc(sizeof(float) * TD * ids->n); // (n, T, D) each window's stream at layer l
    RunState s;
    run_init(&s, m, T, 0);
    for (int w = 0; w < ids->n; w++) {
        model_embed(m, &s, ids->ids + (long)w * T);
        memcpy(h + TD * w, s.acts[0].h_in, sizeof(float) * TD);
    }
    QuantPlan plan; // weights only: llm-compressor calibrates with activation quantization disabled
    plan_init(&plan, m);
    Hessian hs[SITES];
    Progress p;
    progress_init(&p, "gptq layers", L);
    for (int l = 0; l < L; l++) {
        int any = 0;
        for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++) any |= choice[i] >= 0;
        if (any) {
            hessians_init(hs, m);
            for (int w = 0; w < ids->n; w++) { // this layer as it is, on the stream so far
                memcpy(s.acts[l].h_in, h + TD * w, sizeof(float) * TD);
                model_forward_layer(m, &s, l, s.acts[l].h_in, NULL);
                hessians_add(hs, &s, l);
            }
            gptq_layer(wq, m, l, hs, fmts, choice, q, NULL);
            hessians_free(hs);
            for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++) plan.wq[i] = wq[i];
        }
        for (int w = 0; w < ids->n; w++) { // the stream through the quantized layer
            memcpy(s.acts[l].h_in, h + TD * w, sizeof(float) * TD);
            model_forward_layer(m, &s, l, s.acts[l].h_in, &plan);
            memcpy(h + TD * w, s.acts[l].h_in, sizeof(float) * TD);
        }
        progress_step(&p, 1);
    }
    progress_end(&p);
    info_msg("gptq: sequential pass over %d layers, %d x %d tokens in %.2fs", L, ids->n, T, time_now() - t0);
    plan_free(&plan);
    run_free(&s, m);
    free(h);
    if (cache) gptq_cache_save(q->cache_dir, &key, m, wq, 1, fmts, choice);
}

#include "quantizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/gpu.h"
#include "../engine/util.h"
#include "../kernels/swiglu.h"
#include "gptq_cache.h"
#include "stream_plan.h"

void quantizer_parse(Quantizer* q, Args* a) {
    memset(q, 0, sizeof(*q));
    q->gptq = gptq_defaults;
    // values already checked against the command's table (autoq.c)
    const char* kind = args_str(a, "--quantizer");
    if (kind && strcmp(kind, "gptq") == 0) q->kind = QUANTIZER_GPTQ;
    const char* damp = args_str(a, "--gptq-dampening");
    const char* order = args_str(a, "--gptq-actorder");
    const char* pipe = args_str(a, "--gptq-pipeline");
    q->cache_dir = args_str(a, "--gptq-cache");
    if ((damp || order || pipe || q->cache_dir) && q->kind != QUANTIZER_GPTQ)
        fail_input(
            "%s: --gptq-dampening, --gptq-actorder, --gptq-pipeline and --gptq-cache go with --quantizer gptq",
            a->cmd);
    if (pipe && strcmp(pipe, "basic") == 0) q->pipeline = GPTQ_PIPELINE_BASIC;
    if (damp) q->gptq.damp = args_double(a, "--gptq-dampening", q->gptq.damp);
    if (order && strcmp(order, "none") == 0)
        q->gptq.order = GPTQ_ORDER_NONE;
    else if (order && strcmp(order, "group") == 0)
        q->gptq.order = GPTQ_ORDER_GROUP;
}

void quantizer_set_device(Quantizer* q, const char* dev, const Config* c, const char* dir, const char* cmd) {
    if (dev && strcmp(dev, "auto") && strcmp(dev, "cpu") && strcmp(dev, "cuda"))
        fail_input("%s: --device must be auto, cpu or cuda (got '%s')", cmd, dev);
    int want = dev && strcmp(dev, "cuda") == 0;
    if (want && gpu_device_count() == 0) fail_input("%s: --device cuda: no CUDA device found", cmd);
    if (want && c->n_sparse) fail_input("%s: --device cuda: %s has mixture-of-experts layers", cmd, dir);
    // GPTQ on the CUDA engine knows Qwen3's Hessian sites only: a hybrid model's GPTQ runs on the CPU.
    if (want && c->fam->hybrid && q->kind == QUANTIZER_GPTQ)
        fail_input("%s: --device cuda --quantizer gptq: %s (%s) has Gated DeltaNet layers, whose GPTQ runs on "
                   "the CPU engine only; use --device cpu",
                   cmd, dir, c->model_type);
    q->use_gpu = q->kind == QUANTIZER_GPTQ && !(dev && strcmp(dev, "cpu") == 0) && gpu_device_count() > 0 &&
                 !c->n_sparse && !c->fam->hybrid;
}

void quantizer_set_gpu_memory(Quantizer* q, const char* size, const char* cmd) {
    if (!size) return;
    q->gpu_mem = stream_parse_cap(cmd, size);
    if (!q->use_gpu)
        fail_input("%s: --gpu-memory caps GPTQ's GPU pipeline (the other passes run on the CPU): it needs "
                   "--quantizer gptq on a GPU (a dense model, --device auto or cuda)",
                   cmd);
}

const char* quantizer_name(const Quantizer* q) { return q->kind == QUANTIZER_GPTQ ? "gptq" : "rtn"; }

const char* gptq_pipeline_name(GptqPipeline p) { return p == GPTQ_PIPELINE_BASIC ? "basic" : "sequential"; }

// Memory for the Hessians held at once while scoring (fp32; Qwen3-8B: 0.8 GB a layer).
#define HESSIAN_BYTES ((size_t)8 << 30)

// A layer's Hessians: the four sites, then in a sparse layer one per expert's down_proj (its
// gate and up read the layer's MLP input, as the dense ones do).
typedef struct {
    int n;      // SITES + E (sparse) or SITES
    Hessian* h; // (n); xtx NULL where no linear reads the site (a sparse layer's dense down)
} LayerHessians;

// Linears that read the same input share a site (README §9): q/k/v and the Gated DeltaNet's input
// projections the normed hidden state, o_proj the (gated) attention output, out_proj the gated norm's
// output (a layer has one of the two), gate/up and the shared expert's gate/up the MLP input, down_proj
// or the shared expert's down its SwiGLU (a layer has one of the two).
int linear_site(const Model* m, int i) {
    const Linear* l = &m->linears[i];
    if (l->expert >= 0 && l->kind == LIN_DOWN) return SITES + l->expert;
    switch (l->kind) {
    case LIN_O:
    case LIN_GDN_OUT:
        return SITE_O;
    case LIN_DOWN:
    case LIN_SH_DOWN:
        return SITE_DOWN;
    case LIN_GATE:
    case LIN_UP:
    case LIN_SH_GATE:
    case LIN_SH_UP:
        return SITE_MLP;
    default:
        return SITE_ATTN;
    }
}

int hessian_site(const Model* m, int linear) {
    return m->linears[linear].layer * SITES + linear_site(m, linear);
}

const float* site_input(const RunState* s, int l, int site) {
    const LayerActs* a = &s->acts[l];
    return site == SITE_O ? a->att : site == SITE_DOWN ? a->act : site == SITE_MLP ? a->m : a->a;
}

int site_width(const Model* m, int site) {
    const Config* c = &m->c;
    return site >= SITES       ? c->moe_intermediate
           : site == SITE_O    ? c->num_heads * c->head_dim
           : site == SITE_DOWN ? c->intermediate_size
                               : c->hidden_size;
}

// The first linear of layer l that reads `site` (below SITES; -1 when none does): its input is the
// site's (model_linear_input), and its width the site's, whatever part of the layer it belongs to (the
// experts' gate and up read the MLP input; their down_proj have sites of their own, past SITES).
static int site_linear(const Model* m, int l, int site) {
    for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++)
        if (linear_site(m, i) == site) return i;
    return -1;
}

// A Hessian for each site some linear of the layer reads (a sparse layer's SITE_DOWN only with a
// shared expert).
static void layer_hessians_init(LayerHessians* lh, const Model* m, int l) {
    int sparse = model_layer_sparse(m, l);
    lh->n = SITES + (sparse ? m->c.num_experts : 0);
    lh->h = xcalloc(lh->n, sizeof(Hessian));
    for (int site = 0; site < SITES; site++) {
        int i = site_linear(m, l, site);
        if (i >= 0) hessian_init(&lh->h[site], m->linears[i].in);
    }
    for (int site = SITES; site < lh->n; site++) hessian_init(&lh->h[site], m->c.moe_intermediate);
}

static void layer_hessians_free(LayerHessians* lh) {
    for (int site = 0; site < lh->n; site++) hessian_free(&lh->h[site]);
    free(lh->h);
}

static size_t layer_hessian_bytes(const Model* m, int l) {
    size_t b = 0, n = m->c.moe_intermediate;
    for (int site = 0; site < SITES; site++) {
        int i = site_linear(m, l, site);
        if (i >= 0) b += sizeof(float) * m->linears[i].in * m->linears[i].in;
    }
    if (model_layer_sparse(m, l)) b += sizeof(float) * n * n * m->c.num_experts;
    return b;
}

// Adds the window just run through layer l. Each expert's down_proj sees every token, as
// llm-compressor calibrates experts by default (moe_calibrate_all_experts): its input
// silu(m Wg^T) * (m Wu^T) over all T tokens, not only those routed to it.
static void layer_hessians_add(LayerHessians* lh, const Model* m, const RunState* s, int l) {
    int T = s->T;
    for (int site = 0; site < SITES; site++)
        if (lh->h[site].xtx)
            hessian_add(&lh->h[site], model_linear_input(s, &m->linears[site_linear(m, l, site)]), T);
    if (lh->n == SITES) return;
    int I = m->c.moe_intermediate, D = m->c.hidden_size;
    float *g = xmalloc(sizeof(float) * T * I), *u = xmalloc(sizeof(float) * T * I);
    for (int e = 0; e < m->c.num_experts; e++) {
        matmul_forward(g, s->acts[l].m, m->linears[model_lin(m, l, LIN_GATE, e)].w, T, D, I, 0.0f);
        matmul_forward(u, s->acts[l].m, m->linears[model_lin(m, l, LIN_UP, e)].w, T, D, I, 0.0f);
        swiglu_forward(g, g, u, (long)T * I);
        hessian_add(&lh->h[SITES + e], g, T);
    }
    free(g), free(u);
}

// GPTQ of every linear of layer l that want[i] names, with format want[i]: out[i] gets its weights.
static void gptq_layer(float** out, const Model* m, int l, const LayerHessians* lh, const Format* fmts,
                       const int* want, const Quantizer* q, Progress* p) {
    float* h = NULL;
    for (int site = 0; site < lh->n; site++) {
        int n = lh->h[site].n, have = 0;
        for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++) {
            if (want[i] < 0 || linear_site(m, i) != site) continue;
            const Linear* lin = &m->linears[i];
            const Format* f = &fmts[want[i]];
            out[i] = xmalloc(sizeof(float) * lin->out * lin->in);
            if (!f->w_enable) {
                memcpy(out[i], lin->w, sizeof(float) * lin->out * lin->in);
                continue;
            }
            if (!have) {
                h = xrealloc(h, sizeof(float) * n * n);
                hessian_get(&lh->h[site], h);
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

// GPTQ rounds integer codes on one scale per row (llm-compressor's channel strategy): other formats exit 2.
static void gptq_check_format(const Format* f) {
    if (f->kv) return; // a KV-cache format quantizes no weight
    if (f->w_enable && quant_is_int_rows(f->w)) return;
    fail_input("%s: --quantizer gptq takes integer per-channel weight formats (w4a8, w8a8); format '%s' has %s",
               f->path, f->name, f->w_enable ? "E4M3 / E2M1 values or block scales" : "no weight quantizer");
}

// GPTQ under the unquantized model's inputs (llm-compressor's basic pipeline), for ns selections at
// once: out[k * n_linears + i] receives linear i's weights in format want[k * n_linears + i] (-1: none).
// The Hessians of as many layers at a time as HESSIAN_BYTES holds, each chunk one pass over the
// windows up to its last layer, serve every selection (the scores' formats, or one recipe).
static void gptq_unquantized(float** out, const Model* m, const TokenIds* ids, const Format* fmts,
                             const int* want, int ns, const Quantizer* q) {
    int L = m->c.num_layers, T = ids->t, nl = m->n_linears;
    double t0 = time_now();
    size_t per_layer = 1;
    for (int l = 0; l < L; l++)
        if (layer_hessian_bytes(m, l) > per_layer) per_layer = layer_hessian_bytes(m, l);
    int chunk = (int)(HESSIAN_BYTES / per_layer) > 1 ? (int)(HESSIAN_BYTES / per_layer) : 1;
    LayerHessians* hs = xmalloc(sizeof(LayerHessians) * (chunk < L ? chunk : L));
    long count = 0;
    for (long k = 0; k < (long)ns * nl; k++) count += want[k] >= 0;
    RunState s;
    run_init(&s, m, T, 1);
    Progress p;
    progress_init(&p, "gptq", count);
    for (int l0 = 0; l0 < L; l0 += chunk) {
        int l1 = l0 + chunk < L ? l0 + chunk : L;
        for (int l = l0; l < l1; l++) layer_hessians_init(&hs[l - l0], m, l);
        for (int w = 0; w < ids->n; w++) {
            model_embed(m, &s, ids->ids + (long)w * T);
            for (int l = 0; l < l1; l++) {
                model_forward_layer(m, &s, l, l + 1 < L ? s.acts[l + 1].h_in : s.h_final, NULL);
                if (l >= l0) layer_hessians_add(&hs[l - l0], m, &s, l);
            }
        }
        for (int k = 0; k < ns; k++)
            for (int l = l0; l < l1; l++)
                gptq_layer(out + (size_t)k * nl, m, l, &hs[l - l0], fmts, want + (size_t)k * nl, q, &p);
        for (int l = l0; l < l1; l++) layer_hessians_free(&hs[l - l0]);
    }
    progress_end(&p);
    run_free(&s, m);
    info_msg("gptq: %ld linear weights from the unquantized model's %d x %d tokens in %.2fs", count, ids->n, T,
             time_now() - t0);
    free(hs);
}

void qcache_build(QuantCache* qc, const Model* m, const Groups* gs, const Format* fmts, int nf,
                  const Quantizer* q, const TokenIds* ids) {
    if (q->kind == QUANTIZER_RTN) {
        qcache_init(qc, m, gs, fmts, nf);
        return;
    }
    for (int f = 0; f < nf; f++) gptq_check_format(&fmts[f]);
    qc->nf = nf;
    qc->nl = m->n_linears;
    qc->wq = xcalloc((size_t)nf * m->n_linears, sizeof(float*));
    GptqCacheKey key; // the GPU's Hessians are of bf16 passes: its own entries
    gptq_cache_key(&key, q->use_gpu ? "scores-gpu" : "scores", m, ids, fmts, nf, NULL, gs, &q->gptq);
    if (q->scales) fail_other("qcache_build: given scales apply to one recipe (gptq_recipe) only");
    if (q->cache_dir && gptq_cache_load(q->cache_dir, &key, m, qc->wq, nf, fmts, NULL, NULL)) return;
    int* want = xmalloc(sizeof(int) * nf * m->n_linears); // every enabled linear in each format
    for (int f = 0; f < nf; f++)
        for (int i = 0; i < m->n_linears; i++)
            want[(size_t)f * m->n_linears + i] = gs->g[gs->group_of[i]].disabled || fmts[f].kv ? -1 : f;
    if (q->use_gpu)
        gptq_basic_gpu_sets(qc->wq, m, ids, fmts, want, nf, q);
    else
        gptq_unquantized(qc->wq, m, ids, fmts, want, nf, q);
    free(want);
    if (q->cache_dir) gptq_cache_save(q->cache_dir, &key, m, qc->wq, nf, fmts, NULL, NULL);
}

void qcache_codes(int8_t* codes, float* scales, const float* wq, const Linear* l, QuantSpec w) {
    if (!l->w) fail_other("internal: %s: GPTQ's codes need the fp32 weights (model_load)", l->name);
    gptq_row_scales(scales, NULL, l->w, l->out, l->in, w); // the scales gptq_quantize fixed
    float lo, hi;
    quant_bounds(w, &lo, &hi);
    long bad = 0;
#pragma omp parallel for reduction(+ : bad)
    for (int r = 0; r < l->out; r++) {
        float s = scales[r];
        for (int j = 0; j < l->in; j++) {
            size_t k = (size_t)r * l->in + j;
            float c = s > 0 ? rintf(wq[k] / s) : 0.0f;
            int ok = c >= lo && c <= hi && c * s == wq[k];
            codes[k] = ok ? (int8_t)c : 0;
            bad += !ok;
        }
    }
    if (bad)
        fail_other("%s: %ld of its GPTQ weights are not an integer code times RTN's row scale (scale mismatch)",
                   l->name, bad);
}

// The sequential pipeline on the CPU (gptq_recipe's contract).
static void gptq_sequential(float** wq, const Model* m, const TokenIds* ids, const Format* fmts,
                            const int* choice, const Quantizer* q) {
    const Config* c = &m->c;
    int L = c->num_layers, T = ids->t, D = c->hidden_size;
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
    LayerHessians hs;
    Progress p;
    progress_init(&p, "gptq layers", L);
    for (int l = 0; l < L; l++) {
        int any = 0;
        for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++) any |= choice[i] >= 0;
        if (any) {
            layer_hessians_init(&hs, m, l);
            for (int w = 0; w < ids->n; w++) { // this layer as it is, on the stream so far
                memcpy(s.acts[l].h_in, h + TD * w, sizeof(float) * TD);
                model_forward_layer(m, &s, l, s.acts[l].h_in, NULL);
                layer_hessians_add(&hs, m, &s, l);
            }
            gptq_layer(wq, m, l, &hs, fmts, choice, q, NULL);
            layer_hessians_free(&hs);
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
}

void gptq_recipe(float** wq, const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                 const Quantizer* q) {
    for (int i = 0; i < m->n_linears; i++)
        if (choice[i] >= 0) gptq_check_format(&fmts[choice[i]]);
    memset(wq, 0, sizeof(float*) * m->n_linears);
    // each pipeline its own entries, and the GPU's too (it rounds its quantized layers to bf16)
    int basic = q->pipeline == GPTQ_PIPELINE_BASIC;
    char mode[48];
    snprintf(mode, sizeof(mode), "%s%s%s", basic ? "basic" : "sequential", q->use_gpu ? "-gpu" : "",
             q->scales ? "-ckpt" : "");
    GptqCacheKey key;
    gptq_cache_key(&key, mode, m, ids, fmts, 1, choice, NULL, &q->gptq);
    // the cache holds weights on RTN's scales, or on the checkpoint's (a function of the model)
    int cache = q->cache_dir && (!q->scales || q->ckpt_scales);
    if (cache && gptq_cache_load(q->cache_dir, &key, m, wq, 1, fmts, choice, q->scales)) return;
    if (basic && q->use_gpu)
        gptq_basic_gpu(wq, m, ids, fmts, choice, q);
    else if (basic)
        gptq_unquantized(wq, m, ids, fmts, choice, 1, q);
    else if (q->use_gpu)
        gptq_sequential_gpu(wq, m, ids, fmts, choice, q);
    else
        gptq_sequential(wq, m, ids, fmts, choice, q);
    // the GPU handed quantize its codes instead of wq: nothing to cache
    if (cache && !(q->use_gpu && q->codes))
        gptq_cache_save(q->cache_dir, &key, m, wq, 1, fmts, choice, q->scales);
}

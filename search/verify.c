#include "verify.h"

#include <stdlib.h>
#include <string.h>

#include "../engine/forward.h"
#include "../engine/util.h"
#include "../scoring/quantizer.h"
#include "quantize.h"

static void verify_core(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                        float* const* given, const char* logits, const VerifyRef* ref, VerifyResult* r);
static void recipe_core(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                        const Quantizer* q, const char* logits, const VerifyRef* ref, VerifyResult* r);

static const int* g_kv; // verify_set_kv's choices

void verify_set_kv(const int* kv) { g_kv = kv; }

void verify_run(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice, VerifyResult* r) {
    verify_core(m, ids, fmts, choice, NULL, NULL, NULL, r);
}

void verify_run_with(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                     float* const* given, VerifyResult* r) {
    verify_core(m, ids, fmts, choice, given, NULL, NULL, r);
}

void verify_recipe(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                   const Quantizer* q, VerifyResult* r) {
    verify_recipe_logits(m, ids, fmts, choice, q, NULL, r);
}

void verify_recipe_ref(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                       const Quantizer* q, const VerifyRef* ref, VerifyResult* r) {
    recipe_core(m, ids, fmts, choice, q, NULL, ref, r);
}

void verify_recipe_logits(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                          const Quantizer* q, const char* logits, VerifyResult* r) {
    recipe_core(m, ids, fmts, choice, q, logits, NULL, r);
}

void verify_ref_init(VerifyRef* ref, const Model* m, const TokenIds* ids) {
    int T = ids->t, V = m->c.vocab_size;
    size_t per = (size_t)T * V;
    memset(ref, 0, sizeof(*ref));
    ref->n = ids->n;
    if (sizeof(float) * per * ids->n > (1UL << 30)) return;
    ref->logits = xmalloc(sizeof(float) * per * ids->n);
    RunState rs;
    run_init(&rs, m, T, 0);
    for (int s = 0; s < ids->n; s++) {
        const int* x = ids->ids + (long)s * T;
        model_forward(m, &rs, x, NULL);
        memcpy(ref->logits + per * s, rs.logits, sizeof(float) * per);
        ref->nll += cross_entropy(NULL, rs.logits, x, T, V);
    }
    ref->nll /= ids->n;
    run_free(&rs, m);
}

void verify_ref_free(VerifyRef* ref) {
    free(ref->logits);
    ref->logits = NULL;
}

static void recipe_core(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                        const Quantizer* q, const char* logits, const VerifyRef* ref, VerifyResult* r) {
    float** wq = xcalloc(m->n_linears, sizeof(float*));
    if (q->kind == QUANTIZER_RTN) {
        // the weights the checkpoint autoq quantize writes loads as: codes on the stored (bf16) scales,
        // times those scales in bf16 (README §10); formats quantize does not write are fake-quantized
        quantize_deployed(wq, m, fmts, choice);
    } else {
        // on the scales autoq quantize stores (bf16 for a bf16 checkpoint): the model it would write
        float** sc = xcalloc(m->n_linears, sizeof(float*));
        quantize_scales(sc, m, fmts, choice);
        Quantizer qs = *q;
        qs.scales = sc, qs.ckpt_scales = 1;
        gptq_recipe(wq, m, ids, fmts, choice, &qs);
        quantize_round_deployed(wq, m);
        for (int i = 0; i < m->n_linears; i++) free(sc[i]);
        free(sc);
    }
    verify_core(m, ids, fmts, choice, wq, logits, ref, r);
    if (q->kind == QUANTIZER_GPTQ) {
        r->gptq = 1;
        r->pipeline = q->pipeline;
    }
    for (int i = 0; i < m->n_linears; i++) free(wq[i]);
    free(wq);
}

// logits: where the quantized model's logits of the first window go (.npy, (T, V)), or NULL.
static void verify_core(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                        float* const* given, const char* logits, const VerifyRef* vref, VerifyResult* r) {
    memset(r, 0, sizeof(*r));
    QuantPlan plan;
    plan.wq = xcalloc(m->n_linears, sizeof(float*));
    plan.in_spec = xcalloc(m->n_linears, sizeof(QuantSpec));
    plan.kv = NULL;
    if (g_kv) { // the KV caches as the recipe stores them
        plan.kv = xcalloc(m->c.num_layers, sizeof(QuantSpec));
        for (int l = 0; l < m->c.num_layers; l++)
            if (g_kv[l] >= 0 && fmts[g_kv[l]].kv) plan.kv[l] = fmts[g_kv[l]].kvq;
    }
    for (int i = 0; i < m->n_linears; i++) {
        if (choice[i] < 0 || fmts[choice[i]].kv) continue;
        const Linear* l = &m->linears[i];
        const Format* f = &fmts[choice[i]];
        float* w = xmalloc(sizeof(float) * (size_t)l->out * l->in);
        if (given && given[i])
            memcpy(w, given[i], sizeof(float) * (size_t)l->out * l->in);
        else if (f->w_enable)
            quant_weight_rows(w, l->w, l->out, l->in, f->w);
        else
            memcpy(w, l->w, sizeof(float) * (size_t)l->out * l->in);
        plan.wq[i] = w;
        if (f->in_enable) plan.in_spec[i] = f->in;
        r->n_quantized++;
    }
    int T = ids->t, V = m->c.vocab_size;
    RunState ref, q;
    run_init(&ref, m, T, 0);
    run_init(&q, m, T, 0);
    int cached = vref && vref->logits && vref->n == ids->n;
    for (int s = 0; s < ids->n; s++) {
        const int* x = ids->ids + (long)s * T;
        const float* rl = cached ? vref->logits + (size_t)s * T * V : ref.logits;
        if (!cached) model_forward(m, &ref, x, NULL);
        model_forward(m, &q, x, &plan);
        r->kl += kl_rows(rl, q.logits, T, V);
        if (!cached) r->nll_ref += cross_entropy(NULL, ref.logits, x, T, V);
        r->nll_q += cross_entropy(NULL, q.logits, x, T, V);
        if (s == 0 && logits) {
            long shape[2] = {T, V};
            npy_write_f32(logits, q.logits, 2, shape);
        }
    }
    r->nll_ref = cached ? vref->nll : r->nll_ref / ids->n;
    r->nll_q /= ids->n;
    run_free(&ref, m);
    run_free(&q, m);
    for (int i = 0; i < m->n_linears; i++) free((void*)plan.wq[i]);
    free(plan.wq);
    free(plan.in_spec);
    free(plan.kv);
}

#include "verify.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/forward.h"
#include "../engine/gpu.h"
#include "../engine/util.h"
#include "../scoring/measure_gpu.h"
#include "../scoring/quantizer.h"
#include "quantize.h"

static void verify_core(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                        float* const* given, const char* logits, const VerifyRef* ref, VerifyResult* r);
static void recipe_core(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                        const Quantizer* q, const char* logits, const VerifyRef* ref, VerifyResult* r);

static const int* g_kv;     // verify_set_kv's choices
static VerifyDevice* g_dev; // verify_set_device's

void verify_set_kv(const int* kv) { g_kv = kv; }
void verify_set_device(VerifyDevice* d) { g_dev = d; }

void verify_device_init(VerifyDevice* d, const char* cmd, const char* device, double cap, int capped_else) {
    memset(d, 0, sizeof(*d));
    d->cmd = cmd;
    d->cap = cap;
    d->want = device && !strcmp(device, "cuda");
    int n = gpu_device_count();
    if (d->want && !n) fail_input("%s --device cuda: no CUDA device found", cmd);
    d->gpu = n > 0 && (d->want || !device || !strcmp(device, "auto"));
    if (cap && !d->gpu && !capped_else)
        fail_input("%s: --gpu-memory: no CUDA device in use (--device cpu or none found)", cmd);
}

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
    // the CUDA engine where verify_set_device chose it: not for --logits (the fp32 CPU engine's are written)
    // nor a measurement against cached reference logits (search --refine's CPU path)
    if (!(g_dev && g_dev->gpu && !logits && !ref &&
          verify_measure_gpu(g_dev, m, ids, fmts, choice, wq, r, NULL)))
        verify_core(m, ids, fmts, choice, wq, logits, ref, r);
    if (q->kind == QUANTIZER_GPTQ) {
        r->gptq = 1;
        r->pipeline = q->pipeline;
    }
    for (int i = 0; i < m->n_linears; i++) free(wq[i]);
    free(wq);
}

// The recipe's linears as the measurement runs them: w[i] the deployed fp32 weight (given[i] itself, not a
// copy: a large model's recipe is tens of GB, so deployed_free frees only the others; else fake-quantized by
// its format, else a copy of its own weight), in[i] its input quantizer; NULL / none where choice[i] keeps
// the linear (or is a KV-cache format). Returns the linears quantized.
static int deploy_linears(const Model* m, const Format* fmts, const int* choice, float* const* given, float** w,
                          QuantSpec* in) {
    int n = 0;
    for (int i = 0; i < m->n_linears; i++) {
        if (choice[i] < 0 || fmts[choice[i]].kv) continue;
        const Linear* l = &m->linears[i];
        const Format* f = &fmts[choice[i]];
        if (given && given[i]) {
            w[i] = given[i];
            if (f->in_enable) in[i] = f->in;
            n++;
            continue;
        }
        w[i] = xmalloc(sizeof(float) * (size_t)l->out * l->in);
        if (f->w_enable)
            quant_weight_rows(w[i], l->w, l->out, l->in, f->w);
        else
            memcpy(w[i], l->w, sizeof(float) * (size_t)l->out * l->in);
        if (f->in_enable) in[i] = f->in;
        n++;
    }
    return n;
}

// Frees deploy_linears' w, given's weights left to the caller.
static void deployed_free(const Model* m, float* const* given, float** w) {
    for (int i = 0; i < m->n_linears; i++)
        if (!(given && w[i] == given[i])) free(w[i]);
}

// Layer l's deployed fp32 weights (those with w[i] set; w NULL: every linear) into extra[l]; returns their sum.
static size_t recipe_extra(const Model* m, float* const* w, double* extra) {
    size_t total = 0;
    for (int l = 0; l < m->c.num_layers; l++)
        for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++)
            if (!w || w[i]) {
                size_t b = sizeof(float) * (size_t)m->linears[i].out * m->linears[i].in;
                extra[l] += (double)b;
                total += b;
            }
    return total;
}

// The bytes d's measurement may use: --gpu-memory, else 90% of the GPU's free memory.
static double device_cap(const VerifyDevice* d) {
    return d->cap ? d->cap : 0.9 * (double)gpu_measure_free_memory();
}

static int plan_gpu(const VerifyDevice* d, const Model* m, int T, int n, const double* extra, MeasurePlan* p,
                    char* why, size_t nwhy) {
    double cap = device_cap(d);
    const char* fs = getenv("AUTOQ_STREAM");         // bench and tests: the streamed path where it fits
    const char* kf = getenv("AUTOQ_STREAM_BATCHES"); // tests: engine batches per streamed batch
    const char* mb = getenv("AUTOQ_MEASURE_BATCH");  // tests: the engine batch (resident and streamed)
    int B0 = d->batch ? d->batch : mb ? atoi(mb) : 0;
    int ok =
        measure_plan(p, &m->c, extra, T, n, B0, cap, d->stream || (fs && !strcmp(fs, "1")), kf ? atoi(kf) : 0);
    if (!ok)
        snprintf(why, nwhy,
                 "%s %.3f GiB is too small for %s with windows of %d tokens: the streamed measurement needs at "
                 "least %.3f GiB (%.0f bytes); the resident one %.3f GiB (%.0f bytes)",
                 d->cap ? "--gpu-memory" : "90% of the GPU's free memory,", cap / 1073741824.0, m->dir, T,
                 p->need / 1073741824.0, ceil(p->need), p->resident / 1073741824.0, ceil(p->resident));
    return ok;
}

int verify_open_gpu(VerifyDevice* d, const Model* m, const TokenIds* ids, float* const* w, MeasurePlan* p,
                    GpuMeasure** res, char* why, size_t nwhy) {
    double* extra = xcalloc(m->c.num_layers, sizeof(double));
    size_t total = recipe_extra(m, w, extra);
    *res = NULL;
    int ok = plan_gpu(d, m, ids->t, ids->n, extra, p, why, nwhy);
    if (ok && !p->streamed && !(*res = gpu_measure_init_batch(m, ids, p->B, total, why, nwhy))) {
        // the engine's own check (what it allocates after the plan's bytes) refused the resident measurement
        // near the cap: stream it
        measure_plan_free(p);
        int s = d->stream;
        d->stream = 1;
        ok = plan_gpu(d, m, ids->t, ids->n, extra, p, why, nwhy);
        d->stream = s;
    }
    free(extra);
    return ok;
}

// The plan and the measurement's statistics: with d->once for the first measurement only (search --refine
// measures many recipes).
static void say_plan(VerifyDevice* d, const MeasurePlan* p, int L) {
    if ((d->once && d->runs) || !p->streamed) return;
    double cap = device_cap(d);
    info_msg("%s: streaming layers from host memory: %d of %d layers resident, batches of %d x %d windows "
             "(reference and quantized states on the GPU), planned peak %.3f GiB (%.0f bytes) of %.3f GiB, "
             "%.2f GiB host->GPU per batch",
             d->cmd, p->sp.n_resident, L, p->sp.k, p->B, p->sp.gpu_bytes / 1073741824.0, p->sp.gpu_bytes,
             cap / 1073741824.0, p->sp.weight_h2d / 1073741824.0);
}

static void say_stats(VerifyDevice* d, GpuMeasure* g, int streamed, double secs) {
    if (d->once && d->runs++) return;
    double h2d, gap, peak, alloc;
    gpu_measure_stats(g, &h2d, &gap, &peak, &alloc);
    info_msg(
        "%s: measured on the CUDA engine, %s, in %.2fs: %.3f GiB (%.0f bytes) allocated by the engine; peak "
        "GPU memory %.3f GiB (the CUDA libraries' workspaces and any other process on the GPU count too), %s",
        d->cmd, streamed ? "streamed layers" : "resident", secs, alloc / 1073741824.0, alloc,
        peak / 1073741824.0, gpu_name());
    if (streamed)
        info_msg("%s: streamed layers: %.2f GiB copied host->GPU, %.3fs of copies not hidden behind compute",
                 d->cmd, h2d / 1073741824.0, gap);
}

int verify_measure_gpu(VerifyDevice* d, const Model* m, const TokenIds* ids, const Format* fmts,
                       const int* choice, float* const* given, VerifyResult* r, double* wkl) {
    for (int l = 0; g_kv && l < m->c.num_layers; l++)
        if (g_kv[l] >= 0 && fmts[g_kv[l]].kv) {
            if (!d->said++)
                info_msg("%s: measures on the CPU engine: layer %d's KV cache is quantized, and the CUDA "
                         "measurement does not fake-quantize KV caches yet (README \"Streaming\")",
                         d->cmd, l);
            return 0;
        }
    int L = m->c.num_layers;
    float** w = xcalloc(m->n_linears, sizeof(float*));
    QuantSpec* in = xcalloc(m->n_linears, sizeof(QuantSpec));
    memset(r, 0, sizeof(*r));
    r->n_quantized = deploy_linears(m, fmts, choice, given, w, in);
    MeasurePlan p;
    char why[512] = "";
    GpuMeasure* g = NULL;
    int ok = verify_open_gpu(d, m, ids, w, &p, &g, why, sizeof(why));
    if (ok && p.streamed) g = gpu_measure_stream_init(m, ids, &p, w, in);
    if (g && !p.streamed)
        for (int i = 0; i < m->n_linears; i++)
            if (w[i]) gpu_measure_set(g, i, w[i], in[i]);
    deployed_free(m, given, w);
    free(w), free(in);
    if (!g) { // --device cuda refuses, as search --refine does; auto measures on the CPU engine
        measure_plan_free(&p);
        if (d->want) fail_input("%s --device cuda: %s", d->cmd, why);
        if (!d->said++) warn_msg("%s: measures on the CPU engine: %s", d->cmd, why);
        return 0;
    }
    say_plan(d, &p, L);
    double t0 = time_now();
    gpu_measure_run(g, &r->kl, &r->nll_ref, &r->nll_q, wkl);
    say_stats(d, g, p.streamed, time_now() - t0);
    r->on_gpu = 1;
    r->streamed = p.streamed;
    gpu_measure_free(g);
    measure_plan_free(&p);
    return 1;
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
    r->n_quantized = deploy_linears(m, fmts, choice, given, (float**)plan.wq, plan.in_spec);
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
    deployed_free(m, given, (float**)plan.wq);
    free(plan.wq);
    free(plan.in_spec);
    free(plan.kv);
}

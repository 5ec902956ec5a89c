// The CUDA engine's measurements (scoring/measure_gpu.h). The engine runs with bf16 hi + lo GEMM inputs
// (~16-bit activations, the closest to the fp32 CPU engine) and the recipe's linears as fp32 GEMMs of their
// deployed weights, so a measurement differs from the CPU's by the unquantized GEMMs' rounding.
#include <string.h>

#include "../engine/gpu_engine.cuh"
#include "../kernels/cuda_common.cuh"
#include "../kernels/loss.h"
#include "measure_gpu.h"

extern "C" {
#include "../engine/gpu.h"
#include "../engine/gpu_stream.h"
#include "../engine/util.h"
}

// A streamed measurer's recipe: per streamed layer one pinned host block of its linears' deployed fp32
// weights (off: bytes into the block, -1 none), copied beside the layer into the stream's extra slot.
typedef struct {
    GpuEngine* e;
    const Model* m;
    long* off;     // (n_linears)
    void** host;   // (L)
    size_t* bytes; // (L)
} Recipe;

struct GpuMeasure {
    GpuEngine* e;
    const TokenIds* held;
    int B, V;
    float* ref;      // resident: (n T, V) device, the unquantized logits; streamed: (B T, V), one batch's
    int* ids;        // (n T) device
    double* acc;     // device: kl, nll, and (streamed) the reference's nll
    double* wkl;     // (n) device: each window's KL
    double* scratch; // (B T) device
    double nll_ref;
    // streamed
    GpuStream* st;
    const MeasurePlan* plan;
    float **hr, **hq; // (k) each engine batch's reference and quantized residual streams
    Recipe* rc;
};

// The windows in batches of g->B: KL to ref (when ref) into acc[0], NLL into acc[1]; logits into ref
// instead when fill.
static void measure_passes(GpuMeasure* g, int fill) {
    const TokenIds* h = g->held;
    long per = (long)h->t * g->V;
    cudaCheck(cudaMemset(g->acc, 0, 2 * sizeof(double)));
    cudaCheck(cudaMemset(g->wkl, 0, sizeof(double) * h->n));
    for (int i = 0; i < h->n; i += g->B) {
        int nb = h->n - i < g->B ? h->n - i : g->B;
        gpu_pass_begin(g->e, 0, h->ids + (long)i * h->t, nb);
        gpu_forward_layers(g->e, 0, nb, 0);
        float* q = gpu_head_logits(g->e, nb, fill ? g->ref + i * per : NULL);
        if (!fill) { // the per-row KL is left in scratch: each window's sum too
            gpu_kl_rows(g->acc, g->scratch, g->ref + i * per, q, nb * h->t, g->V);
            gpu_sum_windows(g->wkl + i, 1, g->scratch, nb, h->t);
        }
        gpu_nll_windows(g->acc + 1, g->scratch, q, g->ids + (long)i * h->t, nb, h->t, g->V);
    }
}

// The buffers both kinds hold: ids, sums, per-window KLs, scratch.
static void measure_buffers(GpuMeasure* g) {
    const TokenIds* held = g->held;
    g->ids = (int*)gpu_alloc(g->e, sizeof(int) * held->n * (size_t)held->t);
    g->acc = (double*)gpu_alloc(g->e, 3 * sizeof(double));
    g->wkl = (double*)gpu_alloc(g->e, sizeof(double) * held->n);
    g->scratch = (double*)gpu_alloc(g->e, sizeof(double) * (size_t)g->B * held->t);
    cudaCheck(cudaMemcpy(g->ids, held->ids, sizeof(int) * held->n * (size_t)held->t, cudaMemcpyHostToDevice));
}

extern "C" size_t gpu_measure_free_memory(void) {
    size_t fr, tot;
    cudaCheck(cudaMemGetInfo(&fr, &tot));
    return fr;
}

extern "C" GpuMeasure* gpu_measure_init_batch(const Model* m, const TokenIds* held, int B, size_t recipe_bytes,
                                              char* why, size_t n) {
    int T = held->t, V = m->c.vocab_size;
    size_t ref_bytes = sizeof(float) * held->n * (size_t)T * V;
    if (B <= 0) B = measure_batch(T, V, held->n);
    GpuMeasure* g = (GpuMeasure*)xcalloc(1, sizeof(GpuMeasure));
    g->e = gpu_engine_init(m, T, B, GEMM_BF16X2);
    size_t fr = gpu_measure_free_memory();
    // what the engine allocates later too: the quantized pass's (B T, V) logits (full_logits, on the first
    // run) and the recipe's emulation buffers (emu_alloc: the largest layer's fp32 weights, xf and yf; a
    // sparse layer's gathered rows), so that a recipe that cannot fit is refused here, not by a cudaMalloc
    const Config* c = &m->c;
    size_t later = sizeof(float) * ((size_t)B * T * V + (size_t)g->e->wmax + 2 * (size_t)g->e->xf_cap);
    if (c->n_sparse)
        later += sizeof(float) * (size_t)B * T * c->top_k *
                 (c->hidden_size > c->moe_intermediate ? c->hidden_size : c->moe_intermediate);
    size_t need = ref_bytes + recipe_bytes + later + 4 * sizeof(double) * (size_t)B * T + (256UL << 20);
    if (need > fr) {
        snprintf(why, n,
                 "the GPU has %.2f GiB free after the model; the held-out logits, the recipes' fp32 "
                 "weights and the measurement's buffers need %.2f GiB",
                 fr / 1073741824.0, need / 1073741824.0);
        gpu_engine_free(g->e);
        free(g);
        return NULL;
    }
    g->held = held;
    g->B = B;
    g->V = V;
    g->ref = (float*)gpu_alloc(g->e, ref_bytes);
    measure_buffers(g);
    measure_passes(g, 1);
    double h[2];
    cudaCheck(cudaMemcpy(h, g->acc, sizeof(h), cudaMemcpyDeviceToHost));
    g->nll_ref = h[1] / held->n;
    return g;
}

extern "C" GpuMeasure* gpu_measure_init(const Model* m, const TokenIds* held, size_t recipe_bytes, char* why,
                                        size_t n) {
    return gpu_measure_init_batch(m, held, 0, recipe_bytes, why, n);
}

extern "C" void gpu_measure_set(GpuMeasure* g, int idx, const float* w, QuantSpec in) {
    if (g->st) fail_other("internal: gpu_measure_set on a streamed measurer");
    gpu_recipe_set(g->e, idx, w, in);
}

// ---- streamed ----

static size_t align256(size_t b) { return (b + GPU_SLOT_ALIGN - 1) & ~(size_t)(GPU_SLOT_ALIGN - 1); }

// Layer l begins with its block at dev: its recipe linears' weights point into it.
static void recipe_bind(void* ctx, int l, void* dev) {
    Recipe* r = (Recipe*)ctx;
    for (int i = r->m->lin0[l]; i < r->m->lin0[l + 1]; i++)
        if (r->off[i] >= 0) r->e->rw[i] = (float*)((char*)dev + r->off[i]);
}

// The recipe on the streamed engine: a resident layer's linears uploaded once (gpu_recipe_set), a streamed
// one's into its layer's pinned block, bound to its slot as the layer begins.
static void recipe_stream(GpuMeasure* g, float* const* w, const QuantSpec* in) {
    const Model* m = g->e->m;
    int L = m->c.num_layers;
    Recipe* r = (Recipe*)xcalloc(1, sizeof(Recipe));
    r->e = g->e, r->m = m;
    r->off = (long*)xmalloc(sizeof(long) * m->n_linears);
    r->host = (void**)xcalloc(L, sizeof(void*));
    r->bytes = (size_t*)xcalloc(L, sizeof(size_t));
    QuantSpec none;
    memset(&none, 0, sizeof(none));
    gpu_recipe_set(g->e, 0, NULL, none); // the recipe's arrays and emulation buffers
    int experts = 0;
    for (int i = 0; i < m->n_linears; i++) experts |= w[i] && m->linears[i].expert >= 0;
    if (experts && !g->e->rxs) { // a sparse layer's gathered rows (gpu_recipe_set's, for streamed experts)
        const Config* c = &m->c;
        long D = c->hidden_size, I = c->moe_intermediate;
        g->e->rxs = (float*)gpu_alloc(g->e, 4L * g->e->B * g->e->T * c->top_k * (D > I ? D : I));
    }
    for (int l = 0; l < L; l++) {
        size_t b = 0;
        for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++) {
            r->off[i] = -1;
            if (!w[i]) continue;
            if (g->plan->sp.res[l]) {
                gpu_recipe_set(g->e, i, w[i], in[i]);
                continue;
            }
            r->off[i] = (long)b;
            b = align256(b + sizeof(float) * (size_t)m->linears[i].out * m->linears[i].in);
        }
        if (!b) continue;
        r->bytes[l] = b;
        r->host[l] = gpu_stream_host_alloc(g->st, b);
        for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++) {
            if (r->off[i] < 0) continue;
            const Linear* li = &m->linears[i];
            memcpy((char*)r->host[l] + r->off[i], w[i], sizeof(float) * (size_t)li->out * li->in);
            g->e->rin[i] = in[i];
            g->e->ron[i] = 1;
        }
    }
    g->rc = r;
    for (int l = 0; l < L; l++)
        if (r->host[l]) { // some streamed layer carries recipe weights
            gpu_stream_extra(g->st, r->host, r->bytes, recipe_bind, r);
            break;
        }
}

extern "C" GpuMeasure* gpu_measure_stream_init(const Model* m, const TokenIds* held, const MeasurePlan* p,
                                               float* const* w, const QuantSpec* in) {
    int L = m->c.num_layers, T = held->t;
    GpuMeasure* g = (GpuMeasure*)xcalloc(1, sizeof(GpuMeasure));
    g->held = held;
    g->B = p->B;
    g->V = m->c.vocab_size;
    g->plan = p;
    double* lb = (double*)xmalloc(sizeof(double) * L);
    for (int l = 0; l < L; l++) lb[l] = stream_layer_bytes(m, l);
    g->e = gpu_stream_engine(m, T, g->B, GEMM_BF16X2, p->sp.res, lb, &g->st);
    free(lb);
    recipe_stream(g, w, in);
    size_t sb = sizeof(float) * (size_t)g->B * T * m->c.hidden_size;
    g->hr = (float**)xcalloc(p->sp.k, sizeof(float*));
    g->hq = (float**)xcalloc(p->sp.k, sizeof(float*));
    for (int k = 0; k < p->sp.k; k++) {
        g->hr[k] = (float*)gpu_alloc(g->e, sb);
        g->hq[k] = (float*)gpu_alloc(g->e, sb);
    }
    g->ref = (float*)gpu_alloc(g->e, sizeof(float) * (size_t)g->B * T * g->V);
    measure_buffers(g);
    return g;
}

// Layer l for engine batch k (nb windows): the reference state with the recipe off, then the quantized one.
static void stream_layer(GpuMeasure* g, int l, int k, int nb) {
    GpuEngine* e = g->e;
    unsigned char* on = e->ron;
    e->l0 = l, e->l1 = l + 1;
    e->ron = NULL; // every linear on its bf16 weight
    e->h = g->hr[k];
    gpu_forward_layers(e, l, nb, 0);
    e->ron = on;
    e->h = g->hq[k];
    gpu_forward_layers(e, l, nb, 0);
}

// Windows in engine batch k of a streamed batch of nw windows in engine batches of B.
static int batch_windows(int nw, int k, int B) { return nw - k * B < B ? nw - k * B : B; }

// The windows in streamed batches of k engine batches, layer-major; then each engine batch's heads in window
// order: the reference's logits and NLL, the quantized logits, their KL rows and NLL, as measure_passes adds
// them (acc[2]: the reference's NLL).
static void stream_passes(GpuMeasure* g) {
    GpuEngine* e = g->e;
    const TokenIds* h = g->held;
    int L = e->m->c.num_layers, T = h->t, B = g->B, K = g->plan->sp.k;
    size_t D = e->m->c.hidden_size;
    float* own = e->h;
    cudaCheck(cudaMemset(g->acc, 0, 3 * sizeof(double)));
    cudaCheck(cudaMemset(g->wkl, 0, sizeof(double) * h->n));
    for (int i0 = 0; i0 < h->n; i0 += K * B) {
        int nw = h->n - i0 < K * B ? h->n - i0 : K * B, kb = (nw + B - 1) / B;
        gpu_stream_break(g->st);
        for (int k = 0; k < kb; k++) {
            int nb = batch_windows(nw, k, B);
            const int* ids = h->ids + (long)(i0 + k * B) * T;
            e->l0 = 1; // the mode and the ids; the embedding comes from the host table
            gpu_pass_begin(e, 0, ids, nb);
            e->l0 = 0;
            gpu_stream_embed(g->st, ids, nb, g->hr[k]);
            cudaCheck(
                cudaMemcpyAsync(g->hq[k], g->hr[k], sizeof(float) * nb * T * D, cudaMemcpyDeviceToDevice));
        }
        int more = i0 + nw < h->n;
        for (int l = 0; l < L; l++) {
            gpu_stream_begin(g->st, l);
            for (int k = 0; k < kb; k++) stream_layer(g, l, k, batch_windows(nw, k, B));
            gpu_stream_end(g->st, l, l + 1 < L ? l + 1 : more ? 0 : -1);
        }
        gpu_stream_break(g->st);
        e->l0 = 0, e->l1 = L;
        for (int k = 0; k < kb; k++) {
            int nb = batch_windows(nw, k, B), w = i0 + k * B;
            e->h = g->hr[k];
            gpu_head_logits(e, nb, g->ref);
            gpu_nll_windows(g->acc + 2, g->scratch, g->ref, g->ids + (long)w * T, nb, T, g->V);
            e->h = g->hq[k];
            float* q = gpu_head_logits(e, nb, NULL);
            gpu_kl_rows(g->acc, g->scratch, g->ref, q, nb * T, g->V);
            gpu_sum_windows(g->wkl + w, 1, g->scratch, nb, T);
            gpu_nll_windows(g->acc + 1, g->scratch, q, g->ids + (long)w * T, nb, T, g->V);
        }
        e->h = own;
    }
}

extern "C" void gpu_measure_run(GpuMeasure* g, double* kl, double* nll_ref, double* nll_q, double* wkl) {
    double h[3];
    if (g->st) {
        stream_passes(g);
        cudaCheck(cudaMemcpy(h, g->acc, sizeof(h), cudaMemcpyDeviceToHost));
        g->nll_ref = h[2] / g->held->n;
    } else {
        measure_passes(g, 0);
        cudaCheck(cudaMemcpy(h, g->acc, 2 * sizeof(double), cudaMemcpyDeviceToHost));
    }
    if (wkl) cudaCheck(cudaMemcpy(wkl, g->wkl, sizeof(double) * g->held->n, cudaMemcpyDeviceToHost));
    *kl = h[0];
    *nll_ref = g->nll_ref;
    *nll_q = h[1] / g->held->n;
}

extern "C" void gpu_measure_stats(GpuMeasure* g, double* h2d, double* unhidden_s, double* peak, double* alloc) {
    *h2d = *unhidden_s = 0;
    if (g->st) gpu_stream_stats(g->st, h2d, unhidden_s);
    *peak = (double)gpu_peak_bytes(g->e);
    *alloc = (double)gpu_alloc_bytes(g->e);
}

extern "C" void gpu_measure_free(GpuMeasure* g) {
    if (!g) return;
    if (g->st) gpu_stream_free(g->st);
    if (g->rc) {
        free(g->rc->off), free(g->rc->host), free(g->rc->bytes);
        free(g->rc);
    }
    free(g->hr), free(g->hq);
    gpu_engine_free(g->e);
    free(g);
}

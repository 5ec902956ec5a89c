// The kl and gradient scores on one CUDA engine (README, "Scoring"): mirrors scoring/score.c. kl
// keeps each layer's input from the reference pass and restarts each group's pass at its own layer
// (prefix reuse); gradient adds (dY . (Yq - Y))^2 of every linear from a hook on the backward,
// Yq from the exact int8 GEMM of the quantized weights (or the given ones: GPTQ's) and inputs, or for
// emulated formats from the fp32 GEMM of the fake-quantized ones (gpu_linear_fake).
#include <string.h>

#include "../kernels/cuda_common.cuh"
#include "../kernels/loss.h"
#include "score_gpu.h"

extern "C" {
#include "../engine/util.h"
#include "quantizer.h"
}

// The given weights (GPTQ's) of the engine's layers as int8 codes and row scales, uploaded once: a
// group's pass then quantizes nothing and moves nothing over PCIe.
static void scorer_give(GpuScorer* s) {
    const GpuScoreSpec* sp = s->sp;
    const QuantCache* qc = sp->qc;
    const Model* m = sp->m;
    if (qc->nf != sp->nf || qc->nl != m->n_linears) fail_other("internal: given weights for another run");
    int l0, l1;
    gpu_engine_layers(s->e, &l0, &l1);
    size_t most = 0, rows = 0;
    for (int i = m->lin0[l0]; i < m->lin0[l1]; i++) {
        const Linear* l = &m->linears[i];
        most = (size_t)l->out * l->in > most ? (size_t)l->out * l->in : most;
        rows = (size_t)l->out > rows ? (size_t)l->out : rows;
    }
    int8_t* codes = (int8_t*)xmalloc(most);
    float* scales = (float*)xmalloc(sizeof(float) * rows);
    gpu_given_init(s->e, sp->nf);
    for (int f = 0; f < sp->nf; f++)
        for (int i = m->lin0[l0]; i < m->lin0[l1]; i++) {
            const float* wq = qc->wq[(size_t)f * qc->nl + i];
            if (!wq) continue; // a disabled group's linear: never planned
            qcache_codes(codes, scales, wq, &m->linears[i], sp->fmts[f].w);
            gpu_given_set(s->e, f, i, codes, scales);
        }
    free(codes);
    free(scales);
}

extern "C" void gpu_scorer_init(GpuScorer* s, GpuEngine* e, const GpuScoreSpec* sp) {
    long n = (long)sp->nf * sp->gs->n, rows = (long)sp->B * sp->T;
    s->e = e;
    s->sp = sp;
    s->dscore = (double*)gpu_alloc(e, sizeof(double) * n);
    s->scratch = (double*)gpu_alloc(e, sizeof(double) * (rows > 1024 ? rows : 1024));
    s->ref = NULL;
    s->dwscore = NULL;
    s->wout = NULL;
    s->nb = 0;
    cudaCheck(cudaMemset(s->dscore, 0, sizeof(double) * n));
    if (sp->qc) scorer_give(s);
    if (sp->gradient) gpu_grad_keep_plan(e, sp->gpu_mem, sp->recomputed); // after every fixed allocation
}

extern "C" void gpu_scorer_windows(GpuScorer* s, double* out) {
    long n = (long)s->sp->nf * s->sp->gs->n;
    if (out && !s->dwscore) {
        s->dwscore = (double*)gpu_alloc(s->e, sizeof(double) * s->sp->B * n);
        cudaCheck(cudaMemset(s->dwscore, 0, sizeof(double) * s->sp->B * n));
    }
    s->wout = out;
}

// The gradient's per-window sums go to the window rows only (add_sq_diff, add_grad_score); its totals are their
// sums, in window order. kl adds both (gpu_kl_add), its totals unchanged by keeping windows.
extern "C" void gpu_scorer_end(GpuScorer* s, double* score) {
    int n = s->sp->nf * s->sp->gs->n;
    double* h = (double*)xmalloc(sizeof(double) * n);
    cudaCheck(cudaMemcpy(h, s->dscore, sizeof(double) * n, cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++) score[i] += h[i];
    free(h);
    cudaCheck(cudaMemset(s->dscore, 0, sizeof(double) * n)); // a stage may run backwards back to back
    if (!s->wout) return;
    size_t nw = (size_t)s->nb * n;
    double* w = (double*)xmalloc(sizeof(double) * (nw ? nw : 1));
    cudaCheck(cudaMemcpy(w, s->dwscore, sizeof(double) * nw, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < nw; i++) s->wout[i] += w[i];
    if (s->sp->gradient)
        for (int b = 0; b < s->nb; b++)
            for (int i = 0; i < n; i++) score[i] += w[(size_t)b * n + i];
    free(w);
    cudaCheck(cudaMemset(s->dwscore, 0, sizeof(double) * nw));
    s->wout = NULL; // each batch names its rows
}

extern "C" void gpu_kl_reference(GpuScorer* s, int nb) {
    const GpuScoreSpec* sp = s->sp;
    if (!s->ref) s->ref = (float*)gpu_alloc(s->e, sizeof(float) * sp->B * sp->T * sp->m->c.vocab_size);
    gpu_head_logits(s->e, nb, s->ref);
}

// A format's input quantizer as the engine takes it: bits 0 when the format has none (weight-only).
static QuantSpec in_spec(const Format* fm) {
    QuantSpec none;
    memset(&none, 0, sizeof(none));
    return fm->in_enable ? fm->in : none;
}

extern "C" void gpu_kl_group(GpuScorer* s, const Group* g, int f, int nb) {
    const Format* fm = &s->sp->fmts[f];
    if (g->kv) // a KV-cache group: its layer's cache stores K and V quantized (README §6)
        gpu_plan_kv(s->e, g->layer, fm->kvq);
    else
        gpu_plan_set(s->e, g->members, g->n_members, fm->w, in_spec(fm), f);
    gpu_restore_layer_input(s->e, g->layer, nb);
}

extern "C" void gpu_kl_add(GpuScorer* s, int nb, int slot) {
    gpu_plan_clear(s->e);
    float* q = gpu_head_logits(s->e, nb, NULL);
    gpu_kl_rows(s->dscore + slot, s->scratch, s->ref, q, nb * s->sp->T, s->sp->m->c.vocab_size);
    s->nb = nb;
    if (s->wout) // the per-row KL is still in scratch: each window's rows summed apart
        gpu_sum_windows(s->dwscore + slot, (long)s->sp->nf * s->sp->gs->n, s->scratch, nb, s->sp->T);
    gpu_mark_scores(s->e);
}

// Where a gradient score of slot goes: the batch's total, or with per-window scores each window apart (M rows
// of N values, the batch's windows in order).
static void add_sq_diff(GpuScorer* s, long slot, const float* dy, const float* yq, const float* y, int M,
                        int N) {
    if (!s->wout) {
        gpu_sq_diff_dot(s->dscore + slot, s->scratch, dy, yq, y, (long)M * N);
        return;
    }
    long r = M / s->nb, n = (long)s->sp->nf * s->sp->gs->n;
    if (r * s->nb != M) fail_other("internal: %d rows are not %d windows' rows", M, s->nb);
    for (int w = 0; w < s->nb; w++)
        gpu_sq_diff_dot(s->dwscore + w * n + slot, s->scratch, dy + w * r * N, yq + w * r * N, y + w * r * N,
                        r * N);
}

static void add_grad_score(GpuScorer* s, long slot, const float* dy, const int32_t* acc, const float* sx,
                           const float* sw, const float* y, int M, int N) {
    if (!s->wout) {
        gpu_grad_score(s->dscore + slot, s->scratch, dy, acc, sx, sw, y, M, N);
        return;
    }
    long r = M / s->nb, n = (long)s->sp->nf * s->sp->gs->n;
    if (r * s->nb != M) fail_other("internal: %d rows are not %d windows' rows", M, s->nb);
    for (int w = 0; w < s->nb; w++)
        gpu_grad_score(s->dwscore + w * n + slot, s->scratch, dy + w * r * N, acc + w * r * N, sx + w * r, sw,
                       y + w * r * N, (int)r, N);
}

// A sparse layer's experts block (README §6): (dY . (Yq - Y))^2 at the block output.
static void grad_hook_experts(GpuScorer* s, int l, const float* dy, const float* y, int M) {
    const GpuScoreSpec* sp = s->sp;
    int g = sp->gs->group_of[model_lin(sp->m, l, LIN_GATE, 0)];
    if (sp->gs->g[g].disabled) return;
    for (int f = 0; f < sp->nf; f++) {
        if (sp->fmts[f].kv) continue;
        const float* yq = gpu_moe_quantized(s->e, l, M, sp->fmts[f].w, sp->fmts[f].in, f);
        add_sq_diff(s, (long)f * sp->gs->n + g, dy, yq, y, M, sp->m->c.hidden_size);
    }
}

// A full-attention layer's KV cache (README §6): dy = dL/dK (which 0) or dL/dV (1) as attention reads them, and
// the quantization error of the tensor the cache stores; K's and V's terms add into the layer's group score.
static void grad_hook_kv(GpuScorer* s, int l, int which, const float* dy, int M) {
    const GpuScoreSpec* sp = s->sp;
    int g = -1;
    for (int i = 0; i < sp->gs->n && g < 0; i++)
        if (sp->gs->g[i].kv && sp->gs->g[i].layer == l) g = i;
    if (g < 0 || sp->gs->g[g].disabled) return;
    int width = sp->m->c.num_kv_heads * sp->m->c.head_dim;
    for (int f = 0; f < sp->nf; f++) {
        if (!sp->fmts[f].kv) continue;
        const float* y;
        const float* yq = gpu_kv_quantized(s->e, which, M, sp->fmts[f].kvq, &y);
        add_sq_diff(s, (long)f * sp->gs->n + g, dy, yq, y, M, width);
    }
}

// Adds (dY . (Yq - Y))^2 of linear idx for every format.
static void grad_hook(GpuEngine* e, int idx, const float* dy, const float* x, const float* y, int M,
                      void* ctx) {
    GpuScorer* s = (GpuScorer*)ctx;
    const GpuScoreSpec* sp = s->sp;
    int L = sp->m->c.num_layers;
    if (idx < -L) {
        grad_hook_kv(s, gpu_kv_hook_layer(L, idx), gpu_kv_hook_which(L, idx), dy, M);
        return;
    }
    if (idx < 0) {
        grad_hook_experts(s, -1 - idx, dy, y, M);
        return;
    }
    int g = sp->gs->group_of[idx];
    if (sp->gs->g[g].disabled) return;
    const Linear* l = &sp->m->linears[idx];
    for (int f = 0; f < sp->nf; f++) {
        if (sp->fmts[f].kv) continue; // KV-cache formats score KV-cache groups only (README §5)
        QuantSpec in = in_spec(&sp->fmts[f]);
        if (quant_gpu_emulated(sp->fmts[f].w, in)) {
            const float* yq = gpu_linear_fake(e, idx, x, M, sp->fmts[f].w, in);
            add_sq_diff(s, (long)f * sp->gs->n + g, dy, yq, y, M, l->out);
            continue;
        }
        const float *sx, *sw;
        const int32_t* acc = gpu_linear_quantized(e, idx, x, M, sp->fmts[f].w, in, f, &sx, &sw);
        add_grad_score(s, (long)f * sp->gs->n + g, dy, acc, sx, sw, y, M, l->out);
    }
}

extern "C" void gpu_grad_backward(GpuScorer* s, int nb) {
    s->nb = nb;
    gpu_backward_layers(s->e, nb, grad_hook, s);
}

extern "C" void gpu_score_kl(GpuScorer* s, const int* ids, int nb, double* score) {
    const Groups* gs = s->sp->gs;
    gpu_pass_begin(s->e, 0, ids, nb);
    gpu_forward_layers(s->e, 0, nb, 1);
    gpu_kl_reference(s, nb);
    for (int f = 0; f < s->sp->nf; f++)
        for (int gi = 0; gi < gs->n; gi++) {
            const Group* g = &gs->g[gi];
            if (g->disabled || !format_fits(&s->sp->fmts[f], g)) continue;
            gpu_kl_group(s, g, f, nb);
            gpu_forward_layers(s->e, g->layer, nb, 0);
            gpu_kl_add(s, nb, f * gs->n + gi);
        }
    gpu_scorer_end(s, score);
}

extern "C" double gpu_score_gradient(GpuScorer* s, const int* ids, int nb, double* score) {
    gpu_pass_begin(s->e, 1, ids, nb);
    gpu_forward_layers(s->e, 0, nb, 1);
    gpu_loss_backward(s->e, nb);
    gpu_grad_backward(s, nb);
    gpu_scorer_end(s, score);
    return gpu_loss(s->e, nb);
}

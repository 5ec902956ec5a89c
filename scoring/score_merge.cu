// kl with the passes' forwards merged across groups (scoring/score_merge.h), layer-major as the streamed
// scorer runs it (score_stream.cu): the engine's range is narrowed to one layer (l0 = l, l1 = l + 1) and its
// residual stream pointed at the state being advanced. At layer l the reference advances, keeping its input
// (the engine's one layer of saved inputs), the passes born at l restart from it with their group quantized
// (score_gpu.cu's gpu_kl_group, B windows each), and the older passes, whose layer-l weights are unquantized,
// advance together: their states lie one after another in birth order, so Bm windows of them are one engine
// batch whatever passes they belong to (every part of a layer treats windows apart: attention, routing, the
// Gated DeltaNet's recurrence, each window's KV-cache scale). After the last layer each pass's head and KL
// to the reference logits, as gpu_kl_add adds them.
#include <string.h>

#include "../engine/gpu_engine.cuh"
#include "score_merge.h"

extern "C" {
#include "../engine/util.h"
#include "quantizer.h"
#include "stream_plan.h"
}

#define MERGE_BM_MAX 16 // merged windows by default: 64 gave the same time at twice the memory (README)
#define MERGE_MARGIN ((double)(1024L << 20)) // free memory left beside the states: cuBLAS, lazy buffers

static double free_bytes(void) {
    size_t fr, tot;
    cudaCheck(cudaMemGetInfo(&fr, &tot));
    return (double)fr;
}

// What the engine holds whatever its batch: every layer's weights, the tables, the plan's pool (a layer's
// linears as int8), GPTQ's given codes per format, and the CUDA context and workspaces.
static double weight_bytes(const GpuScoreSpec* sp) {
    const Model* m = sp->m;
    const Config* c = &m->c;
    double b = 0, most = 0, table = 2.0 * c->vocab_size * c->hidden_size;
    for (int l = 0; l < c->num_layers; l++) {
        double lb = stream_layer_bytes(m, l);
        b += lb;
        most = lb > most ? lb : most;
    }
    if (sp->qc) b *= 1 + sp->nf * STREAM_GIVEN;
    int tied = !st_find(&m->ck, "lm_head.weight");
    return b + table * (tied && sp->split != GEMM_FP16 ? 1 : 2) + most / 2 + MERGE_MARGIN;
}

static QuantSpec in_spec(const Format* fm) {
    QuantSpec none;
    memset(&none, 0, sizeof(none));
    return fm->in_enable ? fm->in : none;
}

static int env_int(const char* name) {
    const char* v = getenv(name);
    return v ? atoi(v) : 0;
}

extern "C" void gpu_merge_scorer_init(GpuMergeScorer* ms, const GpuScoreSpec* sp, int bm, int per_wave) {
    memset(ms, 0, sizeof(*ms));
    double t0 = time_now();
    const Model* m = sp->m;
    const Config* c = &m->c;
    const Groups* gs = sp->gs;
    int L = c->num_layers, B = sp->B, T = sp->T, emu = 0;
    if (sp->gradient) fail_other("internal: the merged scorer scores kl only");
    ms->sp = sp;
    ms->order = (int*)xmalloc(sizeof(int) * 2 * (sp->nf * gs->n + 1));
    ms->birth = (int*)xmalloc(sizeof(int) * (sp->nf * gs->n + 1));
    ms->n_pass = stream_kl_passes(gs, sp->fmts, sp->nf, L, ms->order, ms->birth);
    for (int f = 0; f < sp->nf; f++)
        if (!sp->fmts[f].kv) emu |= quant_gpu_emulated(sp->fmts[f].w, in_spec(&sp->fmts[f]));
    double D = c->hidden_size, V = c->vocab_size;
    if (bm <= 0) bm = env_int("AUTOQ_KL_MERGE_BATCH");
    if (per_wave <= 0) per_wave = env_int("AUTOQ_KL_MERGE_WAVE");
    int most = ms->n_pass * B > B ? ms->n_pass * B : B; // more than every pass's windows: never one batch
    MergeSpec s = {free_bytes() - weight_bytes(sp),
                   merge_window_bytes(c, T, sp->split == GEMM_BF16X2, emu),
                   4.0 * B * T * D,
                   8.0 * B * T * V,
                   B,
                   ms->n_pass,
                   bm > 0                ? bm
                   : MERGE_BM_MAX < most ? MERGE_BM_MAX
                                         : most};
    if (!merge_plan(&s, &ms->plan))
        warn_msg("score: kl merged: the estimates leave room for one pass's state at most (%.2f GiB free "
                 "beside the weights)",
                 s.avail / 1073741824.0);
    if (bm > 0) ms->plan.bm = bm < B ? B : bm;
    ms->e = engine_init_merge(m, T, ms->plan.bm, sp->split);
    GpuEngine* e = ms->e;
    gpu_scorer_init(&ms->s, e, sp);
    ms->s.ref = (float*)gpu_alloc(e, 4L * B * T * c->vocab_size); // before the states take what is left
    ms->logits = (float*)gpu_alloc(e, 4L * B * T * c->vocab_size);
    if (emu) emu_alloc(e);
    // the waves from what the built engine left free: the estimates only chose Bm
    int pw = merge_wave_size(free_bytes() - MERGE_MARGIN, s.pass_bytes, ms->n_pass, NULL);
    if (per_wave > 0) pw = per_wave < ms->n_pass ? per_wave : ms->n_pass;
    if (pw < 1) pw = 1;
    ms->wave = (int*)xmalloc(sizeof(int) * (ms->n_pass + 2));
    ms->plan.n_waves = merge_waves(ms->n_pass, pw, ms->wave);
    ms->plan.per_wave = pw;
    ms->states = (float*)gpu_alloc(e, sizeof(float) * pw * B * T * c->hidden_size);
    ms->seconds = time_now() - t0;
    info_msg("score: kl merged across groups: unquantized layers in batches of up to %d windows, %d passes in "
             "%d wave(s) of up to %d (states %.2f GiB)",
             ms->plan.bm, ms->n_pass, ms->plan.n_waves, pw, s.pass_bytes * pw / 1073741824.0);
}

extern "C" void gpu_merge_scorer_free(GpuMergeScorer* ms) {
    free(ms->order);
    free(ms->birth);
    free(ms->wave);
}

// Pass p's head and KL to the reference logits into slot, as gpu_kl_add (its logits in the scorer's buffer of
// B windows: the engine's own would be Bm windows').
static void kl_add(GpuMergeScorer* ms, int nb, int slot) {
    GpuScorer* s = &ms->s;
    const GpuScoreSpec* sp = ms->sp;
    gpu_plan_clear(ms->e);
    float* q = gpu_head_logits(ms->e, nb, ms->logits);
    gpu_kl_rows(s->dscore + slot, s->scratch, s->ref, q, nb * sp->T, sp->m->c.vocab_size);
    s->nb = nb;
    if (s->wout) // each window's rows summed apart
        gpu_sum_windows(s->dwscore + slot, (long)sp->nf * sp->gs->n, s->scratch, nb, sp->T);
    gpu_mark_scores(ms->e);
}

// Layer l of the wave's passes p0..p1-1 whose states start at st (nb windows each): the older ones merged,
// Bm windows at a time, then each one born at l from the reference's input (the engine's saved one).
static void wave_layer(GpuMergeScorer* ms, int l, int p0, int p1, int nb) {
    GpuEngine* e = ms->e;
    const GpuScoreSpec* sp = ms->sp;
    long row = (long)sp->T * sp->m->c.hidden_size;
    int born, older = merge_older(ms->birth, p0, p1, l, &born), bm = ms->plan.bm;
    gpu_plan_clear(e);
    for (long w = 0, n = (long)older * nb; w < n; w += bm) {
        e->h = ms->states + w * row;
        gpu_forward_layers(e, l, (int)(n - w < bm ? n - w : bm), 0);
    }
    for (int p = p0 + older; p < p0 + older + born; p++) {
        e->h = ms->states + (long)(p - p0) * nb * row;
        gpu_kl_group(&ms->s, &sp->gs->g[ms->order[2 * p + 1]], ms->order[2 * p], nb);
        gpu_forward_layers(e, l, nb, 0);
    }
}

extern "C" void gpu_merge_score_kl(GpuMergeScorer* ms, const int* ids, int nb, double* score, double* wrows) {
    GpuEngine* e = ms->e;
    const GpuScoreSpec* sp = ms->sp;
    int L = sp->m->c.num_layers;
    long row = (long)sp->T * sp->m->c.hidden_size;
    float *ref = e->h, *ref_in = e->hsave; // the engine's own buffers (Bm windows) hold the reference's
    gpu_scorer_windows(&ms->s, wrows);
    for (int w = 0; w < ms->plan.n_waves || w == 0; w++) { // no pass: the reference still counts experts
        int p0 = w < ms->plan.n_waves ? ms->wave[w] : 0, p1 = w < ms->plan.n_waves ? ms->wave[w + 1] : 0;
        // the first wave runs the reference to its logits; the later ones again, unsaved (its experts'
        // tokens counted once), up to their last birth
        int last_ref = w ? ms->birth[p1 - 1] : L - 1, first = p1 > p0 ? ms->birth[p0] : L;
        e->h = ref, e->hsave = ref_in;
        e->l0 = 0, e->l1 = L;
        gpu_pass_begin(e, 0, ids, nb); // the mode, and the embedding into the reference's state
        for (int l = 0; l < L; l++) {
            e->l0 = l, e->l1 = l + 1;
            if (l <= last_ref) {
                gpu_plan_clear(e);
                e->h = ref;
                if (!w) {
                    gpu_forward_layers(e, l, nb, 1); // its input into ref_in
                } else {
                    cudaCheck(cudaMemcpyAsync(ref_in, ref, sizeof(float) * nb * row, cudaMemcpyDeviceToDevice));
                    gpu_forward_layers(e, l, nb, 0);
                }
                if (!w && l == L - 1) gpu_kl_reference(&ms->s, nb);
            }
            if (l >= first) wave_layer(ms, l, p0, p1, nb);
        }
        e->l0 = 0, e->l1 = L;
        for (int p = p0; p < p1; p++) {
            e->h = ms->states + (long)(p - p0) * nb * row;
            kl_add(ms, nb, ms->order[2 * p] * sp->gs->n + ms->order[2 * p + 1]);
        }
    }
    e->h = ref, e->hsave = ref_in, e->l0 = 0, e->l1 = L;
    gpu_scorer_end(&ms->s, score);
}

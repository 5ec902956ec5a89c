// Scoring with streamed layers (scoring/score_stream.h). The engine runs one layer at a time on one engine
// batch (B windows): its range is narrowed to that layer (l0 = l, l1 = l + 1) and its residual stream,
// saved input and hidden gradient point at the batch's own states, so score_gpu.cu's steps (a group's
// restart from the saved input, the heads and KLs, the hooked backward) run unchanged.
#include <stdlib.h>
#include <string.h>

#include "../engine/gpu_engine.cuh"
#include "score_stream.h"

extern "C" {
#include "../engine/util.h"
#include "quantizer.h"
}

// The engine's own buffers, put back after every streamed batch.
typedef struct {
    float *h, *hsave, *dh;
} Own;

static Own own_save(GpuEngine* e) {
    Own o = {e->h, e->hsave, e->dh};
    return o;
}

static void own_restore(GpuEngine* e, Own o) {
    e->h = o.h, e->hsave = o.hsave, e->dh = o.dh;
    e->l0 = 0, e->l1 = e->m->c.num_layers;
}

static size_t state_bytes(const GpuStreamScorer* ss) {
    return sizeof(float) * ss->sp->B * ss->sp->T * ss->sp->m->c.hidden_size;
}

static int spilled(const GpuStreamScorer* ss, int i) { return i >= ss->n_gpu; }

typedef struct {
    cudaStream_t ld, wb;                            // loads, write-backs (non-blocking: they overlap compute)
    cudaEvent_t loaded[2], computed[2], written[2]; // per ring slot: written = the slot may be refilled
    cudaEvent_t* out;                               // (n_state) a spilled state's last write-back, done
    int n_out;
} Ring;

// AUTOQ_STREAM_SYNC=1: the whole device waited for after every state's use and release, so that a GPU run
// tells a race between the streams (the scores then right) from a logic error (still wrong).
static void state_sync(const GpuStreamScorer* ss) {
    if (ss->sync) cudaCheck(cudaDeviceSynchronize());
}

// State i on the GPU for the work queued next: its own buffer, or a ring slot, its contents loaded from
// host memory (load) once the slot's last state is written back. At most two states are in use at once.
static float* state_use(GpuStreamScorer* ss, int i, int nb, int load) {
    if (!spilled(ss, i)) {
        state_sync(ss);
        return ss->state[i];
    }
    Ring* g = (Ring*)ss->ring_ev;
    int r = stream_ring_take(&ss->slots, i);
    if (r < 0) fail_other("internal: state %d: both ring slots in use", i);
    if (load) {
        size_t b = state_bytes(ss) / ss->sp->B * nb;
        cudaCheck(cudaStreamWaitEvent(g->ld, g->written[r], 0));
        cudaCheck(cudaStreamWaitEvent(g->ld, g->out[i], 0)); // the state's host copy is complete
        cudaCheck(cudaMemcpyAsync(ss->ring[r], ss->state[i], b, cudaMemcpyHostToDevice, g->ld));
        cudaCheck(cudaEventRecord(g->loaded[r], g->ld));
        cudaCheck(cudaStreamWaitEvent(0, g->loaded[r], 0));
        gpu_stream_count_spill(ss->st, (double)b, 0);
        ss->spill_bytes += (double)b;
    } else {
        cudaCheck(cudaStreamWaitEvent(0, g->written[r], 0)); // the slot's last state is out
    }
    state_sync(ss);
    return ss->ring[r];
}

// The work on state i is queued: a spilled one goes back to host memory when `dirty` (it changed). Its slot
// is found by the state it holds: the same state used twice in a row takes the other slot the second time
// (kl with one spilled state alive at a layer), and a slot index remembered from the first use would write
// back the stale slot and leave this one's write-back unordered with the next load into it.
static void state_done(GpuStreamScorer* ss, int i, int nb, int dirty) {
    if (!spilled(ss, i)) {
        state_sync(ss);
        return;
    }
    Ring* g = (Ring*)ss->ring_ev;
    int r = stream_ring_give(&ss->slots, i);
    if (r < 0) fail_other("internal: state %d is in no ring slot", i);
    cudaCheck(cudaEventRecord(g->computed[r], 0));
    if (!dirty) {
        cudaCheck(cudaEventRecord(g->written[r], 0));
        state_sync(ss);
        return;
    }
    size_t b = state_bytes(ss) / ss->sp->B * nb;
    cudaCheck(cudaStreamWaitEvent(g->wb, g->computed[r], 0));
    cudaCheck(cudaMemcpyAsync(ss->state[i], ss->ring[r], b, cudaMemcpyDeviceToHost, g->wb));
    cudaCheck(cudaEventRecord(g->written[r], g->wb));
    cudaCheck(cudaEventRecord(g->out[i], g->wb));
    state_sync(ss);
}

extern "C" size_t gpu_stream_free_memory(void) {
    size_t fr, tot;
    cudaCheck(cudaMemGetInfo(&fr, &tot));
    return fr;
}

// GPTQ's given weights of a streamed run: per streamed layer one pinned host block of every set's int8 codes
// and row scales, where each linear's sit (off, soff: bytes into the block, -1 none), a sparse layer's
// experts in gpu_engine.cu's given_alloc layout (one fused block per set: every expert's gate then up rows,
// then every expert's down rows), which moe_plan_set reads as one.
typedef struct {
    GpuEngine* e;
    const Model* m;
    int nf;
    long *off, *soff; // (nf * n_linears)
    void** host;      // (L)
    size_t* bytes;    // (L)
} Given;

static size_t align16(size_t b) { return (b + 15) & ~(size_t)15; }

static size_t given_layout(Given* g, const QuantCache* qc, int l) {
    const Model* m = g->m;
    long nl = m->n_linears, E = m->c.num_experts, I = m->c.moe_intermediate, D = m->c.hidden_size;
    size_t b = 0;
    for (int f = 0; f < g->nf; f++)
        for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++) {
            long k = f * nl + i;
            const Linear* li = &m->linears[i];
            if (!qc->wq[k] || g->off[k] >= 0) continue;
            if (li->expert < 0) {
                g->off[k] = (long)b;
                b = align16(b + (size_t)li->out * li->in);
                g->soff[k] = (long)b;
                b = align16(b + sizeof(float) * li->out);
                continue;
            }
            size_t q = b, s = align16(b + E * 3 * I * D);
            b = align16(s + sizeof(float) * E * (2 * I + D));
            for (int x = 0; x < E; x++) {
                long gk = f * nl + model_lin(m, l, LIN_GATE, x), uk = f * nl + model_lin(m, l, LIN_UP, x);
                long dk = f * nl + model_lin(m, l, LIN_DOWN, x);
                g->off[gk] = (long)(q + x * 2 * I * D), g->soff[gk] = (long)(s + sizeof(float) * x * 2 * I);
                g->off[uk] = g->off[gk] + I * D, g->soff[uk] = g->soff[gk] + (long)sizeof(float) * I;
                g->off[dk] = (long)(q + E * 2 * I * D + x * D * I);
                g->soff[dk] = (long)(s + sizeof(float) * (E * 2 * I + x * D));
            }
        }
    return b;
}

// Layer l begins with its block at dev: the engine's given pointers of its linears into it.
static void given_bind(void* ctx, int l, void* dev) {
    Given* g = (Given*)ctx;
    const Model* m = g->m;
    for (int f = 0; f < g->nf; f++)
        for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++) {
            long k = (long)f * m->n_linears + i;
            if (g->off[k] < 0) continue;
            g->e->gq[k] = (int8_t*)dev + g->off[k];
            g->e->gsw[k] = (float*)((char*)dev + g->soff[k]);
        }
}

static void stream_give(GpuStreamScorer* ss) {
    const GpuScoreSpec* sp = ss->sp;
    const QuantCache* qc = sp->qc;
    const Model* m = sp->m;
    int L = m->c.num_layers;
    long nl = m->n_linears;
    if (qc->nf != sp->nf || qc->nl != nl) fail_other("internal: given weights for another run");
    Given* g = (Given*)xcalloc(1, sizeof(Given));
    g->e = ss->e, g->m = m, g->nf = sp->nf;
    g->off = (long*)xmalloc(sizeof(long) * sp->nf * nl);
    g->soff = (long*)xmalloc(sizeof(long) * sp->nf * nl);
    for (long k = 0; k < sp->nf * nl; k++) g->off[k] = g->soff[k] = -1;
    g->host = (void**)xcalloc(L, sizeof(void*));
    g->bytes = (size_t*)xcalloc(L, sizeof(size_t));
    size_t most = 0, rows = 0;
    for (long i = 0; i < nl; i++) {
        const Linear* l = &m->linears[i];
        most = (size_t)l->out * l->in > most ? (size_t)l->out * l->in : most;
        rows = (size_t)l->out > rows ? (size_t)l->out : rows;
    }
    int8_t* codes = (int8_t*)xmalloc(most);
    float* scales = (float*)xmalloc(sizeof(float) * rows);
    gpu_given_init(ss->e, sp->nf);
    for (int l = 0; l < L; l++) {
        if (!ss->plan->res[l]) {
            g->bytes[l] = given_layout(g, qc, l);
            if (!g->bytes[l]) continue; // nothing given in this layer
            g->host[l] = gpu_stream_host_alloc(ss->st, g->bytes[l]);
        }
        for (int f = 0; f < sp->nf; f++)
            for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++) {
                long k = (long)f * nl + i;
                const float* wq = qc->wq[k];
                if (!wq) continue; // a disabled group's linear: never planned
                if (ss->plan->res[l]) {
                    qcache_codes(codes, scales, wq, &m->linears[i], sp->fmts[f].w);
                    gpu_given_set(ss->e, f, i, codes, scales);
                    continue;
                }
                qcache_codes((int8_t*)g->host[l] + g->off[k], (float*)((char*)g->host[l] + g->soff[k]), wq,
                             &m->linears[i], sp->fmts[f].w);
            }
    }
    free(codes);
    free(scales);
    gpu_stream_extra(ss->st, g->host, g->bytes, given_bind, g);
    ss->given = g;
}

extern "C" void gpu_stream_scorer_init(GpuStreamScorer* ss, const GpuScoreSpec* sp, const StreamPlan* plan) {
    memset(ss, 0, sizeof(*ss));
    ss->sp = sp;
    ss->plan = plan;
    stream_ring_init(&ss->slots);
    const char* sync = getenv("AUTOQ_STREAM_SYNC");
    ss->sync = sync && !strcmp(sync, "1");
    int L = sp->m->c.num_layers, K = plan->k;
    double* lb = (double*)xmalloc(sizeof(double) * L);
    for (int l = 0; l < L; l++) lb[l] = stream_layer_bytes(sp->m, l);
    ss->e = gpu_stream_engine(sp->m, sp->T, sp->B, sp->split, plan->res, lb, &ss->st);
    free(lb);
    ss->spec = *sp;
    ss->spec.qc = NULL;
    gpu_scorer_init(&ss->s, ss->e, &ss->spec);
    if (sp->qc) stream_give(ss);
    const Groups* gs = sp->gs;
    if (!sp->gradient) { // the passes in birth order (stable: the group-major order within a layer)
        ss->order = (int*)xmalloc(sizeof(int) * 2 * (sp->nf * gs->n + 1));
        ss->n_pass = stream_kl_passes(gs, sp->fmts, sp->nf, L, ss->order, NULL);
        ss->n_state = K * (1 + ss->n_pass);
    } else {
        ss->n_state = K * (L + 2);
    }
    // with spills, two of the GPU's states are the ring's slots
    ss->n_gpu = plan->states_gpu < ss->n_state ? plan->states_gpu - 2 : ss->n_state;
    if (ss->n_gpu < 1) ss->n_gpu = 1;
    size_t b = state_bytes(ss);
    ss->state = (float**)xcalloc(ss->n_state, sizeof(float*));
    for (int i = 0; i < ss->n_state; i++)
        ss->state[i] = spilled(ss, i) ? (float*)gpu_stream_host_alloc(ss->st, b) : (float*)gpu_alloc(ss->e, b);
    if (ss->n_gpu < ss->n_state) {
        Ring* g = (Ring*)xcalloc(1, sizeof(Ring));
        cudaCheck(cudaStreamCreateWithFlags(&g->ld, cudaStreamNonBlocking));
        cudaCheck(cudaStreamCreateWithFlags(&g->wb, cudaStreamNonBlocking));
        for (int r = 0; r < 2; r++) {
            ss->ring[r] = (float*)gpu_alloc(ss->e, b);
            cudaCheck(cudaEventCreateWithFlags(&g->loaded[r], cudaEventDisableTiming));
            cudaCheck(cudaEventCreateWithFlags(&g->computed[r], cudaEventDisableTiming));
            cudaCheck(cudaEventCreateWithFlags(&g->written[r], cudaEventDisableTiming));
        }
        g->n_out = ss->n_state;
        g->out = (cudaEvent_t*)xcalloc(ss->n_state, sizeof(cudaEvent_t));
        for (int i = ss->n_gpu; i < ss->n_state; i++)
            cudaCheck(cudaEventCreateWithFlags(&g->out[i], cudaEventDisableTiming));
        ss->ring_ev = g;
    }
}

extern "C" void gpu_stream_scorer_free(GpuStreamScorer* ss) {
    cudaCheck(cudaDeviceSynchronize());
    if (ss->ring_ev) {
        Ring* g = (Ring*)ss->ring_ev;
        for (int r = 0; r < 2; r++) {
            cudaEventDestroy(g->loaded[r]);
            cudaEventDestroy(g->computed[r]);
            cudaEventDestroy(g->written[r]);
        }
        for (int i = ss->n_gpu; i < g->n_out; i++) cudaEventDestroy(g->out[i]);
        free(g->out);
        cudaStreamDestroy(g->ld);
        cudaStreamDestroy(g->wb);
        free(g);
    }
    gpu_stream_free(ss->st);
    if (ss->given) {
        Given* g = (Given*)ss->given;
        free(g->off), free(g->soff), free(g->host), free(g->bytes);
        free(g);
    }
    free(ss->dw);
    free(ss->state);
    free(ss->order);
}

// kl states: the references first (one per engine batch), then the passes in birth order, batch by batch.
static int kl_ref(int k) { return k; }
static int kl_pass(const GpuStreamScorer* ss, int p, int k) { return ss->plan->k + p * ss->plan->k + k; }

// One layer l for engine batch k (nb windows at ids): the reference keeps its input (the engine's one-layer
// hsave), the passes born at l start from it with their group quantized, the older ones advance.
static void kl_layer(GpuStreamScorer* ss, int l, int k, int nb) {
    GpuEngine* e = ss->e;
    const Groups* gs = ss->sp->gs;
    e->l0 = l, e->l1 = l + 1;
    gpu_plan_clear(e); // the last pass's group may be in this layer
    e->h = state_use(ss, kl_ref(k), nb, 1);
    gpu_forward_layers(e, l, nb, 1);
    state_done(ss, kl_ref(k), nb, 1);
    for (int p = 0; p < ss->n_pass; p++) {
        const Group* g = &gs->g[ss->order[2 * p + 1]];
        if (g->layer > l) break; // birth order
        int i = kl_pass(ss, p, k), born = g->layer == l;
        e->h = state_use(ss, i, nb, !born);
        if (born)
            gpu_kl_group(&ss->s, g, ss->order[2 * p], nb); // plan set, h = the reference's input here
        else
            gpu_plan_clear(e); // the group's linears are in an earlier layer
        gpu_forward_layers(e, l, nb, 0);
        state_done(ss, i, nb, 1);
    }
}

static int batch_windows(const GpuStreamScorer* ss, int nw, int k) {
    int B = ss->sp->B, r = nw - k * B;
    return r < B ? r : B;
}

extern "C" void gpu_stream_score_kl(GpuStreamScorer* ss, const int* ids, int nw, double* score, double* wrows,
                                    int more) {
    GpuEngine* e = ss->e;
    const GpuScoreSpec* sp = ss->sp;
    int L = sp->m->c.num_layers, B = sp->B, T = sp->T, K = (nw + B - 1) / B;
    Own own = own_save(e);
    gpu_stream_break(ss->st);
    for (int k = 0; k < K; k++) {
        int nb = batch_windows(ss, nw, k);
        e->l0 = 1; // the mode, the ids; the embedding comes from the host table
        gpu_pass_begin(e, 0, ids + (long)k * B * T, nb);
        e->l0 = 0;
        float* h = state_use(ss, kl_ref(k), nb, 0);
        gpu_stream_embed(ss->st, ids + (long)k * B * T, nb, h);
        state_done(ss, kl_ref(k), nb, 1);
    }
    for (int l = 0; l < L; l++) {
        gpu_stream_begin(ss->st, l);
        for (int k = 0; k < K; k++) kl_layer(ss, l, k, batch_windows(ss, nw, k));
        gpu_stream_end(ss->st, l, l + 1 < L ? l + 1 : more ? 0 : -1);
    }
    gpu_stream_break(ss->st);
    own_restore(e, own);
    // the heads and KLs, batch by batch as the resident run adds them
    long n = (long)sp->nf * sp->gs->n;
    for (int k = 0; k < K; k++) {
        int nb = batch_windows(ss, nw, k);
        gpu_scorer_windows(&ss->s, wrows ? wrows + (size_t)k * B * n : NULL);
        e->h = state_use(ss, kl_ref(k), nb, 1);
        gpu_kl_reference(&ss->s, nb);
        state_done(ss, kl_ref(k), nb, 0);
        for (int p = 0; p < ss->n_pass; p++) {
            int f = ss->order[2 * p], g = ss->order[2 * p + 1];
            e->h = state_use(ss, kl_pass(ss, p, k), nb, 1);
            gpu_kl_add(&ss->s, nb, f * sp->gs->n + g);
            state_done(ss, kl_pass(ss, p, k), nb, 0);
        }
        gpu_scorer_end(&ss->s, score);
    }
    own_restore(e, own);
}

// gradient states: per engine batch k, its running state, its hidden gradient, then the inputs kept of
// layers L-1 .. 0 (the earliest last: they are the first to spill, and the last the backward reads).
static int gr_h(const GpuStreamScorer* ss, int k) { return k * (ss->sp->m->c.num_layers + 2); }
static int gr_dh(const GpuStreamScorer* ss, int k) { return gr_h(ss, k) + 1; }
static int gr_keep(const GpuStreamScorer* ss, int k, int l) {
    return gr_h(ss, k) + 2 + (ss->sp->m->c.num_layers - 1 - l);
}

// The gradient's per-window sums of engine batch k (nb windows): its own device rows while the streamed
// backward interleaves the batches, and where gpu_scorer_end adds them (host rows, or NULL: none kept).
static void gr_windows(GpuStreamScorer* ss, int k, int nb, double* rows) {
    GpuScorer* s = &ss->s;
    if (!rows) return;
    long n = (long)ss->sp->nf * ss->sp->gs->n;
    if (!ss->dw) {
        ss->dw = (double**)xcalloc(ss->plan->k, sizeof(double*));
        for (int i = 0; i < ss->plan->k; i++) {
            ss->dw[i] = (double*)gpu_alloc(ss->e, sizeof(double) * ss->sp->B * n);
            cudaCheck(cudaMemset(ss->dw[i], 0, sizeof(double) * ss->sp->B * n));
        }
    }
    s->dwscore = ss->dw[k];
    s->wout = rows;
    s->nb = nb;
}

extern "C" double gpu_stream_score_gradient(GpuStreamScorer* ss, const int* ids, int nw, double* score,
                                            double* wrows, int more) {
    GpuEngine* e = ss->e;
    const GpuScoreSpec* sp = ss->sp;
    int L = sp->m->c.num_layers, B = sp->B, T = sp->T, K = (nw + B - 1) / B;
    long n = (long)sp->nf * sp->gs->n;
    // the gradient's buffers on the first call, sized over every layer (l0 = 0: the widest linear, and the
    // hybrid families' Gated DeltaNet and attention buffers, which layer 0 alone may need)
    if (!e->dh) grad_alloc(e);
    Own own = own_save(e);
    gpu_stream_break(ss->st);
    for (int k = 0; k < K; k++) { // the mode
        int nb = batch_windows(ss, nw, k);
        e->l0 = 1;
        gpu_pass_begin(e, 1, ids + (long)k * B * T, nb);
        e->l0 = 0;
        float* h = state_use(ss, gr_h(ss, k), nb, 0);
        gpu_stream_embed(ss->st, ids + (long)k * B * T, nb, h);
        state_done(ss, gr_h(ss, k), nb, 1);
    }
    for (int l = 0; l < L; l++) { // the forward, keeping every layer's input
        gpu_stream_begin(ss->st, l);
        for (int k = 0; k < K; k++) {
            int nb = batch_windows(ss, nw, k);
            e->l0 = l, e->l1 = l + 1;
            e->h = state_use(ss, gr_h(ss, k), nb, 1);
            e->hsave = state_use(ss, gr_keep(ss, k, l), nb, 0);
            gpu_forward_layers(e, l, nb, 1);
            state_done(ss, gr_keep(ss, k, l), nb, 1);
            state_done(ss, gr_h(ss, k), nb, 1);
        }
        gpu_stream_end(ss->st, l, l + 1 < L ? l + 1 : -1);
    }
    gpu_stream_break(ss->st); // the losses are work, not a wait
    own_restore(e, own);
    double loss = 0;
    for (int k = 0; k < K; k++) { // the losses and their gradients at the final norm's input
        int nb = batch_windows(ss, nw, k);
        cudaCheck(cudaMemcpy(e->ids, ids + (long)k * B * T, sizeof(int) * nb * T, cudaMemcpyHostToDevice));
        e->h = state_use(ss, gr_h(ss, k), nb, 1);
        e->dh = state_use(ss, gr_dh(ss, k), nb, 0);
        gpu_loss_backward(e, nb);
        loss += gpu_loss(e, nb);
        state_done(ss, gr_dh(ss, k), nb, 1);
        state_done(ss, gr_h(ss, k), nb, 0);
    }
    for (int l = L - 1; l >= 0; l--) { // the backward, layer by layer from the last
        gpu_stream_begin(ss->st, l);
        for (int k = 0; k < K; k++) {
            int nb = batch_windows(ss, nw, k);
            e->l0 = l, e->l1 = l + 1;
            e->h = own.h;
            e->hsave = state_use(ss, gr_keep(ss, k, l), nb, 1);
            e->dh = state_use(ss, gr_dh(ss, k), nb, 1);
            gr_windows(ss, k, nb, wrows ? wrows + (size_t)k * B * n : NULL);
            gpu_grad_backward(&ss->s, nb);
            state_done(ss, gr_dh(ss, k), nb, 1);
            state_done(ss, gr_keep(ss, k, l), nb, 0);
        }
        gpu_stream_end(ss->st, l, l > 0 ? l - 1 : -1);
    }
    (void)more; // the next batch's forward begins with layer 0, still in its slot
    own_restore(e, own);
    if (!wrows) {
        gpu_scorer_end(&ss->s, score);
        return loss;
    }
    for (int k = 0; k < K; k++) { // each batch's windows, in window order: their sums are the totals
        gr_windows(ss, k, batch_windows(ss, nw, k), wrows + (size_t)k * B * n);
        gpu_scorer_end(&ss->s, score);
    }
    ss->s.dwscore = NULL;
    return loss;
}

#include "stream_plan.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../engine/arch.h"
#include "../engine/gpu_stream.h"
#include "../engine/util.h"
#include "score.h"
#include "shard_plan.h"

int stream_states_after(const StreamSpec* s, int l) {
    int n = 1;
    for (int i = 0; i < s->n_births; i++) n += s->birth_layer[i] <= l;
    return n;
}

static long states_peak(const StreamSpec* s, int k) {
    return s->gradient ? (long)k * (s->L + 2) : (long)k * stream_states_after(s, s->L - 1);
}

int stream_kl_passes(const Groups* gs, const Format* fmts, int nf, int L, int* order, int* birth) {
    int n = 0;
    for (int l = 0; l < L; l++)
        for (int f = 0; f < nf; f++)
            for (int g = 0; g < gs->n; g++)
                if (!gs->g[g].disabled && gs->g[g].layer == l && format_fits(&fmts[f], &gs->g[g])) {
                    order[2 * n] = f, order[2 * n + 1] = g;
                    if (birth) birth[n] = l;
                    n++;
                }
    return n;
}

double stream_spill_bytes(const StreamSpec* s, int k, int g) {
    if (s->gradient) { // the kept inputs beyond g go down once in the forward, up once in the backward
        long over = states_peak(s, k) - g;
        return over > 0 ? over * s->state_bytes : 0;
    }
    double b = 0; // after each layer, the states beyond g go down and come back for the next layer (or head)
    for (int l = 0; l < s->L; l++) {
        long over = (long)k * stream_states_after(s, l) - g;
        if (over > 0) b += over * s->state_bytes;
    }
    return b;
}

// The smallest GPU state pool that streaming works with: the state being computed, the reference's
// input it may be born from, and one more so a spilled state's copy overlaps compute.
#define MIN_STATES 3

static double sum_bytes(const StreamSpec* s) {
    double b = 0;
    for (int l = 0; l < s->L; l++) b += s->layer_bytes[l];
    return b;
}

static double max_bytes(const StreamSpec* s) {
    double b = 0;
    for (int l = 0; l < s->L; l++) b = s->layer_bytes[l] > b ? s->layer_bytes[l] : b;
    return b;
}

// Fills p for k engine batches per streamed batch; returns 0 when the fewest states that work do not fit
// (p->gpu_bytes then says what they need).
static int plan_k(const StreamSpec* s, int k, StreamPlan* p) {
    // two layer slots (double buffering), each the largest layer and its tensors' alignment
    double base = s->fixed_bytes + s->batch_bytes + 2 * (max_bytes(s) + s->slot_pad);
    long peak = states_peak(s, k);
    double room = s->cap - base;
    long g = room > 0 ? (long)floor(room / s->state_bytes) : 0;
    if (g > peak) g = peak;
    p->k = k;
    p->states_peak = (int)peak;
    p->states_gpu = (int)g;
    p->states_spilled = (int)(peak - g);
    // the fewest states that work: every one without spills, else MIN_STATES (or all, when fewer)
    long need = s->no_spill || peak < MIN_STATES ? peak : MIN_STATES;
    if (g < need) { // refused: what the smallest plan of this k needs
        p->gpu_bytes = base + need * s->state_bytes;
        return 0;
    }
    p->gpu_bytes = base + g * s->state_bytes;
    // what is left after the states keeps layers resident, the largest first
    double left = room - g * s->state_bytes;
    memset(p->res, 0, s->L);
    p->n_resident = 0;
    for (;;) {
        int best = -1;
        for (int l = 0; l < s->L; l++)
            if (!p->res[l] && s->layer_bytes[l] <= left &&
                (best < 0 || s->layer_bytes[l] > s->layer_bytes[best]))
                best = l;
        if (best < 0) break;
        p->res[best] = 1;
        p->n_resident++;
        left -= s->layer_bytes[best];
        p->gpu_bytes += s->layer_bytes[best];
    }
    double streamed = 0;
    for (int l = 0; l < s->L; l++) streamed += p->res[l] ? 0 : s->layer_bytes[l];
    p->weight_h2d = streamed * (s->gradient ? 2 : 1); // the gradient's backward walks the layers again
    p->spill_h2d = stream_spill_bytes(s, k, (int)g);
    p->copy_s = s->h2d_bw > 0 ? (p->weight_h2d + p->spill_h2d) / s->h2d_bw : 0;
    p->comp_s = k * s->batch_compute_s;
    long nbatch = (s->batches + k - 1) / k;
    p->total_h2d = (sum_bytes(s) - streamed) + nbatch * (p->weight_h2d + p->spill_h2d);
    return 1;
}

int stream_plan(const StreamSpec* s, StreamPlan* p) {
    memset(p, 0, sizeof(*p));
    p->res = xcalloc(s->L, 1);
    int batches = s->batches > 0 ? s->batches : 1;
    // everything resident: the weights once, every state of one engine batch on the GPU
    double all = s->fixed_bytes + s->batch_bytes + sum_bytes(s) + states_peak(s, 1) * s->state_bytes;
    if (!s->force && all <= s->cap) {
        memset(p->res, 1, s->L);
        p->n_resident = s->L;
        p->k = 1;
        p->states_peak = p->states_gpu = (int)states_peak(s, 1);
        p->gpu_bytes = all;
        p->total_h2d = sum_bytes(s);
        return 1;
    }
    p->streamed = 1;
    if (!plan_k(s, 1, p)) return 0;
    // The batch: the k with the least estimated time over the run, ceil(batches / k) streamed batches of
    // max(copies, compute) each (copies and compute overlap), the smaller k on a tie (it holds less memory).
    // Without estimates: the most that keep every state on the GPU.
    int known = s->h2d_bw > 0 && s->batch_compute_s > 0, best = 1;
    double best_t = INFINITY;
    StreamPlan q = *p;
    q.res = xcalloc(s->L, 1);
    for (int k = 1; k <= batches; k++) {
        if (!plan_k(s, k, &q)) break;
        if (!known) {
            if (q.states_spilled) break;
            best = k;
            continue;
        }
        double t = (double)((batches + k - 1) / k) * (q.copy_s > q.comp_s ? q.copy_s : q.comp_s);
        if (t < best_t * 0.999) best_t = t, best = k;
    }
    if (s->k_force > 0) {
        int k = s->k_force < batches ? s->k_force : batches;
        if (plan_k(s, k, &q)) best = k;
    }
    free(q.res);
    plan_k(s, best, p);
    p->streamed = 1;
    return 1;
}

void stream_plan_free(StreamPlan* p) {
    free(p->res);
    p->res = NULL;
}

void stream_ring_init(StreamRing* r) {
    r->state[0] = r->state[1] = -1;
    r->next = 0;
}

int stream_ring_take(StreamRing* r, int i) {
    int k = r->state[r->next] < 0 ? r->next : r->state[r->next ^ 1] < 0 ? r->next ^ 1 : -1;
    if (k < 0) return -1;
    r->state[k] = i;
    r->next = k ^ 1;
    return k;
}

int stream_ring_give(StreamRing* r, int i) {
    int k = r->state[0] == i ? 0 : r->state[1] == i ? 1 : -1;
    if (k >= 0) r->state[k] = -1;
    return k;
}

double stream_parse_size(const char* s) {
    char* end;
    if (!s || !isdigit((unsigned char)*s)) return -1;
    double v = strtod(s, &end);
    if (end == s || !isfinite(v)) return -1;
    static const char* unit[] = {"", "k", "m", "g", "t"};
    for (int i = 0; i < 5; i++) {
        size_t n = strlen(unit[i]);
        if (strncasecmp(end, unit[i], n)) continue;
        const char* r = end + n;
        double mul = 1;
        for (int j = 0; j < i; j++) mul *= 1000;
        if (i && (r[0] == 'i' || r[0] == 'I')) {
            mul = ldexp(1, 10 * i);
            r++;
        }
        if (*r == 'b' || *r == 'B') r++;
        if (*r) continue;
        return v * mul;
    }
    return -1;
}

double stream_parse_cap(const char* cmd, const char* size) {
    if (!size) return 0;
    double v = stream_parse_size(size);
    if (v <= 0) fail_input("%s: --gpu-memory '%s': a size such as 16GiB, 4G or 500MiB", cmd, size);
    return v;
}

// The widest linear dimension (rows or columns) of any layer, as the engine's widest_linear finds it among
// its linears: the rows of the family's table each layer has (q_proj with its gate rows, the Gated DeltaNet's
// input projections), the routed experts' moe_intermediate, and the hidden size.
static double widest_dim(const Config* c) {
    double w = c->hidden_size;
    for (int l = 0; l < c->num_layers; l++)
        for (int i = 0; i < c->fam->n_tensors; i++) {
            const ArchTensor* r = &c->fam->tensors[i];
            if (r->lin < 0 || r->layout != LAYOUT_PLAIN || !arch_layer_has(c, l, r->part)) continue;
            w = fmax(w, fmax(arch_dim(c, r->shape[0]), arch_dim(c, r->shape[1])));
        }
    return c->n_sparse ? fmax(w, c->moe_intermediate) : w;
}

double stream_mode_bytes(const Config* c, int T, int B, int split, int emu) {
    double M = (double)B * T, D = c->hidden_size, I = c->intermediate_size;
    double qd = (double)c->num_heads * c->head_dim, kvd = (double)c->num_kv_heads * c->head_dim, b = 0;
    if (split) // a_lo, q_lo, k_lo, v_lo, att_lo, m_lo, act_lo (bf16) and P_lo (B H T T bf16)
        b += 2 * M * (2 * D + 2 * qd + 2 * kvd + I) + 2.0 * B * c->num_heads * T * T;
    if (emu) { // wf_pool: fp32 weights of the largest layer's linears; xf, yf: fp32 (M, widest linear)
        double most = 0, wide = widest_dim(c);
        for (int l = 0; l < c->num_layers; l++)
            most = shard_layer_bytes(c, l) > most ? shard_layer_bytes(c, l) : most;
        b += 2 * most + 8 * M * wide;
    }
    return b;
}

// The row of c's family named `name` (under "<prefix>layers.N."), NULL for none (the routed experts' tensors).
static const ArchTensor* row_named(const Config* c, const char* name) {
    for (int i = 0; i < c->fam->n_tensors; i++)
        if (!strcmp(c->fam->tensors[i].name, name)) return &c->fam->tensors[i];
    return NULL;
}

double stream_layer_bytes(const Model* m, int l) {
    char pre[64];
    snprintf(pre, sizeof(pre), "%slayers.%d.", m->c.prefix, l);
    size_t n = strlen(pre);
    double b = 0;
    for (int i = 0; i < m->ck.n; i++) {
        const StTensor* t = &m->ck.t[i];
        if (strncmp(t->name, pre, n)) continue;
        const ArchTensor* r = row_named(&m->c, t->name + n);
        double values = (double)t->nbytes / (t->dtype == DT_F32 ? 4 : 2);
        b += values * (r && arch_gpu_f32(r) ? 4 : 2);
    }
    return b;
}

void stream_spec_model(StreamSpec* s, const Config* c, const Groups* gs, const Format* fmts, int nf,
                       int gradient, int T, int B, int windows, double cap, int split, int emu) {
    memset(s, 0, sizeof(*s));
    int L = c->num_layers;
    double* lb = xmalloc(sizeof(double) * L);
    for (int l = 0; l < L; l++) lb[l] = shard_layer_bytes(c, l);
    s->L = L;
    s->layer_bytes = lb;
    double table = 2.0 * c->vocab_size * c->hidden_size, M = (double)B * T;
    s->fixed_bytes = shard_stage_bytes(c, gradient, T, B, 1, 0, 0, 0) - table - 0.75 * 1073741824.0 +
                     4 * M * c->hidden_size; // the engine's one layer of saved inputs
    if (gradient) // its lm_head runs one window at a time: logits and their gradient (fp32, bf16 halves)
        s->fixed_bytes += 8.0 * T * c->vocab_size - 8 * M * c->vocab_size;
    s->fixed_bytes += stream_mode_bytes(c, T, B, split, emu);
    s->state_bytes = 4 * M * c->hidden_size;
    // a slot's tensors (engine/gpu_stream.cu carves every family's) each start at a multiple of
    // GPU_SLOT_ALIGN: at most one buffer per row of the family's table (q, k and v share one; the routed
    // experts take two)
    s->slot_pad = (double)GPU_SLOT_ALIGN * (c->fam->n_tensors + 1);
    s->cap = cap;
    s->gradient = gradient;
    // kl's passes as the scorers run them: a format that does not fit a group (a KV-cache format on a linear,
    // a linear's format on a KV cache, a block that does not divide the input) has no pass there
    size_t most = (size_t)nf * gs->n + 1;
    int *births = xmalloc(sizeof(int) * most), *order = xmalloc(2 * sizeof(int) * most);
    if (!gradient) s->n_births = stream_kl_passes(gs, fmts, nf, L, order, births);
    free(order);
    s->birth_layer = births;
    s->batches = (windows + B - 1) / B;
    s->h2d_bw = STREAM_EST_BW;
    // a streamed gradient recomputes every layer
    s->batch_compute_s = shard_work_flops(c, gs, nf, gradient, T, 1, NULL) * M / STREAM_EST_FLOPS;
}

void stream_spec_free(StreamSpec* s) {
    free((double*)s->layer_bytes);
    free((int*)s->birth_layer);
}

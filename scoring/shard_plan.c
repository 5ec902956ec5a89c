#include "shard_plan.h"

#include <math.h>
#include <stdlib.h>

#include "../engine/partition.h"
#include "../engine/util.h"

// FLOPs per token of one forward pass through layer l: its GEMMs (a sparse layer's router and top-k
// experts) and attention's two products over T / 2 keys on average (causal).
static double layer_flops(const Config* c, int l, int T) {
    double D = c->hidden_size, hd = c->head_dim, H = c->num_heads, KV = c->num_kv_heads;
    double att = 2 * D * hd * (H + 2 * KV) + 2 * H * hd * D + 2 * 2 * (T / 2.0) * hd * H;
    if (c->sparse[l]) return att + 2 * D * c->num_experts + (double)c->top_k * 3 * 2 * D * c->moe_intermediate;
    return att + 3 * 2 * D * c->intermediate_size;
}

double shard_layer_bytes(const Config* c, int l) {
    double D = c->hidden_size, hd = c->head_dim, H = c->num_heads, KV = c->num_kv_heads;
    double p = D * hd * (H + 2 * KV) + H * hd * D + 2 * D + 2 * hd;
    if (c->sparse[l])
        p += D * c->num_experts + (double)c->num_experts * 3 * D * c->moe_intermediate;
    else
        p += 3 * D * c->intermediate_size;
    return 2 * p;
}

// The memory of a stage, in the sums partition_layers takes: per layer (its weights and the inputs kept
// for the batches in flight: the gradient's first stage keeps `parts`), the tables of the first and
// last stage, and what every stage holds whatever its layers.
static double layer_mem(const Config* c, int gradient, int T, int B, int parts, int l) {
    return shard_layer_bytes(c, l) + 4.0 * B * T * c->hidden_size * (gradient ? parts : 1);
}

static double table_bytes(const Config* c) { return 2.0 * c->vocab_size * c->hidden_size; }

static double fixed_mem(const Config* c, int gradient, int T, int B, int last) {
    double M = (double)B * T, D = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    double qd = (double)c->num_heads * c->head_dim, kvd = (double)c->num_kv_heads * c->head_dim;
    double act = 4 * M * (8 * D + 4 * qd + 4 * kvd + 6 * I) + 8.0 * B * c->num_heads * T * T;
    double most = 0; // the largest layer: the plan's int8 pool
    for (int l = 0; l < c->num_layers; l++)
        most = shard_layer_bytes(c, l) / 2 > most ? shard_layer_bytes(c, l) / 2 : most;
    if (c->n_sparse) act += 4 * M * c->top_k * (D + 3.0 * c->moe_intermediate);
    return (gradient ? 2 : 1) * act + most + (last ? 2 * 4 * M * V + 2 * D : 0) + 1073741824.0;
}

double shard_stage_bytes(const Config* c, int gradient, int T, int B, int parts, int s, int l0, int l1) {
    double b = fixed_mem(c, gradient, T, B, s == parts - 1);
    for (int l = l0; l < l1; l++) b += layer_mem(c, gradient, T, B, parts, l);
    return b + (s == 0 ? table_bytes(c) : 0) + (s == parts - 1 ? table_bytes(c) : 0);
}

// The gradient's products per token beside its forward and backward: each enabled group's linears
// once unquantized and once per format (scoring/score.c grad_hook), an experts group once per format
// on the top_k experts a token is routed to (its unquantized output is the saved pass's).
static double gradient_group_flops(const Config* c, const Group* g, int nf) {
    if (g->experts) return nf * 2.0 * g->params * c->top_k / c->num_experts;
    return (1 + nf) * 2.0 * g->params;
}

// The work per token of each layer (L) and of the head (the return), as shard_plan counts it.
static double plan_work(const Config* c, const Groups* gs, int nf, int gradient, int T, double* work) {
    int L = c->num_layers;
    double* groups_at = xcalloc(L + 1, sizeof(double)); // enabled groups at layers <= l, from l + 1
    for (int i = 0; i < gs->n; i++)
        if (!gs->g[i].disabled) groups_at[gs->g[i].layer + 1] += 1;
    for (int l = 0; l < L; l++) groups_at[l + 1] += groups_at[l];
    for (int l = 0; l < L; l++) work[l] = (gradient ? 3 : 1 + nf * groups_at[l + 1]) * layer_flops(c, l, T);
    for (int i = 0; i < gs->n && gradient; i++)
        if (!gs->g[i].disabled) work[gs->g[i].layer] += gradient_group_flops(c, &gs->g[i], nf);
    double head = (gradient ? 2 : 1 + nf * groups_at[L]) * 2.0 * c->vocab_size * c->hidden_size;
    free(groups_at);
    return head;
}

double shard_work_flops(const Config* c, const Groups* gs, int nf, int gradient, int T) {
    double* work = xcalloc(c->num_layers, sizeof(double));
    double total = plan_work(c, gs, nf, gradient, T, work);
    for (int l = 0; l < c->num_layers; l++) total += work[l];
    free(work);
    return total;
}

int shard_plan(const Config* c, const Groups* gs, int nf, int gradient, int T, int B, int parts,
               const double* mem, int* bounds) {
    int L = c->num_layers;
    double *work = xcalloc(L, sizeof(double)), *bytes = xcalloc(L, sizeof(double));
    double* cap = xcalloc(parts, sizeof(double));
    double head = plan_work(c, gs, nf, gradient, T, work);
    for (int l = 0; l < L; l++) bytes[l] = layer_mem(c, gradient, T, B, parts, l);
    for (int s = 0; s < parts; s++) cap[s] = 0.9 * mem[s] - fixed_mem(c, gradient, T, B, s == parts - 1);
    double table = table_bytes(c);
    LayerSplit p = {L, parts, work, bytes, 0, head, table, table, cap};
    int by_work = partition_layers(&p, bounds);
    if (!by_work) { // memory first: the same search with the stages' memory as their work, no caps
        for (int s = 0; s < parts; s++) cap[s] = INFINITY;
        double last = fixed_mem(c, gradient, T, B, 1) - fixed_mem(c, gradient, T, B, 0);
        LayerSplit q = {L, parts, bytes, bytes, table, table + last, table, table, cap};
        if (!partition_layers(&q, bounds))
            fail_other("internal: no split of %d layers into %d stages", L, parts);
    }
    free(work), free(bytes), free(cap);
    return by_work;
}

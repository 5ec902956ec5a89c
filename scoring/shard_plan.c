#include "shard_plan.h"

#include <math.h>
#include <stdlib.h>

#include "../engine/arch.h"
#include "../engine/partition.h"
#include "../engine/util.h"
#include "../kernels/gated_delta.h"

// The products per token of one value head of the Gated DeltaNet's delta rule in its chunked (WY) form,
// chunks of n = min(GDN_GPU_CHUNK, T) tokens (kernels/gated_delta.h); per chunk: beta k k^T and q k^T
// (2 n^2 dk each), the UT transform's triangular inverse (n^3 / 3), w = T (beta k) (2 n^2 dk) and
// u = T (beta v) (2 n^2 dv), the new values u - w S and the inter-chunk output q S (2 n dk dv each), the
// intra-chunk output (q k^T) v (2 n^2 dv) and the state update S += k^T v (2 n dk dv). Divided by n:
// 6 dk dv + 2 n (3 dk + 2 dv) + n^2 / 3.
double shard_gdn_head_flops(const Config* c, int T) {
    double n = T < GDN_GPU_CHUNK ? T : GDN_GPU_CHUNK, dk = c->lin_dk, dv = c->lin_dv;
    return 6 * dk * dv + 2 * n * (3 * dk + 2 * dv) + n * n / 3;
}

// FLOPs per token of one forward pass through layer l: a GEMM (or dot product) per 2-D tensor of its rows
// of the architecture table (the linears with q_proj's gate rows, the Gated DeltaNet's projections, the
// router, the shared expert and its gate), the top_k experts a token is routed to, and the token mixer's
// own products: full attention's two over T / 2 keys on average (causal), or the delta rule per value head.
static double layer_flops(const Config* c, int l, int T) {
    const ArchFamily* f = c->fam;
    double w = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const ArchTensor* r = &f->tensors[i];
        if (r->ndim != 2 || r->layout != LAYOUT_PLAIN || !arch_layer_has(c, l, r->part)) continue;
        w += 2.0 * arch_dim(c, r->shape[0]) * arch_dim(c, r->shape[1]);
    }
    if (c->sparse[l]) w += (double)c->top_k * 3 * 2 * c->hidden_size * c->moe_intermediate;
    if (c->linear[l]) return w + c->lin_hv * shard_gdn_head_flops(c, T);
    return w + 2 * 2 * (T / 2.0) * c->head_dim * c->num_heads;
}

// Bytes a value of row r as the GPU holds it: fp32 for the Gated DeltaNet's conv, decays and gated norm,
// bf16 for every other tensor of a layer (arch_gpu_f32, which the engine's uploads ask too).
static int tensor_bytes(const ArchTensor* r) { return arch_gpu_f32(r) ? 4 : 2; }

double shard_layer_bytes(const Config* c, int l) {
    const ArchFamily* f = c->fam;
    double b = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const ArchTensor* r = &f->tensors[i];
        if (r->layout == LAYOUT_EXPERTS || !arch_layer_has(c, l, r->part)) continue;
        double n = 1;
        for (int k = 0; k < r->ndim; k++) n *= arch_dim(c, r->shape[k]);
        b += tensor_bytes(r) * n;
    }
    if (c->sparse[l]) b += 2.0 * c->num_experts * 3 * c->hidden_size * c->moe_intermediate;
    return b;
}

// The memory of a stage, in the sums partition_layers takes: per layer (its weights and the inputs kept
// for the batches in flight: the gradient's first stage keeps `parts`), the tables of the first and
// last stage, and what every stage holds whatever its layers.
static double layer_mem(const Config* c, int gradient, int T, int B, int parts, int l) {
    return shard_layer_bytes(c, l) + 4.0 * B * T * c->hidden_size * (gradient ? parts : 1);
}

static double table_bytes(const Config* c) { return 2.0 * c->vocab_size * c->hidden_size; }

// The hybrid families' buffers per row of a batch (gpu_engine.cu's hybrid_alloc), in fp32 values: the Gated
// DeltaNet's projections' outputs (and Qwen3-Next's fused ones), its output with its 16-bit GEMM input, the
// attention output gate's product, the shared expert's activations and output; and the int8 GEMM's int32
// accumulators and int8 codes (5 bytes a value) of the widest linear, which here may be the Gated DeltaNet's
// input projection or q_proj with its gate rows rather than the MLP the common term counts.
static double hybrid_row_floats(const Config* c) {
    double f = 0, C = arch_dim(c, DIM_GCONV), vd = arch_dim(c, DIM_GVD), Hv = c->lin_hv, Is = c->shared_inter;
    double wide = fmax(arch_dim(c, DIM_QROWS), c->intermediate_size);
    if (c->n_linear) f += 2 * C + 5 * vd + 4 * Hv, wide = fmax(wide, c->fam->fused_gdn ? C + vd : C);
    if (c->fam->attn_gate) f += 2.0 * c->num_heads * c->head_dim;
    return f + 5 * Is + c->hidden_size + 1 + 1.25 * wide;
}

// The Gated DeltaNet core's cache for B windows (the forward's intermediates and the backward's scratch,
// allocated once whatever the method), per row as kernels/gated_delta.cu holds it, with the windows padded
// to whole chunks: the conv's input and gradient (2 C), the normalised q, k (2 Hk dk) and their norms,
// eight (Hv dv) and five (Hv dk) per-token arrays, four per-token gates, seven chunk-square matrices per
// head (7 Hv n) and two states per chunk and head (2 Hv dk dv / n).
static double gdn_cache_bytes(const Config* c, int T, int B) {
    if (!c->n_linear) return 0;
    double n = T < GDN_GPU_CHUNK ? T : GDN_GPU_CHUNK, rows = (double)B * ceil(T / n) * n;
    double C = arch_dim(c, DIM_GCONV), Hk = c->lin_hk, Hv = c->lin_hv, dk = c->lin_dk, dv = c->lin_dv;
    double per =
        2 * C + 2 * Hk * dk + 2 * Hk + 8 * Hv * dv + 5 * Hv * dk + 4 * Hv + 7 * Hv * n + 2 * Hv * dk * dv / n;
    return 4 * rows * per;
}

static double fixed_mem(const Config* c, int gradient, int T, int B, int last) {
    double M = (double)B * T, D = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    double qd = (double)c->num_heads * c->head_dim, kvd = (double)c->num_kv_heads * c->head_dim;
    double act = 4 * M * (8 * D + 4 * qd + 4 * kvd + 6 * I) + 8.0 * B * c->num_heads * T * T;
    double most = 0; // the largest layer: the plan's int8 pool
    for (int l = 0; l < c->num_layers; l++)
        most = shard_layer_bytes(c, l) / 2 > most ? shard_layer_bytes(c, l) / 2 : most;
    if (c->n_sparse) act += 4 * M * c->top_k * (D + 3.0 * c->moe_intermediate);
    if (c->fam->hybrid) act += 4 * M * hybrid_row_floats(c);
    return (gradient ? 2 : 1) * act + gdn_cache_bytes(c, T, B) + most + (last ? 2 * 4 * M * V + 2 * D : 0) +
           1073741824.0;
}

double shard_stage_bytes(const Config* c, int gradient, int T, int B, int parts, int s, int l0, int l1) {
    double b = fixed_mem(c, gradient, T, B, s == parts - 1);
    for (int l = l0; l < l1; l++) b += layer_mem(c, gradient, T, B, parts, l);
    return b + (s == 0 ? table_bytes(c) : 0) + (s == parts - 1 ? table_bytes(c) : 0);
}

// The gradient's products per token beside its forward and backward: each enabled group's linears once per
// format, Yq (scoring/score_gpu.cu grad_hook: Y is the forward's output), an experts group on the top_k experts
// a token is routed to.
static double gradient_group_flops(const Config* c, const Group* g, int nf) {
    if (g->experts) return nf * 2.0 * g->params * c->top_k / c->num_experts;
    return nf * 2.0 * g->params;
}

// The work per token of each layer (L) and of the head (the return), as shard_plan counts it: the gradient's
// forward and activation backward of every layer, and a second forward of every layer with `every`, else of
// each layer with recomputed[l] (NULL: none).
static double plan_work(const Config* c, const Groups* gs, int nf, int gradient, int T, int every,
                        const unsigned char* recomputed, double* work) {
    int L = c->num_layers;
    double* groups_at = xcalloc(L + 1, sizeof(double)); // enabled groups at layers <= l, from l + 1
    for (int i = 0; i < gs->n; i++)
        if (!gs->g[i].disabled) groups_at[gs->g[i].layer + 1] += 1;
    for (int l = 0; l < L; l++) groups_at[l + 1] += groups_at[l];
    for (int l = 0; l < L; l++) {
        int again = every || (recomputed && recomputed[l]); // the backward's second forward
        double passes = gradient ? 2 + again : 1 + nf * groups_at[l + 1];
        work[l] = passes * layer_flops(c, l, T);
    }
    for (int i = 0; i < gs->n && gradient; i++)
        if (!gs->g[i].disabled) work[gs->g[i].layer] += gradient_group_flops(c, &gs->g[i], nf);
    double head = (gradient ? 2 : 1 + nf * groups_at[L]) * 2.0 * c->vocab_size * c->hidden_size;
    free(groups_at);
    return head;
}

double shard_work_flops(const Config* c, const Groups* gs, int nf, int gradient, int T, int every,
                        const unsigned char* recomputed) {
    double* work = xcalloc(c->num_layers, sizeof(double));
    double total = plan_work(c, gs, nf, gradient, T, every, recomputed, work);
    for (int l = 0; l < c->num_layers; l++) total += work[l];
    free(work);
    return total;
}

int shard_plan(const Config* c, const Groups* gs, int nf, int gradient, int T, int B, int parts,
               const double* mem, int* bounds) {
    int L = c->num_layers;
    double *work = xcalloc(L, sizeof(double)), *bytes = xcalloc(L, sizeof(double));
    double* cap = xcalloc(parts, sizeof(double));
    // a pipeline stage's gradient recomputes every layer (slots of inputs only)
    double head = plan_work(c, gs, nf, gradient, T, 1, NULL, work);
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

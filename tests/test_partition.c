// Host parts of multi-GPU scoring: window partitioning, and where --shard-layers cuts the layers.
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "engine/arch.h"
#include "engine/partition.h"
#include "engine/util.h"
#include "scoring/shard_plan.h"

// The largest stage's work of every split, tried one by one: the optimum partition_layers must reach
// (INFINITY when none fits).
static double brute_best(const LayerSplit* p, int s, int l0, double worst) {
    if (s == p->parts) return l0 == p->L ? worst : INFINITY;
    double best = INFINITY;
    for (int l1 = l0 + 1; l1 <= p->L - (p->parts - s - 1); l1++) {
        double w = s == 0 ? p->head_work : 0, b = s == 0 ? p->head_bytes : 0;
        if (s == p->parts - 1) {
            if (l1 != p->L) continue;
            w += p->tail_work, b += p->tail_bytes;
        }
        for (int l = l0; l < l1; l++) w += p->work[l], b += p->bytes[l];
        if (b > p->cap[s]) continue;
        double v = brute_best(p, s + 1, l1, worst > w ? worst : w);
        best = v < best ? v : best;
    }
    return best;
}

// The split's largest stage work, and whether it is a valid split that fits.
static double split_worst(const LayerSplit* p, const int* bounds, int* fits) {
    double worst = 0;
    *fits = bounds[0] == 0 && bounds[p->parts] == p->L;
    for (int s = 0; s < p->parts; s++) {
        double w = (s == 0 ? p->head_work : 0) + (s == p->parts - 1 ? p->tail_work : 0);
        double b = (s == 0 ? p->head_bytes : 0) + (s == p->parts - 1 ? p->tail_bytes : 0);
        *fits &= bounds[s + 1] > bounds[s];
        for (int l = bounds[s]; l < bounds[s + 1]; l++) w += p->work[l], b += p->bytes[l];
        *fits &= b <= p->cap[s];
        worst = w > worst ? w : worst;
    }
    return worst;
}

static void test_partition_layers(void) {
    srand(7);
    int ok = 1, cases = 0, infeasible = 0;
    for (int t = 0; t < 3000; t++) {
        int L = 1 + rand() % 9, parts = 1 + rand() % (L < 4 ? L : 4);
        double work[9], bytes[9], cap[4];
        for (int l = 0; l < L; l++) work[l] = 1 + rand() % 20, bytes[l] = 1 + rand() % 10;
        for (int s = 0; s < parts; s++) cap[s] = 5 + rand() % 40;
        LayerSplit p = {L, parts, work, bytes, rand() % 3, rand() % 30, rand() % 5, rand() % 8, cap};
        int bounds[5];
        double want = brute_best(&p, 0, 0, 0);
        int got = partition_layers(&p, bounds), fits;
        if (!got) {
            ok &= want == INFINITY, infeasible++;
            continue;
        }
        ok &= split_worst(&p, bounds, &fits) == want && fits;
        cases++;
    }
    CHECK(ok && cases > 500 && infeasible > 100,
          "layer splits: the least largest-stage work that fits, as trying every split",
          "%d splits, %d with none", cases, infeasible);
}

// A Qwen3-8B-shaped config: 36 layers, 4 groups each.
static void config_8b(Config* c, Groups* gs, Group* g) {
    memset(c, 0, sizeof(*c));
    c->fam = arch_find("qwen3");
    c->vocab_size = 151936, c->hidden_size = 4096, c->intermediate_size = 12288, c->num_layers = 36;
    c->num_heads = 32, c->num_kv_heads = 8, c->head_dim = 128;
    memset(gs, 0, sizeof(*gs));
    gs->n = 4 * 36, gs->g = g;
    for (int i = 0; i < gs->n; i++) memset(&g[i], 0, sizeof(g[i])), g[i].layer = i / 4;
}

static void test_shard_plan(void) {
    Config c;
    Groups gs;
    Group g[144];
    config_8b(&c, &gs, g);
    double mem[2] = {1e15, 1e15};
    int b[3];
    // kl: the later layers run more groups' passes and the last stage lm_head for each of them
    int by_work = shard_plan(&c, &gs, 1, 0, 512, 4, 2, mem, b);
    CHECK(by_work && b[1] > 24 && b[1] < 30, "shard plan: kl puts most layers on the first of 2 stages",
          "by work %d, cut at layer %d", by_work, b[1]);
    int kl_cut = b[1];
    by_work = shard_plan(&c, &gs, 1, 1, 512, 4, 2, mem, b);
    CHECK(by_work && (b[1] == 18 || b[1] == 19),
          "shard plan: the gradient cuts near half (lm_head on the last)", "by work %d, cut at layer %d",
          by_work, b[1]);
    // the first GPU holds 20 layers and no more: the balance gives way
    mem[0] = shard_stage_bytes(&c, 0, 512, 4, 2, 0, 0, 20) / 0.9 + 1e6;
    by_work = shard_plan(&c, &gs, 1, 0, 512, 4, 2, mem, b);
    CHECK(by_work && b[1] == 20, "shard plan: kl within the first GPU's memory",
          "by work %d, cut at %d (was %d)", by_work, b[1], kl_cut);
    // neither GPU can hold half the model: memory first, the fullest GPU as empty as it can be
    mem[0] = mem[1] = shard_stage_bytes(&c, 0, 512, 4, 2, 0, 0, 10);
    by_work = shard_plan(&c, &gs, 1, 0, 512, 4, 2, mem, b);
    double m0 = shard_stage_bytes(&c, 0, 512, 4, 2, 0, 0, b[1]),
           m1 = shard_stage_bytes(&c, 0, 512, 4, 2, 1, b[1], 36);
    double n0 = shard_stage_bytes(&c, 0, 512, 4, 2, 0, 0, b[1] + 1),
           n1 = shard_stage_bytes(&c, 0, 512, 4, 2, 1, b[1] - 1, 36);
    double worst = m0 > m1 ? m0 : m1;
    CHECK(!by_work && b[0] == 0 && b[2] == 36 && worst <= (n0 > m1 ? n0 : m1) && worst <= (m0 > n1 ? m0 : n1),
          "shard plan: nothing fits, memory first", "by work %d, cut at %d", by_work, b[1]);
    // the work score reports: the gradient's forward and activation backward through every layer and two
    // passes through lm_head; with a layer recomputed, its forward once more
    double att = 2.0 * 4096 * 128 * 48 + 2.0 * 4096 * 4096 + 4.0 * 256 * 128 * 32;
    double layer = att + 6.0 * 4096 * 12288;
    double want = 36 * 2 * layer + 2 * 2.0 * 151936 * 4096;
    double got = shard_work_flops(&c, &gs, 1, 1, 512, 0, NULL);
    CHECK(fabs(got - want) <= 1e-9 * want, "shard plan: the gradient's work per token", "%g vs %g", got, want);
    unsigned char rec[36] = {0};
    for (int l = 0; l < 10; l++) rec[l] = 1;
    double r10 = shard_work_flops(&c, &gs, 1, 1, 512, 0, rec);
    CHECK(fabs(r10 - want - 10 * layer) <= 1e-9 * want,
          "shard plan: the gradient's work with 10 layers recomputed", "%g vs %g", r10, want + 10 * layer);
    double all = shard_work_flops(&c, &gs, 1, 1, 512, 1, rec); // every layer, whatever recomputed says
    CHECK(fabs(all - want - 36 * layer) <= 1e-9 * want,
          "shard plan: the gradient's work with every layer recomputed", "%g vs %g", all, want + 36 * layer);
    // the gradient's quantized products: every enabled group's linears once per format (Y is the forward's),
    // so seven formats count 6 more of them than one; an experts group only its top_k experts
    for (int i = 0; i < 144; i++) // {q,k,v}, o_proj, {gate,up}, down_proj of Qwen3-8B
        g[i].params = (long[]){4096L * 6144, 4096L * 4096, 4096L * 24576, 12288L * 4096}[i % 4];
    double layer_params = 4096.0 * 6144 + 4096.0 * 4096 + 4096.0 * 24576 + 12288.0 * 4096;
    double one = shard_work_flops(&c, &gs, 1, 1, 512, 0, NULL),
           seven = shard_work_flops(&c, &gs, 7, 1, 512, 0, NULL);
    CHECK(fabs(one - (want + 36 * 1 * 2.0 * layer_params)) <= 1e-9 * one &&
              fabs(seven - one - 36 * 6 * 2.0 * layer_params) <= 1e-9 * seven,
          "shard plan: the gradient's work counts each format's products", "one %g, seven %g", one, seven);
    Config moe = c;
    moe.num_experts = 128, moe.top_k = 8;
    Group e = {.experts = 1, .params = 3L * 128 * 4096 * 768, .layer = 0};
    Groups ge = {.n = 1, .g = &e};
    double e1 = shard_work_flops(&moe, &ge, 1, 1, 512, 0, NULL),
           e7 = shard_work_flops(&moe, &ge, 7, 1, 512, 0, NULL);
    CHECK(fabs(e7 - e1 - 6 * 2.0 * 3 * 8 * 4096 * 768) <= 1e-9 * e7,
          "shard plan: an experts group's per-format products are its top_k experts'", "%g vs %g", e1, e7);
    for (int i = 0; i < 144; i++) g[i].params = 0;
    // disabled groups run no pass: with the last half's groups off, kl cuts earlier
    for (int i = 72; i < 144; i++) g[i].disabled = 1;
    mem[0] = mem[1] = 1e15;
    shard_plan(&c, &gs, 1, 0, 512, 4, 2, mem, b);
    CHECK(b[1] > kl_cut - 10 && b[1] < kl_cut, "shard plan: disabled groups add no work",
          "cut at %d (all on: %d)", b[1], kl_cut);
}

// A --nccl-init run's per-window scores (README §6): each rank's rows placed into a zero matrix of every
// window, the ranks' matrices summed in fp64 in rank order (what the all-reduce computes), give every window's
// rows bit for bit, for any world size, including ranks with no window.
static void test_place_rows(void) {
    enum { NW = 11, NS = 5 };
    double want[NW * NS];
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < NW * NS; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        want[i] = (double)(x % 1000003) * 1e-3 + 1e-7; // never zero: a misplaced row shows
    }
    int ok = 1;
    for (int world = 1; world <= 14; world++) {
        double sum[NW * NS] = {0};
        for (int r = 0; r < world; r++) {
            int lo, hi;
            partition_windows(NW, world, r, &lo, &hi);
            double full[NW * NS] = {0};
            partition_place_rows(full, want + (size_t)lo * NS, lo, hi, NS);
            for (int i = 0; i < NW * NS; i++) sum[i] += full[i];
        }
        ok &= !memcmp(sum, want, sizeof(want));
    }
    CHECK(ok, "ranks' per-window rows, placed and summed, are every window's rows bit for bit", "differ");
}

// The Qwen3.5-35B-A3B shape (gen --preset qwen3.5-35b-a3b): 40 sparse layers, every fourth full (gated)
// attention, the others Gated DeltaNet; 256 experts of 512, top-8, a shared expert of 512.
static void config_35b(Config* c) {
    memset(c, 0, sizeof(*c));
    c->fam = arch_find("qwen3_5_moe_text");
    c->vocab_size = 248320, c->hidden_size = 2048, c->num_layers = 40;
    c->num_heads = 16, c->num_kv_heads = 2, c->head_dim = 256;
    c->num_experts = 256, c->top_k = 8, c->moe_intermediate = 512, c->shared_inter = 512;
    c->lin_hk = 16, c->lin_hv = 32, c->lin_dk = 128, c->lin_dv = 128, c->lin_conv = 4;
    for (int l = 0; l < 40; l++) c->sparse[l] = 1, c->linear[l] = (l + 1) % 4 != 0;
    c->n_sparse = 40, c->n_linear = 30;
}

// The hybrid families in the layer cuts' model (README "Several GPUs"): each layer's bytes and work from its
// family's tensors, by hand here.
static void test_shard_hybrid(void) {
    Config c;
    config_35b(&c);
    double D = 2048, E = 256, Im = 512, Is = 512;
    double C = 2 * 16 * 128 + 32 * 128, vd = 32 * 128; // the conv's channels q | k | v; the value width
    double gdn_lin =
        C * D + vd * D + 2 * 32 * D + D * vd; // in_proj_qkv, in_proj_z, in_proj_b, in_proj_a, out_proj
    double attn_lin =
        2 * 16 * 256 * D + 2 * (2 * 256 * D) + D * 16 * 256; // q_proj (query and gate rows), k, v, o
    double moe = E * D + 3 * Is * D + D;                     // router, shared expert, its gate
    double experts = E * 3 * D * Im;
    double gdn_b =
        2 * (2 * D + gdn_lin + moe + experts) + 4 * (C * 4 + 32 + 32 + 128); // fp32 conv, decays, norm
    double attn_b = 2 * (2 * D + attn_lin + 2 * 256 + moe + experts);
    CHECK(fabs(shard_layer_bytes(&c, 0) - gdn_b) <= 1e-12 * gdn_b &&
              fabs(shard_layer_bytes(&c, 3) - attn_b) <= 1e-12 * attn_b,
          "shard plan: a Gated DeltaNet layer's and a gated attention layer's bytes (Qwen3.5-35B-A3B shape)",
          "%.0f vs %.0f, %.0f vs %.0f", shard_layer_bytes(&c, 0), gdn_b, shard_layer_bytes(&c, 3), attn_b);
    // work per token, T = 512: the delta rule in chunks of 64 per value head (dk = dv = 128) against
    // attention's two products over 256 keys on average
    double n = 64, delta = 32 * (6 * 128.0 * 128 + 2 * n * (3 * 128 + 2 * 128) + n * n / 3);
    double att = 2 * 2 * 256.0 * 256 * 16, ex = 8 * 3 * 2 * D * Im;
    double gdn_w = 2 * (gdn_lin + moe) + ex + delta, attn_w = 2 * (attn_lin + moe) + ex + att;
    double head = 2 * 248320.0 * D;
    Groups none = {0};
    double kl = shard_work_flops(&c, &none, 1, 0, 512, 0, NULL),
           grad = shard_work_flops(&c, &none, 1, 1, 512, 0, NULL);
    double want_kl = 30 * gdn_w + 10 * attn_w + head, want_grad = 2 * (30 * gdn_w + 10 * attn_w) + 2 * head;
    CHECK(fabs(kl - want_kl) <= 1e-12 * want_kl && fabs(grad - want_grad) <= 1e-12 * want_grad,
          "shard plan: score's work per token on the Qwen3.5-35B-A3B shape (delta rule per value head)",
          "kl %.6g vs %.6g, gradient %.6g vs %.6g", kl, want_kl, grad, want_grad);
    // a window shorter than a chunk: one chunk of T tokens
    double n2 = 32, head2 = 6 * 128.0 * 128 + 2 * n2 * (3 * 128 + 2 * 128) + n2 * n2 / 3;
    CHECK(fabs(shard_gdn_head_flops(&c, 32) - head2) <= 1e-12 * head2,
          "shard plan: delta rule of a short window", "%g vs %g", shard_gdn_head_flops(&c, 32), head2);
    // Qwen3-Next: fused in_proj_qkvz / in_proj_ba carry the same rows as Qwen3.5's four
    Config nx = c;
    nx.fam = arch_find("qwen3_next");
    CHECK(shard_layer_bytes(&nx, 0) == shard_layer_bytes(&c, 0),
          "shard plan: Qwen3-Next's fused projections' bytes", "%.0f vs %.0f", shard_layer_bytes(&nx, 0),
          shard_layer_bytes(&c, 0));
    // the Gated DeltaNet core's cache grows with the windows of a batch: 4 more windows of 512 tokens add
    // at least its per-row arrays (2 C + 8 vd + 5 Hv dk floats a row) beside the activations
    double s4 = shard_stage_bytes(&c, 1, 512, 4, 2, 0, 0, 20),
           s8 = shard_stage_bytes(&c, 1, 512, 8, 2, 0, 0, 20);
    Config plain = c; // the same shape without Gated DeltaNet layers
    for (int l = 0; l < 40; l++) plain.linear[l] = 0;
    plain.n_linear = 0;
    double p4 = shard_stage_bytes(&plain, 1, 512, 4, 2, 0, 0, 20),
           p8 = shard_stage_bytes(&plain, 1, 512, 8, 2, 0, 0, 20);
    double cache_min = 4.0 * 4 * 512 * (2 * C + 8 * vd + 5 * vd);
    CHECK((s8 - s4) - (p8 - p4) >= cache_min, "shard plan: a stage's memory counts the Gated DeltaNet cache",
          "%.3g more for 4 windows, at least %.3g", (s8 - s4) - (p8 - p4), cache_min);
    // two 80 GiB GPUs hold the 35B-A3B shape's 67 GB: the gradient cuts where the busier stage has the least
    // work (three passes a layer, lm_head's two on the last stage: about 5 layers' worth), both within memory
    int best = 0;
    double best_w = INFINITY;
    for (int k = 1; k < 40; k++) {
        double w0 = 0, w1 = 2 * head;
        for (int l = 0; l < 40; l++) *(l < k ? &w0 : &w1) += 3 * (c.linear[l] ? gdn_w : attn_w);
        if (fmax(w0, w1) < best_w) best_w = fmax(w0, w1), best = k;
    }
    double mem[2] = {80.0 * 1073741824, 80.0 * 1073741824};
    int b[3];
    int by_work = shard_plan(&c, &none, 1, 1, 512, 4, 2, mem, b);
    double m0 = shard_stage_bytes(&c, 1, 512, 4, 2, 0, 0, b[1]),
           m1 = shard_stage_bytes(&c, 1, 512, 4, 2, 1, b[1], 40);
    CHECK(by_work && b[1] == best && m0 <= 0.9 * mem[0] && m1 <= 0.9 * mem[1],
          "shard plan: the Qwen3.5-35B-A3B shape's gradient on 2 GPUs, cut by work within memory",
          "by work %d, cut at %d (by hand %d), %.1f and %.1f GiB", by_work, b[1], best, m0 / 1073741824,
          m1 / 1073741824);
    // one 40 GiB GPU and one 80 GiB: the first holds fewer layers
    mem[0] = 40.0 * 1073741824;
    by_work = shard_plan(&c, &none, 1, 1, 512, 4, 2, mem, b);
    m0 = shard_stage_bytes(&c, 1, 512, 4, 2, 0, 0, b[1]);
    CHECK(by_work && b[1] < best && m0 <= 0.9 * mem[0] &&
              shard_stage_bytes(&c, 1, 512, 4, 2, 0, 0, b[1] + 1) > 0.9 * mem[0],
          "shard plan: the hybrid shape's first stage as full as its 40 GiB allow", "cut at %d, %.1f GiB", b[1],
          m0 / 1073741824);
}

int main(void) {
    int ok = 1;
    for (int n = 0; n <= 40; n++)
        for (int parts = 1; parts <= 9; parts++) {
            int next = 0, mn = 1 << 30, mx = 0;
            for (int i = 0; i < parts; i++) {
                int lo, hi;
                partition_windows(n, parts, i, &lo, &hi);
                ok &= lo == next && hi >= lo;
                next = hi;
                mn = hi - lo < mn ? hi - lo : mn;
                mx = hi - lo > mx ? hi - lo : mx;
            }
            ok &= next == n && mx - mn <= 1;
        }
    CHECK(ok, "windows split into contiguous ranges covering all, sizes within one", "violated");
    test_partition_layers();
    test_shard_plan();
    test_place_rows();
    test_shard_hybrid();
    return g_fail ? 1 : 0;
}

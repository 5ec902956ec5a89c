// Host parts of multi-GPU scoring: window partitioning, and where --shard-layers cuts the layers.
#include <stdint.h>
#include <string.h>

#include "check.h"
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
    // the work score reports: the gradient's three passes through every layer and two through lm_head
    double att = 2.0 * 4096 * 128 * 48 + 2.0 * 4096 * 4096 + 4.0 * 256 * 128 * 32;
    double want = 36 * 3 * (att + 6.0 * 4096 * 12288) + 2 * 2.0 * 151936 * 4096;
    double got = shard_work_flops(&c, &gs, 1, 1, 512);
    CHECK(fabs(got - want) <= 1e-9 * want, "shard plan: the gradient's work per token", "%g vs %g", got, want);
    // the gradient's quantized products: every enabled group's linears once unquantized and once per
    // format, so seven formats count 6 more of them than one; an experts group only its top_k experts
    for (int i = 0; i < 144; i++) // {q,k,v}, o_proj, {gate,up}, down_proj of Qwen3-8B
        g[i].params = (long[]){4096L * 6144, 4096L * 4096, 4096L * 24576, 12288L * 4096}[i % 4];
    double layer_params = 4096.0 * 6144 + 4096.0 * 4096 + 4096.0 * 24576 + 12288.0 * 4096;
    double one = shard_work_flops(&c, &gs, 1, 1, 512), seven = shard_work_flops(&c, &gs, 7, 1, 512);
    CHECK(fabs(one - (want + 36 * 2 * 2.0 * layer_params)) <= 1e-9 * one &&
              fabs(seven - one - 36 * 6 * 2.0 * layer_params) <= 1e-9 * seven,
          "shard plan: the gradient's work counts each format's products", "one %g, seven %g", one, seven);
    Config moe = c;
    moe.num_experts = 128, moe.top_k = 8;
    Group e = {.experts = 1, .params = 3L * 128 * 4096 * 768, .layer = 0};
    Groups ge = {.n = 1, .g = &e};
    double e1 = shard_work_flops(&moe, &ge, 1, 1, 512), e7 = shard_work_flops(&moe, &ge, 7, 1, 512);
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
    return g_fail ? 1 : 0;
}

// The merged kl scorer's planner (scoring/merge_plan.c): the merged batch and the waves of passes, on byte
// counts small enough to count by hand, and the window estimate on a model's shape.
#include <string.h>

#include "check.h"
#include "engine/arch.h"
#include "engine/config.h"
#include "scoring/merge_plan.h"

static MergeSpec spec(double avail, int n_pass) {
    MergeSpec s;
    memset(&s, 0, sizeof(s));
    s.avail = avail;
    s.window_bytes = 10;
    s.pass_bytes = 8; // B = 4 windows of 2 bytes
    s.fixed_bytes = 100;
    s.B = 4;
    s.n_pass = n_pass;
    s.bm_max = 16;
    return s;
}

static void test_fits(void) {
    // 100 fixed + 16 x 10 merged + 30 x 8 states = 500: one wave, Bm = bm_max
    MergeSpec s = spec(500, 30);
    MergePlan p;
    int ok = merge_plan(&s, &p);
    CHECK(ok && p.bm == 16 && p.per_wave == 30 && p.n_waves == 1, "merge_plan_one_wave",
          "ok %d bm %d per_wave %d waves %d", ok, p.bm, p.per_wave, p.n_waves);
    s = spec(499, 30); // a byte short: half of (399 - 8) = 195 -> Bm 16 still, states 239 -> 29 a wave, 2 waves
    ok = merge_plan(&s, &p);
    CHECK(ok && p.bm == 16 && p.n_waves == 2 && p.per_wave == 15, "merge_plan_two_waves_equal",
          "ok %d bm %d per_wave %d waves %d", ok, p.bm, p.per_wave, p.n_waves);
}

static void test_tight(void) {
    // 100 fixed, 108 left: half of 100 = 50 -> Bm 5 windows (50 bytes), 58 for states -> 7 passes a wave
    MergeSpec s = spec(208, 30);
    MergePlan p;
    int ok = merge_plan(&s, &p);
    CHECK(ok && p.bm == 5 && p.n_waves == 5 && p.per_wave == 6, "merge_plan_tight",
          "ok %d bm %d per_wave %d waves %d", ok, p.bm, p.per_wave, p.n_waves);
    s = spec(150, 30); // 50 left: Bm falls to B = 4 (40 bytes), 10 for states: one pass a wave
    ok = merge_plan(&s, &p);
    CHECK(ok && p.bm == 4 && p.per_wave == 1 && p.n_waves == 30, "merge_plan_bm_floor_b",
          "ok %d bm %d per_wave %d waves %d", ok, p.bm, p.per_wave, p.n_waves);
    s = spec(140, 30); // 40 left: Bm = B takes it all, no state fits
    ok = merge_plan(&s, &p);
    CHECK(!ok && p.bm == 4 && p.per_wave == 1, "merge_plan_too_small", "ok %d bm %d per_wave %d", ok, p.bm,
          p.per_wave);
    s = spec(1e9, 30);
    s.bm_max = 2; // below B: B
    ok = merge_plan(&s, &p);
    CHECK(ok && p.bm == 4 && p.n_waves == 1, "merge_plan_bm_max_below_b", "bm %d waves %d", p.bm, p.n_waves);
}

static void test_waves(void) {
    int start[12], n = merge_waves(10, 4, start);
    int want[4] = {0, 4, 7, 10}; // 3 waves of 4, 3, 3 (equal sizes, the first ones one larger)
    int ok = n == 3;
    for (int i = 0; i <= 3 && ok; i++) ok &= start[i] == want[i];
    CHECK(ok, "merge_waves_equal_sizes", "n %d starts %d %d %d %d", n, start[0], start[1], start[2], start[3]);
    n = merge_waves(10, 10, start);
    CHECK(n == 1 && start[0] == 0 && start[1] == 10, "merge_waves_one", "n %d", n);
    n = merge_waves(3, 1, start);
    CHECK(n == 3 && start[1] == 1 && start[2] == 2 && start[3] == 3, "merge_waves_singletons", "n %d", n);
    n = merge_waves(0, 5, start);
    CHECK(n == 0 && start[0] == 0, "merge_waves_none", "n %d", n);
    int nw, per = merge_wave_size(7 * 8 + 7, 8, 30, &nw); // room for 7 passes: 5 waves of 6
    CHECK(per == 6 && nw == 5, "merge_wave_size_balanced", "per %d waves %d", per, nw);
    per = merge_wave_size(1e12, 8, 30, &nw);
    CHECK(per == 30 && nw == 1, "merge_wave_size_all", "per %d waves %d", per, nw);
    per = merge_wave_size(3, 8, 30, &nw); // not even one: one a wave (the allocation reports the shortfall)
    CHECK(per == 1 && nw == 30, "merge_wave_size_at_least_one", "per %d waves %d", per, nw);
}

static void test_older(void) {
    const int birth[7] = {0, 0, 1, 3, 3, 3, 5};
    int born, ok = 1;
    ok &= merge_older(birth, 0, 7, 0, &born) == 0 && born == 2;
    ok &= merge_older(birth, 0, 7, 3, &born) == 3 && born == 3;
    ok &= merge_older(birth, 0, 7, 4, &born) == 6 && born == 0;
    ok &= merge_older(birth, 3, 7, 5, &born) == 3 && born == 1; // a later wave: its own passes only
    ok &= merge_older(birth, 2, 5, 2, &born) == 1 && born == 0;
    CHECK(ok, "merge_older_births", "older / born passes miscounted");
}

// The merged batch's buffers per window, by hand on a small dense shape (D 8, I 16, 2 heads of 4, one kv
// head, T 4): activations 4 T (8 D + 4 qd + 4 kvd + 6 I) = 3328, the scores and probabilities 8 H T T = 256,
// one layer's saved input 4 T D = 128, and no logits; bf16 hi + lo adds 2 T (2 D + 2 qd + 2 kvd + I) = 448
// and the probabilities' low halves 2 H T T = 64.
static void test_window_bytes(void) {
    Config c;
    memset(&c, 0, sizeof(c));
    c.hidden_size = 8, c.intermediate_size = 16, c.num_heads = 2, c.num_kv_heads = 1, c.head_dim = 4;
    c.num_layers = 1, c.vocab_size = 32;
    c.fam = arch_find("qwen3");
    double plain = merge_window_bytes(&c, 4, 0, 0), split = merge_window_bytes(&c, 4, 1, 0);
    CHECK(plain == 3712 && split == 3712 + 512, "merge_plan_window_bytes",
          "plain %g split %g (want 3712, 4224)", plain, split);
}

int main(void) {
    test_fits();
    test_tight();
    test_waves();
    test_older();
    test_window_bytes();
    return g_fail ? 1 : 0;
}

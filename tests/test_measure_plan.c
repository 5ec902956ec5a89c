// The measurement planner (scoring/measure_plan.c): eval --recipe / --format and search --verify on the CUDA
// engine, resident or with streamed layers (README "Streaming"), on byte counts small enough to count by hand,
// and on the committed MoE fixture's config.
#include <math.h>
#include <string.h>

#include "check.h"
#include "engine/model.h"
#include "scoring/measure_plan.h"
#include "scoring/shard_plan.h"

static void test_batch(void) {
    CHECK(measure_batch(64, 512, 4) == 4, "measure_batch_all_windows", "got %d", measure_batch(64, 512, 4));
    // 8192 / 256 = 32 windows, but their logits of 151936 entries pass 2 GiB above 13
    CHECK(measure_batch(256, 151936, 100) == 13, "measure_batch_logits_2gib", "got %d",
          measure_batch(256, 151936, 100));
    CHECK(measure_batch(8192, 512, 9) == 1 && measure_batch(16384, 512, 9) == 1, "measure_batch_one_window",
          "got %d %d", measure_batch(8192, 512, 9), measure_batch(16384, 512, 9));
}

static StreamSpec hand(const double* layers) {
    StreamSpec s;
    memset(&s, 0, sizeof(s));
    s.L = 4;
    s.layer_bytes = layers;
    s.fixed_bytes = 50;
    s.state_bytes = 10;
    s.batches = 1;
    return s;
}

static void test_spec(void) {
    static const double layers[4] = {100, 100, 100, 100}, extra[4] = {300, 0, 0, 0};
    StreamSpec s = hand(layers);
    // resident: 50 fixed + 3 more + 11 table + 400 layers + 300 extra + 1000 held
    double res = measure_spec(&s, extra, 7, 3, 11, 1000);
    CHECK(res == 1764, "measure_spec_resident_bytes", "got %g", res);
    // the largest layer with its extra is 400: slots of 100 + 300 need nothing beyond it; fixed 50 + 3 + 7
    CHECK(s.fixed_bytes == 60 && s.layer_bytes[0] == 400 && s.layer_bytes[1] == 100,
          "measure_spec_extra_follows_its_layer", "fixed %g layer0 %g", s.fixed_bytes, s.layer_bytes[0]);
    CHECK(s.n_births == 1 && s.birth_layer[0] == 0 && stream_states_after(&s, 3) == 2 && s.no_spill &&
              !s.gradient,
          "measure_spec_two_states", "births %d states %d", s.n_births, stream_states_after(&s, 3));
    // streamed: 60 + two slots of 400 + two states of 10 = 880 at the least
    s.cap = 879;
    StreamPlan p;
    int ok = stream_plan(&s, &p);
    CHECK(!ok && p.gpu_bytes == 880, "measure_spec_refused_names_need", "ok %d need %g", ok, p.gpu_bytes);
    stream_plan_free(&p);
    s.cap = 880;
    ok = stream_plan(&s, &p);
    CHECK(ok && p.streamed && p.k == 1 && p.n_resident == 0 && p.gpu_bytes == 880,
          "measure_spec_streams_at_need", "ok %d k %d resident %d bytes %g", ok, p.k, p.n_resident,
          p.gpu_bytes);
    stream_plan_free(&p);
    measure_spec_free(&s);
    // the largest extra (300, layer 3) and the largest layer (200, layer 1) apart: the extra slots count beyond
    static const double l2[4] = {100, 200, 100, 100}, x2[4] = {0, 0, 0, 300};
    StreamSpec t = hand(l2);
    measure_spec(&t, x2, 0, 0, 0, 0);
    // slots of the largest layer with its extra (400) twice, plus 2 x (200 + 300 - 400)
    CHECK(t.fixed_bytes == 250, "measure_spec_extra_slots_apart", "fixed %g", t.fixed_bytes);
    measure_spec_free(&t);
}

static void test_model(void) {
    const char* dir = "tests/fixtures/qwen3-moe-tiny";
    Model m;
    model_open(&m, dir);
    int L = m.c.num_layers;
    double extra[64];
    for (int l = 0; l < L; l++) extra[l] = 2 * shard_layer_bytes(&m.c, l); // every linear's fp32 weight
    MeasurePlan p;
    int ok = measure_plan(&p, &m.c, extra, 64, 4, 0, 1e12, 0, 0);
    CHECK(ok && !p.streamed && p.B == 4 && p.resident > 0, "measure_plan_resident_when_it_fits",
          "ok %d streamed %d B %d", ok, p.streamed, p.B);
    double res = p.resident;
    measure_plan_free(&p);
    ok = measure_plan(&p, &m.c, extra, 64, 4, 0, res - 1, 0, 0);
    CHECK(ok && p.streamed && p.B == 4 && p.sp.gpu_bytes <= res - 1, "measure_plan_streams_one_byte_short",
          "ok %d streamed %d B %d bytes %g cap %g", ok, p.streamed, p.B, p.sp.gpu_bytes, res - 1);
    measure_plan_free(&p);
    ok = measure_plan(&p, &m.c, extra, 64, 4, 0, 1e12, 1, 2);
    CHECK(ok && p.streamed && p.sp.k == 1 && p.sp.n_resident == L,
          "measure_plan_forced_streams_resident_layers", "ok %d streamed %d k %d resident %d", ok, p.streamed,
          p.sp.k, p.sp.n_resident);
    measure_plan_free(&p);
    ok = measure_plan(&p, &m.c, extra, 64, 4, 0, 1e6, 0, 0);
    double need = p.need;
    CHECK(!ok && need > 1e6, "measure_plan_refused_names_need", "ok %d need %g", ok, need);
    measure_plan_free(&p);
    ok = measure_plan(&p, &m.c, extra, 64, 4, 0, need, 0, 0);
    CHECK(ok && p.streamed && p.B == 1 && p.sp.n_resident == 0, "measure_plan_streams_at_need",
          "ok %d streamed %d B %d resident %d", ok, p.streamed, p.B, p.sp.n_resident);
    measure_plan_free(&p);
    ok = measure_plan(&p, &m.c, extra, 64, 4, 2, 1e12, 1, 0); // AUTOQ_MEASURE_BATCH=2
    CHECK(ok && p.B == 2, "measure_plan_given_batch", "ok %d B %d", ok, p.B);
    measure_plan_free(&p);
    model_free(&m);
}

// The plans tests/test_gpu_measure.sh asks of each model it measures on a GPU (there: the recipe's fp32
// weights, here every linear's, and none): one byte under the resident plan streams at the resident engine
// batch (its 1e-9 comparison needs the same batch); the refusal's smallest plan (printed rounded up) streams
// every layer at one window per engine batch; a third of the way from it to the resident plan holds two
// engine batches per streamed batch.
static void test_gpu_measure_caps(const char* dir, int T, int n) {
    char name[600];
    snprintf(name, sizeof(name), "measure_plan_caps %s", dir);
    if (!model_present(dir, name)) return;
    Model m;
    model_open(&m, dir);
    double extra[64];
    for (int x = 0; x <= 2; x += 2) {
        for (int l = 0; l < m.c.num_layers; l++) extra[l] = x * shard_layer_bytes(&m.c, l);
        MeasurePlan p;
        measure_plan(&p, &m.c, extra, T, n, 0, 1e15, 0, 0);
        int B = p.B;
        double hi = ceil(p.resident);
        measure_plan_free(&p);
        int ok = measure_plan(&p, &m.c, extra, T, n, 0, hi - 1, 0, 0);
        snprintf(name, sizeof(name), "measure_plan_one_byte_short_same_batch %s extra x%d", dir, x);
        CHECK(ok && p.streamed && p.B == B, name, "ok %d streamed %d B %d (resident %d)", ok, p.streamed, p.B,
              B);
        measure_plan_free(&p);
        ok = measure_plan(&p, &m.c, extra, T, n, 0, 1, 0, 0);
        double lo = ceil(p.need);
        measure_plan_free(&p);
        ok = !ok && measure_plan(&p, &m.c, extra, T, n, 1, lo, 1, 0);
        snprintf(name, sizeof(name), "measure_plan_min_streams_every_layer %s extra x%d", dir, x);
        CHECK(ok && p.streamed && p.B == 1 && p.sp.n_resident == 0 && lo < hi, name,
              "ok %d B %d resident %d lo %g hi %g", ok, p.B, p.sp.n_resident, lo, hi);
        measure_plan_free(&p);
        ok = measure_plan(&p, &m.c, extra, T, n, 1, lo + floor((hi - lo) / 3), 1, 2);
        snprintf(name, sizeof(name), "measure_plan_mid_two_batches %s extra x%d", dir, x);
        CHECK(ok && p.streamed && p.B == 1 && p.sp.k == 2, name, "ok %d B %d k %d", ok, p.B, p.sp.k);
        measure_plan_free(&p);
    }
    model_free(&m);
}

int main(void) {
    test_batch();
    test_spec();
    test_model();
    // test_gpu_measure.sh's models, windows of T tokens, n windows
    test_gpu_measure_caps("tests/fixtures/qwen3-moe-tiny", 64, 3);
    test_gpu_measure_caps("tests/fixtures/qwen3_5-tiny", 24, 2);
    const char* tiny = getenv("AUTOQ_TINY");
    char dir[512];
    snprintf(dir, sizeof(dir), "%s", tiny ? tiny : "../shared/models/qwen3-tiny");
    test_gpu_measure_caps(dir, 256, 4);
    return g_fail ? 1 : 0;
}

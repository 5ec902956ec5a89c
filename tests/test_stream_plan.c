// The streaming planner (scoring/stream_plan.c): resident or streamed layers, the spill accounting of
// in-flight states, and the batch choice, on byte counts small enough to count by hand.
#include <math.h>
#include <string.h>

#include "check.h"
#include "engine/gpu_stream.h"
#include "scoring/shard_plan.h"
#include "scoring/stream_plan.h"

#define NL 4
static const double k_layer[NL] = {100, 100, 100, 100};
// kl: 2 groups at layer 0, 1 at layer 2 (one format): after layers 0..3 there are 3, 3, 4, 4 states
static const int k_birth[3] = {0, 0, 2};

static StreamSpec spec(double cap, int gradient) {
    StreamSpec s;
    memset(&s, 0, sizeof(s));
    s.L = NL;
    s.layer_bytes = k_layer;
    s.fixed_bytes = 50;
    s.batch_bytes = 20;
    s.state_bytes = 10;
    s.cap = cap;
    s.gradient = gradient;
    s.n_births = gradient ? 0 : 3;
    s.birth_layer = k_birth;
    s.batches = 8;
    return s;
}

static void test_states(void) {
    StreamSpec s = spec(1e9, 0);
    int want[NL] = {3, 3, 4, 4}, ok = 1;
    for (int l = 0; l < NL; l++) ok &= stream_states_after(&s, l) == want[l];
    CHECK(ok, "stream_plan_states_after", "births per layer miscounted");
}

static void test_resident(void) {
    // 50 fixed + 20 batch + 400 layers + 4 states x 10 = 510
    StreamSpec s = spec(510, 0);
    StreamPlan p;
    int ok = stream_plan(&s, &p);
    CHECK(ok && !p.streamed && p.n_resident == NL && p.gpu_bytes == 510 && p.total_h2d == 400,
          "stream_plan_resident_when_it_fits", "ok %d streamed %d resident %d bytes %g h2d %g", ok, p.streamed,
          p.n_resident, p.gpu_bytes, p.total_h2d);
    stream_plan_free(&p);
    s.cap = 509;
    ok = stream_plan(&s, &p);
    CHECK(ok && p.streamed, "stream_plan_streams_one_byte_short", "ok %d streamed %d", ok, p.streamed);
    stream_plan_free(&p);
}

static void test_spill_kl(void) {
    StreamSpec s = spec(1e9, 0);
    // k = 2 batches: 6, 6, 8, 8 states after each layer; 5 on the GPU: 1 + 1 + 3 + 3 spilled x 10 bytes
    CHECK(stream_spill_bytes(&s, 2, 5) == 80, "stream_plan_spill_kl", "got %g", stream_spill_bytes(&s, 2, 5));
    CHECK(stream_spill_bytes(&s, 2, 8) == 0, "stream_plan_no_spill_when_all_fit", "got %g",
          stream_spill_bytes(&s, 2, 8));
    StreamSpec g = spec(1e9, 1); // gradient: k (L + 2) = 12 states for k = 2; 5 on the GPU
    CHECK(stream_spill_bytes(&g, 2, 5) == 70, "stream_plan_spill_gradient", "got %g",
          stream_spill_bytes(&g, 2, 5));
}

static void test_streamed_layout(void) {
    // cap 330: 50 + 20 + 2 slots x 100 = 270; room 60: 4 states (the kl peak of k = 1) + 20 left: no
    // layer resident; without estimates the batch is the most that spill nothing: k = 1 (k = 2 needs 8)
    StreamSpec s = spec(330, 0);
    StreamPlan p;
    int ok = stream_plan(&s, &p);
    CHECK(ok && p.streamed && p.k == 1 && p.states_gpu == 4 && p.states_spilled == 0 && p.n_resident == 0 &&
              p.gpu_bytes == 310 && p.weight_h2d == 400 && p.spill_h2d == 0 && p.total_h2d == 8 * 400,
          "stream_plan_streamed_layout",
          "ok %d k %d gpu %d spilled %d resident %d bytes %g w %g spill %g total %g", ok, p.k, p.states_gpu,
          p.states_spilled, p.n_resident, p.gpu_bytes, p.weight_h2d, p.spill_h2d, p.total_h2d);
    stream_plan_free(&p);
    // cap 450: room 180 -> with k = 2 (8 states, 80) 100 left: one layer resident; k = 4 (16 states) 20 left
    s.cap = 450;
    ok = stream_plan(&s, &p);
    CHECK(ok && p.k == 4 && p.states_gpu == 16 && p.n_resident == 0, "stream_plan_batch_fills_memory",
          "k %d gpu %d resident %d", p.k, p.states_gpu, p.n_resident);
    stream_plan_free(&p);
    // no spills (AUTOQ_STREAM_SPILL=0): cap 300 holds 3 states but not the 4 of k = 1: nothing works, and the
    // size the refusal names is the one that works (270 + 4 states), not the spilling plan's 3 states
    s.cap = 300;
    s.no_spill = 1;
    ok = stream_plan(&s, &p);
    CHECK(!ok && p.gpu_bytes == 310, "stream_plan_no_spill_refuses", "ok %d needs %g (want 310)", ok,
          p.gpu_bytes);
    double named = p.gpu_bytes;
    stream_plan_free(&p);
    s.cap = named;
    ok = stream_plan(&s, &p);
    CHECK(ok && p.streamed && p.k == 1 && p.states_spilled == 0 && p.gpu_bytes <= named,
          "stream_plan_no_spill_fits_the_named_size", "ok %d k %d spilled %d bytes %g", ok, p.k,
          p.states_spilled, p.gpu_bytes);
    stream_plan_free(&p);
    s.cap = 1; // the refusal of a tiny cap names the same size
    ok = stream_plan(&s, &p);
    CHECK(!ok && p.gpu_bytes == 310, "stream_plan_no_spill_names_its_size", "ok %d needs %g", ok, p.gpu_bytes);
    stream_plan_free(&p);
    s.no_spill = 0;
    // cap 280: room 10 < 3 states: nothing works
    s.cap = 280;
    ok = stream_plan(&s, &p);
    CHECK(!ok && p.gpu_bytes == 300, "stream_plan_too_small", "ok %d needs %g", ok, p.gpu_bytes);
    stream_plan_free(&p);
}

// The ring of spilled states (score_stream.cu): kl's order of use with one engine batch, two states on the
// GPU and 3 passes born at layers 0, 0, 1 (states 1, 2, 3; 2 and 3 spilled), replayed: each release must free
// the slot its use took. State 2, the one spilled state alive at layer 0, is used last at layer 0 and again
// first at layer 1, the second time in the other slot; a lookup that took the first slot holding the state's
// number (the old one) freed the stale slot.
static void test_ring(void) {
    StreamRing r;
    stream_ring_init(&r);
    int births[3] = {0, 0, 1}, n_gpu = 2, ok = 1, bad = -1, uses = 0;
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < 1 + 3; i++) { // the reference (state 0), then pass p as state 1 + p
            if (i > 0 && births[i - 1] > l) break;
            if (i < n_gpu) continue;
            int took = stream_ring_take(&r, i), gave = stream_ring_give(&r, i);
            if (took < 0 || gave != took) ok = 0, bad = uses;
            uses++;
        }
    CHECK(ok && uses == 3, "stream_ring_same_state_twice", "use %d of %d freed another slot", bad, uses);
    // two at once (the gradient's running state and a kept input), released in either order; a third is refused
    stream_ring_init(&r);
    int a = stream_ring_take(&r, 5), b = stream_ring_take(&r, 6), c = stream_ring_take(&r, 7);
    int gb = stream_ring_give(&r, 6), ga = stream_ring_give(&r, 5), none = stream_ring_give(&r, 5);
    CHECK(a == 0 && b == 1 && c == -1 && gb == 1 && ga == 0 && none == -1, "stream_ring_two_in_use",
          "took %d %d %d gave %d %d %d", a, b, c, gb, ga, none);
    // the next take after a release alternates from the last one taken, so loads and compute overlap
    stream_ring_init(&r);
    int s0 = stream_ring_take(&r, 3);
    stream_ring_give(&r, 3);
    int s1 = stream_ring_take(&r, 4);
    CHECK(s0 == 0 && s1 == 1, "stream_ring_alternates", "slots %d then %d", s0, s1);
}

static void test_batch_choice(void) {
    // 400 weight bytes at 100 B/s: 4 s per streamed batch (kl); 1 s of compute per engine batch, so k = 4
    // hides the copies; the cap keeps every state on the GPU up to k = 4 (16 states)
    StreamSpec s = spec(50 + 20 + 200 + 160, 0);
    s.h2d_bw = 100;
    s.batch_compute_s = 1;
    StreamPlan p;
    stream_plan(&s, &p);
    CHECK(p.k == 4 && p.copy_s == 4 && p.comp_s == 4, "stream_plan_batch_hides_copies", "k %d copy %g comp %g",
          p.k, p.copy_s, p.comp_s);
    stream_plan_free(&p);
    // the gradient walks the layers twice: 800 bytes, 8 s; k = 8 would hide them but only 16 states fit
    // (k = 1 needs L + 2 = 6): k = 2 keeps 12 on the GPU; k = 8 spills 48 - 16 = 32 states, 320 bytes:
    // 11.2 s / 8 = 1.4 s per engine batch, against 8 s / 2 = 4 at k = 2
    StreamSpec g = spec(50 + 20 + 200 + 160, 1);
    g.h2d_bw = 100;
    g.batch_compute_s = 1;
    stream_plan(&g, &p);
    CHECK(p.k == 8 && p.states_gpu == 16 && fabs(p.spill_h2d - 320) < 1e-9,
          "stream_plan_batch_spills_when_faster", "k %d gpu %d spill %g", p.k, p.states_gpu, p.spill_h2d);
    stream_plan_free(&p);
    // a forced batch, when it fits
    StreamSpec h = spec(50 + 20 + 200 + 160, 0);
    h.k_force = 3;
    stream_plan(&h, &p);
    CHECK(p.k == 3 && p.states_gpu == 12, "stream_plan_forced_batch", "k %d gpu %d", p.k, p.states_gpu);
    stream_plan_free(&p);
    // forced streaming keeps layers resident with the memory left
    StreamSpec f = spec(1e9, 0);
    f.force = 1;
    f.batches = 1;
    stream_plan(&f, &p);
    CHECK(p.streamed && p.n_resident == NL && p.weight_h2d == 0, "stream_plan_force_keeps_resident",
          "streamed %d resident %d", p.streamed, p.n_resident);
    stream_plan_free(&p);
}

// A layer slot's alignment (slot_pad) counts twice in a streamed plan (two slots), never in a resident one.
static void test_slot_pad(void) {
    StreamSpec s = spec(330, 0);
    s.slot_pad = 5; // 50 + 20 + 2 x (100 + 5) = 280; room 50: 4 states, 10 left
    StreamPlan p;
    int ok = stream_plan(&s, &p);
    CHECK(ok && p.streamed && p.states_gpu == 4 && p.n_resident == 0 && p.gpu_bytes == 320,
          "stream_plan_slot_pad", "ok %d streamed %d gpu %d resident %d bytes %g", ok, p.streamed, p.states_gpu,
          p.n_resident, p.gpu_bytes);
    stream_plan_free(&p);
    s.cap = 510; // the resident plan (510 bytes) holds no slot
    ok = stream_plan(&s, &p);
    CHECK(ok && !p.streamed && p.gpu_bytes == 510, "stream_plan_slot_pad_resident", "streamed %d bytes %g",
          p.streamed, p.gpu_bytes);
    stream_plan_free(&p);
}

static void test_sizes(void) {
    CHECK(stream_parse_size("16GiB") == 16.0 * (1 << 30) && stream_parse_size("4G") == 4e9 &&
              stream_parse_size("512MiB") == 512.0 * (1 << 20) && stream_parse_size("1000") == 1000 &&
              stream_parse_size("2kb") == 2000 && stream_parse_size("1.5GiB") == 1.5 * (1 << 30),
          "stream_parse_size", "sizes misread");
    CHECK(stream_parse_size("GiB") < 0 && stream_parse_size("4 GiB") < 0 && stream_parse_size("4XB") < 0 &&
              stream_parse_size("-4G") < 0 && stream_parse_size("") < 0,
          "stream_parse_size_bad", "a malformed size accepted");
}

// A checkpoint tensor's bytes as the GPU engine holds it, from its safetensors header alone: bf16, but fp32 for
// the Gated DeltaNet's conv1d, A_log, dt_bias and gated norm (README §3: its kernels read them as fp32).
static double header_bytes(const StTensor* t) {
    static const char* f32[] = {"linear_attn.conv1d.weight", "linear_attn.A_log", "linear_attn.dt_bias",
                                "linear_attn.norm.weight"};
    double n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (double)t->shape[d];
    size_t len = strlen(t->name);
    for (int i = 0; i < 4; i++)
        if (len >= strlen(f32[i]) && !strcmp(t->name + len - strlen(f32[i]), f32[i])) return 4 * n;
    return 2 * n;
}

static double align_up(double b) { return ceil(b / GPU_SLOT_ALIGN) * GPU_SLOT_ALIGN; }

// The planner's layer sizes (the spec's, from the config through the architecture table) against each layer's
// tensors in the checkpoint's safetensors headers (header_bytes): equal, on the dense model, the MoE fixture
// (its dense layer 1 among sparse ones) and the three hybrid fixtures (Gated DeltaNet and gated attention
// layers; Qwen3-Next's fused projections; shared experts and their gates; a dense layer among sparse ones);
// stream_layer_bytes (the count of bytes copied) equal too; and a layer slot (the largest layer plus the
// spec's slot_pad) holds every layer as the slots lay it out, each tensor at a multiple of GPU_SLOT_ALIGN
// (counted here with q, k, v apart: an upper bound), the routed experts in two buffers.
static void check_layer_bytes(const char* name, const char* dir) {
    if (!model_present(dir, name)) return;
    Model m;
    model_open(&m, dir);
    Groups none;
    memset(&none, 0, sizeof(none));
    StreamSpec s;
    stream_spec_model(&s, &m.c, &none, NULL, 0, 0, 16, 1, 1, 1e12, 1, 0);
    double most = 0;
    for (int l = 0; l < m.c.num_layers; l++) most = s.layer_bytes[l] > most ? s.layer_bytes[l] : most;
    int ok = 1, bad = -1, n_gdn = 0;
    double want_bad = 0, carve_bad = 0;
    for (int l = 0; l < m.c.num_layers; l++) {
        char pre[64];
        snprintf(pre, sizeof(pre), "%slayers.%d.", m.c.prefix, l);
        double want = 0, carve = 0, experts = 0;
        for (int i = 0; i < m.ck.n; i++) {
            const StTensor* t = &m.ck.t[i];
            if (strncmp(t->name, pre, strlen(pre))) continue;
            double b = header_bytes(t);
            want += b;
            if (strstr(t->name, ".mlp.experts."))
                experts += b;
            else
                carve += align_up(b);
        }
        if (experts > 0) carve += experts + 2 * GPU_SLOT_ALIGN;
        n_gdn += m.c.linear[l];
        if (s.layer_bytes[l] != want || stream_layer_bytes(&m, l) != want || carve > most + s.slot_pad)
            ok = 0, bad = l, want_bad = want, carve_bad = carve;
    }
    CHECK(ok && (strstr(name, "hybrid") == NULL || n_gdn > 0), name,
          "layer %d: headers %g bytes, planner %g, stream_layer_bytes %g; laid out %g in a slot of %g (%d GDN "
          "layers)",
          bad, want_bad, bad < 0 ? 0 : s.layer_bytes[bad], bad < 0 ? 0 : stream_layer_bytes(&m, bad), carve_bad,
          most + s.slot_pad, n_gdn);
    stream_spec_free(&s);
    model_free(&m);
}

// The bf16 hi + lo mode's and the emulated formats' buffers: counted into the fixed bytes, by hand on a
// small shape.
static void test_mode_bytes(void) {
    Config c;
    memset(&c, 0, sizeof(c));
    c.hidden_size = 8, c.intermediate_size = 16, c.num_heads = 2, c.num_kv_heads = 1, c.head_dim = 4;
    c.num_layers = 1, c.vocab_size = 32;
    c.fam = arch_find("qwen3"); // the layer bytes come from the family's tensors (README "Several GPUs")
    int T = 4, B = 2;           // M = 8: lo halves 2 x 8 x (16 + 16 + 8 + 16) = 896, P_lo 2 x 2 x 2 x 16 = 128
    double split = stream_mode_bytes(&c, T, B, 1, 0), emu = stream_mode_bytes(&c, T, B, 0, 1);
    double want_emu = 2 * shard_layer_bytes(&c, 0) + 8 * 8 * 16;
    CHECK(split == 1024 && emu == want_emu && stream_mode_bytes(&c, T, B, 0, 0) == 0 &&
              stream_mode_bytes(&c, T, B, 1, 1) == split + emu,
          "stream_plan_mode_bytes", "split %g emu %g (want 1024, %g)", split, emu, want_emu);
}

// kl's passes in birth order: by layer, group-major within a layer, the disabled groups and the formats that
// do not fit a group (a KV-cache format on a linear, a linear's format on a KV cache) left out.
static void test_kl_passes(void) {
    Group g[4] = {{.layer = 1}, {.layer = 0}, {.layer = 0, .kv = 1}, {.layer = 0, .disabled = 1}};
    Groups gs = {.n = 4, .g = g};
    Format f[2] = {{.kv = 0}, {.kv = 1}};
    int order[2 * 8], birth[8];
    int n = stream_kl_passes(&gs, f, 2, 2, order, birth);
    int want[] = {0, 1, 1, 2, 0, 0}, wbirth[] = {0, 0, 1};
    CHECK(n == 3 && !memcmp(order, want, sizeof(want)) && !memcmp(birth, wbirth, sizeof(wbirth)),
          "stream_kl_passes_birth_order", "n %d: (%d %d) (%d %d) (%d %d), births %d %d %d", n, order[0],
          order[1], order[2], order[3], order[4], order[5], birth[0], birth[1], birth[2]);
}

// The planner's kl states count the passes the scorers run (stream_kl_passes), not every (format, enabled
// group) pair: with a linear format and a KV-cache format on two linears and a KV-cache group, 3 births, not 6;
// the gradient has none.
static void test_spec_births(void) {
    static Config c; // a committed fixture's config (the layer sizes do not matter here)
    config_load(&c, "tests/fixtures/qwen3-moe-tiny");
    Group g[3] = {{.layer = 0}, {.layer = 1}, {.layer = 1, .kv = 1}};
    Groups gs = {.n = 3, .g = g};
    Format f[2] = {{.kv = 0}, {.kv = 1}};
    StreamSpec kl, gr;
    stream_spec_model(&kl, &c, &gs, f, 2, 0, 16, 1, 1, 1e12, 0, 0);
    stream_spec_model(&gr, &c, &gs, f, 2, 1, 16, 1, 1, 1e12, 0, 0);
    CHECK(kl.n_births == 3 && kl.birth_layer[0] == 0 && kl.birth_layer[1] == 1 && kl.birth_layer[2] == 1 &&
              stream_states_after(&kl, 1) == 4 && gr.n_births == 0,
          "stream_spec_model_births_fit",
          "kl births %d (layers %d %d %d), states after layer 1: %d; gradient %d", kl.n_births,
          kl.birth_layer[0], kl.n_births > 1 ? kl.birth_layer[1] : -1, kl.n_births > 2 ? kl.birth_layer[2] : -1,
          stream_states_after(&kl, 1), gr.n_births);
    stream_spec_free(&kl);
    stream_spec_free(&gr);
}

int main(void) {
    test_states();
    test_resident();
    test_spill_kl();
    test_streamed_layout();
    test_batch_choice();
    test_ring();
    test_sizes();
    test_slot_pad();
    test_mode_bytes();
    test_kl_passes();
    test_spec_births();
    const char* tiny = getenv("AUTOQ_TINY");
    check_layer_bytes("stream_plan_layer_bytes_dense", tiny ? tiny : "../shared/models/qwen3-tiny");
    check_layer_bytes("stream_plan_layer_bytes_moe", "tests/fixtures/qwen3-moe-tiny");
    check_layer_bytes("stream_plan_layer_bytes_hybrid_qwen3_5", "tests/fixtures/qwen3_5-tiny");
    check_layer_bytes("stream_plan_layer_bytes_hybrid_qwen3_5_moe", "tests/fixtures/qwen3_5-moe-tiny");
    check_layer_bytes("stream_plan_layer_bytes_hybrid_qwen3_next", "tests/fixtures/qwen3-next-tiny");
    return g_fail ? 1 : 0;
}

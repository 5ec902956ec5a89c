// The kl score in layer-major order (AUTOQ_KL_ORDER=layer-major, the order a streamed run needs) gives the
// group-major scores: within 1e-12 relative (fp64 sums; bit-identical on one machine, the same arithmetic
// per pass), on a dense, a mixture-of-experts and a hybrid (Gated DeltaNet) model, two formats at once.
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "groups_setup.h"
#include "datasets/npy.h"
#include "engine/util.h"
#include "scoring/score.h"

static double* score_order(const Model* m, const Groups* gs, const Format* f, int nf, const TokenIds* ids,
                           int n, const char* order, long* tokens) {
    setenv("AUTOQ_KL_ORDER", order, 1);
    Scorer s;
    int T = ids->t < 32 ? ids->t : 32; // the windows' first 32 tokens: a quick test
    scorer_init(&s, m, gs, f, nf, METHOD_KL, T);
    s.expert_tokens = tokens;
    double* score = xcalloc((size_t)nf * gs->n, sizeof(double));
    for (int i = 0; i < n; i++) scorer_add_sample(&s, ids->ids + (long)i * ids->t, score);
    scorer_free(&s);
    return score;
}

static void check_model(const char* name, const char* dir, const char* ids_path, int n) {
    if (!model_present(dir, name)) return;
    Model m;
    model_load(&m, dir);
    TokenIds ids;
    npy_read_ids(&ids, ids_path, m.c.vocab_size);
    if (n > ids.n) n = ids.n;
    Groups gs;
    Format f[2];
    groups_w4a8(&gs, &f[0], &m);
    format_load(&f[1], "configs/formats/w4a16.json", 0);
    long ne = (long)m.c.n_sparse * m.c.num_experts;
    long *t0 = xcalloc(ne + 1, sizeof(long)), *t1 = xcalloc(ne + 1, sizeof(long));
    double c0 = time_now();
    double* a = score_order(&m, &gs, f, 2, &ids, n, "group-major", ne ? t0 : NULL);
    double c1 = time_now();
    double* b = score_order(&m, &gs, f, 2, &ids, n, "layer-major", ne ? t1 : NULL);
    printf("# %s: group-major %.2fs, layer-major %.2fs\n", name, c1 - c0, time_now() - c1);
    double worst = 0;
    int nonzero = 0;
    for (int k = 0; k < 2 * gs.n; k++) {
        worst = fmax(worst, rel_diff(a[k], b[k]));
        nonzero += a[k] > 0;
    }
    CHECK(worst <= 1e-12 && nonzero > 0 && !memcmp(t0, t1, sizeof(long) * ne), name,
          "worst relative difference %g over %d scores (%d nonzero)", worst, 2 * gs.n, nonzero);
    free(a), free(b), free(t0), free(t1);
    unsetenv("AUTOQ_KL_ORDER");
    token_ids_free(&ids);
    groups_free(&gs);
    model_free(&m);
}

int main(void) {
    check_model("kl_layer_major_dense", "../shared/models/qwen3-tiny", "tests/fixtures/qwen3_tiny_ids.npy", 1);
    check_model("kl_layer_major_moe", "tests/fixtures/qwen3-moe-tiny", "tests/fixtures/qwen3_moe_tiny_ids.npy",
                3);
    check_model("kl_layer_major_hybrid", "tests/fixtures/qwen3_5-tiny", "tests/fixtures/qwen3_5_tiny_ids.npy",
                2);
    setenv("AUTOQ_KL_ORDER", "group-major", 1);
    CHECK(kl_order_layer_major() == 0, "kl_order_default", "group-major read as layer-major");
    return g_fail ? 1 : 0;
}

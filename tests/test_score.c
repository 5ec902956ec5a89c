// Per-group KL and gradient scores on qwen3-tiny (8 x 256) against the
// PyTorch reference of tests/ref/make_refs.py: 1% per group, Spearman >= 0.99.
#include <jansson.h>
#include <string.h>

#include "check.h"
#include "groups_setup.h"
#include "datasets/npy.h"
#include "engine/util.h"
#include "scoring/score.h"

static double spearman(const double* a, const double* b, int n) {
    double* ra = xmalloc(sizeof(double) * n);
    double* rb = xmalloc(sizeof(double) * n);
    for (int i = 0; i < n; i++) {
        int ca = 0, cb = 0;
        for (int j = 0; j < n; j++) ca += a[j] < a[i], cb += b[j] < b[i];
        ra[i] = ca, rb[i] = cb;
    }
    double m = (n - 1) / 2.0, cov = 0, va = 0, vb = 0;
    for (int i = 0; i < n; i++)
        cov += (ra[i] - m) * (rb[i] - m), va += (ra[i] - m) * (ra[i] - m), vb += (rb[i] - m) * (rb[i] - m);
    free(ra);
    free(rb);
    return cov / sqrt(va * vb);
}

int main(void) {
    const char* dir = "../shared/models/qwen3-tiny";
    if (!file_exists("../shared/models/qwen3-tiny/config.json")) {
        SKIP("scores vs PyTorch", "../shared/models/qwen3-tiny missing");
        return 0;
    }
    json_error_t err;
    json_t* ref = json_load_file("tests/fixtures/qwen3_tiny_scores_ref.json", 0, &err);
    Model m;
    model_load(&m, dir);
    TokenIds ids;
    npy_read_ids(&ids, "tests/fixtures/qwen3_tiny_ids.npy", m.c.vocab_size);
    Groups gs;
    Format f;
    groups_w4a8(&gs, &f, &m);
    Method methods[2] = {METHOD_KL, METHOD_GRADIENT};
    const char* keys[2] = {"kl", "gradient"};
    for (int k = 0; k < 2; k++) {
        Scorer s;
        scorer_init(&s, &m, &gs, &f, 1, methods[k], ids.t);
        double* score = xcalloc(gs.n, sizeof(double));
        for (int i = 0; i < ids.n; i++) scorer_add_sample(&s, ids.ids + (long)i * ids.t, score);
        json_t* r = json_object_get(ref, keys[k]);
        double* want = xmalloc(sizeof(double) * gs.n);
        double worst = 0;
        for (int g = 0; g < gs.n; g++) {
            want[g] = json_number_value(json_object_get(r, gs.g[g].name));
            worst = fmax(worst, rel_diff(score[g], want[g]));
        }
        double rho = spearman(score, want, gs.n);
        char name[128];
        snprintf(name, sizeof(name), "%s scores within 1%% of PyTorch per group", keys[k]);
        CHECK(worst <= 0.01, name, "worst relative difference %.3g", worst);
        snprintf(name, sizeof(name), "%s rank correlation with PyTorch >= 0.99", keys[k]);
        CHECK(rho >= 0.99, name, "Spearman %.4f", rho);
        printf("  %s: worst rel diff %.2e, Spearman %.4f\n", keys[k], worst, rho);
        if (methods[k] == METHOD_KL) {
            Work w = {0, 0};
            work_add(&w, &m, &gs, 1, METHOD_KL, ids.n, 0);
            snprintf(name, sizeof(name), "kl prefix reuse saves forward passes");
            CHECK(w.forward_equiv < 0.6 * w.naive_equiv, name, "%.1f of %.1f", w.forward_equiv, w.naive_equiv);
        }
        free(want);
        free(score);
        scorer_free(&s);
    }
    groups_free(&gs);
    token_ids_free(&ids);
    model_free(&m);
    json_decref(ref);
    return g_fail ? 1 : 0;
}

// Mixture-of-experts layers against transformers (tests/ref/make_moe_refs.py): the forward (NLL
// within 1e-5 relative, logits within 1e-3), per-group kl and gradient scores within 1%, the tokens
// routed to each expert exactly, and finite-difference checks of the routing and of the backward
// through sparse layers (router path included).
#include <jansson.h>
#include <string.h>

#include "check.h"
#include "groups_setup.h"
#include "datasets/npy.h"
#include "engine/util.h"
#include "scoring/score.h"

typedef struct {
    const char* label;
    const char* dir;
    const char* ids;
    const char* ref;
    const char* logits;
} Fixture;

static const Fixture k_fix[] = {
    {"qwen3-moe-tiny", "tests/fixtures/qwen3-moe-tiny", "tests/fixtures/qwen3_moe_tiny_ids.npy",
     "tests/fixtures/qwen3_moe_tiny_ref.json", "tests/fixtures/qwen3_moe_tiny_logits.npy"},
    {"qwen3-vl-moe-tiny", "tests/fixtures/qwen3-vl-moe-tiny", "tests/fixtures/qwen3_vl_moe_tiny_ids.npy",
     "tests/fixtures/qwen3_vl_moe_tiny_ref.json", "tests/fixtures/qwen3_vl_moe_tiny_logits.npy"},
};

// The reference .npy is float32 [rows, V] (numpy writes a 128-byte header): its last rows*V floats.
static float* read_ref_logits(const char* path, size_t n) {
    size_t len;
    char* buf = read_file(path, &len);
    float* out = NULL;
    if (buf && len >= n * 4) {
        out = xmalloc(n * 4);
        memcpy(out, buf + len - n * 4, n * 4);
    }
    free(buf);
    return out;
}

static void check_forward(const Fixture* f, const Model* m, const TokenIds* ids, json_t* ref) {
    int V = m->c.vocab_size;
    json_t* rows = json_object_get(ref, "logit_rows");
    size_t nrows = json_array_size(rows);
    float* want = read_ref_logits(f->logits, nrows * V);
    RunState s;
    run_init(&s, m, ids->t, 0);
    double worst_nll = 0, worst_logit = 0;
    for (int i = 0; i < ids->n; i++) {
        const int* x = ids->ids + (long)i * ids->t;
        model_forward(m, &s, x, NULL);
        double nll = cross_entropy(NULL, s.logits, x, ids->t, V);
        worst_nll =
            fmax(worst_nll, rel_diff(nll, json_real_value(json_array_get(json_object_get(ref, "nll"), i))));
        for (size_t k = 0; i == 0 && want && k < nrows; k++) {
            long row = (long)json_integer_value(json_array_get(rows, k));
            for (int v = 0; v < V; v++)
                worst_logit = fmax(worst_logit, fabs(s.logits[row * V + v] - want[k * V + v]));
        }
    }
    char name[160];
    snprintf(name, sizeof(name), "%s nll matches transformers", f->label);
    CHECK(worst_nll <= 1e-5, name, "worst relative NLL difference %.3g > 1e-5", worst_nll);
    snprintf(name, sizeof(name), "%s logits match transformers", f->label);
    CHECK(want && worst_logit <= 1e-3, name, "worst logit difference %.3g > 1e-3", worst_logit);
    printf("  %s: worst NLL rel diff %.2e, worst logit abs diff %.2e\n", f->label, worst_nll, worst_logit);
    free(want);
    run_free(&s, m);
}

// Tokens routed to each expert (unquantized passes) equal the reference's expert_tokens exactly.
static void check_coverage(const Fixture* f, const Model* m, const long* counts, json_t* ref) {
    json_t* cov = json_object_get(ref, "expert_tokens");
    int bad = 0, E = m->c.num_experts;
    for (int l = 0, j = 0; l < m->c.num_layers; l++) {
        if (!m->c.sparse[l]) continue;
        char key[128];
        snprintf(key, sizeof(key), "%slayers.%d.mlp.experts", m->c.prefix, l);
        json_t* want = json_object_get(cov, key);
        for (int e = 0; e < E; e++)
            bad += !want || json_integer_value(json_array_get(want, e)) != counts[(size_t)j * E + e];
        j++;
    }
    char name[160];
    snprintf(name, sizeof(name), "%s tokens per expert equal transformers' routing", f->label);
    CHECK(bad == 0 && json_object_size(cov) == (size_t)m->c.n_sparse, name, "%d counts differ", bad);
}

static void check_scores(const Fixture* f, const Model* m, const TokenIds* ids, json_t* ref) {
    Groups gs;
    Format fmt;
    groups_w4a8(&gs, &fmt, m);
    Method methods[2] = {METHOD_KL, METHOD_GRADIENT};
    const char* keys[2] = {"kl", "gradient"};
    for (int k = 0; k < 2; k++) {
        Scorer s;
        scorer_init(&s, m, &gs, &fmt, 1, methods[k], ids->t);
        double* score = xcalloc(gs.n, sizeof(double));
        long* counts = xcalloc((size_t)m->c.n_sparse * m->c.num_experts, sizeof(long));
        s.expert_tokens = counts;
        for (int i = 0; i < ids->n; i++) scorer_add_sample(&s, ids->ids + (long)i * ids->t, score);
        json_t* r = json_object_get(ref, keys[k]);
        double worst = 0;
        int missing = 0;
        for (int g = 0; g < gs.n; g++) {
            json_t* w = json_object_get(r, gs.g[g].name);
            missing += !w;
            worst = fmax(worst, rel_diff(score[g], json_number_value(w)));
        }
        char name[160];
        snprintf(name, sizeof(name), "%s %s scores within 1%% of PyTorch per group", f->label, keys[k]);
        CHECK(!missing && (size_t)gs.n == json_object_size(r) && worst <= 0.01, name,
              "worst relative difference %.3g, %d groups missing", worst, missing);
        printf("  %s %s: worst rel diff %.2e over %d groups\n", f->label, keys[k], worst, gs.n);
        check_coverage(f, m, counts, ref);
        free(counts);
        free(score);
        scorer_free(&s);
    }
    groups_free(&gs);
}

// Groups: one experts group per sparse layer with 3 E members; the router never a member.
static void check_groups(const Fixture* f, const Model* m) {
    Patterns dis;
    patterns_parse(&dis, "*mlp.gate,*experts.3.up_proj");
    Groups gs;
    groups_build(&gs, m, 1, &dis);
    int ok = 1, n_exp = 0;
    for (int g = 0; g < gs.n; g++) {
        const Group* gr = &gs.g[g];
        if (!gr->experts) continue;
        n_exp++;
        ok &= gr->n_members == 3 * m->c.num_experts && gr->disabled; // expert 3's up_proj disables it
        ok &= strstr(gr->name, "mlp.experts") != NULL;
    }
    char name[160];
    snprintf(name, sizeof(name), "%s experts form one group per sparse layer, disabled by one member",
             f->label);
    CHECK(ok && n_exp == m->c.n_sparse, name, "%d experts groups for %d sparse layers", n_exp, m->c.n_sparse);
    snprintf(name, sizeof(name), "%s the router pattern matches but adds no candidate", f->label);
    CHECK(dis.hits[0] == m->c.n_sparse, name, "router pattern hits %d", dis.hits[0]);
    groups_free(&gs);
    patterns_free(&dis);
}

static double lcg(unsigned* s) {
    *s = *s * 1664525u + 1013904223u;
    return (*s >> 8) / 16777216.0 - 0.5;
}

// Softmax, top-k and renormalisation: analytic dL/dlogits vs central differences of L = c . w.
static void check_route_fd(int renorm) {
    enum { T = 5, E = 6, K = 3 };
    float logits[T * E], probs[T * E], w[T * K], c[T * K], dl[T * E];
    int idx[T * K], idx2[T * K];
    unsigned seed = 7;
    for (int i = 0; i < T * E; i++) logits[i] = (float)(2 * lcg(&seed));
    for (int i = 0; i < T * K; i++) c[i] = (float)lcg(&seed);
    moe_route_forward(probs, idx, w, logits, T, E, K, renorm);
    moe_route_backward(dl, c, probs, idx, T, E, K, renorm);
    double worst = 0, eps = 1e-3;
    int flips = 0;
    for (int i = 0; i < T * E; i++) {
        double l[2];
        int same = 1;
        for (int sgn = 0; sgn < 2; sgn++) {
            float save = logits[i];
            logits[i] += (float)(sgn ? -eps : eps);
            moe_route_forward(probs, idx2, w, logits, T, E, K, renorm);
            logits[i] = save;
            l[sgn] = 0;
            for (int j = 0; j < T * K; j++) l[sgn] += (double)c[j] * w[j], same &= idx2[j] == idx[j];
        }
        flips += !same; // the choice of experts is not differentiable: skip a perturbation that changes it
        if (same) worst = fmax(worst, fabs((l[0] - l[1]) / (2 * eps) - dl[i]));
    }
    char name[96];
    snprintf(name, sizeof(name), "routing backward matches finite differences (renorm %d)", renorm);
    CHECK(worst < 1e-3 && flips < T * E / 4, name, "worst difference %.3g (%d flips)", worst, flips);
}

// Ties go to the lowest expert index, as torch.topk.
static void check_topk_ties(void) {
    float logits[4] = {1, 2, 2, 2}, probs[4], w[2];
    int idx[2];
    moe_route_forward(probs, idx, w, logits, 1, 4, 2, 0);
    CHECK(idx[0] == 1 && idx[1] == 2, "top-k ties go to the lowest expert index", "got %d, %d", idx[0], idx[1]);
}

static void count_hook(int i, const float* dy, void* ctx) {
    (void)i;
    (void)dy;
    ++*(int*)ctx;
}

// The whole backward (two sparse layers, router path included): dL/dh at the embedding output
// against central differences of the loss along a few directions.
static void check_backward_fd(const Model* m, const int* ids) {
    enum { T = 16 };
    int D = m->c.hidden_size;
    RunState s;
    run_init(&s, m, T, 1);
    GradState g;
    grad_init(&g, m, T);
    model_embed(m, &s, ids);
    float* h0 = xmalloc(sizeof(float) * T * D);
    memcpy(h0, s.acts[0].h_in, sizeof(float) * T * D);
    model_forward_from(m, &s, 0, NULL);
    int calls = 0;
    model_backward(m, &s, &g, ids, count_hook, &calls);
    int K = m->c.top_k, ns = m->c.n_sparse, sl[2] = {0, 2};
    int* idx0 = xmalloc(sizeof(int) * ns * T * K);
    for (int j = 0; j < ns; j++) memcpy(idx0 + j * T * K, s.acts[sl[j]].idx, sizeof(int) * T * K);
    float* dir = xmalloc(sizeof(float) * T * D);
    unsigned seed = 3;
    double worst = 0, gnorm = 0;
    for (int i = 0; i < T * D; i++) gnorm += (double)g.dh[i] * g.dh[i];
    gnorm = sqrt(gnorm);
    int flips = 0;
    for (int trial = 0; trial < 4; trial++) {
        double norm = 0, want = 0;
        for (int i = 0; i < T * D; i++) {
            dir[i] = trial == 0 ? g.dh[i] : (float)lcg(&seed);
            norm += (double)dir[i] * dir[i];
        }
        for (int i = 0; i < T * D; i++) {
            dir[i] /= (float)sqrt(norm);
            want += (double)dir[i] * g.dh[i];
        }
        double eps = 2e-3, l[2];
        int same = 1;
        for (int sgn = 0; sgn < 2; sgn++) {
            for (int i = 0; i < T * D; i++) s.acts[0].h_in[i] = h0[i] + (float)(sgn ? -eps : eps) * dir[i];
            model_forward_from(m, &s, 0, NULL);
            l[sgn] = cross_entropy(NULL, s.logits, ids, T, m->c.vocab_size);
            for (int j = 0; j < ns; j++)
                same &= !memcmp(idx0 + j * T * K, s.acts[sl[j]].idx, sizeof(int) * T * K);
        }
        double got = (l[0] - l[1]) / (2 * eps);
        flips += !same; // a perturbation that changes the routing has no derivative to compare
        if (same) worst = fmax(worst, fabs(got - want) / gnorm);
        printf("  direction %d: backward %.6g, finite difference %.6g%s\n", trial, want, got,
               same ? "" : " (routing changed: skipped)");
    }
    CHECK(worst < 2e-3 && flips < 2, "MoE backward (router path included) matches finite differences",
          "worst difference %.3g of |dL/dh|, %d of 4 directions changed the routing", worst, flips);
    free(idx0);
    int want_calls = 7 * (m->c.num_layers - m->c.n_sparse) + 5 * m->c.n_sparse;
    CHECK(calls == want_calls, "the hook sees each dense linear and each experts block", "%d calls", calls);
    free(dir);
    free(h0);
    grad_free(&g);
    run_free(&s, m);
}

int main(void) {
    check_route_fd(0);
    check_route_fd(1);
    check_topk_ties();
    for (size_t k = 0; k < sizeof(k_fix) / sizeof(k_fix[0]); k++) {
        const Fixture* f = &k_fix[k];
        json_error_t err;
        json_t* ref = json_load_file(f->ref, 0, &err);
        Model m;
        model_load(&m, f->dir);
        TokenIds ids;
        npy_read_ids(&ids, f->ids, m.c.vocab_size);
        check_forward(f, &m, &ids, ref);
        check_scores(f, &m, &ids, ref);
        check_groups(f, &m);
        if (k == 0) check_backward_fd(&m, ids.ids);
        token_ids_free(&ids);
        model_free(&m);
        json_decref(ref);
    }
    return g_fail ? 1 : 0;
}

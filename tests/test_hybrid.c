// The hybrid Qwen families (Qwen3.5, Qwen3.5-MoE with a vision tower, Qwen3-Next) against
// transformers 5.17 (tests/ref/make_hybrid_fixtures.py): every window's logits within 1e-3 absolute,
// its NLL within 1e-5 relative; the backward against finite differences of the whole model's loss.
#include <jansson.h>
#include <string.h>

#include "check.h"
#include "datasets/npy.h"
#include "engine/forward.h"
#include "engine/util.h"

typedef struct {
    const char* label;
    const char* dir;
    const char* stem; // tests/fixtures/<stem>_{ids,logits}.npy, <stem>_ref.json
} Fixture;

static const Fixture k_fixtures[] = {
    {"qwen3_5-tiny", "tests/fixtures/qwen3_5-tiny", "tests/fixtures/qwen3_5_tiny"},
    {"qwen3_5-moe-tiny", "tests/fixtures/qwen3_5-moe-tiny", "tests/fixtures/qwen3_5_moe_tiny"},
    {"qwen3-next-tiny", "tests/fixtures/qwen3-next-tiny", "tests/fixtures/qwen3_next_tiny"},
};

// The reference logits: float32 [rows, V], the data at the end of the .npy file.
static float* read_logits(const char* path, size_t n) {
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

static void test_forward(const Fixture* f) {
    char ids_path[256], ref_path[256], logits_path[256], name[256];
    snprintf(ids_path, sizeof(ids_path), "%s_ids.npy", f->stem);
    snprintf(ref_path, sizeof(ref_path), "%s_ref.json", f->stem);
    snprintf(logits_path, sizeof(logits_path), "%s_logits.npy", f->stem);
    Model m;
    model_load(&m, f->dir);
    TokenIds ids;
    npy_read_ids(&ids, ids_path, m.c.vocab_size);
    json_error_t err;
    json_t* ref = json_load_file(ref_path, 0, &err);
    json_t* nll = json_object_get(ref, "nll");
    int V = m.c.vocab_size, T = ids.t;
    float* want = read_logits(logits_path, (size_t)ids.n * T * V);
    RunState s;
    run_init(&s, &m, T, 0);
    double worst_nll = 0, worst_logit = 0;
    for (int i = 0; i < ids.n; i++) {
        model_forward(&m, &s, ids.ids + (long)i * T, NULL);
        double got = cross_entropy(NULL, s.logits, ids.ids + (long)i * T, T, V);
        double r = rel_diff(got, json_real_value(json_array_get(nll, i)));
        worst_nll = r > worst_nll ? r : worst_nll;
        for (long k = 0; want && k < (long)T * V; k++) {
            double d = fabs(s.logits[k] - want[(long)i * T * V + k]);
            worst_logit = d > worst_logit ? d : worst_logit;
        }
    }
    snprintf(name, sizeof(name), "%s nll matches transformers", f->label);
    CHECK(json_array_size(nll) == (size_t)ids.n && worst_nll <= 1e-5, name,
          "worst relative NLL difference %.3g", worst_nll);
    snprintf(name, sizeof(name), "%s logits match transformers", f->label);
    CHECK(want && worst_logit <= 1e-3, name, "worst logit difference %.3g > 1e-3", worst_logit);
    printf("  %s: worst NLL rel diff %.2e, worst logit abs diff %.2e\n", f->label, worst_nll, worst_logit);
    // The saved pass (backward's) gives the same logits as the shared-buffer one.
    RunState s2;
    run_init(&s2, &m, T, 1);
    model_forward(&m, &s2, ids.ids, NULL);
    model_forward(&m, &s, ids.ids, NULL);
    snprintf(name, sizeof(name), "%s saved pass equals the shared-buffer pass", f->label);
    CHECK(memcmp(s.logits, s2.logits, sizeof(float) * (size_t)T * V) == 0, name, "logits differ");
    run_free(&s2, &m);
    free(want);
    run_free(&s, &m);
    token_ids_free(&ids);
    json_decref(ref);
    model_free(&m);
}

static double lcg(unsigned* s) {
    *s = *s * 1664525u + 1013904223u;
    return (*s >> 8) / 16777216.0 - 0.5;
}

typedef struct {
    int calls, bad;
    const Model* m;
} HookCount;

// Every linear gets one call with a finite dL/dY (experts: one call per sparse layer).
static void count_hook(int idx, const float* dy, void* ctx) {
    HookCount* h = ctx;
    h->calls++;
    long n = idx < 0 ? 0 : (long)h->m->linears[idx].out;
    for (long i = 0; i < n; i++) h->bad += !isfinite(dy[i]);
}

// The backward (gated attention, partial RoPE, Gated DeltaNet, shared expert, experts) against central
// differences of the whole model's loss along directions in the first layer's input.
static void test_backward(const Fixture* f) {
    char ids_path[256], name[256];
    snprintf(ids_path, sizeof(ids_path), "%s_ids.npy", f->stem);
    Model m;
    model_load(&m, f->dir);
    TokenIds ids;
    npy_read_ids(&ids, ids_path, m.c.vocab_size);
    int T = ids.t, D = m.c.hidden_size, L = m.c.num_layers;
    RunState s;
    run_init(&s, &m, T, 1);
    GradState g;
    grad_init(&g, &m, T);
    model_embed(&m, &s, ids.ids);
    float* h0 = xmalloc(sizeof(float) * T * D);
    memcpy(h0, s.acts[0].h_in, sizeof(float) * T * D);
    model_forward_from(&m, &s, 0, NULL);
    // the routing of every sparse layer: a perturbation that changes it is not differentiable
    int K = m.c.top_k > 0 ? m.c.top_k : 1;
    int* idx0 = xcalloc((size_t)L * T * K, sizeof(int));
    for (int l = 0; l < L; l++)
        if (m.c.sparse[l]) memcpy(idx0 + (long)l * T * K, s.acts[l].idx, sizeof(int) * T * K);
    HookCount hc = {0, 0, &m};
    model_backward(&m, &s, &g, ids.ids, count_hook, &hc);
    int want_calls = m.n_linears;
    for (int l = 0; l < L; l++)
        if (m.c.sparse[l]) want_calls -= 3 * m.c.num_experts - 1;
    snprintf(name, sizeof(name), "%s backward calls the hook once per linear (experts once per layer)",
             f->label);
    CHECK(hc.calls == want_calls && hc.bad == 0, name, "%d calls for %d, %d non-finite", hc.calls, want_calls,
          hc.bad);
    float* dir = xmalloc(sizeof(float) * T * D);
    unsigned seed = 5;
    double worst = 0;
    int used = 0;
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
        double eps = 1e-3, l2[2];
        int same = 1;
        for (int sgn = 0; sgn < 2; sgn++) {
            for (int i = 0; i < T * D; i++) s.acts[0].h_in[i] = h0[i] + (float)(sgn ? -eps : eps) * dir[i];
            model_forward_from(&m, &s, 0, NULL);
            l2[sgn] = cross_entropy(NULL, s.logits, ids.ids, T, m.c.vocab_size);
            for (int l = 0; l < L; l++)
                if (m.c.sparse[l]) same &= !memcmp(idx0 + (long)l * T * K, s.acts[l].idx, sizeof(int) * T * K);
        }
        double got = (l2[0] - l2[1]) / (2 * eps);
        printf("  %s direction %d: backward %.6g, finite difference %.6g%s\n", f->label, trial, want, got,
               same ? "" : " (routing changed: not compared)");
        if (!same) continue;
        used++;
        double r = fabs(got - want) / (fabs(want) + 0.25); // fp32 loss rounding over 2 eps: ~1e-3 absolute
        worst = r > worst ? r : worst;
    }
    snprintf(name, sizeof(name), "%s backward matches finite differences of the loss", f->label);
    CHECK(used >= 2 && worst < 2e-2, name, "worst relative difference %.3g over %d directions", worst, used);
    free(dir);
    free(idx0);
    free(h0);
    grad_free(&g);
    run_free(&s, &m);
    token_ids_free(&ids);
    model_free(&m);
}

int main(void) {
    for (size_t i = 0; i < sizeof(k_fixtures) / sizeof(k_fixtures[0]); i++) test_forward(&k_fixtures[i]);
    for (size_t i = 0; i < sizeof(k_fixtures) / sizeof(k_fixtures[0]); i++) test_backward(&k_fixtures[i]);
    return g_fail ? 1 : 0;
}

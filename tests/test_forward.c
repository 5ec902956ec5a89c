// The CPU forward pass against transformers (tests/ref/make_refs.py):
// per-sample NLL within 1e-5 relative, logits within 1e-3 absolute.
#include <jansson.h>
#include <string.h>

#include "check.h"
#include "datasets/npy.h"
#include "engine/forward.h"
#include "engine/util.h"

static void compare(const char* label, const char* model_dir, const char* ids_path, const char* ref_path,
                    const char* logits_path) {
    char name[256];
    if (!file_exists(ids_path) || !file_exists(ref_path)) {
        snprintf(name, sizeof(name), "%s forward", label);
        SKIP(name, "reference files missing");
        return;
    }
    snprintf(name, sizeof(name), "%s model present", label);
    if (!model_present(model_dir, name)) return;
    Model m;
    model_load(&m, model_dir);
    TokenIds ids;
    npy_read_ids(&ids, ids_path, m.c.vocab_size);
    json_error_t err;
    json_t* ref = json_load_file(ref_path, 0, &err);
    json_t* nll = json_object_get(ref, "nll");
    json_t* rows = json_object_get(ref, "logit_rows");
    RunState s;
    run_init(&s, &m, ids.t, 0);
    double worst_nll = 0, worst_logit = 0;
    size_t nrows = json_array_size(rows);
    float* ref_logits = NULL;
    if (logits_path) {
        // The reference .npy is float32 [rows, V] with a 128-byte header (written by numpy).
        size_t len;
        char* buf = read_file(logits_path, &len);
        size_t need = nrows * (size_t)m.c.vocab_size * 4;
        if (buf && len >= need) {
            ref_logits = xmalloc(need);
            memcpy(ref_logits, buf + len - need, need);
        }
        free(buf);
    }
    for (int i = 0; i < ids.n; i++) {
        model_forward(&m, &s, ids.ids + (long)i * ids.t, NULL);
        double got = cross_entropy(NULL, s.logits, ids.ids + (long)i * ids.t, ids.t, m.c.vocab_size);
        double want = json_real_value(json_array_get(nll, i));
        double r = rel_diff(got, want);
        worst_nll = r > worst_nll ? r : worst_nll;
        if (i == 0 && ref_logits)
            for (size_t k = 0; k < nrows; k++) {
                int row = (int)json_integer_value(json_array_get(rows, k));
                for (int v = 0; v < m.c.vocab_size; v++) {
                    double d =
                        fabs(s.logits[(long)row * m.c.vocab_size + v] - ref_logits[k * m.c.vocab_size + v]);
                    worst_logit = d > worst_logit ? d : worst_logit;
                }
            }
    }
    snprintf(name, sizeof(name), "%s nll matches transformers", label);
    CHECK(worst_nll <= 1e-5, name, "worst relative NLL difference %.3g > 1e-5", worst_nll);
    snprintf(name, sizeof(name), "%s logits match transformers", label);
    CHECK(ref_logits && worst_logit <= 1e-3, name, "worst logit difference %.3g > 1e-3", worst_logit);
    printf("  %s: worst NLL rel diff %.2e, worst logit abs diff %.2e\n", label, worst_nll, worst_logit);
    free(ref_logits);
    run_free(&s, &m);
    token_ids_free(&ids);
    json_decref(ref);
    model_free(&m);
}

int main(void) {
    compare("qwen3-tiny", "../shared/models/qwen3-tiny", "tests/fixtures/qwen3_tiny_ids.npy",
            "tests/fixtures/qwen3_tiny_ref.json", "tests/fixtures/qwen3_tiny_logits.npy");
    compare("qwen3-vl-tiny", "tests/fixtures/qwen3-vl-tiny", "tests/fixtures/qwen3_vl_tiny_ids.npy",
            "tests/fixtures/qwen3_vl_tiny_ref.json", "tests/fixtures/qwen3_vl_tiny_logits.npy");
    return g_fail ? 1 : 0;
}

// The C tokenizer against Hugging Face tokenizers (tests/ref/tokenizer_ref.py):
// identical ids for hard strings and for the first 200 KB of calib.txt,
// under the real Qwen3 tokenizer.json and qwen3-tiny's own.
#include <jansson.h>
#include <string.h>

#include "check.h"
#include "datasets/npy.h"
#include "datasets/tokenizer.h"
#include "engine/util.h"

static void check_one(const char* name, const char* path, json_t* ref, const char* calib, size_t calib_len) {
    char label[256];
    if (!file_exists(path)) {
        snprintf(label, sizeof(label), "tokenizer %s", name);
        SKIP(label, "tokenizer.json missing (../shared not beside the checkout?)");
        return;
    }
    Tokenizer* t = tok_load(path);
    json_t* hard = json_object_get(ref, "hard");
    json_t* want = json_object_get(json_object_get(ref, "ids"), name);
    size_t i;
    json_t* s;
    json_array_foreach(hard, i, s) {
        IdVec ids = {0};
        tok_encode(t, json_string_value(s), json_string_length(s), &ids, "hard string", 0);
        json_t* w = json_array_get(want, i);
        int ok = ids.n == json_array_size(w);
        for (size_t k = 0; ok && k < ids.n; k++) ok = ids.ids[k] == json_integer_value(json_array_get(w, k));
        char shown[40];
        snprintf(shown, sizeof(shown), "%.24s", json_string_value(s));
        for (char* c = shown; *c; c++)
            if ((unsigned char)*c < 32) *c = ' ';
        snprintf(label, sizeof(label), "tokenizer %s: hard string %zu \"%s\"", name, i, shown);
        CHECK(ok, label, "%zu ids, want %zu", ids.n, json_array_size(w));
        idvec_free(&ids);
    }
    if (calib) {
        char npy[128];
        snprintf(npy, sizeof(npy), "tests/fixtures/calib200k_%s.npy", name);
        TokenIds ref_ids;
        npy_read_ids(&ref_ids, npy, 0);
        IdVec ids = {0};
        tok_encode(t, calib, calib_len, &ids, "calib.txt", 0);
        size_t first = 0;
        while (first < ids.n && first < (size_t)ref_ids.t && ids.ids[first] == ref_ids.ids[first]) first++;
        snprintf(label, sizeof(label), "tokenizer %s: first 200 KB of calib.txt, all ids identical", name);
        CHECK(ids.n == (size_t)ref_ids.t && first == ids.n, label, "%zu ids vs %d, first difference at %zu",
              ids.n, ref_ids.t, first);
        size_t dl;
        char* back = tok_decode(t, ids.ids, ids.n, &dl);
        snprintf(label, sizeof(label), "tokenizer %s: decode round-trips calib.txt", name);
        CHECK(dl == calib_len && memcmp(back, calib, dl) == 0, label, "decoded %zu bytes of %zu", dl,
              calib_len);
        free(back);
        idvec_free(&ids);
        token_ids_free(&ref_ids);
    }
    tok_free(t);
}

int main(void) {
    json_error_t err;
    json_t* ref = json_load_file("tests/fixtures/tokenizer_ref.json", JSON_ALLOW_NUL, &err);
    CHECK(ref != NULL, "tokenizer reference loads", "%s", err.text);
    if (!ref) return 1;
    size_t len = 0;
    char* calib = read_file("../shared/data/calib.txt", &len);
    size_t want = (size_t)json_integer_value(json_object_get(ref, "calib_bytes"));
    if (calib && len >= want)
        len = want;
    else
        calib = NULL;
    check_one("qwen3", "../shared/data/qwen3-tokenizer/tokenizer.json", ref, calib, len);
    check_one("tiny", "../shared/models/qwen3-tiny/tokenizer.json", ref, calib, len);
    free(calib);
    json_decref(ref);
    return g_fail ? 1 : 0;
}

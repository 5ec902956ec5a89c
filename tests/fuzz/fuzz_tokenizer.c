// libFuzzer: tokenizer.json through tok_load, then encoding a fixed text
// (added tokens, NFC, digits, spaces) and decoding it back.
#include <stdlib.h>
#include <string.h>

#include "../../datasets/tokenizer.h"
#include "fuzz.h"

static const char k_text[] = "Hello, world! <|im_start|>user\n caf\xc3\xa9 e\xcc\x81 123456  \t\n\n<|im_end|>x";

static void roundtrip(const char* path) {
    Tokenizer* t = tok_load(path);
    IdVec v = {0};
    tok_encode(t, k_text, sizeof(k_text) - 1, &v, "fixed text", 0);
    char* s = tok_decode(t, v.ids, v.n, NULL);
    free(s);
    idvec_free(&v);
    tok_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
    const char* path = fuzz_file("tokenizer.json", data, n);
    FUZZ_RUN(1, (void)0, roundtrip(path));
    return 0;
}

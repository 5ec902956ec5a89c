// libFuzzer: arbitrary bytes through tok_encode / tok_decode with a real
// tokenizer loaded once ($AUTOQ_FUZZ_TOKENIZER, default the seed tokenizer).
#include <stdlib.h>

#include "../../datasets/tokenizer.h"
#include "fuzz.h"

static Tokenizer* g_tok;
static IdVec g_ids;

int LLVMFuzzerInitialize(int* argc, char*** argv) {
    (void)argc;
    (void)argv;
    const char* p = getenv("AUTOQ_FUZZ_TOKENIZER");
    g_tok = tok_load(p ? p : "tests/fuzz/corpus/tokenizer/min.json");
    return 0;
}

static void encode(const uint8_t* data, size_t n) {
    tok_encode(g_tok, (const char*)data, n, &g_ids, "fuzz", 0);
    char* s = tok_decode(g_tok, g_ids.ids, g_ids.n, NULL);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
    // No sweep: the tokenizer's cache legitimately keeps what encoding adds.
    FUZZ_RUN(0, idvec_free(&g_ids), encode(data, n));
    return 0;
}

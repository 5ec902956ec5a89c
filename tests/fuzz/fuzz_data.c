// libFuzzer: --data text through data_load: the first byte picks .txt or
// .jsonl, shuffling and the window length; the rest is the file.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../datasets/data.h"
#include "../../engine/util.h"
#include "fuzz.h"

static char* g_tok_text;
static size_t g_tok_len;

int LLVMFuzzerInitialize(int* argc, char*** argv) {
    (void)argc;
    (void)argv;
    const char* p = getenv("AUTOQ_FUZZ_DATA_TOKENIZER");
    FILE* f = fopen(p ? p : "tests/fuzz/corpus/tokenizer/min.json", "rb");
    if (!f) abort();
    g_tok_text = malloc(1 << 24);
    g_tok_len = fread(g_tok_text, 1, 1 << 24, f);
    fclose(f);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
    if (n == 0) return 0;
    fuzz_file("tokenizer.json", (const uint8_t*)g_tok_text, g_tok_len);
    int jsonl = data[0] & 1;
    const char* path = fuzz_file(jsonl ? "d.jsonl" : "d.txt", data + 1, n - 1);
    DataOpts o = {.path = path,
                  .model_dir = fuzz_dir(),
                  .vocab = 400,
                  .eos = 300,
                  .num_samples = (data[0] >> 4) & 3,
                  .seq_len = 2 + ((data[0] >> 1) & 7),
                  .shuffle = (data[0] >> 6) & 1,
                  .seed = data[0]};
    static TokenIds t;
    g_quiet = 1;
    FUZZ_RUN(1, (void)0, data_load(&t, &o); token_ids_free(&t));
    return 0;
}

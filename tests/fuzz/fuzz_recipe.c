// libFuzzer: a recipe JSON through recipe_read, against the Qwen3-VL tiny
// fixture model loaded once.
#include <stdlib.h>

#include "../../engine/util.h"

#include "../../search/recipe.h"
#include "fuzz.h"

static Model g_model;
static int* g_choice;

int LLVMFuzzerInitialize(int* argc, char*** argv) {
    (void)argc;
    (void)argv;
    g_quiet = 1;
    model_open(&g_model, "tests/fixtures/qwen3-vl-tiny");
    g_choice = calloc((size_t)g_model.n_linears, sizeof(int));
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
    const char* path = fuzz_file("recipe.json", data, n);
    static Format fmts[MAX_FORMATS];
    FUZZ_RUN(1, (void)0, recipe_read(path, &g_model, fmts, g_choice, 0));
    return 0;
}

// libFuzzer: a .npy of token ids through npy_read_ids.
#include "../../datasets/npy.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
    const char* path = fuzz_file("ids.npy", data, n);
    static TokenIds t;
    FUZZ_RUN(1, (void)0, npy_read_ids(&t, path, 1000); token_ids_free(&t));
    return 0;
}

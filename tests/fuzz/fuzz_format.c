// libFuzzer: a format file (ModelOpt quant_cfg JSON) through format_load.
#include "../../scoring/format.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
    if (n == 0) return 0;
    const char* path = fuzz_file("fmt.json", data + 1, n - 1);
    static Format f;
    FUZZ_RUN(1, (void)0, format_load(&f, path, data[0] & 1));
    return 0;
}

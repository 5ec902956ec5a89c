// libFuzzer: config.json through config_load.
#include <string.h>

#include "../../engine/config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
    fuzz_file("config.json", data, n);
    static Config c;
    FUZZ_RUN(1, (void)0, config_load(&c, fuzz_dir()));
    return 0;
}

// libFuzzer: check-checkpoint's reading of config.json (quantization_config: config_groups, their weights and
// input_activations, targets and ignore with "re:" patterns, formats, kv_cache_scheme) through
// check_checkpoint_dir, over the Qwen3-MoE tiny fixture's tensors (linked beside the fuzzed config.json). The
// first byte picks the profile: vLLM sm90, vLLM sm100, SGLang sm90 or SGLang sm100.
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../../engine/util.h"
#include "../../search/check_checkpoint.h"
#include "fuzz.h"

static Target g_t[4];

int LLVMFuzzerInitialize(int* argc, char*** argv) {
    (void)argc;
    (void)argv;
    g_quiet = 1;
    target_load(&g_t[0], "vllm", "sm90");
    target_load(&g_t[1], "vllm", "sm100");
    target_load(&g_t[2], "sglang", "sm90");
    target_load(&g_t[3], "sglang", "sm100");
    char* src = realpath("tests/fixtures/qwen3-moe-tiny/model.safetensors", NULL);
    char dst[256];
    snprintf(dst, sizeof(dst), "%s/model.safetensors", fuzz_dir());
    if (!src || symlink(src, dst) != 0) {
        perror(
            "fuzz_check_ckpt: tests/fixtures/qwen3-moe-tiny/model.safetensors (run from the repository root)");
        abort();
    }
    free(src);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
    if (n == 0) return 0;
    fuzz_file("config.json", data + 1, n - 1);
    static json_t* list;
    FUZZ_RUN(1, json_decref(list), list = json_array();
             check_checkpoint_dir(fuzz_dir(), &g_t[data[0] & 3], list, 1));
    list = NULL;
    return 0;
}

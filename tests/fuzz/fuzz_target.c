// libFuzzer: an engine profile (configs/targets/NAME.json) through target_load_path, then every reader of
// a loaded profile: each format kind's status, the KV-cache formats, fused keys, info --target's text and
// JSON. The first byte picks the --arch (the profile's default, sm90, sm100 or one no profile lists).
#include <stdio.h>

#include "../../engine/util.h"
#include "../../search/target.h"
#include "fuzz.h"

static FILE* g_null;

int LLVMFuzzerInitialize(int* argc, char*** argv) {
    (void)argc;
    (void)argv;
    g_quiet = 1;
    g_null = fopen("/dev/null", "w");
    return 0;
}

static const char* k_kinds[] = {"w4a8",
                                "w8a8",
                                "fp8",
                                "nvfp4",
                                "mxfp4",
                                "w4a16",
                                "w4a8_fp8",
                                "w4a16_channel",
                                "w8a16",
                                "fp8_weight_only",
                                "nvfp4_weight_only",
                                "other",
                                NULL};
static const char* k_names[] = {"model.layers.0.self_attn.q_proj",
                                "model.layers.3.mlp.experts.12.up_proj",
                                "model.layers.1.linear_attn.in_proj_qkv",
                                "lm_head",
                                "q_proj",
                                ""};

static void use(const Target* t) {
    for (size_t i = 0; i < sizeof(k_kinds) / sizeof(k_kinds[0]); i++) {
        const char *why, *src;
        target_kind_status(t, k_kinds[i], &why, &src);
    }
    const char* kv[8];
    target_kv_formats(t, kv, 8);
    char key[256];
    for (size_t i = 0; i < sizeof(k_names) / sizeof(k_names[0]); i++)
        target_fused_key(t, k_names[i], key, sizeof(key));
    target_print(t, g_null);
    json_decref(target_to_json(t));
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
    if (n == 0) return 0;
    static const char* archs[] = {NULL, "sm90", "sm100", "sm80"};
    const char* path = fuzz_file("profile.json", data + 1, n - 1);
    static Target t;
    FUZZ_RUN(1, target_free(&t), target_load_path(&t, "vllm", path, archs[data[0] & 3]); use(&t));
    return 0;
}

// libFuzzer: model.safetensors.index.json through st_open, beside two fixed
// shards (written once) that the fuzzed weight_map may or may not name.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/safetensors.h"
#include "fuzz.h"

static StCheckpoint g_ck;

// A shard with one 2x2 BF16 tensor named name.
static void write_shard(const char* file, const char* name) {
    char hdr[256];
    int h = snprintf(hdr, sizeof(hdr), "{\"%s\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]}}",
                     name);
    uint8_t buf[512];
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, hdr, (size_t)h);
    memset(buf + 8 + h, 0x3f, 8);
    fuzz_file(file, buf, 8 + (size_t)h + 8);
}

int LLVMFuzzerInitialize(int* argc, char*** argv) {
    (void)argc;
    (void)argv;
    write_shard("model-00001-of-00002.safetensors", "model.embed_tokens.weight");
    write_shard("model-00002-of-00002.safetensors", "lm_head.weight");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
    fuzz_file("model.safetensors.index.json", data, n);
    FUZZ_RUN(1, st_free(&g_ck), st_open(&g_ck, fuzz_dir()));
    return 0;
}

// Engine profiles (README "Serving engines", §7): what vLLM, SGLang and TensorRT-LLM serve, as data in
// configs/targets/NAME.json, each rule with the engine source and version it was read from. search
// --target offers a group only the formats the engine serves on --arch, info --target lists the rules,
// check-checkpoint validates a written checkpoint against them.
#pragma once
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "../scoring/format.h"
#include "../scoring/table.h"

// How an engine runs a format on an architecture: not at all, with its own kernels (the numerics
// scored), or weights only (its inputs left in bf16: not what was scored).
typedef enum { TS_NONE = 0, TS_NATIVE, TS_WEIGHT_ONLY } TargetStatus;

#define TARGET_MAX_FUSED 8
#define TARGET_MAX_MEMBERS 4

typedef struct {
    char name[32];       // vllm, sglang, trtllm
    char engine[64];     // its display name
    char arch[16];       // sm90, sm100
    char checkpoint[32]; // compressed-tensors or modelopt
    char path[512];      // the profile file
    json_t* root;
    int n_fused;
    char fused[TARGET_MAX_FUSED][TARGET_MAX_MEMBERS][32]; // module names that the engine fuses into one
    int n_members[TARGET_MAX_FUSED];
    int moe_one_format; // one format per MoE layer's experts
    int kv_one_format;  // one KV-cache format for every full-attention layer (kv_cache_one_format_per_model)
} Target;

// NAME: vllm | sglang | trtllm (configs/targets/NAME.json beside the binary or in the working
// directory); arch NULL: the profile's default_arch. Exits 2 naming the file and field.
void target_load(Target* t, const char* name, const char* arch);
// The same from the profile file at path (the fuzz target's entry; name as above).
void target_load_path(Target* t, const char* name, const char* path, const char* arch);
void target_free(Target* t);
// The kind of a format by its numerics (configs/targets' keys: w4a8, w8a8, fp8, nvfp4, mxfp4, w4a16,
// w4a8_fp8, w4a16_channel, w8a16, fp8_weight_only, nvfp4_weight_only), or NULL for a combination no profile
// names.
const char* target_format_kind(const Format* f);
// The status of a kind on the target's arch, *why the rule's reason and *source its source + version
// (pointers into the profile; may be NULL).
TargetStatus target_kind_status(const Target* t, const char* kind, const char** why, const char** source);
// The KV-cache formats (bf16, fp8_e4m3, nvfp4) the engine serves on the arch, in the profile's order;
// returns their count (at most max).
int target_kv_formats(const Target* t, const char** names, int max);
// (nf, ng): 1 where the target does not serve format f (warns once per format, naming the rule), and
// exits 2 when the scores' groups split what the engine fuses (scores made with --no-grouping).
uint8_t* target_deny_table(const Target* t, const ScoreTable* st);
// The fused unit a module belongs to as a key ("<parent>#<fused index>", or "<layer>.mlp.experts.#experts"),
// "" when the engine fuses it with nothing: modules of one key must share one format.
void target_fused_key(const Target* t, const char* name, char* key, size_t cap);
// The rules in force, for info --target.
void target_print(const Target* t, FILE* f);
json_t* target_to_json(const Target* t);

// Seeded synthetic checkpoints of any family of the architecture table (engine/arch.h) in Hugging
// Face format (config.json + model.safetensors, or shards + model.safetensors.index.json; bf16), for
// the demo, tests and benchmarks.
#pragma once
#include <stdint.h>

#define GEN_MAX_MLP_ONLY 8

typedef struct {
    const char* name;
    int vocab, hidden, inter, layers, heads, kv_heads, head_dim;
    int tie;
    // Mixture of experts (model_type qwen3_moe, README §2); experts 0: a dense qwen3 model.
    int experts, top_k, moe_inter;
    int n_mlp_only;                 // layers that keep a dense MLP of `inter` (mlp_only_layers)
    int mlp_only[GEN_MAX_MLP_ONLY]; // ascending
    // Largest shard in MiB (model-0000k-of-0000n.safetensors + index, as Hugging Face shards);
    // 0: one model.safetensors.
    int shard_mib;
    // The family (arch.h); NULL: qwen3, or qwen3_moe with experts. The fields below are the hybrid
    // families' (README §2): Gated DeltaNet heads and widths, every full_interval-th layer full
    // attention, the shared expert's width, RoPE on partial_rotary of each head.
    const char* model_type;
    int lin_hk, lin_hv, lin_dk, lin_dv, lin_conv;
    int full_interval, shared_inter;
    double rope_theta, partial_rotary;
    int mrope[3]; // mrope_section, all 0: none written
    int max_pos;
} GenPreset;

// "tiny" (demo), "0.6b", "8b" (Qwen3 shapes), "moe-small" (tests), "30b-a3b" (the Qwen3-30B-A3B
// shape), "qwen3.5-27b", "qwen3.5-35b-a3b", "qwen3-next-80b-a3b" (the hybrid shapes), small hybrid ones for
// tests ("qwen3.5-small", "qwen3.5-moe-small", "qwen3-next-small", "qwen3.5-moe-hd64"); NULL when unknown.
const GenPreset* gen_preset(const char* name);
// The preset names, comma-separated, for messages.
const char* gen_preset_names(void);
// Writes dir/config.json and the weights into dir, an empty folder (cmd_gen's temporary one), each
// file filled in parallel straight into its mapped pages (memory stays small whatever the size). Some hidden
// channels get large norm gains in some layers, as real LLMs have, so layers differ. Exits 2 when the folder's
// file system has too little free space for the weights (the caller removes the folder); messages name `shown`
// (OUT_DIR).
void gen_checkpoint(const char* dir, const char* shown, const GenPreset* p, uint64_t seed);
// Bytes of the weights gen_checkpoint writes (tensor data, headers excluded).
uint64_t gen_weight_bytes(const GenPreset* p);
// Calibration ids: n windows of t tokens drawn from a seeded Markov chain
// over the vocabulary (not uniform noise, so the model sees repetition).
void gen_ids(int* ids, int n, int t, int vocab, uint64_t seed);

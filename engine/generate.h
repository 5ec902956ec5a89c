// Seeded synthetic Qwen3 checkpoints in Hugging Face format (config.json +
// model.safetensors, bf16), for the demo and the benchmarks.
#pragma once
#include <stdint.h>

typedef struct {
    const char* name;
    int vocab, hidden, inter, layers, heads, kv_heads, head_dim;
    int tie;
} GenPreset;

// "tiny" (demo), "0.6b", "8b" (Qwen3 shapes); NULL when unknown.
const GenPreset* gen_preset(const char* name);
// Writes dir/config.json and dir/model.safetensors. Some hidden channels get
// large norm gains in some layers, as real LLMs have, so layers differ.
void gen_checkpoint(const char* dir, const GenPreset* p, uint64_t seed);
// Calibration ids: n windows of t tokens drawn from a seeded Markov chain
// over the vocabulary (not uniform noise, so the model sees repetition).
void gen_ids(int* ids, int n, int t, int vocab, uint64_t seed);

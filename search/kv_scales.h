// The KV-cache scales autoq quantize writes (README §10): per full-attention layer one static per-tensor scale
// for K and one for V, calibrated on the calibration windows, as compressed-tensors' kv_cache_scheme stores
// them (`<layer>.self_attn.k_scale`, `v_scale`) and vLLM reads them.
#pragma once
#include "../datasets/npy.h"
#include "../engine/model.h"
#include "../scoring/format.h"

// Whether the recipe at path uses a KV-cache format (any group's choice), read before the model is loaded.
int kv_recipe_uses_kv(const char* path);
// amax (2 num_layers): amax[2 l] of layer l's K (after k_norm and RoPE, as the cache stores it) and
// amax[2 l + 1] of its V over every calibration window of the unquantized model; 0 for Gated DeltaNet layers.
void kv_calibrate(const Model* m, const TokenIds* ids, float* amax);
// The stored scale of an E4M3 KV cache: amax / 448 (compressed-tensors' and vLLM's k_scale; 1 for amax 0).
float kv_fp8_scale(float amax);

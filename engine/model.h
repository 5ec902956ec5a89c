// The Qwen3 decoder's weights in fp32 and the table of its linear layers.
#pragma once
#include "config.h"
#include "safetensors.h"

enum { LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, LIN_PER_LAYER };
extern const char* const k_linear_names[LIN_PER_LAYER]; // "self_attn.q_proj", ...

typedef struct {
    float* w_in;      // (D) input_layernorm
    float* q_proj;    // (H*hd, D)
    float* k_proj;    // (KV*hd, D)
    float* v_proj;    // (KV*hd, D)
    float* o_proj;    // (D, H*hd)
    float* q_norm;    // (hd)
    float* k_norm;    // (hd)
    float* w_post;    // (D) post_attention_layernorm
    float* gate_proj; // (I, D)
    float* up_proj;   // (I, D)
    float* down_proj; // (D, I)
} LayerWeights;

typedef struct {
    char name[160]; // Hugging Face module name, e.g. model.layers.3.mlp.up_proj
    int layer;
    int kind;    // LIN_*
    int out, in; // weight is (out, in)
    float* w;    // points into LayerWeights
} Linear;

typedef struct {
    Config c;
    char* dir;
    StCheckpoint ck;
    float* embed;   // (V, D)
    float* lm_head; // (V, D); == embed when tied
    float* norm;    // (D) final norm
    LayerWeights* layers;
    int n_linears; // 7 L
    Linear* linears;
    int n_visual; // tensors under model.visual.* (listed, never loaded)
    size_t n_params;
    int host_weights; // fp32 copies present
} Model;

// Loads config and weights; validates every tensor's dtype and shape first.
void model_load(Model* m, const char* dir);
// The same checks, but weights stay in the mmapped checkpoint (no fp32 copies;
// every float* is NULL): for the GPU path, which uploads bf16 directly.
void model_open(Model* m, const char* dir);
void model_free(Model* m);

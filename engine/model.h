// The Qwen3 decoder's weights in fp32 and the table of its linear layers (dense and
// mixture-of-experts layers).
#pragma once
#include "arch.h"
#include "config.h"
#include "safetensors.h"

extern const char* const k_linear_names[LIN_PER_LAYER]; // "self_attn.q_proj", ... (Qwen3's seven)

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
    // A sparse layer (README §2) has no dense MLP (the three above are NULL) but a router and E
    // experts, stored expert after expert whichever layout the checkpoint has:
    //  - per expert (Qwen3-MoE): mlp.experts.E.{gate,up}_proj.weight (I_moe, D) and
    //    mlp.experts.E.down_proj.weight (D, I_moe);
    //  - fused (Qwen3-VL-MoE): mlp.experts.gate_up_proj (E, 2 I_moe, D), gate rows then up rows,
    //    and mlp.experts.down_proj (E, D, I_moe), as transformers 5 writes them; or the
    //    transformers 4 layout (E, D, 2 I_moe) and (E, I_moe, D), used only when the shape cannot
    //    be read as transformers 5's (when D == 2 I_moe the shape is read as transformers 5's).
    float* router;  // (E, D) mlp.gate.weight; fp32, never quantized
    float* ex_gate; // (E, I_moe, D)
    float* ex_up;   // (E, I_moe, D)
    float* ex_down; // (E, D, I_moe)
    // Hybrid families (arch.h): norms above already hold 1 + w where the family says so.
    float* gdn_qkv;  // (C, D) linear_attn.in_proj_qkv, C = 2 Hk dk + Hv dv
    float* gdn_z;    // (Hv dv, D) in_proj_z
    float* gdn_b;    // (Hv, D) in_proj_b
    float* gdn_a;    // (Hv, D) in_proj_a
    float* gdn_qkvz; // (2 Hk dk + 2 Hv dv, D) Qwen3-Next's in_proj_qkvz, per key-head group
    float* gdn_ba;   // (2 Hv, D) Qwen3-Next's in_proj_ba, per key-head group
    float* gdn_out;  // (D, Hv dv) out_proj
    float* gdn_conv; // (C, K) conv1d.weight [C, 1, K]
    float* gdn_alog; // (Hv) A_log
    float* gdn_dt;   // (Hv) dt_bias
    float* gdn_norm; // (dv) the gated RMSNorm's weight (used as w)
    float* sh_gate;  // (I_sh, D) mlp.shared_expert.gate_proj
    float* sh_up;    // (I_sh, D)
    float* sh_down;  // (D, I_sh)
    float* sh_w;     // (1, D) mlp.shared_expert_gate: sigmoid(m sh_w^T) scales the shared expert
} LayerWeights;

typedef struct {
    char name[160]; // Hugging Face module name, e.g. model.layers.3.mlp.up_proj
    int layer;
    int kind;    // LIN_*
    int expert;  // -1 for a dense linear; else its expert in a sparse layer
    int out, in; // weight is (out, in)
    float* w;    // points into LayerWeights (NULL without fp32 copies)
} Linear;

typedef struct {
    Config c;
    char* dir;
    StCheckpoint ck;
    float* embed;   // (V, D)
    float* lm_head; // (V, D); == embed when tied
    float* norm;    // (D) final norm
    LayerWeights* layers;
    // The table of linears, layer after layer: layer l owns linears lin0[l] .. lin0[l+1]-1, in the
    // order of its family's rows in the architecture table (arch.c): for Qwen3 q, k, v, o, then
    // gate, up, down of the dense MLP or of expert 0, expert 1, ... (7 or 4 + 3 E per layer), then
    // a shared expert's. model_lin finds one; nothing else may assume a fixed count per layer.
    int n_linears;
    Linear* linears;
    int* lin0;    // (L+1) first linear of each layer
    int* slot;    // (L LIN_KINDS) position of kind k in layer l's linears, -1 when absent
    int n_visual; // tensors under model.visual.* (listed, never loaded)
    int n_mtp;    // tensors under mtp.* (listed, never loaded)
    size_t n_params;
    int host_weights; // fp32 copies present
} Model;

// Index of linear `kind` (LIN_*) of layer l; e: the expert for gate, up and down of a sparse
// layer (-1 or 0.. for the rest).
static inline int model_lin(const Model* m, int l, int kind, int e) {
    return m->lin0[l] + m->slot[l * LIN_KINDS + kind] +
           (kind >= LIN_GATE && kind <= LIN_DOWN && e > 0 ? 3 * e : 0);
}
// Whether layer l has linear kind k.
static inline int model_has_lin(const Model* m, int l, int kind) { return m->slot[l * LIN_KINDS + kind] >= 0; }
static inline int model_layer_sparse(const Model* m, int l) { return m->c.sparse[l]; }

// (E, a, b) -> (E, b, a): transformers 4's fused expert layouts into transformers 5's.
void model_transpose_experts(float* dst, const float* src, int E, int a, int b);

// Loads config and weights; validates every tensor's dtype and shape first.
void model_load(Model* m, const char* dir);
// The same checks, but weights stay in the mmapped checkpoint (no fp32 copies;
// every float* is NULL): for the GPU path, which uploads bf16 directly.
void model_open(Model* m, const char* dir);
void model_free(Model* m);
// The checkpoint tensor linear i's weight is stored in: its own `.weight`, or for fused experts
// (Qwen3-VL-MoE) its layer's `mlp.experts.gate_up_proj` / `down_proj`; NULL when neither is there.
// name (cap bytes) receives the name looked for first.
const StTensor* model_weight_tensor(const Model* m, int i, char* name, size_t cap);
// Linear i's weight (out, in) in fp32: the host copy of a loaded model (model_load), else converted
// from the checkpoint into *tmp, which the caller frees (NULL when nothing was allocated). An opened
// model's experts are refused (fused tensors hold them; model_load slices those).
const float* model_linear_f32(const Model* m, int i, float** tmp);

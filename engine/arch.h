// The architecture table (README "Adding a model family"): per model family, which config.json it
// is, where its language weights live, and every tensor of a decoder layer: its role, its name
// under "<prefix>layers.N.", its shape from the config, how it is stored (fused layouts), the group
// it joins and whether it is ever a candidate. Loading (model.c), grouping (scoring/groups.c) and
// `info` (scoring/cmd_info.c) read it; nothing else spells these names for the families listed here.
#pragma once
#include <stddef.h>

#include "config.h"

// Which part of a layer a row belongs to; a layer has the parts its config gives it (arch_layer_has).
typedef enum {
    PART_LAYER,  // every layer: the two norms
    PART_ATTN,   // full (softmax) attention
    PART_GDN,    // Gated DeltaNet linear attention
    PART_DENSE,  // a dense MLP
    PART_SPARSE, // router + routed experts
    PART_SHARED, // the shared expert of a sparse layer and its gate
} ArchPart;

// Symbolic dimensions, resolved from the Config by arch_dim.
typedef enum {
    DIM_NONE,
    DIM_ONE,   // 1
    DIM_D,     // hidden_size
    DIM_I,     // intermediate_size
    DIM_HD,    // head_dim
    DIM_QROWS, // q_proj rows: H hd, or 2 H hd with the attention output gate
    DIM_QD,    // H hd (o_proj input)
    DIM_KVD,   // KV hd
    DIM_E,     // num_experts
    DIM_ISH,   // shared_expert_intermediate_size
    DIM_GCONV, // the Gated DeltaNet conv's channels 2 Hk dk + Hv dv (in_proj_qkv rows)
    DIM_GVD,   // Hv dv (in_proj_z rows, out_proj input)
    DIM_GHV,   // Hv (in_proj_b / in_proj_a rows, A_log, dt_bias)
    DIM_GQKVZ, // 2 Hk dk + 2 Hv dv (Qwen3-Next's fused in_proj_qkvz rows)
    DIM_GBA,   // 2 Hv (Qwen3-Next's fused in_proj_ba rows)
    DIM_GDV,   // dv (the gated norm)
    DIM_GK,    // linear_conv_kernel_dim
} ArchDim;

// Linear kinds (Linear.kind). The first LIN_PER_LAYER are Qwen3's, in its layer order.
enum {
    LIN_Q,
    LIN_K,
    LIN_V,
    LIN_O,
    LIN_GATE,
    LIN_UP,
    LIN_DOWN,
    LIN_PER_LAYER,
    LIN_GDN_QKV = LIN_PER_LAYER, // linear_attn.in_proj_qkv
    LIN_GDN_Z,                   // linear_attn.in_proj_z
    LIN_GDN_B,                   // linear_attn.in_proj_b
    LIN_GDN_A,                   // linear_attn.in_proj_a
    LIN_GDN_QKVZ,                // linear_attn.in_proj_qkvz (Qwen3-Next, fused per key-head group)
    LIN_GDN_BA,                  // linear_attn.in_proj_ba (Qwen3-Next)
    LIN_GDN_OUT,                 // linear_attn.out_proj
    LIN_SH_GATE,                 // mlp.shared_expert.gate_proj
    LIN_SH_UP,                   // mlp.shared_expert.up_proj
    LIN_SH_DOWN,                 // mlp.shared_expert.down_proj
    LIN_KINDS
};

// How a tensor is stored and read.
typedef enum {
    LAYOUT_PLAIN,   // as the shape says
    LAYOUT_CONV,    // conv1d.weight [C, 1, K], read as (C, K)
    LAYOUT_EXPERTS, // the routed experts: per expert or fused (model.c want_experts, README §2)
} ArchLayout;

typedef struct {
    const char* name; // under "<prefix>layers.N."
    ArchPart part;
    int ndim;
    ArchDim shape[3];
    ArchLayout layout;
    size_t field;      // offsetof(LayerWeights, ...) of the fp32 copy
    int lin;           // LIN_* for a linear (a candidate), -1 otherwise
    const char* group; // the group a linear joins under "<prefix>layers.N."; NULL: its own name alone
    int plus1;         // a norm used as 1 + w (the weight is stored as w)
    const char* role;  // what a non-candidate is, for info ("norm", "router", ...)
} ArchTensor;

typedef struct ArchFamily_ {
    const char* model_type;    // config.json's model_type
    int text_config;           // fields under text_config (a VL checkpoint)
    const char* prefix;        // "model." or "model.language_model."
    int moe;                   // reads the mixture-of-experts fields
    int hybrid;                // layer_types, Gated DeltaNet fields, partial RoPE, (1 + w) norms
    int attn_gate;             // q_proj yields query and gate per head
    int fused_gdn;             // in_proj_qkvz / in_proj_ba (Qwen3-Next) instead of four linears
    int shared_expert;         // sparse layers have a shared expert with a sigmoid gate
    int always_renorm;         // the router always renormalises its top-k (no norm_topk_prob)
    int all_sparse;            // every layer sparse (no decoder_sparse_step / mlp_only_layers)
    double rope_theta;         // default when the config has none
    const ArchTensor* tensors; // the layer's tensors, linears in the order of the table of linears
    int n_tensors;
    const char* const* untouched; // name prefixes listed by info, never loaded (NULL-terminated)
} ArchFamily;

// The family of model_type, NULL when autoq has none.
const ArchFamily* arch_find(const char* model_type);
// The supported model_type values, comma-separated (for messages).
const char* arch_list(void);

// Whether layer l has part p under config c.
int arch_layer_has(const Config* c, int l, ArchPart p);
// The value of a symbolic dimension under config c.
long arch_dim(const Config* c, ArchDim d);
// The family's row for linear kind k outside the experts, NULL when it has none.
const ArchTensor* arch_linear(const ArchFamily* f, int kind);
// The family's routed experts row, NULL without experts.
const ArchTensor* arch_experts(const ArchFamily* f);
// Whether the GPU engine holds row r in fp32 (4 bytes a value) rather than bf16: the Gated DeltaNet's conv,
// decays and gated norm, which its kernels read as fp32 as the CPU does. The engine's uploads
// (gpu_engine.cu layer_upload) and the planners' layer bytes (scoring/shard_plan.c) both ask this.
int arch_gpu_f32(const ArchTensor* r);

// The routed experts' projections, as Hugging Face names them per expert
// ("<prefix>layers.N.mlp.experts.E.<proj>.weight"), in the order each expert's tensors are written.
extern const char* const arch_expert_proj[3];
// A layer's experts group, "<prefix>layers.N" + ARCH_EXPERTS_GROUP.
#define ARCH_EXPERTS_GROUP ".mlp.experts"
// Linears of the families that are never candidates yet are nn.Linear modules in transformers, so both
// tools would quantize them unless told not to (the exports leave them alone, README §5, §8): the routers
// ("<layer>.mlp.gate") and the shared experts' sigmoid gates ("<layer>.mlp.shared_expert_gate").
#define ARCH_ROUTER ".mlp.gate"
#define ARCH_SHARED_GATE ".mlp.shared_expert_gate"
// The shared expert's linears sit under "<layer>" + ARCH_SHARED_EXPERT + ".".
#define ARCH_SHARED_EXPERT ".mlp.shared_expert"

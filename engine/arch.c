// The architecture table: one table per model family (arch.h, README "Adding a model family").
#include "arch.h"

#include <string.h>

#include "model.h"

#define F(x) offsetof(LayerWeights, x)
#define NOLIN -1

// A linear: name, part, shape (out, in), field, kind, group joined (NULL: alone).
#define LIN(name, part, o, i, field, kind, group)                                                              \
    { name, part, 2, {o, i}, LAYOUT_PLAIN, F(field), kind, group, 0, NULL }
// A tensor that is never a candidate: name, part, ndim, shape, layout, field, plus1, role.
#define AUX(name, part, nd, a, b, c, layout, field, plus1, role)                                               \
    { name, part, nd, {a, b, c}, layout, F(field), NOLIN, NULL, plus1, role }

// Both norms of every layer (1 + w in the families that say so).
#define ROWS_LAYER                                                                                             \
    AUX("input_layernorm.weight", PART_LAYER, 1, DIM_D, 0, 0, LAYOUT_PLAIN, w_in, 1, "norm"),                  \
        AUX("post_attention_layernorm.weight", PART_LAYER, 1, DIM_D, 0, 0, LAYOUT_PLAIN, w_post, 1, "norm")

// Full attention; q_proj has 2 H hd rows (query and gate per head) where the family gates it.
#define ROWS_ATTN                                                                                              \
    LIN("self_attn.q_proj.weight", PART_ATTN, DIM_QROWS, DIM_D, q_proj, LIN_Q, "self_attn.qkv"),               \
        LIN("self_attn.k_proj.weight", PART_ATTN, DIM_KVD, DIM_D, k_proj, LIN_K, "self_attn.qkv"),             \
        LIN("self_attn.v_proj.weight", PART_ATTN, DIM_KVD, DIM_D, v_proj, LIN_V, "self_attn.qkv"),             \
        LIN("self_attn.o_proj.weight", PART_ATTN, DIM_D, DIM_QD, o_proj, LIN_O, NULL),                         \
        AUX("self_attn.q_norm.weight", PART_ATTN, 1, DIM_HD, 0, 0, LAYOUT_PLAIN, q_norm, 1, "norm"),           \
        AUX("self_attn.k_norm.weight", PART_ATTN, 1, DIM_HD, 0, 0, LAYOUT_PLAIN, k_norm, 1, "norm")

// The Gated DeltaNet's own tensors, beside its linears.
#define ROWS_GDN_CORE                                                                                          \
    LIN("linear_attn.out_proj.weight", PART_GDN, DIM_D, DIM_GVD, gdn_out, LIN_GDN_OUT, NULL),                  \
        AUX("linear_attn.conv1d.weight", PART_GDN, 3, DIM_GCONV, DIM_ONE, DIM_GK, LAYOUT_CONV, gdn_conv, 0,    \
            "conv1d"),                                                                                         \
        AUX("linear_attn.A_log", PART_GDN, 1, DIM_GHV, 0, 0, LAYOUT_PLAIN, gdn_alog, 0, "A_log"),              \
        AUX("linear_attn.dt_bias", PART_GDN, 1, DIM_GHV, 0, 0, LAYOUT_PLAIN, gdn_dt, 0, "dt_bias"),            \
        AUX("linear_attn.norm.weight", PART_GDN, 1, DIM_GDV, 0, 0, LAYOUT_PLAIN, gdn_norm, 0, "gated norm")

// Qwen3.5: four input linears; vLLM serves in_proj_qkv + in_proj_z and in_proj_b + in_proj_a fused.
#define ROWS_GDN                                                                                               \
    LIN("linear_attn.in_proj_qkv.weight", PART_GDN, DIM_GCONV, DIM_D, gdn_qkv, LIN_GDN_QKV,                    \
        "linear_attn.in_proj_qkvz"),                                                                           \
        LIN("linear_attn.in_proj_z.weight", PART_GDN, DIM_GVD, DIM_D, gdn_z, LIN_GDN_Z,                        \
            "linear_attn.in_proj_qkvz"),                                                                       \
        LIN("linear_attn.in_proj_b.weight", PART_GDN, DIM_GHV, DIM_D, gdn_b, LIN_GDN_B,                        \
            "linear_attn.in_proj_ba"),                                                                         \
        LIN("linear_attn.in_proj_a.weight", PART_GDN, DIM_GHV, DIM_D, gdn_a, LIN_GDN_A,                        \
            "linear_attn.in_proj_ba"),                                                                         \
        ROWS_GDN_CORE

// Qwen3-Next: the same stored fused, rows per key-head group (forward.c undoes the order).
#define ROWS_GDN_FUSED                                                                                         \
    LIN("linear_attn.in_proj_qkvz.weight", PART_GDN, DIM_GQKVZ, DIM_D, gdn_qkvz, LIN_GDN_QKVZ, NULL),          \
        LIN("linear_attn.in_proj_ba.weight", PART_GDN, DIM_GBA, DIM_D, gdn_ba, LIN_GDN_BA, NULL),              \
        ROWS_GDN_CORE

#define ROWS_DENSE                                                                                             \
    LIN("mlp.gate_proj.weight", PART_DENSE, DIM_I, DIM_D, gate_proj, LIN_GATE, "mlp.gate_up"),                 \
        LIN("mlp.up_proj.weight", PART_DENSE, DIM_I, DIM_D, up_proj, LIN_UP, "mlp.gate_up"),                   \
        LIN("mlp.down_proj.weight", PART_DENSE, DIM_D, DIM_I, down_proj, LIN_DOWN, NULL)

// The router and the routed experts (3 E linears, one group; layouts in model.c).
#define ROWS_SPARSE                                                                                            \
    AUX("mlp.gate.weight", PART_SPARSE, 2, DIM_E, DIM_D, 0, LAYOUT_PLAIN, router, 0, "router"), {              \
        "mlp.experts", PART_SPARSE, 0, {0}, LAYOUT_EXPERTS, 0, LIN_GATE, "mlp.experts", 0, NULL                \
    }

#define ROWS_SHARED                                                                                            \
    LIN("mlp.shared_expert.gate_proj.weight", PART_SHARED, DIM_ISH, DIM_D, sh_gate, LIN_SH_GATE,               \
        "mlp.shared_expert.gate_up"),                                                                          \
        LIN("mlp.shared_expert.up_proj.weight", PART_SHARED, DIM_ISH, DIM_D, sh_up, LIN_SH_UP,                 \
            "mlp.shared_expert.gate_up"),                                                                      \
        LIN("mlp.shared_expert.down_proj.weight", PART_SHARED, DIM_D, DIM_ISH, sh_down, LIN_SH_DOWN, NULL),    \
        AUX("mlp.shared_expert_gate.weight", PART_SHARED, 2, DIM_ONE, DIM_D, 0, LAYOUT_PLAIN, sh_w, 0,         \
            "shared expert gate")

static const ArchTensor k_qwen3[] = {ROWS_LAYER, ROWS_ATTN, ROWS_DENSE};
static const ArchTensor k_qwen3_moe[] = {ROWS_LAYER, ROWS_ATTN, ROWS_DENSE, ROWS_SPARSE};
static const ArchTensor k_qwen3_next[] = {ROWS_LAYER, ROWS_ATTN,   ROWS_GDN_FUSED,
                                          ROWS_DENSE, ROWS_SPARSE, ROWS_SHARED};
static const ArchTensor k_qwen3_5[] = {ROWS_LAYER, ROWS_ATTN, ROWS_GDN, ROWS_DENSE};
static const ArchTensor k_qwen3_5_moe[] = {ROWS_LAYER, ROWS_ATTN, ROWS_GDN, ROWS_SPARSE, ROWS_SHARED};

static const char* const k_visual[] = {"model.visual.", NULL};
static const char* const k_visual_mtp[] = {"model.visual.", "mtp.", NULL};

#define ROWS(t) t, (int)(sizeof(t) / sizeof(t[0]))

// model_type, text_config, prefix, moe, hybrid, attn_gate, fused_gdn, shared_expert, always_renorm,
// all_sparse, rope_theta, rows, untouched
static const ArchFamily k_families[] = {
    {"qwen3", 0, "model.", 0, 0, 0, 0, 0, 0, 0, 1e4, ROWS(k_qwen3), k_visual},
    {"qwen3_vl", 1, "model.language_model.", 0, 0, 0, 0, 0, 0, 0, 5e6, ROWS(k_qwen3), k_visual},
    {"qwen3_moe", 0, "model.", 1, 0, 0, 0, 0, 0, 0, 1e4, ROWS(k_qwen3_moe), k_visual},
    {"qwen3_vl_moe", 1, "model.language_model.", 1, 0, 0, 0, 0, 1, 0, 1e4, ROWS(k_qwen3_moe), k_visual},
    {"qwen3_next", 0, "model.", 1, 1, 1, 1, 1, 0, 0, 1e4, ROWS(k_qwen3_next), k_visual_mtp},
    {"qwen3_5_text", 0, "model.", 0, 1, 1, 0, 0, 0, 0, 1e4, ROWS(k_qwen3_5), k_visual_mtp},
    {"qwen3_5", 1, "model.language_model.", 0, 1, 1, 0, 0, 0, 0, 1e4, ROWS(k_qwen3_5), k_visual_mtp},
    {"qwen3_5_moe_text", 0, "model.", 1, 1, 1, 0, 1, 1, 1, 1e4, ROWS(k_qwen3_5_moe), k_visual_mtp},
    {"qwen3_5_moe", 1, "model.language_model.", 1, 1, 1, 0, 1, 1, 1, 1e4, ROWS(k_qwen3_5_moe), k_visual_mtp},
};

const char* const arch_expert_proj[3] = {"gate_proj", "up_proj", "down_proj"};

const ArchFamily* arch_find(const char* model_type) {
    for (size_t i = 0; i < sizeof(k_families) / sizeof(k_families[0]); i++)
        if (strcmp(k_families[i].model_type, model_type) == 0) return &k_families[i];
    return NULL;
}

const char* arch_list(void) {
    return "qwen3, qwen3_vl, qwen3_moe, qwen3_vl_moe, qwen3_next, qwen3_5_text, qwen3_5, qwen3_5_moe_text, "
           "qwen3_5_moe";
}

int arch_layer_has(const Config* c, int l, ArchPart p) {
    switch (p) {
    case PART_LAYER:
        return 1;
    case PART_ATTN:
        return !c->linear[l];
    case PART_GDN:
        return c->linear[l];
    case PART_DENSE:
        return !c->sparse[l];
    case PART_SPARSE:
        return c->sparse[l];
    case PART_SHARED:
        return c->sparse[l] && c->shared_inter > 0;
    }
    return 0;
}

long arch_dim(const Config* c, ArchDim d) {
    long qd = (long)c->num_heads * c->head_dim, kd = (long)c->lin_hk * c->lin_dk,
         vd = (long)c->lin_hv * c->lin_dv;
    switch (d) {
    case DIM_NONE:
        return 0;
    case DIM_ONE:
        return 1;
    case DIM_D:
        return c->hidden_size;
    case DIM_I:
        return c->intermediate_size;
    case DIM_HD:
        return c->head_dim;
    case DIM_QROWS:
        return c->fam->attn_gate ? 2 * qd : qd;
    case DIM_QD:
        return qd;
    case DIM_KVD:
        return (long)c->num_kv_heads * c->head_dim;
    case DIM_E:
        return c->num_experts;
    case DIM_ISH:
        return c->shared_inter;
    case DIM_GCONV:
        return 2 * kd + vd;
    case DIM_GVD:
        return vd;
    case DIM_GHV:
        return c->lin_hv;
    case DIM_GQKVZ:
        return 2 * kd + 2 * vd;
    case DIM_GBA:
        return 2L * c->lin_hv;
    case DIM_GDV:
        return c->lin_dv;
    case DIM_GK:
        return c->lin_conv;
    }
    return 0;
}

const ArchTensor* arch_linear(const ArchFamily* f, int kind) {
    for (int i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].lin == kind && f->tensors[i].layout != LAYOUT_EXPERTS) return &f->tensors[i];
    return NULL;
}

int arch_gpu_f32(const ArchTensor* r) { return r->part == PART_GDN && r->lin < 0; }

const ArchTensor* arch_experts(const ArchFamily* f) {
    for (int i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].layout == LAYOUT_EXPERTS) return &f->tensors[i];
    return NULL;
}

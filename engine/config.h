// Model hyper-parameters read from a Hugging Face config.json (README §2).
#pragma once

struct ArchFamily_; // arch.h

#define CONFIG_MAX_LAYERS 4096  // num_hidden_layers
#define CONFIG_MAX_EXPERTS 4096 // num_experts

typedef struct {
    const struct ArchFamily_* fam; // the family's row of the architecture table (arch.h)
    char model_type[32];
    int vocab_size;
    int hidden_size;       // D
    int intermediate_size; // I
    int num_layers;        // L
    int num_heads;         // H
    int num_kv_heads;      // KV
    int head_dim;          // hd (independent of D / H)
    float rms_eps;
    double rope_theta;
    int tie_word_embeddings;
    int eos_token_id; // -1 when absent; else in [0, vocab_size)
    // max_position_embeddings, 0 when absent: the longest window the model was
    // trained for. config_load only reads it; the commands compare --seq-len with it.
    int max_pos;
    char prefix[32]; // "model." or "model.language_model."
    // Mixture of experts (qwen3_moe, qwen3_vl_moe); num_experts 0 for dense models.
    int num_experts;                // E (also spelled num_local_experts)
    int top_k;                      // K = num_experts_per_tok, <= E
    int moe_intermediate;           // I_moe = moe_intermediate_size
    int norm_topk;                  // renormalise the top-k weights (always for qwen3_vl_moe)
    int sparse_step;                // decoder_sparse_step (default 1)
    int n_sparse;                   // sparse layers
    char sparse[CONFIG_MAX_LAYERS]; // 1: layer l runs experts (see config_load)
    int shared_inter;               // shared_expert_intermediate_size (0: no shared expert)
    // Hybrid families (qwen3_next, qwen3_5, qwen3_5_moe; README §2). 0 / plain for the others.
    int rotary_dim;        // RoPE on the first rotary_dim of each head (head_dim unless partial)
    double partial_rotary; // partial_rotary_factor (1 when absent from a non-hybrid family)
    int mrope_section[3];  // read and checked; text-only positions make the sections equal
    int mrope_interleaved;
    int n_linear;                   // Gated DeltaNet layers
    char linear[CONFIG_MAX_LAYERS]; // 1: layer l is linear_attention (Gated DeltaNet), 0: full_attention
    int lin_hk, lin_hv;             // linear_num_key_heads, linear_num_value_heads (a multiple of hk)
    int lin_dk, lin_dv;             // linear_key_head_dim, linear_value_head_dim
    int lin_conv;                   // linear_conv_kernel_dim
} Config;

// Parses dir/config.json; exits 2 naming the file and field on any problem.
// Every dimension has an upper bound (CONFIG_MAX_*) and the products the
// engine forms (heads x head_dim, vocab x hidden, ...) are checked to fit an
// int, so later int arithmetic on shapes cannot overflow.
// Layer l is sparse iff num_experts > 0, l is not in mlp_only_layers and
// (l + 1) % decoder_sparse_step == 0 (transformers' Qwen3MoeDecoderLayer).
void config_load(Config* c, const char* dir);

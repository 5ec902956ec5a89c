// Model hyper-parameters read from a Hugging Face config.json (SPEC §2).
#pragma once

typedef enum { ARCH_QWEN3, ARCH_QWEN3_VL } Arch;

typedef struct {
    Arch arch;
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
    int eos_token_id; // -1 when absent
    char prefix[32];  // "model." or "model.language_model."
} Config;

// Parses dir/config.json; exits 2 naming the file and field on any problem.
void config_load(Config* c, const char* dir);

#include "generate.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

static const GenPreset k_presets[] = {
    {"tiny", 512, 128, 384, 4, 4, 2, 32, 1},
    {"0.6b", 151936, 1024, 3072, 28, 16, 8, 128, 1},
    {"8b", 151936, 4096, 12288, 36, 32, 8, 128, 0},
};

const GenPreset* gen_preset(const char* name) {
    for (size_t i = 0; i < sizeof(k_presets) / sizeof(k_presets[0]); i++)
        if (strcmp(k_presets[i].name, name) == 0) return &k_presets[i];
    return NULL;
}

static uint64_t rng_next(uint64_t* s) { // splitmix64
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rng_uniform(uint64_t* s) { return (rng_next(s) >> 40) * (1.0f / 16777216.0f); }

static float rng_normal(uint64_t* s) {
    float u = rng_uniform(s) + 1e-7f, v = rng_uniform(s);
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

typedef struct {
    char name[128];
    long rows, cols; // cols 0: 1-D
    int kind;        // 0 normal(std), 1 norm gains
    float std;
    int layer;
} GenTensor;

static void fill(uint16_t* out, const GenTensor* t, uint64_t seed, const GenPreset* p) {
    // Each row gets its own stream so large tensors can be filled in parallel.
#pragma omp parallel for schedule(static)
    for (long r = 0; r < t->rows; r++) {
        uint64_t s = seed ^ (0x1234567ull * (uint64_t)(r + 1)) ^ ((uint64_t)(t->layer + 7) << 40);
        long c = t->cols ? t->cols : 1;
        for (long j = 0; j < c; j++) {
            float x;
            if (t->kind == 0) {
                x = t->std * rng_normal(&s);
            } else {
                x = 1.0f + 0.1f * rng_normal(&s);
                // Outlier channels: a few hidden dims carry large gains, more in later layers.
                long ch = r * c + j;
                if (t->cols == 0 && t->rows == p->hidden && ch % 37 == 5 && t->layer >= 0)
                    x *= 4.0f + 6.0f * (float)(t->layer % 3);
            }
            out[r * c + j] = f32_to_bf16(x);
        }
    }
}

void gen_checkpoint(const char* dir, const GenPreset* p, uint64_t seed) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        fail_input("%s: cannot create folder: %s", dir, strerror(errno));
    int L = p->layers, D = p->hidden, I = p->inter, qd = p->heads * p->head_dim,
        kvd = p->kv_heads * p->head_dim;
    int nt = 0;
    GenTensor* ts = xcalloc(11 * L + 3, sizeof(GenTensor));
#define ADD(R, C, K, S, LY, ...)                                                                               \
    do {                                                                                                       \
        GenTensor* t = &ts[nt++];                                                                              \
        snprintf(t->name, sizeof(t->name), __VA_ARGS__);                                                       \
        t->rows = R, t->cols = C, t->kind = K, t->std = S, t->layer = LY;                                      \
    } while (0)
    ADD(p->vocab, D, 0, 0.05f, -1, "model.embed_tokens.weight");
    for (int l = 0; l < L; l++) {
        float s_in = 1.0f / sqrtf((float)D), s_mid = 1.0f / sqrtf((float)I);
        float s_o = 1.0f / sqrtf((float)qd) / sqrtf(2.0f * L);
        ADD(D, 0, 1, 0, l, "model.layers.%d.input_layernorm.weight", l);
        ADD(qd, D, 0, s_in, l, "model.layers.%d.self_attn.q_proj.weight", l);
        ADD(kvd, D, 0, s_in, l, "model.layers.%d.self_attn.k_proj.weight", l);
        ADD(kvd, D, 0, s_in, l, "model.layers.%d.self_attn.v_proj.weight", l);
        ADD(D, qd, 0, s_o, l, "model.layers.%d.self_attn.o_proj.weight", l);
        ADD(p->head_dim, 0, 1, 0, -2, "model.layers.%d.self_attn.q_norm.weight", l);
        ADD(p->head_dim, 0, 1, 0, -2, "model.layers.%d.self_attn.k_norm.weight", l);
        ADD(D, 0, 1, 0, l + 1, "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(I, D, 0, s_in, l, "model.layers.%d.mlp.gate_proj.weight", l);
        ADD(I, D, 0, s_in, l, "model.layers.%d.mlp.up_proj.weight", l);
        ADD(D, I, 0, s_mid / sqrtf(2.0f * L), l, "model.layers.%d.mlp.down_proj.weight", l);
    }
    ADD(D, 0, 1, 0, -2, "model.norm.weight");
    if (!p->tie) ADD(p->vocab, D, 0, 1.0f / sqrtf((float)D), -1, "lm_head.weight");
#undef ADD
    // Header: offsets are contiguous in tensor order; pad to 8 bytes with spaces.
    size_t cap = 256 + (size_t)nt * 256, hl = 0, off = 0;
    char* hdr = xmalloc(cap);
    hl += snprintf(hdr + hl, cap - hl, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < nt; i++) {
        size_t nb = (size_t)ts[i].rows * (ts[i].cols ? ts[i].cols : 1) * 2;
        if (ts[i].cols)
            hl += snprintf(hdr + hl, cap - hl,
                           ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[%ld,%ld],\"data_offsets\":[%zu,%zu]}",
                           ts[i].name, ts[i].rows, ts[i].cols, off, off + nb);
        else
            hl += snprintf(hdr + hl, cap - hl,
                           ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[%ld],\"data_offsets\":[%zu,%zu]}",
                           ts[i].name, ts[i].rows, off, off + nb);
        off += nb;
    }
    hl += snprintf(hdr + hl, cap - hl, "}");
    while (hl % 8) hdr[hl++] = ' ';
    char* path = path_join(dir, "model.safetensors");
    OutFile o;
    out_open(&o, path);
    uint64_t h64 = hl;
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(h64 >> (8 * i));
    fwrite(le, 1, 8, o.f);
    fwrite(hdr, 1, hl, o.f);
    size_t maxn = 0;
    for (int i = 0; i < nt; i++) {
        size_t n = (size_t)ts[i].rows * (ts[i].cols ? ts[i].cols : 1);
        maxn = n > maxn ? n : maxn;
    }
    uint16_t* buf = xmalloc(maxn * 2);
    for (int i = 0; i < nt; i++) {
        fill(buf, &ts[i], seed + 1000003ull * (uint64_t)i, p);
        fwrite(buf, 2, (size_t)ts[i].rows * (ts[i].cols ? ts[i].cols : 1), o.f);
    }
    out_close(&o);
    free(buf);
    free(path);
    free(hdr);
    free(ts);
    path = path_join(dir, "config.json");
    out_open(&o, path);
    fprintf(o.f,
            "{\n  \"architectures\": [\"Qwen3ForCausalLM\"],\n  \"model_type\": \"qwen3\",\n"
            "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n"
            "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n"
            "  \"head_dim\": %d,\n  \"rms_norm_eps\": 1e-06,\n  \"rope_theta\": 1000000.0,\n"
            "  \"tie_word_embeddings\": %s,\n  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n"
            "  \"hidden_act\": \"silu\",\n  \"attention_bias\": false,\n  \"max_position_embeddings\": 40960,\n"
            "  \"torch_dtype\": \"bfloat16\"\n}\n",
            p->vocab, D, I, L, p->heads, p->kv_heads, p->head_dim, p->tie ? "true" : "false", p->vocab - 1,
            p->vocab - 1);
    out_close(&o);
    free(path);
}

void gen_ids(int* ids, int n, int t, int vocab, uint64_t seed) {
    uint64_t s = seed * 2654435761ull + 1;
    // A sparse random transition table: each token has 4 likely successors.
    for (int i = 0; i < n; i++) {
        int cur = (int)(rng_next(&s) % (uint64_t)vocab);
        for (int j = 0; j < t; j++) {
            ids[(long)i * t + j] = cur;
            uint64_t r = rng_next(&s);
            if (r % 8 == 0)
                cur = (int)((r >> 8) % (uint64_t)vocab);
            else
                cur = (int)(((uint64_t)cur * 2654435761ull + (r >> 3) % 4 * 7919ull) % (uint64_t)vocab);
        }
    }
}

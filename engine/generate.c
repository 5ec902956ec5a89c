#include "generate.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <jansson.h>
#include <stddef.h>
#include <unistd.h>

#include "arch.h"
#include "model.h"
#include "util.h"

// Existing presets keep their fields (and so their bytes): tests and benchmarks depend on them.
// One preset a line, in GenPreset's field order after the name.
// clang-format off
static const GenPreset k_presets[] = {
    //                  vocab  hidden  inter layers heads kv  hd
    {.name = "tiny",      512,    128,   384,    4,    4,  2, 32, .tie = 1},
    {.name = "0.6b",   151936,   1024,  3072,   28,   16,  8, 128, .tie = 1},
    {.name = "8b",     151936,   4096, 12288,   36,   32,  8, 128, .tie = 0},
    // A small MoE for local tests: 16 experts, top-4, layer 1 dense (mlp_only_layers).
    {.name = "moe-small", 2048,   256,   512,    4,    8,  2, 32, .experts = 16, .top_k = 4, .moe_inter = 128,
     .n_mlp_only = 1, .mlp_only = {1}},
    // Qwen3-30B-A3B: 48 sparse layers of 128 experts, top-8, untied lm_head; 57 GiB of weights, in
    // shards of at most 4 GiB (Hugging Face's own files are about that size).
    {.name = "30b-a3b", 151936,  2048,  6144,   48,   32,  4, 128, .experts = 128, .top_k = 8, .moe_inter = 768,
     .shard_mib = 4096},
    // The hybrid families (README §2). Qwen3.5-27B: its published config.json's text shape (64 layers, 3
    // Gated DeltaNet layers to one gated full attention; 16 key and 48 value heads of 128 in the Gated
    // DeltaNet, which its 27.8 B parameters imply), rope theta 1e7, mrope sections 11, 11, 10.
    {.name = "qwen3.5-27b", 248320, 5120, 17408,   64,   24,  4, 256, .model_type = "qwen3_5_text",
     .lin_hk = 16, .lin_hv = 48, .lin_dk = 128, .lin_dv = 128, .lin_conv = 4, .full_interval = 4,
     .rope_theta = 1e7, .partial_rotary = 0.25, .mrope = {11, 11, 10}, .max_pos = 262144, .shard_mib = 4096},
    // Qwen3.5-35B-A3B: transformers 5.17's Qwen3_5MoeTextConfig defaults (40 layers, every one sparse: 256
    // experts of 512, top-8, a shared expert of 512; no dense MLP).
    {.name = "qwen3.5-35b-a3b", 248320, 2048, 0,   40,   16,  2, 256, .model_type = "qwen3_5_moe_text",
     .experts = 256, .top_k = 8, .moe_inter = 512, .shared_inter = 512,
     .lin_hk = 16, .lin_hv = 32, .lin_dk = 128, .lin_dv = 128, .lin_conv = 4, .full_interval = 4,
     .rope_theta = 1e4, .partial_rotary = 0.25, .max_pos = 32768, .shard_mib = 4096},
    // Qwen3-Next-80B-A3B: Qwen3NextConfig's defaults (48 layers, 512 experts of 512, top-10, a shared
    // expert of 512, fused in_proj_qkvz / in_proj_ba).
    {.name = "qwen3-next-80b-a3b", 151936, 2048, 5632, 48,   16,  2, 256, .model_type = "qwen3_next",
     .experts = 512, .top_k = 10, .moe_inter = 512, .shared_inter = 512,
     .lin_hk = 16, .lin_hv = 32, .lin_dk = 128, .lin_dv = 128, .lin_conv = 4, .full_interval = 4,
     .rope_theta = 1e4, .partial_rotary = 0.25, .max_pos = 32768, .shard_mib = 4096},
    // Small models of the three hybrid families for tests (every tensor kind, a few MB each).
    {.name = "qwen3.5-small", 512,  128,   256,    4,    4,  2, 32, .model_type = "qwen3_5_text",
     .lin_hk = 2, .lin_hv = 4, .lin_dk = 32, .lin_dv = 32, .lin_conv = 4, .full_interval = 4,
     .rope_theta = 1e7, .partial_rotary = 0.25, .mrope = {2, 1, 1}, .max_pos = 4096},
    {.name = "qwen3.5-moe-small", 512, 128,  0,    4,    4,  2, 32, .model_type = "qwen3_5_moe_text",
     .experts = 8, .top_k = 2, .moe_inter = 64, .shared_inter = 96,
     .lin_hk = 2, .lin_hv = 4, .lin_dk = 32, .lin_dv = 32, .lin_conv = 4, .full_interval = 4,
     .rope_theta = 1e4, .partial_rotary = 0.25, .max_pos = 4096},
    {.name = "qwen3-next-small", 512, 128,   256,    4,    4,  2, 32, .model_type = "qwen3_next",
     .experts = 8, .top_k = 2, .moe_inter = 64, .shared_inter = 96, .n_mlp_only = 1, .mlp_only = {1},
     .lin_hk = 2, .lin_hv = 4, .lin_dk = 32, .lin_dv = 32, .lin_conv = 4, .full_interval = 4,
     .rope_theta = 1e4, .partial_rotary = 0.25, .max_pos = 4096},
    // qwen3.5-moe-small with heads of 64: the fused attention kernel (and so --gpu-gemm fp16) takes it, where
    // the published hybrid models' heads of 256 it does not.
    {.name = "qwen3.5-moe-hd64", 512, 128,  0,    4,    4,  2, 64, .model_type = "qwen3_5_moe_text",
     .experts = 8, .top_k = 2, .moe_inter = 64, .shared_inter = 96,
     .lin_hk = 2, .lin_hv = 4, .lin_dk = 32, .lin_dv = 32, .lin_conv = 4, .full_interval = 4,
     .rope_theta = 1e4, .partial_rotary = 0.25, .max_pos = 4096},
};
// clang-format on
#define N_PRESETS (int)(sizeof(k_presets) / sizeof(k_presets[0]))

const GenPreset* gen_preset(const char* name) {
    for (int i = 0; i < N_PRESETS; i++)
        if (strcmp(k_presets[i].name, name) == 0) return &k_presets[i];
    return NULL;
}

const char* gen_preset_names(void) {
    return "tiny, 0.6b, 8b, moe-small, 30b-a3b, qwen3.5-27b, qwen3.5-35b-a3b, qwen3-next-80b-a3b, "
           "qwen3.5-small, qwen3.5-moe-small, qwen3-next-small, qwen3.5-moe-hd64";
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

// KIND_ALOG: a Gated DeltaNet's A_log, log(A) with A uniform in [1, 16] as transformers initialises it
enum { KIND_NORMAL, KIND_GAIN, KIND_FAST, KIND_ALOG };

typedef struct {
    char name[128];
    long rows, cols; // cols 0: 1-D
    int conv;        // stored [rows, 1, cols] (a depthwise conv1d)
    int kind;        // KIND_NORMAL normal(std), KIND_GAIN norm gains, KIND_FAST about normal(std)
    int minus1;      // a (1 + w) norm: the gain minus 1 is stored
    float std;
    int layer;
    uint64_t seed; // the tensor's stream; row r mixes in r and the layer
    int shard;
    size_t off, nbytes; // within its shard's data section
} GenTensor;

// Rows r0..r1-1 of tensor t. Each row has its own stream, so any split of the rows into chunks
// (and any thread count) gives the same bytes.
static void fill_rows(uint16_t* out, const GenTensor* t, long r0, long r1, const GenPreset* p) {
    long c = t->cols ? t->cols : 1;
    for (long r = r0; r < r1; r++) {
        uint64_t s = t->seed ^ (0x1234567ull * (uint64_t)(r + 1)) ^ ((uint64_t)(t->layer + 7) << 40);
        uint16_t* o = out + (r - r0) * c;
        if (t->kind == KIND_FAST) {
            // Irwin-Hall: the sum of the four 16-bit quarters of one splitmix64 draw, scaled to unit
            // variance. Bounded at 2 sqrt(3) std but close to normal, and several times cheaper than
            // Box-Muller (no log, cos, sqrt): 30 G elements in well under a minute on 16 cores.
            float k = t->std * (1.7320508f / 65536.0f);
            for (long j = 0; j < c; j++) {
                uint64_t z = s + (uint64_t)(j + 1) * 0x9e3779b97f4a7c15ull;
                z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
                z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
                z ^= z >> 31;
                int a =
                    (int)(z & 0xffff) + (int)((z >> 16) & 0xffff) + (int)((z >> 32) & 0xffff) + (int)(z >> 48);
                o[j] = f32_to_bf16(k * (float)(a - 131070));
            }
            continue;
        }
        for (long j = 0; j < c; j++) {
            float x;
            if (t->kind == KIND_NORMAL) {
                x = t->std * rng_normal(&s);
            } else if (t->kind == KIND_ALOG) {
                x = logf(1.0f + 15.0f * rng_uniform(&s));
            } else {
                x = 1.0f + 0.1f * rng_normal(&s);
                // Outlier channels: a few hidden dims carry large gains, more in later layers.
                long ch = r * c + j;
                if (t->cols == 0 && t->rows == p->hidden && ch % 37 == 5 && t->layer >= 0)
                    x *= 4.0f + 6.0f * (float)(t->layer % 3);
                if (t->minus1) x -= 1.0f;
            }
            o[j] = f32_to_bf16(x);
        }
    }
}

// The preset's family: its own, else qwen3 or qwen3_moe.
static const ArchFamily* preset_family(const GenPreset* p) {
    return arch_find(p->model_type ? p->model_type : p->experts ? "qwen3_moe" : "qwen3");
}

// The Config the preset's config.json describes, for the architecture table's shapes and parts.
static Config* preset_config(const GenPreset* p) {
    Config* c = xcalloc(1, sizeof(Config));
    c->fam = preset_family(p);
    if (p->layers > CONFIG_MAX_LAYERS) fail_input("gen: --layers %d is above %d", p->layers, CONFIG_MAX_LAYERS);
    c->vocab_size = p->vocab, c->hidden_size = p->hidden, c->intermediate_size = p->inter;
    c->num_layers = p->layers, c->num_heads = p->heads, c->num_kv_heads = p->kv_heads;
    c->head_dim = p->head_dim;
    c->num_experts = p->experts, c->top_k = p->top_k, c->moe_intermediate = p->moe_inter;
    c->shared_inter = p->shared_inter;
    c->lin_hk = p->lin_hk, c->lin_hv = p->lin_hv, c->lin_dk = p->lin_dk, c->lin_dv = p->lin_dv;
    c->lin_conv = p->lin_conv;
    for (int l = 0; l < p->layers; l++) {
        int sparse = p->experts > 0; // decoder_sparse_step 1
        for (int i = 0; i < p->n_mlp_only; i++) sparse &= p->mlp_only[i] != l;
        c->sparse[l] = (char)sparse;
        c->n_sparse += sparse;
        c->linear[l] = c->fam->hybrid && (l + 1) % p->full_interval != 0;
    }
    return c;
}

// The order a layer's tensors are written in: the input norm, the token mixer (attention or Gated
// DeltaNet), the post-attention norm, the MLP (dense, routed experts, shared expert); each phase in the
// table's order. (This is the order the Qwen3 presets always had, which fixes their bytes.)
static int row_phase(const ArchTensor* r, int first_norm) {
    switch (r->part) {
    case PART_LAYER:
        return first_norm ? 0 : 2;
    case PART_ATTN:
    case PART_GDN:
        return 1;
    default:
        return 3;
    }
}

// The tensors in file order, seeded by their index (which fixes the dense presets' bytes), each
// row of the family's table (arch.h) that the layer has.
static GenTensor* tensor_list(const GenPreset* p, int* nt_out) {
    Config* c = preset_config(p);
    const ArchFamily* f = c->fam;
    int L = p->layers, D = p->hidden, E = p->experts, Im = p->moe_inter;
    size_t cap = 3 + (size_t)L * (f->n_tensors + 3 * (size_t)E);
    GenTensor* ts = xcalloc(cap, sizeof(GenTensor));
    int nt = 0;
    // Dense Qwen3 presets keep Box-Muller normals; the larger ones (30 G elements) draw the cheaper kind.
    int wk = E || f->hybrid ? KIND_FAST : KIND_NORMAL;
    const char* P = f->prefix;
#define ADD(R, C, K, S, LY, ...)                                                                               \
    do {                                                                                                       \
        GenTensor* t = &ts[nt++];                                                                              \
        snprintf(t->name, sizeof(t->name), __VA_ARGS__);                                                       \
        t->rows = R, t->cols = C, t->kind = K, t->std = S, t->layer = LY;                                      \
    } while (0)
    ADD(p->vocab, D, wk, 0.05f, -1, "%sembed_tokens.weight", P);
    for (int l = 0; l < L; l++) {
        for (int ph = 0; ph < 4; ph++) {
            int norms = 0;
            for (int i = 0; i < f->n_tensors; i++) {
                const ArchTensor* r = &f->tensors[i];
                int first = r->part == PART_LAYER && norms++ == 0;
                if (row_phase(r, first) != ph || !arch_layer_has(c, l, r->part)) continue;
                if (r->layout == LAYOUT_EXPERTS) {
                    float s_in = 1.0f / sqrtf((float)D), s_down = 1.0f / sqrtf((float)Im) / sqrtf(2.0f * L);
                    const char* const* x = arch_expert_proj;
                    for (int e = 0; e < E; e++) {
                        ADD(Im, D, wk, s_in, l, "%slayers.%d.%s.%d.%s.weight", P, l, r->name, e, x[0]);
                        ADD(Im, D, wk, s_in, l, "%slayers.%d.%s.%d.%s.weight", P, l, r->name, e, x[1]);
                        ADD(D, Im, wk, s_down, l, "%slayers.%d.%s.%d.%s.weight", P, l, r->name, e, x[2]);
                    }
                    continue;
                }
                long rows = arch_dim(c, r->shape[0]);
                if (r->layout == LAYOUT_CONV) {
                    long k = arch_dim(c, r->shape[2]);
                    ADD(rows, k, wk, 1.0f / sqrtf((float)k), l, "%slayers.%d.%s", P, l, r->name);
                    ts[nt - 1].conv = 1;
                } else if (r->ndim == 2) {
                    // Linears, routers and the shared expert's gate: rows of the inputs' scale (a router's
                    // logits of a few units, so tokens spread over the experts); a linear that writes the
                    // residual stream is scaled down with depth.
                    long in = arch_dim(c, r->shape[1]);
                    float s = 1.0f / sqrtf((float)in);
                    if (r->lin >= 0 && r->shape[0] == DIM_D) s = s / sqrtf(2.0f * L);
                    ADD(rows, in, wk, s, l, "%slayers.%d.%s", P, l, r->name);
                } else if (r->field == offsetof(LayerWeights, gdn_alog)) {
                    ADD(rows, 0, KIND_ALOG, 0, -2, "%slayers.%d.%s", P, l, r->name);
                } else {
                    // Norm gains (and dt_bias, about 1): the layer's two norms carry its outlier channels.
                    int tag = r->part == PART_LAYER ? (first ? l : l + 1) : -2;
                    ADD(rows, 0, KIND_GAIN, 0, tag, "%slayers.%d.%s", P, l, r->name);
                    ts[nt - 1].minus1 = r->plus1 && f->hybrid;
                }
            }
        }
    }
    ADD(D, 0, KIND_GAIN, 0, -2, "%snorm.weight", P);
    ts[nt - 1].minus1 = f->hybrid;
    if (!p->tie) ADD(p->vocab, D, wk, 1.0f / sqrtf((float)D), -1, "lm_head.weight");
#undef ADD
    for (int i = 0; i < nt; i++) {
        ts[i].nbytes = (size_t)ts[i].rows * (ts[i].cols ? ts[i].cols : 1) * 2;
        ts[i].seed = 1000003ull * (uint64_t)i; // + the run's seed, added by gen_checkpoint
    }
    free(c);
    *nt_out = nt;
    return ts;
}

uint64_t gen_weight_bytes(const GenPreset* p) {
    int nt;
    GenTensor* ts = tensor_list(p, &nt);
    uint64_t n = 0;
    for (int i = 0; i < nt; i++) n += ts[i].nbytes;
    free(ts);
    return n;
}

// Shards as Hugging Face cuts them: tensors in order, a new file when the next tensor would take
// the current one past the limit (a tensor larger than the limit gets a file of its own). Sets
// each tensor's shard and offset; returns the number of shards.
static int assign_shards(GenTensor* ts, int nt, uint64_t limit) {
    int sh = 0;
    size_t off = 0;
    for (int i = 0; i < nt; i++) {
        if (limit && off > 0 && off + ts[i].nbytes > limit) sh++, off = 0;
        ts[i].shard = sh;
        ts[i].off = off;
        off += ts[i].nbytes;
    }
    return sh + 1;
}

// One safetensors file holding tensors t0..t1-1: the header, then every tensor filled in parallel
// in chunks of about 1 MiB straight into the mapped file (no buffer, no copy; on tmpfs the pages
// are the file itself). The file is sized first, so its pages exist only as they are filled.
static void write_shard(const char* path, const GenTensor* ts, int t0, int t1, const GenPreset* p) {
    // Header: offsets are contiguous in tensor order; pad to 8 bytes with spaces.
    size_t cap = 256 + (size_t)(t1 - t0) * 256, hl = 0, data = 0;
    char* hdr = xmalloc(cap);
    hl += snprintf(hdr + hl, cap - hl, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = t0; i < t1; i++) {
        const GenTensor* t = &ts[i];
        if (t->conv)
            hl += snprintf(hdr + hl, cap - hl,
                           ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[%ld,1,%ld],\"data_offsets\":[%zu,%zu]}",
                           t->name, t->rows, t->cols, t->off, t->off + t->nbytes);
        else if (t->cols)
            hl += snprintf(hdr + hl, cap - hl,
                           ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[%ld,%ld],\"data_offsets\":[%zu,%zu]}",
                           t->name, t->rows, t->cols, t->off, t->off + t->nbytes);
        else
            hl += snprintf(hdr + hl, cap - hl,
                           ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[%ld],\"data_offsets\":[%zu,%zu]}", t->name,
                           t->rows, t->off, t->off + t->nbytes);
        data = t->off + t->nbytes;
    }
    hl += snprintf(hdr + hl, cap - hl, "}");
    while (hl % 8) hdr[hl++] = ' ';
    size_t total = 8 + hl + data;
    // Chunks: (tensor, first row, end row), about 1 MiB each, for a dynamic schedule.
    long nch = 0;
    for (int i = t0; i < t1; i++) {
        long rb = ts[i].nbytes / ts[i].rows, per = (1L << 20) / rb > 0 ? (1L << 20) / rb : 1;
        nch += (ts[i].rows + per - 1) / per;
    }
    long(*ch)[3] = xmalloc(sizeof(long[3]) * (size_t)nch);
    nch = 0;
    for (int i = t0; i < t1; i++) {
        long rb = ts[i].nbytes / ts[i].rows, per = (1L << 20) / rb > 0 ? (1L << 20) / rb : 1;
        for (long r = 0; r < ts[i].rows; r += per)
            ch[nch][0] = i, ch[nch][1] = r, ch[nch][2] = r + per < ts[i].rows ? r + per : ts[i].rows, nch++;
    }
    OutFile o;
    out_open(&o, path);
    // out_open's descriptor is read-write (tmp_create), as a shared writable mapping needs
    int fd = fileno(o.f);
    if (ftruncate(fd, (off_t)total) != 0) fail_other("%s: cannot size the file: %s", path, strerror(errno));
    uint8_t* map = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) fail_other("%s: mmap: %s", path, strerror(errno));
    uint64_t h64 = hl;
    for (int i = 0; i < 8; i++) map[i] = (uint8_t)(h64 >> (8 * i));
    memcpy(map + 8, hdr, hl);
    uint8_t* base = map + 8 + hl;
#pragma omp parallel for schedule(dynamic, 1)
    for (long k = 0; k < nch; k++) {
        const GenTensor* t = &ts[ch[k][0]];
        size_t rb = t->nbytes / (size_t)t->rows;
        fill_rows((uint16_t*)(base + t->off + (size_t)ch[k][1] * rb), t, ch[k][1], ch[k][2], p);
    }
    if (munmap(map, total) != 0) fail_other("%s: munmap: %s", path, strerror(errno));
    out_close(&o);
    free(ch);
    free(hdr);
}

// A hybrid family's config.json (README §2), as transformers 5.17's config classes save theirs: the
// layer types spelled out, partial RoPE in rope_parameters, the shared expert's width.
static json_t* hybrid_config(const GenPreset* p, const ArchFamily* f) {
    static const struct {
        const char *model_type, *arch;
    } k_arch[] = {{"qwen3_next", "Qwen3NextForCausalLM"},
                  {"qwen3_5_text", "Qwen3_5ForCausalLM"},
                  {"qwen3_5_moe_text", "Qwen3_5MoeForCausalLM"}};
    const char* arch = NULL;
    for (size_t i = 0; i < sizeof(k_arch) / sizeof(k_arch[0]); i++)
        if (!strcmp(k_arch[i].model_type, f->model_type)) arch = k_arch[i].arch;
    if (!arch) fail_other("gen: no config writer for model_type %s", f->model_type);
    json_t* j = json_object();
    json_object_set_new(j, "architectures", json_pack("[s]", arch));
    json_object_set_new(j, "model_type", json_string(f->model_type));
    json_object_set_new(j, "vocab_size", json_integer(p->vocab));
    json_object_set_new(j, "hidden_size", json_integer(p->hidden));
    if (!f->all_sparse) json_object_set_new(j, "intermediate_size", json_integer(p->inter));
    json_object_set_new(j, "num_hidden_layers", json_integer(p->layers));
    json_object_set_new(j, "num_attention_heads", json_integer(p->heads));
    json_object_set_new(j, "num_key_value_heads", json_integer(p->kv_heads));
    json_object_set_new(j, "head_dim", json_integer(p->head_dim));
    json_t* lt = json_array();
    for (int l = 0; l < p->layers; l++)
        json_array_append_new(lt,
                              json_string((l + 1) % p->full_interval ? "linear_attention" : "full_attention"));
    json_object_set_new(j, "layer_types", lt);
    json_object_set_new(j, "full_attention_interval", json_integer(p->full_interval));
    json_object_set_new(j, "linear_num_key_heads", json_integer(p->lin_hk));
    json_object_set_new(j, "linear_num_value_heads", json_integer(p->lin_hv));
    json_object_set_new(j, "linear_key_head_dim", json_integer(p->lin_dk));
    json_object_set_new(j, "linear_value_head_dim", json_integer(p->lin_dv));
    json_object_set_new(j, "linear_conv_kernel_dim", json_integer(p->lin_conv));
    if (f->moe) {
        json_object_set_new(j, "num_experts", json_integer(p->experts));
        json_object_set_new(j, "num_experts_per_tok", json_integer(p->top_k));
        json_object_set_new(j, "moe_intermediate_size", json_integer(p->moe_inter));
        json_object_set_new(j, "shared_expert_intermediate_size", json_integer(p->shared_inter));
        if (!f->always_renorm) json_object_set_new(j, "norm_topk_prob", json_true());
        if (!f->all_sparse) {
            json_object_set_new(j, "decoder_sparse_step", json_integer(1));
            json_t* only = json_array();
            for (int i = 0; i < p->n_mlp_only; i++) json_array_append_new(only, json_integer(p->mlp_only[i]));
            json_object_set_new(j, "mlp_only_layers", only);
        }
        json_object_set_new(j, "output_router_logits", json_false());
        json_object_set_new(j, "router_aux_loss_coef", json_real(0.001));
    }
    json_t* rp = json_pack("{s:s,s:f,s:f}", "rope_type", "default", "rope_theta", p->rope_theta,
                           "partial_rotary_factor", p->partial_rotary);
    if (p->mrope[0] + p->mrope[1] + p->mrope[2] > 0) {
        json_object_set_new(rp, "mrope_section", json_pack("[i,i,i]", p->mrope[0], p->mrope[1], p->mrope[2]));
        json_object_set_new(rp, "mrope_interleaved", json_true());
    }
    json_object_set_new(j, "rope_parameters", rp);
    json_object_set_new(j, "partial_rotary_factor", json_real(p->partial_rotary));
    json_object_set_new(j, "rms_norm_eps", json_real(1e-6));
    json_object_set_new(j, "tie_word_embeddings", json_boolean(p->tie));
    json_object_set_new(j, "bos_token_id", json_integer(p->vocab - 1));
    json_object_set_new(j, "eos_token_id", json_integer(p->vocab - 1));
    json_object_set_new(j, "hidden_act", json_string("silu"));
    json_object_set_new(j, "attention_bias", json_false());
    json_object_set_new(j, "max_position_embeddings", json_integer(p->max_pos));
    json_object_set_new(j, "dtype", json_string("bfloat16"));
    return j;
}

static void write_config(const char* dir, const GenPreset* p) {
    char* path = path_join(dir, "config.json");
    OutFile o;
    out_open(&o, path);
    int D = p->hidden, I = p->inter, L = p->layers;
    const ArchFamily* f = preset_family(p);
    if (f->hybrid) {
        json_t* j = hybrid_config(p, f);
        json_dumpf(j, o.f, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
        fputc('\n', o.f);
        json_decref(j);
    } else if (!p->experts) {
        fprintf(
            o.f,
            "{\n  \"architectures\": [\"Qwen3ForCausalLM\"],\n  \"model_type\": \"qwen3\",\n"
            "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n"
            "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n"
            "  \"head_dim\": %d,\n  \"rms_norm_eps\": 1e-06,\n  \"rope_theta\": 1000000.0,\n"
            "  \"tie_word_embeddings\": %s,\n  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n"
            "  \"hidden_act\": \"silu\",\n  \"attention_bias\": false,\n  \"max_position_embeddings\": 40960,\n"
            "  \"torch_dtype\": \"bfloat16\"\n}\n",
            p->vocab, D, I, L, p->heads, p->kv_heads, p->head_dim, p->tie ? "true" : "false", p->vocab - 1,
            p->vocab - 1);
    } else {
        // Qwen3-30B-A3B's own config.json spells the expert count num_experts; transformers 5
        // reads it as num_local_experts (the attribute map of Qwen3MoeConfig), and so does autoq.
        char only[GEN_MAX_MLP_ONLY * 8 + 4] = "";
        size_t n = 0;
        for (int i = 0; i < p->n_mlp_only; i++)
            n += snprintf(only + n, sizeof(only) - n, "%s%d", i ? ", " : "", p->mlp_only[i]);
        fprintf(
            o.f,
            "{\n  \"architectures\": [\"Qwen3MoeForCausalLM\"],\n  \"model_type\": \"qwen3_moe\",\n"
            "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n"
            "  \"moe_intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
            "  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n  \"num_experts\": %d,\n"
            "  \"num_experts_per_tok\": %d,\n  \"norm_topk_prob\": true,\n  \"decoder_sparse_step\": 1,\n"
            "  \"mlp_only_layers\": [%s],\n  \"output_router_logits\": false,\n"
            "  \"router_aux_loss_coef\": 0.001,\n  \"rms_norm_eps\": 1e-06,\n  \"rope_theta\": 1000000.0,\n"
            "  \"tie_word_embeddings\": %s,\n  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n"
            "  \"hidden_act\": \"silu\",\n  \"attention_bias\": false,\n  \"max_position_embeddings\": 40960,\n"
            "  \"use_sliding_window\": false,\n  \"torch_dtype\": \"bfloat16\"\n}\n",
            p->vocab, D, I, p->moe_inter, L, p->heads, p->kv_heads, p->head_dim, p->experts, p->top_k, only,
            p->tie ? "true" : "false", p->vocab - 1, p->vocab - 1);
    }
    out_close(&o);
    free(path);
}

void gen_checkpoint(const char* dir, const char* shown, const GenPreset* p, uint64_t seed) {
    int nt;
    GenTensor* ts = tensor_list(p, &nt);
    for (int i = 0; i < nt; i++) ts[i].seed += seed;
    int nsh = assign_shards(ts, nt, (uint64_t)p->shard_mib << 20);
    // The files are sized before they are filled (write_shard), and a page that tmpfs cannot
    // provide while filling is a SIGBUS: check the space up front instead.
    uint64_t need = 0;
    for (int i = 0; i < nt; i++) need += ts[i].nbytes;
    struct statvfs sv;
    if (statvfs(dir, &sv) == 0 && (uint64_t)sv.f_bavail * sv.f_frsize < need + (need >> 6))
        fail_input("%s: the weights need %.2f GiB but its file system has %.2f GiB free", shown,
                   need / 1073741824.0, (double)sv.f_bavail * sv.f_frsize / 1073741824.0);
    if (nsh == 1) {
        char* path = path_join(dir, "model.safetensors");
        write_shard(path, ts, 0, nt, p);
        free(path);
    } else {
        char fname[64];
        int t0 = 0;
        Progress pr; // the 30b-a3b preset writes 57 GiB
        progress_init(&pr, "gen: shards", nsh);
        for (int s = 0; s < nsh; s++) {
            int t1 = t0;
            while (t1 < nt && ts[t1].shard == s) t1++;
            snprintf(fname, sizeof(fname), "model-%05d-of-%05d.safetensors", s + 1, nsh);
            char* path = path_join(dir, fname);
            write_shard(path, ts, t0, t1, p);
            free(path);
            t0 = t1;
            progress_step(&pr, 1);
        }
        progress_end(&pr);
        // The index last: a folder whose writing was cut off has no index naming missing shards.
        char* path = path_join(dir, "model.safetensors.index.json");
        OutFile o;
        out_open(&o, path);
        fprintf(o.f, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {\n",
                (unsigned long long)need);
        for (int i = 0; i < nt; i++)
            fprintf(o.f, "    \"%s\": \"model-%05d-of-%05d.safetensors\"%s\n", ts[i].name, ts[i].shard + 1, nsh,
                    i + 1 < nt ? "," : "");
        fprintf(o.f, "  }\n}\n");
        out_close(&o);
        free(path);
    }
    free(ts);
    write_config(dir, p);
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

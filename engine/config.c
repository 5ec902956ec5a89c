#include "config.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch.h"
#include "util.h"
#include "input.h"

// Upper bounds far above any Qwen3 (235B: L 94, D 4096, I 12288, V 151936)
// but low enough that products of two stay far from overflow.
#define CONFIG_MAX_DIM (1 << 20)   // hidden, intermediate
#define CONFIG_MAX_VOCAB (1 << 24) // vocab_size
#define CONFIG_MAX_HEADS 4096      // attention and key/value heads
#define CONFIG_MAX_HEAD_DIM 4096   // head_dim
#define CONFIG_MAX_POS (1 << 30)   // max_position_embeddings

static int get_int(const char* path, json_t* obj, const char* key, int required, int def, int max) {
    json_t* v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required) fail_input("%s: required field '%s' is missing", path, key);
        return def;
    }
    if (!json_is_integer(v)) fail_input("%s: field '%s' must be an integer", path, key);
    json_int_t x = json_integer_value(v);
    if (x <= 0 || x > max)
        fail_input("%s: field '%s' = %lld is out of range [1, %d]", path, key, (long long)x, max);
    return (int)x;
}

static double get_num(const char* path, json_t* obj, const char* key, int* found) {
    json_t* v = json_object_get(obj, key);
    *found = 0;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) fail_input("%s: field '%s' must be a number", path, key);
    *found = 1;
    return json_number_value(v);
}

static int get_bool(const char* path, json_t* obj, const char* key, int def) {
    json_t* v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return def;
    if (!json_is_boolean(v)) fail_input("%s: field '%s' must be true or false", path, key);
    return json_is_true(v);
}

// eos_token_id: an integer or a list (the first is used; all are checked),
// within [0, vocab). -1 when absent.
static int get_eos(const char* path, json_t* obj, int vocab) {
    json_t* v = json_object_get(obj, "eos_token_id");
    if (!v || json_is_null(v)) return -1;
    json_t* one = v;
    size_t n = 1;
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n == 0) return -1;
    }
    int first = -1;
    for (size_t i = 0; i < n; i++) {
        one = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_integer(one))
            fail_input("%s: field 'eos_token_id' must be an integer or a list of them", path);
        json_int_t x = json_integer_value(one);
        if (x < 0 || x >= vocab)
            fail_input("%s: field 'eos_token_id' = %lld is outside the vocabulary [0, %d)", path, (long long)x,
                       vocab);
        if (i == 0) first = (int)x;
    }
    return first;
}

// a * b as an int, or exit 2 naming the fields: the engine indexes with int.
static int int_mul(const char* path, long a, long b, const char* what) {
    if (a * b > 0x7fffffffL) fail_input("%s: %s = %ld x %ld overflows an int", path, what, a, b);
    return (int)(a * b);
}

// transformers < 5 writes rope_theta; transformers 5 writes rope_parameters.rope_theta.
static double get_rope_theta(const char* path, json_t* tc, double def) {
    int found;
    double t = get_num(path, tc, "rope_theta", &found);
    if (found) return t;
    json_t* rp = json_object_get(tc, "rope_parameters");
    if (rp && !json_is_null(rp)) {
        if (!json_is_object(rp)) fail_input("%s: field 'rope_parameters' must be an object", path);
        t = get_num(path, rp, "rope_theta", &found);
        if (found) return t;
    }
    return def;
}

// num_experts, or its other spelling num_local_experts (both must agree when both are given).
static int get_num_experts(const char* path, json_t* tc) {
    int a = get_int(path, tc, "num_experts", 0, 0, CONFIG_MAX_EXPERTS);
    int b = get_int(path, tc, "num_local_experts", 0, 0, CONFIG_MAX_EXPERTS);
    if (a && b && a != b)
        fail_input("%s: field 'num_experts' = %d disagrees with 'num_local_experts' = %d", path, a, b);
    if (!a && !b) fail_input("%s: required field 'num_experts' (or 'num_local_experts') is missing", path);
    return a ? a : b;
}

// mlp_only_layers: a list of distinct layer indices in [0, L) that keep a dense MLP.
static void get_mlp_only(Config* c, const char* path, json_t* tc) {
    json_t* v = json_object_get(tc, "mlp_only_layers");
    if (!v || json_is_null(v)) return;
    if (!json_is_array(v)) fail_input("%s: field 'mlp_only_layers' must be a list of layer indices", path);
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t* x = json_array_get(v, i);
        if (!json_is_integer(x))
            fail_input("%s: field 'mlp_only_layers'[%zu] must be an integer layer index", path, i);
        json_int_t l = json_integer_value(x);
        if (l < 0 || l >= c->num_layers)
            fail_input("%s: field 'mlp_only_layers'[%zu] = %lld is not a layer in [0, %d)", path, i,
                       (long long)l, c->num_layers);
        if (c->sparse[l] == 2)
            fail_input("%s: field 'mlp_only_layers' names layer %lld twice", path, (long long)l);
        c->sparse[l] = 2; // marked; resolved in get_moe
    }
}

// The mixture-of-experts fields and which layers are sparse (README §2).
static void get_moe(Config* c, const char* path, json_t* tc) {
    c->num_experts = get_num_experts(path, tc);
    c->top_k = get_int(path, tc, "num_experts_per_tok", 1, 0, CONFIG_MAX_EXPERTS);
    if (c->top_k > c->num_experts)
        fail_input("%s: field 'num_experts_per_tok' = %d exceeds num_experts %d", path, c->top_k,
                   c->num_experts);
    c->moe_intermediate = get_int(path, tc, "moe_intermediate_size", 1, 0, CONFIG_MAX_DIM);
    int_mul(path, c->moe_intermediate, c->hidden_size, "moe_intermediate_size x hidden_size");
    int_mul(path, 2L * c->moe_intermediate, c->num_experts, "2 x moe_intermediate_size x num_experts");
    int_mul(path, (long)c->num_experts * c->moe_intermediate, c->hidden_size,
            "num_experts x moe_intermediate_size x hidden_size");
    // Qwen3-VL-MoE's and Qwen3.5-MoE's routers always renormalise their top-k weights; Qwen3-MoE's
    // follows the flag (default false), Qwen3-Next's too (default true, as its config class).
    c->norm_topk = c->fam->always_renorm ? 1 : get_bool(path, tc, "norm_topk_prob", c->fam->hybrid);
    if (c->fam->shared_expert) {
        c->shared_inter = get_int(path, tc, "shared_expert_intermediate_size", 1, 0, CONFIG_MAX_DIM);
        int_mul(path, c->shared_inter, c->hidden_size, "shared_expert_intermediate_size x hidden_size");
    }
    if (c->fam->all_sparse) { // Qwen3.5-MoE: every layer sparse; the fields do not exist there
        for (int l = 0; l < c->num_layers; l++) c->sparse[l] = 1;
        c->n_sparse = c->num_layers;
        c->sparse_step = 1;
        return;
    }
    c->sparse_step = get_int(path, tc, "decoder_sparse_step", 0, 1, CONFIG_MAX_LAYERS);
    get_mlp_only(c, path, tc);
    for (int l = 0; l < c->num_layers; l++) {
        c->sparse[l] = c->sparse[l] != 2 && (l + 1) % c->sparse_step == 0;
        c->n_sparse += c->sparse[l];
    }
}

// partial_rotary_factor: rope_parameters' first (transformers 5 moves it there), then the top level,
// else transformers' default for these families, 0.25. The rotated width must be even.
static void get_rotary(Config* c, const char* path, json_t* tc) {
    json_t* rp = json_object_get(tc, "rope_parameters");
    int found = 0;
    double f = 0;
    if (json_is_object(rp)) f = get_num(path, rp, "partial_rotary_factor", &found);
    if (!found) f = get_num(path, tc, "partial_rotary_factor", &found);
    if (!found) f = 0.25;
    if (!isfinite(f) || !(f > 0) || f > 1)
        fail_input("%s: field 'partial_rotary_factor' = %g must be in (0, 1]", path, f);
    c->partial_rotary = f;
    c->rotary_dim = (int)(c->head_dim * f); // transformers: int(head_dim * partial_rotary_factor)
    if (c->rotary_dim < 2 || c->rotary_dim % 2)
        fail_input(
            "%s: field 'partial_rotary_factor' = %g gives %d rotary dimensions of head_dim %d (must be even, "
            ">= 2)",
            path, f, c->rotary_dim, c->head_dim);
    // mrope_section splits the rotary frequencies between the text, height and width positions;
    // text-only input gives all three the same position, so the sections change nothing (README §3).
    json_t* ms = json_is_object(rp) ? json_object_get(rp, "mrope_section") : NULL;
    if (!ms || json_is_null(ms)) ms = json_object_get(tc, "mrope_section");
    if (ms && !json_is_null(ms)) {
        if (!json_is_array(ms) || json_array_size(ms) != 3)
            fail_input("%s: field 'mrope_section' must be a list of 3 integers", path);
        long sum = 0;
        for (int i = 0; i < 3; i++) {
            json_t* x = json_array_get(ms, i);
            if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > CONFIG_MAX_HEAD_DIM)
                fail_input("%s: field 'mrope_section'[%d] must be an integer in [0, %d]", path, i,
                           CONFIG_MAX_HEAD_DIM);
            c->mrope_section[i] = (int)json_integer_value(x);
            sum += c->mrope_section[i];
        }
        if (sum > c->rotary_dim / 2)
            fail_input("%s: field 'mrope_section' sums to %ld, more than the %d rotary frequencies", path, sum,
                       c->rotary_dim / 2);
    }
    c->mrope_interleaved = json_is_object(rp) ? get_bool(path, rp, "mrope_interleaved", 0) : 0;
}

// layer_types (each "linear_attention" or "full_attention"), else full_attention_interval n (layer l is
// full attention iff (l + 1) % n == 0; default 4), as transformers' config classes.
static void get_layer_types(Config* c, const char* path, json_t* tc) {
    json_t* lt = json_object_get(tc, "layer_types");
    int L = c->num_layers;
    if (lt && !json_is_null(lt)) {
        if (!json_is_array(lt)) fail_input("%s: field 'layer_types' must be a list of strings", path);
        if ((int)json_array_size(lt) != L)
            fail_input("%s: field 'layer_types' has %zu entries but num_hidden_layers is %d", path,
                       json_array_size(lt), L);
        for (int l = 0; l < L; l++) {
            const char* t = json_string_value(json_array_get(lt, l));
            if (t && strcmp(t, "linear_attention") == 0)
                c->linear[l] = 1;
            else if (!t || strcmp(t, "full_attention") != 0)
                fail_input("%s: field 'layer_types'[%d] must be \"linear_attention\" or \"full_attention\"",
                           path, l);
        }
    } else {
        int n = get_int(path, tc, "full_attention_interval", 0, 4, CONFIG_MAX_LAYERS);
        for (int l = 0; l < L; l++) c->linear[l] = (l + 1) % n != 0;
    }
    for (int l = 0; l < L; l++) c->n_linear += c->linear[l];
}

// The Gated DeltaNet fields, the attention's partial RoPE and the layer types (README §2).
static void get_hybrid(Config* c, const char* path, json_t* tc) {
    get_rotary(c, path, tc);
    get_layer_types(c, path, tc);
    c->lin_hk = get_int(path, tc, "linear_num_key_heads", 1, 0, CONFIG_MAX_HEADS);
    c->lin_hv = get_int(path, tc, "linear_num_value_heads", 1, 0, CONFIG_MAX_HEADS);
    c->lin_dk = get_int(path, tc, "linear_key_head_dim", 1, 0, CONFIG_MAX_HEAD_DIM);
    c->lin_dv = get_int(path, tc, "linear_value_head_dim", 1, 0, CONFIG_MAX_HEAD_DIM);
    c->lin_conv = get_int(path, tc, "linear_conv_kernel_dim", 1, 0, 64);
    if (c->lin_hv % c->lin_hk != 0)
        fail_input("%s: field 'linear_num_value_heads' = %d is not a multiple of linear_num_key_heads %d", path,
                   c->lin_hv, c->lin_hk);
    long kd = int_mul(path, c->lin_hk, c->lin_dk, "linear_num_key_heads x linear_key_head_dim");
    long vd = int_mul(path, c->lin_hv, c->lin_dv, "linear_num_value_heads x linear_value_head_dim");
    int_mul(path, 2 * kd + 2 * vd, c->hidden_size, "in_proj_qkvz rows x hidden_size");
    int_mul(path, 2 * kd + vd, c->lin_conv, "conv1d channels x linear_conv_kernel_dim");
    // the gated attention's q_proj has 2 H hd rows
    int_mul(path, 2L * c->num_heads * c->head_dim, c->hidden_size,
            "2 x num_attention_heads x head_dim x hidden_size");
}

void config_load(Config* c, const char* dir) {
    memset(c, 0, sizeof(*c));
    char* path = path_join(dir, "config.json");
    if (access(path, R_OK) != 0) fail_input("%s: not a model folder (no readable config.json)", dir);
    json_t* root = input_json(path, "config.json", 0);
    if (!json_is_object(root)) fail_input("%s: not a JSON object", path);
    json_t* mt = json_object_get(root, "model_type");
    if (!json_is_string(mt)) fail_input("%s: field 'model_type' missing or not a string", path);
    snprintf(c->model_type, sizeof(c->model_type), "%s", json_string_value(mt));
    json_t* tc = root;
    const ArchFamily* fam = arch_find(c->model_type);
    if (!fam) {
        char clip[CLIP_BUF];
        fail_input("%s: field 'model_type' = '%s' is not supported (%s)", path,
                   str_clip(clip, json_string_value(mt)), arch_list());
    }
    c->fam = fam;
    snprintf(c->prefix, sizeof(c->prefix), "%s", fam->prefix);
    if (fam->text_config) {
        tc = json_object_get(root, "text_config");
        if (!json_is_object(tc)) fail_input("%s: field 'text_config' missing or not an object", path);
    }
    c->vocab_size = get_int(path, tc, "vocab_size", 1, 0, CONFIG_MAX_VOCAB);
    c->hidden_size = get_int(path, tc, "hidden_size", 1, 0, CONFIG_MAX_DIM);
    // Qwen3.5-MoE has no dense MLP and no intermediate_size.
    c->intermediate_size = get_int(path, tc, "intermediate_size", !fam->all_sparse, 0, CONFIG_MAX_DIM);
    c->num_layers = get_int(path, tc, "num_hidden_layers", 1, 0, CONFIG_MAX_LAYERS);
    c->num_heads = get_int(path, tc, "num_attention_heads", 1, 0, CONFIG_MAX_HEADS);
    c->num_kv_heads = get_int(path, tc, "num_key_value_heads", 0, c->num_heads, CONFIG_MAX_HEADS);
    c->head_dim = get_int(path, tc, "head_dim", 0, c->hidden_size / c->num_heads, CONFIG_MAX_HEAD_DIM);
    if (c->head_dim < 2 || c->head_dim > CONFIG_MAX_HEAD_DIM)
        fail_input("%s: field 'head_dim' = %d is out of range [2, %d]", path, c->head_dim, CONFIG_MAX_HEAD_DIM);
    c->max_pos = get_int(path, tc, "max_position_embeddings", 0, 0, CONFIG_MAX_POS);
    // Every weight matrix's element count and row length must fit the engine's int arithmetic.
    long D = c->hidden_size, V = c->vocab_size;
    int qd = int_mul(path, c->num_heads, c->head_dim, "num_attention_heads x head_dim");
    int_mul(path, c->num_kv_heads, c->head_dim, "num_key_value_heads x head_dim");
    int_mul(path, qd, D, "num_attention_heads x head_dim x hidden_size");
    int_mul(path, c->intermediate_size, D, "intermediate_size x hidden_size");
    int_mul(path, V, D, "vocab_size x hidden_size");
    int found;
    double eps = get_num(path, tc, "rms_norm_eps", &found);
    c->rms_eps = found ? (float)eps : 1e-6f;
    if (!isfinite(c->rms_eps) || !(c->rms_eps > 0))
        fail_input("%s: field 'rms_norm_eps' = %g must be a finite positive number", path, eps);
    c->rope_theta = get_rope_theta(path, tc, fam->rope_theta);
    if (!isfinite(c->rope_theta) || !(c->rope_theta > 0))
        fail_input("%s: field 'rope_theta' = %g must be a finite positive number", path, c->rope_theta);
    // Qwen3-VL keeps tie_word_embeddings at the top level; older exports put it in text_config.
    int tie = get_bool(path, root, "tie_word_embeddings", 0);
    if (tc != root) tie = get_bool(path, tc, "tie_word_embeddings", tie);
    c->tie_word_embeddings = tie;
    c->eos_token_id = get_eos(path, tc, c->vocab_size);
    if (c->eos_token_id < 0 && tc != root) c->eos_token_id = get_eos(path, root, c->vocab_size);
    if (c->num_heads % c->num_kv_heads != 0)
        fail_input("%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path, c->num_heads,
                   c->num_kv_heads);
    if (c->head_dim % 2 != 0) fail_input("%s: field 'head_dim' = %d must be even for RoPE", path, c->head_dim);
    c->rotary_dim = c->head_dim;
    c->partial_rotary = 1;
    if (fam->hybrid) get_hybrid(c, path, tc);
    if (fam->moe) get_moe(c, path, tc);
    json_decref(root);
    free(path);
}

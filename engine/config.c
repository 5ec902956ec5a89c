#include "config.h"

#include <jansson.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

static int get_int(const char* path, json_t* obj, const char* key, int required, int def) {
    json_t* v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required) fail_input("%s: required field '%s' is missing", path, key);
        return def;
    }
    if (!json_is_integer(v)) fail_input("%s: field '%s' must be an integer", path, key);
    json_int_t x = json_integer_value(v);
    if (x <= 0 || x > (1 << 30)) fail_input("%s: field '%s' = %lld is out of range", path, key, (long long)x);
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

static int get_eos(json_t* obj) {
    json_t* v = json_object_get(obj, "eos_token_id");
    if (json_is_array(v)) v = json_array_get(v, 0);
    return json_is_integer(v) ? (int)json_integer_value(v) : -1;
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

void config_load(Config* c, const char* dir) {
    memset(c, 0, sizeof(*c));
    char* path = path_join(dir, "config.json");
    json_error_t err;
    if (access(path, R_OK) != 0) fail_input("%s: not a model folder (no readable config.json)", dir);
    json_t* root = json_load_file(path, 0, &err);
    if (!root) fail_input("%s: invalid JSON at line %d: %s", path, err.line, err.text);
    if (!json_is_object(root)) fail_input("%s: not a JSON object", path);
    json_t* mt = json_object_get(root, "model_type");
    if (!json_is_string(mt)) fail_input("%s: field 'model_type' missing or not a string", path);
    snprintf(c->model_type, sizeof(c->model_type), "%s", json_string_value(mt));
    json_t* tc = root;
    if (strcmp(c->model_type, "qwen3") == 0) {
        c->arch = ARCH_QWEN3;
        strcpy(c->prefix, "model.");
    } else if (strcmp(c->model_type, "qwen3_vl") == 0) {
        c->arch = ARCH_QWEN3_VL;
        strcpy(c->prefix, "model.language_model.");
        tc = json_object_get(root, "text_config");
        if (!json_is_object(tc)) fail_input("%s: field 'text_config' missing or not an object", path);
    } else {
        fail_input("%s: field 'model_type' = '%s' is not supported (qwen3, qwen3_vl)", path, c->model_type);
    }
    c->vocab_size = get_int(path, tc, "vocab_size", 1, 0);
    c->hidden_size = get_int(path, tc, "hidden_size", 1, 0);
    c->intermediate_size = get_int(path, tc, "intermediate_size", 1, 0);
    c->num_layers = get_int(path, tc, "num_hidden_layers", 1, 0);
    c->num_heads = get_int(path, tc, "num_attention_heads", 1, 0);
    c->num_kv_heads = get_int(path, tc, "num_key_value_heads", 0, c->num_heads);
    c->head_dim = get_int(path, tc, "head_dim", 0, c->hidden_size / c->num_heads);
    int found;
    double eps = get_num(path, tc, "rms_norm_eps", &found);
    c->rms_eps = found ? (float)eps : 1e-6f;
    c->rope_theta = get_rope_theta(path, tc, c->arch == ARCH_QWEN3_VL ? 5e6 : 1e4);
    if (!(c->rope_theta > 0)) fail_input("%s: field 'rope_theta' must be positive", path);
    // Qwen3-VL keeps tie_word_embeddings at the top level; older exports put it in text_config.
    int tie = get_bool(path, root, "tie_word_embeddings", 0);
    if (tc != root) tie = get_bool(path, tc, "tie_word_embeddings", tie);
    c->tie_word_embeddings = tie;
    c->eos_token_id = get_eos(tc);
    if (c->eos_token_id < 0) c->eos_token_id = get_eos(root);
    if (c->num_heads % c->num_kv_heads != 0)
        fail_input("%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path, c->num_heads,
                   c->num_kv_heads);
    if (c->head_dim % 2 != 0) fail_input("%s: field 'head_dim' = %d must be even for RoPE", path, c->head_dim);
    json_decref(root);
    free(path);
}

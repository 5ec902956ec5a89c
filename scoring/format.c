#include "format.h"

#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../engine/util.h"

static void find_path(char* out, size_t cap, const char* name) {
    if (strchr(name, '/') || strstr(name, ".json")) {
        snprintf(out, cap, "%s", name);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = 0;
        char* dir = dirname(exe);
        // ./autoq and build/autoq both sit within one level of the source tree.
        const char* rel[] = {"configs/formats", "../configs/formats"};
        for (int i = 0; i < 2; i++) {
            snprintf(out, cap, "%s/%s/%s.json", dir, rel[i], name);
            if (access(out, R_OK) == 0) return;
        }
    }
    snprintf(out, cap, "configs/formats/%s.json", name);
}

static void stem(char* out, size_t cap, const char* path) {
    const char* b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(out, cap, "%.*s", (int)cap - 1, b);
    char* dot = strstr(out, ".json");
    if (dot) *dot = 0;
}

static int get_bits(const char* path, const char* q, json_t* v) {
    json_t* b = json_object_get(v, "num_bits");
    if (!json_is_integer(b)) fail_input("%s: quant_cfg['%s'].num_bits missing or not an integer", path, q);
    int bits = (int)json_integer_value(b);
    if (bits != 4 && bits != 8)
        fail_input("%s: quant_cfg['%s'].num_bits = %d is not supported (4 or 8)", path, q, bits);
    return bits;
}

static int get_bool(const char* path, const char* q, json_t* v, const char* key, int def) {
    json_t* b = json_object_get(v, key);
    if (!b) return def;
    if (!json_is_boolean(b)) fail_input("%s: quant_cfg['%s'].%s must be true or false", path, q, key);
    return json_is_true(b);
}

static void check_keys(const char* path, const char* q, json_t* v, const char* const* allowed) {
    const char* key;
    json_t* val;
    json_object_foreach(v, key, val) {
        int ok = 0;
        for (int i = 0; allowed[i]; i++) ok |= strcmp(key, allowed[i]) == 0;
        if (!ok) fail_input("%s: quant_cfg['%s'] has unknown field '%s'", path, q, key);
    }
}

static void parse_weight(Format* f, json_t* v) {
    static const char* const allowed[] = {"num_bits", "axis", "narrow_range", "enable", NULL};
    const char* q = "*weight_quantizer";
    if (!json_is_object(v)) fail_input("%s: quant_cfg['%s'] must be an object", f->path, q);
    check_keys(f->path, q, v, allowed);
    f->w_enable = get_bool(f->path, q, v, "enable", 1);
    if (!f->w_enable) return;
    f->w.bits = get_bits(f->path, q, v);
    f->w.narrow = get_bool(f->path, q, v, "narrow_range", 0);
    json_t* axis = json_object_get(v, "axis");
    if (!json_is_integer(axis) || json_integer_value(axis) != 0)
        fail_input("%s: quant_cfg['%s'].axis must be 0 (per output channel)", f->path, q);
}

static void parse_input(Format* f, json_t* v) {
    static const char* const allowed[] = {"num_bits", "type", "block_sizes", "narrow_range",
                                          "enable",   "axis", NULL};
    const char* q = "*input_quantizer";
    if (!json_is_object(v)) fail_input("%s: quant_cfg['%s'] must be an object", f->path, q);
    check_keys(f->path, q, v, allowed);
    f->in_enable = get_bool(f->path, q, v, "enable", 1);
    if (!f->in_enable) return;
    f->in.bits = get_bits(f->path, q, v);
    f->in.narrow = get_bool(f->path, q, v, "narrow_range", 0);
    json_t* type = json_object_get(v, "type");
    if (!json_is_string(type) || strcmp(json_string_value(type), "dynamic") != 0)
        fail_input("%s: quant_cfg['%s'].type must be \"dynamic\" (per-token inputs)", f->path, q);
    // Per token: block_sizes {"-1": null} (ModelOpt's spelling of amax over the last dimension).
    json_t* bs = json_object_get(v, "block_sizes");
    json_t* last = bs ? json_object_get(bs, "-1") : NULL;
    if (!json_is_object(bs) || json_object_size(bs) != 1 || !last || !json_is_null(last))
        fail_input("%s: quant_cfg['%s'].block_sizes must be {\"-1\": null} (per token)", f->path, q);
}

void format_load(Format* f, const char* name, int ct) {
    memset(f, 0, sizeof(*f));
    find_path(f->path, sizeof(f->path), name);
    f->builtin = !(strchr(name, '/') || strstr(name, ".json"));
    stem(f->name, sizeof(f->name), f->path);
    json_error_t err;
    if (access(f->path, R_OK) != 0) fail_input("%s: format '%s' not found", f->path, name);
    json_t* root = json_load_file(f->path, 0, &err);
    if (!root) fail_input("%s: invalid JSON at line %d: %s", f->path, err.line, err.text);
    const char* key;
    json_t* val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "quant_cfg") && strcmp(key, "algorithm"))
            fail_input("%s: unknown field '%s' (expected quant_cfg, algorithm)", f->path, key);
    }
    json_t* alg = json_object_get(root, "algorithm");
    if (alg && !(json_is_string(alg) && strcmp(json_string_value(alg), "max") == 0))
        fail_input("%s: field 'algorithm' must be \"max\"", f->path);
    json_t* qc = json_object_get(root, "quant_cfg");
    if (!json_is_object(qc)) fail_input("%s: field 'quant_cfg' missing or not an object", f->path);
    json_object_foreach(qc, key, val) {
        if (strcmp(key, "*weight_quantizer") == 0)
            parse_weight(f, val);
        else if (strcmp(key, "*input_quantizer") == 0)
            parse_input(f, val);
        else
            fail_input("%s: quant_cfg has unknown quantizer '%s'", f->path, key);
    }
    if (!json_object_get(qc, "*weight_quantizer"))
        fail_input("%s: quant_cfg['*weight_quantizer'] missing", f->path);
    if (!f->w_enable && !f->in_enable) fail_input("%s: every quantizer is disabled", f->path);
    f->w.ct = f->in.ct = ct;
    f->bits = 16;
    if (f->w_enable && f->w.bits < f->bits) f->bits = f->w.bits;
    if (f->in_enable && f->in.bits < f->bits) f->bits = f->in.bits;
    json_decref(root);
}

int formats_load(Format* out, int max, const char* csv, int ct) {
    char* s = xstrdup(csv);
    int n = 0;
    char* save = NULL;
    for (char* tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == max) fail_input("--format: at most %d formats", max);
        format_load(&out[n++], tok, ct);
    }
    free(s);
    if (n == 0) fail_input("--format: no format given");
    return n;
}

#include "format.h"

#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../engine/util.h"

// A format file is a few hundred bytes; anything this large is not one (and a FIFO never ends).
#define FORMAT_FILE_MAX (1 << 20)

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

// A name goes into JSON keys, YAML comments and tables: valid UTF-8, no control
// characters, no comma (the HDF5 `format` attribute joins names with commas).
static void check_name(const char* name, const char* where, const char* field) {
    size_t n = strlen(name);
    json_t* s = json_string(name);
    int ok = s != NULL && n > 0 && n < sizeof(((Format*)0)->name);
    json_decref(s);
    for (const unsigned char* p = (const unsigned char*)name; ok && *p; p++)
        ok = *p >= 0x20 && *p != 0x7f && *p != ',';
    if (!ok)
        fail_input("%s: %s must be 1 to %zu bytes of UTF-8 without control characters or commas", where, field,
                   sizeof(((Format*)0)->name) - 1);
}

static void set_stem(Format* f) {
    const char* b = strrchr(f->path, '/');
    b = b ? b + 1 : f->path;
    char buf[sizeof(f->path)];
    snprintf(buf, sizeof(buf), "%s", b);
    char* dot = strstr(buf, ".json");
    if (dot) *dot = 0;
    check_name(buf, f->path, "the file name (the format's name)");
    memcpy(f->name, buf, strlen(buf) + 1); // check_name bounds it by sizeof(f->name)
}

static int get_bits(const char* path, const char* q, json_t* v) {
    json_t* b = json_object_get(v, "num_bits");
    if (!json_is_integer(b)) fail_input("%s: quant_cfg['%s'].num_bits missing or not an integer", path, q);
    json_int_t bits = json_integer_value(b);
    if (bits != 4 && bits != 8)
        fail_input("%s: quant_cfg['%s'].num_bits = %lld is not supported (4 or 8)", path, q, (long long)bits);
    return (int)bits;
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

// Every field is checked when present, also in a disabled quantizer: what is stored is what was validated.
static void parse_weight(Format* f, json_t* v) {
    static const char* const allowed[] = {"num_bits", "axis", "narrow_range", "enable", NULL};
    const char* q = "*weight_quantizer";
    if (!json_is_object(v)) fail_input("%s: quant_cfg['%s'] must be an object", f->path, q);
    check_keys(f->path, q, v, allowed);
    f->w_enable = get_bool(f->path, q, v, "enable", 1);
    f->w.narrow = get_bool(f->path, q, v, "narrow_range", 0);
    if (f->w_enable || json_object_get(v, "num_bits")) f->w.bits = get_bits(f->path, q, v);
    json_t* axis = json_object_get(v, "axis");
    if ((f->w_enable || axis) && (!json_is_integer(axis) || json_integer_value(axis) != 0))
        fail_input("%s: quant_cfg['%s'].axis must be 0 (per output channel)", f->path, q);
}

static void parse_input(Format* f, json_t* v) {
    static const char* const allowed[] = {"num_bits", "type", "block_sizes", "narrow_range",
                                          "enable",   "axis", NULL};
    const char* q = "*input_quantizer";
    if (!json_is_object(v)) fail_input("%s: quant_cfg['%s'] must be an object", f->path, q);
    check_keys(f->path, q, v, allowed);
    f->in_enable = get_bool(f->path, q, v, "enable", 1);
    f->in.narrow = get_bool(f->path, q, v, "narrow_range", 0);
    if (f->in_enable || json_object_get(v, "num_bits")) f->in.bits = get_bits(f->path, q, v);
    json_t* type = json_object_get(v, "type");
    if ((f->in_enable || type) && (!json_is_string(type) || strcmp(json_string_value(type), "dynamic") != 0))
        fail_input("%s: quant_cfg['%s'].type must be \"dynamic\" (per-token inputs)", f->path, q);
    // Per token: block_sizes {"-1": null} (ModelOpt's spelling of amax over the last dimension).
    json_t* bs = json_object_get(v, "block_sizes");
    json_t* last = bs ? json_object_get(bs, "-1") : NULL;
    if ((f->in_enable || bs) &&
        (!json_is_object(bs) || json_object_size(bs) != 1 || !last || !json_is_null(last)))
        fail_input("%s: quant_cfg['%s'].block_sizes must be {\"-1\": null} (per token)", f->path, q);
    // block_sizes sets the granularity; an axis beside it could only contradict it.
    json_t* axis = json_object_get(v, "axis");
    if (axis && !json_is_null(axis))
        fail_input("%s: quant_cfg['%s'].axis must be null (block_sizes gives per token)", f->path, q);
}

// The {"quant_cfg", "algorithm"} object; f->path names it in messages.
static void parse_root(Format* f, json_t* root, int ct) {
    if (!json_is_object(root)) fail_input("%s: a format must be a JSON object", f->path);
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
    char* text = json_dumps(root, JSON_COMPACT);
    if (!text || strlen(text) >= sizeof(f->def))
        fail_input("%s: the format definition is longer than %zu bytes", f->path, sizeof(f->def) - 1);
    snprintf(f->def, sizeof(f->def), "%s", text);
    free(text);
}

static json_t* load_file(const char* path, const char* name) {
    struct stat st;
    if (access(path, R_OK) != 0 || stat(path, &st) != 0) fail_input("%s: format '%s' not found", path, name);
    if (!S_ISREG(st.st_mode) || st.st_size > FORMAT_FILE_MAX)
        fail_input("%s: format '%s' is not a regular file of at most %d bytes", path, name, FORMAT_FILE_MAX);
    json_error_t err;
    json_t* root = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    if (!root) fail_input("%s: invalid JSON at line %d: %s", path, err.line, err.text);
    return root;
}

void format_load(Format* f, const char* name, int ct) {
    memset(f, 0, sizeof(*f));
    find_path(f->path, sizeof(f->path), name);
    f->builtin = !(strchr(name, '/') || strstr(name, ".json"));
    set_stem(f);
    json_t* root = load_file(f->path, name);
    parse_root(f, root, ct);
    json_decref(root);
}

int formats_load(Format* out, int max, const char* csv, int ct) {
    char* s = xstrdup(csv);
    int n = 0;
    char* save = NULL;
    for (char* tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == max) fail_input("--format: at most %d formats", max);
        format_load(&out[n], tok, ct);
        // Outputs name a group's choice by format name, so names must tell formats apart.
        for (int k = 0; k < n; k++)
            if (strcmp(out[k].name, out[n].name) == 0)
                fail_input("--format: %s and %s are both named '%s'", out[k].path, out[n].path, out[n].name);
        n++;
    }
    free(s);
    if (n == 0) fail_input("--format: no format given");
    return n;
}

json_t* format_to_json(const Format* f) {
    json_t* def = json_loads(f->def, 0, NULL);
    json_t* j = json_pack("{s:s,s:i,s:s,s:o}", "name", f->name, "bits", f->bits, "numerics",
                          f->w.ct ? "compressed-tensors" : "modelopt", "definition", def);
    if (!j) fail_other("format '%s': cannot represent its definition as JSON", f->name);
    return j;
}

void format_from_json(Format* f, const json_t* rec, const char* where) {
    static const char* const allowed[] = {"name", "bits", "numerics", "definition", NULL};
    memset(f, 0, sizeof(*f));
    snprintf(f->path, sizeof(f->path), "%s", where);
    if (!json_is_object(rec)) fail_input("%s: a format record must be a JSON object", where);
    const char* key;
    json_t* val;
    json_object_foreach((json_t*)rec, key, val) {
        int ok = 0;
        for (int i = 0; allowed[i]; i++) ok |= strcmp(key, allowed[i]) == 0;
        if (!ok) fail_input("%s: unknown field '%s' (expected name, bits, numerics, definition)", where, key);
    }
    json_t* name = json_object_get(rec, "name");
    if (!json_is_string(name)) fail_input("%s: field 'name' missing or not a string", where);
    check_name(json_string_value(name), where, "field 'name'");
    memcpy(f->name, json_string_value(name), strlen(json_string_value(name)) + 1);
    json_t* num = json_object_get(rec, "numerics");
    const char* ns = json_is_string(num) ? json_string_value(num) : "";
    if (strcmp(ns, "modelopt") && strcmp(ns, "compressed-tensors"))
        fail_input("%s: field 'numerics' must be \"modelopt\" or \"compressed-tensors\"", where);
    json_t* def = json_object_get(rec, "definition");
    if (!def) fail_input("%s: field 'definition' missing", where);
    parse_root(f, def, strcmp(ns, "compressed-tensors") == 0);
    json_t* bits = json_object_get(rec, "bits");
    if (!json_is_integer(bits) || json_integer_value(bits) != f->bits)
        fail_input("%s: field 'bits' must be an integer equal to the definition's %d bits", where, f->bits);
}

#include "format.h"
#include "../engine/input.h"

#include <dirent.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../engine/util.h"

// A format file is a few hundred bytes; anything this large is not one (and a FIFO never ends).
#define FORMAT_FILE_MAX (1 << 20)
// ModelOpt's config names for formats (resolve_alias), beside the format files: not a format.
#define ALIASES_NAME "aliases"
#define ALIASES_FILE ALIASES_NAME ".json"

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

// num_bits: an integer (4 or 8: int) or ModelOpt's (E, M) tuple as a JSON pair: [4, 3] E4M3, [2, 1] E2M1.
static void get_bits(const char* path, const char* q, json_t* v, QuantSpec* s) {
    json_t* b = json_object_get(v, "num_bits");
    if (json_is_array(b) && json_array_size(b) == 2 && json_is_integer(json_array_get(b, 0)) &&
        json_is_integer(json_array_get(b, 1))) {
        json_int_t e = json_integer_value(json_array_get(b, 0)), m = json_integer_value(json_array_get(b, 1));
        if (e == 4 && m == 3)
            s->kind = QUANT_FP8_E4M3, s->bits = 8;
        else if (e == 2 && m == 1)
            s->kind = QUANT_FP4_E2M1, s->bits = 4;
        else
            fail_input(
                "%s: quant_cfg['%s'].num_bits = [%lld, %lld] is not supported ([4, 3] E4M3 or [2, 1] E2M1)",
                path, q, (long long)e, (long long)m);
        return;
    }
    if (!json_is_integer(b))
        fail_input("%s: quant_cfg['%s'].num_bits missing or not an integer (4 or 8) or an [E, M] pair ([4, 3], "
                   "[2, 1])",
                   path, q);
    json_int_t bits = json_integer_value(b);
    if (bits != 4 && bits != 8)
        fail_input("%s: quant_cfg['%s'].num_bits = %lld is not supported (4 or 8)", path, q, (long long)bits);
    s->kind = QUANT_INT, s->bits = (int)bits;
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

// block_sizes with a block along the input: {"-1": N, "type": "static" | "dynamic", "scale_bits": [4, 3] |
// [8, 0]}. Integers take fp32 scales (no scale_bits); E2M1 needs E4M3 (NVFP4: blocks of 16 or 32) or E8M0
// (MXFP4: blocks of 32) scales; E4M3 values come per channel or per token, never in blocks here.
static void parse_blocks(const char* path, const char* q, json_t* bs, QuantSpec* s, int weight) {
    static const char* const allowed[] = {"-1", "type", "scale_bits", NULL};
    char field[64];
    snprintf(field, sizeof(field), "%s'].block_sizes", q);
    check_keys(path, field, bs, allowed);
    json_t* n = json_object_get(bs, "-1");
    if (!json_is_integer(n) || json_integer_value(n) < 1 || json_integer_value(n) > 4096)
        fail_input("%s: quant_cfg['%s'].block_sizes['-1'] must be a block size from 1 to 4096", path, q);
    s->block = (int)json_integer_value(n);
    json_t* type = json_object_get(bs, "type");
    const char* ts = json_is_string(type) ? json_string_value(type) : "";
    // A weight's max-calibrated static block amax is its dynamic one; inputs are dynamic only.
    if (!(strcmp(ts, "dynamic") == 0 || (weight && strcmp(ts, "static") == 0)))
        fail_input("%s: quant_cfg['%s'].block_sizes.type must be \"dynamic\"%s", path, q,
                   weight ? " or \"static\"" : " (inputs are quantized per call)");
    json_t* sb = json_object_get(bs, "scale_bits");
    s->scale = QSCALE_F32;
    if (sb) {
        json_int_t e = -1, m = -1;
        if (json_is_array(sb) && json_array_size(sb) == 2 && json_is_integer(json_array_get(sb, 0)) &&
            json_is_integer(json_array_get(sb, 1)))
            e = json_integer_value(json_array_get(sb, 0)), m = json_integer_value(json_array_get(sb, 1));
        if (e == 4 && m == 3)
            s->scale = QSCALE_E4M3;
        else if (e == 8 && m == 0)
            s->scale = QSCALE_E8M0;
        else
            fail_input("%s: quant_cfg['%s'].block_sizes.scale_bits must be [4, 3] (E4M3) or [8, 0] (E8M0)",
                       path, q);
    }
    if (s->kind == QUANT_INT && s->scale != QSCALE_F32)
        fail_input("%s: quant_cfg['%s'].block_sizes.scale_bits: integer blocks take fp32 scales (leave it out)",
                   path, q);
    if (s->kind == QUANT_FP8_E4M3)
        fail_input(
            "%s: quant_cfg['%s'].block_sizes: E4M3 values in blocks (MXFP8) are not supported; E4M3 is per "
            "channel (weights, axis 0) or per token (inputs, {\"-1\": null})",
            path, q);
    if (s->kind == QUANT_FP4_E2M1 && s->scale == QSCALE_F32)
        fail_input(
            "%s: quant_cfg['%s'].block_sizes.scale_bits is required for E2M1 ([4, 3] NVFP4, [8, 0] MXFP4)",
            path, q);
    if (s->scale == QSCALE_E4M3 && s->block != 16 && s->block != 32)
        fail_input("%s: quant_cfg['%s'].block_sizes['-1'] = %d: E4M3-scaled E2M1 blocks are 16 (NVFP4) or 32",
                   path, q, s->block);
    if (s->scale == QSCALE_E8M0 && s->block != 32)
        fail_input("%s: quant_cfg['%s'].block_sizes['-1'] = %d: E8M0-scaled (MX) blocks are 32", path, q,
                   s->block);
}

// Every field is checked when present, also in a disabled quantizer: what is stored is what was validated.
// Weights: per output channel (axis 0, int or E4M3) or in blocks along the input (block_sizes, axis null).
static void parse_weight(Format* f, json_t* v) {
    static const char* const allowed[] = {"num_bits", "axis", "narrow_range", "enable", "block_sizes", NULL};
    const char* q = "*weight_quantizer";
    if (!json_is_object(v)) fail_input("%s: quant_cfg['%s'] must be an object", f->path, q);
    check_keys(f->path, q, v, allowed);
    f->w_enable = get_bool(f->path, q, v, "enable", 1);
    f->w.narrow = get_bool(f->path, q, v, "narrow_range", 0);
    if (f->w_enable || json_object_get(v, "num_bits")) get_bits(f->path, q, v, &f->w);
    json_t* axis = json_object_get(v, "axis");
    json_t* bs = json_object_get(v, "block_sizes");
    if (bs && !json_is_null(bs)) {
        if (!json_is_object(bs)) fail_input("%s: quant_cfg['%s'].block_sizes must be an object", f->path, q);
        if (axis && !json_is_null(axis))
            fail_input(
                "%s: quant_cfg['%s'].axis must be null beside block_sizes (ModelOpt: they cannot coexist)",
                f->path, q);
        parse_blocks(f->path, q, bs, &f->w, 1);
        return;
    }
    if ((f->w_enable || axis) && (!json_is_integer(axis) || json_integer_value(axis) != 0))
        fail_input("%s: quant_cfg['%s'].axis must be 0 (per output channel)", f->path, q);
    if (f->w_enable && f->w.kind == QUANT_FP4_E2M1)
        fail_input("%s: quant_cfg['%s']: E2M1 weights need block_sizes (NVFP4 or MXFP4)", f->path, q);
}

// Inputs: per token ({"-1": null}, "type": "dynamic"; int or E4M3) or in dynamic blocks (E2M1).
static void parse_input(Format* f, json_t* v) {
    static const char* const allowed[] = {"num_bits", "type", "block_sizes", "narrow_range",
                                          "enable",   "axis", NULL};
    const char* q = "*input_quantizer";
    if (!json_is_object(v)) fail_input("%s: quant_cfg['%s'] must be an object", f->path, q);
    check_keys(f->path, q, v, allowed);
    f->in_enable = get_bool(f->path, q, v, "enable", 1);
    f->in.narrow = get_bool(f->path, q, v, "narrow_range", 0);
    if (f->in_enable || json_object_get(v, "num_bits")) get_bits(f->path, q, v, &f->in);
    json_t* type = json_object_get(v, "type");
    json_t* bs = json_object_get(v, "block_sizes");
    json_t* last = json_is_object(bs) ? json_object_get(bs, "-1") : NULL;
    if (json_is_object(bs) && last && json_is_integer(last)) { // blocks along the input
        if (type && !(json_is_string(type) && strcmp(json_string_value(type), "dynamic") == 0))
            fail_input("%s: quant_cfg['%s'].type must be \"dynamic\" (inputs are quantized per call)", f->path,
                       q);
        parse_blocks(f->path, q, bs, &f->in, 0);
        if (f->in.kind != QUANT_FP4_E2M1)
            fail_input(
                "%s: quant_cfg['%s'].block_sizes: only E2M1 inputs come in blocks; int and E4M3 inputs are "
                "per token ({\"-1\": null})",
                f->path, q);
    } else {
        if ((f->in_enable || type) &&
            (!json_is_string(type) || strcmp(json_string_value(type), "dynamic") != 0))
            fail_input("%s: quant_cfg['%s'].type must be \"dynamic\" (per-token inputs)", f->path, q);
        // Per token: block_sizes {"-1": null} (ModelOpt's spelling of amax over the last dimension).
        if ((f->in_enable || bs) &&
            (!json_is_object(bs) || json_object_size(bs) != 1 || !last || !json_is_null(last)))
            fail_input("%s: quant_cfg['%s'].block_sizes must be {\"-1\": null} (per token)", f->path, q);
        if (f->in_enable && f->in.kind == QUANT_FP4_E2M1)
            fail_input("%s: quant_cfg['%s']: E2M1 inputs need block_sizes (NVFP4 or MXFP4)", f->path, q);
    }
    // block_sizes sets the granularity; an axis beside it could only contradict it.
    json_t* axis = json_object_get(v, "axis");
    if (axis && !json_is_null(axis))
        fail_input("%s: quant_cfg['%s'].axis must be null (block_sizes gives per token)", f->path, q);
}

// A KV-cache quantizer (ModelOpt's "*[kv]_bmm_quantizer"): E4M3 with one per-tensor scale ("axis": null,
// no block_sizes; FP8_KV_CFG) or NVFP4 (E2M1 in dynamic blocks of 16, E4M3 scales; NVFP4_KV_CFG).
static void parse_kv(Format* f, json_t* v) {
    static const char* const allowed[] = {"num_bits", "axis", "enable", "block_sizes", NULL};
    const char* q = KV_QUANTIZER_KEY;
    if (!json_is_object(v)) fail_input("%s: quant_cfg['%s'] must be an object", f->path, q);
    check_keys(f->path, q, v, allowed);
    if (!get_bool(f->path, q, v, "enable", 1))
        fail_input("%s: quant_cfg['%s'].enable must be true (bf16 is always a KV-cache choice)", f->path, q);
    get_bits(f->path, q, v, &f->kvq);
    json_t* axis = json_object_get(v, "axis");
    if (axis && !json_is_null(axis))
        fail_input("%s: quant_cfg['%s'].axis must be null (one scale per tensor, or blocks)", f->path, q);
    json_t* bs = json_object_get(v, "block_sizes");
    if (f->kvq.kind == QUANT_FP8_E4M3) {
        if (bs && !json_is_null(bs))
            fail_input(
                "%s: quant_cfg['%s'].block_sizes: an E4M3 KV cache has one per-tensor scale (leave it out)",
                f->path, q);
        return;
    }
    if (f->kvq.kind != QUANT_FP4_E2M1 || !json_is_object(bs))
        fail_input(
            "%s: quant_cfg['%s']: a KV cache is E4M3 ([4, 3], one per-tensor scale) or NVFP4 ([2, 1] with "
            "block_sizes)",
            f->path, q);
    parse_blocks(f->path, q, bs, &f->kvq, 0);
    if (f->kvq.scale != QSCALE_E4M3 || f->kvq.block != 16)
        fail_input(
            "%s: quant_cfg['%s'].block_sizes: an E2M1 KV cache is NVFP4: blocks of 16, scale_bits [4, 3]",
            f->path, q);
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
        else if (strcmp(key, KV_QUANTIZER_KEY) == 0)
            f->kv = 1, parse_kv(f, val);
        else
            fail_input("%s: quant_cfg has unknown quantizer '%s'", f->path, key);
    }
    if (f->kv && json_object_size(qc) != 1)
        fail_input("%s: quant_cfg['%s'] is a KV-cache format: it stands alone (no weight or input quantizer)",
                   f->path, KV_QUANTIZER_KEY);
    if (!f->kv && !json_object_get(qc, "*weight_quantizer"))
        fail_input("%s: quant_cfg['*weight_quantizer'] missing", f->path);
    if (!f->kv && !f->w_enable && !f->in_enable) fail_input("%s: every quantizer is disabled", f->path);
    f->w.ct = f->in.ct = f->kvq.ct = ct;
    if (ct && f->kv && f->kvq.kind == QUANT_FP4_E2M1)
        fail_input("%s: quant_cfg['%s']: --numerics compressed-tensors is not implemented for E2M1 (NVFP4) "
                   "quantizers; score them with --numerics modelopt",
                   f->path, KV_QUANTIZER_KEY);
    if (ct)
        for (int k = 0; k < 2; k++)
            if ((k ? f->in_enable : f->w_enable) && (k ? f->in : f->w).kind == QUANT_FP4_E2M1)
                fail_input(
                    "%s: quant_cfg['%s']: --numerics compressed-tensors is not implemented for E2M1 (NVFP4, "
                    "MXFP4) quantizers; score them with --numerics modelopt",
                    f->path, k ? "*input_quantizer" : "*weight_quantizer");
    f->bits = 16;
    if (f->w_enable && f->w.bits < f->bits) f->bits = f->w.bits;
    if (f->in_enable && f->in.bits < f->bits) f->bits = f->in.bits;
    if (f->kv) f->bits = f->kvq.bits;
    char* text = json_dumps(root, JSON_COMPACT);
    if (!text || strlen(text) >= sizeof(f->def))
        fail_input("%s: the format definition is longer than %zu bytes", f->path, sizeof(f->def) - 1);
    snprintf(f->def, sizeof(f->def), "%s", text);
    free(text);
}

static json_t* load_file(const char* path, const char* name) {
    json_t* root = input_json_opt(path, "format file", JSON_REJECT_DUPLICATES);
    if (!root) fail_input("%s: format '%s' not found", path, name);
    return root;
}

static int cmp_str(const void* a, const void* b) { return strcmp(*(char* const*)a, *(char* const*)b); }

// The format names of configs/formats/ (dir), comma-separated, sorted; aliases.json is not one.
static void known_formats(char* out, size_t cap, const char* dir) {
    char* names[64];
    int n = 0;
    DIR* d = opendir(dir);
    struct dirent* e;
    while (d && (e = readdir(d)) && n < 64) {
        size_t len = strlen(e->d_name);
        if (len > 5 && !strcmp(e->d_name + len - 5, ".json") && strcmp(e->d_name, ALIASES_FILE))
            names[n++] = strndup(e->d_name, len - 5);
    }
    if (d) closedir(d);
    qsort(names, n, sizeof(char*), cmp_str);
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        size_t at = strlen(out);
        snprintf(out + at, cap - at, "%s%s", i ? ", " : "", names[i]);
        free(names[i]);
    }
}

// A built-in name with no file of its own: one of ModelOpt's config names that configs/formats/
// aliases.json maps to the autoq format of the same quantizers (f->path becomes that file), or
// exit 2 saying why that config is none of ours, or listing the names known.
static void resolve_alias(Format* f, const char* name) {
    char apath[sizeof(f->path)], dir[sizeof(f->path)];
    find_path(apath, sizeof(apath), ALIASES_NAME);
    snprintf(dir, sizeof(dir), "%s", apath);
    char* slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    json_t* root = json_load_file(apath, JSON_REJECT_DUPLICATES, NULL);
    json_t* mo = json_object_get(root, "modelopt");
    char mo_names[2048] = "";
    const char* key;
    json_t* v;
    json_object_foreach(mo, key, v) {
        const char* to = json_string_value(json_object_get(v, "format"));
        const char* differs = json_string_value(json_object_get(v, "differs"));
        if (strcasecmp(key, name) == 0 && to && !strchr(to, '/')) {
            char path[sizeof(f->path) + 128];
            snprintf(path, sizeof(path), "%s/%.100s.json", dir, to);
            if (strlen(path) >= sizeof(f->path)) fail_input("%s: path too long", dir);
            memcpy(f->path, path, strlen(path) + 1);
            json_decref(root);
            return;
        }
        if (strcasecmp(key, name) == 0 && differs)
            fail_input(
                "--format %s: ModelOpt's %s has %s, so no autoq format equals it (a quant_cfg JSON file of "
                "its quantizers may be given instead)",
                name, key, differs);
        size_t at = strlen(mo_names);
        if (to) snprintf(mo_names + at, sizeof(mo_names) - at, "%s%s (%s)", at ? ", " : "", key, to);
    }
    json_decref(root);
    char known[1024];
    known_formats(known, sizeof(known), dir);
    fail_input("--format: format '%s' not found: the formats are %s (%s), or a quant_cfg JSON file's path; "
               "ModelOpt config names accepted: %s",
               name, known, dir, mo_names[0] ? mo_names : "none (aliases.json missing)");
}

void format_load(Format* f, const char* name, int ct) {
    memset(f, 0, sizeof(*f));
    find_path(f->path, sizeof(f->path), name);
    f->builtin = !(strchr(name, '/') || strstr(name, ".json"));
    if (f->builtin && (access(f->path, R_OK) != 0 || strcmp(name, ALIASES_NAME) == 0)) resolve_alias(f, name);
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

int64_t format_weight_bits(const Format* f, long out, long in) {
    int64_t n = (int64_t)out * in;
    if (!f->w_enable) return 16 * n;
    const QuantSpec* w = &f->w;
    if (w->block == 0) return w->bits * n + 16 * (int64_t)out;
    int64_t blocks = (int64_t)out * ((in + w->block - 1) / w->block);
    return w->bits * n + blocks * (w->scale == QSCALE_F32 ? 16 : 8);
}

int format_misfit_block(const Format* f, long in) {
    if (f->w_enable && f->w.block > 0 && in % f->w.block) return f->w.block;
    if (f->in_enable && f->in.block > 0 && in % f->in.block) return f->in.block;
    return 0;
}

int64_t format_kv_bits(const Format* f, int64_t n) {
    if (!f) return 16 * n;
    if (f->kvq.block == 0) return f->kvq.bits * n;
    return f->kvq.bits * n + 8 * ((n + f->kvq.block - 1) / f->kvq.block);
}

int64_t format_kv_scale_bits(const Format* f) { return f ? 64 : 0; }

// Engine profiles (target.h): configs/targets/NAME.json read and validated, formats classified by their
// numerics, and the search's filter built from the rules.
#include "target.h"

#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../engine/input.h"
#include "../engine/util.h"

static const char* k_targets[] = {"vllm", "sglang", "trtllm"};

// configs/targets/NAME.json beside the binary (./autoq, build/autoq), else in the working directory.
static void target_path(char* out, size_t cap, const char* name) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = 0;
        char* dir = dirname(exe);
        const char* rel[] = {"configs/targets", "../configs/targets"};
        for (int i = 0; i < 2; i++) {
            snprintf(out, cap, "%s/%s/%s.json", dir, rel[i], name);
            if (access(out, R_OK) == 0) return;
        }
    }
    snprintf(out, cap, "configs/targets/%s.json", name);
}

static const char* str_field(const Target* t, json_t* o, const char* key, const char* where) {
    json_t* v = json_object_get(o, key);
    if (!json_is_string(v)) fail_input("%s: field '%s%s' must be a string", t->path, where, key);
    return json_string_value(v);
}

static void copy_str(char* dst, size_t cap, const char* s, const Target* t, const char* field) {
    if (strlen(s) >= cap) fail_input("%s: field '%s' is too long", t->path, field);
    snprintf(dst, cap, "%s", s);
}

// Every rule names its source and the version it was read from (README "Serving engines").
static void check_rule(const Target* t, json_t* r, const char* where) {
    if (!json_is_object(r)) fail_input("%s: field '%s' must be an object", t->path, where);
    char w[160];
    snprintf(w, sizeof(w), "%s.", where);
    str_field(t, r, "source", w);
    str_field(t, r, "version", w);
}

void target_load(Target* t, const char* name, const char* arch) {
    int known = 0;
    for (size_t i = 0; i < sizeof(k_targets) / sizeof(k_targets[0]); i++)
        known |= strcmp(name, k_targets[i]) == 0;
    if (!known) fail_input("--target '%s' is not one of vllm, sglang, trtllm", name);
    char path[512];
    target_path(path, sizeof(path), name);
    target_load_path(t, name, path, arch);
}

void target_load_path(Target* t, const char* name, const char* path, const char* arch) {
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    snprintf(t->path, sizeof(t->path), "%s", path);
    t->root = input_json(t->path, "engine profile", JSON_REJECT_DUPLICATES);
    if (!json_is_object(t->root)) fail_input("%s: must be a JSON object", t->path);
    copy_str(t->engine, sizeof(t->engine), str_field(t, t->root, "engine", ""), t, "engine");
    copy_str(t->checkpoint, sizeof(t->checkpoint), str_field(t, t->root, "checkpoint", ""), t, "checkpoint");
    if (!arch) arch = str_field(t, t->root, "default_arch", "");
    json_t* archs = json_object_get(t->root, "archs");
    int ok = 0;
    size_t i;
    json_t* v;
    if (!json_is_array(archs)) fail_input("%s: field 'archs' must be an array", t->path);
    json_array_foreach(archs, i, v) ok |= json_is_string(v) && strcmp(json_string_value(v), arch) == 0;
    if (!ok) fail_input("%s: --arch '%s' is not one of the profile's 'archs'", t->path, arch);
    copy_str(t->arch, sizeof(t->arch), arch, t, "arch");
    json_t* fm = json_object_get(t->root, "formats");
    if (!json_is_object(fm)) fail_input("%s: field 'formats' must be an object", t->path);
    const char* key;
    json_object_foreach(fm, key, v) {
        char where[96];
        snprintf(where, sizeof(where), "formats.%s", key);
        check_rule(t, v, where);
        json_t* s = json_object_get(v, t->arch);
        const char* sv = json_is_string(s) ? json_string_value(s) : "";
        if (strcmp(sv, "none") && strcmp(sv, "native") && strcmp(sv, "weight_only"))
            fail_input("%s: field 'formats.%s.%s' must be \"native\", \"weight_only\" or \"none\"", t->path,
                       key, t->arch);
    }
    json_t* fu = json_object_get(t->root, "fused");
    if (!json_is_array(fu) || json_array_size(fu) > TARGET_MAX_FUSED)
        fail_input("%s: field 'fused' must be an array of at most %d entries", t->path, TARGET_MAX_FUSED);
    json_array_foreach(fu, i, v) {
        char where[64];
        snprintf(where, sizeof(where), "fused[%zu]", i);
        check_rule(t, v, where);
        json_t* ms = json_object_get(v, "members");
        if (!json_is_array(ms) || json_array_size(ms) < 1 || json_array_size(ms) > TARGET_MAX_MEMBERS)
            fail_input("%s: field '%s.members' must be an array of 1 to %d names", t->path, where,
                       TARGET_MAX_MEMBERS);
        size_t k;
        json_t* m;
        json_array_foreach(ms, k, m) {
            if (!json_is_string(m) || strlen(json_string_value(m)) >= sizeof(t->fused[0][0]))
                fail_input("%s: field '%s.members[%zu]' must be a module name", t->path, where, k);
            snprintf(t->fused[i][k], sizeof(t->fused[i][k]), "%s", json_string_value(m));
        }
        t->n_members[i] = (int)json_array_size(ms);
    }
    t->n_fused = (int)json_array_size(fu);
    json_t* moe = json_object_get(t->root, "moe_one_format_per_layer");
    check_rule(t, moe, "moe_one_format_per_layer");
    t->moe_one_format = json_is_true(json_object_get(moe, "value"));
    json_t* kvo = json_object_get(t->root, "kv_cache_one_format_per_model");
    check_rule(t, kvo, "kv_cache_one_format_per_model");
    if (!json_is_boolean(json_object_get(kvo, "value")))
        fail_input("%s: field 'kv_cache_one_format_per_model.value' must be true or false", t->path);
    t->kv_one_format = json_is_true(json_object_get(kvo, "value"));
    json_t* kv = json_object_get(t->root, "kv_cache_formats");
    if (!json_is_object(kv)) fail_input("%s: field 'kv_cache_formats' must be an object", t->path);
    json_object_foreach(kv, key, v) {
        char where[96];
        snprintf(where, sizeof(where), "kv_cache_formats.%s", key);
        check_rule(t, v, where);
        if (!json_is_boolean(json_object_get(v, t->arch)))
            fail_input("%s: field '%s.%s' must be true or false", t->path, where, t->arch);
    }
}

void target_free(Target* t) {
    json_decref(t->root);
    t->root = NULL;
}

const char* target_format_kind(const Format* f) {
    if (!f->w_enable) return NULL;
    QuantSpec w = f->w, in = f->in;
    int no_in = !f->in_enable || in.bits == 0;
    int int8_tok = !no_in && in.kind == QUANT_INT && in.bits == 8 && in.block == 0;
    int fp8_tok = !no_in && in.kind == QUANT_FP8_E4M3 && in.block == 0;
    if (w.kind == QUANT_INT && w.block == 0) {
        if (w.bits == 4) return no_in ? "w4a16_channel" : int8_tok ? "w4a8" : NULL;
        if (w.bits == 8) return no_in ? "w8a16" : int8_tok ? "w8a8" : NULL;
    }
    if (w.kind == QUANT_INT && w.bits == 4 && w.block > 0) return no_in ? "w4a16" : fp8_tok ? "w4a8_fp8" : NULL;
    if (w.kind == QUANT_FP8_E4M3 && w.block == 0) return no_in ? "fp8_weight_only" : fp8_tok ? "fp8" : NULL;
    if (w.kind == QUANT_FP4_E2M1 && no_in && w.block == 16 && w.scale == QSCALE_E4M3)
        return "nvfp4_weight_only";
    if (w.kind == QUANT_FP4_E2M1 && !no_in && in.kind == QUANT_FP4_E2M1) {
        if (w.block == 16 && w.scale == QSCALE_E4M3 && in.block == 16) return "nvfp4";
        if (w.block == 32 && w.scale == QSCALE_E8M0 && in.block == 32) return "mxfp4";
    }
    return NULL;
}

TargetStatus target_kind_status(const Target* t, const char* kind, const char** why, const char** source) {
    if (why) *why = "no rule of this profile names this combination of weight and input quantizers";
    if (source) *source = t->path;
    json_t* r = kind ? json_object_get(json_object_get(t->root, "formats"), kind) : NULL;
    if (!r) return TS_NONE;
    if (why) *why = json_string_value(json_object_get(r, "why"));
    if (source) *source = json_string_value(json_object_get(r, "source"));
    const char* s = json_string_value(json_object_get(r, t->arch));
    return strcmp(s, "native") == 0 ? TS_NATIVE : strcmp(s, "weight_only") == 0 ? TS_WEIGHT_ONLY : TS_NONE;
}

int target_kv_formats(const Target* t, const char** names, int max) {
    int n = 0;
    const char* key;
    json_t* v;
    json_object_foreach(json_object_get(t->root, "kv_cache_formats"), key,
                        v) if (json_is_true(json_object_get(v, t->arch)) && n < max) names[n++] = key;
    return n;
}

// "model.layers.3.self_attn.q_proj" -> leaf "q_proj", parent length.
static const char* leaf_of(const char* name, size_t* parent) {
    const char* dot = strrchr(name, '.');
    *parent = dot ? (size_t)(dot - name) : 0;
    return dot ? dot + 1 : name;
}

// The fused unit a linear belongs to, as a key (parent + '#' + fused index, or the layer's experts
// prefix); "" when it is fused with nothing.
void target_fused_key(const Target* t, const char* name, char* key, size_t cap) {
    key[0] = 0;
    const char* ex = strstr(name, ".mlp.experts.");
    if (ex && t->moe_one_format) {
        const char* d = ex + strlen(".mlp.experts.");
        if (*d >= '0' && *d <= '9') {
            snprintf(key, cap, "%.*s#experts", (int)(d - name), name);
            return;
        }
    }
    size_t parent;
    const char* leaf = leaf_of(name, &parent);
    for (int i = 0; i < t->n_fused; i++)
        for (int k = 0; k < t->n_members[i]; k++)
            if (t->n_members[i] > 1 && strcmp(leaf, t->fused[i][k]) == 0) {
                snprintf(key, cap, "%.*s#%d", (int)parent, name, i);
                return;
            }
}

typedef struct {
    char key[256];
    int lin;
} KeyLin;

static int by_key(const void* a, const void* b) {
    const KeyLin *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : x->lin - y->lin;
}

// Every fused unit lies in one group of the scores: else the solver could give its members two formats.
static void check_fused_groups(const Target* t, const ScoreTable* st) {
    KeyLin* kl = xcalloc(st->nl ? st->nl : 1, sizeof(KeyLin));
    int n = 0;
    for (int i = 0; i < st->nl; i++) {
        target_fused_key(t, st->lname[i], kl[n].key, sizeof(kl[n].key));
        if (kl[n].key[0]) kl[n++].lin = i;
    }
    qsort(kl, n, sizeof(KeyLin), by_key);
    for (int i = 1; i < n; i++)
        if (strcmp(kl[i].key, kl[i - 1].key) == 0 && st->lgroup[kl[i].lin] != st->lgroup[kl[i - 1].lin]) {
            char a[CLIP_BUF], b[CLIP_BUF];
            const char* what = strstr(kl[i].key, "#experts") ? "one format per MoE layer's experts"
                                                             : "fuses them into one module";
            fail_input("--target %s: %s and %s are scored as two groups, but %s %s (%s); score without "
                       "--no-grouping",
                       t->name, str_clip(a, st->lname[kl[i - 1].lin]), str_clip(b, st->lname[kl[i].lin]),
                       t->engine, what, t->path);
        }
    free(kl);
}

uint8_t* target_deny_table(const Target* t, const ScoreTable* st) {
    check_fused_groups(t, st);
    uint8_t* deny = xcalloc((size_t)st->nf * st->ng + 1, 1);
    const char* kvs[8];
    int nkv = target_kv_formats(t, kvs, 8);
    for (int f = 0; f < st->nf; f++) {
        if (st->fmts[f].kv) { // a KV-cache format: offered where the profile's kv_cache_formats serve it
            const char* kk = st->fmts[f].kvq.kind == QUANT_FP8_E4M3 ? "fp8_e4m3" : "nvfp4";
            int ok = 0;
            for (int i = 0; i < nkv; i++) ok |= strcmp(kvs[i], kk) == 0;
            if (ok) continue;
            for (int g = 0; g < st->ng; g++) deny[(size_t)f * st->ng + g] = 1;
            warn_msg("--target %s --arch %s: KV-cache format '%s' (%s) is not offered: the profile's "
                     "kv_cache_formats do not serve it on this architecture [%s]",
                     t->name, t->arch, st->fmts[f].name, kk, t->path);
            continue;
        }
        const char *why, *src, *kind = target_format_kind(&st->fmts[f]);
        TargetStatus s = target_kind_status(t, kind, &why, &src);
        if (s == TS_NATIVE) continue;
        if (s == TS_WEIGHT_ONLY) {
            warn_msg("--target %s --arch %s: format '%s' is served with its weights only (inputs stay bf16, "
                     "not as scored): %s [%s]",
                     t->name, t->arch, st->fmts[f].name, why ? why : "", src ? src : "");
            continue;
        }
        for (int g = 0; g < st->ng; g++) deny[(size_t)f * st->ng + g] = 1;
        warn_msg("--target %s --arch %s: format '%s' (%s) is not offered: %s [%s]", t->name, t->arch,
                 st->fmts[f].name, kind ? kind : "a combination no profile names", why ? why : "",
                 src ? src : "");
    }
    return deny;
}

// A profile string that validation does not require ("why", "read_from", "as"): "" when absent.
static const char* opt_str(json_t* o, const char* key) {
    const char* s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static const char* status_word(const char* s) {
    return strcmp(s, "native") == 0 ? "served" : strcmp(s, "weight_only") == 0 ? "weights only" : "NOT served";
}

void target_print(const Target* t, FILE* f) {
    fprintf(f, "target       %s (%s checkpoints), arch %s; rules from %s\n", t->engine, t->checkpoint, t->arch,
            t->path);
    fprintf(f, "read from    %s\n", opt_str(t->root, "read_from"));
    const char* key;
    json_t* v;
    json_object_foreach(json_object_get(t->root, "formats"), key, v) {
        fprintf(f, "format       %-16s %-12s %s\n", key,
                status_word(json_string_value(json_object_get(v, t->arch))), opt_str(v, "why"));
        fprintf(f, "             %-16s %-12s source: %s (%s)\n", "", "",
                json_string_value(json_object_get(v, "source")),
                json_string_value(json_object_get(v, "version")));
    }
    size_t i;
    json_array_foreach(json_object_get(t->root, "fused"), i, v) {
        fprintf(f, "fused        ");
        for (int k = 0; k < t->n_members[i]; k++) fprintf(f, "%s%s", k ? " + " : "", t->fused[i][k]);
        fprintf(f, " -> %s share one format; source: %s (%s)\n", opt_str(v, "as"),
                json_string_value(json_object_get(v, "source")),
                json_string_value(json_object_get(v, "version")));
    }
    json_t* moe = json_object_get(t->root, "moe_one_format_per_layer");
    fprintf(f, "moe          %s; source: %s (%s)\n",
            t->moe_one_format ? "one format for all experts of a layer" : "experts may differ",
            json_string_value(json_object_get(moe, "source")),
            json_string_value(json_object_get(moe, "version")));
    json_t* kvo = json_object_get(t->root, "kv_cache_one_format_per_model");
    fprintf(f, "kv cache     %s; source: %s (%s)\n",
            t->kv_one_format ? "one format for every layer" : "a format per layer",
            json_string_value(json_object_get(kvo, "source")),
            json_string_value(json_object_get(kvo, "version")));
    json_object_foreach(json_object_get(t->root, "kv_cache_formats"), key, v) fprintf(
        f, "kv cache     %-16s %-12s source: %s (%s)\n", key,
        json_is_true(json_object_get(v, t->arch)) ? "served" : "NOT served",
        json_string_value(json_object_get(v, "source")), json_string_value(json_object_get(v, "version")));
}

json_t* target_to_json(const Target* t) {
    json_t* j = json_object();
    json_object_set_new(j, "target", json_string(t->name));
    json_object_set_new(j, "arch", json_string(t->arch));
    json_object_set_new(j, "profile", json_string(t->path));
    json_object_set(j, "rules", t->root);
    const char* kv[8];
    int n = target_kv_formats(t, kv, 8);
    json_t* a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_string(kv[i]));
    json_object_set_new(j, "kv_cache_formats", a);
    json_object_set_new(j, "kv_cache_one_format_per_model", json_boolean(t->kv_one_format));
    return j;
}

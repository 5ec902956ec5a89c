// Reading a recipe JSON back (autoq eval --recipe): per-linear choices.
#include <jansson.h>
#include <string.h>
#include <sys/stat.h>

#include "../engine/util.h"
#include "../engine/input.h"
#include "../scoring/groups.h"
#include "recipe.h"

static json_t* recipe_load(const char* path) {
    json_t* j = input_json(path, "recipe", JSON_REJECT_DUPLICATES);
    if (!json_is_object(j)) fail_input("%s: a recipe must be a JSON object", path);
    return j;
}

// Stored definitions; a recipe written before they were stored names a built-in format or a file.
static void recipe_format(const char* path, json_t* rec, int f, int ct, Format* out) {
    char where[600];
    snprintf(where, sizeof(where), "%s: formats[%d]", path, f);
    if (json_object_get(rec, "definition")) {
        format_from_json(out, rec, where);
        return;
    }
    json_t* p = json_object_get(rec, "path");
    json_t* n = json_object_get(rec, "name");
    if (!json_is_string(n)) fail_input("%s.name missing or not a string", where);
    if (p && !json_is_string(p)) fail_input("%s.path must be a string", where);
    const char* src = p ? json_string_value(p) : json_string_value(n);
    warn_msg("%s has no stored definition (an older recipe); loading format '%s'", where, src);
    format_load(out, src, ct);
}

static int recipe_formats(const char* path, json_t* j, Format* fmts) {
    json_t* fs = json_object_get(j, "formats");
    json_t* num = json_object_get(j, "numerics");
    if (!json_is_array(fs) || json_array_size(fs) == 0 || json_array_size(fs) > MAX_FORMATS)
        fail_input("%s: field 'formats' must be a list of 1 to %d formats", path, MAX_FORMATS);
    const char* ns = json_is_string(num) ? json_string_value(num) : "";
    if (num && strcmp(ns, "modelopt") && strcmp(ns, "compressed-tensors"))
        fail_input("%s: field 'numerics' must be \"modelopt\" or \"compressed-tensors\"", path);
    int ct = strcmp(ns, "compressed-tensors") == 0;
    int nf = (int)json_array_size(fs);
    for (int f = 0; f < nf; f++) {
        recipe_format(path, json_array_get(fs, f), f, ct, &fmts[f]);
        if (num && fmts[f].w.ct != ct)
            fail_input("%s: formats[%d].numerics disagrees with field 'numerics' ('%s')", path, f, ns);
        for (int k = 0; k < f; k++)
            if (strcmp(fmts[k].name, fmts[f].name) == 0)
                fail_input("%s: formats[%d] and formats[%d] are both named '%s'", path, k, f, fmts[f].name);
    }
    return nf;
}

static int recipe_choice(const char* path, size_t gi, json_t* ch, const Format* fmts, int nf) {
    if (!json_is_string(ch)) fail_input("%s: groups[%zu].choice missing or not a string", path, gi);
    for (int k = 0; k < nf; k++)
        if (strcmp(fmts[k].name, json_string_value(ch)) == 0) return k;
    if (strcmp(json_string_value(ch), "bf16") != 0)
        fail_input("%s: groups[%zu].choice '%s' is neither bf16 nor a listed format", path, gi,
                   json_string_value(ch));
    return -1;
}

// A linear may take one choice only; -2 marks "not named yet". Returns how many members name no
// linear of m: exit 2 unless allow_partial (a recipe made for another model).
static int recipe_members(const char* path, size_t gi, json_t* mem, const Model* m, int f, int* choice,
                          int allow_partial) {
    if (!json_is_array(mem)) fail_input("%s: groups[%zu].members missing or not a list", path, gi);
    size_t mi;
    json_t* name;
    int unknown = 0;
    json_array_foreach(mem, mi, name) {
        if (!json_is_string(name)) fail_input("%s: groups[%zu].members[%zu] is not a string", path, gi, mi);
        int found = -1;
        for (int k = 0; k < m->n_linears && found < 0; k++)
            if (strcmp(m->linears[k].name, json_string_value(name)) == 0) found = k;
        if (found < 0 && !allow_partial)
            fail_input("%s: groups[%zu].members[%zu] is not a linear of %s ('%s'): a recipe for another model? "
                       "(--allow-partial skips it)",
                       path, gi, mi, m->dir, json_string_value(name));
        if (found < 0) {
            unknown++;
            continue;
        }
        if (choice[found] != -2)
            fail_input("%s: groups[%zu].members[%zu] ('%s') is named a second time", path, gi, mi,
                       json_string_value(name));
        choice[found] = f;
    }
    return unknown;
}

// A recipe fits the model when it names every linear of it, each once, and nothing else: autoq's
// recipes list every group, kept and disabled ones too (README §8). Anything less would deploy part of
// a recipe made for another model without a word.
static void recipe_check_fit(const char* path, const Model* m, const int* choice, int unknown,
                             int allow_partial) {
    int missing = 0, first = -1;
    for (int i = 0; i < m->n_linears; i++)
        if (choice[i] == -2 && !missing++) first = i;
    if (missing && !allow_partial)
        fail_input("%s: field 'groups' assigns nothing to %d of the %d linears of %s (first %s): a recipe for "
                   "another model? (--allow-partial keeps them bf16)",
                   path, missing, m->n_linears, m->dir, m->linears[first].name);
    if (missing)
        warn_msg("%s: %d of the %d linears of %s are not in the recipe and stay bf16 (--allow-partial)", path,
                 missing, m->n_linears, m->dir);
    if (unknown)
        warn_msg("%s: %d members are not linears of %s and are skipped (--allow-partial)", path, unknown,
                 m->dir);
}

int recipe_read(const char* path, const Model* m, Format* fmts, int* choice, int allow_partial) {
    json_t* j = recipe_load(path);
    int nf = recipe_formats(path, j, fmts);
    json_t* gs = json_object_get(j, "groups");
    if (!json_is_array(gs)) fail_input("%s: field 'groups' missing or not a list", path);
    for (int i = 0; i < m->n_linears; i++) choice[i] = -2;
    size_t gi;
    json_t* g;
    int unknown = 0;
    json_array_foreach(gs, gi, g) {
        if (!json_is_object(g)) fail_input("%s: groups[%zu] is not an object", path, gi);
        int f = recipe_choice(path, gi, json_object_get(g, "choice"), fmts, nf);
        unknown += recipe_members(path, gi, json_object_get(g, "members"), m, f, choice, allow_partial);
    }
    recipe_check_fit(path, m, choice, unknown, allow_partial);
    for (int i = 0; i < m->n_linears; i++)
        if (choice[i] == -2) choice[i] = -1; // not in the recipe (--allow-partial): kept bf16
    json_decref(j);
    return nf;
}

int recipe_read_kv(const char* path, const Model* m, const Format* fmts, int nf, int* kv, int allow_partial) {
    json_t* j = recipe_load(path);
    json_t* gs = json_object_get(j, "groups");
    for (int l = 0; l < m->c.num_layers; l++) kv[l] = -1;
    size_t gi;
    json_t* g;
    int n = 0;
    json_array_foreach(gs, gi, g) {
        json_t* mem = json_object_get(g, "members");
        const char* name = json_string_value(json_object_get(g, "name"));
        int f = recipe_choice(path, gi, json_object_get(g, "choice"), fmts, nf);
        if (!(f >= 0 && fmts[f].kv) && !(json_is_array(mem) && json_array_size(mem) == 0)) continue;
        if (f >= 0 && !fmts[f].kv)
            fail_input(
                "%s: groups[%zu] (a KV-cache group, no members) chooses '%s', which is not a KV-cache format",
                path, gi, fmts[f].name);
        if (f >= 0 && (!json_is_array(mem) || json_array_size(mem)))
            fail_input(
                "%s: groups[%zu] chooses KV-cache format '%s' but has members (only KV-cache groups may)", path,
                gi, fmts[f].name);
        int layer = -1;
        for (int l = 0; l < m->c.num_layers && layer < 0 && name; l++) {
            char want[192];
            kv_group_name(want, sizeof(want), m, l);
            if (!m->c.linear[l] && strcmp(want, name) == 0) layer = l;
        }
        if (layer < 0 && !allow_partial)
            fail_input(
                "%s: groups[%zu].name '%s' is no full-attention layer's KV cache of %s (--allow-partial skips "
                "it)",
                path, gi, name ? name : "(missing)", m->dir);
        if (layer < 0) {
            warn_msg("%s: groups[%zu] ('%s') is skipped (--allow-partial)", path, gi,
                     name ? name : "(missing)");
            continue;
        }
        kv[layer] = f;
        n += f >= 0;
    }
    json_decref(j);
    return n;
}

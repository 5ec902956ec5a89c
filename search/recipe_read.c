// Reading a recipe JSON back (autoq eval --recipe): per-linear choices.
#include <jansson.h>
#include <string.h>

#include "../engine/util.h"
#include "recipe.h"

int recipe_read(const char* path, const Model* m, Format* fmts, int* choice) {
    json_error_t err;
    json_t* j = json_load_file(path, 0, &err);
    if (!j) fail_input("%s: invalid JSON at line %d: %s", path, err.line, err.text);
    json_t* fs = json_object_get(j, "formats");
    json_t* gs = json_object_get(j, "groups");
    json_t* num = json_object_get(j, "numerics");
    if (!json_is_array(fs) || json_array_size(fs) == 0 || json_array_size(fs) > MAX_FORMATS)
        fail_input("%s: field 'formats' must be a list of 1 to %d formats", path, MAX_FORMATS);
    if (!json_is_array(gs)) fail_input("%s: field 'groups' missing or not a list", path);
    int ct = json_is_string(num) && strcmp(json_string_value(num), "compressed-tensors") == 0;
    int nf = (int)json_array_size(fs);
    for (int f = 0; f < nf; f++) {
        json_t* p = json_object_get(json_array_get(fs, f), "path");
        json_t* n = json_object_get(json_array_get(fs, f), "name");
        if (!json_is_string(n)) fail_input("%s: formats[%d].name missing", path, f);
        format_load(&fmts[f], json_is_string(p) ? json_string_value(p) : json_string_value(n), ct);
    }
    for (int i = 0; i < m->n_linears; i++) choice[i] = -1;
    size_t gi;
    json_t* g;
    json_array_foreach(gs, gi, g) {
        json_t* ch = json_object_get(g, "choice");
        json_t* mem = json_object_get(g, "members");
        if (!json_is_string(ch) || !json_is_array(mem))
            fail_input("%s: groups[%zu] needs 'choice' (string) and 'members' (list)", path, gi);
        int f = -1;
        for (int k = 0; k < nf; k++)
            if (strcmp(fmts[k].name, json_string_value(ch)) == 0) f = k;
        if (f < 0 && strcmp(json_string_value(ch), "bf16") != 0)
            fail_input("%s: groups[%zu].choice '%s' is neither bf16 nor a listed format", path, gi,
                       json_string_value(ch));
        size_t mi;
        json_t* name;
        json_array_foreach(mem, mi, name) {
            int found = -1;
            for (int k = 0; k < m->n_linears && found < 0; k++)
                if (json_is_string(name) && strcmp(m->linears[k].name, json_string_value(name)) == 0) found = k;
            if (found < 0)
                fail_input("%s: groups[%zu].members[%zu] is not a linear of %s", path, gi, mi, m->dir);
            choice[found] = f;
        }
    }
    json_decref(j);
    return nf;
}

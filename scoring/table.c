#define _GNU_SOURCE
#include "table.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/util.h"

void table_free_strs(char** s, int n) {
    if (!s) return;
    for (int i = 0; i < n; i++) free(s[i]);
    free(s);
}

void table_free(ScoreTable* t) {
    table_free_strs(t->gname, t->ng);
    table_free_strs(t->gmembers, t->ng);
    table_free_strs(t->lname, t->nl);
    free(t->params);
    free(t->active);
    free(t->disabled);
    free(t->gkv);
    free(t->score);
    free(t->wscore);
    free(t->dscore);
    free(t->lshape);
    free(t->lgroup);
    table_free_strs(t->cov_name, t->n_cov);
    table_free_strs(t->kvl_name, t->n_kvl);
    free(t->kvl_values);
    free(t->cov_tokens);
    memset(t, 0, sizeof(*t));
}

json_t* json_text(const char* s, const char* what) {
    json_t* j = json_string(s);
    if (!j) fail_input("%s is not valid UTF-8; JSON cannot hold it", what);
    return j;
}

void json_put(json_t* o, const char* key, json_t* v, const char* what) {
    if (!v || json_object_set_new(o, key, v) != 0)
        fail_input("%s is not valid UTF-8; JSON cannot hold it", what);
}

void json_write_file(json_t* j, const char* path) {
    if (!path || strcmp(path, "-") == 0) {
        json_dumpf(j, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
        fputc('\n', stdout);
        return;
    }
    OutFile o;
    out_open(&o, path);
    json_dumpf(j, o.f, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    fputc('\n', o.f);
    out_close(&o);
}

json_t* json_csv_list(const char* csv) {
    json_t* a = json_array();
    char* s = xstrdup(csv);
    char* save = NULL;
    for (char* tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        json_array_append_new(a, json_text(tok, "a module name"));
    free(s);
    return a;
}

// A score as JSON; jansson has no NaN or infinity and would drop the value silently.
static json_t* json_score(double v, const char* group) {
    if (!isfinite(v)) fail_other("score of group %s is %g; JSON cannot hold it", group, v);
    return json_real(v);
}

json_t* table_group_json(const ScoreTable* t, int g) {
    json_t* o = json_object();
    json_put(o, "name", json_text(t->gname[g], "a group name"), "a group name");
    json_object_set_new(o, "members", json_csv_list(t->gmembers[g]));
    json_object_set_new(o, "params", json_integer(t->params[g]));
    if (t->active[g] != t->params[g]) json_object_set_new(o, "active_params", json_integer(t->active[g]));
    json_object_set_new(o, "disabled", json_boolean(t->disabled[g]));
    return o;
}

static json_t* group_scores_json(const ScoreTable* t, int g) {
    json_t* sc = json_object();
    for (int f = 0; f < t->nf; f++)
        if (table_fits(t, f, g))
            json_object_set_new(sc, t->fmts[f].name,
                                t->disabled[g] ? json_null()
                                               : json_score(t->score[(size_t)f * t->ng + g], t->gname[g]));
    return sc;
}

static int cmp_long(const void* a, const void* b) {
    long x = *(const long*)a, y = *(const long*)b;
    return (x > y) - (x < y);
}

// {"<experts group>": {"tokens": [per expert], "min", "median", "max", "below_min": [experts]}}
static json_t* coverage_json(const ScoreTable* t) {
    json_t* c = json_object();
    long* v = xmalloc(sizeof(long) * t->n_experts);
    for (int r = 0; r < t->n_cov; r++) {
        const long* n = t->cov_tokens + (size_t)r * t->n_experts;
        json_t *o = json_object(), *tok = json_array(), *few = json_array();
        for (int e = 0; e < t->n_experts; e++) {
            json_array_append_new(tok, json_integer(n[e]));
            if (n[e] < t->min_expert_tokens) json_array_append_new(few, json_integer(e));
            v[e] = n[e];
        }
        qsort(v, t->n_experts, sizeof(long), cmp_long);
        json_object_set_new(o, "tokens", tok);
        json_object_set_new(o, "min", json_integer(v[0]));
        json_object_set_new(o, "median", json_integer(v[t->n_experts / 2]));
        json_object_set_new(o, "max", json_integer(v[t->n_experts - 1]));
        json_object_set_new(o, "below_min", few);
        json_put(c, t->cov_name[r], o, "an experts group name");
    }
    free(v);
    return c;
}

// The calibration domains and per-window scores (README §8), as HDF5 holds them: "format_version", a
// "domains" list (name, num_samples, in window order) and per group "domain_scores" ({domain: {format:
// score}}) and "window_scores" ({format: [one per window]}); null for a disabled group. Keys only added, so
// readers of the earlier JSON keep working.
static void table_json_windows(const ScoreTable* t, json_t* j) {
    json_object_set_new(j, "format_version", json_integer(SCORES_FORMAT_VERSION));
    json_t* gs = json_object_get(j, "groups");
    if (t->nd) {
        json_t* ds = json_array();
        for (int d = 0; d < t->nd; d++)
            json_array_append_new(ds,
                                  json_pack("{s:s,s:i}", "name", t->dname[d], "num_samples", t->dsamples[d]));
        json_object_set_new(j, "domains", ds);
    }
    for (int g = 0; g < t->ng; g++) {
        json_t* o = json_array_get(gs, g);
        if (t->nd) {
            json_t* dsc = json_object();
            for (int d = 0; d < t->nd; d++) {
                json_t* sc = json_object();
                for (int f = 0; f < t->nf; f++)
                    json_object_set_new(
                        sc, t->fmts[f].name,
                        t->disabled[g]
                            ? json_null()
                            : json_score(t->dscore[((size_t)d * t->nf + f) * t->ng + g], t->gname[g]));
                json_object_set_new(dsc, t->dname[d], sc);
            }
            json_object_set_new(o, "domain_scores", dsc);
        }
        if (t->nw) {
            json_t* ws = json_object();
            for (int f = 0; f < t->nf; f++) {
                json_t* a = t->disabled[g] ? json_null() : json_array();
                for (int w = 0; w < t->nw && !t->disabled[g]; w++)
                    json_array_append_new(
                        a, json_score(t->wscore[((size_t)w * t->nf + f) * t->ng + g], t->gname[g]));
                json_object_set_new(ws, t->fmts[f].name, a);
            }
            json_object_set_new(o, "window_scores", ws);
        }
    }
}

static json_t* table_json(const ScoreTable* t) {
    json_t* j = json_object();
    json_object_set_new(j, "model", json_text(t->model, "the model path"));
    json_object_set_new(j, "method", json_string(t->method));
    json_object_set_new(j, "format", json_string(t->fmts[0].name));
    json_t* fs = json_array();
    for (int f = 0; f < t->nf; f++) json_array_append_new(fs, format_to_json(&t->fmts[f]));
    json_object_set_new(j, "formats", fs);
    json_object_set_new(j, "numerics", json_string(t->numerics));
    json_object_set_new(j, "quantizer", json_string(t->quantizer[0] ? t->quantizer : "rtn"));
    json_object_set_new(j, "disabled_layers", json_text(t->disabled_csv, "--disabled-layers"));
    json_object_set_new(j, "num_samples", json_integer(t->num_samples));
    json_object_set_new(j, "seq_len", json_integer(t->seq_len));
    json_t* gs = json_array();
    for (int g = 0; g < t->ng; g++) {
        json_t* o = table_group_json(t, g);
        int f0 = 0; // the first format that applies to the group
        while (f0 + 1 < t->nf && !table_fits(t, f0, g)) f0++;
        json_object_set_new(o, "score",
                            t->disabled[g] || !table_fits(t, f0, g)
                                ? json_null()
                                : json_score(t->score[(size_t)f0 * t->ng + g], t->gname[g]));
        if (t->nf > 1) json_object_set_new(o, "scores", group_scores_json(t, g));
        json_array_append_new(gs, o);
    }
    json_object_set_new(j, "groups", gs);
    table_json_windows(t, j);
    if (t->has_memory) {
        json_t* kv = json_object();
        for (int i = 0; i < t->n_kvl; i++)
            json_put(kv, t->kvl_name[i], json_integer(t->kvl_values[i]), "a layer name");
        json_object_set_new(
            j, "memory", json_pack("{s:I,s:o}", "other_params", (json_int_t)t->other_params, "kv_values", kv));
    }
    if (t->n_cov) {
        json_object_set_new(j, "min_expert_tokens", json_integer(t->min_expert_tokens));
        json_object_set_new(j, "coverage", coverage_json(t));
    }
    return j;
}

void table_write_json(const ScoreTable* t, const char* path) {
    json_t* j = table_json(t);
    json_write_file(j, path);
    json_decref(j);
}

// ---- checks of a table read from a file ----
// Limits of a plausible scores file: beyond them a file is corrupt or hostile, never a model.
#define MAX_GROUP_PARAMS (1L << 36)
#define MAX_TOTAL_PARAMS (1L << 40) // a trillion weights: costs (x16 bits) stay exact in doubles

void table_bad(const char* path, const char* obj, const char* fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fail_input("%s: %s: %s", path, obj, msg);
}

void table_check_group_values(const ScoreTable* t, const char* path) {
    long total = 0;
    int enabled = 0;
    for (int g = 0; g < t->ng; g++) {
        if (table_kv(t, g) ? t->params[g] != 0 : (t->params[g] < 1 || t->params[g] > MAX_GROUP_PARAMS))
            table_bad(path, "groups/params", "group %s has %ld parameters (%s)", t->gname[g], t->params[g],
                      table_kv(t, g) ? "a KV-cache group has 0" : "1 to 2^36 is plausible");
        total += t->params[g]; // at most 2^20 groups x 2^36: no overflow
        if (t->disabled[g] > 1)
            table_bad(path, "groups/disabled", "group %s has %d (0 or 1 allowed)", t->gname[g], t->disabled[g]);
        enabled += !t->disabled[g];
        for (int f = 0; f < t->nf && !t->disabled[g]; f++) {
            double s = t->score[(size_t)f * t->ng + g];
            if (!isfinite(s) || s < 0)
                table_bad(path, "groups/score",
                          "group %s has score %g for format %s (scores are finite and >= 0)", t->gname[g], s,
                          t->fmts[f].name);
        }
    }
    if (total >= MAX_TOTAL_PARAMS)
        table_bad(path, "groups/params", "%ld parameters in all is unrealistic (at most 2^40)", total);
    if (enabled == 0) table_bad(path, "groups/disabled", "every group is disabled: there is nothing to search");
}

void table_mark_kv(ScoreTable* t) {
    static const char suffix[] = ".self_attn.kv_cache";
    size_t k = sizeof(suffix) - 1;
    free(t->gkv);
    t->gkv = xcalloc(t->ng ? t->ng : 1, 1);
    for (int g = 0; g < t->ng; g++) {
        size_t n = strlen(t->gname[g]);
        t->gkv[g] = t->gmembers[g][0] == 0 && n > k && strcmp(t->gname[g] + n - k, suffix) == 0;
    }
}

static int cmp_name(const void* a, const void* b, void* ctx) {
    char** names = ctx;
    return strcmp(names[*(const int*)a], names[*(const int*)b]);
}

typedef struct {
    char** names;
    const int* order;
    int n;
} NameIndex;

static int name_find(const NameIndex* ix, const char* name) {
    int lo = 0, hi = ix->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(name, ix->names[ix->order[mid]]);
        if (c == 0) return ix->order[mid];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return -1;
}

// Each group's members are exactly the layers that point to it, and its params their weights:
// exports use the members, effective bits the layers, so both must tell the same story.
void table_check_members(const ScoreTable* t, const char* path) {
    int* order = xmalloc(sizeof(int) * t->nl);
    for (int i = 0; i < t->nl; i++) order[i] = i;
    qsort_r(order, t->nl, sizeof(int), cmp_name, t->lname);
    for (int i = 1; i < t->nl; i++)
        if (strcmp(t->lname[order[i]], t->lname[order[i - 1]]) == 0)
            table_bad(path, "layers/name", "'%s' appears twice", t->lname[order[i]]);
    NameIndex ix = {t->lname, order, t->nl};
    int* count = xcalloc(t->ng, sizeof(int));
    int* seen = xmalloc(sizeof(int) * t->nl);
    long* weights = xcalloc(t->ng, sizeof(long));
    for (int i = 0; i < t->nl; i++) {
        int g = t->lgroup[i];
        count[g]++;
        seen[i] = -1;
        // Saturates past any valid group size (2^36): each term is at most 2^48, so no overflow.
        if (weights[g] <= MAX_GROUP_PARAMS) weights[g] += t->lshape[2 * i] * t->lshape[2 * i + 1];
    }
    for (int g = 0; g < t->ng; g++) {
        char* m = xstrdup(t->gmembers[g]);
        char* save = NULL;
        int n = 0;
        for (char* tok = strtok_r(m, ",", &save); tok; tok = strtok_r(NULL, ",", &save), n++) {
            int l = name_find(&ix, tok);
            if (l < 0 || t->lgroup[l] != g)
                table_bad(path, "groups/members",
                          "group %s names '%s', which is not one of its layers in /layers", t->gname[g], tok);
            if (seen[l] == g) table_bad(path, "groups/members", "group %s names '%s' twice", t->gname[g], tok);
            seen[l] = g;
        }
        free(m);
        if (n != count[g])
            table_bad(path, "groups/members", "group %s lists %d members, /layers/group %d", t->gname[g], n,
                      count[g]);
        if (weights[g] != t->params[g])
            table_bad(path, "groups/params", "group %s has %ld, but its layers hold %ld weights", t->gname[g],
                      t->params[g], weights[g]);
    }
    free(count);
    free(seen);
    free(weights);
    free(order);
}

// The experts a group holds when it is a sparse layer's experts group: its members are exactly
// "<name>.N.{gate,up,down}_proj" for N = 0 .. E-1 (README §5). Returns E, or 0 for any other group.
static int experts_of(const ScoreTable* t, int g) {
    size_t len = strlen(t->gname[g]);
    int n = 0, max = -1, ok = 1;
    char* m = xstrdup(t->gmembers[g]);
    char* save = NULL;
    for (char* tok = strtok_r(m, ",", &save); ok && tok; tok = strtok_r(NULL, ",", &save), n++) {
        ok = strncmp(tok, t->gname[g], len) == 0 && tok[len] == '.';
        const char* p = ok ? tok + len + 1 : tok;
        char* end = NULL;
        // canonical decimal expert numbers only, so that distinct names are distinct experts
        ok = ok && *p >= '0' && *p <= '9' && (*p != '0' || p[1] == '.');
        long e = ok ? strtol(p, &end, 10) : 0;
        ok = ok && e < (1 << 20) &&
             (!strcmp(end, ".gate_proj") || !strcmp(end, ".up_proj") || !strcmp(end, ".down_proj"));
        if (ok && e > max) max = (int)e;
    }
    free(m);
    // table_check_members made the names unique, so 3 (max + 1) members are every expert's three
    return ok && max >= 0 && n == 3 * (max + 1) ? max + 1 : 0;
}

// What a token reads, as the writer derives it (scoring/job.c): a group's params, or for an experts
// group of E experts params / E x top_k, top_k (num_experts_per_tok) one number for the whole model.
void table_check_active(const ScoreTable* t, const char* path) {
    int top_k = 0, first = -1;
    for (int g = 0; g < t->ng; g++) {
        int E = experts_of(t, g);
        if (!E || t->params[g] % E) {
            if (t->active[g] != t->params[g])
                table_bad(path, "groups/active_params",
                          "group %s reads %ld of its %ld parameters per token; a group that is not a layer's "
                          "experts reads all of them",
                          t->gname[g], t->active[g], t->params[g]);
            continue;
        }
        long per = t->params[g] / E;
        long k = t->active[g] / per;
        if (t->active[g] % per || k < 1 || k > E)
            table_bad(path, "groups/active_params",
                      "group %s reads %ld parameters per token, which is no whole number of its %d experts of "
                      "%ld parameters (params x num_experts_per_tok / num_experts)",
                      t->gname[g], t->active[g], E, per);
        if (first >= 0 && k != top_k)
            table_bad(
                path, "groups/active_params",
                "group %s reads %ld experts per token, group %s %d: one model has one num_experts_per_tok",
                t->gname[g], k, t->gname[first], top_k);
        top_k = (int)k, first = g;
    }
}

static int cmp_desc(const void* a, const void* b, void* ctx) {
    const double* s = ctx;
    double x = s[*(const int*)a], y = s[*(const int*)b];
    return x < y ? 1 : (x > y ? -1 : 0);
}

void table_print(const ScoreTable* t) {
    for (int f = 0; f < t->nf; f++) {
        const double* s = t->score + (size_t)f * t->ng;
        double total = 0;
        int ne = 0;
        int* order = xmalloc(sizeof(int) * t->ng);
        for (int g = 0; g < t->ng; g++)
            if (!t->disabled[g] && table_fits(t, f, g)) {
                total += s[g];
                order[ne++] = g;
            }
        qsort_r(order, ne, sizeof(int), cmp_desc, (void*)s);
        int* rank = xcalloc(t->ng, sizeof(int));
        for (int i = 0; i < ne; i++) rank[order[i]] = i + 1;
        printf("%s scores, format %s (%d samples x %d tokens)\n", t->method, t->fmts[f].name, t->num_samples,
               t->seq_len);
        printf("%-44s %10s %14s %7s %5s\n", "group", "params", "score", "share", "rank");
        for (int g = 0; g < t->ng; g++) {
            if (!table_fits(t, f, g)) continue;
            if (t->disabled[g]) {
                printf("%-44s %10ld %14s %7s %5s\n", t->gname[g], t->params[g], "disabled", "-", "-");
                continue;
            }
            printf("%-44s %10ld %14.6g %6.2f%% %5d\n", t->gname[g], t->params[g], s[g],
                   total > 0 ? 100.0 * s[g] / total : 0.0, rank[g]);
        }
        printf("%-44s %10s %14.6g\n\n", "total", "", total);
        free(order);
        free(rank);
    }
}

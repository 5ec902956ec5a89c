#include "recipe.h"

#include <hdf5.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/util.h"
#include "knapsack.h"

#define MAX_DP_STATES 400000000LL

void search_init(SearchCtx* c, const ScoreTable* t, Scope scope) {
    memset(c, 0, sizeof(*c));
    c->t = t;
    c->scope = scope;
    for (int g = 0; g < t->ng; g++) {
        c->total[SCOPE_ALL] += t->params[g];
        if (t->disabled[g])
            c->fixed[SCOPE_ALL] += 16 * t->params[g];
        else
            c->total[SCOPE_CANDIDATES] += t->params[g];
    }
}

static int min_bits(const ScoreTable* t) {
    int b = 16;
    for (int f = 0; f < t->nf; f++) b = t->fmt_bits[f] < b ? t->fmt_bits[f] : b;
    return b;
}

double search_min_budget(const SearchCtx* c) {
    long cost = c->fixed[c->scope];
    for (int g = 0; g < c->t->ng; g++)
        if (!c->t->disabled[g]) cost += (long)min_bits(c->t) * c->t->params[g];
    return (double)cost / c->total[c->scope];
}

// Achieved bits of a selection in both scopes, with and without scale overhead.
static void measure_bits(const SearchCtx* c, Solution* s) {
    const ScoreTable* t = c->t;
    double cost = 0, scales = 0;
    for (int g = 0; g < t->ng; g++) {
        if (t->disabled[g]) continue;
        int f = s->sel[g];
        cost += (double)t->params[g] * (f < 0 ? 16 : t->fmt_bits[f]);
    }
    for (int i = 0; i < t->nl; i++) {
        int g = t->lgroup[i];
        if (!t->disabled[g] && s->sel[g] >= 0) scales += 16.0 * t->lshape[2 * i]; // one bf16 scale per row
    }
    for (int k = 0; k < 2; k++) {
        double full = cost + c->fixed[k];
        s->bits[k] = full / c->total[k];
        s->bits_scales[k] = (full + scales) / c->total[k];
    }
}

void search_solve(const SearchCtx* c, const double* budgets, int nb, Solution* out) {
    const ScoreTable* t = c->t;
    int* gidx = xmalloc(sizeof(int) * t->ng);
    KsItem* items = xcalloc(t->ng, sizeof(KsItem));
    int n = 0;
    for (int g = 0; g < t->ng; g++) {
        if (t->disabled[g]) continue;
        KsItem* it = &items[n];
        gidx[n++] = g;
        it->n_choices = t->nf + 1;
        it->cost[0] = 16 * (int64_t)t->params[g]; // choice 0: bf16
        it->score[0] = 0.0;
        it->bf16[0] = t->params[g];
        for (int f = 0; f < t->nf; f++) {
            it->cost[f + 1] = (int64_t)t->fmt_bits[f] * t->params[g];
            it->score[f + 1] = t->score[(size_t)f * t->ng + g];
            it->bf16[f + 1] = 0;
        }
    }
    double hi = 0;
    for (int i = 0; i < nb; i++) hi = budgets[i] > hi ? budgets[i] : hi;
    double minb = search_min_budget(c);
    const char* scope = c->scope == SCOPE_ALL ? "all" : "candidates";
    for (int i = 0; i < nb; i++)
        if (budgets[i] * c->total[c->scope] < minb * c->total[c->scope] - 1e-6)
            fail_input("--budget %.4g is infeasible: the smallest feasible budget is %.4f bits (scope %s)",
                       budgets[i], ceil(minb * 1e4) / 1e4, scope);
    Knapsack ks;
    int64_t max_cap = (int64_t)floor(hi * c->total[c->scope] + 1e-6) - c->fixed[c->scope];
    if (ks_build(&ks, items, n, max_cap, MAX_DP_STATES) != 0)
        fail_other("exact search table too large (%d groups, capacity %lld units); try fewer formats", n,
                   (long long)(max_cap / (ks.unit ? ks.unit : 1)));
    int* ch = xmalloc(sizeof(int) * (n ? n : 1));
    for (int i = 0; i < nb; i++) {
        Solution* s = &out[i];
        memset(s, 0, sizeof(*s));
        s->budget = budgets[i];
        s->sel = xmalloc(sizeof(int) * t->ng);
        for (int g = 0; g < t->ng; g++) s->sel[g] = -1;
        int64_t cap = (int64_t)floor(budgets[i] * c->total[c->scope] + 1e-6) - c->fixed[c->scope];
        double score;
        int64_t cost;
        if (ks_solve(&ks, cap, ch, &score, &cost) != 0)
            fail_input("--budget %.4g is infeasible: the smallest feasible budget is %.4f bits (scope %s)",
                       budgets[i], ceil(minb * 1e4) / 1e4, scope);
        for (int k = 0; k < n; k++) s->sel[gidx[k]] = ch[k] - 1;
        s->predicted = score;
        measure_bits(c, s);
    }
    free(ch);
    ks_free(&ks);
    free(items);
    free(gidx);
}

void solution_free(Solution* s) {
    free(s->sel);
    s->sel = NULL;
}

static const char* choice_name(const ScoreTable* t, const Solution* s, int g) {
    if (t->disabled[g]) return "bf16 (disabled)";
    return s->sel[g] < 0 ? "bf16" : t->fmt_name[s->sel[g]];
}

void solution_print(const SearchCtx* c, const Solution* s, int detail) {
    const ScoreTable* t = c->t;
    if (detail) {
        printf("%-44s %10s %14s  %s\n", "group", "params", "score", "choice");
        for (int g = 0; g < t->ng; g++) {
            double sc = t->disabled[g] ? NAN : t->score[(size_t)(s->sel[g] < 0 ? 0 : s->sel[g]) * t->ng + g];
            printf("%-44s %10ld %14.6g  %s\n", t->gname[g], t->params[g], sc, choice_name(t, s, g));
        }
    }
    int kept = 0;
    for (int g = 0; g < t->ng; g++) kept += !t->disabled[g] && s->sel[g] < 0;
    printf("budget %.3f (%s): %d of %d enabled groups kept bf16; effective bits %.4f candidates, %.4f all "
           "(%.4f / %.4f with scales); predicted %s %.6g",
           s->budget, c->scope == SCOPE_ALL ? "all" : "candidates", kept, c->t->ng, s->bits[0], s->bits[1],
           s->bits_scales[0], s->bits_scales[1], t->method, s->predicted);
    if (s->verified)
        printf("; measured KL %.6g, NLL %.6f -> %.6f (%+.6f)", s->v.kl, s->v.nll_ref, s->v.nll_q,
               s->v.nll_q - s->v.nll_ref);
    printf("\n");
}

// ---- recipe JSON ----
void recipe_write_json(const char* path, const SearchCtx* c, const Solution* s, const Format* fmts) {
    const ScoreTable* t = c->t;
    json_t* j = json_object();
    json_object_set_new(j, "model", json_string(t->model));
    json_object_set_new(j, "method", json_string(t->method));
    json_object_set_new(j, "numerics", json_string(t->numerics));
    json_object_set_new(j, "disabled_layers", json_string(t->disabled_csv));
    json_t* fs = json_array();
    for (int f = 0; f < t->nf; f++) {
        json_t* o = json_pack("{s:s,s:i}", "name", fmts[f].name, "bits", t->fmt_bits[f]);
        if (!fmts[f].builtin) json_object_set_new(o, "path", json_string(fmts[f].path));
        json_array_append_new(fs, o);
    }
    json_object_set_new(j, "formats", fs);
    json_object_set_new(j, "budget", json_real(s->budget));
    json_object_set_new(j, "budget_scope", json_string(c->scope == SCOPE_ALL ? "all" : "candidates"));
    json_object_set_new(j, "effective_bits",
                        json_pack("{s:f,s:f}", "candidates", s->bits[0], "all", s->bits[1]));
    json_object_set_new(j, "effective_bits_with_scales",
                        json_pack("{s:f,s:f}", "candidates", s->bits_scales[0], "all", s->bits_scales[1]));
    json_object_set_new(j, "predicted_score", json_real(s->predicted));
    if (s->verified)
        json_object_set_new(j, "measured",
                            json_pack("{s:f,s:f,s:f,s:f}", "kl", s->v.kl, "nll_ref", s->v.nll_ref,
                                      "nll_quantized", s->v.nll_q, "nll_delta", s->v.nll_q - s->v.nll_ref));
    json_t* gs = json_array();
    for (int g = 0; g < t->ng; g++) {
        json_t* o = table_group_json(t, g);
        json_object_set_new(o, "choice",
                            json_string(t->disabled[g] || s->sel[g] < 0 ? "bf16" : t->fmt_name[s->sel[g]]));
        json_object_set_new(
            o, "score",
            t->disabled[g] || s->sel[g] < 0 ? json_null() : json_real(t->score[(size_t)s->sel[g] * t->ng + g]));
        json_array_append_new(gs, o);
    }
    json_object_set_new(j, "groups", gs);
    json_write_file(j, path);
    json_decref(j);
}

// ---- exports ----
// fnmatch pattern -> anchored regular expression.
static void glob_to_regex(char* out, size_t cap, const char* g) {
    size_t n = 0;
    out[n++] = '^';
    for (const char* p = g; *p && n + 4 < cap; p++) {
        if (*p == '*')
            out[n++] = '.', out[n++] = '*';
        else if (*p == '?')
            out[n++] = '.';
        else if (*p == '[') {
            out[n++] = '[';
            if (p[1] == '!') out[n++] = '^', p++;
        } else if (*p == ']')
            out[n++] = ']';
        else if (strchr(".+()^$|{}\\", *p))
            out[n++] = '\\', out[n++] = *p;
        else
            out[n++] = *p;
    }
    out[n++] = '$';
    out[n] = 0;
}

static void name_to_regex(char* out, size_t cap, const char* name) {
    size_t n = 0;
    out[n++] = '^';
    for (const char* p = name; *p && n + 4 < cap; p++) {
        if (strchr(".+()^$|{}[]*?\\", *p)) out[n++] = '\\';
        out[n++] = *p;
    }
    out[n++] = '$';
    out[n] = 0;
}

// Calls fn for every linear of groups with the given choice (-1: kept bf16 incl. disabled).
static int for_members(const ScoreTable* t, const Solution* s, int want, void (*fn)(const char*, void*),
                       void* ctx) {
    int n = 0;
    for (int g = 0; g < t->ng; g++) {
        int ch = t->disabled[g] ? -2 : s->sel[g];
        if (want == -1 ? ch >= 0 : ch != want) continue;
        if (want == -1 && t->disabled[g]) continue; // covered by the default patterns
        char* m = xstrdup(t->gmembers[g]);
        char* save = NULL;
        for (char* tok = strtok_r(m, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            fn(tok, ctx);
            n++;
        }
        free(m);
    }
    return n;
}

static void yaml_re_item(const char* name, void* ctx) { // an item of the ignore list
    char re[600];
    name_to_regex(re, sizeof(re), name);
    fprintf((FILE*)ctx, "        - 're:%s'\n", re);
}

static void yaml_target_item(const char* name, void* ctx) { // an item of a config group's targets
    char re[600];
    name_to_regex(re, sizeof(re), name);
    fprintf((FILE*)ctx, "            - 're:%s'\n", re);
}

static void yaml_scheme(FILE* f, const Format* fm, const char* indent) {
    if (fm->w_enable)
        fprintf(f, "%sweights: {num_bits: %d, type: int, symmetric: true, strategy: channel, dynamic: false}\n",
                indent, fm->w.bits);
    if (fm->in_enable)
        fprintf(
            f,
            "%sinput_activations: {num_bits: %d, type: int, symmetric: true, strategy: token, dynamic: true}\n",
            indent, fm->in.bits);
}

static int formats_used(const ScoreTable* t, const Solution* s, int* used) {
    int n = 0;
    for (int f = 0; f < t->nf; f++) used[f] = 0;
    for (int g = 0; g < t->ng; g++)
        if (!t->disabled[g] && s->sel[g] >= 0) used[s->sel[g]]++;
    for (int f = 0; f < t->nf; f++) n += used[f] > 0;
    return n;
}

void export_llmcompressor(const char* path, const SearchCtx* c, const Solution* s, const Format* fmts) {
    const ScoreTable* t = c->t;
    OutFile o;
    out_open(&o, path);
    FILE* f = o.f;
    fprintf(f, "# autoq recipe for %s: %s scores, budget %.3f bits (%s scope), effective %.4f bits\n", t->model,
            t->method, s->budget, c->scope == SCOPE_ALL ? "all" : "candidates", s->bits[c->scope]);
    fprintf(f, "quant_stage:\n  quant_modifiers:\n    GPTQModifier:\n      ignore:\n");
    fprintf(f, "        - lm_head\n");
    char* dis = xstrdup(t->disabled_csv);
    char* save = NULL;
    char re[600];
    for (char* tok = strtok_r(dis, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        glob_to_regex(re, sizeof(re), tok);
        fprintf(f, "        - 're:%s'\n", re);
    }
    free(dis);
    for_members(t, s, -1, yaml_re_item, f);
    fprintf(f, "      config_groups:\n");
    int used[MAX_FORMATS];
    int nu = formats_used(t, s, used);
    for (int k = 0, gi = 0; k < t->nf; k++) {
        if (!used[k] && nu > 0) continue;
        fprintf(f, "        group_%d:\n", gi++);
        if (nu <= 1) {
            fprintf(f, "          targets: ['Linear']\n");
        } else {
            fprintf(f, "          targets:\n");
            for_members(t, s, k, yaml_target_item, f);
        }
        yaml_scheme(f, &fmts[k], "          ");
        if (nu <= 1) break;
    }
    out_close(&o);
}

static void mo_disable(const char* name, void* ctx) {
    char key[600];
    snprintf(key, sizeof(key), "%s.*", name);
    json_object_set_new((json_t*)ctx, key, json_pack("{s:b}", "enable", 0));
}

static json_t* mo_weight(const Format* f) {
    if (!f->w_enable) return json_pack("{s:b}", "enable", 0);
    return json_pack("{s:i,s:i,s:b,s:b}", "num_bits", f->w.bits, "axis", 0, "narrow_range", f->w.narrow,
                     "enable", 1);
}

static json_t* mo_input(const Format* f) {
    if (!f->in_enable) return json_pack("{s:b}", "enable", 0);
    return json_pack("{s:i,s:s,s:{s:n},s:b,s:b}", "num_bits", f->in.bits, "type", "dynamic", "block_sizes",
                     "-1", "narrow_range", f->in.narrow, "enable", 1);
}

typedef struct {
    json_t* qc;
    const Format* f;
} MoCtx;

static void mo_override(const char* name, void* ctx) {
    MoCtx* m = ctx;
    char key[600];
    snprintf(key, sizeof(key), "%s.weight_quantizer", name);
    json_object_set_new(m->qc, key, mo_weight(m->f));
    snprintf(key, sizeof(key), "%s.input_quantizer", name);
    json_object_set_new(m->qc, key, mo_input(m->f));
}

void export_modelopt(const char* path, const SearchCtx* c, const Solution* s, const Format* fmts) {
    const ScoreTable* t = c->t;
    int used[MAX_FORMATS];
    formats_used(t, s, used);
    int main_f = 0;
    for (int f = 1; f < t->nf; f++) main_f = used[f] > used[main_f] ? f : main_f;
    json_t* qc = json_object();
    json_object_set_new(qc, "*weight_quantizer", mo_weight(&fmts[main_f]));
    json_object_set_new(qc, "*input_quantizer", mo_input(&fmts[main_f]));
    char* dis = xstrdup(t->disabled_csv);
    char* save = NULL;
    for (char* tok = strtok_r(dis, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        json_object_set_new(qc, tok, json_pack("{s:b}", "enable", 0));
    free(dis);
    // ModelOpt also gives nn.Embedding a weight quantizer, which "*weight_quantizer" would enable.
    json_object_set_new(qc, "*embed_tokens*", json_pack("{s:b}", "enable", 0));
    for (int f = 0; f < t->nf; f++) {
        if (f == main_f || !used[f]) continue;
        MoCtx m = {qc, &fmts[f]};
        for_members(t, s, f, mo_override, &m);
    }
    for_members(t, s, -1, mo_disable, qc);
    json_t* j = json_pack("{s:o,s:s}", "quant_cfg", qc, "algorithm", "max");
    OutFile o;
    out_open(&o, path);
    json_dumpf(j, o.f, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    fputc('\n', o.f);
    out_close(&o);
    json_decref(j);
}

// ---- HDF5 ----
static void h5_attr_double(hid_t obj, const char* name, double v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_NATIVE_DOUBLE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_DOUBLE, &v);
    H5Aclose(a);
    H5Sclose(sp);
}

void search_write_h5(const char* path, const SearchCtx* c, const Solution* s, const Solution* sweep, int ns) {
    const ScoreTable* t = c->t;
    hid_t f = (hid_t)table_h5_create(t, path);
    hid_t g = H5Gcreate2(f, "search", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t ng = (hsize_t)t->ng;
    h5_write(g, "selected", H5T_NATIVE_INT, 1, &ng, s->sel);
    h5_attr_double(g, "budget", s->budget);
    h5_attr_double(g, "effective_bits", s->bits[c->scope]);
    h5_attr_double(g, "predicted_score", s->predicted);
    if (s->verified) {
        h5_attr_double(g, "measured_kl", s->v.kl);
        h5_attr_double(g, "measured_nll_delta", s->v.nll_q - s->v.nll_ref);
    }
    H5Gclose(g);
    if (ns > 0) {
        g = H5Gcreate2(f, "pareto", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        double* buf = xmalloc(sizeof(double) * ns);
        hsize_t n = (hsize_t)ns;
        for (int i = 0; i < ns; i++) buf[i] = sweep[i].budget;
        h5_write(g, "budget", H5T_NATIVE_DOUBLE, 1, &n, buf);
        for (int i = 0; i < ns; i++) buf[i] = sweep[i].bits[c->scope];
        h5_write(g, "bits", H5T_NATIVE_DOUBLE, 1, &n, buf);
        for (int i = 0; i < ns; i++) buf[i] = sweep[i].predicted;
        h5_write(g, "score", H5T_NATIVE_DOUBLE, 1, &n, buf);
        if (sweep[0].verified) {
            for (int i = 0; i < ns; i++) buf[i] = sweep[i].v.kl;
            h5_write(g, "measured_kl", H5T_NATIVE_DOUBLE, 1, &n, buf);
            for (int i = 0; i < ns; i++) buf[i] = sweep[i].v.nll_q - sweep[i].v.nll_ref;
            h5_write(g, "measured_nll_delta", H5T_NATIVE_DOUBLE, 1, &n, buf);
        }
        int* sel = xmalloc(sizeof(int) * ns * t->ng);
        for (int i = 0; i < ns; i++) memcpy(sel + (size_t)i * t->ng, sweep[i].sel, sizeof(int) * t->ng);
        hsize_t d2[2] = {n, ng};
        h5_write(g, "selected", H5T_NATIVE_INT, 2, d2, sel);
        free(sel);
        free(buf);
        H5Gclose(g);
    }
    table_h5_finish(f, path);
}

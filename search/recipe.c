#include "recipe.h"

#include <hdf5.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/util.h"
#include "bootstrap.h"
#include "knapsack.h"
#include "refine.h"

#define MAX_DP_STATES 400000000LL

_Static_assert(MAX_FORMATS + 1 <= KS_MAX_CHOICES, "a group chooses bf16 or one of MAX_FORMATS formats");

// Group g's parameters under a cost.
static long weight(const ScoreTable* t, Cost cost, int g) {
    return cost == COST_ACTIVE ? t->active[g] : t->params[g];
}

void search_init(SearchCtx* c, const ScoreTable* t, Scope scope, Cost cost, Bits bits) {
    memset(c, 0, sizeof(*c));
    int enabled = 0;
    for (int g = 0; g < t->ng; g++) enabled += !t->disabled[g];
    // Without a candidate every budget is met by "keep everything": say so instead of inventing a choice.
    if (enabled == 0) fail_input("search: every group of %s is disabled: there is nothing to search", t->model);
    c->t = t;
    c->scope = scope;
    c->cost = cost;
    c->bits = bits;
    c->gtrue = xcalloc((size_t)(t->nf ? t->nf : 1) * t->ng, sizeof(int64_t));
    for (int f = 0; f < t->nf; f++)
        for (int i = 0; i < t->nl; i++)
            c->gtrue[(size_t)f * t->ng + t->lgroup[i]] +=
                format_weight_bits(&t->fmts[f], t->lshape[2 * i], t->lshape[2 * i + 1]);
    for (int k = 0; k < 2; k++)
        for (int g = 0; g < t->ng; g++) {
            long w = weight(t, (Cost)k, g);
            c->total[k][SCOPE_ALL] += w;
            if (t->disabled[g])
                c->fixed[k][SCOPE_ALL] += 16 * w;
            else
                c->total[k][SCOPE_CANDIDATES] += w;
        }
}

void search_free(SearchCtx* c) {
    free(c->gkvv);
    c->gkvv = NULL;
    free(c->gtrue);
    c->gtrue = NULL;
}

static int64_t choice_bits(const SearchCtx* c, Cost k, Bits b, int g, int f);

const char* const mem_part_name[5] = {"linears", "other", "kv_cache", "overhead", "total"};

void search_set_memory(SearchCtx* c, const MemBudget* mb) {
    const ScoreTable* t = c->t;
    if (!t->has_memory)
        fail_input("search --memory-budget: %s's scores file predates /memory (README §8): score it again",
                   t->model);
    c->mem = *mb;
    c->gkvv = xcalloc(t->ng, sizeof(long));
    int64_t tokens = (int64_t)mb->context * mb->batch;
    for (int g = 0; g < t->ng; g++) {
        if (!table_kv(t, g)) {
            if (t->disabled[g]) c->mem_fixed[MEM_LINEARS] += 16 * (int64_t)t->params[g];
            continue;
        }
        for (int i = 0; i < t->n_kvl; i++)
            if (strcmp(t->kvl_name[i], t->gname[g]) == 0) c->gkvv[g] = t->kvl_values[i];
    }
    c->mem_fixed[MEM_OTHER] = 16 * (int64_t)t->other_params;
    for (int i = 0; i < t->n_kvl; i++) { // layers whose KV cache is not searched: bf16
        int searched = 0;
        for (int g = 0; g < t->ng && !searched; g++)
            searched = table_kv(t, g) && !t->disabled[g] && strcmp(t->kvl_name[i], t->gname[g]) == 0;
        if (!searched) c->mem_fixed[MEM_KV] += format_kv_bits(NULL, t->kvl_values[i] * tokens);
    }
    c->mem_fixed[MEM_OVERHEAD] = 8 * mb->overhead;
}

// Bits of memory of group g under choice f (-1: bf16): a linear group's stored weights (true bits), a KV-cache
// group's cache at context x batch tokens plus its scale tensors.
static int64_t mem_cost(const SearchCtx* c, int g, int f) {
    const ScoreTable* t = c->t;
    if (!table_kv(t, g)) return f < 0 ? 16 * (int64_t)t->params[g] : c->gtrue[(size_t)f * t->ng + g];
    const Format* fm = f < 0 ? NULL : &t->fmts[f];
    int64_t n = (int64_t)c->gkvv[g] * c->mem.context * c->mem.batch;
    return format_kv_bits(fm, n) + format_kv_scale_bits(fm);
}

static int64_t mem_fixed_total(const SearchCtx* c) {
    return c->mem_fixed[0] + c->mem_fixed[1] + c->mem_fixed[2] + c->mem_fixed[3];
}

// The cost in bits of group g under choice f (-1: bf16), in a cost and a bit convention. A true cost under
// the active cost scales the stored bits by the group's active share (exact for an experts group, whose
// experts all have one shape: its stored bits are E x one expert's, its active params K x one expert's).
static int64_t choice_cost(const SearchCtx* c, Cost k, Bits b, int g, int f) {
    if (c->mem.on) return mem_cost(c, g, f);
    return choice_bits(c, k, b, g, f);
}

// The same in bits of weights, whatever the budget (effective bits; a KV-cache group holds none).
static int64_t choice_bits(const SearchCtx* c, Cost k, Bits b, int g, int f) {
    const ScoreTable* t = c->t;
    long w = weight(t, k, g);
    if (f < 0) return 16 * (int64_t)w;
    if (b == BITS_MODELOPT) return (int64_t)t->fmts[f].bits * w;
    int64_t bits = c->gtrue[(size_t)f * t->ng + g];
    if (k == COST_MEMORY || t->active[g] == t->params[g]) return bits;
    return (int64_t)((__int128)bits * t->active[g] / t->params[g]);
}

// misfit (nf, ng): 1 where format f's blocks do not divide the input width of a member of group g
// (format_misfit_block, README §5); says which groups and why, once per format.
static uint8_t* search_misfits(const SearchCtx* c, int warn) {
    const ScoreTable* t = c->t;
    uint8_t* mis = xcalloc((size_t)t->nf * t->ng + 1, 1);
    for (int f = 0; f < t->nf; f++) // KV-cache formats are the KV-cache groups' choices only (README §5)
        for (int g = 0; g < t->ng; g++) {
            size_t i = (size_t)f * t->ng + g; // and --target's engine's unserved formats are never offered
            mis[i] = !table_fits(t, f, g) || (c->deny && c->deny[i]);
        }
    for (int f = 0; f < t->nf; f++) {
        int n = 0, block = 0;
        char names[512] = "";
        for (int i = 0; i < t->nl; i++) {
            int g = t->lgroup[i],
                b = t->fmts[f].kv ? 0 : format_misfit_block(&t->fmts[f], t->lshape[2 * i + 1]);
            if (!b || t->disabled[g] || mis[(size_t)f * t->ng + g]) continue;
            mis[(size_t)f * t->ng + g] = 1;
            block = b;
            if (n++ < 4)
                snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s (input %ld)",
                         n > 1 ? ", " : "", t->gname[g], t->lshape[2 * i + 1]);
        }
        if (n && warn)
            warn_msg(
                "format '%s' is not offered for %d group(s) whose input width its blocks of %d do not divide "
                "(served checkpoints cannot pad them): %s%s",
                t->fmts[f].name, n, block, names, n > 4 ? ", ..." : "");
    }
    return mis;
}

// --kv-uniform (README §7): the smallest cost of the enabled KV-cache groups when they share one choice, bf16
// or a format offered to every one of them (as search_solve's one item), 0 without such groups. Each group's
// own cheapest choice may differ (a deny table, or a bf16 cache cheaper than a format's 64 scale bits at a tiny
// context), and their sum is then below what any shared choice costs.
static int64_t kv_uniform_min_cost(const SearchCtx* c, const uint8_t* misfit) {
    const ScoreTable* t = c->t;
    int64_t best = INT64_MAX;
    for (int f = -1; f < t->nf; f++) {
        int64_t sum = 0;
        int offered = 1;
        for (int g = 0; g < t->ng && offered; g++) {
            if (t->disabled[g] || !table_kv(t, g)) continue;
            offered = f < 0 || !misfit[(size_t)f * t->ng + g];
            sum += choice_cost(c, c->cost, c->bits, g, f);
        }
        if (offered && sum < best) best = sum;
    }
    return best;
}

double search_min_budget(const SearchCtx* c) {
    int64_t cost = c->mem.on ? mem_fixed_total(c) : c->fixed[c->cost][c->scope];
    uint8_t* misfit = search_misfits(c, 0);
    if (c->kv_uniform) cost += kv_uniform_min_cost(c, misfit);
    for (int g = 0; g < c->t->ng; g++) {
        if (c->t->disabled[g] || (c->kv_uniform && table_kv(c->t, g))) continue;
        int64_t best = choice_cost(c, c->cost, c->bits, g, -1);
        for (int f = 0; f < c->t->nf; f++) {
            int64_t x = choice_cost(c, c->cost, c->bits, g, f);
            if (!misfit[(size_t)f * c->t->ng + g]) best = x < best ? x : best;
        }
        cost += best;
    }
    free(misfit);
    if (c->mem.on) return (double)((cost + 7) / 8); // bytes
    return (double)cost / c->total[c->cost][c->scope];
}

// Achieved bits of a selection in both scopes, both costs and both bit conventions.
static void measure_bits(const SearchCtx* c, Solution* s) {
    const ScoreTable* t = c->t;
    double cost[2][2] = {{0, 0}, {0, 0}}; // [cost][bits]
    for (int g = 0; g < t->ng; g++) {
        if (t->disabled[g]) continue;
        for (int k = 0; k < 2; k++)
            for (int b = 0; b < 2; b++) cost[k][b] += (double)choice_bits(c, (Cost)k, (Bits)b, g, s->sel[g]);
    }
    if (c->mem.on) {
        for (int p = 0; p < 4; p++) s->mem[p] = c->mem_fixed[p];
        for (int g = 0; g < t->ng; g++)
            if (!t->disabled[g]) s->mem[table_kv(t, g) ? MEM_KV : MEM_LINEARS] += mem_cost(c, g, s->sel[g]);
        s->mem[MEM_TOTAL] = 0;
        for (int p = 0; p < 4; p++) s->mem[MEM_TOTAL] += s->mem[p];
        for (int p = 0; p < 5; p++) s->mem[p] = (s->mem[p] + 7) / 8; // bits to bytes (each part whole bytes)
    }
    for (int sc = 0; sc < 2; sc++) {
        for (int k = 0; k < 2; k++)
            s->bits_cost[k][sc] = (cost[k][c->bits] + c->fixed[k][sc]) / c->total[k][sc];
        for (int b = 0; b < 2; b++)
            s->bits_conv[b][sc] = (cost[c->cost][b] + c->fixed[c->cost][sc]) / c->total[c->cost][sc];
        s->bits[sc] = s->bits_cost[c->cost][sc];
    }
}

int64_t search_choice_cost(const SearchCtx* c, int g, int f) { return choice_cost(c, c->cost, c->bits, g, f); }
uint8_t* search_misfit_table(const SearchCtx* c) { return search_misfits(c, 0); }
int64_t search_cap(const SearchCtx* c, double budget) {
    if (c->mem.on) return (int64_t)budget * 8 - mem_fixed_total(c);
    return (int64_t)floor(budget * c->total[c->cost][c->scope] + 1e-6) - c->fixed[c->cost][c->scope];
}
void search_measure(const SearchCtx* c, Solution* s) { measure_bits(c, s); }

static void infeasible(const SearchCtx* c, double budget, double minb, const char* scope) {
    if (c->mem.on)
        fail_input(
            "--memory-budget %.0f bytes (%.3f GiB) is infeasible at --context %ld --batch %ld: the smallest "
            "feasible is %.0f bytes (%.3f GiB), overhead %lld bytes included",
            budget, budget / 1073741824.0, c->mem.context, c->mem.batch, minb, minb / 1073741824.0,
            (long long)c->mem.overhead);
    fail_input("--budget %.4g is infeasible: the smallest feasible budget is %.4f bits (scope %s)", budget,
               ceil(minb * 1e4) / 1e4, scope);
}

void search_solve(const SearchCtx* c, const double* budgets, int nb, Solution* out) {
    const ScoreTable* t = c->t;
    uint8_t* misfit = search_misfits(c, !c->quiet);
    int* gidx = xmalloc(sizeof(int) * (t->ng + 1));
    KsItem* items = xcalloc(t->ng + 1, sizeof(KsItem));
    int n = 0;
    for (int g = 0; g < t->ng; g++) {
        if (t->disabled[g] || (c->kv_uniform && table_kv(t, g))) continue;
        KsItem* it = &items[n];
        gidx[n++] = g;
        it->n_choices = t->nf + 1;
        it->cost[0] = choice_cost(c, c->cost, c->bits, g, -1); // choice 0: bf16
        it->score[0] = 0.0;
        it->bf16[0] = t->params[g];
        for (int f = 0; f < t->nf; f++) {
            it->cost[f + 1] = choice_cost(c, c->cost, c->bits, g, f);
            it->score[f + 1] = t->score[(size_t)f * t->ng + g];
            it->bf16[f + 1] = 0;
            if (misfit[(size_t)f * t->ng +
                       g]) { // not offered: dominated by bf16 (twice its cost, a huge score)
                it->cost[f + 1] = 2 * it->cost[0];
                it->score[f + 1] = 1e30;
            }
        }
    }
    int kv_item = -1; // --kv-uniform: the enabled KV-cache groups as one item, gidx -1 (README §7)
    for (int g = 0; g < t->ng && c->kv_uniform; g++) {
        if (t->disabled[g] || !table_kv(t, g)) continue;
        if (kv_item < 0) {
            kv_item = n++;
            gidx[kv_item] = -1;
            items[kv_item].n_choices = t->nf + 1;
        }
        KsItem* it = &items[kv_item];
        it->cost[0] += choice_cost(c, c->cost, c->bits, g, -1);
        for (int f = 0; f < t->nf; f++) {
            it->cost[f + 1] += choice_cost(c, c->cost, c->bits, g, f);
            it->score[f + 1] += misfit[(size_t)f * t->ng + g] ? 1e30 : t->score[(size_t)f * t->ng + g];
        }
    }
    if (kv_item >= 0)
        for (int f = 0; f < t->nf; f++)
            if (items[kv_item].score[f + 1] >= 1e30) items[kv_item].cost[f + 1] = 2 * items[kv_item].cost[0];
    double hi = 0;
    for (int i = 0; i < nb; i++) hi = budgets[i] > hi ? budgets[i] : hi;
    double minb = search_min_budget(c);
    const char* scope = c->scope == SCOPE_ALL ? "all" : "candidates";
    for (int i = 0; i < nb; i++)
        if (search_cap(c, budgets[i]) < 0 || (!c->mem.on && budgets[i] * c->total[c->cost][c->scope] <
                                                                minb * c->total[c->cost][c->scope] - 1e-6))
            infeasible(c, budgets[i], minb, scope);
    Knapsack ks;
    int64_t max_cap = search_cap(c, hi);
    if (ks_build(&ks, items, n, max_cap, MAX_DP_STATES) != 0)
        fail_other("exact search table too large (%d groups, capacity %lld units); try fewer formats or --bits "
                   "modelopt (whose costs share a larger common factor)",
                   n, (long long)(max_cap / (ks.unit ? ks.unit : 1)));
    int* ch = xmalloc(sizeof(int) * (n ? n : 1));
    for (int i = 0; i < nb; i++) {
        Solution* s = &out[i];
        memset(s, 0, sizeof(*s));
        s->budget = budgets[i];
        s->sel = xmalloc(sizeof(int) * t->ng);
        for (int g = 0; g < t->ng; g++) s->sel[g] = -1;
        int64_t cap = search_cap(c, budgets[i]);
        double score;
        int64_t cost;
        if (ks_solve(&ks, cap, ch, &score, &cost) != 0) infeasible(c, budgets[i], minb, scope);
        for (int k = 0; k < n; k++)
            if (gidx[k] >= 0) s->sel[gidx[k]] = ch[k] - 1;
        for (int g = 0; g < t->ng && kv_item >= 0; g++)
            if (!t->disabled[g] && table_kv(t, g)) s->sel[g] = ch[kv_item] - 1;
        s->predicted = score;
        measure_bits(c, s);
    }
    free(ch);
    ks_free(&ks);
    free(items);
    free(misfit);
    free(gidx);
}

void solution_free(Solution* s) {
    free(s->sel);
    s->sel = NULL;
}

static const char* choice_name(const ScoreTable* t, const Solution* s, int g) {
    if (t->disabled[g]) return "bf16 (disabled)";
    return s->sel[g] < 0 ? "bf16" : t->fmts[s->sel[g]].name;
}

// Whether some group's active parameters differ from its stored ones (a mixture-of-experts model).
static int moe_table(const ScoreTable* t) {
    for (int g = 0; g < t->ng; g++)
        if (t->active[g] != t->params[g]) return 1;
    return 0;
}

void solution_print(const SearchCtx* c, const Solution* s, int detail) {
    const ScoreTable* t = c->t;
    if (detail) {
        printf("%-44s %10s %14s  %s\n", "group", "params", "score", "choice");
        for (int g = 0; g < t->ng; g++) {
            double sc = t->disabled[g] || s->sel[g] < 0 ? (t->disabled[g] ? NAN : 0.0)
                                                        : t->score[(size_t)s->sel[g] * t->ng + g];
            printf("%-44s %10ld %14.6g  %s\n", t->gname[g], t->params[g], sc, choice_name(t, s, g));
        }
    }
    int kept = 0, kv = 0, kvq = 0;
    for (int g = 0; g < t->ng; g++) {
        kept += !t->disabled[g] && !table_kv(t, g) && s->sel[g] < 0;
        kv += !t->disabled[g] && table_kv(t, g);
        kvq += !t->disabled[g] && table_kv(t, g) && s->sel[g] >= 0;
    }
    int other = c->bits == BITS_TRUE ? BITS_MODELOPT : BITS_TRUE;
    if (c->mem.on) { // the byte breakdown (README §7)
        const double G = 1073741824.0;
        printf(
            "memory budget %.0f bytes (%.3f GiB) at context %ld x batch %ld: linears %.3f GiB + other weights "
            "%.3f GiB + KV cache %.3f GiB + overhead %.3f GiB = %lld bytes (%.3f GiB); ",
            s->budget, s->budget / G, c->mem.context, c->mem.batch, s->mem[MEM_LINEARS] / G,
            s->mem[MEM_OTHER] / G, s->mem[MEM_KV] / G, s->mem[MEM_OVERHEAD] / G, (long long)s->mem[MEM_TOTAL],
            s->mem[MEM_TOTAL] / G);
    } else
        printf("budget %.3f (%s): ", s->budget, c->scope == SCOPE_ALL ? "all" : "candidates");
    int nkv = 0;
    for (int g = 0; g < t->ng; g++) nkv += table_kv(t, g);
    printf("%d of %d enabled groups kept bf16", kept, c->t->ng - nkv);
    if (kv) printf(", %d of %d KV caches quantized", kvq, kv);
    printf("; effective bits %.4f candidates, %.4f all (%s; %s %.4f / %.4f); predicted %s %.6g", s->bits[0],
           s->bits[1], c->bits == BITS_TRUE ? "true bits, scales counted" : "ModelOpt's num_bits",
           c->bits == BITS_TRUE ? "ModelOpt's num_bits" : "true bits, scales counted", s->bits_conv[other][0],
           s->bits_conv[other][1], t->method, s->predicted);
    if (moe_table(t)) // both costs, whichever the search used
        printf("; memory bits %.4f / %.4f, active bits %.4f / %.4f (candidates / all; cost %s)",
               s->bits_cost[COST_MEMORY][0], s->bits_cost[COST_MEMORY][1], s->bits_cost[COST_ACTIVE][0],
               s->bits_cost[COST_ACTIVE][1], c->cost == COST_ACTIVE ? "active" : "memory");
    if (s->nd) {
        printf("; objective %s, predicted loss per window", s->objective);
        for (int d = 0; d < s->nd; d++) printf("%s %s %.6g", d ? "," : "", t->dname[d], s->dloss[d]);
    }
    if (s->verified)
        printf("; measured KL %.6g, NLL %.6f -> %.6f (%+.6f)%s%s%s", s->v.kl, s->v.nll_ref, s->v.nll_q,
               s->v.nll_q - s->v.nll_ref, s->v.gptq ? ", deployed with GPTQ (" : "",
               s->v.gptq ? gptq_pipeline_name(s->v.pipeline) : "", s->v.gptq ? " pipeline)" : "");
    printf("\n");
}

// ---- recipe JSON ----
void recipe_write_json(const char* path, const SearchCtx* c, const Solution* s, const Format* fmts) {
    const ScoreTable* t = c->t;
    json_t* j = json_object();
    json_object_set_new(j, "model", json_text(t->model, "the model path"));
    json_object_set_new(j, "method", json_string(t->method));
    json_object_set_new(j, "numerics", json_string(t->numerics));
    json_object_set_new(j, "quantizer", json_string(t->quantizer[0] ? t->quantizer : "rtn")); // of the scores
    json_object_set_new(j, "disabled_layers", json_text(t->disabled_csv, "--disabled-layers"));
    json_t* fs = json_array();
    for (int f = 0; f < t->nf; f++) json_array_append_new(fs, format_to_json(&fmts[f]));
    json_object_set_new(j, "formats", fs);
    json_object_set_new(j, "budget", json_real(s->budget));
    json_object_set_new(j, "budget_scope", json_string(c->scope == SCOPE_ALL ? "all" : "candidates"));
    json_object_set_new(j, "effective_bits",
                        json_pack("{s:f,s:f}", "candidates", s->bits[0], "all", s->bits[1]));
    json_object_set_new(j, "bits", json_string(c->bits == BITS_TRUE ? "true" : "modelopt"));
    json_object_set_new(
        j, "effective_bits_true",
        json_pack("{s:f,s:f}", "candidates", s->bits_conv[BITS_TRUE][0], "all", s->bits_conv[BITS_TRUE][1]));
    json_object_set_new(j, "effective_bits_modelopt",
                        json_pack("{s:f,s:f}", "candidates", s->bits_conv[BITS_MODELOPT][0], "all",
                                  s->bits_conv[BITS_MODELOPT][1]));
    json_object_set_new(j, "cost", json_string(c->cost == COST_ACTIVE ? "active" : "memory"));
    json_object_set_new(j, "effective_bits_memory",
                        json_pack("{s:f,s:f}", "candidates", s->bits_cost[COST_MEMORY][0], "all",
                                  s->bits_cost[COST_MEMORY][1]));
    json_object_set_new(j, "effective_bits_active",
                        json_pack("{s:f,s:f}", "candidates", s->bits_cost[COST_ACTIVE][0], "all",
                                  s->bits_cost[COST_ACTIVE][1]));
    json_object_set_new(j, "predicted_score", json_real(s->predicted));
    if (c->mem.on) {
        json_t* mb = json_pack("{s:I,s:I,s:I,s:I}", "budget_bytes", (json_int_t)s->budget, "context",
                               (json_int_t)c->mem.context, "batch", (json_int_t)c->mem.batch, "overhead_bytes",
                               (json_int_t)c->mem.overhead);
        json_t* parts = json_object();
        for (int p = 0; p < 5; p++) json_object_set_new(parts, mem_part_name[p], json_integer(s->mem[p]));
        json_object_set_new(mb, "bytes", parts);
        json_object_set_new(j, "memory", mb);
    }
    if (s->verified) {
        json_t* mj = json_pack("{s:f,s:f,s:f,s:f,s:s}", "kl", s->v.kl, "nll_ref", s->v.nll_ref, "nll_quantized",
                               s->v.nll_q, "nll_delta", s->v.nll_q - s->v.nll_ref, "quantizer",
                               s->v.gptq ? "gptq" : "rtn");
        if (s->v.gptq) json_object_set_new(mj, "gptq_pipeline", json_string(gptq_pipeline_name(s->v.pipeline)));
        json_object_set_new(j, "measured", mj);
    }
    if (s->boot) json_object_set_new(j, "bootstrap", bootstrap_json(s->boot));
    if (s->refine) json_object_set_new(j, "refine", refine_json(s->refine, c));
    if (s->nd) {
        json_object_set_new(j, "objective", json_string(s->objective));
        json_t* dl = json_object();
        for (int d = 0; d < s->nd; d++) json_object_set_new(dl, t->dname[d], json_real(s->dloss[d]));
        json_object_set_new(j, "predicted_loss", dl);
    }
    json_t* gs = json_array();
    for (int g = 0; g < t->ng; g++) {
        json_t* o = table_group_json(t, g);
        json_object_set_new(o, "choice",
                            json_string(t->disabled[g] || s->sel[g] < 0 ? "bf16" : fmts[s->sel[g]].name));
        json_object_set_new(
            o, "score",
            t->disabled[g] || s->sel[g] < 0 ? json_null() : json_real(t->score[(size_t)s->sel[g] * t->ng + g]));
        if (s->boot && !t->disabled[g])
            json_object_set_new(o, "bootstrap", bootstrap_group_json(s->boot, t, g));
        json_array_append_new(gs, o);
    }
    json_object_set_new(j, "groups", gs);
    json_write_file(j, path);
    json_decref(j);
}

// ---- HDF5 ----
static void h5_attr_double(hid_t obj, const char* name, double v, const char* path) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_NATIVE_DOUBLE, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (sp < 0 || a < 0 || H5Awrite(a, H5T_NATIVE_DOUBLE, &v) < 0 || H5Aclose(a) < 0)
        fail_other("%s: cannot write attribute %s (disk full?)", path, name);
    H5Sclose(sp);
}

// The attributes that say how /search's and /pareto's bits were counted (README §7, §8).
static void h5_conventions(hid_t g, const SearchCtx* c) {
    h5_attr_str(g, "bits", c->bits == BITS_TRUE ? "true" : "modelopt");
    h5_attr_str(g, "budget_scope", c->scope == SCOPE_ALL ? "all" : "candidates");
    h5_attr_str(g, "cost", c->cost == COST_ACTIVE ? "active" : "memory");
}

static void pareto_write(hid_t f, const SearchCtx* c, const Solution* sweep, int ns, const char* path) {
    const ScoreTable* t = c->t;
    hid_t g = H5Gcreate2(f, "pareto", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) fail_other("%s: cannot create group /pareto", path);
    h5_conventions(g, c);
    h5_attr_str(
        g, "description",
        "one row per --sweep budget; budget and bits in bits per weight, counted in the convention "
        "(bits: true = values and scales, modelopt = ModelOpt's num_bits), scope (budget_scope) and cost "
        "of these attributes");
    double* buf = xmalloc(sizeof(double) * ns);
    hsize_t n = (hsize_t)ns, ng = (hsize_t)t->ng;
    for (int i = 0; i < ns; i++) buf[i] = sweep[i].budget;
    h5_write(g, "budget", H5T_NATIVE_DOUBLE, 1, &n, buf);
    h5_describe(g, "budget", c->mem.on ? "bytes" : "bits per weight", "each sweep point's budget");
    if (c->mem.on) {
        for (int i = 0; i < ns; i++) buf[i] = (double)sweep[i].mem[MEM_TOTAL];
        h5_write(g, "memory_bytes", H5T_NATIVE_DOUBLE, 1, &n, buf);
        h5_describe(g, "memory_bytes", "bytes", "--memory-budget: each sweep point's total bytes (README §7)");
    }
    for (int i = 0; i < ns; i++) buf[i] = sweep[i].bits[c->scope];
    h5_write(g, "bits", H5T_NATIVE_DOUBLE, 1, &n, buf);
    h5_describe(g, "bits", "bits per weight", "each sweep point's achieved effective bits");
    for (int i = 0; i < ns; i++) buf[i] = sweep[i].predicted;
    h5_write(g, "score", H5T_NATIVE_DOUBLE, 1, &n, buf);
    h5_describe(g, "score", table_score_units(t),
                "each sweep point's predicted score: the sum of its quantized groups' /groups/score");
    if (sweep[0].verified) {
        for (int i = 0; i < ns; i++) buf[i] = sweep[i].v.kl;
        h5_write(g, "measured_kl", H5T_NATIVE_DOUBLE, 1, &n, buf);
        h5_describe(g, "measured_kl", "nats",
                    "--verify: KL of the deployed recipe to the unquantized model, summed over windows, "
                    "positions and the vocabulary");
        for (int i = 0; i < ns; i++) buf[i] = sweep[i].v.nll_q - sweep[i].v.nll_ref;
        h5_write(g, "measured_nll_delta", H5T_NATIVE_DOUBLE, 1, &n, buf);
        h5_describe(g, "measured_nll_delta", "nats per token",
                    "--verify: mean next-token cross-entropy of the deployed recipe minus the unquantized "
                    "model's");
    }
    int* sel = xmalloc(sizeof(int) * ns * t->ng);
    for (int i = 0; i < ns; i++) memcpy(sel + (size_t)i * t->ng, sweep[i].sel, sizeof(int) * t->ng);
    hsize_t d2[2] = {n, ng};
    h5_write(g, "selected", H5T_NATIVE_INT, 2, d2, sel);
    h5_describe(g, "selected", NULL,
                "[points, groups]: each sweep point's choice per group (columns: rows of /groups); -1 bf16 "
                "(disabled groups too), else a row index of /formats/definition");
    free(sel);
    free(buf);
    if (H5Gclose(g) < 0) fail_other("%s: cannot write group /pareto (disk full?)", path);
}

void search_write_h5(const char* path, const SearchCtx* c, const Solution* s, const Solution* sweep, int ns) {
    const ScoreTable* t = c->t;
    hid_t f = (hid_t)table_h5_create(t, path);
    hid_t g = H5Gcreate2(f, "search", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) fail_other("%s: cannot create group /search", path);
    hsize_t ng = (hsize_t)t->ng;
    h5_write(g, "selected", H5T_NATIVE_INT, 1, &ng, s->sel);
    h5_describe(g, "selected", NULL,
                "the recipe's choice per group (rows of /groups): -1 bf16 (disabled groups too), else a row "
                "index of /formats/definition");
    h5_conventions(g, c);
    h5_attr_str(
        g, "description",
        "the --budget solution; budget and effective_bits in bits per weight in the convention (bits), "
        "scope (budget_scope) and cost of these attributes, effective_bits_true and "
        "effective_bits_modelopt the same in each convention; predicted_score in the units of "
        "/groups/score; --verify adds measured_kl (nats, summed) and measured_nll_delta (nats per token)");
    h5_attr_double(g, "budget", s->budget, path);
    h5_attr_double(g, "effective_bits", s->bits[c->scope], path);
    h5_attr_double(g, "effective_bits_true", s->bits_conv[BITS_TRUE][c->scope], path);
    h5_attr_double(g, "effective_bits_modelopt", s->bits_conv[BITS_MODELOPT][c->scope], path);
    h5_attr_double(g, "predicted_score", s->predicted, path);
    if (c->mem.on) {
        hsize_t five = 5;
        double v[5];
        for (int p = 0; p < 5; p++) v[p] = (double)s->mem[p];
        h5_write(g, "memory_bytes", H5T_NATIVE_DOUBLE, 1, &five, v);
        h5_describe(
            g, "memory_bytes", "bytes",
            "--memory-budget: the recipe's bytes: candidate linears, other weights, KV cache at context x "
            "batch, overhead, total (README §7)");
        h5_attr_double(g, "context", (double)c->mem.context, path);
        h5_attr_double(g, "batch", (double)c->mem.batch, path);
    }
    if (s->verified) {
        h5_attr_double(g, "measured_kl", s->v.kl, path);
        h5_attr_double(g, "measured_nll_delta", s->v.nll_q - s->v.nll_ref, path);
    }
    if (H5Gclose(g) < 0) fail_other("%s: cannot write group /search (disk full?)", path);
    if (ns > 0) pareto_write(f, c, sweep, ns, path);
    if (s->nd) {
        hid_t sg = H5Gopen2(f, "search", H5P_DEFAULT);
        h5_attr_str(sg, "objective", s->objective);
        hsize_t nd = (hsize_t)s->nd;
        h5_write(sg, "predicted_loss", H5T_NATIVE_DOUBLE, 1, &nd, s->dloss);
        h5_describe(sg, "predicted_loss", table_score_units(t),
                    "each calibration domain's predicted loss (rows of /domains/name): the chosen formats' "
                    "/domains/score summed, divided by the domain's windows");
        H5Gclose(sg);
    }
    if (s->boot) bootstrap_write_h5(f, s->boot, t, path);
    if (s->refine) refine_write_h5(f, s->refine, c, path);
    table_h5_finish(f, path);
}

// autoq search: the exact budgeted recipe search, sweep, verification and exports.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/args.h"
#include "../engine/forward.h"
#include "../engine/util.h"
#include "../scoring/job.h"
#include "bootstrap.h"
#include "milp.h"
#include "recipe.h"
#include "target.h"

#define MAX_SWEEP 1000

static int parse_sweep(const char* s, double* out) {
    double lo, hi, step;
    char tail;
    if (sscanf(s, "%lf:%lf:%lf%c", &lo, &hi, &step, &tail) != 3 || !isfinite(lo) || !isfinite(hi) ||
        !isfinite(step) || !(step > 0) || hi < lo)
        fail_input("search: --sweep '%s' must be LO:HI:STEP, finite numbers with LO <= HI and STEP > 0", s);
    // count in double first: (hi - lo) / step can be far beyond any int
    double points = floor((hi - lo) / step + 1e-9) + 1;
    if (!(points <= MAX_SWEEP))
        fail_input("search: --sweep '%s' has %.0f points (at most %d)", s, points, MAX_SWEEP);
    int n = (int)points;
    for (int i = 0; i < n; i++) out[i] = lo + i * step;
    return n;
}

// Linear indices of m sorted by name, for name lookups in O(log n) (a 235B-scale MoE has ~36k).
static const Model* g_sort_model;
static int by_name(const void* a, const void* b) {
    return strcmp(g_sort_model->linears[*(const int*)a].name, g_sort_model->linears[*(const int*)b].name);
}

static int find_linear(const Model* m, const int* sorted, const char* name) {
    int lo = 0, hi = m->n_linears - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(m->linears[sorted[mid]].name, name);
        if (c == 0) return sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

// Per-linear choice of the loaded model for a solution (linear names must match).
static void linear_choice(const Model* m, const ScoreTable* t, const Solution* s, int* choice) {
    int* sorted = xmalloc(sizeof(int) * (m->n_linears ? m->n_linears : 1));
    for (int i = 0; i < m->n_linears; i++) sorted[i] = i;
    g_sort_model = m;
    qsort(sorted, m->n_linears, sizeof(int), by_name);
    for (int i = 0; i < m->n_linears; i++) choice[i] = -1;
    for (int i = 0; i < t->nl; i++) {
        int g = t->lgroup[i];
        if (t->disabled[g] || s->sel[g] < 0) continue;
        int found = find_linear(m, sorted, t->lname[i]);
        if (found < 0)
            fail_input("%s: the scores name linear '%s', which this model does not have", m->dir, t->lname[i]);
        choice[found] = s->sel[g];
    }
    free(sorted);
}

// One budget under the objective, with each calibration domain's predicted loss.
static void solve_point(const SearchCtx* c, const Objective* o, double budget, Solution* s) {
    objective_solve(c, o, budget, s);
    s->objective = objective_name(o);
    s->nd = c->t->nd;
    if (s->nd) objective_losses(c->t, s->sel, s->dloss);
}

int cmd_search(Args* a) {
    // values, --emit's NAME=FILE and the outputs' aliasing already checked (autoq.c's table)
    const char* scores = args_str(a, "--scores");
    double budget = args_double(a, "--budget", NAN);
    const char* scope_s = args_str(a, "--budget-scope");
    const char* cost_s = args_str(a, "--cost");
    const char* bits_s = args_str(a, "--bits");
    const char* out = args_str(a, "--out");
    const char* h5 = args_str(a, "--h5");
    const char* sweep_s = args_str(a, "--sweep");
    int verify = args_flag(a, "--verify");
    const char* emits[4];
    int ne = args_multi(a, "--emit", emits, 4);
    int nboot = args_int(a, "--bootstrap", 0);
    int boot_seed = args_int(a, "--bootstrap-seed", 1);
    const char* objective_s = args_str(a, "--objective");
    const char* target_s = args_str(a, "--target");
    const char* arch_s = args_str(a, "--arch");
    if (arch_s && !target_s)
        fail_input("search: --arch goes with --target (the engine whose kernels it names)");
    // --scores: nothing is scored, so no scoring option means anything; --verify alone reads data
    if (scores) args_refuse(a, G_SCORE, "with --scores (the scores are read, not computed)");
    if (scores && !verify) args_refuse(a, G_DATA | G_QUANT, "with --scores without --verify");
    int numerics_given = args_str(a, "--numerics") != NULL;
    ScoreJob j;
    score_job_parse(&j, a, scores == NULL);
    args_done(a);
    int n_lc = 0, n_mo = 0;
    for (int i = 0; i < ne; i++) *(strncmp(emits[i], "llmcompressor=", 14) == 0 ? &n_lc : &n_mo) += 1;
    // The emit target decides the numerics the user did not choose (README §8): llm-compressor alone
    // applies compressed-tensors' quantizers, so score with them (E2M1 formats have no such numerics here).
    if (!scores && n_lc && !n_mo && !numerics_given) {
        Format probe[MAX_FORMATS];
        int nf = formats_load(probe, MAX_FORMATS, j.format_csv, 0), e2m1 = 0;
        for (int f = 0; f < nf; f++)
            e2m1 |= (probe[f].w_enable && probe[f].w.kind == QUANT_FP4_E2M1) ||
                    (probe[f].in_enable && probe[f].in.kind == QUANT_FP4_E2M1);
        if (!e2m1) {
            j.ct = 1;
            info_msg(
                "search: scoring with --numerics compressed-tensors, the quantizers llm-compressor applies to "
                "--emit llmcompressor's recipe (--numerics modelopt scores ModelOpt's instead)");
        }
    }
    Scope scope = scope_s && strcmp(scope_s, "all") == 0 ? SCOPE_ALL : SCOPE_CANDIDATES;
    Cost cost = cost_s && strcmp(cost_s, "active") == 0 ? COST_ACTIVE : COST_MEMORY;
    Bits bits = bits_s && strcmp(bits_s, "modelopt") == 0 ? BITS_MODELOPT : BITS_TRUE;
    if (isnan(budget) && !sweep_s) fail_input("search: --budget (or --sweep) is required");
    // every argument and output path is checked before any compute
    if (out) out_check(out, "--out");
    if (h5) out_check(h5, "--h5");
    for (int i = 0; i < ne; i++) out_check(strchr(emits[i], '=') + 1, "--emit");
    double pts[MAX_SWEEP + 1];
    int ns = sweep_s ? parse_sweep(sweep_s, pts) : 0;

    ScoreTable t;
    int have_model = 0;
    if (scores) {
        table_read_h5(&t, scores);
        if (verify && j.quant.kind != QUANTIZER_GPTQ && strcmp(t.quantizer, "gptq") == 0)
            warn_msg("search: %s holds GPTQ scores, but --verify deploys the recipe round-to-nearest (add "
                     "--quantizer gptq)",
                     scores);
        if (verify) {
            if (!j.model_dir) j.model_dir = t.model;
            if (!j.data.path) fail_input("search: --verify with --scores needs --data");
            j.format_csv = NULL;
        }
    } else {
        j.need_host = verify;
        score_job_load(&j);
        have_model = 1;
        score_job_run(&j, NULL);
        score_job_table(&j, &t);
    }
    // The scores' own format definitions, never a format file that happens to have the same name.
    const Format* fmts = t.fmts;
    if (scores && n_lc && !n_mo &&
        strcmp(t.numerics, "compressed-tensors") != 0) // what is scored is not shipped
        for (int f = 0; f < t.nf; f++) {
            char note[512];
            if (export_numerics_note(&fmts[f], 1, note, sizeof(note)) > 0)
                fail_input(
                    "search: --emit llmcompressor: %s holds %s-numerics scores, but llm-compressor applies "
                    "compressed-tensors' quantizers (%s); score again with them: autoq score %s --data ... "
                    "--numerics compressed-tensors --out SCORES.h5 (or emit --emit modelopt=FILE too, to keep "
                    "these scores for both tools with a warning)",
                    scores, t.numerics, note, t.model);
        }
    if (verify && !have_model) {
        model_load(&j.model, j.model_dir);
        j.data.model_dir = j.model_dir;
        j.data.vocab = j.model.c.vocab_size;
        j.data.eos = j.model.c.eos_token_id;
        if (j.data.seq_len) model_check_seq_len(&j.model, j.data.seq_len, "--seq-len");
        data_load(&j.ids, &j.data);
        model_check_seq_len(&j.model, j.ids.t, j.data.path);
        have_model = 1;
    }

    SearchCtx ctx;
    search_init(&ctx, &t, scope, cost, bits);
    Target target;
    uint8_t* deny = NULL;
    if (target_s) { // the engine's rules: formats it does not serve on --arch are never offered
        target_load(&target, target_s, arch_s);
        deny = target_deny_table(&target, &t);
        ctx.deny = deny;
    }
    Solution* sweep = ns ? xcalloc(ns, sizeof(Solution)) : NULL;
    Objective obj;
    objective_parse(&obj, objective_s, &t);
    for (int i = 0; i < ns; i++) solve_point(&ctx, &obj, pts[i], &sweep[i]);
    Solution main_sol;
    double b = isnan(budget) ? pts[ns - 1] : budget;
    solve_point(&ctx, &obj, b, &main_sol);
    int* choice = have_model ? xmalloc(sizeof(int) * j.model.n_linears) : NULL;
    Bootstrap boot;
    if (nboot) {
        if (!t.nw)
            fail_input("search: --bootstrap: %s holds no per-window scores (/groups/window_scores; README §8): "
                       "score again on the CPU without resuming a checkpoint (the GPU back ends keep none yet)",
                       scores ? scores : "the scores");
        bootstrap_run(&boot, &ctx, &obj, &main_sol, nboot, (uint64_t)boot_seed);
        main_sol.boot = &boot;
    }
    if (verify) {
        Progress p;
        progress_init(&p, "verify", ns + 1);
        for (int i = 0; i < ns; i++) {
            linear_choice(&j.model, &t, &sweep[i], choice);
            verify_recipe(&j.model, &j.ids, fmts, choice, &j.quant, &sweep[i].v);
            sweep[i].verified = 1;
            progress_step(&p, 1);
        }
        linear_choice(&j.model, &t, &main_sol, choice);
        verify_recipe(&j.model, &j.ids, fmts, choice, &j.quant, &main_sol.v);
        main_sol.verified = 1;
        progress_step(&p, 1);
        progress_end(&p);
    }
    if (ns) {
        printf("Pareto frontier (%d budgets)\n", ns);
        for (int i = 0; i < ns; i++) solution_print(&ctx, &sweep[i], 0);
        printf("\n");
    }
    solution_print(&ctx, &main_sol, 1);
    if (nboot) bootstrap_print(&boot, &ctx, &main_sol);
    if (out) recipe_write_json(out, &ctx, &main_sol, fmts);
    for (int i = 0; i < ne; i++) {
        if (strncmp(emits[i], "llmcompressor=", 14) == 0)
            export_llmcompressor(emits[i] + 14, &ctx, &main_sol, fmts, &j.quant);
        else
            export_modelopt(emits[i] + 9, &ctx, &main_sol, fmts, &j.quant);
    }
    if (h5) search_write_h5(h5, &ctx, &main_sol, sweep, ns);
    for (int i = 0; i < ns; i++) solution_free(&sweep[i]);
    free(sweep);
    solution_free(&main_sol);
    if (nboot) bootstrap_free(&boot);
    search_free(&ctx);
    if (target_s) target_free(&target);
    free(deny);
    free(choice);
    table_free(&t);
    if (have_model) score_job_free(&j);
    return 0;
}

// autoq search: the exact budgeted recipe search, sweep, verification and exports.
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../engine/args.h"
#include "../engine/forward.h"
#include "../engine/util.h"
#include "../engine/gpu.h"
#include "../engine/gpu_stream.h"
#include "../kernels/quant.h"
#include "../scoring/job.h"
#include "../scoring/measure_gpu.h"
#include "bootstrap.h"
#include "milp.h"
#include "quantize.h"
#include "recipe.h"
#include "refine.h"
#include "target.h"

#define MAX_SWEEP 1000

// A size in bytes: a number (decimal or exponent) and an optional unit B, KB, MB, GB, TB (powers of 1000) or
// KiB, MiB, GiB, TiB (powers of 1024), case-insensitive, rounded down to whole bytes, at most 1 PiB; at least
// 1 byte unless zero_ok. Anything else is exit 2 naming the option.
static double size_arg(const char* s, const char* opt, int zero_ok) {
    static const struct {
        const char* unit;
        double mult;
    } units[] = {
        {"", 1},      {"b", 1},        {"kb", 1e3},        {"mb", 1e6},           {"gb", 1e9},
        {"tb", 1e12}, {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0}, {"tib", 1099511627776.0}};
    char* end = NULL;
    double v = strtod(s, &end), b = -1;
    if (end != s && isfinite(v) && v >= 0 && !isspace((unsigned char)*s))
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
            if (strcasecmp(end, units[i].unit) == 0) b = floor(v * units[i].mult);
    if (!(b >= (zero_ok ? 0 : 1) && b <= 1125899906842624.0))
        fail_input(
            "search: %s '%s' must be a size: a number and a unit B, KB, MB, GB, TB, KiB, MiB, GiB or TiB "
            "(24GiB), %s to 1 PiB",
            opt, s, zero_ok ? "0" : "1 byte");
    return b;
}

static int parse_sweep(const char* s, double* out, int sizes) {
    double lo, hi, step;
    char tail;
    if (sizes) { // LO:HI:STEP of sizes
        char buf[3][64];
        if (strlen(s) > 190 || sscanf(s, "%63[^:]:%63[^:]:%63s%c", buf[0], buf[1], buf[2], &tail) != 3)
            fail_input("search: --sweep '%s' must be LO:HI:STEP sizes with --memory-budget (12GiB:24GiB:4GiB)",
                       s);
        lo = size_arg(buf[0], "--sweep", 0), hi = size_arg(buf[1], "--sweep", 0),
        step = size_arg(buf[2], "--sweep", 0);
        if (hi < lo) fail_input("search: --sweep '%s' must have LO <= HI", s);
    } else if (sscanf(s, "%lf:%lf:%lf%c", &lo, &hi, &step, &tail) != 3 || !isfinite(lo) || !isfinite(hi) ||
               !isfinite(step) || !(step > 0) || hi < lo)
        fail_input("search: --sweep '%s' must be LO:HI:STEP, finite numbers with LO <= HI and STEP > 0", s);
    // count in double first: (hi - lo) / step can be far beyond any int
    double points = floor((hi - lo) / step + 1e-9) + 1;
    if (!(points <= MAX_SWEEP))
        fail_input("search: --sweep '%s' has %.0f points (at most %d)", s, points, MAX_SWEEP);
    int n = (int)points;
    for (int i = 0; i < n; i++) out[i] = sizes ? floor(lo + i * step) : lo + i * step;
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

// Per-layer KV-cache choice of the loaded model for a solution (-1 bf16).
static void kv_choice(const Model* m, const ScoreTable* t, const Solution* s, int* kv) {
    for (int l = 0; l < m->c.num_layers; l++) {
        kv[l] = -1;
        char name[192];
        kv_group_name(name, sizeof(name), m, l);
        for (int g = 0; g < t->ng; g++)
            if (table_kv(t, g) && !t->disabled[g] && strcmp(t->gname[g], name) == 0) kv[l] = s->sel[g];
    }
}

// One budget under the objective, with each calibration domain's predicted loss.
static void solve_point(const SearchCtx* c, const Objective* o, double budget, Solution* s) {
    objective_solve(c, o, budget, s);
    s->objective = objective_name(o);
    s->nd = c->t->nd;
    if (s->nd) objective_losses(c->t, s->sel, s->dloss);
}

// search --refine's measurement: a recipe's joint KL and NLL on the held-out windows (verify_recipe's
// deployment, the unquantized passes computed once), on the CUDA engine when gpu is set.
typedef struct {
    const Model* m;
    const TokenIds* held;
    const Format* fmts;
    const Quantizer* q;
    const VerifyRef* ref;
    const ScoreTable* t;
    int* choice;
    GpuMeasure* gpu;   // resident on the CUDA engine, else NULL
    VerifyDevice* dev; // streamed on the CUDA engine (each recipe one streamed pass; dev->stream), else NULL
    int* on_gpu;       // (n_linears) the choice each linear holds on the GPU (-1 bf16)
    // --objective max: each domain's held-out windows (held holds them all, domain after domain), measured
    // apart
    int nd;
    TokenIds dheld[MAX_DOMAINS];
    VerifyRef dref[MAX_DOMAINS];
    double* wkl; // (held->n) each window's KL (the GPU's)
    int* kv;     // (layers) each layer's KV-cache choice, the array verify_set_kv deploys (README §7)
} RefineCtx;

// Each window's KL (r->wkl) summed into its domain's dkl[d] (the domains' windows one after another).
static void refine_domain_kl(const RefineCtx* r, double* dkl) {
    for (int d = 0, w = 0; dkl && d < r->nd; d++) {
        dkl[d] = 0;
        for (int i = 0; i < r->dheld[d].n; i++) dkl[d] += r->wkl[w++];
    }
}

// The recipe on the GPU. Resident: each linear whose choice changed since the last measurement gets its
// deployed weight (verify_recipe's round-to-nearest: quantize's stored scales, else fake-quantized) and input
// spec. Streamed: the whole recipe in one streamed pass (verify_measure_gpu).
static void refine_measure_gpu(RefineCtx* r, VerifyResult* v, double* dkl) {
    const Model* m = r->m;
    int n = m->n_linears;
    int* ch = xmalloc(sizeof(int) * n);
    float** wq = xcalloc(n, sizeof(float*));
    for (int i = 0; i < n; i++) ch[i] = r->dev || r->choice[i] != r->on_gpu[i] ? r->choice[i] : -1;
    quantize_deployed(wq, m, r->fmts, ch);
    if (r->dev) {
        if (!verify_measure_gpu(r->dev, m, r->held, r->fmts, r->choice, wq, v, dkl ? r->wkl : NULL))
            fail_other("internal: search --refine's streamed measurement refused after its plan fitted");
        refine_domain_kl(r, dkl);
        for (int i = 0; i < n; i++) free(wq[i]);
        free(wq), free(ch);
        return;
    }
    memset(v, 0, sizeof(*v));
    for (int i = 0; i < n; i++) {
        int c = r->choice[i];
        if (c >= 0 && !r->fmts[c].kv) v->n_quantized++;
        if (c == r->on_gpu[i]) continue;
        r->on_gpu[i] = c;
        QuantSpec none;
        memset(&none, 0, sizeof(none));
        if (c < 0 || r->fmts[c].kv) {
            gpu_measure_set(r->gpu, i, NULL, none);
            continue;
        }
        const Linear* l = &m->linears[i];
        const Format* f = &r->fmts[c];
        float* w = wq[i];
        if (!w) { // a format quantize does not write: fake-quantized, as verify_recipe runs it
            w = wq[i] = xmalloc(sizeof(float) * (size_t)l->out * l->in);
            if (f->w_enable)
                quant_weight_rows(w, l->w, l->out, l->in, f->w);
            else
                memcpy(w, l->w, sizeof(float) * (size_t)l->out * l->in);
        }
        gpu_measure_set(r->gpu, i, w, f->in_enable ? f->in : none);
    }
    gpu_measure_run(r->gpu, &v->kl, &v->nll_ref, &v->nll_q, dkl ? r->wkl : NULL);
    refine_domain_kl(r, dkl);
    for (int i = 0; i < n; i++) free(wq[i]);
    free(wq);
    free(ch);
}

static void refine_measure(void* ctx, const int* sel, VerifyResult* v, double* dkl) {
    RefineCtx* r = ctx;
    Solution s = {.sel = (int*)sel};
    linear_choice(r->m, r->t, &s, r->choice);
    kv_choice(r->m, r->t, &s, r->kv); // the KV caches as the recipe stores them (verify deploys them)
    if (r->gpu || r->dev) {
        refine_measure_gpu(r, v, dkl);
        return;
    }
    if (!dkl) {
        verify_recipe_ref(r->m, r->held, r->fmts, r->choice, r->q, r->ref, v);
        return;
    }
    // each domain apart; the totals as one run over every window would give them (NLL: mean over windows)
    memset(v, 0, sizeof(*v));
    for (int d = 0; d < r->nd; d++) {
        VerifyResult vd;
        verify_recipe_ref(r->m, &r->dheld[d], r->fmts, r->choice, r->q, &r->dref[d], &vd);
        dkl[d] = vd.kl;
        v->kl += vd.kl;
        v->nll_ref += vd.nll_ref * r->dheld[d].n / r->held->n;
        v->nll_q += vd.nll_q * r->dheld[d].n / r->held->n;
        v->n_quantized = vd.n_quantized;
        v->gptq = vd.gptq, v->pipeline = vd.pipeline;
    }
}

// Where the measurements run (README §7; tests/test_gpu_refine.sh compares the CUDA engine with the CPU's): the
// CUDA engine with --device cuda, and with --device auto where a GPU is visible, round-to-nearest recipes only
// (GPTQ runs again per recipe on the CPU); resident (*gpu) when the model, the held-out windows' reference
// logits and every linear's deployed fp32 weight fit dev's cap (--gpu-memory, else 90% of free memory), else
// streamed (dev->stream: each recipe one streamed pass at one engine batch, so every recipe is measured alike).
// Returns 0 for the CPU engine.
static int refine_gpu(VerifyDevice* dev, const ScoreJob* j, const ScoreTable* t, const TokenIds* held,
                      GpuMeasure** gpu) {
    *gpu = NULL;
    if (!dev->gpu) return 0;
    for (int g = 0; g < t->ng; g++)
        if (table_kv(t, g) && !t->disabled[g]) {
            info_msg("search: --refine measures on the CPU engine: %s is a KV-cache group, and the CUDA "
                     "measurement does not fake-quantize KV caches yet (README §7)",
                     t->gname[g]);
            return 0;
        }
    if (j->quant.kind == QUANTIZER_GPTQ) {
        info_msg("search: --refine with --quantizer gptq measures on the CPU engine (GPTQ runs again for each "
                 "recipe on the held-out windows)");
        return 0;
    }
    const Model* m = &j->model;
    MeasurePlan p;
    char why[512];
    int ok = verify_open_gpu(dev, m, held, NULL, &p, gpu, why, sizeof(why)); // every linear deployed, at most
    if (ok && p.streamed) {
        dev->stream = 1, dev->batch = p.B, dev->once = 1;
        info_msg("search: --refine streams each recipe's layers from host memory (%d of %d layers resident, "
                 "engine batches of %d windows): the resident measurement needs %.3f GiB",
                 p.sp.n_resident, m->c.num_layers, p.B, p.resident / 1073741824.0);
    }
    measure_plan_free(&p);
    if (*gpu || (ok && dev->stream)) return 1;
    if (dev->want) fail_input("search --refine --device cuda: %s", why);
    warn_msg("search: --refine measures on the CPU engine: %s", why);
    return 0;
}

// --objective max's held-out windows (README §7): for each domain of the scores, --data NAME=FILE's first
// --refine-windows windows, all of one length; into dheld[d], and all of them one after another into *all.
static void refine_domain_data(const ScoreJob* j, const ScoreTable* t, int windows, TokenIds* dheld,
                               TokenIds* all) {
    int T = 0, n = 0;
    for (int d = 0; d < t->nd; d++) {
        int k = 0;
        while (k < j->nd && strcmp(j->dname[k], t->dname[d])) k++;
        if (k == j->nd)
            fail_input(
                "search --refine --objective max: give domain %s's held-out windows (--data %s=FILE, one "
                "per domain of the scores)",
                t->dname[d], t->dname[d]);
        DataOpts dd = j->data;
        dd.path = j->dpath[k];
        data_load(&dheld[d], &dd);
        model_check_seq_len(&j->model, dheld[d].t, dd.path);
        if (d && dheld[d].t != T)
            fail_input("--data %s=%s: windows of %d tokens, domain %s's have %d (give --seq-len)", j->dname[k],
                       dd.path, dheld[d].t, t->dname[0], T);
        T = dheld[d].t;
        if (dheld[d].n > windows) dheld[d].n = windows;
        n += dheld[d].n;
    }
    all->n = n, all->t = T;
    all->ids = xmalloc(sizeof(int) * (size_t)n * T);
    for (int d = 0, w = 0; d < t->nd; w += dheld[d].n, d++)
        memcpy(all->ids + (size_t)w * T, dheld[d].ids, sizeof(int) * (size_t)dheld[d].n * T);
}

// Refines main (README §7) on the held-out windows and makes it the best measured recipe.
static void search_refine(Refine* rf, const SearchCtx* ctx, const Objective* obj, Solution* main, ScoreJob* j,
                          const TokenIds* held, const Format* fmts, const RefineOpts* ro, int* kv,
                          VerifyDevice* dev) {
    VerifyRef ref = {0};
    TokenIds all = {0, 0, NULL};
    int nd = obj->kind == OBJ_MAX ? ctx->t->nd : 0;
    RefineCtx rc = {&j->model, held, fmts, &j->quant, &ref,  ctx->t, xmalloc(sizeof(int) * j->model.n_linears),
                    NULL,      NULL, NULL, nd,        {{0}}, {{0}},  NULL,
                    kv};
    RefineOpts o = *ro;
    if (nd) {
        refine_domain_data(j, ctx->t, ro->windows, rc.dheld, &all);
        held = rc.held = &all;
        o.nd = nd;
        for (int d = 0; d < nd; d++) o.dwindows[d] = rc.dheld[d].n;
        rc.wkl = xmalloc(sizeof(double) * all.n);
    }
    int on_gpu = refine_gpu(dev, j, ctx->t, held, &rc.gpu);
    if (on_gpu && !rc.gpu) {
        rc.dev = dev;
        gpu_stream_pin_hold(&j->model, 1); // page-locked once for every recipe's streamed pass
    }
    if (rc.gpu) {
        rc.on_gpu = xmalloc(sizeof(int) * j->model.n_linears);
        for (int i = 0; i < j->model.n_linears; i++) rc.on_gpu[i] = -1;
    } else if (!on_gpu) { // the CPU engine: the unquantized logits once
        for (int d = 0; d < nd; d++) verify_ref_init(&rc.dref[d], &j->model, &rc.dheld[d]);
        if (!nd) verify_ref_init(&ref, &j->model, held);
    }
    info_msg("search: --refine on %d held-out window(s) of %d tokens, on the %s engine%s%s%s", held->n, held->t,
             on_gpu ? "CUDA" : "CPU", on_gpu ? " " : "", on_gpu ? gpu_name() : "",
             rc.dev ? ", streamed layers" : "");
    o.windows = held->n; // --scores: --data may hold fewer than --refine-windows
    o.seq_len = held->t;
    refine_run(rf, ctx, obj, main, refine_measure, &rc, &o);
    rf->device = on_gpu ? "cuda" : "cpu";
    rf->streamed = rc.dev != NULL;
    memcpy(main->sel, rf->tries[rf->best].sel, sizeof(int) * ctx->t->ng);
    main->predicted = rf->tries[rf->best].score;
    search_measure(ctx, main);
    if (main->nd) objective_losses(ctx->t, main->sel, main->dloss);
    main->refine = rf;
    free(rc.choice);
    free(rc.on_gpu);
    gpu_measure_free(rc.gpu);
    if (rc.dev) gpu_stream_pin_hold(&j->model, 0);
    verify_ref_free(&ref);
    for (int d = 0; d < nd; d++) {
        verify_ref_free(&rc.dref[d]);
        token_ids_free(&rc.dheld[d]);
    }
    free(all.ids);
    free(rc.wkl);
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
    int refine = args_flag(a, "--refine");
    RefineOpts ro = {args_int(a, "--refine-rounds", 3),
                     args_int(a, "--refine-candidates", 6),
                     args_int(a, "--refine-windows", 8),
                     0,
                     0,
                     {0}};
    if (!refine) args_refuse(a, G_REFINE, "without --refine");
    if (!nboot) args_refuse(a, G_BOOT, "without --bootstrap");
    const char* mem_s = args_str(a, "--memory-budget");
    int kv_uniform = args_flag(a, "--kv-uniform");
    MemBudget mb = {0};
    if (!mem_s) args_refuse(a, G_MEM, "without --memory-budget");
    if (mem_s) {
        mb.on = 1;
        mb.context = args_int(a, "--context", 0);
        mb.batch = args_int(a, "--batch", 1);
        const char* ov = args_str(a, "--overhead");
        mb.overhead = (int64_t)(ov ? size_arg(ov, "--overhead", 1) : 1073741824.0);
        if (!isnan(budget)) fail_input("search: --memory-budget and --budget are two budgets: give one");
        if (bits_s || scope_s || cost_s)
            fail_input(
                "search: --memory-budget counts every byte (true bits, all weights, as stored): %s does not "
                "apply",
                bits_s    ? "--bits"
                : scope_s ? "--budget-scope"
                          : "--cost");
        if (!mb.context)
            fail_input("search: --memory-budget needs --context (tokens per sequence in the KV cache)");
        budget = size_arg(mem_s, "--memory-budget", 0);
    }
    // --scores: nothing is scored, so no scoring option means anything; --verify and --refine alone read data
    if (scores) args_refuse(a, G_SCORE, "with --scores (the scores are read, not computed)");
    if (scores && !verify && !refine)
        args_refuse(a, G_DATA | G_QUANT, "with --scores without --verify or --refine");
    int numerics_given = args_str(a, "--numerics") != NULL;
    ScoreJob j;
    score_job_parse(&j, a, scores == NULL);
    args_done(a);
    // --gpu-memory caps the scoring's GPU engine and --verify's and --refine's measurements (README
    // "Streaming"; with --scores and neither of them the option table refuses it)
    VerifyDevice vdev, rdev;
    if (verify) verify_device_init(&vdev, "search --verify", j.device, j.gpu_mem, 0);
    if (refine) verify_device_init(&rdev, "search --refine", j.device, j.gpu_mem, 0);
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
    if (refine && !scores && j.nd)
        fail_input("search: --refine with several --data domains: score them first (score --out), then search "
                   "--scores FILE --refine --data HELD-OUT");
    // every argument and output path is checked before any compute
    if (out) out_check(out, "--out");
    if (h5) out_check(h5, "--h5");
    for (int i = 0; i < ne; i++) out_check(strchr(emits[i], '=') + 1, "--emit");
    double pts[MAX_SWEEP + 1];
    int ns = sweep_s ? parse_sweep(sweep_s, pts, mb.on) : 0;

    ScoreTable t;
    TokenIds held = {0, 0, NULL};
    int have_model = 0;
    if (scores) {
        table_read_h5(&t, scores);
        if ((verify || refine) && j.quant.kind != QUANTIZER_GPTQ && strcmp(t.quantizer, "gptq") == 0)
            warn_msg("search: %s holds GPTQ scores, but --verify deploys the recipe round-to-nearest (add "
                     "--quantizer gptq)",
                     scores);
        if (verify || refine) {
            if (!j.model_dir) j.model_dir = t.model;
            if (!j.data.path)
                fail_input("search: %s with --scores needs --data",
                           verify ? "--verify" : "--refine (held-out windows)");
            j.format_csv = NULL;
        }
    } else {
        j.need_host = verify || refine;
        if (refine && j.data.num_samples) j.data.num_samples += ro.windows; // the held-out ones after them
        score_job_load(&j);
        have_model = 1;
        if (refine) { // the last --refine-windows windows are held out: never scored
            if (j.ids.n <= ro.windows)
                fail_input(
                    "search: --refine: %s has %d window(s); holding out --refine-windows %d leaves none to "
                    "score",
                    j.data.path, j.ids.n, ro.windows);
            j.ids.n -= ro.windows;
            held = (TokenIds){ro.windows, j.ids.t, j.ids.ids + (long)j.ids.n * j.ids.t};
        }
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
    if ((verify || refine) && !have_model) {
        model_load(&j.model, j.model_dir);
        j.data.model_dir = j.model_dir;
        j.data.vocab = j.model.c.vocab_size;
        j.data.eos = j.model.c.eos_token_id;
        if (j.data.seq_len) model_check_seq_len(&j.model, j.data.seq_len, "--seq-len");
        data_load(&j.ids, &j.data);
        model_check_seq_len(&j.model, j.ids.t, j.data.path);
        have_model = 1;
        held = (TokenIds){j.ids.n < ro.windows ? j.ids.n : ro.windows, j.ids.t, j.ids.ids};
    }

    SearchCtx ctx;
    search_init(&ctx, &t, scope, cost, bits);
    if (mb.on) search_set_memory(&ctx, &mb);
    Target target;
    uint8_t* deny = NULL;
    if (target_s) { // the engine's rules: formats it does not serve on --arch are never offered
        target_load(&target, target_s, arch_s);
        deny = target_deny_table(&target, &t);
        ctx.deny = deny;
        int any_kv = 0;
        for (int g = 0; g < t.ng; g++) any_kv |= table_kv(&t, g) && !t.disabled[g];
        if (target.kv_one_format && any_kv && !kv_uniform) {
            kv_uniform = 1; // as --kv-uniform (README "Serving engines")
            info_msg(
                "search: --target %s serves one KV-cache format per model: every full-attention layer takes "
                "one KV-cache choice (as --kv-uniform) [%s: kv_cache_one_format_per_model]",
                target.name, target.path);
        }
    }
    ctx.kv_uniform = kv_uniform;
    Solution* sweep = ns ? xcalloc(ns, sizeof(Solution)) : NULL;
    Objective obj;
    objective_parse(&obj, objective_s, &t);
    for (int i = 0; i < ns; i++) solve_point(&ctx, &obj, pts[i], &sweep[i]);
    Solution main_sol;
    double b = isnan(budget) ? pts[ns - 1] : budget;
    solve_point(&ctx, &obj, b, &main_sol);
    int* choice = have_model ? xmalloc(sizeof(int) * j.model.n_linears) : NULL;
    int* kv = have_model ? xmalloc(sizeof(int) * j.model.c.num_layers) : NULL;
    for (int l = 0; kv && l < j.model.c.num_layers; l++) kv[l] = -1; // bf16 KV caches until a recipe's are set
    verify_set_kv(kv);
    Refine rf;
    if (refine) search_refine(&rf, &ctx, &obj, &main_sol, &j, &held, fmts, &ro, kv, &rdev);
    Bootstrap boot;
    if (nboot) {
        if (!t.nw)
            fail_input("search: --bootstrap: %s holds no per-window scores (/groups/window_scores; README §8): "
                       "score again (a streamed --gpu-memory run keeps none, nor one resumed from a checkpoint "
                       "without "
                       "them, nor one whose per-window scores would pass 1 GiB)",
                       scores ? scores : "the scores");
        bootstrap_run(&boot, &ctx, &obj, &main_sol, nboot, (uint64_t)boot_seed);
        main_sol.boot = &boot;
    }
    if (verify) { // on the CUDA engine where vdev says so (README "Streaming")
        verify_set_device(&vdev);
        Progress p;
        progress_init(&p, "verify", ns + 1);
        for (int i = 0; i < ns; i++) {
            linear_choice(&j.model, &t, &sweep[i], choice);
            kv_choice(&j.model, &t, &sweep[i], kv);
            verify_recipe(&j.model, &j.ids, fmts, choice, &j.quant, &sweep[i].v);
            sweep[i].verified = 1;
            progress_step(&p, 1);
        }
        linear_choice(&j.model, &t, &main_sol, choice);
        kv_choice(&j.model, &t, &main_sol, kv);
        verify_recipe(&j.model, &j.ids, fmts, choice, &j.quant, &main_sol.v);
        main_sol.verified = 1;
        progress_step(&p, 1);
        progress_end(&p);
        verify_set_device(NULL);
    }
    if (ns) {
        printf("Pareto frontier (%d budgets)\n", ns);
        for (int i = 0; i < ns; i++) solution_print(&ctx, &sweep[i], 0);
        printf("\n");
    }
    solution_print(&ctx, &main_sol, 1);
    if (refine) refine_print(&rf, &ctx);
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
    if (refine) refine_free(&rf);
    search_free(&ctx);
    verify_set_kv(NULL);
    free(kv);
    if (target_s) target_free(&target);
    free(deny);
    free(choice);
    table_free(&t);
    if (have_model) score_job_free(&j);
    return 0;
}

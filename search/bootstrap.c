#include "bootstrap.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/util.h"

static uint64_t splitmix64(uint64_t* x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void boot_counts_strata(uint64_t seed, int r, int ns, const int* sizes, int* counts) {
    uint64_t x = seed * 0x100000001b3ULL ^ ((uint64_t)r + 1) * 0xd1342543de82ef95ULL;
    for (int k = 0, at = 0; k < ns; at += sizes[k++]) {
        memset(counts + at, 0, sizeof(int) * sizes[k]);
        for (int i = 0; i < sizes[k]; i++)
            counts[at + (int)(((unsigned __int128)splitmix64(&x) * (unsigned)sizes[k]) >> 64)]++;
    }
}

void boot_counts(uint64_t seed, int r, int nw, int* counts) { boot_counts_strata(seed, r, 1, &nw, counts); }

static int cmp_double(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

// Quantile p of sorted v[0..n-1], linear interpolation between order statistics (position p (n - 1)).
static double quantile(const double* v, int n, double p) {
    double pos = p * (n - 1);
    int i = (int)floor(pos);
    if (i >= n - 1) return v[n - 1];
    return v[i] + (pos - i) * (v[i + 1] - v[i]);
}

void bootstrap_run(Bootstrap* b, const SearchCtx* c, const Objective* o, const Solution* s, int n,
                   uint64_t seed) {
    const ScoreTable* t = c->t;
    int ng = t->ng, nf = t->nf, nw = t->nw;
    size_t cells = (size_t)nf * ng;
    memset(b, 0, sizeof(*b));
    b->n = n;
    b->seed = seed;
    b->ng = ng;
    b->nf = nf;
    b->lo = xcalloc(cells, sizeof(double));
    b->hi = xcalloc(cells, sizeof(double));
    b->freq = xcalloc(cells + ng, sizeof(double));
    b->same = xcalloc(ng, sizeof(double));
    b->noisy = xcalloc(ng, 1);
    double* draws = xmalloc(sizeof(double) * cells * n); // (cells, n): each score's resampled values
    int* counts = xmalloc(sizeof(int) * nw);
    // A shallow copy of the table whose scores are the resample's, searched quietly in the same context.
    ScoreTable tb = *t;
    tb.score = xmalloc(sizeof(double) * cells);
    tb.dscore = t->nd ? xmalloc(sizeof(double) * cells * t->nd) : NULL;
    int one = nw, ns = t->nd ? t->nd : 1;
    const int* sizes = t->nd ? t->dsamples : &one; // domains resample within themselves
    SearchCtx cb = *c;
    cb.t = &tb;
    cb.quiet = 1;
    int all = 0;
    Progress p;
    progress_init(&p, "bootstrap", n);
    for (int r = 0; r < n; r++) {
        boot_counts_strata(seed, r, ns, sizes, counts);
        memset(tb.score, 0, sizeof(double) * cells);
        if (tb.dscore) memset(tb.dscore, 0, sizeof(double) * cells * t->nd);
        for (int k = 0, w = 0; k < ns; k++)
            for (int i = 0; i < sizes[k]; i++, w++)
                if (counts[w])
                    for (size_t q = 0; q < cells; q++) {
                        double v = counts[w] * t->wscore[(size_t)w * cells + q];
                        tb.score[q] += v;
                        if (tb.dscore) tb.dscore[k * cells + q] += v;
                    }
        for (size_t k = 0; k < cells; k++) draws[k * n + r] = tb.score[k];
        Solution sr;
        objective_solve(&cb, o, s->budget, &sr);
        int whole = 1;
        for (int g = 0; g < ng; g++) {
            if (t->disabled[g]) continue;
            b->freq[(size_t)(sr.sel[g] + 1) * ng + g] += 1.0 / n;
            if (sr.sel[g] == s->sel[g])
                b->same[g] += 1.0 / n;
            else
                whole = 0;
        }
        all += whole;
        solution_free(&sr);
        progress_step(&p, 1);
    }
    progress_end(&p);
    b->all_same = (double)all / n;
    for (size_t k = 0; k < cells; k++) {
        qsort(draws + k * n, n, sizeof(double), cmp_double);
        b->lo[k] = quantile(draws + k * n, n, 0.025);
        b->hi[k] = quantile(draws + k * n, n, 0.975);
    }
    for (int g = 0; g < ng; g++) {
        if (t->disabled[g]) {
            b->same[g] = 1.0;
            continue;
        }
        b->noisy[g] = b->same[g] < BOOT_STABLE;
        b->n_noisy += b->noisy[g];
    }
    free(tb.score);
    free(tb.dscore);
    free(counts);
    free(draws);
}

void bootstrap_free(Bootstrap* b) {
    free(b->lo);
    free(b->hi);
    free(b->freq);
    free(b->same);
    free(b->noisy);
    memset(b, 0, sizeof(*b));
}

static const char* fmt_name(const ScoreTable* t, int f) { return f < 0 ? "bf16" : t->fmts[f].name; }

void bootstrap_print(const Bootstrap* b, const SearchCtx* c, const Solution* s) {
    const ScoreTable* t = c->t;
    printf("\nbootstrap: %d resamples of the %d windows (seed %llu); a choice made in fewer than %.0f%% of "
           "them is flagged NOISY\n",
           b->n, t->nw, (unsigned long long)b->seed, 100 * BOOT_STABLE);
    printf("%-44s %-10s %8s %27s  %s\n", "group", "choice", "agree", "score 95% interval",
           "chosen in resamples");
    for (int g = 0; g < t->ng; g++) {
        if (t->disabled[g]) continue;
        int f = s->sel[g] < 0 ? 0 : s->sel[g]; // bf16 scores 0: show the cheapest format's interval then
        char ch[256] = "";
        for (int k = -1; k < t->nf; k++) {
            double q = b->freq[(size_t)(k + 1) * t->ng + g];
            if (q > 0)
                snprintf(ch + strlen(ch), sizeof(ch) - strlen(ch), "%s%s %.0f%%", ch[0] ? ", " : "",
                         fmt_name(t, k), 100 * q);
        }
        printf("%-44s %-10s %7.1f%% [%12.6g, %12.6g]  %s%s\n", t->gname[g], fmt_name(t, s->sel[g]),
               100 * b->same[g], b->lo[(size_t)f * t->ng + g], b->hi[(size_t)f * t->ng + g], ch,
               b->noisy[g] ? "  NOISY" : "");
    }
    printf(
        "bootstrap: the whole recipe comes back in %.1f%% of the resamples; %d decision(s) inside the noise\n",
        100 * b->all_same, b->n_noisy);
}

json_t* bootstrap_json(const Bootstrap* b) {
    return json_pack("{s:i,s:I,s:f,s:f,s:i,s:s}", "resamples", b->n, "seed", (json_int_t)b->seed,
                     "stable_threshold", BOOT_STABLE, "recipe_agreement", b->all_same, "noisy_groups",
                     b->n_noisy, "interval", "2.5% to 97.5% quantiles of the resampled score");
}

json_t* bootstrap_group_json(const Bootstrap* b, const ScoreTable* t, int g) {
    json_t* o = json_object();
    json_t* iv = json_object();
    for (int f = 0; f < t->nf; f++)
        json_object_set_new(iv, t->fmts[f].name,
                            json_pack("[f,f]", b->lo[(size_t)f * t->ng + g], b->hi[(size_t)f * t->ng + g]));
    json_object_set_new(o, "score_interval", iv);
    json_t* fq = json_object();
    for (int k = -1; k < t->nf; k++)
        json_object_set_new(fq, fmt_name(t, k), json_real(b->freq[(size_t)(k + 1) * t->ng + g]));
    json_object_set_new(o, "choice_frequency", fq);
    json_object_set_new(o, "choice_agreement", json_real(b->same[g]));
    json_object_set_new(o, "noisy", json_boolean(b->noisy[g]));
    return o;
}

void bootstrap_write_h5(long file, const Bootstrap* b, const ScoreTable* t, const char* path) {
    hid_t g = H5Gcreate2((hid_t)file, "bootstrap", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) fail_other("%s: cannot create group /bootstrap", path);
    h5_attr_str(g, "description",
                "search --bootstrap: windows resampled with replacement (attribute resamples, seed), each "
                "resample's scores recomputed from /groups/window_scores and the search re-solved at the same "
                "budget; a group's decision is noisy when its recipe choice comes back in fewer than "
                "stable_threshold of the resamples");
    hid_t sp = H5Screate(H5S_SCALAR);
    int n = b->n;
    unsigned long long seed = b->seed;
    double thr = BOOT_STABLE, all = b->all_same;
    hid_t a;
    a = H5Acreate2(g, "resamples", H5T_NATIVE_INT, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT, &n), H5Aclose(a);
    a = H5Acreate2(g, "seed", H5T_NATIVE_ULLONG, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_ULLONG, &seed), H5Aclose(a);
    a = H5Acreate2(g, "stable_threshold", H5T_NATIVE_DOUBLE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_DOUBLE, &thr), H5Aclose(a);
    a = H5Acreate2(g, "recipe_agreement", H5T_NATIVE_DOUBLE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_DOUBLE, &all), H5Aclose(a);
    H5Sclose(sp);
    size_t ng = t->ng, nf = t->nf;
    double* v = xmalloc(sizeof(double) * ng * (nf + 1) * 2);
    hsize_t d2[2] = {ng, nf}, d3[3] = {ng, nf, 2}, d1 = ng, dq[2] = {ng, nf + 1};
    (void)d2;
    for (size_t i = 0; i < ng; i++)
        for (size_t f = 0; f < nf; f++) {
            v[(i * nf + f) * 2] = b->lo[f * ng + i];
            v[(i * nf + f) * 2 + 1] = b->hi[f * ng + i];
        }
    h5_write(g, "score_interval", H5T_NATIVE_DOUBLE, 3, d3, v);
    h5_describe(g, "score_interval", table_score_units(t),
                "[groups, formats, 2]: 2.5% and 97.5% quantiles of each group's resampled score");
    for (size_t i = 0; i < ng; i++)
        for (size_t k = 0; k <= nf; k++) v[i * (nf + 1) + k] = b->freq[k * ng + i];
    h5_write(g, "choice_frequency", H5T_NATIVE_DOUBLE, 2, dq, v);
    h5_describe(
        g, "choice_frequency", NULL,
        "[groups, 1 + formats]: fraction of resamples choosing bf16 (column 0) or format f (column f + 1)");
    h5_write(g, "choice_agreement", H5T_NATIVE_DOUBLE, 1, &d1, b->same);
    h5_describe(g, "choice_agreement", NULL, "fraction of resamples giving the recipe's choice (1: disabled)");
    h5_write(g, "noisy", H5T_NATIVE_UINT8, 1, &d1, b->noisy);
    h5_describe(g, "noisy", NULL, "1: choice_agreement below stable_threshold");
    free(v);
    if (H5Gclose(g) < 0) fail_other("%s: cannot write group /bootstrap (disk full?)", path);
}

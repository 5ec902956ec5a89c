// The Gated DeltaNet core (kernels/gated_delta.c):
// - its float64 twin (the same source compiled with float = double, below) against double-precision
//   central finite differences, every input's gradient (qkv, z, b, a), on small shapes with Hv > Hk,
//   K = 4 and a window longer than one backward checkpoint (64 tokens): tolerance 1e-6 relative;
// - the fp32 code against its float64 twin (forward 1e-5, backward 1e-4 relative);
// - bit-identical results for 1 and 3 OpenMP threads;
// - transformers 5.17's own Qwen3_5GatedDeltaNet (tests/fixtures/gated_delta_ref.json, written by
//   tests/ref/gated_delta_ref.py in float64): fp32 output and gradients within 1e-5 relative, the
//   float64 twin within 1e-9.
// Relative error throughout: max |got - want| / max |want| over the tensor.
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/util.h"
#include "kernels/gated_delta.h"

// ---------------------------------------------------------------------------------------------------
// The float64 twin: kernels/gated_delta.c once more with float read as double and its public names
// suffixed 64 (the types mirror gated_delta.h's, which is already included). Same code, so finite
// differences on it check the backward's formulas to ~1e-9 instead of fp32's ~1e-3.
#define float double
#define expf exp
#define sqrtf sqrt
#define log1pf log1p
#define GdnShape GdnShape64
#define GdnParams GdnParams64
#define GdnCache GdnCache64
#define gdn_channels gdn_channels64
#define gdn_cache_init gdn_cache_init64
#define gdn_cache_free gdn_cache_free64
#define gdn_forward gdn_forward64
#define gdn_backward gdn_backward64
typedef struct {
    int T, Hk, Hv, dk, dv, K;
    float eps;
} GdnShape;
static inline int gdn_channels(const GdnShape* s) { return 2 * s->Hk * s->dk + s->Hv * s->dv; }
typedef struct {
    const float *conv_w, *A_log, *dt_bias, *norm_w;
} GdnParams;
typedef struct GdnCache GdnCache;
GdnCache* gdn_cache_init(const GdnShape* s);
void gdn_cache_free(GdnCache* c);
void gdn_forward(const GdnShape* s, const GdnParams* p, const float* qkv, const float* z, const float* b,
                 const float* a, float* out, GdnCache* cache);
void gdn_backward(const GdnShape* s, const GdnParams* p, const GdnCache* cache, const float* dout, float* dqkv,
                  float* dz, float* db, float* da);
#include "kernels/gated_delta.c"
#undef float
#undef expf
#undef sqrtf
#undef log1pf
#undef GdnShape
#undef GdnParams
#undef GdnCache
#undef gdn_channels
#undef gdn_cache_init
#undef gdn_cache_free
#undef gdn_forward
#undef gdn_backward

// ---------------------------------------------------------------------------------------------------
// One problem's inputs in double (the twin's) and float (rounded alike).

enum { N_IN = 4 }; // qkv, z, b, a
static const char* IN_NAME[N_IN] = {"qkv", "z", "b", "a"};

typedef struct {
    GdnShape s;
    GdnShape64 s64;
    long n[N_IN], nout;
    double *in[N_IN], *conv_w, *A_log, *dt_bias, *norm_w, *dout; // what both read (float-exact values)
    float *fin[N_IN], *fconv_w, *fA_log, *fdt_bias, *fnorm_w, *fdout;
} Problem;

static unsigned g_seed = 2026;
static double drand(void) {
    g_seed = g_seed * 1664525u + 1013904223u;
    return ((g_seed >> 8) / 16777216.0) * 2.0 - 1.0;
}
static float* to_float(const double* x, long n) {
    float* f = xmalloc(sizeof(float) * n);
    for (long i = 0; i < n; i++) f[i] = (float)x[i];
    return f;
}
// n values uniform in [-scale, scale] + shift, rounded to float
static double* rand_vec(long n, double scale, double shift) {
    double* x = xmalloc(sizeof(double) * n);
    for (long i = 0; i < n; i++) x[i] = (float)(scale * drand() + shift);
    return x;
}

static void problem_floats(Problem* P) {
    for (int i = 0; i < N_IN; i++) P->fin[i] = to_float(P->in[i], P->n[i]);
    P->fconv_w = to_float(P->conv_w, (long)gdn_channels(&P->s) * P->s.K);
    P->fA_log = to_float(P->A_log, P->s.Hv);
    P->fdt_bias = to_float(P->dt_bias, P->s.Hv);
    P->fnorm_w = to_float(P->norm_w, P->s.dv);
    P->fdout = to_float(P->dout, P->nout);
}

static void problem_shape(Problem* P, GdnShape s) {
    P->s = s;
    P->s64 = (GdnShape64){s.T, s.Hk, s.Hv, s.dk, s.dv, s.K, s.eps};
    P->n[0] = (long)s.T * gdn_channels(&s);
    P->n[1] = P->nout = (long)s.T * s.Hv * s.dv;
    P->n[2] = P->n[3] = (long)s.T * s.Hv;
}

static Problem problem_random(GdnShape s) {
    Problem P = {0};
    problem_shape(&P, s);
    P.in[0] = rand_vec(P.n[0], 2, 0);
    P.in[1] = rand_vec(P.n[1], 2, 0);
    P.in[2] = rand_vec(P.n[2], 3, 0);
    P.in[3] = rand_vec(P.n[3], 3, 0);
    P.conv_w = rand_vec((long)gdn_channels(&s) * s.K, 0.8, 0);
    P.A_log = rand_vec(s.Hv, 2, -3); // decays e^g per token from ~0.3 to ~0.9997: states carry far
    P.dt_bias = rand_vec(s.Hv, 0.5, 0);
    P.norm_w = rand_vec(s.dv, 0.3, 1);
    P.dout = rand_vec(P.nout, 1, 0);
    problem_floats(&P);
    return P;
}

static void problem_free(Problem* P) {
    for (int i = 0; i < N_IN; i++) free(P->in[i]), free(P->fin[i]);
    free(P->conv_w), free(P->A_log), free(P->dt_bias), free(P->norm_w), free(P->dout);
    free(P->fconv_w), free(P->fA_log), free(P->fdt_bias), free(P->fnorm_w), free(P->fdout);
}

static GdnParams64 params64(const Problem* P) {
    return (GdnParams64){P->conv_w, P->A_log, P->dt_bias, P->norm_w};
}
static GdnParams params32(const Problem* P) {
    return (GdnParams){P->fconv_w, P->fA_log, P->fdt_bias, P->fnorm_w};
}

// The twin's forward (out) and, with grads, the backward of sum(dout * out) into grads[N_IN].
static void run64(const Problem* P, double* const in[N_IN], double* out, double* grads[N_IN]) {
    GdnParams64 p = params64(P);
    GdnCache64* c = grads ? gdn_cache_init64(&P->s64) : NULL;
    gdn_forward64(&P->s64, &p, in[0], in[1], in[2], in[3], out, c);
    if (grads) gdn_backward64(&P->s64, &p, c, P->dout, grads[0], grads[1], grads[2], grads[3]);
    gdn_cache_free64(c);
}

static void run32(const Problem* P, float* out, float* grads[N_IN]) {
    GdnParams p = params32(P);
    GdnCache* c = gdn_cache_init(&P->s);
    gdn_forward(&P->s, &p, P->fin[0], P->fin[1], P->fin[2], P->fin[3], out, c);
    gdn_backward(&P->s, &p, c, P->fdout, grads[0], grads[1], grads[2], grads[3]);
    gdn_cache_free(c);
}

static double rel_err_d(const double* got, const double* want, long n) {
    double d = 0, m = 0;
    for (long i = 0; i < n; i++) d = fmax(d, fabs(got[i] - want[i])), m = fmax(m, fabs(want[i]));
    return m > 0 ? d / m : d;
}
static double rel_err_f(const float* got, const double* want, long n) {
    double d = 0, m = 0;
    for (long i = 0; i < n; i++) d = fmax(d, fabs(got[i] - want[i])), m = fmax(m, fabs(want[i]));
    return m > 0 ? d / m : d;
}

static double loss64(const Problem* P, double* const in[N_IN], double* out) {
    run64(P, in, out, NULL);
    double L = 0;
    for (long i = 0; i < P->nout; i++) L += P->dout[i] * out[i];
    return L;
}

static void shape_name(char* buf, size_t n, const GdnShape* s) {
    snprintf(buf, n, "T %d Hk %d Hv %d dk %d dv %d K %d", s->T, s->Hk, s->Hv, s->dk, s->dv, s->K);
}

// ---------------------------------------------------------------------------------------------------

static void test_finite_differences(GdnShape s) {
    Problem P = problem_random(s);
    double *out = xmalloc(sizeof(double) * P.nout), *g[N_IN];
    for (int i = 0; i < N_IN; i++) g[i] = xmalloc(sizeof(double) * P.n[i]);
    run64(&P, P.in, out, g);
    const double h = 1e-5;
    char sh[96], name[200];
    shape_name(sh, sizeof(sh), &s);
    for (int k = 0; k < N_IN; k++) {
        double* fd = xmalloc(sizeof(double) * P.n[k]);
        for (long i = 0; i < P.n[k]; i++) {
            double x0 = P.in[k][i];
            P.in[k][i] = x0 + h;
            double lp = loss64(&P, P.in, out);
            P.in[k][i] = x0 - h;
            double lm = loss64(&P, P.in, out);
            P.in[k][i] = x0;
            fd[i] = (lp - lm) / (2 * h);
        }
        double e = rel_err_d(g[k], fd, P.n[k]);
        snprintf(name, sizeof(name), "gated_delta d%s = finite differences (float64 twin; %s)", IN_NAME[k], sh);
        CHECK(e < 1e-6, name, "relative error %.3g >= 1e-6", e);
        free(fd);
    }
    for (int i = 0; i < N_IN; i++) free(g[i]);
    free(out);
    problem_free(&P);
}

// fp32 against the twin, and bit-identical for 1 and 3 threads.
static void test_fp32(GdnShape s) {
    Problem P = problem_random(s);
    double *out = xmalloc(sizeof(double) * P.nout), *g[N_IN];
    float *fout = xmalloc(sizeof(float) * P.nout), *fout1 = xmalloc(sizeof(float) * P.nout), *fg[N_IN],
          *fg1[N_IN];
    for (int i = 0; i < N_IN; i++) {
        g[i] = xmalloc(sizeof(double) * P.n[i]);
        fg[i] = xmalloc(sizeof(float) * P.n[i]);
        fg1[i] = xmalloc(sizeof(float) * P.n[i]);
    }
    run64(&P, P.in, out, g);
    int nt = omp_get_max_threads();
    omp_set_num_threads(3);
    run32(&P, fout, fg);
    omp_set_num_threads(1);
    run32(&P, fout1, fg1);
    omp_set_num_threads(nt);
    char sh[96], name[200];
    shape_name(sh, sizeof(sh), &s);
    double e = rel_err_f(fout, out, P.nout);
    snprintf(name, sizeof(name), "gated_delta fp32 forward = float64 twin (%s)", sh);
    CHECK(e < 1e-5, name, "relative error %.3g >= 1e-5", e);
    int same = !memcmp(fout, fout1, sizeof(float) * P.nout);
    for (int k = 0; k < N_IN; k++) {
        e = rel_err_f(fg[k], g[k], P.n[k]);
        snprintf(name, sizeof(name), "gated_delta fp32 d%s = float64 twin (%s)", IN_NAME[k], sh);
        CHECK(e < 1e-4, name, "relative error %.3g >= 1e-4", e);
        same &= !memcmp(fg[k], fg1[k], sizeof(float) * P.n[k]);
    }
    snprintf(name, sizeof(name), "gated_delta bit-identical for 1 and 3 threads (%s)", sh);
    CHECK(same, name, "results differ");
    for (int i = 0; i < N_IN; i++) free(g[i]), free(fg[i]), free(fg1[i]);
    free(out), free(fout), free(fout1);
    problem_free(&P);
}

// ---------------------------------------------------------------------------------------------------
// transformers' fixture

static double* json_vec(json_t* o, const char* key, long n, const char* path) {
    json_t* a = json_object_get(o, key);
    if (!json_is_array(a) || (long)json_array_size(a) != n) {
        printf("FAIL gated_delta fixture: %s: field %s missing or not %ld numbers\n", path, key, n);
        g_fail++;
        return NULL;
    }
    double* x = xmalloc(sizeof(double) * n);
    for (long i = 0; i < n; i++) x[i] = json_number_value(json_array_get(a, i));
    return x;
}

static int json_int(json_t* o, const char* key) { return (int)json_integer_value(json_object_get(o, key)); }

static void test_fixture_case(json_t* c, const char* path) {
    GdnShape s = {json_int(c, "T"),
                  json_int(c, "Hk"),
                  json_int(c, "Hv"),
                  json_int(c, "dk"),
                  json_int(c, "dv"),
                  json_int(c, "K"),
                  (float)json_number_value(json_object_get(c, "eps"))};
    Problem P = {0};
    problem_shape(&P, s);
    P.s64.eps = json_number_value(json_object_get(c, "eps")); // the twin's eps exactly torch's
    for (int k = 0; k < N_IN; k++) P.in[k] = json_vec(c, IN_NAME[k], P.n[k], path);
    P.conv_w = json_vec(c, "conv_w", (long)gdn_channels(&s) * s.K, path);
    P.A_log = json_vec(c, "A_log", s.Hv, path);
    P.dt_bias = json_vec(c, "dt_bias", s.Hv, path);
    P.norm_w = json_vec(c, "norm_w", s.dv, path);
    P.dout = json_vec(c, "dout", P.nout, path);
    double *want = json_vec(c, "out", P.nout, path), *gw[N_IN];
    static const char* GRAD[N_IN] = {"dqkv", "dz", "db", "da"};
    for (int k = 0; k < N_IN; k++) gw[k] = json_vec(c, GRAD[k], P.n[k], path);
    int ok = want && P.conv_w && P.A_log && P.dt_bias && P.norm_w && P.dout;
    for (int k = 0; k < N_IN; k++) ok &= P.in[k] && gw[k];
    if (ok) {
        // the inputs are float32 values written with 9 digits: round them back to exactly those floats
        for (int k = 0; k < N_IN; k++)
            for (long i = 0; i < P.n[k]; i++) P.in[k][i] = (float)P.in[k][i];
        double* par[] = {P.conv_w, P.A_log, P.dt_bias, P.norm_w, P.dout};
        long npar[] = {(long)gdn_channels(&s) * s.K, s.Hv, s.Hv, s.dv, P.nout};
        for (int k = 0; k < 5; k++)
            for (long i = 0; i < npar[k]; i++) par[k][i] = (float)par[k][i];
        problem_floats(&P);
        char sh[96], name[200];
        shape_name(sh, sizeof(sh), &s);
        double *out = xmalloc(sizeof(double) * P.nout), *g[N_IN];
        float *fout = xmalloc(sizeof(float) * P.nout), *fg[N_IN];
        for (int k = 0; k < N_IN; k++)
            g[k] = xmalloc(sizeof(double) * P.n[k]), fg[k] = xmalloc(sizeof(float) * P.n[k]);
        run64(&P, P.in, out, g);
        run32(&P, fout, fg);
        double e = rel_err_f(fout, want, P.nout), e64 = rel_err_d(out, want, P.nout);
        snprintf(name, sizeof(name), "gated_delta out = transformers 5.17 (fp32 1e-5, twin 1e-9; %s)", sh);
        CHECK(e < 1e-5 && e64 < 1e-9, name, "relative error fp32 %.3g, float64 twin %.3g", e, e64);
        for (int k = 0; k < N_IN; k++) {
            e = rel_err_f(fg[k], gw[k], P.n[k]), e64 = rel_err_d(g[k], gw[k], P.n[k]);
            snprintf(name, sizeof(name),
                     "gated_delta %s = transformers 5.17 autograd (fp32 1e-5, twin 1e-9; %s)", GRAD[k], sh);
            CHECK(e < 1e-5 && e64 < 1e-9, name, "relative error fp32 %.3g, float64 twin %.3g", e, e64);
        }
        for (int k = 0; k < N_IN; k++) free(g[k]), free(fg[k]);
        free(out), free(fout);
    }
    for (int k = 0; k < N_IN; k++) free(gw[k]);
    free(want);
    problem_free(&P);
}

static void test_fixture(const char* path) {
    json_error_t err;
    json_t* doc = json_load_file(path, 0, &err);
    if (!doc) {
        SKIP("gated_delta = transformers", "fixture not found (tests/ref/gated_delta_ref.py writes it)");
        return;
    }
    json_t* cases = json_object_get(doc, "cases");
    CHECK(json_array_size(cases) > 0, "gated_delta fixture has cases", "%s: no cases", path);
    for (size_t i = 0; i < json_array_size(cases); i++) test_fixture_case(json_array_get(cases, i), path);
    json_decref(doc);
}

int main(void) {
    // T, Hk, Hv, dk, dv, K, eps
    test_finite_differences((GdnShape){7, 1, 1, 4, 4, 2, 1e-6f});
    test_finite_differences((GdnShape){11, 2, 4, 4, 3, 4, 1e-6f});
    test_finite_differences((GdnShape){70, 1, 2, 3, 2, 4, 1e-5f}); // crosses a backward checkpoint
    test_fp32((GdnShape){9, 2, 4, 8, 8, 4, 1e-6f});
    test_fp32((GdnShape){150, 2, 6, 16, 8, 4, 1e-6f});
    test_fixture("tests/fixtures/gated_delta_ref.json");
    return g_fail ? 1 : 0;
}

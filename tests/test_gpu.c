// CUDA kernels and the GPU engine against their CPU twins. Without a GPU
// every check is reported as skipped.
#include <jansson.h>
#include <string.h>

#include "check.h"
#include "datasets/npy.h"
#include "engine/forward.h"
#include "engine/gpu.h"
#include "engine/util.h"
#include "scoring/score.h"

#ifdef AUTOQ_CUDA
#include <cuda_runtime.h>

#include "kernels/gpu.h"

static unsigned g_seed = 99;
static float frand(void) {
    g_seed = g_seed * 1664525u + 1013904223u;
    return ((g_seed >> 8) / 16777216.0f) * 2.0f - 1.0f;
}

static void* dput(const void* h, size_t n) {
    void* d;
    cudaMalloc(&d, n);
    cudaMemcpy(d, h, n, cudaMemcpyHostToDevice);
    return d;
}
static void dget(void* h, const void* d, size_t n) { cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost); }

static void bf16_round(float* x, uint16_t* b, int n) {
    for (int i = 0; i < n; i++) {
        b[i] = f32_to_bf16(x[i]);
        x[i] = bf16_to_f32(b[i]);
    }
}

static void test_kernels(void) {
    enum { M = 37, C = 320, T = 16, NH = 4, HD = 64 };
    float x[M * C], w[C], out[M * C], got[M * C];
    uint16_t w16[C];
    for (int i = 0; i < M * C; i++) x[i] = 3 * frand();
    for (int i = 0; i < C; i++) w[i] = 1 + frand();
    bf16_round(w, w16, C);
    rmsnorm_forward(out, NULL, x, w, M, C, 1e-6f);
    float* dx = dput(x, sizeof(x));
    uint16_t* dw = dput(w16, sizeof(w16));
    float* dout;
    cudaMalloc((void**)&dout, sizeof(out));
    gpu_rmsnorm(dout, NULL, dx, dw, M, C, 1e-6f);
    dget(got, dout, sizeof(got));
    double worst = 0;
    for (int i = 0; i < M * C; i++) worst = fmax(worst, fabs(got[i] - out[i]));
    CHECK(worst < 1e-5, "gpu rmsnorm = cpu", "worst %g", worst);

    // per-head norm + RoPE
    float q[T * NH * HD], qn[T * NH * HD], qg[T * NH * HD], hw[HD];
    uint16_t hw16[HD];
    for (int i = 0; i < T * NH * HD; i++) q[i] = frand();
    for (int i = 0; i < HD; i++) hw[i] = 1 + 0.3f * frand();
    bf16_round(hw, hw16, HD);
    rmsnorm_forward(qn, NULL, q, hw, T * NH, HD, 1e-6f);
    RopeTable rt;
    rope_init(&rt, T, HD, 1e6);
    rope_forward(qn, &rt, T, NH);
    float* dq = dput(q, sizeof(q));
    float* dcos = dput(rt.cos, sizeof(float) * T * HD / 2);
    float* dsin = dput(rt.sin, sizeof(float) * T * HD / 2);
    uint16_t* dhw = dput(hw16, sizeof(hw16));
    gpu_qk_norm_rope(dq, NULL, dhw, dcos, dsin, T, T, NH, HD, 1e-6f);
    dget(qg, dq, sizeof(qg));
    worst = 0;
    for (int i = 0; i < T * NH * HD; i++) worst = fmax(worst, fabs(qg[i] - qn[i]));
    CHECK(worst < 1e-5, "gpu q/k norm + rope = cpu", "worst %g", worst);
    rope_free(&rt);

    // fake quantization: q * scale equals the CPU's fake-quantized values exactly
    QuantSpec specs[3] = {{4, 1, 0}, {8, 1, 0}, {4, 0, 1}};
    for (int k = 0; k < 3; k++) {
        float ref[M * C], sc[M];
        int8_t qi[M * C];
        quant_input_rows(ref, x, M, C, specs[k]);
        int8_t* dqi;
        float* dsc;
        cudaMalloc((void**)&dqi, sizeof(qi));
        cudaMalloc((void**)&dsc, sizeof(sc));
        gpu_quant_rows_f32(dqi, dsc, dx, M, C, specs[k]);
        dget(qi, dqi, sizeof(qi));
        dget(sc, dsc, sizeof(sc));
        int same = 1;
        for (int i = 0; i < M * C; i++) same &= (float)qi[i] * sc[i / C] == ref[i];
        char name[64];
        snprintf(name, sizeof(name), "gpu quantization = cpu (bits %d, ct %d)", specs[k].bits, specs[k].ct);
        CHECK(same, name, "values differ");
        cudaFree(dqi);
        cudaFree(dsc);
    }

    // streaming KL
    enum { R = 5, V = 3001 };
    static float a[R * V], b[R * V];
    for (int i = 0; i < R * V; i++) a[i] = 8 * frand(), b[i] = a[i] + 0.3f * frand();
    double want = kl_rows(a, b, R, V), have = 0;
    float* da = dput(a, sizeof(a));
    float* db = dput(b, sizeof(b));
    double* dt = dput(&have, sizeof(double));
    double* dscr;
    cudaMalloc((void**)&dscr, sizeof(double) * R);
    gpu_kl_rows(dt, dscr, da, db, R, V);
    dget(&have, dt, sizeof(double));
    CHECK(rel_diff(have, want) < 1e-5, "gpu kl rows = cpu", "gpu %.9g cpu %.9g", have, want);
    cudaFree(dx), cudaFree(dw), cudaFree(dout), cudaFree(dq), cudaFree(dcos), cudaFree(dsin), cudaFree(dhw);
    cudaFree(da), cudaFree(db), cudaFree(dt), cudaFree(dscr);
}

static void test_model(const char* label, const char* dir, const char* ids_path, int nsamp) {
    char name[200];
    snprintf(name, sizeof(name), "%s/config.json", dir);
    if (!file_exists(name)) {
        snprintf(name, sizeof(name), "gpu %s", label);
        SKIP(name, "model missing");
        return;
    }
    Model m;
    model_load(&m, dir);
    TokenIds ids;
    npy_read_ids(&ids, ids_path, m.c.vocab_size);
    int n = ids.n < nsamp ? ids.n : nsamp, T = ids.t, V = m.c.vocab_size;
    GpuEngine* e = gpu_engine_init(&m, T, n, 1);
    float* gl = xmalloc(sizeof(float) * (size_t)n * T * V);
    gpu_forward_logits(e, ids.ids, n, gl);
    RunState s;
    run_init(&s, &m, T, 0);
    double worst = 0, nll_worst = 0;
    for (int i = 0; i < n; i++) {
        model_forward(&m, &s, ids.ids + (long)i * T, NULL);
        for (long k = 0; k < (long)T * V; k++) worst = fmax(worst, fabs(gl[(long)i * T * V + k] - s.logits[k]));
        double a = cross_entropy(NULL, s.logits, ids.ids + (long)i * T, T, V);
        double b = cross_entropy(NULL, gl + (long)i * T * V, ids.ids + (long)i * T, T, V);
        nll_worst = fmax(nll_worst, rel_diff(a, b));
    }
    snprintf(name, sizeof(name), "gpu %s forward: NLL within 0.5%% of cpu (bf16 GEMM inputs)", label);
    CHECK(nll_worst < 5e-3, name, "worst %.3g", nll_worst);
    printf("  %s: worst logit difference %.3g, worst NLL relative difference %.3g\n", label, worst, nll_worst);
    // KL scores against the CPU engine, per group.
    Patterns dis;
    patterns_parse(&dis, DEFAULT_DISABLED);
    Groups gs;
    groups_build(&gs, &m, 0, &dis);
    Format f;
    format_load(&f, "configs/formats/w4a8.json", 0);
    double* gsc = xcalloc(gs.n, sizeof(double));
    gpu_score_kl(e, &gs, &f, 1, ids.ids, n, gsc);
    Scorer sc;
    scorer_init(&sc, &m, &gs, &f, 1, METHOD_KL, T);
    for (int i = 0; i < n; i++) scorer_add_sample(&sc, ids.ids + (long)i * T);
    double w2 = 0;
    for (int g = 0; g < gs.n; g++) w2 = fmax(w2, rel_diff(gsc[g], sc.score[g]));
    snprintf(name, sizeof(name), "gpu %s kl scores within 1%% of cpu per group", label);
    CHECK(w2 < 0.01, name, "worst %.3g", w2);
    printf("  %s: kl scores worst relative difference %.3g over %d groups\n", label, w2, gs.n);
    scorer_free(&sc);
    // gradient scores against the CPU engine
    memset(gsc, 0, sizeof(double) * gs.n);
    double loss = gpu_score_gradient(e, &gs, &f, 1, ids.ids, n, gsc);
    scorer_init(&sc, &m, &gs, &f, 1, METHOD_GRADIENT, T);
    for (int i = 0; i < n; i++) scorer_add_sample(&sc, ids.ids + (long)i * T);
    double w3 = 0, cpu_loss = 0;
    for (int g = 0; g < gs.n; g++) w3 = fmax(w3, rel_diff(gsc[g], sc.score[g]));
    for (int i = 0; i < n; i++) {
        model_forward(&m, &s, ids.ids + (long)i * T, NULL);
        cpu_loss += cross_entropy(NULL, s.logits, ids.ids + (long)i * T, T, V);
    }
    snprintf(name, sizeof(name), "gpu %s gradient scores within 1%% of cpu per group", label);
    CHECK(w3 < 0.01, name, "worst %.3g", w3);
    snprintf(name, sizeof(name), "gpu %s loss of the gradient pass = cpu", label);
    CHECK(rel_diff(loss, cpu_loss) < 1e-4, name, "gpu %.8g cpu %.8g", loss, cpu_loss);
    printf("  %s: gradient scores worst relative difference %.3g; loss %.6f vs %.6f\n", label, w3, loss,
           cpu_loss);
    scorer_free(&sc);
    free(gsc);
    groups_free(&gs);
    patterns_free(&dis);
    run_free(&s, &m);
    free(gl);
    gpu_engine_free(e);
    token_ids_free(&ids);
    model_free(&m);
}
#endif

int main(void) {
    if (gpu_device_count() == 0) {
        SKIP("gpu kernels and engine", "no CUDA device (or built without nvcc)");
        return 0;
    }
#ifdef AUTOQ_CUDA
    printf("  device: %s\n", gpu_name());
    test_kernels();
    test_model("qwen3-vl-tiny", "tests/fixtures/qwen3-vl-tiny", "tests/fixtures/qwen3_vl_tiny_ids.npy", 3);
    test_model("qwen3-tiny", getenv("AUTOQ_TINY") ? getenv("AUTOQ_TINY") : "../shared/models/qwen3-tiny",
               "tests/fixtures/qwen3_tiny_ids.npy", 8);
#endif
    return g_fail ? 1 : 0;
}

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
    uint16_t *dhi, *dlo, hi[M * C], lo[M * C];
    cudaMalloc((void**)&dhi, sizeof(hi));
    cudaMalloc((void**)&dlo, sizeof(lo));
    gpu_rmsnorm(dout, (bf16_t*)dhi, (bf16_t*)dlo, NULL, dx, dw, M, C, 1e-6f);
    dget(got, dout, sizeof(got));
    dget(hi, dhi, sizeof(hi));
    dget(lo, dlo, sizeof(lo));
    double worst = 0, split = 0;
    for (int i = 0; i < M * C; i++) {
        worst = fmax(worst, fabs(got[i] - out[i]));
        split = fmax(split, fabs(bf16_to_f32(hi[i]) + bf16_to_f32(lo[i]) - got[i]) / fabs(got[i]));
    }
    CHECK(worst < 1e-5, "gpu rmsnorm = cpu", "worst %g", worst);
    // the fused bf16 halves carry ~16 bits: |hi + lo - x| <= 2^-16 |x|
    CHECK(split <= 1.0 / 65536, "gpu rmsnorm bf16 hi + lo = its fp32 output", "worst relative %g", split);

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
    gpu_qk_norm_rope(dq, (bf16_t*)dhi, NULL, NULL, dq, dhw, dcos, dsin, T, T, NH, HD, 1e-6f);
    dget(qg, dq, sizeof(qg));
    dget(hi, dhi, sizeof(uint16_t) * T * NH * HD);
    worst = 0;
    int same = 1;
    for (int i = 0; i < T * NH * HD; i++) {
        worst = fmax(worst, fabs(qg[i] - qn[i]));
        same &= hi[i] == f32_to_bf16(qg[i]);
    }
    CHECK(worst < 1e-5, "gpu q/k norm + rope = cpu", "worst %g", worst);
    CHECK(same, "gpu q/k norm + rope bf16 output = bf16(fp32 output)", "values differ");
    // the bf16-activation variant, in place on bf16(q): within bf16 rounding of the CPU on the same input
    float qb[T * NH * HD];
    uint16_t q16[T * NH * HD];
    memcpy(qb, q, sizeof(q));
    bf16_round(qb, q16, T * NH * HD);
    rmsnorm_forward(qn, NULL, qb, hw, T * NH, HD, 1e-6f);
    rope_forward(qn, &rt, T, NH);
    uint16_t* dq16 = dput(q16, sizeof(q16));
    gpu_qk_norm_rope_bf16((bf16_t*)dq16, NH * HD, NULL, dhw, dcos, dsin, T, T, NH, HD, 1e-6f);
    dget(q16, dq16, sizeof(q16));
    worst = 0;
    for (int i = 0; i < T * NH * HD; i++)
        worst = fmax(worst, fabs(bf16_to_f32(q16[i]) - qn[i]) / (fabs(qn[i]) + 1e-3));
    CHECK(worst <= 1.0 / 256, "gpu q/k norm + rope on bf16, in place = cpu within bf16 rounding", "worst %g",
          worst);
    cudaFree(dq16);
    rope_free(&rt);

    // SwiGLU, fp32 (with its bf16 halves) and bf16 in / out
    {
        enum { SN = 4 * 999 };
        static float sg[SN], su[SN], sref[SN], sgot[SN];
        static uint16_t sh[SN], sl[SN], g16[SN], u16[SN];
        for (int i = 0; i < SN; i++) sg[i] = 4 * frand(), su[i] = 2 * frand();
        swiglu_forward(sref, sg, su, SN);
        float *dg = dput(sg, sizeof(sg)), *du = dput(su, sizeof(su)), *dso;
        uint16_t *dsh, *dsl;
        cudaMalloc((void**)&dso, sizeof(sgot));
        cudaMalloc((void**)&dsh, sizeof(sh));
        cudaMalloc((void**)&dsl, sizeof(sl));
        gpu_swiglu(dso, (bf16_t*)dsh, (bf16_t*)dsl, dg, du, SN);
        dget(sgot, dso, sizeof(sgot));
        dget(sh, dsh, sizeof(sh));
        dget(sl, dsl, sizeof(sl));
        double sw = 0, ss = 0;
        for (int i = 0; i < SN; i++) {
            sw = fmax(sw, fabs(sgot[i] - sref[i]));
            ss = fmax(ss, fabs(bf16_to_f32(sh[i]) + bf16_to_f32(sl[i]) - sgot[i]) / (fabs(sgot[i]) + 1e-30));
        }
        CHECK(sw < 1e-5 && ss <= 1.0 / 65536, "gpu swiglu = cpu (fp32 and its bf16 halves)",
              "worst %g, split %g", sw, ss);
        bf16_round(sg, g16, SN);
        bf16_round(su, u16, SN);
        swiglu_forward(sref, sg, su, SN);
        uint16_t *dg16 = dput(g16, sizeof(g16)), *du16 = dput(u16, sizeof(u16));
        int eq = 1;
        for (int sn = SN - 4; sn <= SN; sn += 4) { // 8 and 4 elements per thread
            cudaMemset(dsh, 0, sizeof(sh));
            gpu_swiglu_bf16((bf16_t*)dsh, (const bf16_t*)dg16, (const bf16_t*)du16, sn);
            dget(sh, dsh, sizeof(sh));
            for (int i = 0; i < sn; i++) eq &= fabs(bf16_to_f32(sh[i]) - sref[i]) <= fabs(sref[i]) / 256 + 1e-6;
        }
        CHECK(eq, "gpu swiglu on bf16 = cpu within bf16 rounding", "values differ");
        cudaFree(dg), cudaFree(du), cudaFree(dso), cudaFree(dsh), cudaFree(dsl), cudaFree(dg16), cudaFree(du16);
    }

    // flash attention against the CPU attention on the same bf16 inputs, two windows, GQA
    for (int fhd = 64; fhd <= 128; fhd *= 2) {
        enum { FT = 128, FH = 4, FKV = 2, FB = 2 };
        int qn_ = FB * FT * FH * fhd, kn = FB * FT * FKV * fhd;
        float *fq = xmalloc(4 * qn_), *fk = xmalloc(4 * kn), *fv = xmalloc(4 * kn);
        float *fo = xmalloc(4 * qn_), *fref = xmalloc(4 * qn_), *flse = xmalloc(4 * FH * FT);
        uint16_t *q16b = xmalloc(2 * qn_), *k16b = xmalloc(2 * kn), *v16b = xmalloc(2 * kn),
                 *o16b = xmalloc(2 * qn_);
        for (int i = 0; i < qn_; i++) fq[i] = 2 * frand();
        for (int i = 0; i < kn; i++) fk[i] = 2 * frand(), fv[i] = frand();
        bf16_round(fq, q16b, qn_);
        bf16_round(fk, k16b, kn);
        bf16_round(fv, v16b, kn);
        for (int b = 0; b < FB; b++)
            attention_forward(fref + (long)b * FT * FH * fhd, flse, fq + (long)b * FT * FH * fhd,
                              fk + (long)b * FT * FKV * fhd, fv + (long)b * FT * FKV * fhd, FT, FH, FKV, fhd);
        uint16_t *dq_ = dput(q16b, 2 * qn_), *dk_ = dput(k16b, 2 * kn), *dv_ = dput(v16b, 2 * kn), *do16;
        float* dof;
        cudaMalloc((void**)&dof, 4 * qn_);
        cudaMalloc((void**)&do16, 2 * qn_);
        gpu_flash_attention(dof, (bf16_t*)do16, (bf16_t*)dq_, FH * fhd, (bf16_t*)dk_, (bf16_t*)dv_, FKV * fhd,
                            FB, FT, FH, FKV, fhd);
        dget(fo, dof, 4 * qn_);
        dget(o16b, do16, 2 * qn_);
        double fw = 0, fmaxv = 0;
        int f16ok = 1;
        for (int i = 0; i < qn_; i++) {
            fw = fmax(fw, fabs(fo[i] - fref[i]));
            fmaxv = fmax(fmaxv, fabs(fref[i]));
            f16ok &= o16b[i] == f32_to_bf16(fo[i]);
        }
        // probabilities enter the P.V product as bf16 (as in the unfused GPU path): ~2^-9 relative
        char name[80];
        snprintf(name, sizeof(name), "gpu flash attention = cpu (head_dim %d, GQA, causal)", fhd);
        CHECK(fw < 4e-3 * fmaxv && f16ok, name, "worst %g of max %g, bf16 output %s", fw, fmaxv,
              f16ok ? "ok" : "differs");
        cudaFree(dq_), cudaFree(dk_), cudaFree(dv_), cudaFree(dof), cudaFree(do16);
        free(fq), free(fk), free(fv), free(fo), free(fref), free(flse), free(q16b), free(k16b), free(v16b),
            free(o16b);
    }

    // the key/value gradient of grouped-query attention: sum over the query heads of a kv head
    enum { KVH = 2, REP = 3 };
    float hg[M * KVH * REP * 8], kvg[M * KVH * 8], want_kv[M * KVH * 8];
    for (int i = 0; i < M * KVH * REP * 8; i++) hg[i] = frand();
    for (int r = 0; r < M; r++)
        for (int k = 0; k < KVH; k++)
            for (int d = 0; d < 8; d++) {
                float acc = 0;
                for (int j = 0; j < REP; j++) acc += hg[((r * KVH + k) * REP + j) * 8 + d];
                want_kv[(r * KVH + k) * 8 + d] = acc;
            }
    float* dhg = dput(hg, sizeof(hg));
    gpu_sum_heads(dout, dhg, M, KVH, REP, 8);
    dget(kvg, dout, sizeof(kvg));
    worst = 0;
    for (int i = 0; i < M * KVH * 8; i++) worst = fmax(worst, fabs(kvg[i] - want_kv[i]));
    CHECK(worst < 1e-6, "gpu sum over query heads = cpu", "worst %g", worst);
    cudaFree(dhg), cudaFree(dhi), cudaFree(dlo);

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
        same = 1;
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
    // the gradient score from the int8 GEMM's accumulators, dequantized on the fly
    {
        enum { GM = 33, GN = 70 };
        static int32_t acc[GM * GN];
        static float gdy[GM * GN], gy[GM * GN], gsx[GM], gsw[GN];
        for (int i = 0; i < GM * GN; i++) acc[i] = (int)(1000 * frand()), gdy[i] = frand(), gy[i] = frand();
        for (int i = 0; i < GM; i++) gsx[i] = 0.01f * (1 + frand());
        for (int i = 0; i < GN; i++) gsw[i] = 0.1f * (1 + frand());
        double want_g = 0, have_g = 0;
        for (int i = 0; i < GM * GN; i++) {
            float yq = (float)acc[i] * (gsx[i / GN] * gsw[i % GN]);
            double d = (double)gdy[i] * ((double)yq - gy[i]);
            want_g += d * d;
        }
        int32_t* dacc = dput(acc, sizeof(acc));
        float *ddy = dput(gdy, sizeof(gdy)), *dy_ = dput(gy, sizeof(gy));
        float *dsx = dput(gsx, sizeof(gsx)), *dsw = dput(gsw, sizeof(gsw));
        double* dtot = dput(&have_g, sizeof(double));
        double* dscr;
        cudaMalloc((void**)&dscr, sizeof(double) * 1024);
        gpu_grad_score(dtot, dscr, ddy, dacc, dsx, dsw, dy_, GM, GN);
        dget(&have_g, dtot, sizeof(double));
        CHECK(rel_diff(have_g, want_g) < 1e-12, "gpu gradient score (int8 accumulators) = cpu",
              "gpu %.12g cpu %.12g", have_g, want_g);
        cudaFree(dacc), cudaFree(ddy), cudaFree(dy_), cudaFree(dsx), cudaFree(dsw), cudaFree(dtot),
            cudaFree(dscr);
    }
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
    // KL and gradient scores against the CPU engine, per group, for both GEMM input precisions.
    Patterns dis;
    patterns_parse(&dis, DEFAULT_DISABLED);
    Groups gs;
    groups_build(&gs, &m, 0, &dis);
    Format f;
    format_load(&f, "configs/formats/w4a8.json", 0);
    double *cpu_kl = xcalloc(gs.n, sizeof(double)), *cpu_grad = xcalloc(gs.n, sizeof(double));
    Scorer sc;
    scorer_init(&sc, &m, &gs, &f, 1, METHOD_KL, T);
    for (int i = 0; i < n; i++) scorer_add_sample(&sc, ids.ids + (long)i * T);
    memcpy(cpu_kl, sc.score, sizeof(double) * gs.n);
    scorer_free(&sc);
    scorer_init(&sc, &m, &gs, &f, 1, METHOD_GRADIENT, T);
    for (int i = 0; i < n; i++) scorer_add_sample(&sc, ids.ids + (long)i * T);
    memcpy(cpu_grad, sc.score, sizeof(double) * gs.n);
    scorer_free(&sc);
    double cpu_loss = 0;
    for (int i = 0; i < n; i++) {
        model_forward(&m, &s, ids.ids + (long)i * T, NULL);
        cpu_loss += cross_entropy(NULL, s.logits, ids.ids + (long)i * T, T, V);
    }
    // bf16x2 must match the fp32 CPU engine within 1%, and so must plain bf16 for the gradient (its
    // default); plain bf16 kl (bf16 activations, as in a bf16 PyTorch model) has a noise floor for
    // small scores, checked loosely so that the path cannot silently break.
    const char* mode_name[2] = {"bf16", "bf16x2"};
    double tol_kl[2] = {0.15, 0.01}, tol_grad[2] = {0.01, 0.01};
    double* gsc = xcalloc(gs.n, sizeof(double));
    for (int split = 1; split >= 0; split--) {
        if (!split) {
            gpu_engine_free(e);
            e = gpu_engine_init(&m, T, n, 0);
        }
        memset(gsc, 0, sizeof(double) * gs.n);
        gpu_score_kl(e, &gs, &f, 1, ids.ids, n, gsc);
        double w2 = 0, w3 = 0;
        for (int g = 0; g < gs.n; g++) w2 = fmax(w2, rel_diff(gsc[g], cpu_kl[g]));
        snprintf(name, sizeof(name), "gpu %s %s kl scores within %g%% of cpu per group", label,
                 mode_name[split], 100 * tol_kl[split]);
        CHECK(w2 < tol_kl[split], name, "worst %.3g", w2);
        memset(gsc, 0, sizeof(double) * gs.n);
        double loss = gpu_score_gradient(e, &gs, &f, 1, ids.ids, n, gsc);
        for (int g = 0; g < gs.n; g++) w3 = fmax(w3, rel_diff(gsc[g], cpu_grad[g]));
        snprintf(name, sizeof(name), "gpu %s %s gradient scores within %g%% of cpu per group", label,
                 mode_name[split], 100 * tol_grad[split]);
        CHECK(w3 < tol_grad[split], name, "worst %.3g", w3);
        snprintf(name, sizeof(name), "gpu %s %s loss of the gradient pass = cpu", label, mode_name[split]);
        CHECK(rel_diff(loss, cpu_loss) < (split ? 1e-4 : 2e-3), name, "gpu %.8g cpu %.8g", loss, cpu_loss);
        printf("  %s %s: kl worst relative difference %.3g, gradient %.3g over %d groups; loss %.6f vs %.6f\n",
               label, mode_name[split], w2, w3, gs.n, loss, cpu_loss);
    }
    free(gsc);
    free(cpu_kl);
    free(cpu_grad);
    // layers sharded over two GPUs (ncclSend/ncclRecv between the stages): the one-GPU scores
    for (int gradient = 0; gradient <= 1 && gpu_device_count() >= 2; gradient++) {
        int split = !gradient; // each method's default precision
        double *one = xcalloc(gs.n, sizeof(double)), *two = xcalloc(gs.n, sizeof(double)), secs;
        size_t peak;
        int B = 2; // several batches, the last maybe short: the pipeline's schedule is exercised
        GpuEngine* e1 = gpu_engine_init(&m, T, B, split);
        for (int i = 0; i < n; i += B) {
            int nb = n - i < B ? n - i : B;
            if (gradient)
                gpu_score_gradient(e1, &gs, &f, 1, ids.ids + (long)i * T, nb, one);
            else
                gpu_score_kl(e1, &gs, &f, 1, ids.ids + (long)i * T, nb, one);
        }
        gpu_engine_free(e1);
        gpu_score_sharded(&m, &gs, &f, 1, gradient, ids.ids, n, T, B, split, 2, two, &secs, &peak);
        double w4 = 0;
        for (int g = 0; g < gs.n; g++) w4 = fmax(w4, rel_diff(two[g], one[g]));
        snprintf(name, sizeof(name), "gpu %s %s scores with layers sharded over 2 GPUs = one GPU", label,
                 gradient ? "gradient" : "kl");
        CHECK(w4 <= 1e-12, name, "worst relative difference %.3g", w4);
        free(one);
        free(two);
    }
    if (gpu_device_count() < 2) {
        snprintf(name, sizeof(name), "gpu %s layers sharded over 2 GPUs", label);
        SKIP(name, "one CUDA device");
    }
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

// The GPU engine and scorers against the CPU engine, model by model (tests/test_gpu_ops.c checks each
// kernel against its CPU twin). Without a GPU every check is reported as skipped.
#include <jansson.h>
#include <string.h>

#include "check.h"
#include "groups_setup.h"
#include "datasets/npy.h"
#include "engine/forward.h"
#include "engine/util.h"
#include "scoring/quantizer.h"
#include "scoring/score.h"
#include "scoring/score_gpu.h"
#include "scoring/score_merge.h"

#ifdef AUTOQ_CUDA
#include <cuda_runtime.h>

// dir's model and the windows of ids_path from `first` on; 0, after a visible skip named skip, when the
// model is missing.
static int fixture_load(Model* m, TokenIds* ids, const char* skip, const char* dir, const char* ids_path,
                        int first) {
    if (!model_present(dir, skip)) return 0;
    model_load(m, dir);
    npy_read_ids(ids, ids_path, m->c.vocab_size);
    memmove(ids->ids, ids->ids + (long)first * ids->t, sizeof(int) * (size_t)(ids->n - first) * ids->t);
    ids->n -= first;
    return 1;
}

// Windows first .. first + nsamp - 1 of ids_path.
static void test_model(const char* label, const char* dir, const char* ids_path, int first, int nsamp) {
    char name[200];
    snprintf(name, sizeof(name), "gpu %s", label);
    Model m;
    TokenIds ids;
    if (!fixture_load(&m, &ids, name, dir, ids_path, first)) return;
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
    Groups gs;
    Format f;
    groups_w4a8(&gs, &f, &m);
    double *cpu_kl = xcalloc(gs.n, sizeof(double)), *cpu_grad = xcalloc(gs.n, sizeof(double));
    long nc = (long)m.c.n_sparse * m.c.num_experts; // expert coverage counts, MoE models
    long *cpu_tok = xcalloc(nc + 1, sizeof(long)), *gpu_tok = xcalloc(nc + 1, sizeof(long));
    Scorer sc;
    scorer_init(&sc, &m, &gs, &f, 1, METHOD_KL, T);
    sc.expert_tokens = nc ? cpu_tok : NULL;
    for (int i = 0; i < n; i++) scorer_add_sample(&sc, ids.ids + (long)i * T, cpu_kl);
    scorer_free(&sc);
    scorer_init(&sc, &m, &gs, &f, 1, METHOD_GRADIENT, T);
    for (int i = 0; i < n; i++) scorer_add_sample(&sc, ids.ids + (long)i * T, cpu_grad);
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
    // With experts, plain bf16 also moves near-tied routing decisions (a token then takes another
    // expert than on the CPU), so its kl floor is looser still.
    // The experts' plain-bf16 gradient (the default) reads bf16 rows of m for Y but fp32 m for Yq, as
    // the dense down_proj does; on these 64-wide fixtures that costs up to 1.3%.
    double tol_kl[2] = {m.c.n_sparse ? 0.3 : 0.15, 0.01}, tol_grad[2] = {m.c.n_sparse ? 0.02 : 0.01, 0.01};
    // The hybrid fixtures (Gated DeltaNet layers) sit on plain bf16's noise floor for both methods (one H100:
    // kl up to 66%, gradient up to 20% from the CPU), which is why bf16x2 is their default for both; plain
    // bf16 is checked loosely, so that the path cannot silently break.
    if (m.c.fam->hybrid) tol_kl[0] = 1.0, tol_grad[0] = 0.5;
    double* gsc = xcalloc(gs.n, sizeof(double));
    for (int split = 1; split >= 0; split--) {
        if (!split) {
            gpu_engine_free(e);
            e = gpu_engine_init(&m, T, n, 0);
        }
        GpuScoreSpec sp = {&m, &gs, &f, 1, 0, T, n, split, NULL, NULL, NULL, 0, NULL};
        GpuScorer sc;
        gpu_scorer_init(&sc, e, &sp);
        memset(gsc, 0, sizeof(double) * gs.n);
        gpu_score_kl(&sc, ids.ids, n, gsc);
        if (nc && split) {
            gpu_expert_tokens(e, gpu_tok);
            long diff = 0;
            for (long k = 0; k < nc; k++) diff += labs(gpu_tok[k] - cpu_tok[k]);
            snprintf(name, sizeof(name), "gpu %s tokens routed to each expert = cpu", label);
            CHECK(diff == 0, name, "%ld assignments differ", diff);
        }
        double w2 = 0, w3 = 0;
        for (int g = 0; g < gs.n; g++) w2 = fmax(w2, rel_diff(gsc[g], cpu_kl[g]));
        snprintf(name, sizeof(name), "gpu %s %s kl scores within %g%% of cpu per group", label,
                 mode_name[split], 100 * tol_kl[split]);
        CHECK(w2 < tol_kl[split], name, "worst %.3g", w2);
        memset(gsc, 0, sizeof(double) * gs.n);
        sp.gradient = 1;
        double loss = gpu_score_gradient(&sc, ids.ids, n, gsc);
        for (int g = 0; g < gs.n; g++) w3 = fmax(w3, rel_diff(gsc[g], cpu_grad[g]));
        snprintf(name, sizeof(name), "gpu %s %s gradient scores within %g%% of cpu per group", label,
                 mode_name[split], 100 * tol_grad[split]);
        CHECK(w3 < tol_grad[split], name, "worst %.3g", w3);
        snprintf(name, sizeof(name), "gpu %s %s loss of the gradient pass = cpu", label, mode_name[split]);
        CHECK(rel_diff(loss, cpu_loss) < (split ? 1e-4 : 2e-3), name, "gpu %.8g cpu %.8g", loss, cpu_loss);
        printf("  %s %s: kl worst relative difference %.3g, gradient %.3g over %d groups; loss %.6f vs %.6f\n",
               label, mode_name[split], w2, w3, gs.n, loss, cpu_loss);
    }
    // The fp16 GEMM mode (kl's default where it runs: dense, head_dim 64 or 128, T % 64 == 0): the issue's
    // bar, within 1% of the fp32 engine on every group of at least 1% of the largest score; every group
    // within 5% (its noise floor lies 8 times below plain bf16's).
    if (gpu_fp16_supported(&m.c, T)) {
        gpu_engine_free(e);
        e = gpu_engine_init(&m, T, n, GEMM_FP16);
        GpuScoreSpec sp = {&m, &gs, &f, 1, 0, T, n, GEMM_FP16, NULL, NULL, NULL, 0, NULL};
        GpuScorer sc;
        gpu_scorer_init(&sc, e, &sp);
        memset(gsc, 0, sizeof(double) * gs.n);
        gpu_score_kl(&sc, ids.ids, n, gsc);
        double top = 0, w_big = 0, w_all = 0;
        for (int g = 0; g < gs.n; g++) top = fmax(top, cpu_kl[g]);
        for (int g = 0; g < gs.n; g++) {
            double d = rel_diff(gsc[g], cpu_kl[g]);
            w_all = fmax(w_all, d);
            if (cpu_kl[g] >= 0.01 * top) w_big = fmax(w_big, d);
        }
        snprintf(name, sizeof(name), "gpu %s fp16 kl scores within 1%% of cpu on groups >= 1%% of the largest",
                 label);
        CHECK(w_big < 0.01, name, "worst %.3g", w_big);
        snprintf(name, sizeof(name), "gpu %s fp16 kl scores within 5%% of cpu on every group", label);
        CHECK(w_all < 0.05, name, "worst %.3g", w_all);
        printf("  %s fp16: kl worst relative difference %.3g on groups >= 1%% of the largest, %.3g on all %d\n",
               label, w_big, w_all, gs.n);
    }
    free(gsc);
    free(cpu_tok);
    free(gpu_tok);
    free(cpu_kl);
    free(cpu_grad);
    // layers sharded over two GPUs (ncclSend/ncclRecv between the stages): the one-GPU scores
    for (int gradient = 0; gradient <= 1 && gpu_device_count() >= 2; gradient++) {
        int split = !gradient; // each method's default precision
        double *one = xcalloc(gs.n, sizeof(double)), *two = xcalloc(gs.n, sizeof(double)), secs;
        size_t peak;
        int B = 2; // several batches, the last maybe short: the pipeline's schedule is exercised
        GpuScoreSpec sp = {&m, &gs, &f, 1, gradient, T, B, split, NULL, NULL, NULL, 0, NULL};
        GpuEngine* e1 = gpu_engine_init(&m, T, B, split);
        GpuScorer sc;
        gpu_scorer_init(&sc, e1, &sp);
        for (int i = 0; i < n; i += B) {
            int nb = n - i < B ? n - i : B;
            if (gradient)
                gpu_score_gradient(&sc, ids.ids + (long)i * T, nb, one);
            else
                gpu_score_kl(&sc, ids.ids + (long)i * T, nb, one);
        }
        gpu_engine_free(e1);
        gpu_score_sharded(&sp, ids.ids, n, 2, two, &secs, &peak);
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
    run_free(&s, &m);
    free(gl);
    gpu_engine_free(e);
    token_ids_free(&ids);
    model_free(&m);
}
// The emulated formats (everything but w4a8 / w8a8) on a dense model: one linear's Yq from
// gpu_linear_fake against the CPU's fake-quantized product (fp32 GEMMs both, so only the summation order
// differs), then kl (bf16x2) and gradient (bf16x2, and plain bf16, its default) scores of all seven formats
// at once against the CPU engine per group and format.
static void test_emulated(const char* label, const char* dir, const char* ids_path, int nsamp) {
    char name[200];
    snprintf(name, sizeof(name), "gpu %s emulated formats", label);
    Model m;
    TokenIds ids;
    if (!fixture_load(&m, &ids, name, dir, ids_path, 0)) return;
    int n = ids.n < nsamp ? ids.n : nsamp, T = ids.t;
    Format f[7];
    int nf = formats_load(f, 7, "w4a8,w8a8,fp8,nvfp4,mxfp4,w4a16,w4a8_fp8", 0);
    // one linear: layer 0's q_proj on random rows
    GpuEngine* e = gpu_engine_init(&m, T, n, 1);
    const Linear* l = &m.linears[0];
    int M = T, K = l->in, N = l->out;
    float *x = xmalloc(sizeof(float) * M * K), *xq = xmalloc(sizeof(float) * M * K);
    float *wq = xmalloc(sizeof(float) * (size_t)N * K), *got = xmalloc(sizeof(float) * M * N);
    unsigned seed = 7;
    for (long i = 0; i < (long)M * K; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = ((seed >> 8) / 16777216.0f - 0.5f) * (i % 97 == 0 ? 40.0f : 2.0f); // a few outliers
    }
    float* dx = gpu_alloc(e, sizeof(float) * M * K);
    cudaMemcpy(dx, x, sizeof(float) * M * K, cudaMemcpyHostToDevice);
    for (int k = 2; k < nf; k++) {
        QuantSpec in = f[k].in;
        if (!f[k].in_enable) memset(&in, 0, sizeof(in));
        const float* dy = gpu_linear_fake(e, 0, dx, M, f[k].w, in);
        cudaMemcpy(got, dy, sizeof(float) * M * N, cudaMemcpyDeviceToHost);
        quant_weight_rows(wq, l->w, N, K, f[k].w);
        if (in.bits)
            quant_input_rows(xq, x, M, K, in);
        else
            memcpy(xq, x, sizeof(float) * M * K);
        double worst = 0, ymax = 0;
        for (int i = 0; i < M; i++)
            for (int o = 0; o < N; o++) {
                double acc = 0;
                for (int c = 0; c < K; c++) acc += (double)xq[(long)i * K + c] * wq[(long)o * K + c];
                worst = fmax(worst, fabs(acc - got[(long)i * N + o]));
                ymax = fmax(ymax, fabs(acc));
            }
        snprintf(name, sizeof(name), "gpu %s %.63s: emulated linear = the CPU's fake-quantized product", label,
                 f[k].name);
        CHECK(worst <= 1e-5 * ymax, name, "worst %.3g of max %.3g", worst, ymax);
    }
    free(x), free(xq), free(wq), free(got);
    gpu_engine_free(e);
    // scores
    Groups gs;
    groups_default(&gs, &m, 0);
    double *cpu[2], *gpu = xcalloc((size_t)nf * gs.n, sizeof(double));
    for (int method = 0; method < 2; method++) {
        cpu[method] = xcalloc((size_t)nf * gs.n, sizeof(double));
        Scorer sc;
        scorer_init(&sc, &m, &gs, f, nf, method ? METHOD_GRADIENT : METHOD_KL, T);
        for (int i = 0; i < n; i++) scorer_add_sample(&sc, ids.ids + (long)i * T, cpu[method]);
        scorer_free(&sc);
    }
    for (int run = 0; run < 3; run++) { // kl bf16x2, gradient bf16x2, gradient bf16
        int gradient = run > 0, split = run < 2;
        double tol = split ? 0.01 : 0.02;
        e = gpu_engine_init(&m, T, n, split);
        GpuScoreSpec sp = {&m, &gs, f, nf, gradient, T, n, split, NULL, NULL, NULL, 0, NULL};
        GpuScorer sc;
        gpu_scorer_init(&sc, e, &sp);
        memset(gpu, 0, sizeof(double) * nf * gs.n);
        if (gradient)
            gpu_score_gradient(&sc, ids.ids, n, gpu);
        else
            gpu_score_kl(&sc, ids.ids, n, gpu);
        for (int k = 0; k < nf; k++) {
            double w = 0, top = 0, w_big = 0;
            int wg = 0;
            for (int g = 0; g < gs.n; g++) top = fmax(top, cpu[gradient][(long)k * gs.n + g]);
            for (int g = 0; g < gs.n; g++)
                if (!gs.g[g].disabled) {
                    double d = rel_diff(gpu[(long)k * gs.n + g], cpu[gradient][(long)k * gs.n + g]);
                    if (d > w) w = d, wg = g;
                    if (cpu[gradient][(long)k * gs.n + g] >= 0.01 * top) w_big = fmax(w_big, d);
                }
            // 8-bit formats perturb by about bf16's own rounding: plain bf16 strays up to 7.3% (measured on
            // one H200), which is why the scoring job gives them bf16x2 by default
            double t = !split && f[k].bits >= 8 ? 0.1 : tol;
            if (m.c.fam->hybrid) {
                // The hybrid fixture's small scores (an 8-bit format's, its 512-weight in_proj_ba) move with
                // fp32 summation order already (the CPU against float32 PyTorch: 0.7% on w4a8 kl). Measured on
                // one H100 with bf16x2: 4-bit formats within 1.4%, 8-bit within 10.5% (w8a8 kl); plain bf16
                // (not these models' default) within 38%.
                printf("  %s %s %s %s: worst %.3g (%s, %.2g of the largest), %.3g on groups >= 1%%\n", label,
                       f[k].name, split ? "bf16x2" : "bf16", gradient ? "gradient" : "kl", w, gs.g[wg].name,
                       cpu[gradient][(long)k * gs.n + wg] / top, w_big);
                t = !split ? 0.5 : f[k].bits >= 8 ? 0.15 : 0.02;
            }
            snprintf(name, sizeof(name), "gpu %s %.63s %s %s scores within %g%% of cpu per group", label,
                     f[k].name, split ? "bf16x2" : "bf16", gradient ? "gradient" : "kl", 100 * t);
            CHECK(w < t, name, "worst %.3g", w);
        }
        gpu_engine_free(e);
    }
    free(cpu[0]), free(cpu[1]), free(gpu);
    groups_free(&gs);
    token_ids_free(&ids);
    model_free(&m);
}

// Scores of formats fm[0..nf) on one GPU, on given weights qc (NULL: round-to-nearest), one batch.
static void gpu_scores(double* out, const Model* m, const Groups* gs, const Format* fm, int nf, int gradient,
                       int split, const QuantCache* qc, const TokenIds* ids, int n) {
    GpuEngine* e = gpu_engine_init(m, ids->t, n, split);
    GpuScoreSpec sp = {m, gs, fm, nf, gradient, ids->t, n, split, NULL, qc, NULL, 0, NULL};
    GpuScorer sc;
    gpu_scorer_init(&sc, e, &sp);
    memset(out, 0, sizeof(double) * nf * gs->n);
    if (gradient)
        gpu_score_gradient(&sc, ids->ids, n, out);
    else
        gpu_score_kl(&sc, ids->ids, n, out);
    gpu_engine_free(e);
}

// Two pipeline stages on one GPU (README "Several GPUs"): engines holding layers 0..k-1 and k..L-1, run as
// score_pipeline.cu's stage_kl and grad_forward / grad_backward run them, the hidden state and its gradient
// copied between them where the stages send them with NCCL; one batch of n windows, format f.
static void staged_scores(double* out, const Model* m, const Groups* gs, const Format* f, int gradient,
                          int split, const TokenIds* ids, int n, int k) {
    int T = ids->t, L = m->c.num_layers;
    size_t hb = sizeof(float) * (size_t)n * T * m->c.hidden_size;
    GpuScoreSpec sp = {m, gs, f, 1, gradient, T, n, split, NULL, NULL, NULL, 0, NULL};
    GpuEngine *a = gpu_engine_init_layers(m, T, n, split, 0, k, 1),
              *b = gpu_engine_init_layers(m, T, n, split, k, L, 1);
    GpuScorer sa, sb;
    gpu_scorer_init(&sa, a, &sp);
    gpu_scorer_init(&sb, b, &sp);
    memset(out, 0, sizeof(double) * gs->n);
    gpu_pass_begin(a, gradient, ids->ids, n);
    gpu_pass_slot(a, 0);
    gpu_forward_layers(a, 0, n, 1);
    gpu_pass_begin(b, gradient, ids->ids, n);
    gpu_pass_slot(b, 0);
    cudaMemcpy(gpu_hidden(b), gpu_hidden(a), hb, cudaMemcpyDeviceToDevice);
    gpu_forward_layers(b, k, n, 1);
    if (gradient) {
        gpu_loss_backward(b, n);
        gpu_grad_backward(&sb, n);
        cudaMemcpy(gpu_hidden_grad(a), gpu_hidden_grad(b), hb, cudaMemcpyDeviceToDevice);
        gpu_grad_backward(&sa, n);
    } else {
        gpu_kl_reference(&sb, n);
        for (int gi = 0; gi < gs->n; gi++) {
            const Group* g = &gs->g[gi];
            if (g->disabled) continue;
            if (g->layer < k) {
                gpu_kl_group(&sa, g, 0, n);
                gpu_forward_layers(a, g->layer, n, 0);
                gpu_plan_clear(a);
                cudaMemcpy(gpu_hidden(b), gpu_hidden(a), hb, cudaMemcpyDeviceToDevice);
                gpu_forward_layers(b, k, n, 0);
            } else {
                gpu_kl_group(&sb, g, 0, n);
                gpu_forward_layers(b, g->layer, n, 0);
            }
            gpu_kl_add(&sb, n, gi);
        }
    }
    gpu_scorer_end(&sa, out);
    gpu_scorer_end(&sb, out);
    gpu_engine_free(a);
    gpu_engine_free(b);
}

// The hybrid families cut into two stages at every layer (a stage of Gated DeltaNet layers only, of
// attention only, or both): the stages' scores equal one engine's, both methods, bf16 hi + lo (their default).
static void test_stages(const char* label, const char* dir, const char* ids_path, int nsamp) {
    char name[200];
    snprintf(name, sizeof(name), "gpu %s stages", label);
    Model m;
    TokenIds ids;
    if (!fixture_load(&m, &ids, name, dir, ids_path, 0)) return;
    int n = ids.n < nsamp ? ids.n : nsamp;
    Groups gs;
    Format f;
    groups_w4a8(&gs, &f, &m);
    double *one = xcalloc(gs.n, sizeof(double)), *two = xcalloc(gs.n, sizeof(double));
    for (int gradient = 0; gradient <= 1; gradient++) {
        gpu_scores(one, &m, &gs, &f, 1, gradient, GEMM_BF16X2, NULL, &ids, n);
        double worst = 0;
        for (int k = 1; k < m.c.num_layers; k++) {
            staged_scores(two, &m, &gs, &f, gradient, GEMM_BF16X2, &ids, n, k);
            for (int g = 0; g < gs.n; g++) worst = fmax(worst, rel_diff(two[g], one[g]));
        }
        snprintf(name, sizeof(name),
                 "gpu %s %s: two stages on one GPU, cut at every layer, = one engine (1e-9)", label,
                 gradient ? "gradient" : "kl");
        CHECK(worst <= 1e-9, name, "worst relative difference %.3g", worst);
    }
    free(one), free(two);
    groups_free(&gs);
    token_ids_free(&ids);
    model_free(&m);
}

// GPTQ's candidate weights, one QuantCache built once on the CPU, scored by the GPU engine (held as
// int8 codes + row scales) against the CPU engine per group and format, with the RTN tests'
// tolerances: w4a8 kl (bf16x2) and gradient (plain bf16, its default), then w4a8 + w8a8 at once (bf16x2,
// an 8-bit format's default, both methods). GPTQ's kl must also fall below RTN's on the GPU, so that a
// GPU ignoring the given weights cannot pass; and with two GPUs, layers sharded give the one-GPU scores.
static void test_gptq(const char* label, const char* dir, const char* ids_path, int first, int nsamp) {
    char name[200];
    snprintf(name, sizeof(name), "gpu %s gptq", label);
    Model m;
    TokenIds ids;
    if (!fixture_load(&m, &ids, name, dir, ids_path, first)) return;
    ids.n = ids.n < nsamp ? ids.n : nsamp; // GPTQ calibrates on the windows it scores
    int n = ids.n, T = ids.t, sparse = m.c.n_sparse > 0;
    Groups gs;
    groups_default(&gs, &m, 0);
    Format f[2];
    int nf = formats_load(f, 2, "w4a8,w8a8", 0);
    Quantizer q;
    memset(&q, 0, sizeof(q));
    q.kind = QUANTIZER_GPTQ;
    q.gptq = gptq_defaults;
    QuantCache qc;
    qcache_build(&qc, &m, &gs, f, nf, &q, &ids);
    QuantCache w4 = {1, qc.nl, qc.wq}; // w4a8's weights alone: the cache is format-major
    double *cpu = xcalloc((size_t)nf * gs.n, sizeof(double)), *gpu = xcalloc((size_t)nf * gs.n, sizeof(double));
    double* rtn = xcalloc((size_t)nf * gs.n, sizeof(double));
    const struct {
        int nf, gradient, split;
        double tol;
    } runs[4] = {{1, 0, 1, sparse ? 0.02 : 0.01}, // MoE kl: w8a8's small scores came 1.19% apart on an H200
                 {1, 1, 0, sparse ? 0.02 : 0.01},
                 {2, 0, 1, sparse ? 0.02 : 0.01},
                 {2, 1, 1, 0.01}};
    for (int r = 0; r < 4; r++) {
        const QuantCache* c = runs[r].nf == 1 ? &w4 : &qc;
        Scorer sc;
        scorer_init_with(&sc, &m, &gs, f, runs[r].nf, runs[r].gradient ? METHOD_GRADIENT : METHOD_KL, T, c);
        memset(cpu, 0, sizeof(double) * nf * gs.n);
        for (int i = 0; i < n; i++) scorer_add_sample(&sc, ids.ids + (long)i * T, cpu);
        scorer_free(&sc);
        gpu_scores(gpu, &m, &gs, f, runs[r].nf, runs[r].gradient, runs[r].split, c, &ids, n);
        for (int k = 0; k < runs[r].nf; k++) {
            double w = 0;
            for (int g = 0; g < gs.n; g++)
                if (!gs.g[g].disabled) w = fmax(w, rel_diff(gpu[(long)k * gs.n + g], cpu[(long)k * gs.n + g]));
            snprintf(name, sizeof(name), "gpu %s gptq %.63s%s %s %s scores within %g%% of cpu per group", label,
                     f[k].name, runs[r].nf > 1 ? " (of w4a8,w8a8)" : "", runs[r].split ? "bf16x2" : "bf16",
                     runs[r].gradient ? "gradient" : "kl", 100 * runs[r].tol);
            CHECK(w < runs[r].tol, name, "worst %.3g", w);
            printf("  %s gptq %s %s %s: worst relative difference %.3g over %d groups\n", label, f[k].name,
                   runs[r].split ? "bf16x2" : "bf16", runs[r].gradient ? "gradient" : "kl", w, gs.n);
        }
        if (r != 0) continue;
        gpu_scores(rtn, &m, &gs, f, 1, 0, 1, NULL, &ids, n);
        double sg = 0, sr = 0;
        for (int g = 0; g < gs.n; g++) sg += gpu[g], sr += rtn[g];
        snprintf(name, sizeof(name), "gpu %s gptq w4a8 kl below rtn's (the given weights are used)", label);
        CHECK(sg < 0.9 * sr, name, "gptq %.6g rtn %.6g", sg, sr);
    }
    for (int gradient = 0; gradient <= 1 && gpu_device_count() >= 2; gradient++) {
        int split = !gradient, B = 1; // several batches through the pipeline
        double secs, *one = xcalloc(gs.n, sizeof(double)), *two = xcalloc(gs.n, sizeof(double));
        size_t peak;
        GpuScoreSpec sp = {&m, &gs, f, 1, gradient, T, B, split, NULL, &w4, NULL, 0, NULL};
        GpuEngine* e1 = gpu_engine_init(&m, T, B, split);
        GpuScorer sc;
        gpu_scorer_init(&sc, e1, &sp);
        for (int i = 0; i < n; i++)
            if (gradient)
                gpu_score_gradient(&sc, ids.ids + (long)i * T, 1, one);
            else
                gpu_score_kl(&sc, ids.ids + (long)i * T, 1, one);
        gpu_engine_free(e1);
        gpu_score_sharded(&sp, ids.ids, n, 2, two, &secs, &peak);
        double w = 0;
        for (int g = 0; g < gs.n; g++) w = fmax(w, rel_diff(two[g], one[g]));
        snprintf(name, sizeof(name), "gpu %s gptq %s scores with layers sharded over 2 GPUs = one GPU", label,
                 gradient ? "gradient" : "kl");
        CHECK(w <= 1e-12, name, "worst relative difference %.3g", w);
        free(one), free(two);
    }
    if (gpu_device_count() < 2) {
        snprintf(name, sizeof(name), "gpu %s gptq layers sharded over 2 GPUs", label);
        SKIP(name, "one CUDA device");
    }
    free(cpu), free(gpu), free(rtn);
    qcache_free(&qc);
    groups_free(&gs);
    token_ids_free(&ids);
    model_free(&m);
}

// kl with the passes merged across groups (scoring/score_merge.cu) against today's path (gpu_score_kl, batches
// of B = 2 windows), w4a8 and (outside the fp16 mode) the KV-cache format kv_fp8 at once, every GEMM mode the
// model runs: scores, per-window scores and expert token counts. With merged batches of B windows and 4
// windows (every GEMM's rows as in today's path) the scores must be the same bit for bit whatever the waves (3
// forced); with merged batches of 3 windows (chunks across passes, a short last batch of 3 windows) and the
// automatic plan, within the GEMMs' tiling over more rows (tol, printed; the same bits on one H200).
static void merged_run(double* tot, double* win, long* ex, const Model* m, const Groups* gs, const Format* f,
                       int nf, int gemm, const int* ids, int n, int T, int bm, int per_wave) {
    int B = 2, G = gs->n * nf;
    long ne = m->c.n_sparse ? (long)m->c.n_sparse * m->c.num_experts : 0;
    memset(tot, 0, sizeof(double) * G);
    memset(win, 0, sizeof(double) * G * n);
    if (ne) memset(ex, 0, sizeof(long) * ne);
    GpuScoreSpec sp = {m, gs, f, nf, 0, T, B, gemm, ne ? ex : NULL, NULL, win, 0, NULL};
    GpuMergeScorer ms;
    GpuScorer sc;
    GpuEngine* e;
    if (bm >= 0) {
        gpu_merge_scorer_init(&ms, &sp, bm, per_wave);
        e = ms.e;
    } else {
        e = gpu_engine_init(m, T, B, gemm);
        gpu_scorer_init(&sc, e, &sp);
    }
    for (int i = 0; i < n; i += B) {
        int nb = n - i < B ? n - i : B;
        if (bm >= 0) {
            gpu_merge_score_kl(&ms, ids + (long)i * T, nb, tot, win + (long)i * G);
        } else {
            gpu_scorer_windows(&sc, win + (long)i * G);
            gpu_score_kl(&sc, ids + (long)i * T, nb, tot);
        }
        if (ne) gpu_expert_tokens(e, ex);
    }
    if (bm >= 0) gpu_merge_scorer_free(&ms);
    gpu_engine_free(e);
}

static void test_merged(const char* label, const char* dir, const char* ids_path, int first) {
    char name[256];
    snprintf(name, sizeof(name), "gpu %s kl merged", label);
    Model m;
    TokenIds ids;
    if (!fixture_load(&m, &ids, name, dir, ids_path, first)) return;
    int T = ids.t, N = 4;
    int* win_ids = xmalloc(sizeof(int) * N * T); // N windows, the fixture's cycled
    for (int i = 0; i < N; i++) memcpy(win_ids + (long)i * T, ids.ids + (long)(i % ids.n) * T, sizeof(int) * T);
    Groups gs;
    groups_default(&gs, &m, 1);
    Format f[2];
    int nf = formats_load(f, 2, "w4a8,kv_fp8", 0), G = gs.n * nf;
    long ne = m.c.n_sparse ? (long)m.c.n_sparse * m.c.num_experts : 0;
    double *t0 = xcalloc(G, sizeof(double)), *t1 = xcalloc(G, sizeof(double));
    double *w0 = xcalloc((size_t)G * N, sizeof(double)), *w1 = xcalloc((size_t)G * N, sizeof(double));
    long *e0 = xcalloc(ne + 1, sizeof(long)), *e1 = xcalloc(ne + 1, sizeof(long));
    static const char* mode_name[3] = {"bf16", "bf16x2", "fp16"};
    for (int gemm = 0; gemm < 3; gemm++) {
        if (gemm == GEMM_FP16 && (m.c.fam->hybrid || !gpu_fp16_supported(&m.c, T))) {
            snprintf(name, sizeof(name), "gpu %s kl merged fp16", label);
            SKIP(name, "the fp16 GEMM mode does not run this model");
            continue;
        }
        int k = gemm == GEMM_FP16 ? 1 : nf; // KV-cache formats: not the fp16 mode
        int Gk = gs.n * k;
        // fp32 GEMM outputs: 1e-6 (the GEMMs' tiling over more rows is all that differs; one H200 gave the same
        // bits in every mode); plain bf16 rounds every GEMM output to bf16, where a different tiling's last-bit
        // change would move a score further
        double tol = gemm == GEMM_BF16 ? 1e-3 : 1e-6;
        struct {
            int n, bm, per_wave;
            double tol;
            const char* what;
        } runs[3] = {{4, 2, 0, 0, "batches of B windows, 3 waves: the same bits"},
                     {3, 3, 2, tol, "batches of 3 windows, waves of 2 passes, a short batch"},
                     {3, 0, 0, tol, "the automatic plan, a short batch"}};
        int n_pass = 0;
        for (int g = 0; g < gs.n; g++)
            for (int j = 0; j < k; j++) n_pass += !gs.g[g].disabled && format_fits(&f[j], &gs.g[g]);
        runs[0].per_wave = (n_pass + 2) / 3;
        for (int r = 0; r < 3; r++) {
            int n = runs[r].n;
            merged_run(t0, w0, e0, &m, &gs, f, k, gemm, win_ids, n, T, -1, 0);
            merged_run(t1, w1, e1, &m, &gs, f, k, gemm, win_ids, n, T, runs[r].bm, runs[r].per_wave);
            double top = 0, wt = 0, ww = 0;
            for (int g = 0; g < Gk; g++) top = fmax(top, t0[g]);
            for (int g = 0; g < Gk; g++) // a NaN anywhere fails (fmax would drop it)
                if (t0[g] >= 0.01 * top || isnan(t1[g]))
                    wt = isnan(t1[g]) ? INFINITY : fmax(wt, rel_diff(t1[g], t0[g]));
            for (long i = 0; i < (long)Gk * n; i++)
                if (fabs(w0[i]) >= 0.01 * top / n || isnan(w1[i]))
                    ww = isnan(w1[i]) ? INFINITY : fmax(ww, rel_diff(w1[i], w0[i]));
            int ex_same = ne ? !memcmp(e0, e1, sizeof(long) * ne) : 1;
            double lim = runs[r].tol > 0 ? runs[r].tol : 1e-12;
            snprintf(name, sizeof(name), "gpu %s kl merged %s (%s) = today's path within %g", label,
                     mode_name[gemm], runs[r].what, lim);
            CHECK(wt <= lim && ww <= lim && ex_same, name,
                  "worst relative difference %.3g (totals), %.3g (windows) on groups >= 1%% of the largest; "
                  "expert "
                  "counts %s",
                  wt, ww, ex_same ? "equal" : "differ");
            printf("  %s %s kl merged, %s: worst relative difference %.3g (totals) %.3g (windows) over %d "
                   "passes\n",
                   label, mode_name[gemm], runs[r].what, wt, ww, n_pass);
        }
    }
    free(t0), free(t1), free(w0), free(w1), free(e0), free(e1), free(win_ids);
    groups_free(&gs);
    token_ids_free(&ids);
    model_free(&m);
}

// What each keep test starts from: the fixture (dir's model, windows first .. of ids_path, at most nsamp of
// them: n), integer, emulated (not for experts: the scoring job never plans them there) and KV-cache formats,
// every default candidate group with the KV-cache groups, and the layers that keep their activations (a dense
// layer of a non-hybrid model: a sparse or hybrid layer keeps the recompute).
typedef struct {
    Model m;
    TokenIds ids;
    int n, dense, nf;
    Format f[4];
    Patterns dis;
    Groups gs;
} KeepCase;

// 0, after a visible skip named skip, when the model is missing.
static int keep_open(KeepCase* k, const char* skip, const char* dir, const char* ids_path, int first,
                     int nsamp) {
    if (!fixture_load(&k->m, &k->ids, skip, dir, ids_path, first)) return 0;
    k->n = k->ids.n < nsamp ? k->ids.n : nsamp;
    k->dense = 0;
    for (int l = 0; l < k->m.c.num_layers; l++)
        k->dense += !k->m.c.fam->hybrid && !model_layer_sparse(&k->m, l);
    k->nf = formats_load(k->f, 4, k->m.c.n_sparse ? "w4a8,w8a8,kv_fp8" : "w4a8,nvfp4,w8a8,kv_fp8", 0);
    patterns_parse(&k->dis, DEFAULT_DISABLED);
    groups_build(&k->gs, &k->m, 0, &k->dis);
    groups_add_kv(&k->gs, &k->m, &k->dis);
    return 1;
}

static void keep_close(KeepCase* k) {
    groups_free(&k->gs);
    patterns_free(&k->dis);
    token_ids_free(&k->ids);
    model_free(&k->m);
}

// One gradient run of k under AUTOQ_GRAD_KEEP=mode: its n windows in batches of B (the last may be short), the
// scores into out, the engine's peak, and the layers its forward kept (gpu_grad_keep_plan).
static void keep_run(double* out, size_t* peak, int* kept, const KeepCase* k, int split, int B,
                     const char* mode) {
    const Model* m = &k->m;
    int T = k->ids.t;
    setenv("AUTOQ_GRAD_KEEP", mode, 1);
    GpuEngine* e = gpu_engine_init(m, T, B, split);
    unsigned char* rec = xcalloc(m->c.num_layers, 1);
    GpuScoreSpec sp = {m, &k->gs, k->f, k->nf, 1, T, B, split, NULL, NULL, NULL, 0, rec};
    GpuScorer sc;
    gpu_scorer_init(&sc, e, &sp);
    memset(out, 0, sizeof(double) * k->nf * k->gs.n);
    for (int i = 0; i < k->n; i += B)
        gpu_score_gradient(&sc, k->ids.ids + (long)i * T, k->n - i < B ? k->n - i : B, out);
    *peak = gpu_peak_bytes(e);
    *kept = 0;
    for (int l = 0; l < m->c.num_layers; l++) *kept += !rec[l];
    gpu_engine_free(e);
    free(rec);
    unsetenv("AUTOQ_GRAD_KEEP");
}

// The gradient's kept activations (AUTOQ_GRAD_KEEP=1) against the recompute (=0): the same kernels on the same
// inputs, so the scores must be bit-identical, for plain bf16 (the fused attention where the shape takes it)
// and bf16 hi + lo (cuBLAS attention), integer, emulated and KV-cache formats, batches of 2 windows with a
// short last one; every dense layer kept (a sparse or hybrid layer keeps the recompute), and the peaks printed.
static void test_keep(const char* label, const char* dir, const char* ids_path, int first, int nsamp) {
    char name[240];
    snprintf(name, sizeof(name), "gpu %s kept activations", label);
    KeepCase k;
    if (!keep_open(&k, name, dir, ids_path, first, nsamp)) return;
    long G = (long)k.nf * k.gs.n;
    double *a = xcalloc(G, sizeof(double)), *b = xcalloc(G, sizeof(double));
    for (int split = 0; split < 2; split++) {
        size_t pa, pb;
        int ka, kb, L = k.m.c.num_layers;
        keep_run(a, &pa, &ka, &k, split, 2, "0");
        keep_run(b, &pb, &kb, &k, split, 2, "1");
        int same = memcmp(a, b, sizeof(double) * G) == 0, finite = 1;
        for (long i = 0; i < G; i++) finite &= isfinite(a[i]) || a[i] == 0;
        printf("  %s %s: peak GPU memory %.1f MiB recomputing, %.1f MiB keeping %d of %d layers\n", label,
               split ? "bf16x2" : "bf16", pa / 1048576.0, pb / 1048576.0, kb, L);
        snprintf(name, sizeof(name),
                 "gpu %s gradient %s: AUTOQ_GRAD_KEEP=1 (%d of %d layers kept) bit-identical to =0 (recompute)",
                 label, split ? "bf16x2" : "bf16", kb, L);
        CHECK(same && finite && ka == 0 && kb == k.dense, name, "%s, kept %d and %d (want 0 and %d)",
              same ? "identical" : "scores differ", ka, kb, k.dense);
    }
    free(a), free(b);
    keep_close(&k);
}

static void test_keep_all(void) {
    const char* tiny = getenv("AUTOQ_TINY") ? getenv("AUTOQ_TINY") : "../shared/models/qwen3-tiny";
    test_keep("qwen3-tiny", tiny, "tests/fixtures/qwen3_tiny_ids.npy", 0, 5);
    test_keep("qwen3-vl-tiny", "tests/fixtures/qwen3-vl-tiny", "tests/fixtures/qwen3_vl_tiny_ids.npy", 0, 3);
    test_keep("qwen3-moe-tiny", "tests/fixtures/qwen3-moe-tiny", "tests/fixtures/qwen3_moe_tiny_ids.npy", 0, 3);
    test_keep("qwen3_5-tiny", "tests/fixtures/qwen3_5-tiny", "tests/fixtures/qwen3_5_tiny_ids.npy", 0, 2);
}
#endif

int main(void) {
    if (gpu_device_count() == 0) {
        SKIP("gpu kernels and engine", "no CUDA device (or built without nvcc)");
        return 0;
    }
#ifdef AUTOQ_CUDA
    printf("  device: %s\n", gpu_name());
    if (getenv("AUTOQ_GPU_TEST_KEEP")) { // the gradient's kept activations alone (a short GPU call)
        test_keep_all();
        return g_fail ? 1 : 0;
    }
    if (getenv("AUTOQ_GPU_TEST_MERGE")) goto merge;   // the merged kl scorer alone (a short GPU call)
    if (getenv("AUTOQ_GPU_TEST_HYBRID")) goto hybrid; // the hybrid families alone (a short GPU call)
    test_keep_all();
    test_model("qwen3-vl-tiny", "tests/fixtures/qwen3-vl-tiny", "tests/fixtures/qwen3_vl_tiny_ids.npy", 0, 3);
    test_model("qwen3-tiny", getenv("AUTOQ_TINY") ? getenv("AUTOQ_TINY") : "../shared/models/qwen3-tiny",
               "tests/fixtures/qwen3_tiny_ids.npy", 0, 8);
    // Window 0 of each MoE fixture holds a near-tie in a later layer's routing in the pass with one
    // group quantized: router logits 1e-4 (relative) off, as the GPU's are after a few bf16 GEMMs,
    // send one token to another expert, which moves that group's kl by 2.7% (qwen3-moe-tiny, the
    // layer 0 experts) and 2.4% (qwen3-vl-moe-tiny, the layer 0 down_proj). Windows 1 and 2 have none
    // (checked on the CPU by perturbing the router logits by +-3e-4).
    test_model("qwen3-moe-tiny", "tests/fixtures/qwen3-moe-tiny", "tests/fixtures/qwen3_moe_tiny_ids.npy", 1,
               2);
    test_model("qwen3-vl-moe-tiny", "tests/fixtures/qwen3-vl-moe-tiny",
               "tests/fixtures/qwen3_vl_moe_tiny_ids.npy", 1, 2);
    test_emulated("qwen3-vl-tiny", "tests/fixtures/qwen3-vl-tiny", "tests/fixtures/qwen3_vl_tiny_ids.npy", 3);
    test_emulated("qwen3-tiny", getenv("AUTOQ_TINY") ? getenv("AUTOQ_TINY") : "../shared/models/qwen3-tiny",
                  "tests/fixtures/qwen3_tiny_ids.npy", 4);
    test_gptq("qwen3-tiny", getenv("AUTOQ_TINY") ? getenv("AUTOQ_TINY") : "../shared/models/qwen3-tiny",
              "tests/fixtures/qwen3_tiny_ids.npy", 0, 4);
    test_gptq("qwen3-moe-tiny", "tests/fixtures/qwen3-moe-tiny", "tests/fixtures/qwen3_moe_tiny_ids.npy", 1, 2);
hybrid:
    // The hybrid families (README §3): Gated DeltaNet layers, gated attention with partial RoPE and (1 + w)
    // norms, shared experts; both windows of each fixture, with the tolerances above.
    test_model("qwen3_5-tiny", "tests/fixtures/qwen3_5-tiny", "tests/fixtures/qwen3_5_tiny_ids.npy", 0, 2);
    test_model("qwen3_5-moe-tiny", "tests/fixtures/qwen3_5-moe-tiny", "tests/fixtures/qwen3_5_moe_tiny_ids.npy",
               0, 2);
    test_model("qwen3-next-tiny", "tests/fixtures/qwen3-next-tiny", "tests/fixtures/qwen3_next_tiny_ids.npy", 0,
               2);
    test_emulated("qwen3_5-tiny", "tests/fixtures/qwen3_5-tiny", "tests/fixtures/qwen3_5_tiny_ids.npy", 2);
    // --shard-layers's stages on these models, on one GPU
    test_stages("qwen3_5-tiny", "tests/fixtures/qwen3_5-tiny", "tests/fixtures/qwen3_5_tiny_ids.npy", 2);
    test_stages("qwen3_5-moe-tiny", "tests/fixtures/qwen3_5-moe-tiny",
                "tests/fixtures/qwen3_5_moe_tiny_ids.npy", 2);
    test_stages("qwen3-next-tiny", "tests/fixtures/qwen3-next-tiny", "tests/fixtures/qwen3_next_tiny_ids.npy",
                2);
merge:
    // kl merged across groups (AUTOQ_KL_MERGE=1) against today's path: dense, VL, MoE and the hybrid families
    test_merged("qwen3-tiny", getenv("AUTOQ_TINY") ? getenv("AUTOQ_TINY") : "../shared/models/qwen3-tiny",
                "tests/fixtures/qwen3_tiny_ids.npy", 0);
    test_merged("qwen3-vl-tiny", "tests/fixtures/qwen3-vl-tiny", "tests/fixtures/qwen3_vl_tiny_ids.npy", 0);
    test_merged("qwen3-moe-tiny", "tests/fixtures/qwen3-moe-tiny", "tests/fixtures/qwen3_moe_tiny_ids.npy", 1);
    test_merged("qwen3-vl-moe-tiny", "tests/fixtures/qwen3-vl-moe-tiny",
                "tests/fixtures/qwen3_vl_moe_tiny_ids.npy", 1);
    test_merged("qwen3_5-tiny", "tests/fixtures/qwen3_5-tiny", "tests/fixtures/qwen3_5_tiny_ids.npy", 0);
    test_merged("qwen3_5-moe-tiny", "tests/fixtures/qwen3_5-moe-tiny",
                "tests/fixtures/qwen3_5_moe_tiny_ids.npy", 0);
    test_merged("qwen3-next-tiny", "tests/fixtures/qwen3-next-tiny", "tests/fixtures/qwen3_next_tiny_ids.npy",
                0);
#endif
    return g_fail ? 1 : 0;
}

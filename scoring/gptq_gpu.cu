// GPTQ's sequential pipeline (README §9) on one GPU, for dense models: scoring/quantizer.c's
// gptq_sequential with the layer passes, the Hessians and the GPTQ updates on the device. One decoder
// layer is resident at a time (a one-layer pipeline-stage engine), the residual stream of every window
// waits in a device pool between layers, and each layer runs twice over the windows: once to collect
// its inputs' X^T X (fp32 GEMMs, no TF32), once through its GPTQ weights (rounded to bf16, the model's
// dtype) to give the next layer its inputs.
#include <cublas_v2.h>
#include <string.h>

#include "../engine/gpu_engine.cuh"
#include "../kernels/cuda_common.cuh"

extern "C" {
#include "../engine/util.h"
#include "quantizer.h"
}

typedef struct {
    const Model* m;
    cublasHandle_t blas; // default math: fp32 products stay fp32
    float* xtx[SITES];   // (n, n) device sums of x x^T, NULL where no linear of the site is chosen
    long tokens;
} Capture;

static void capture_input(GpuEngine* e, int idx, const float* x, int M, void* ctx) {
    (void)e;
    Capture* c = (Capture*)ctx;
    const Linear* l = &c->m->linears[idx];
    int site = linear_site(c->m, idx);
    if (l->kind == LIN_Q) c->tokens += M;
    // each site's input once, at its first linear
    if ((l->kind == LIN_K || l->kind == LIN_V || l->kind == LIN_UP) || !c->xtx[site]) return;
    const float one = 1.0f;
    int n = l->in;
    // x is (M, n) row-major = (n, M) column-major: xtx += x^T x, symmetric either way
    cublasCheck(
        cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, n, n, M, &one, x, n, x, n, &one, c->xtx[site], n));
}

// Windows [b B, b B + nb) through layer l of e: the residual stream from the pool (the embedding at
// layer 0), and back into it when `keep`.
static void run_batch(GpuEngine* e, int l, const TokenIds* ids, int b, int B, float* pool, int keep) {
    int nb = ids->n - b * B < B ? ids->n - b * B : B;
    size_t TD = (size_t)ids->t * e->m->c.hidden_size, bytes = sizeof(float) * TD * nb;
    gpu_pass_begin(e, 1, ids->ids + (size_t)b * B * ids->t, nb);
    if (l > 0) cudaCheck(cudaMemcpy(gpu_hidden(e), pool + TD * b * B, bytes, cudaMemcpyDeviceToDevice));
    gpu_forward_layers(e, l, nb, 0);
    if (keep) cudaCheck(cudaMemcpy(pool + TD * b * B, gpu_hidden(e), bytes, cudaMemcpyDeviceToDevice));
}

// GPTQ of layer l's chosen linears from the captured sums; their weights go into wq and into e.
static void layer_gptq(float** wq, GpuEngine* e, Capture* c, int l, const Format* fmts, const int* choice,
                       const Quantizer* q) {
    const Model* m = c->m;
    float* h = NULL;
    for (int site = 0; site < SITES; site++) {
        if (!c->xtx[site]) continue;
        int n = site_width(m, site);
        h = (float*)xrealloc(h, sizeof(float) * n * n);
        cudaCheck(cudaMemcpy(h, c->xtx[site], sizeof(float) * n * n, cudaMemcpyDeviceToHost));
        float k = 2.0f / (float)c->tokens; // H = 2 X^T X / tokens, as hessian_get
#pragma omp parallel for
        for (long j = 0; j < (long)n * n; j++) h[j] *= k;
        for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++) {
            const Linear* lin = &m->linears[i];
            if (choice[i] < 0 || linear_site(m, i) != site) continue;
            wq[i] = (float*)xmalloc(sizeof(float) * lin->out * lin->in);
            if (gpu_gptq_quantize(wq[i], lin->w, h, lin->out, lin->in, fmts[choice[i]].w, q->gptq,
                                  q->scales ? q->scales[i] : NULL))
                warn_msg(
                    "%s: the dampened Hessian is not positive definite; quantized round-to-nearest instead, "
                    "as llm-compressor does (raise --gptq-dampening or add calibration data)",
                    lin->name);
            gpu_linear_set_weight(e, i, wq[i]);
        }
    }
    free(h);
}

extern "C" void gptq_sequential_gpu(float** wq, const Model* m, const TokenIds* ids, const Format* fmts,
                                    const int* choice, const Quantizer* q) {
    const Config* c = &m->c;
    if (c->n_sparse)
        fail_input("GPTQ on the GPU: mixture-of-experts layers run on the CPU only (--device cpu)");
    int L = c->num_layers, T = ids->t, B = 8, nbat = (ids->n + B - 1) / B;
    double t0 = time_now();
    float* pool;
    cudaCheck(cudaMalloc(&pool, sizeof(float) * (size_t)ids->n * T * c->hidden_size));
    Capture cap;
    memset(&cap, 0, sizeof(cap));
    cap.m = m;
    cublasCheck(cublasCreate(&cap.blas));
    Progress p;
    progress_init(&p, "gptq layers (GPU)", L);
    for (int l = 0; l < L; l++) {
        // bf16 hi + lo GEMM inputs: the Hessians' inputs as the fp32 CPU engine computes them
        GpuEngine* e = gpu_engine_init_layers(m, T, B, 1, l, l + 1, 1);
        int any = 0;
        for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++) {
            if (choice[i] < 0) continue;
            int s = linear_site(m, i);
            size_t n = site_width(m, s);
            if (!cap.xtx[s]) {
                cudaCheck(cudaMalloc(&cap.xtx[s], sizeof(float) * n * n));
                cudaCheck(cudaMemset(cap.xtx[s], 0, sizeof(float) * n * n));
            }
            any = 1;
        }
        if (any) { // this layer as it is, on the stream so far
            cap.tokens = 0;
            gpu_set_capture(e, capture_input, &cap);
            for (int b = 0; b < nbat; b++) run_batch(e, l, ids, b, B, pool, 0);
            gpu_set_capture(e, NULL, NULL);
            layer_gptq(wq, e, &cap, l, fmts, choice, q);
        }
        for (int b = 0; b < nbat; b++) run_batch(e, l, ids, b, B, pool, 1); // through the quantized layer
        cudaCheck(cudaDeviceSynchronize());
        for (int s = 0; s < SITES; s++) cudaFree(cap.xtx[s]), cap.xtx[s] = NULL;
        gpu_engine_free(e);
        progress_step(&p, 1);
    }
    progress_end(&p);
    cublasDestroy(cap.blas);
    cudaFree(pool);
    info_msg("gptq: sequential pass over %d layers on the GPU (%s), %d x %d tokens in %.2fs", L, gpu_name(),
             ids->n, T, time_now() - t0);
}

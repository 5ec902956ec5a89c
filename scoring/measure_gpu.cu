// search --refine's measurements on the CUDA engine (scoring/measure_gpu.h). The engine runs with bf16 hi + lo
// GEMM inputs (~16-bit activations, the closest to the fp32 CPU engine) and the recipe's linears as fp32
// GEMMs of their deployed weights, so a measurement differs from the CPU's by the unquantized GEMMs' rounding.
#include <string.h>

#include "../kernels/cuda_common.cuh"
#include "../kernels/loss.h"
#include "measure_gpu.h"

extern "C" {
#include "../engine/gpu.h"
#include "../engine/util.h"
}

struct GpuMeasure {
    GpuEngine* e;
    const TokenIds* held;
    int B, V;
    float* ref;      // (n T, V) device: the unquantized logits
    int* ids;        // (n T) device
    double* acc;     // device: kl, nll
    double* wkl;     // (n) device: each window's KL
    double* scratch; // (B T) device
    double nll_ref;
};

// The windows in batches of g->B: KL to ref (when ref) into acc[0], NLL into acc[1]; logits into ref
// instead when fill.
static void measure_passes(GpuMeasure* g, int fill) {
    const TokenIds* h = g->held;
    long per = (long)h->t * g->V;
    cudaCheck(cudaMemset(g->acc, 0, 2 * sizeof(double)));
    cudaCheck(cudaMemset(g->wkl, 0, sizeof(double) * h->n));
    for (int i = 0; i < h->n; i += g->B) {
        int nb = h->n - i < g->B ? h->n - i : g->B;
        gpu_pass_begin(g->e, 0, h->ids + (long)i * h->t, nb);
        gpu_forward_layers(g->e, 0, nb, 0);
        float* q = gpu_head_logits(g->e, nb, fill ? g->ref + i * per : NULL);
        if (!fill) { // the per-row KL is left in scratch: each window's sum too
            gpu_kl_rows(g->acc, g->scratch, g->ref + i * per, q, nb * h->t, g->V);
            gpu_sum_windows(g->wkl + i, 1, g->scratch, nb, h->t);
        }
        gpu_nll_windows(g->acc + 1, g->scratch, q, g->ids + (long)i * h->t, nb, h->t, g->V);
    }
}

extern "C" GpuMeasure* gpu_measure_init(const Model* m, const TokenIds* held, size_t recipe_bytes, char* why,
                                        size_t n) {
    int T = held->t, V = m->c.vocab_size;
    size_t ref_bytes = sizeof(float) * held->n * (size_t)T * V;
    // batches of at most 8192 tokens whose logits take at most 2 GiB
    int B = 8192 / T > 0 ? 8192 / T : 1;
    while (B > 1 && sizeof(float) * (size_t)B * T * V > (2UL << 30)) B--;
    if (B > held->n) B = held->n;
    GpuMeasure* g = (GpuMeasure*)xcalloc(1, sizeof(GpuMeasure));
    g->e = gpu_engine_init(m, T, B, GEMM_BF16X2);
    size_t fr, tot;
    cudaCheck(cudaMemGetInfo(&fr, &tot));
    size_t need = ref_bytes + recipe_bytes + 4 * sizeof(double) * (size_t)B * T + (256UL << 20);
    if (need > fr) {
        snprintf(why, n,
                 "the GPU has %.2f GiB free after the model; the held-out logits and the recipes' fp32 "
                 "weights need %.2f GiB",
                 fr / 1073741824.0, need / 1073741824.0);
        gpu_engine_free(g->e);
        free(g);
        return NULL;
    }
    g->held = held;
    g->B = B;
    g->V = V;
    g->ref = (float*)gpu_alloc(g->e, ref_bytes);
    g->ids = (int*)gpu_alloc(g->e, sizeof(int) * held->n * (size_t)T);
    g->acc = (double*)gpu_alloc(g->e, 2 * sizeof(double));
    g->wkl = (double*)gpu_alloc(g->e, sizeof(double) * held->n);
    g->scratch = (double*)gpu_alloc(g->e, sizeof(double) * (size_t)B * T);
    cudaCheck(cudaMemcpy(g->ids, held->ids, sizeof(int) * held->n * (size_t)T, cudaMemcpyHostToDevice));
    measure_passes(g, 1);
    double h[2];
    cudaCheck(cudaMemcpy(h, g->acc, sizeof(h), cudaMemcpyDeviceToHost));
    g->nll_ref = h[1] / held->n;
    return g;
}

extern "C" void gpu_measure_set(GpuMeasure* g, int idx, const float* w, QuantSpec in) {
    gpu_recipe_set(g->e, idx, w, in);
}

extern "C" void gpu_measure_run(GpuMeasure* g, double* kl, double* nll_ref, double* nll_q, double* wkl) {
    measure_passes(g, 0);
    double h[2];
    cudaCheck(cudaMemcpy(h, g->acc, sizeof(h), cudaMemcpyDeviceToHost));
    if (wkl) cudaCheck(cudaMemcpy(wkl, g->wkl, sizeof(double) * g->held->n, cudaMemcpyDeviceToHost));
    *kl = h[0];
    *nll_ref = g->nll_ref;
    *nll_q = h[1] / g->held->n;
}

extern "C" void gpu_measure_free(GpuMeasure* g) {
    if (!g) return;
    gpu_engine_free(g->e);
    free(g);
}

// The experts' grouped GEMM (kernels/matmul.cu) at the Qwen3-30B-A3B shape against cuBLAS on one
// dense GEMM of the same total size (its ceiling: no grouping, no ragged tiles), and against one
// cuBLAS GEMM per expert (AUTOQ_MOE_GEMM=loop), and the sm_90 (wgmma) kernel against the mma.sync
// one (AUTOQ_MOE_GEMM=mma), bf16 and int8. Rows per expert as a batch of 8 x 512 tokens,
// top-8 of 128 experts, spreads them: uniform, or skewed (expert e gets a share growing with e).
// Also cuBLAS's own grouped GEMM (cublasGemmGroupedBatchedEx: one group per expert, sizes on the
// host, so the engine would have to read the routing counts back first), and the persistent TMA kernel
// (AUTOQ_MOE_GEMM=tma) beside wgmma (=wgmma), bf16, hi + lo and int8.
//   build-dev/bench/bench_grouped [ROWS] [tma]   (tma: only tma, wgmma and dense cuBLAS)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/util.h"
#include "kernels/matmul.h"

#ifdef AUTOQ_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>

static double time_ms(cudaEvent_t a, cudaEvent_t b) {
    float ms;
    cudaEventSynchronize(b);
    cudaEventElapsedTime(&ms, a, b);
    return ms;
}

// cublasGemmGroupedBatchedEx arguments: one group of one GEMM per expert with rows.
static struct {
    int n, m[128], nn[128], k[128], lda[128], ldb[128], ldc[128], size[128];
    cublasOperation_t ta[128], tb[128];
    float alpha[128], beta[128];
    void **A, **B, **C; // device pointer arrays
} G;

static void grouped_setup(const int* offs, int E, int K, int N, int bwd, void* x, void* w, void* y) {
    void *hA[128], *hB[128], *hC[128];
    G.n = 0;
    for (int e = 0; e < E; e++) {
        int n = offs[e + 1] - offs[e], i = G.n;
        if (!n) continue;
        G.ta[i] = bwd ? CUBLAS_OP_N : CUBLAS_OP_T, G.tb[i] = CUBLAS_OP_N;
        G.m[i] = N, G.nn[i] = n, G.k[i] = K, G.lda[i] = bwd ? N : K, G.ldb[i] = K, G.ldc[i] = N;
        G.alpha[i] = 1, G.beta[i] = 0, G.size[i] = 1;
        hA[i] = (char*)w + 2L * e * K * N, hB[i] = (char*)x + 2L * offs[e] * K,
        hC[i] = (char*)y + 4L * offs[e] * N;
        G.n++;
    }
    if (!G.A)
        cudaMalloc((void**)&G.A, sizeof(hA)), cudaMalloc((void**)&G.B, sizeof(hB)),
            cudaMalloc((void**)&G.C, sizeof(hC));
    cudaMemcpy(G.A, hA, sizeof(void*) * G.n, cudaMemcpyHostToDevice);
    cudaMemcpy(G.B, hB, sizeof(void*) * G.n, cudaMemcpyHostToDevice);
    cudaMemcpy(G.C, hC, sizeof(void*) * G.n, cudaMemcpyHostToDevice);
}

static void grouped_cublas(cublasHandle_t h) {
    cublasStatus_t st =
        cublasGemmGroupedBatchedEx(h, G.ta, G.tb, G.m, G.nn, G.k, G.alpha, (const void* const*)G.A, CUDA_R_16BF,
                                   G.lda, (const void* const*)G.B, CUDA_R_16BF, G.ldb, G.beta, G.C, CUDA_R_16BF,
                                   G.ldc, G.n, G.size, CUBLAS_COMPUTE_32F);
    if (st != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "cublasGemmGroupedBatchedEx: status %d\n", (int)st);
        exit(1);
    }
}

int main(int argc, char** argv) {
    int rows = argc > 1 ? atoi(argv[1]) : 32768, E = 128, reps = 20;
    int only_tma = argc > 2 && !strcmp(argv[2], "tma");                  // the TMA lines only (tuning builds)
    int shapes[3][3] = {{2048, 768, 0}, {768, 2048, 0}, {768, 2048, 1}}; // gate/up, down, down backward
    const char* names[3] = {"gate (K 2048, N 768)", "down (K 768, N 2048)", "down backward (K 2048, N 768)"};
    void *x, *w, *y;
    cudaMalloc(&x, 2L * rows * 2048);
    cudaMalloc(&y, 4L * rows * 2048);
    cudaMalloc(&w, 2L * E * 2048 * 768);
    cudaMemset(x, 0, 2L * rows * 2048);
    cudaMemset(w, 0, 2L * E * 2048 * 768);
    float *sx, *sw; // the int8 runs' scales
    cudaMalloc((void**)&sx, 4L * rows);
    cudaMalloc((void**)&sw, 4L * E * 2048);
    cudaMemset(sx, 0, 4L * rows);
    cudaMemset(sw, 0, 4L * E * 2048);
    int *offs = xmalloc(sizeof(int) * (E + 1)), *tiles = xmalloc(sizeof(int) * 3 * (rows / GROUPED_ROWS + E));
    cublasHandle_t h;
    cublasCreate(&h);
    cudaEvent_t a, b;
    cudaEventCreate(&a), cudaEventCreate(&b);
    for (int skew = 0; skew < 2; skew++) {
        offs[0] = 0;
        for (int e = 0; e < E; e++) // skewed: shares 1..E, the largest expert 2x the mean
            offs[e + 1] =
                skew ? (int)((long)rows * (e + 1) * (e + 2) / (E * (E + 1))) : (int)((long)rows * (e + 1) / E);
        int nt = matmul_grouped_tiles(tiles, offs, E);
        int* dt;
        cudaMalloc((void**)&dt, sizeof(int) * 3 * nt);
        cudaMemcpy(dt, tiles, sizeof(int) * 3 * nt, cudaMemcpyHostToDevice);
        for (int s = 0; s < 3; s++) {
            int K = shapes[s][0], N = shapes[s][1], bwd = shapes[s][2];
            double flop = 2.0 * rows * K * N, ms[13];
            char ran[32] = "";
            grouped_setup(offs, E, K, N, bwd, x, w, y);
            // the kernel each grouped run asks for (AUTOQ_MOE_GEMM; NULL: the default)
            const char* kind[13] = {NULL,  NULL,    NULL,  NULL,    "mma", "mma",  NULL,
                                    "tma", "wgmma", "tma", "wgmma", "tma", "wgmma"};
            for (int impl = 0; impl < 13; impl++) {
                const float one = 1, zero = 0;
                if (only_tma && impl != 1 && impl < 7) continue;
                if (kind[impl])
                    setenv("AUTOQ_MOE_GEMM", kind[impl], 1);
                else
                    unsetenv("AUTOQ_MOE_GEMM");
                for (int r = -2; r < reps; r++) { // two warm-up runs
                    if (r == 0) cudaEventRecord(a, 0);
                    if (impl == 0 || impl == 4 || impl == 7 || impl == 8) {
                        gpu_matmul_grouped(y, NULL, x, NULL, w, (long)K * N, dt, nt, K, N, bwd, 0.0f, 0);
                    } else if (impl == 11 || impl == 12) { // hi + lo inputs (x twice): twice the work
                        gpu_matmul_grouped(y, NULL, x, x, w, (long)K * N, dt, nt, K, N, bwd, 0.0f, 0);
                    } else if (impl >= 5 && impl <= 10) { // int8 codes (the buffers reread as bytes)
                        if (!bwd) gpu_matmul_grouped_i8(y, x, sx, w, (long)K * N, sw, N, dt, nt, K, N);
                    } else if (impl == 1) {
                        cublasGemmEx(h, bwd ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, N, rows, K, &one, w,
                                     CUDA_R_16BF, bwd ? N : K, x, CUDA_R_16BF, K, &zero, y, CUDA_R_32F, N,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
                    } else if (impl == 3) {
                        grouped_cublas(h);
                    } else {
                        for (int e = 0; e < E; e++) {
                            int n = offs[e + 1] - offs[e];
                            if (!n) continue;
                            cublasGemmEx(h, bwd ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, N, n, K, &one,
                                         (char*)w + 2L * e * K * N, CUDA_R_16BF, bwd ? N : K,
                                         (char*)x + 2L * offs[e] * K, CUDA_R_16BF, K, &zero,
                                         (char*)y + 4L * offs[e] * N, CUDA_R_32F, N, CUBLAS_COMPUTE_32F,
                                         CUBLAS_GEMM_DEFAULT);
                        }
                    }
                }
                cudaEventRecord(b, 0);
                ms[impl] = time_ms(a, b) / reps;
                if (impl == 7) snprintf(ran, sizeof(ran), "%s", gpu_matmul_grouped_kernel()); // the schedule
            }
            if (!only_tma) {
                printf("%s rows %d, %s: grouped kernel %.3f ms (%.0f TFLOP/s); mma.sync kernel %.3f ms (%.0f); "
                       "one "
                       "cuBLAS GEMM of the same size %.3f ms (%.0f); cuBLAS per expert %.3f ms (%.0f); cuBLAS "
                       "grouped %.3f ms (%.0f)",
                       skew ? "skewed " : "uniform", rows, names[s], ms[0], flop / ms[0] / 1e9, ms[4],
                       flop / ms[4] / 1e9, ms[1], flop / ms[1] / 1e9, ms[2], flop / ms[2] / 1e9, ms[3],
                       flop / ms[3] / 1e9);
                if (!bwd)
                    printf("; int8 grouped %.3f ms (%.0f TOP/s), int8 mma.sync %.3f ms (%.0f)", ms[6],
                           flop / ms[6] / 1e9, ms[5], flop / ms[5] / 1e9);
                printf("\n");
            }
            // the persistent TMA kernel against wgmma and the dense cuBLAS GEMM (its target: 75%)
            printf("  %s %s: %s %.3f ms (%.0f TFLOP/s, %.0f%% of dense cuBLAS), wgmma %.3f ms (%.0f), dense "
                   "cuBLAS %.0f; hi + lo: tma %.0f, wgmma %.0f",
                   skew ? "skewed " : "uniform", names[s], ran, ms[7], flop / ms[7] / 1e9, 100 * ms[1] / ms[7],
                   ms[8], flop / ms[8] / 1e9, flop / ms[1] / 1e9, 2 * flop / ms[11] / 1e9,
                   2 * flop / ms[12] / 1e9);
            if (!bwd) printf("; int8: tma %.0f TOP/s, wgmma %.0f", flop / ms[9] / 1e9, flop / ms[10] / 1e9);
            printf("\n");
        }
        cudaFree(dt);
    }
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) fprintf(stderr, "CUDA error %s\n", cudaGetErrorString(err));
    return err != cudaSuccess;
}
#else
int main(void) {
    fprintf(stderr, "bench_grouped: built without CUDA\n");
    return 0;
}
#endif

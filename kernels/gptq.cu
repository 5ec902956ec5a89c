// GPTQ on the GPU: the twin of kernels/gptq.c (tests/test_gpu_ops.c compares them). The host
// orders, dampens and permutes (O(cols^2), shared with the CPU code); cuSOLVER factorises in fp64
// (Cholesky, inverse, Cholesky of the inverse) and the column loop runs one thread per row on shared
// memory, each block's error pushed to the remaining columns by one cuBLAS GEMM.
#include <cusolverDn.h>
#include <math.h>
#include <stdlib.h>

#include "cuda_common.cuh"
#include "gptq.h"

#define cusolverCheck(call)                                                                                    \
    do {                                                                                                       \
        cusolverStatus_t s_ = (call);                                                                          \
        if (s_ != CUSOLVER_STATUS_SUCCESS) {                                                                   \
            fprintf(stderr, "autoq: cuSOLVER error %d at %s:%d\n", (int)s_, __FILE__, __LINE__);               \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

// u (n, n) fp32 row-major upper from the fp64 factor (row-major upper = column-major lower), or
// the identity when the factorisation failed.
__global__ void gptq_upper_kernel(float* u, const double* hp, int n, int identity) {
    long k = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (k >= (long)n * n) return;
    int i = (int)(k / n), j = (int)(k % n);
    u[k] = j < i ? 0.0f : identity ? (float)(i == j) : (float)hp[k];
}

// GPTQ_ROWS rows per thread block, one thread per row: quantize columns i1..i2-1 in turn, each error
// pushed to the block's later columns; err (rows, B) keeps the scaled errors for the GEMM. The rows'
// block of columns, their errors and u's triangle for the block live in shared memory (row stride B + 1:
// thread t's element j sits in bank (t + j) % 32, so a warp never conflicts; u's row is a broadcast).
// Same arithmetic as quant_value_scaled.
#define GPTQ_ROWS 32
static size_t block_smem(int B) { return sizeof(float) * (size_t)(B + 2 * GPTQ_ROWS) * (B + 1); }

__global__ void gptq_block_kernel(float* W, float* err, const float* u, const float* scale, int rows, int cols,
                                  int i1, int i2, int B, int bits, int narrow, int ct) {
    extern __shared__ float sm[];
    int nb = i2 - i1, ld = B + 1, t = threadIdx.x, r0 = blockIdx.x * GPTQ_ROWS;
    float *us = sm, *ws = sm + (size_t)B * ld, *es = ws + GPTQ_ROWS * ld;
    for (int k = t; k < nb * nb; k += GPTQ_ROWS)
        us[(k / nb) * ld + k % nb] = u[(long)(i1 + k / nb) * cols + i1 + k % nb];
    for (int k = t; k < GPTQ_ROWS * nb; k += GPTQ_ROWS) {
        int rr = k / nb, j = k % nb;
        if (r0 + rr < rows) ws[rr * ld + j] = W[(long)(r0 + rr) * cols + i1 + j];
    }
    __syncthreads();
    int r = r0 + t;
    if (r < rows) {
        float m = (float)((1 << (bits - 1)) - 1);
        float hi = m, lo = (narrow && !ct) ? -m : -m - 1.0f;
        float s = scale[r];
        int zero = !(s > 0.0f);
        float *wr = ws + t * ld, *er = es + t * ld;
        for (int i = 0; i < nb; i++) {
            const float* ui = us + i * ld;
            float x = wr[i];
            float qv = zero ? 0.0f : fminf(fmaxf(rintf(__fdiv_rn(x, s)), lo), hi) * s;
            float e = __fdiv_rn(x - qv, ui[i]);
            wr[i] = qv;
            er[i] = e;
            for (int j = i + 1; j < nb; j++) wr[j] = __fsub_rn(wr[j], __fmul_rn(e, ui[j]));
        }
    }
    __syncthreads();
    for (int k = t; k < GPTQ_ROWS * nb; k += GPTQ_ROWS) {
        int rr = k / nb, j = k % nb;
        if (r0 + rr >= rows) continue;
        W[(long)(r0 + rr) * cols + i1 + j] = ws[rr * ld + j];
        err[(long)(r0 + rr) * B + j] = es[rr * ld + j];
    }
}

// One cuSOLVER and one cuBLAS handle for every call (creating them costs milliseconds each).
static cusolverDnHandle_t g_sol;
static cublasHandle_t g_blas;

extern "C" int gpu_gptq_quantize(float* wq, const float* w, const float* h, int rows, int cols, QuantSpec q,
                                 GptqOpts o, const float* scale) {
    int B = o.block > 0 ? o.block : 128;
    int* perm = (int*)malloc(sizeof(int) * cols);
    unsigned char* dead = (unsigned char*)malloc(cols);
    double* hp = (double*)malloc(sizeof(double) * cols * cols);
    float* W = (float*)malloc(sizeof(float) * rows * cols);
    float* sc = (float*)malloc(sizeof(float) * rows);
    if (!perm || !dead || !hp || !W || !sc) {
        fprintf(stderr, "autoq: out of memory (GPTQ of a %d x %d weight)\n", rows, cols);
        exit(1);
    }
    gptq_row_scales(sc, scale, w, rows, cols, q);
    gptq_order(perm, h, cols, o.order);
    gptq_prepare(hp, dead, h, perm, cols, o.damp);
#pragma omp parallel for
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) W[(size_t)r * cols + k] = dead[k] ? 0.0f : w[(size_t)r * cols + perm[k]];

    if (!g_sol) {
        cusolverCheck(cusolverDnCreate(&g_sol));
        cublasCheck(cublasCreate(&g_blas));
    }
    cudaCheck(cudaFuncSetAttribute(gptq_block_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)block_smem(B)));
    cusolverDnHandle_t sol = g_sol;
    cublasHandle_t blas = g_blas;
    double *d_h, *d_work;
    float *d_u, *d_w, *d_err, *d_scale;
    int *d_info, info = 0, lwork = 0, lwork2 = 0;
    cudaCheck(cudaMalloc(&d_h, sizeof(double) * cols * cols));
    cudaCheck(cudaMalloc(&d_u, sizeof(float) * cols * cols));
    cudaCheck(cudaMalloc(&d_w, sizeof(float) * rows * cols));
    cudaCheck(cudaMalloc(&d_err, sizeof(float) * rows * B));
    cudaCheck(cudaMalloc(&d_scale, sizeof(float) * rows));
    cudaCheck(cudaMalloc(&d_info, sizeof(int)));
    cudaCheck(cudaMemcpy(d_h, hp, sizeof(double) * cols * cols, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_w, W, sizeof(float) * rows * cols, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_scale, sc, sizeof(float) * rows, cudaMemcpyHostToDevice));
    const cublasFillMode_t lower = CUBLAS_FILL_MODE_LOWER; // LAPACK's "L", as gptq.c calls it
    cusolverCheck(cusolverDnDpotrf_bufferSize(sol, lower, cols, d_h, cols, &lwork));
    cusolverCheck(cusolverDnDpotri_bufferSize(sol, lower, cols, d_h, cols, &lwork2));
    if (lwork2 > lwork) lwork = lwork2;
    cudaCheck(cudaMalloc(&d_work, sizeof(double) * (lwork > 0 ? lwork : 1)));
    // each step only when the previous succeeded: a failure means round-to-nearest
    for (int step = 0; step < 3 && info == 0; step++) {
        if (step == 1)
            cusolverCheck(cusolverDnDpotri(sol, lower, cols, d_h, cols, d_work, lwork, d_info));
        else
            cusolverCheck(cusolverDnDpotrf(sol, lower, cols, d_h, cols, d_work, lwork, d_info));
        cudaCheck(cudaMemcpy(&info, d_info, sizeof(int), cudaMemcpyDeviceToHost));
    }
    int fallback = info != 0;
    long nn = (long)cols * cols;
    gptq_upper_kernel<<<ceil_div(nn, 256), 256>>>(d_u, d_h, cols, fallback);
    cudaCheck(cudaGetLastError());
    const float minus_one = -1.0f, one = 1.0f;
    for (int i1 = 0; i1 < cols; i1 += B) {
        int i2 = i1 + B < cols ? i1 + B : cols, nb = i2 - i1;
        gptq_block_kernel<<<ceil_div(rows, GPTQ_ROWS), GPTQ_ROWS, block_smem(B)>>>(
            d_w, d_err, d_u, d_scale, rows, cols, i1, i2, B, q.bits, q.narrow, q.ct);
        cudaCheck(cudaGetLastError());
        // row-major W[:, i2:] -= err (rows, nb) u[i1:i2, i2:]; column-major that is
        // W^T (cols - i2, rows) -= u^T (cols - i2, nb) err^T (nb, rows)
        if (i2 < cols)
            cublasCheck(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, cols - i2, rows, nb, &minus_one,
                                    d_u + (long)i1 * cols + i2, cols, d_err, B, &one, d_w + i2, cols));
    }
    cudaCheck(cudaMemcpy(W, d_w, sizeof(float) * rows * cols, cudaMemcpyDeviceToHost));
#pragma omp parallel for
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) wq[(size_t)r * cols + perm[k]] = W[(size_t)r * cols + k];
    cudaFree(d_h);
    cudaFree(d_u);
    cudaFree(d_w);
    cudaFree(d_err);
    cudaFree(d_scale);
    cudaFree(d_info);
    cudaFree(d_work);
    free(perm);
    free(dead);
    free(hp);
    free(W);
    free(sc);
    return fallback;
}

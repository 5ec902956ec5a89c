// The factorisations GPTQ can use for its inverse Hessian's upper Cholesky factor, timed on one GPU at the
// Qwen3-8B widths (4096: q/k/v, o, gate/up inputs; 12288: down_proj's): cuSOLVER potrf + trtri (what
// kernels/gptq.cu runs), potrf + trsm against the identity, potrf + potri + potrf (llm-compressor's
// sequence, in fp64 and fp32).
//   nvcc -O2 -arch=sm_90 bench/gptq_factor_bench.cu -lcusolver -lcublas -o /tmp/factor_bench &&
//   /tmp/factor_bench
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                                                  \
    do {                                                                                                       \
        if ((x) != 0) {                                                                                        \
            fprintf(stderr, "error %d at line %d\n", (int)(x), __LINE__);                                      \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

template <typename T> __global__ void spd_kernel(T* a, const float* g, int n) { // a = g g^T / n + I
    long idx = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (idx < (long)n * n) a[idx] = (T)(g[idx] / n) + (T)(idx % n == idx / n);
}

static cudaEvent_t e0, e1;
static float lap(void) {
    float ms;
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    cudaEventElapsedTime(&ms, e0, e1);
    cudaEventRecord(e0);
    return ms;
}

template <typename T> static void run(cusolverDnHandle_t sol, cublasHandle_t blas, const float* g, int n) {
    cudaDataType dt = sizeof(T) == 8 ? CUDA_R_64F : CUDA_R_32F;
    const char* name = sizeof(T) == 8 ? "fp64" : "fp32";
    T *a, *b;
    int* info;
    CK(cudaMalloc(&a, sizeof(T) * n * n));
    CK(cudaMalloc(&b, sizeof(T) * n * n));
    CK(cudaMalloc(&info, 4));
    size_t dw, hw;
    CK(cusolverDnXpotrf_bufferSize(sol, NULL, CUBLAS_FILL_MODE_LOWER, n, dt, a, n, dt, &dw, &hw));
    size_t dw2, hw2;
    CK(cusolverDnXtrtri_bufferSize(sol, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, n, dt, a, n, &dw2, &hw2));
    int lw = 0;
    if (sizeof(T) == 8)
        CK(cusolverDnDpotri_bufferSize(sol, CUBLAS_FILL_MODE_LOWER, n, (double*)a, n, &lw));
    else
        CK(cusolverDnSpotri_bufferSize(sol, CUBLAS_FILL_MODE_LOWER, n, (float*)a, n, &lw));
    size_t dmax = dw > dw2 ? dw : dw2;
    if ((size_t)lw * sizeof(T) > dmax) dmax = (size_t)lw * sizeof(T);
    void *dwork, *hwork = malloc(hw > hw2 ? hw + 1 : hw2 + 1);
    CK(cudaMalloc(&dwork, dmax));
    for (int rep = 0; rep < 2; rep++) { // the first round warms up
        spd_kernel<T><<<(n * (long)n + 255) / 256, 256>>>(a, g, n);
        lap();
        CK(cusolverDnXpotrf(sol, NULL, CUBLAS_FILL_MODE_LOWER, n, dt, a, n, dt, dwork, dmax, hwork, hw, info));
        float t_potrf = lap();
        CK(cudaMemcpy(b, a, sizeof(T) * n * n, cudaMemcpyDeviceToDevice));
        lap();
        CK(cusolverDnXtrtri(sol, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, n, dt, b, n, dwork, dmax, hwork,
                            hw2, info));
        float t_trtri = lap();
        // trsm: L X = I
        spd_kernel<T><<<(n * (long)n + 255) / 256, 256>>>(b, g, n); // any matrix; set to identity below
        CK(cudaMemset(b, 0, sizeof(T) * n * n));
        lap();
        T one = 1;
        if (sizeof(T) == 8)
            CK(cublasDtrsm(blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT, n,
                           n, (double*)&one, (double*)a, n, (double*)b, n));
        else
            CK(cublasStrsm(blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT, n,
                           n, (float*)&one, (float*)a, n, (float*)b, n));
        float t_trsm = lap();
        if (sizeof(T) == 8)
            CK(cusolverDnDpotri(sol, CUBLAS_FILL_MODE_LOWER, n, (double*)a, n, (double*)dwork, lw, info));
        else
            CK(cusolverDnSpotri(sol, CUBLAS_FILL_MODE_LOWER, n, (float*)a, n, (float*)dwork, lw, info));
        float t_potri = lap();
        if (rep)
            printf("n %5d %s: potrf %7.2f ms, trtri %7.2f ms, trsm(identity) %7.2f ms, potri %7.2f ms "
                   "(potrf+trtri %.2f, potrf+potri+potrf %.2f)\n",
                   n, name, t_potrf, t_trtri, t_trsm, t_potri, t_potrf + t_trtri, 2 * t_potrf + t_potri);
    }
    cudaFree(a), cudaFree(b), cudaFree(info), cudaFree(dwork), free(hwork);
}

int main(void) {
    cusolverDnHandle_t sol;
    cublasHandle_t blas;
    CK(cusolverDnCreate(&sol));
    CK(cublasCreate(&blas));
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    cudaEventRecord(e0);
    int ns[2] = {4096, 12288};
    for (int k = 0; k < 2; k++) {
        int n = ns[k];
        float *x, *g;
        CK(cudaMalloc(&x, sizeof(float) * n * (long)n));
        CK(cudaMalloc(&g, sizeof(float) * n * (long)n));
        float* h = (float*)malloc(sizeof(float) * n * (long)n);
        srand(1);
        for (long i = 0; i < (long)n * n; i++) h[i] = (float)rand() / RAND_MAX - 0.5f;
        cudaMemcpy(x, h, sizeof(float) * n * (long)n, cudaMemcpyHostToDevice);
        float one = 1, zero = 0;
        CK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_T, n, n, n, &one, x, n, x, n, &zero, g, n));
        run<double>(sol, blas, g, n);
        run<float>(sol, blas, g, n);
        cudaFree(x), cudaFree(g), free(h);
    }
    return 0;
}

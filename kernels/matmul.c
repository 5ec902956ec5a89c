// y = x W^T on the CPU through OpenBLAS. CUDA side: cuBLAS in the engine, conversions in matmul.cu.
#include <cblas.h>

#include "matmul.h"

// OpenBLAS's own threading splits a GEMM differently for each thread count, and the results differ
// in the last bits. So the output columns are cut into blocks fixed by the shape alone, each block a
// single-threaded GEMM (OpenBLAS runs single-threaded inside an OpenMP region): every element is
// computed the same way whatever OMP_NUM_THREADS is, and so is every score.
static int col_block(int N) {
    int b = (N + 63) / 64;  // at most 64 blocks: the input is packed once per block
    b = (b + 15) / 16 * 16; // whole micro-kernel tiles
    return b < 64 ? 64 : b;
}

void matmul_forward(float* out, const float* in, const float* w, int M, int K, int N, float beta) {
    int B = col_block(N), nb = (N + B - 1) / B;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < nb; c++) {
        int n0 = c * B, nn = N - n0 < B ? N - n0 : B;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, nn, K, 1.0f, in, K, w + (long)n0 * K, K, beta,
                    out + n0, N);
    }
}

void matmul_backward_input(float* din, const float* dout, const float* w, int M, int K, int N, float beta) {
    int B = col_block(K), nb = (K + B - 1) / B;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < nb; c++) {
        int k0 = c * B, kk = K - k0 < B ? K - k0 : B;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, kk, N, 1.0f, dout, N, w + k0, K, beta,
                    din + k0, K);
    }
}

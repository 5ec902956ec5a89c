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

void matmul_grouped(float* y, const float* x, const float* w, long wstride, const int* offs, int E, int K,
                    int N, int bwd, float beta) {
    for (int e = 0; e < E; e++) {
        long r0 = offs[e];
        int n = offs[e + 1] - offs[e];
        if (n == 0) continue;
        if (bwd)
            matmul_backward_input(y + r0 * N, x + r0 * K, w + e * wstride, n, N, K, beta);
        else
            matmul_forward(y + r0 * N, x + r0 * K, w + e * wstride, n, K, N, beta);
    }
}

int matmul_grouped_tiles(int* tiles, const int* offs, int E) {
    int nt = 0, k = 0;
    for (int e = 0; e < E; e++) nt += (offs[e + 1] - offs[e] + GROUPED_ROWS - 1) / GROUPED_ROWS;
    for (int e = 0; e < E; e++)
        for (int r = offs[e]; r < offs[e + 1]; r += GROUPED_ROWS, k++) {
            tiles[k] = e;
            tiles[nt + k] = r;
            tiles[2 * nt + k] = offs[e + 1] - r < GROUPED_ROWS ? offs[e + 1] - r : GROUPED_ROWS;
        }
    return nt;
}

void matmul_grouped_i8(float* y, const int8_t* xq, const float* sx, const int8_t* wq, long wstride,
                       const float* sw, long swstride, const int* offs, int E, int K, int N) {
    for (int e = 0; e < E; e++)
#pragma omp parallel for schedule(static)
        for (int r = offs[e]; r < offs[e + 1]; r++)
            for (int c = 0; c < N; c++) {
                const int8_t *a = xq + (long)r * K, *b = wq + e * wstride + (long)c * K;
                int32_t acc = 0;
                for (int k = 0; k < K; k++) acc += (int32_t)a[k] * b[k];
                y[(long)r * N + c] = (float)acc * (sx[r] * sw[e * swstride + c]);
            }
}

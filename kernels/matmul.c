#include <cblas.h>

#include "kernels.h"

void matmul_forward(float* out, const float* in, const float* w, int M, int K, int N, float beta) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, in, K, w, K, beta, out, N);
}

void matmul_backward_input(float* din, const float* dout, const float* w, int M, int K, int N, float beta) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, dout, N, w, K, beta, din, K);
}

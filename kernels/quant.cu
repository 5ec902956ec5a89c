// SPEC §4 quantization as integers plus scales, so the quantized linear runs
// as an exact int8 GEMM. CPU twin: kernels/quant.c (which returns q * scale).
#include <math.h>

#include "cuda_common.cuh"
#include "gpu.h"

template <typename T> __device__ float load(const T* p, long i);
template <> __device__ float load<float>(const float* p, long i) { return p[i]; }
template <> __device__ float load<__nv_bfloat16>(const __nv_bfloat16* p, long i) {
    return __bfloat162float(p[i]);
}

template <typename T>
__global__ void quant_rows_kernel(int8_t* q, float* scale, const T* x, int cols, int bits, int narrow, int ct) {
    long base = (long)blockIdx.x * cols;
    float amax = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) amax = fmaxf(amax, fabsf(load(x, base + j)));
    amax = block_max(amax);
    float m = (float)((1 << (bits - 1)) - 1);
    float hi = m, lo = (narrow && !ct) ? -m : -m - 1.0f;
    float s = amax / (ct ? m + 0.5f : m);
    int zero = !(amax >= 5.9604644775390625e-08f);
    if (threadIdx.x == 0) scale[blockIdx.x] = zero ? 0.0f : s;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float r = zero ? 0.0f : rintf(load(x, base + j) / s);
        r = fminf(fmaxf(r, lo), hi);
        q[base + j] = (int8_t)r;
    }
}

__global__ void dequant_kernel(float* y, const int32_t* acc, const float* sx, const float* sw, int M, int N) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= (long)M * N) return;
    int r = (int)(i / N), c = (int)(i % N);
    y[i] = (float)acc[i] * (sx[r] * sw[c]);
}

extern "C" void gpu_quant_rows_f32(int8_t* q, float* scale, const float* x, int rows, int cols,
                                   QuantSpec spec) {
    quant_rows_kernel<float><<<rows, 256>>>(q, scale, x, cols, spec.bits, spec.narrow, spec.ct);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_quant_rows_bf16(int8_t* q, float* scale, const bf16_t* x, int rows, int cols,
                                    QuantSpec spec) {
    quant_rows_kernel<__nv_bfloat16>
        <<<rows, 256>>>(q, scale, (const __nv_bfloat16*)x, cols, spec.bits, spec.narrow, spec.ct);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_dequant(float* y, const int32_t* acc, const float* sx, const float* sw, int M, int N) {
    long n = (long)M * N;
    dequant_kernel<<<ceil_div(n, 256), 256>>>(y, acc, sx, sw, M, N);
    cudaCheck(cudaGetLastError());
}

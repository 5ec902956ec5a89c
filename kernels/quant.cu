// Quantization as integers plus scales, so the quantized linear runs as an exact int8 GEMM.
// CPU twin: kernels/quant.c (which returns q * scale).
#include <math.h>

#include "cuda_common.cuh"
#include "quant.h"

// One block per row, four consecutive values per thread (cols % 4 == 0, checked by the caller).
template <typename T>
__global__ void quant_rows_kernel(int8_t* q, float* scale, const T* x, int cols, int bits, int narrow, int ct) {
    long base = (long)blockIdx.x * cols;
    float amax = 0.0f, v[4];
    for (int j = 4 * threadIdx.x; j < cols; j += 4 * blockDim.x) {
        load4(x, base + j, v);
        amax = fmaxf(amax, fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3]))));
    }
    amax = block_max(amax);
    float m = (float)((1 << (bits - 1)) - 1);
    float hi = m, lo = (narrow && !ct) ? -m : -m - 1.0f;
    float s = amax / (ct ? m + 0.5f : m);
    int zero = !(amax >= 5.9604644775390625e-08f);
    if (threadIdx.x == 0) scale[blockIdx.x] = zero ? 0.0f : s;
    for (int j = 4 * threadIdx.x; j < cols; j += 4 * blockDim.x) {
        load4(x, base + j, v);
        char4 c;
        int8_t* cp = (int8_t*)&c;
        for (int k = 0; k < 4; k++) cp[k] = (int8_t)fminf(fmaxf(zero ? 0.0f : rintf(v[k] / s), lo), hi);
        *(char4*)(q + base + j) = c;
    }
}

__global__ void dequant_kernel(float* y, __nv_bfloat16* y16, const int32_t* acc, const float* sx,
                               const float* sw, int M, int N, int accumulate) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= (long)M * N) return;
    int r = (int)(i / N), c = (int)(i % N);
    float v = (float)acc[i] * (sx[r] * sw[c]);
    if (y16)
        y16[i] = __float2bfloat16(v);
    else
        y[i] = accumulate ? y[i] + v : v;
}

static void check_cols(int cols) {
    if (cols % 4) {
        fprintf(stderr, "autoq: row length %d not supported by the CUDA quantizer (a multiple of 4)\n", cols);
        exit(1);
    }
}

extern "C" void gpu_quant_rows_f32(int8_t* q, float* scale, const float* x, int rows, int cols,
                                   QuantSpec spec) {
    check_cols(cols);
    quant_rows_kernel<float><<<rows, 256>>>(q, scale, x, cols, spec.bits, spec.narrow, spec.ct);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_quant_rows_bf16(int8_t* q, float* scale, const bf16_t* x, int rows, int cols,
                                    QuantSpec spec) {
    check_cols(cols);
    quant_rows_kernel<__nv_bfloat16>
        <<<rows, 256>>>(q, scale, (const __nv_bfloat16*)x, cols, spec.bits, spec.narrow, spec.ct);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_dequant(float* y, bf16_t* y16, const int32_t* acc, const float* sx, const float* sw, int M,
                            int N, int accumulate) {
    long n = (long)M * N;
    dequant_kernel<<<ceil_div(n, 256), 256>>>(y, (__nv_bfloat16*)y16, acc, sx, sw, M, N, accumulate);
    cudaCheck(cudaGetLastError());
}

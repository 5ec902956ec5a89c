// Integer per-row quantization as integers plus scales, so the quantized linear runs as an exact int8 GEMM;
// every other format fake-quantized to fp32 values for the emulated (fp32-accumulated) GEMM.
// CPU twin: kernels/quant.c (which returns q * scale); both round through kernels/quant_math.h.
#include <math.h>

#include "cuda_common.cuh"
#include "quant.h"
#include "quant_math.h"

// One warp per row (QR_WARPS rows a block), four consecutive values per lane (cols % 4 == 0, checked
// by the caller): no block-wide barrier, since a block per row spent most of its time in them on
// rows of a few hundred values (the experts' weights, quantized per gradient batch).
#define QR_WARPS 8
template <typename T>
__global__ void quant_rows_kernel(int8_t* q, float* scale, const T* x, int rows, int cols, int bits, int narrow,
                                  int ct) {
    long row = blockIdx.x * (long)QR_WARPS + threadIdx.x / 32, base = row * cols;
    int lane = threadIdx.x % 32;
    if (row >= rows) return; // the whole warp
    float amax = 0.0f, v[4];
    for (int j = 4 * lane; j < cols; j += 128) {
        load4(x, base + j, v);
        amax = fmaxf(amax, fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3]))));
    }
    amax = warp_max(amax);
    float m = (float)((1 << (bits - 1)) - 1);
    float hi = m, lo = (narrow && !ct) ? -m : -m - 1.0f;
    float s = amax / (ct ? m + 0.5f : m);
    int zero = !(amax >= 5.9604644775390625e-08f);
    if (lane == 0) scale[row] = zero ? 0.0f : s;
    for (int j = 4 * lane; j < cols; j += 128) {
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
    quant_rows_kernel<float>
        <<<ceil_div(rows, QR_WARPS), 32 * QR_WARPS>>>(q, scale, x, rows, cols, spec.bits, spec.narrow, spec.ct);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_quant_rows_bf16(int8_t* q, float* scale, const bf16_t* x, int rows, int cols,
                                    QuantSpec spec) {
    check_cols(cols);
    quant_rows_kernel<__nv_bfloat16><<<ceil_div(rows, QR_WARPS), 32 * QR_WARPS>>>(
        q, scale, (const __nv_bfloat16*)x, rows, cols, spec.bits, spec.narrow, spec.ct);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_quant_rows_f16(int8_t* q, float* scale, const uint16_t* x, int rows, int cols,
                                   QuantSpec spec) {
    check_cols(cols);
    quant_rows_kernel<__half><<<ceil_div(rows, QR_WARPS), 32 * QR_WARPS>>>(
        q, scale, (const __half*)x, rows, cols, spec.bits, spec.narrow, spec.ct);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_dequant(float* y, bf16_t* y16, const int32_t* acc, const float* sx, const float* sw, int M,
                            int N, int accumulate) {
    long n = (long)M * N;
    dequant_kernel<<<ceil_div(n, 256), 256>>>(y, (__nv_bfloat16*)y16, acc, sx, sw, M, N, accumulate);
    cudaCheck(cudaGetLastError());
}

// The amax of a whole matrix into *amax (zeroed by the caller): non-negative floats order as their bits.
template <typename T> __global__ void tensor_amax_kernel(float* amax, const T* x, long n) {
    float m = 0.0f;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        m = fmaxf(m, fabsf(load(x, i)));
    m = block_max(m);
    if (threadIdx.x == 0) atomicMax((int*)amax, __float_as_int(m));
}

// One CUDA block per row. A row in one quantization block (block == 0) shares the row's amax; otherwise
// each thread takes whole blocks of `bs` values (the last may be shorter, as in quant.c). An NVFP4 global
// scale comes from *tensor_amax when given, else from the row.
template <typename T>
__global__ void fake_quant_kernel(float* out, const T* x, int cols, QuantSpec q, const float* tensor_amax) {
    long base = (long)blockIdx.x * cols;
    if (q.bits == 0) { // no quantizer: x as fp32
        for (int j = threadIdx.x; j < cols; j += blockDim.x) out[base + j] = load(x, base + j);
        return;
    }
    int nvfp4 = q.kind == QUANT_FP4_E2M1 && q.scale == QSCALE_E4M3;
    float row_amax = 0.0f;
    if (q.block == 0 || (nvfp4 && !tensor_amax)) {
        for (int j = threadIdx.x; j < cols; j += blockDim.x)
            row_amax = fmaxf(row_amax, fabsf(load(x, base + j)));
        row_amax = block_max(row_amax);
    }
    float gs = nvfp4 ? qm_nvfp4_global(tensor_amax ? *tensor_amax : row_amax) : 0.0f;
    if (q.block == 0) {
        for (int j = threadIdx.x; j < cols; j += blockDim.x)
            out[base + j] = qm_value(load(x, base + j), row_amax, gs, q);
        return;
    }
    for (int j0 = threadIdx.x * q.block; j0 < cols; j0 += blockDim.x * q.block) {
        int n = cols - j0 < q.block ? cols - j0 : q.block;
        float amax = 0.0f;
        for (int j = j0; j < j0 + n; j++) amax = fmaxf(amax, fabsf(load(x, base + j)));
        for (int j = j0; j < j0 + n; j++) out[base + j] = qm_value(load(x, base + j), amax, gs, q);
    }
}

template <typename T>
static void fake_quant(float* out, const T* x, int rows, int cols, QuantSpec q, int weight) {
    float* amax = NULL;
    if (weight && q.bits && q.kind == QUANT_FP4_E2M1 && q.scale == QSCALE_E4M3) {
        long n = (long)rows * cols;
        cudaCheck(cudaMalloc(&amax, sizeof(float)));
        cudaCheck(cudaMemset(amax, 0, sizeof(float)));
        int grid = ceil_div(n, 256);
        if (grid > 1024) grid = 1024; // grid-stride loop beyond
        tensor_amax_kernel<T><<<grid, 256>>>(amax, x, n);
        cudaCheck(cudaGetLastError());
    }
    fake_quant_kernel<T><<<rows, 256>>>(out, x, cols, q, amax);
    cudaCheck(cudaGetLastError());
    if (amax) cudaCheck(cudaFree(amax)); // cudaFree waits for the kernel: the plan is built once
}

extern "C" void gpu_fake_quant_f32(float* out, const float* x, int rows, int cols, QuantSpec q, int weight) {
    fake_quant<float>(out, x, rows, cols, q, weight);
}

extern "C" void gpu_fake_quant_bf16(float* out, const bf16_t* x, int rows, int cols, QuantSpec q, int weight) {
    fake_quant<__nv_bfloat16>(out, (const __nv_bfloat16*)x, rows, cols, q, weight);
}

extern "C" void gpu_fake_quant_f16(float* out, const uint16_t* x, int rows, int cols, QuantSpec q, int weight) {
    fake_quant<__half>(out, (const __half*)x, rows, cols, q, weight);
}

// A KV-cache value (gpu_kv_fake_quant): from fp32 when given, else bf16 hi + lo.
__device__ inline float kv_load(const float* xf, const __nv_bfloat16* hi, const __nv_bfloat16* lo, long i) {
    if (xf) return xf[i];
    return __bfloat162float(hi[i]) + (lo ? __bfloat162float(lo[i]) : 0.0f);
}

// Grid (blocks, nb): each window's amax (zeroed first) over its T rows of width values.
__global__ void kv_amax_kernel(float* amax, const float* xf, const __nv_bfloat16* hi, const __nv_bfloat16* lo,
                               long ld, int T, int width) {
    long n = (long)T * width, r0 = (long)blockIdx.y * T;
    float m = 0.0f;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        m = fmaxf(m, fabsf(kv_load(xf, hi, lo, (r0 + i / width) * ld + i % width)));
    m = block_max(m);
    if (threadIdx.x == 0) atomicMax((int*)amax + blockIdx.y, __float_as_int(m));
}

// One thread per quantization block of a row (bs values: NVFP4's 16 along head_dim, or 1 for E4M3's one
// per-tensor scale), as quant_kv_tensor: E4M3 from the window's amax, NVFP4 blocks under its global scale.
__global__ void kv_quant_kernel(float* yq, float* y, __nv_bfloat16* hi, __nv_bfloat16* lo, const float* xf,
                                long ld, long rows, int T, int width, int bs, QuantSpec q, const float* amax) {
    long nbk = width / bs, t = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (t >= rows * nbk) return;
    long r = t / nbk;
    int c0 = (int)(t % nbk) * bs;
    float wa = amax[r / T], gs = q.block ? qm_nvfp4_global(wa) : 0.0f, ba = wa;
    if (q.block) {
        ba = 0.0f;
        for (int j = c0; j < c0 + bs; j++) ba = fmaxf(ba, fabsf(kv_load(xf, hi, lo, r * ld + j)));
    }
    for (int j = c0; j < c0 + bs; j++) {
        float x = kv_load(xf, hi, lo, r * ld + j), v = qm_value(x, ba, gs, q);
        if (y) y[r * width + j] = x;
        if (yq) {
            yq[r * width + j] = v;
        } else { // back into the GEMM inputs: hi + lo carries v to ~16 bits
            __nv_bfloat16 h = __float2bfloat16(v);
            hi[r * ld + j] = h;
            if (lo) lo[r * ld + j] = __float2bfloat16(v - __bfloat162float(h));
        }
    }
}

extern "C" void gpu_kv_fake_quant(float* yq, float* y, bf16_t* hi, bf16_t* lo, const float* xf, long ld, int nb,
                                  int T, int width, QuantSpec q, float* amax) {
    int bs = q.block ? q.block : 1;
    if (width % bs) {
        fprintf(stderr, "autoq: KV-cache row of %d values not in blocks of %d\n", width, bs);
        exit(1);
    }
    __nv_bfloat16 *h = (__nv_bfloat16*)hi, *l = (__nv_bfloat16*)lo;
    cudaCheck(cudaMemsetAsync(amax, 0, sizeof(float) * nb));
    long n = (long)T * width, rows = (long)nb * T;
    int bx = (int)(ceil_div(n, 256) < 64 ? ceil_div(n, 256) : 64);
    kv_amax_kernel<<<dim3(bx, nb), 256>>>(amax, xf, h, l, ld, T, width);
    cudaCheck(cudaGetLastError());
    long nt = rows * (width / bs);
    kv_quant_kernel<<<ceil_div(nt, 256), 256>>>(yq, y, h, l, xf, ld, rows, T, width, bs, q, amax);
    cudaCheck(cudaGetLastError());
}

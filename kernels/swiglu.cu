// SwiGLU forward (fp32 with its bf16 halves, and bf16 in / out) and backward. CPU twin: kernels/swiglu.c.
#include <math.h>

#include "cuda_common.cuh"
#include "swiglu.h"

// Four consecutive elements per thread (n % 4 == 0, checked by the caller).
template <typename T>
__global__ void swiglu_kernel(float* out, __nv_bfloat16* hi, __nv_bfloat16* lo, const T* g, const T* u, long n,
                              int f16) {
    long i = 4 * (blockIdx.x * (long)blockDim.x + threadIdx.x);
    if (i >= n) return;
    float gv[4], uv[4];
    load4(g, i, gv);
    load4(u, i, uv);
    for (int k = 0; k < 4; k++) {
        gv[k] = gv[k] / (1.0f + expf(-gv[k])) * uv[k];
        store_split(hi, lo, i + k, gv[k], f16);
    }
    if (out) *(float4*)(out + i) = make_float4(gv[0], gv[1], gv[2], gv[3]);
}

// bf16 in and out, eight elements per thread (16-byte accesses; n % 8 == 0).
__global__ void swiglu8_kernel(__nv_bfloat16* out, const __nv_bfloat16* g, const __nv_bfloat16* u, long n) {
    long i = 8 * (blockIdx.x * (long)blockDim.x + threadIdx.x);
    if (i >= n) return;
    uint4 gv = *(const uint4*)(g + i), uv = *(const uint4*)(u + i), ov;
    const __nv_bfloat162 *gp = (const __nv_bfloat162*)&gv, *up = (const __nv_bfloat162*)&uv;
    __nv_bfloat162* op = (__nv_bfloat162*)&ov;
    for (int k = 0; k < 4; k++) {
        float2 a = __bfloat1622float2(gp[k]), b = __bfloat1622float2(up[k]);
        op[k] = __floats2bfloat162_rn(a.x / (1.0f + expf(-a.x)) * b.x, a.y / (1.0f + expf(-a.y)) * b.y);
    }
    *(uint4*)(out + i) = ov;
}

static void check_four(long n) {
    if (n % 4) {
        fprintf(stderr, "autoq: intermediate size not supported by the CUDA SwiGLU (a multiple of 4)\n");
        exit(1);
    }
}

extern "C" void gpu_swiglu(float* out, bf16_t* hi, bf16_t* lo, const float* g, const float* u, long n,
                           int f16) {
    check_four(n);
    swiglu_kernel<float>
        <<<ceil_div(n / 4, 256), 256>>>(out, (__nv_bfloat16*)hi, (__nv_bfloat16*)lo, g, u, n, f16);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_swiglu_bf16(bf16_t* out, const bf16_t* g, const bf16_t* u, long n) {
    if (n % 8 == 0) {
        swiglu8_kernel<<<ceil_div(n / 8, 256), 256>>>((__nv_bfloat16*)out, (const __nv_bfloat16*)g,
                                                      (const __nv_bfloat16*)u, n);
    } else {
        check_four(n);
        swiglu_kernel<__nv_bfloat16><<<ceil_div(n / 4, 256), 256>>>(
            NULL, (__nv_bfloat16*)out, NULL, (const __nv_bfloat16*)g, (const __nv_bfloat16*)u, n, 0);
    }
    cudaCheck(cudaGetLastError());
}

__global__ void swiglu_bwd_kernel(float* dg, float* du, const float* dout, const float* g, const float* u,
                                  long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    float sig = 1.0f / (1.0f + expf(-g[i]));
    du[i] = dout[i] * g[i] * sig;
    dg[i] = dout[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
}

extern "C" void gpu_swiglu_backward(float* dg, float* du, const float* dout, const float* g, const float* u,
                                    long n) {
    swiglu_bwd_kernel<<<ceil_div(n, 256), 256>>>(dg, du, dout, g, u, n);
    cudaCheck(cudaGetLastError());
}

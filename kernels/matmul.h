// y = x W^T, the shape of every nn.Linear, and what feeds the GPU's GEMMs. CPU matmul.c (OpenBLAS);
// the GPU's dense GEMMs are cuBLAS calls in the engine; matmul.cu holds the conversions around them
// and the grouped GEMM of a sparse layer's experts (cuBLAS's grouped GEMM has no bf16-in, fp32-out
// form).
#pragma once
#include <stdint.h>

#include "bf16.h"

#ifdef __cplusplus
extern "C" {
#endif

// out (M, N) = in (M, K) . w (N, K)^T ; beta 0 overwrites, 1 accumulates
void matmul_forward(float* out, const float* in, const float* w, int M, int K, int N, float beta);
// din (M, K) = dout (M, N) . w (N, K) ; beta 0 overwrites, 1 accumulates
void matmul_backward_input(float* din, const float* dout, const float* w, int M, int K, int N, float beta);

// The experts' GEMMs (README §3): group e owns rows offs[e] .. offs[e+1]-1 of x (rows, K) and y
// (rows, N) and the weight w + e * wstride. y's rows (+)= x's rows . W_e^T with W_e (N, K), or with
// bwd x's rows . W_e with W_e (K, N) (the input gradient of the forward's linear).
void matmul_grouped(float* y, const float* x, const float* w, long wstride, const int* offs, int E, int K,
                    int N, int bwd, float beta);
// The GPU's tiles: GROUPED_ROWS rows of one group each, tiles (3, nt) = group, first row, rows;
// returns nt (at most rows / GROUPED_ROWS + E).
#define GROUPED_ROWS 128
int matmul_grouped_tiles(int* tiles, const int* offs, int E);
// GPU (tiles on the device, nt of them): x = hi + lo bf16 (lo may be NULL), w bf16; y fp32, or y16
// bf16 with beta 0. Tensor cores, fp32 accumulation; K a multiple of 16 and N of 8. The persistent TMA
// kernel (or wgmma) on compute capability 9.0, mma.sync elsewhere or with AUTOQ_MOE_GEMM=mma (the same
// sums, in the same order).
// With f16, x and w hold fp16 values (the fp16 GEMM mode; no lo, no y16).
void gpu_matmul_grouped(float* y, bf16_t* y16, const bf16_t* xhi, const bf16_t* xlo, const bf16_t* w,
                        long wstride, const int* tiles, int nt, int K, int N, int bwd, float beta, int f16);

// Which kernel served this thread's last grouped GEMM (either form): "tma-pingpong" or
// "tma-cooperative" (the persistent TMA kernel, sm_90a, and its schedule), "wgmma", "mma" (mma.sync /
// WMMA), or "" before the first. AUTOQ_MOE_GEMM=tma (the schedule by shape), tma-pingpong,
// tma-cooperative, wgmma or mma asks for one; unset, tma on compute capability 9.0; tma falls back to
// wgmma where a tensor-map descriptor cannot describe the operands (told once on stderr).
const char* gpu_matmul_grouped_kernel(void);

// The same with int8 codes (the quantized experts, README §4): y's rows = (x's codes . W_e's codes^T)
// * sx[row] * sw[e * swstride + column], exactly as the dequantized int32 GEMM of kernels/quant.h.
void matmul_grouped_i8(float* y, const int8_t* xq, const float* sx, const int8_t* wq, long wstride,
                       const float* sw, long swstride, const int* offs, int E, int K, int N);
// GPU (tiles as above): K a multiple of 16, N of 8.
void gpu_matmul_grouped_i8(float* y, const int8_t* xq, const float* sx, const int8_t* wq, long wstride,
                           const float* sw, long swstride, const int* tiles, int nt, int K, int N);

// x = hi + lo, both bf16 (lo may be NULL): bf16 GEMMs on both halves keep ~16 mantissa bits of x.
// Producers of a GEMM input also write it as bf16 hi (+ lo) when hi is not NULL.
void gpu_split_bf16(bf16_t* hi, bf16_t* lo, const float* x, long n);
// out (n) = x rounded to fp16 (raw bits): the GEMM inputs of the fp16 mode
void gpu_round_f16(uint16_t* out, const float* x, long n);
// w (n) bf16 rewritten in place as fp16 (raw bits), for the fp16 mode's GEMMs; returns how many values
// fall outside fp16's range (they became infinities), waiting for the count
long gpu_bf16_to_f16(uint16_t* w, long n);
void gpu_add(float* h, const float* y, long n); // h += y (a residual add)

#ifdef __cplusplus
}
#endif

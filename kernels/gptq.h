// GPTQ (README, "GPTQ"): int4 / int8 per-channel weights whose rounding errors are compensated
// column by column through the inverse Hessian of the layer's inputs, as llm-compressor's
// GPTQModifier does for a channel-wise scheme. CPU gptq.c is the reference (LAPACK for the
// factorisations); CUDA gptq.cu is its twin (cuSOLVER + cuBLAS).
#pragma once
#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

// Activation ordering: none, or columns by descending Hessian diagonal. With per-channel scales
// llm-compressor's "static" and "group" (alias "weight") orders quantize identically.
typedef enum { GPTQ_ORDER_NONE, GPTQ_ORDER_STATIC, GPTQ_ORDER_GROUP } GptqOrder;

typedef struct {
    double damp;     // added to the diagonal, as a fraction of its mean (llm-compressor dampening_frac)
    GptqOrder order; // default GPTQ_ORDER_STATIC, llm-compressor's default
    int block;       // columns per lazy-update block (128)
} GptqOpts;
extern const GptqOpts gptq_defaults;

// The input statistics of one linear (or of linears sharing an input): xtx (n, n) = sum of x x^T
// over every token seen (upper triangle kept), tokens their count. The Hessian is 2 xtx / tokens.
typedef struct {
    int n;
    long tokens;
    float* xtx; // (n, n) row-major, upper triangle (j >= i) valid
} Hessian;
void hessian_init(Hessian* h, int n);
void hessian_free(Hessian* h);
// x (T, n): adds T tokens.
void hessian_add(Hessian* h, const float* x, int T);
// h (n, n) full symmetric = 2 xtx / tokens (what gptq_quantize takes).
void hessian_get(const Hessian* h, float* out);

// wq (rows, cols) = GPTQ-quantized w (rows, cols): dequantized values code * scale, scale (rows)
// given (a checkpoint's scales in its dtype) or NULL for RTN's scale of each original row, as
// llm-compressor's observer fixes it before GPTQ; under the Hessian h (cols, cols, symmetric; any
// positive multiple gives the same result). Dead columns (zero diagonal) come out zero. Returns 1
// when the dampened Hessian is not positive definite: wq is then round-to-nearest, as
// llm-compressor falls back to; 0 otherwise.
int gptq_quantize(float* wq, const float* w, const float* h, int rows, int cols, QuantSpec q, GptqOpts o,
                  const float* scale);

// The steps gptq_quantize shares with its CUDA twin.
// perm (cols): the column order (identity, or descending diag, the Hessian's diagonal, ties by index).
void gptq_order(int* perm, const float* diag, int cols, GptqOrder order);
// hp (cols, cols) double = h permuted, dead diagonal set to 1 and dampened; dead (cols) marks
// the permuted columns whose diagonal was zero.
void gptq_prepare(double* hp, unsigned char* dead, const float* h, const int* perm, int cols, double damp);
// scale (rows): given, or RTN's of each original row of w.
void gptq_row_scales(float* out, const float* given, const float* w, int rows, int cols, QuantSpec q);

// GPU twin, host pointers in and out (uploads, runs, downloads); same contract as gptq_quantize.
int gpu_gptq_quantize(float* wq, const float* w, const float* h, int rows, int cols, QuantSpec q, GptqOpts o,
                      const float* scale);

// ---- the GPU steps on device pointers (gptq.cu), for a pipeline that keeps everything on the card ----
// A Hessian ordered, dampened and factorised once for every linear that reads its input (q/k/v,
// gate/up): the buffers are sized for up to cap columns.
typedef struct {
    int n, cap;
    int* perm;           // (n) device: column i of the order is input column perm[i]
    unsigned char* dead; // (n) device, by position in the order: no token used the input
    float* u;            // (n, n) device row-major: upper Cholesky factor of the inverse Hessian
    double* a;           // (n, n) device: the ordered, dampened Hessian, then its factor
    double* t;           // (cap / 2 + 1)^2 device: the triangular inverse's scratch
    void *work, *hwork;  // cuSOLVER's device and host workspaces
    size_t work_bytes, hwork_bytes;
    int* info;            // (2) device: potrf's, then the triangular inverse's scratch
    int* hinfo;           // (1) pinned: potrf's, once the stream reaches it
    float* hdiag;         // (cap) host
    int* hperm;           // (cap) pinned host
    unsigned char* hdead; // (cap) pinned host
    int finite;           // the diagonal was finite
    float k;              // the sums' scale (2 / tokens)
    double damp;          // the dampening added to the ordered diagonal
} GpuGptqFactor;
void gpu_gptq_factor_init(GpuGptqFactor* f, int cap);
void gpu_gptq_factor_free(GpuGptqFactor* f);
// From xtx (n, n) device, symmetric sums of x x^T: the Hessian k xtx (k = 2 / tokens, as hessian_get)
// ordered and dampened as gptq_order and gptq_prepare do, then factorised in fp64 (on the default
// stream, as is every step here). gpu_gptq_fallback then says whether the dampened Hessian was not
// positive definite (u is then the identity: round-to-nearest), waiting for the stream.
void gpu_gptq_factor(GpuGptqFactor* f, const float* xtx, float k, int n, GptqOpts o);
// gpu_gptq_factor in its two halves: the host's (the diagonal read back, the order and the dampening;
// it waits for the stream) and the device's (queued: the host goes on). A pipeline prepares every site
// first, then queues the factorisations and column loops of a whole layer without waiting.
void gpu_gptq_prepare(GpuGptqFactor* f, const float* xtx, float k, int n, GptqOpts o);
void gpu_gptq_factorise(GpuGptqFactor* f, const float* xtx);
int gpu_gptq_fallback(GpuGptqFactor* f);
// W (rows, n) device fp32 = w (rows, n) device (bf16 when w_bf16, else fp32) in f's column order, dead
// columns zeroed: GPTQ's working copy.
void gpu_gptq_load(float* W, const void* w, int w_bf16, int rows, const GpuGptqFactor* f);
// GPTQ of the working copy W (rows, n; consumed) on the row scales (rows): codes (rows, n) int8 in the
// input's column order; err (rows, GPTQ_ERR_COLS) device scratch.
#define GPTQ_ERR_COLS 1024
void gpu_gptq_run(int8_t* codes, float* W, float* err, const float* scale, int rows, const GpuGptqFactor* f,
                  QuantSpec q, int block);
// With AUTOQ_GPU_PROFILE=1 (each step then synchronises): GPU time per step so far, on stderr.
void gpu_gptq_profile_report(void);
// w (rows, cols) bf16 device = codes * scale rounded to bf16 (a quantized layer for the next passes).
void gpu_gptq_dequant_bf16(void* w, const int8_t* codes, const float* scale, int rows, int cols);

#ifdef __cplusplus
}
#endif

// GPTQ on the GPU: the twin of kernels/gptq.c (tests/test_gpu_ops.c compares them). The Hessian is
// ordered and dampened on the device, factorised in fp64 (cuSOLVER's potrf, a triangular inverse by
// GEMMs) and reused by every linear that reads the same input; the column loop runs one warp per row,
// each block's error pushed to the rest of its super-block, and past it, by cuBLAS GEMMs. The codes come out in
// int8, so a pipeline can keep weights, Hessians and codes on the card (scoring/gptq_gpu.cu).
#include <cusolverDn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"
#include "gptq.h"
#include "quant_math.h"

#define cusolverCheck(call)                                                                                    \
    do {                                                                                                       \
        cusolverStatus_t s_ = (call);                                                                          \
        if (s_ != CUSOLVER_STATUS_SUCCESS) {                                                                   \
            fprintf(stderr, "autoq: cuSOLVER error %d at %s:%d\n", (int)s_, __FILE__, __LINE__);               \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

// AUTOQ_GPU_PROFILE=1: GPU time per step (cuda events), printed by gpu_gptq_profile_report.
enum { GP_GATHER, GP_POTRF, GP_TRTRI, GP_UPPER, GP_COLUMNS, GP_GEMM, GP_N };
static const char* gp_names[GP_N] = {"order+dampen", "potrf", "trtri", "upper", "column kernel", "update GEMM"};
static double gp_ms[GP_N];
static int gp_on = -1;
static cudaEvent_t gp_ev[2];
// Charges the time since the previous mark (or since -1's) to part.
static void gp_mark(int part) {
    if (gp_on < 0) {
        const char* v = getenv("AUTOQ_GPU_PROFILE");
        gp_on = v && *v && strcmp(v, "0") != 0;
        if (gp_on) cudaEventCreate(&gp_ev[0]), cudaEventCreate(&gp_ev[1]);
    }
    if (!gp_on) return;
    cudaCheck(cudaEventRecord(gp_ev[1]));
    cudaCheck(cudaEventSynchronize(gp_ev[1]));
    float ms = 0;
    if (part >= 0) cudaCheck(cudaEventElapsedTime(&ms, gp_ev[0], gp_ev[1]));
    if (part >= 0) gp_ms[part] += ms;
    cudaCheck(cudaEventRecord(gp_ev[0]));
}

extern "C" void gpu_gptq_profile_report(void) {
    if (gp_on <= 0) return;
    fprintf(stderr, "autoq: gptq GPU profile:");
    for (int i = 0; i < GP_N; i++)
        fprintf(stderr, " %s %.0f ms%s", gp_names[i], gp_ms[i], i + 1 < GP_N ? "," : "\n");
}

#define TRTRI_LEAF 512 // lower_inverse hands blocks this small to cuSOLVER's trtri

// One cuSOLVER and one cuBLAS handle for every call (creating them costs milliseconds each). Everything
// runs on the default stream: on an H200 the fp64 factorisations and the fp32 column loops of other
// sites did not overlap when given streams of their own (each kind fills the card).
static cusolverDnHandle_t g_sol;
static cublasHandle_t g_blas;
static void handles_init(void) {
    if (g_sol) return;
    cusolverCheck(cusolverDnCreate(&g_sol));
    cublasCheck(cublasCreate(&g_blas));
}

static void* host_alloc(size_t bytes) {
    void* p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "autoq: out of memory (%zu bytes for GPTQ)\n", bytes);
        exit(1);
    }
    return p;
}

extern "C" void gpu_gptq_factor_init(GpuGptqFactor* f, int cap) {
    handles_init();
    memset(f, 0, sizeof(*f));
    f->cap = cap;
    size_t nn = (size_t)cap * cap;
    cudaCheck(cudaMalloc(&f->perm, sizeof(int) * cap));
    cudaCheck(cudaMalloc(&f->dead, cap));
    cudaCheck(cudaMalloc(&f->u, sizeof(float) * nn));
    cudaCheck(cudaMalloc(&f->a, sizeof(double) * nn));
    cudaCheck(cudaMalloc(&f->t, sizeof(double) * ((size_t)cap / 2 + 1) * ((size_t)cap / 2 + 1)));
    cudaCheck(cudaMalloc(&f->info, 2 * sizeof(int)));
    cudaCheck(cudaMallocHost(&f->hinfo, sizeof(int)));
    int lw = 0;
    cusolverCheck(cusolverDnDpotrf_bufferSize(g_sol, CUBLAS_FILL_MODE_LOWER, cap, f->a, cap, &lw));
    size_t dev = 0, host = 0;
    cusolverCheck(cusolverDnXtrtri_bufferSize(g_sol, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, cap,
                                              CUDA_R_64F, f->a, cap, &dev, &host));
    f->work_bytes = sizeof(double) * (size_t)lw > dev ? sizeof(double) * (size_t)lw : dev;
    f->hwork_bytes = host;
    cudaCheck(cudaMalloc(&f->work, f->work_bytes ? f->work_bytes : 1));
    f->hwork = host_alloc(host);
    f->hdiag = (float*)host_alloc(sizeof(float) * cap);
    cudaCheck(cudaMallocHost(&f->hperm, sizeof(int) * cap)); // pinned: copied up without waiting
    cudaCheck(cudaMallocHost(&f->hdead, cap));
}

extern "C" void gpu_gptq_factor_free(GpuGptqFactor* f) {
    cudaFree(f->perm);
    cudaFree(f->dead);
    cudaFree(f->u);
    cudaFree(f->a);
    cudaFree(f->t);
    cudaFree(f->info);
    cudaFreeHost(f->hinfo);
    cudaFree(f->work);
    free(f->hwork);
    free(f->hdiag);
    cudaFreeHost(f->hperm);
    cudaFreeHost(f->hdead);
    memset(f, 0, sizeof(*f));
}

// a (n, n) = J Hp J, Hp the ordered, dampened Hessian (gptq_prepare's hp) and J the reversal: the
// lower Cholesky factor L of J Hp J gives Hp^-1's upper factor as J L^-1 J (one factorisation and one
// triangular inverse where potrf, potri, potrf take twice the work). Symmetric, so either layout.
__global__ void gptq_gather_kernel(double* a, const float* xtx, float k, const int* perm,
                                   const unsigned char* dead, double damp, int n) {
    long idx = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (idx >= (long)n * n) return;
    int i = n - 1 - (int)(idx % n), j = n - 1 - (int)(idx / n); // positions in the order
    int p = perm[i], q = perm[j], lo = p < q ? p : q, hi = p < q ? q : p;
    double v = (double)(k * xtx[(long)lo * n + hi]); // the upper triangle, as hessian_get reads it
    if (i == j) v = (dead[i] ? 1.0 : v) + damp;
    a[idx] = v;
}

// u (n, n) row-major upper: U[i][j] = Linv[n-1-i][n-1-j] (Linv column-major lower in a), or the
// identity when the factorisation failed (*info != 0; a was then inverted all the same, in vain).
__global__ void gptq_upper_kernel(float* u, const double* a, int n, const int* info) {
    long idx = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (idx >= (long)n * n) return;
    int i = (int)(idx / n), j = (int)(idx % n);
    u[idx] = j < i ? 0.0f : *info ? (float)(i == j) : (float)a[(long)(n - 1 - i) + (long)(n - 1 - j) * n];
}

// a (n, n) column-major: its strict upper triangle zeroed (a full matrix for lower_inverse's GEMMs).
__global__ void zero_upper_kernel(double* a, int n) {
    long idx = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (idx < (long)n * n && idx % n < idx / n) a[idx] = 0.0;
}

// a (n, n) column-major lower triangular (zeros above) with leading dimension lda, replaced by its
// inverse: halves recursively, inv [A 0; B C] = [A^-1 0; -C^-1 B A^-1, C^-1], the off-diagonal block by
// two fp64 GEMMs (twice trmm's products, at the tensor cores' rate), through f->t; cuSOLVER's trtri at
// 512 columns and below. (On an H200, cuSOLVER's trtri of a 12288 matrix alone took 101 ms, potrf 18 ms:
// bench/gptq_factor_bench.cu.) The diagonal is positive (a Cholesky factor): nothing to fail.
static void lower_inverse(GpuGptqFactor* f, double* a, int n, int lda) {
    if (n <= TRTRI_LEAF) {
        cusolverCheck(cusolverDnXtrtri(g_sol, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, n, CUDA_R_64F, a,
                                       lda, f->work, f->work_bytes, f->hwork, f->hwork_bytes, f->info + 1));
        return;
    }
    int n1 = n / 2, n2 = n - n1;
    double *a11 = a, *a21 = a + n1, *a22 = a + n1 + (long)n1 * lda;
    lower_inverse(f, a11, n1, lda);
    lower_inverse(f, a22, n2, lda);
    const double one = 1.0, minus_one = -1.0, zero = 0.0;
    cublasCheck(cublasDgemm(g_blas, CUBLAS_OP_N, CUBLAS_OP_N, n2, n1, n1, &one, a21, lda, a11, lda, &zero, f->t,
                            n2)); // B A^-1
    cublasCheck(cublasDgemm(g_blas, CUBLAS_OP_N, CUBLAS_OP_N, n2, n1, n2, &minus_one, a22, lda, f->t, n2, &zero,
                            a21, lda)); // -C^-1 (B A^-1)
}

// Every diagonal block of size b (<= LEAF_MAX) of a (n, n) column-major lower triangular, inverted in
// place, one thread block each: thread j computes column j of the block's inverse by forward
// substitution, all threads in step over the rows so that each reads the same L[i][k] (a broadcast).
#define LEAF_MAX 96
#define TRMM_PAIRS 4 // levels with this few joins multiply by the triangles (trmm); the rest batch GEMMs
__global__ void gptq_leaf_inverse_kernel(double* a, int n, int b) {
    extern __shared__ double sm[]; // L (b, b) then X (b, b), row i at i * b
    double *L = sm, *X = sm + b * b;
    double* blk = a + (long)blockIdx.x * b * (n + 1);
    int j = threadIdx.x;
    for (int k = threadIdx.x; k < b * b; k += blockDim.x)
        L[(k % b) * b + k / b] = blk[(long)(k / b) * n + k % b];
    __syncthreads();
    if (j >= b) return;
    for (int i = 0; i < b; i++) {
        double v = i == j ? 1.0 : 0.0;
        for (int q = 0; q < i; q++) v -= L[i * b + q] * X[q * b + j]; // X[q][j] = 0 for q < j
        X[i * b + j] = i < j ? 0.0 : v / L[i * b + i];
    }
    for (int i = j; i < b; i++) blk[i + (long)j * n] = X[i * b + j];
}

// The inverse of a (n, n) column-major lower triangular when n = b 2^levels with b <= LEAF_MAX: the
// diagonal blocks of b at once, then level by level every pair of inverted neighbours [A 0; B C] joined
// by two fp64 products (B := -C^-1 B A^-1, through f->t): strided-batched GEMMs while the joins are
// many and small, trmm (half a GEMM's products) for the last few large ones. A few dozen launches where
// lower_inverse's recursion takes one cuSOLVER trtri per leaf (milliseconds each at these sizes).
// Returns 0 when n has no such form.
static int lower_inverse_batched(GpuGptqFactor* f, double* a, int n) {
    int b = n;
    while (b > LEAF_MAX && b % 2 == 0) b /= 2;
    if (b > LEAF_MAX) return 0;
    size_t smem = 2 * sizeof(double) * b * b;
    cudaCheck(
        cudaFuncSetAttribute(gptq_leaf_inverse_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    gptq_leaf_inverse_kernel<<<n / b, (b + 31) / 32 * 32, smem>>>(a, n, b);
    cudaCheck(cudaGetLastError());
    const double one = 1.0, minus_one = -1.0, zero = 0.0;
    for (int sz = b; sz < n; sz *= 2) {
        int pairs = n / (2 * sz);
        long step = 2L * sz * (n + 1), ts = (long)sz * sz;
        double *a11 = a, *a21 = a + sz, *a22 = a + sz + (long)sz * n;
        if (pairs > TRMM_PAIRS) { // many small joins: batched GEMMs (the zeros multiplied too)
            cublasCheck(cublasDgemmStridedBatched(g_blas, CUBLAS_OP_N, CUBLAS_OP_N, sz, sz, sz, &one, a21, n,
                                                  step, a11, n, step, &zero, f->t, sz, ts, pairs)); // B A^-1
            cublasCheck(cublasDgemmStridedBatched(g_blas, CUBLAS_OP_N, CUBLAS_OP_N, sz, sz, sz, &minus_one, a22,
                                                  n, step, f->t, sz, ts, &zero, a21, n, step,
                                                  pairs)); // -C^-1 .
            continue;
        }
        for (int p = 0; p < pairs; p++) { // the few large ones, most of the work: half the products
            long o = p * step;
            cublasCheck(cublasDtrmm(g_blas, CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                                    CUBLAS_DIAG_NON_UNIT, sz, sz, &one, a11 + o, n, a21 + o, n, f->t, sz));
            cublasCheck(cublasDtrmm(g_blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                                    CUBLAS_DIAG_NON_UNIT, sz, sz, &minus_one, a22 + o, n, f->t, sz, a21 + o,
                                    n));
        }
    }
    return 1;
}

extern "C" void gpu_gptq_prepare(GpuGptqFactor* f, const float* xtx, float k, int n, GptqOpts o) {
    if (n > f->cap) {
        fprintf(stderr, "autoq: internal: GPTQ factor of %d columns in buffers for %d\n", n, f->cap);
        exit(1);
    }
    f->n = n;
    f->k = k;
    // the diagonal to the host: the order and the dampening's mean, in gptq_prepare's arithmetic
    cudaCheck(cudaMemcpy2DAsync(f->hdiag, sizeof(float), xtx, sizeof(float) * (n + 1), sizeof(float), n,
                                cudaMemcpyDeviceToHost, 0));
    cudaCheck(cudaStreamSynchronize(0));
    int finite = 1;
    for (int i = 0; i < n; i++) f->hdiag[i] *= k, finite &= isfinite(f->hdiag[i]) != 0;
    gptq_order(f->hperm, f->hdiag, n, o.order);
    double mean = 0;
    for (int a = 0; a < n; a++) {
        double d = (double)f->hdiag[f->hperm[a]];
        f->hdead[a] = d == 0.0;
        mean += f->hdead[a] ? 1.0 : d;
    }
    f->damp = o.damp * (mean / n);
    f->finite = finite;
}

extern "C" void gpu_gptq_factorise(GpuGptqFactor* f, const float* xtx) {
    int n = f->n;
    gp_mark(-1);
    cudaCheck(cudaMemcpyAsync(f->perm, f->hperm, sizeof(int) * n, cudaMemcpyHostToDevice, 0)); // pinned
    cudaCheck(cudaMemcpyAsync(f->dead, f->hdead, n, cudaMemcpyHostToDevice, 0));
    long nn = (long)n * n;
    gptq_gather_kernel<<<ceil_div(nn, 256), 256>>>(f->a, xtx, f->k, f->perm, f->dead, f->damp, n);
    cudaCheck(cudaGetLastError());
    gp_mark(GP_GATHER);
    // Nothing waits on the host for potrf's verdict: the inverse runs either way and the upper kernel
    // writes the identity where it failed. A NaN or Inf diagonal (LAPACK's potrf stops at it; cuSOLVER's
    // need not) fails it too: round-to-nearest.
    int lw = (int)(f->work_bytes / sizeof(double));
    if (f->finite)
        cusolverCheck(
            cusolverDnDpotrf(g_sol, CUBLAS_FILL_MODE_LOWER, n, f->a, n, (double*)f->work, lw, f->info));
    else
        cudaCheck(cudaMemsetAsync(f->info, 0x01, sizeof(int), 0)); // nonzero
    cudaCheck(cudaMemcpyAsync(f->hinfo, f->info, sizeof(int), cudaMemcpyDeviceToHost, 0));
    gp_mark(GP_POTRF);
    if (f->finite) {
        zero_upper_kernel<<<ceil_div(nn, 256), 256>>>(f->a, n);
        cudaCheck(cudaGetLastError());
        if (!lower_inverse_batched(f, f->a, n)) lower_inverse(f, f->a, n, n);
    }
    gp_mark(GP_TRTRI);
    gptq_upper_kernel<<<ceil_div(nn, 256), 256>>>(f->u, f->a, n, f->info);
    cudaCheck(cudaGetLastError());
    gp_mark(GP_UPPER);
}

extern "C" void gpu_gptq_factor(GpuGptqFactor* f, const float* xtx, float k, int n, GptqOpts o) {
    gpu_gptq_prepare(f, xtx, k, n, o);
    gpu_gptq_factorise(f, xtx);
}

extern "C" int gpu_gptq_fallback(GpuGptqFactor* f) {
    cudaCheck(cudaStreamSynchronize(0));
    return *f->hinfo != 0; // potrf's info, or the nonzero put there for a diagonal that is not finite
}

template <typename T>
__global__ void gptq_load_kernel(float* W, const T* w, const int* perm, const unsigned char* dead, int rows,
                                 int n) {
    long idx = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (idx >= (long)rows * n) return;
    long r = idx / n;
    int k = (int)(idx % n);
    W[idx] = dead[k] ? 0.0f : (float)w[r * n + perm[k]];
}

extern "C" void gpu_gptq_load(float* W, const void* w, int w_bf16, int rows, const GpuGptqFactor* f) {
    long n = (long)rows * f->n;
    if (w_bf16)
        gptq_load_kernel<<<ceil_div(n, 256), 256>>>(W, (const __nv_bfloat16*)w, f->perm, f->dead, rows, f->n);
    else
        gptq_load_kernel<<<ceil_div(n, 256), 256>>>(W, (const float*)w, f->perm, f->dead, rows, f->n);
    cudaCheck(cudaGetLastError());
}

// One warp per row, GPTQ_WARPS rows per thread block: the row's block of columns i1..i2-1 sits in
// registers, column j in lane j % 32 (B <= 128: four per lane). Each column in turn: its owner lane
// broadcasts it, every lane rounds it and pushes its error into its own later columns; err (rows, B)
// keeps the scaled errors for the GEMM, the codes go to their input column. u's triangle for the block
// is in shared memory (lane-consecutive columns: no bank conflicts). The arithmetic is
// quant_value_scaled's and gptq.c's, every product and difference rounded on its own (no FMA
// contraction), as the CPU computes them.
#define GPTQ_WARPS 16
#define GPTQ_KMAX 4 // columns per lane: blocks of up to 128 columns

__global__ void gptq_block_kernel(int8_t* codes, const float* W, float* err, int ld_err, const float* u,
                                  const float* scale, const int* perm, int rows, int cols, int i1, int i2,
                                  int B, QuantSpec q) {
    extern __shared__ float us[]; // (nb, B) u[i1 + i][i1 + j]
    int nb = i2 - i1, lane = threadIdx.x & 31, r = blockIdx.x * GPTQ_WARPS + (threadIdx.x >> 5);
    for (int k = threadIdx.x; k < nb * nb; k += blockDim.x)
        us[(k / nb) * B + k % nb] = u[(long)(i1 + k / nb) * cols + i1 + k % nb];
    __syncthreads();
    if (r >= rows) return;
    float w[GPTQ_KMAX], e_own[GPTQ_KMAX], c_own[GPTQ_KMAX];
#pragma unroll
    for (int k = 0; k < GPTQ_KMAX; k++) {
        int j = lane + 32 * k;
        w[k] = j < nb ? W[(long)r * cols + i1 + j] : 0.0f;
        e_own[k] = c_own[k] = 0.0f;
    }
    float lo, hi, s = scale[r];
    qm_int_bounds(q, &lo, &hi);
    int zero = !(s > 0.0f);
    for (int i = 0; i < nb; i++) {
        int slot = i >> 5;
        float mine = w[0];
#pragma unroll
        for (int k = 1; k < GPTQ_KMAX; k++)
            if (slot == k) mine = w[k];
        float x = __shfl_sync(0xffffffffu, mine, i & 31);
        const float* ui = us + i * B;
        float c = zero ? 0.0f : fminf(fmaxf(rintf(__fdiv_rn(x, s)), lo), hi);
        float e = __fdiv_rn(__fsub_rn(x, __fmul_rn(c, s)), ui[i]);
#pragma unroll
        for (int k = 0; k < GPTQ_KMAX; k++) {
            int j = lane + 32 * k;
            if (j == i) e_own[k] = e, c_own[k] = c;
            if (j > i && j < nb) w[k] = __fsub_rn(w[k], __fmul_rn(e, ui[j]));
        }
    }
#pragma unroll
    for (int k = 0; k < GPTQ_KMAX; k++) {
        int j = lane + 32 * k;
        if (j >= nb) continue;
        err[(long)r * ld_err + j] = e_own[k];
        codes[(long)r * cols + perm[i1 + j]] = (int8_t)c_own[k];
    }
}

extern "C" void gpu_gptq_run(int8_t* codes, float* W, float* err, const float* scale, int rows,
                             const GpuGptqFactor* f, QuantSpec q, int block) {
    int B = block > 0 ? block : 128, cols = f->n, S = GPTQ_ERR_COLS / B * B;
    if (B > 32 * GPTQ_KMAX) {
        fprintf(stderr, "autoq: internal: GPTQ blocks of %d columns on the GPU (at most %d)\n", B,
                32 * GPTQ_KMAX);
        exit(1);
    }
    size_t smem = sizeof(float) * (size_t)B * B;
    cudaCheck(cudaFuncSetAttribute(gptq_block_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const float minus_one = -1.0f, one = 1.0f;
    gp_mark(-1);
    // Lazy updates on two levels: a block's error reaches the rest of its super-block of S columns at
    // once (K = B), and the columns past the super-block at its end (K = S, where the GEMM runs fastest).
    // The same sums as gptq.c's, in another order. Row-major W[:, c0:c1] -= err (rows, k) u[.., c0:c1]
    // is, column-major, W^T (c1 - c0, rows) -= u^T (c1 - c0, k) err^T (k, rows).
    for (int s0 = 0; s0 < cols; s0 += S) {
        int s1 = s0 + S < cols ? s0 + S : cols;
        for (int i1 = s0; i1 < s1; i1 += B) {
            int i2 = i1 + B < s1 ? i1 + B : s1, nb = i2 - i1;
            gptq_block_kernel<<<ceil_div(rows, GPTQ_WARPS), 32 * GPTQ_WARPS, smem>>>(
                codes, W, err + (i1 - s0), S, f->u, scale, f->perm, rows, cols, i1, i2, B, q);
            cudaCheck(cudaGetLastError());
            gp_mark(GP_COLUMNS);
            if (i2 < s1)
                cublasCheck(cublasSgemm(g_blas, CUBLAS_OP_N, CUBLAS_OP_N, s1 - i2, rows, nb, &minus_one,
                                        f->u + (long)i1 * cols + i2, cols, err + (i1 - s0), S, &one, W + i2,
                                        cols));
            gp_mark(GP_GEMM);
        }
        if (s1 < cols)
            cublasCheck(cublasSgemm(g_blas, CUBLAS_OP_N, CUBLAS_OP_N, cols - s1, rows, s1 - s0, &minus_one,
                                    f->u + (long)s0 * cols + s1, cols, err, S, &one, W + s1, cols));
        gp_mark(GP_GEMM);
    }
}

__global__ void gptq_dequant_kernel(__nv_bfloat16* w, const int8_t* codes, const float* scale, int rows,
                                    int cols) {
    long idx = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (idx >= (long)rows * cols) return;
    w[idx] = __float2bfloat16_rn(__fmul_rn((float)codes[idx], scale[idx / cols]));
}

extern "C" void gpu_gptq_dequant_bf16(void* w, const int8_t* codes, const float* scale, int rows, int cols) {
    long n = (long)rows * cols;
    gptq_dequant_kernel<<<ceil_div(n, 256), 256>>>((__nv_bfloat16*)w, codes, scale, rows, cols);
    cudaCheck(cudaGetLastError());
}

// The host-pointer twin of gptq_quantize: h (cols, cols) symmetric host, uploaded as the "sums" with k = 1.
extern "C" int gpu_gptq_quantize(float* wq, const float* w, const float* h, int rows, int cols, QuantSpec q,
                                 GptqOpts o, const float* scale) {
    float* sc = (float*)host_alloc(sizeof(float) * rows);
    int8_t* codes = (int8_t*)host_alloc((size_t)rows * cols);
    gptq_row_scales(sc, scale, w, rows, cols, q);
    GpuGptqFactor f;
    gpu_gptq_factor_init(&f, cols);
    float *d_h, *d_w, *d_W, *d_err, *d_sc;
    int8_t* d_codes;
    size_t wn = (size_t)rows * cols;
    int B = o.block > 0 ? o.block : 128;
    cudaCheck(cudaMalloc(&d_h, sizeof(float) * cols * cols));
    cudaCheck(cudaMalloc(&d_w, sizeof(float) * wn));
    cudaCheck(cudaMalloc(&d_W, sizeof(float) * wn));
    cudaCheck(cudaMalloc(&d_err, sizeof(float) * rows * GPTQ_ERR_COLS));
    cudaCheck(cudaMalloc(&d_sc, sizeof(float) * rows));
    cudaCheck(cudaMalloc(&d_codes, wn));
    cudaCheck(cudaMemcpy(d_h, h, sizeof(float) * cols * cols, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_w, w, sizeof(float) * wn, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_sc, sc, sizeof(float) * rows, cudaMemcpyHostToDevice));
    gpu_gptq_factor(&f, d_h, 1.0f, cols, o);
    int fallback = gpu_gptq_fallback(&f);
    gpu_gptq_load(d_W, d_w, 0, rows, &f);
    gpu_gptq_run(d_codes, d_W, d_err, d_sc, rows, &f, q, B);
    cudaCheck(cudaMemcpy(codes, d_codes, wn, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < wn; i++) wq[i] = (float)codes[i] * sc[i / cols];
    gpu_gptq_factor_free(&f);
    cudaFree(d_h), cudaFree(d_w), cudaFree(d_W), cudaFree(d_err), cudaFree(d_sc), cudaFree(d_codes);
    free(sc);
    free(codes);
    return fallback;
}

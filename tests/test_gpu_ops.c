// Every CUDA kernel against its CPU twin, one small test per op (in the manner of ggml's
// test-backend-ops): random inputs, the CPU reference, the GPU, one PASS/FAIL line per op and
// shape. Without a GPU every op is reported as skipped.
#include <string.h>

#include "check.h"
#include "engine/gpu.h"
#include "engine/util.h"
#include "kernels/attention.h"
#include "kernels/embed.h"
#include "kernels/gated_delta.h"
#include "kernels/gptq.h"
#include "kernels/hybrid.h"
#include "kernels/loss.h"
#include "kernels/matmul.h"
#include "kernels/moe.h"
#include "kernels/quant.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"

#ifdef AUTOQ_CUDA
#include <cuda_runtime.h>

static unsigned g_seed = 99;
static float frand(void) {
    g_seed = g_seed * 1664525u + 1013904223u;
    return ((g_seed >> 8) / 16777216.0f) * 2.0f - 1.0f;
}
static float* randv(long n, float scale) {
    float* x = xmalloc(sizeof(float) * n);
    for (long i = 0; i < n; i++) x[i] = scale * frand();
    return x;
}

// Device copies: put (host to a new device buffer), get (device to host), zeros.
static void* put(const void* h, size_t n) {
    void* d;
    cudaMalloc(&d, n);
    cudaMemcpy(d, h, n, cudaMemcpyHostToDevice);
    return d;
}
static void* zeros(size_t n) {
    void* d;
    cudaMalloc(&d, n);
    cudaMemset(d, 0, n);
    return d;
}
static void get(void* h, const void* d, size_t n) { cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost); }

// x rounded to bf16 in place; b gets the bits (what the GPU reads).
static uint16_t* to_bf16(float* x, long n) {
    uint16_t* b = xmalloc(sizeof(uint16_t) * n);
    for (long i = 0; i < n; i++) {
        b[i] = f32_to_bf16(x[i]);
        x[i] = bf16_to_f32(b[i]);
    }
    return b;
}

// float to fp16 bits (round to nearest even) by the compiler's _Float16; back by util.h's f16_to_f32.
static uint16_t f32_to_f16(float x) {
    _Float16 h = (_Float16)x;
    uint16_t b;
    memcpy(&b, &h, 2);
    return b;
}
static float* f16_values(const void* d, long n) {
    uint16_t* b = xmalloc(2 * n);
    float* f = xmalloc(4 * n);
    get(b, d, 2 * n);
    for (long i = 0; i < n; i++) f[i] = f16_to_f32(b[i]);
    free(b);
    return f;
}

// Largest |a - b| / (max |b| + floor): one error measure for every op.
static double max_err(const float* a, const float* b, long n, double floor) {
    double w = 0, m = 0;
    for (long i = 0; i < n; i++) w = fmax(w, fabs(a[i] - b[i])), m = fmax(m, fabs(b[i]));
    return w / (m + floor);
}

static void report(const char* op, const char* shape, double err, double tol) {
    char name[160];
    snprintf(name, sizeof(name), "gpu op %s %s = cpu", op, shape);
    CHECK(err <= tol, name, "error %.3g > tolerance %.3g", err, tol);
}

static void op_embed(int M, int D, int V) {
    float* table = randv((long)V * D, 1);
    uint16_t* t16 = to_bf16(table, (long)V * D);
    int* ids = xmalloc(sizeof(int) * M);
    for (int i = 0; i < M; i++) ids[i] = (int)((frand() + 1) * 0.5f * (V - 1));
    float *want = xmalloc(sizeof(float) * M * D), *got = xmalloc(sizeof(float) * M * D);
    embed_forward(want, table, ids, M, D);
    void *dt = put(t16, 2L * V * D), *di = put(ids, sizeof(int) * M), *dh = zeros(4L * M * D);
    gpu_embed(dh, dt, di, M, D);
    get(got, dh, 4L * M * D);
    char shape[64];
    snprintf(shape, sizeof(shape), "(M %d, D %d)", M, D);
    report("embed", shape, max_err(got, want, (long)M * D, 0), 0);
    cudaFree(dt), cudaFree(di), cudaFree(dh), free(table), free(t16), free(ids), free(want), free(got);
}

// fp32 to bf16 hi + lo: hi = bf16(x), hi + lo within 2^-16 of x; the residual add.
static void op_split_add(long n) {
    float *x = randv(n, 100), *y = randv(n, 1), *got = xmalloc(4 * n), *want = xmalloc(4 * n);
    uint16_t *hi = xmalloc(2 * n), *lo = xmalloc(2 * n);
    void *dx = put(x, 4 * n), *dy = put(y, 4 * n), *dhi = zeros(2 * n), *dlo = zeros(2 * n);
    gpu_split_bf16(dhi, dlo, dx, n);
    get(hi, dhi, 2 * n), get(lo, dlo, 2 * n);
    double err = 0;
    for (long i = 0; i < n; i++) {
        if (hi[i] != f32_to_bf16(x[i])) err = 1;
        err = fmax(err, fabs(bf16_to_f32(hi[i]) + bf16_to_f32(lo[i]) - x[i]) / fabs(x[i]) * 65536);
    }
    char shape[32];
    snprintf(shape, sizeof(shape), "(n %ld)", n);
    report("split_bf16 (hi = bf16(x), |hi + lo - x| in 2^-16 |x|)", shape, err, 1);
    for (long i = 0; i < n; i++) want[i] = x[i] + y[i];
    gpu_add(dx, dy, n);
    get(got, dx, 4 * n);
    report("add", shape, max_err(got, want, n, 0), 0);
    // fp16 rounding (the fp16 mode's GEMM inputs), bit for bit; bf16 weights rewritten as fp16 in place,
    // with one value beyond fp16's range counted
    cudaMemcpy(dx, x, 4 * n, cudaMemcpyHostToDevice); // gpu_add changed it
    gpu_round_f16(dhi, dx, n);
    get(hi, dhi, 2 * n);
    err = 0;
    for (long i = 0; i < n; i++) err += hi[i] != f32_to_f16(x[i]);
    report("round_f16 (values differing from _Float16's)", shape, err, 0);
    for (long i = 0; i < n; i++) lo[i] = f32_to_bf16(x[i]);
    lo[n / 2] = f32_to_bf16(1e6f);
    cudaMemcpy(dlo, lo, 2 * n, cudaMemcpyHostToDevice);
    long over = gpu_bf16_to_f16(dlo, n);
    get(hi, dlo, 2 * n);
    err = over != 1;
    for (long i = 0; i < n; i++) err += hi[i] != f32_to_f16(bf16_to_f32(lo[i]));
    report("bf16_to_f16 in place (differences, overflow count)", shape, err, 0);
    cudaFree(dx), cudaFree(dy), cudaFree(dhi), cudaFree(dlo);
    free(x), free(y), free(got), free(want), free(hi), free(lo);
}

static void op_rmsnorm(int M, int C) {
    float *x = randv((long)M * C, 3), *w = randv(C, 0.5f), *dout = randv((long)M * C, 1);
    for (int i = 0; i < C; i++) w[i] += 1;
    uint16_t* w16 = to_bf16(w, C);
    long n = (long)M * C;
    float *want = xmalloc(4 * n), *got = xmalloc(4 * n), *rstd = xmalloc(4 * M);
    rmsnorm_forward(want, rstd, x, w, M, C, 1e-6f);
    void *dx = put(x, 4 * n), *dw = put(w16, 2 * C), *dout_ = zeros(4 * n), *dr = zeros(4 * M);
    gpu_rmsnorm(dout_, NULL, NULL, dr, dx, dw, M, C, 1e-6f, 0);
    get(got, dout_, 4 * n);
    char shape[64];
    snprintf(shape, sizeof(shape), "(M %d, C %d)", M, C);
    report("rmsnorm", shape, max_err(got, want, n, 0), 1e-6);
    void* dh = zeros(2 * n); // fp16 output only (the fp16 mode): within fp16's rounding, 2^-11
    gpu_rmsnorm(NULL, dh, NULL, NULL, dx, dw, M, C, 1e-6f, 1);
    float* h = f16_values(dh, n);
    report("rmsnorm fp16", shape, max_err(h, want, n, 0), 5e-4);
    cudaFree(dh), free(h);
    // backward, accumulating onto a non-zero dx
    float *dx0 = randv(n, 1), *bwant = xmalloc(4 * n);
    memcpy(bwant, dx0, 4 * n);
    rmsnorm_backward(bwant, dout, x, w, rstd, M, C, 1);
    void *ddx = put(dx0, 4 * n), *ddo = put(dout, 4 * n);
    gpu_rmsnorm_backward(ddx, ddo, dx, dw, dr, M, C, 1);
    get(got, ddx, 4 * n);
    report("rmsnorm_backward", shape, max_err(got, bwant, n, 0), 1e-5);
    cudaFree(dx), cudaFree(dw), cudaFree(dout_), cudaFree(dr), cudaFree(ddx), cudaFree(ddo);
    free(x), free(w), free(w16), free(dout), free(want), free(got), free(rstd), free(dx0), free(bwant);
}

// The per-head q/k norm + RoPE (CPU: rmsnorm per head, then rope_forward), fp32 and bf16 in place,
// and its backward (CPU: rope_backward, then rmsnorm_backward per head).
static void op_qk_norm_rope(int T, int nh, int hd) {
    long n = (long)T * nh * hd;
    float *x = randv(n, 1), *w = randv(hd, 0.3f), *want = xmalloc(4 * n), *got = xmalloc(4 * n);
    for (int i = 0; i < hd; i++) w[i] += 1;
    uint16_t* w16 = to_bf16(w, hd);
    float* rstd = xmalloc(sizeof(float) * T * nh);
    RopeTable rt;
    rope_init(&rt, T, hd, 1e6);
    rmsnorm_forward(want, rstd, x, w, T * nh, hd, 1e-6f);
    rope_forward(want, &rt, T, nh);
    void *dx = put(x, 4 * n), *dw = put(w16, 2 * hd), *dr = zeros(4L * T * nh), *dout = zeros(4 * n);
    void *dcos = put(rt.cos, 4L * T * hd / 2), *dsin = put(rt.sin, 4L * T * hd / 2);
    gpu_qk_norm_rope(dout, NULL, NULL, dr, dx, dw, dcos, dsin, T, T, nh, hd, 1e-6f, 0);
    get(got, dout, 4 * n);
    char shape[64];
    snprintf(shape, sizeof(shape), "(T %d, heads %d, head_dim %d)", T, nh, hd);
    report("qk_norm_rope", shape, max_err(got, want, n, 0), 1e-6);
    void* dh = zeros(2 * n); // fp16 output only (the fp16 mode): within fp16's rounding
    gpu_qk_norm_rope(NULL, dh, NULL, NULL, dx, dw, dcos, dsin, T, T, nh, hd, 1e-6f, 1);
    float* h = f16_values(dh, n);
    report("qk_norm_rope fp16", shape, max_err(h, want, n, 0), 5e-4);
    cudaFree(dh), free(h);
    // bf16 in place: the CPU on the same bf16 input, within bf16 rounding of the output
    float* xb = xmalloc(4 * n);
    memcpy(xb, x, 4 * n);
    uint16_t *x16 = to_bf16(xb, n), *o16 = xmalloc(2 * n);
    rmsnorm_forward(want, NULL, xb, w, T * nh, hd, 1e-6f);
    rope_forward(want, &rt, T, nh);
    void* dx16 = put(x16, 2 * n);
    gpu_qk_norm_rope_bf16(dx16, (long)nh * hd, NULL, dw, dcos, dsin, T, T, nh, hd, 1e-6f);
    get(o16, dx16, 2 * n);
    for (long i = 0; i < n; i++) got[i] = bf16_to_f32(o16[i]);
    report("qk_norm_rope_bf16", shape, max_err(got, want, n, 0), 1.0 / 128);
    // backward: d (rotated) -> d (q_proj output)
    float *d = randv(n, 1), *bwant = xmalloc(4 * n), *tmp = xmalloc(4 * n);
    memcpy(tmp, d, 4 * n);
    rope_backward(tmp, &rt, T, nh);
    rmsnorm_backward(bwant, tmp, x, w, rstd, T * nh, hd, 0);
    void* dd = put(d, 4 * n);
    gpu_qk_norm_rope_backward(dd, dx, dw, dr, dcos, dsin, T, T, nh, hd);
    get(got, dd, 4 * n);
    report("qk_norm_rope_backward", shape, max_err(got, bwant, n, 0), 1e-5);
    rope_free(&rt);
    cudaFree(dx), cudaFree(dw), cudaFree(dr), cudaFree(dout), cudaFree(dcos), cudaFree(dsin), cudaFree(dx16);
    cudaFree(dd);
    free(x), free(w), free(w16), free(want), free(got), free(rstd), free(xb), free(x16), free(o16), free(d);
    free(bwant), free(tmp);
}

static void op_swiglu(long n) {
    float *g = randv(n, 4), *u = randv(n, 2), *dout = randv(n, 1), *want = xmalloc(4 * n),
          *got = xmalloc(4 * n);
    swiglu_forward(want, g, u, n);
    void *dg = put(g, 4 * n), *du = put(u, 4 * n), *dout_ = zeros(4 * n);
    gpu_swiglu(dout_, NULL, NULL, dg, du, n, 0);
    get(got, dout_, 4 * n);
    char shape[32];
    snprintf(shape, sizeof(shape), "(n %ld)", n);
    report("swiglu", shape, max_err(got, want, n, 0), 1e-6);
    void* dh = zeros(2 * n); // fp16 output only (the fp16 mode): within fp16's rounding
    gpu_swiglu(NULL, dh, NULL, dg, du, n, 1);
    float* h = f16_values(dh, n);
    report("swiglu fp16", shape, max_err(h, want, n, 0), 5e-4);
    cudaFree(dh), free(h);
    // bf16 in and out (8 per thread when n % 8 == 0, else 4)
    uint16_t *g16 = to_bf16(g, n), *u16 = to_bf16(u, n), *o16 = xmalloc(2 * n);
    swiglu_forward(want, g, u, n);
    void *dg16 = put(g16, 2 * n), *du16 = put(u16, 2 * n), *do16 = zeros(2 * n);
    gpu_swiglu_bf16(do16, dg16, du16, n);
    get(o16, do16, 2 * n);
    for (long i = 0; i < n; i++) got[i] = bf16_to_f32(o16[i]);
    report("swiglu_bf16", shape, max_err(got, want, n, 0), 1.0 / 256);
    float *wg = xmalloc(4 * n), *wu = xmalloc(4 * n), *gg = xmalloc(4 * n), *gu = xmalloc(4 * n);
    swiglu_backward(wg, wu, dout, g, u, n);
    void *ddo = put(dout, 4 * n), *ddg = zeros(4 * n), *ddu = zeros(4 * n);
    cudaMemcpy(dg, g, 4 * n, cudaMemcpyHostToDevice); // the bf16-rounded inputs of the CPU backward
    cudaMemcpy(du, u, 4 * n, cudaMemcpyHostToDevice);
    gpu_swiglu_backward(ddg, ddu, ddo, dg, du, n);
    get(gg, ddg, 4 * n), get(gu, ddu, 4 * n);
    report("swiglu_backward", shape, fmax(max_err(gg, wg, n, 0), max_err(gu, wu, n, 0)), 1e-6);
    cudaFree(dg), cudaFree(du), cudaFree(dout_), cudaFree(dg16), cudaFree(du16), cudaFree(do16);
    cudaFree(ddo), cudaFree(ddg), cudaFree(ddu);
    free(g), free(u), free(dout), free(want), free(got), free(g16), free(u16), free(o16);
    free(wg), free(wu), free(gg), free(gu);
}

// Fused causal attention on bf16 inputs against the CPU attention on the same values.
// fp32 values on the device as fp16 (gpu_round_f16), in a new buffer.
static void* put_f16(const float* x, long n) {
    void* d32 = put(x, 4 * n);
    void* d = zeros(2 * n);
    gpu_round_f16(d, d32, n);
    cudaFree(d32);
    return d;
}

// f16: q, k, v in fp16 (the fp16 mode), else bf16.
static void op_flash(int T, int H, int KV, int hd, int nb, int f16) {
    long qn = (long)nb * T * H * hd, kn = (long)nb * T * KV * hd;
    float *q = randv(qn, 2), *k = randv(kn, 2), *v = randv(kn, 1);
    float *want = xmalloc(4 * qn), *got = xmalloc(4 * qn), *lse = xmalloc(4L * H * T);
    uint16_t *q16 = to_bf16(q, qn), *k16 = to_bf16(k, kn), *v16 = to_bf16(v, kn);
    for (int b = 0; b < nb; b++)
        attention_forward(want + (long)b * T * H * hd, lse, q + (long)b * T * H * hd, k + (long)b * T * KV * hd,
                          v + (long)b * T * KV * hd, T, H, KV, hd);
    void *dq, *dk, *dv, *dout = zeros(4 * qn);
    if (f16)
        dq = put_f16(q, qn), dk = put_f16(k, kn), dv = put_f16(v, kn);
    else
        dq = put(q16, 2 * qn), dk = put(k16, 2 * kn), dv = put(v16, 2 * kn);
    gpu_flash_attention(dout, NULL, dq, (long)H * hd, dk, dv, (long)KV * hd, nb, T, H, KV, hd, f16);
    get(got, dout, 4 * qn);
    char shape[112];
    snprintf(shape, sizeof(shape), "(%s, windows %d, T %d, heads %d, kv heads %d, head_dim %d)",
             f16 ? "fp16" : "bf16", nb, T, H, KV, hd);
    // inputs and the probabilities entering P.V rounded to bf16 (as in the cuBLAS path): ~2^-9 relative;
    // in fp16 ~2^-12, so the fp16 bound is 8 times tighter
    report("flash_attention", shape, max_err(got, want, qn, 0), f16 ? 5e-4 : 4e-3);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dout);
    free(q), free(k), free(v), free(want), free(got), free(lse), free(q16), free(k16), free(v16);
}

// The cuBLAS path's causal softmax (P and lse of each head) and the backward's dS from S and dP.
static void op_softmax_ds(int nb, int T) {
    long n = (long)nb * T * T;
    float *s = randv(n, 4), *dp = randv(n, 1), *pw = xmalloc(4 * n), *dsw = xmalloc(4 * n);
    float *lw = xmalloc(4L * nb * T), *lg = xmalloc(4L * nb * T), *got = xmalloc(4 * n);
    float scale = 0.125f;
    for (int h = 0; h < nb; h++)
        for (int i = 0; i < T; i++) { // row i of head h: keys 0..i
            const float* r = s + ((long)h * T + i) * T;
            double m = -INFINITY, z = 0, dot = 0;
            for (int j = 0; j <= i; j++) m = fmax(m, r[j]);
            for (int j = 0; j <= i; j++) z += exp(r[j] - m);
            lw[h * T + i] = (float)(m + log(z));
            float* p = pw + ((long)h * T + i) * T;
            const float* d = dp + ((long)h * T + i) * T;
            for (int j = 0; j < T; j++) p[j] = j <= i ? (float)(exp(r[j] - m) / z) : 0.0f;
            for (int j = 0; j <= i; j++) dot += p[j] * d[j];
            for (int j = 0; j < T; j++) dsw[((long)h * T + i) * T + j] = (float)(p[j] * (d[j] - dot) * scale);
        }
    void *ds = put(s, 4 * n), *dpd = put(dp, 4 * n), *dphi = zeros(2 * n), *dplo = zeros(2 * n);
    void *dl = zeros(4L * nb * T), *dshi = zeros(2 * n), *dslo = zeros(2 * n);
    uint16_t *hi = xmalloc(2 * n), *lo = xmalloc(2 * n);
    gpu_causal_softmax(dphi, dplo, dl, ds, nb, T);
    get(hi, dphi, 2 * n), get(lo, dplo, 2 * n), get(lg, dl, 4L * nb * T);
    for (long i = 0; i < n; i++) got[i] = bf16_to_f32(hi[i]) + bf16_to_f32(lo[i]);
    char shape[48];
    snprintf(shape, sizeof(shape), "(heads %d, T %d)", nb, T);
    report("causal_softmax (P as bf16 hi + lo)", shape, max_err(got, pw, n, 0), 1e-5);
    report("causal_softmax (lse)", shape, max_err(lg, lw, (long)nb * T, 1), 1e-6);
    gpu_attention_ds(dphi, dplo, dshi, dslo, ds, dpd, nb, T, scale);
    get(hi, dshi, 2 * n), get(lo, dslo, 2 * n);
    for (long i = 0; i < n; i++) got[i] = bf16_to_f32(hi[i]) + bf16_to_f32(lo[i]);
    report("attention_ds (dS as bf16 hi + lo)", shape, max_err(got, dsw, n, 0), 1e-5);
    cudaFree(ds), cudaFree(dpd), cudaFree(dphi), cudaFree(dplo), cudaFree(dl), cudaFree(dshi), cudaFree(dslo);
    free(s), free(dp), free(pw), free(dsw), free(lw), free(lg), free(got), free(hi), free(lo);
}

// The key/value gradient of grouped-query attention: the sum over the query heads of a kv head.
static void op_sum_heads(int rows, int nkv, int rep, int hd) {
    long n = (long)rows * nkv * rep * hd, m = (long)rows * nkv * hd;
    float *in = randv(n, 1), *want = xmalloc(4 * m), *got = xmalloc(4 * m);
    for (long i = 0; i < m; i++) {
        long r = i / ((long)nkv * hd), k = i / hd % nkv, d = i % hd;
        float acc = 0;
        for (int j = 0; j < rep; j++) acc += in[((r * nkv + k) * rep + j) * hd + d];
        want[i] = acc;
    }
    void *din = put(in, 4 * n), *dout = zeros(4 * m);
    gpu_sum_heads(dout, din, rows, nkv, rep, hd);
    get(got, dout, 4 * m);
    char shape[64];
    snprintf(shape, sizeof(shape), "(rows %d, kv heads %d, rep %d)", rows, nkv, rep);
    report("sum_heads", shape, max_err(got, want, m, 0), 1e-6);
    cudaFree(din), cudaFree(dout), free(in), free(want), free(got);
}

// q * scale of the GPU's integer codes equals the CPU's fake-quantized values exactly, for fp32 and
// bf16 inputs; dequant applies the per-token and per-channel scales to int32 accumulators.
static void op_quant(int rows, int cols, QuantSpec q) {
    long n = (long)rows * cols;
    float *x = randv(n, 3), *want = xmalloc(4 * n), *got = xmalloc(4 * n), *sc = xmalloc(4 * rows);
    for (int c = 0; c < cols; c++) x[c] = 0; // an all-zero row
    int8_t* qi = xmalloc(n);
    void *dx = put(x, 4 * n), *dq = zeros(n), *ds = zeros(4 * rows);
    char shape[80];
    snprintf(shape, sizeof(shape), "(rows %d, cols %d, bits %d, narrow %d, ct %d)", rows, cols, q.bits,
             q.narrow, q.ct);
    for (int bf = 0; bf <= 1; bf++) {
        uint16_t* x16 = NULL;
        if (bf) {
            x16 = to_bf16(x, n);
            cudaFree(dx);
            dx = put(x16, 2 * n);
            gpu_quant_rows_bf16(dq, ds, dx, rows, cols, q);
        } else {
            gpu_quant_rows_f32(dq, ds, dx, rows, cols, q);
        }
        quant_input_rows(want, x, rows, cols, q);
        get(qi, dq, n), get(sc, ds, 4 * rows);
        for (long i = 0; i < n; i++) got[i] = (float)qi[i] * sc[i / cols];
        report(bf ? "quant_rows_bf16" : "quant_rows_f32", shape, max_err(got, want, n, 0), 0);
        free(x16);
    }
    // dequant of a small integer GEMM done on the host
    int N = 17;
    float *sw = randv(N, 0.1f), *y = xmalloc(4L * rows * N), *yw = xmalloc(4L * rows * N);
    int32_t* acc = xmalloc(4L * rows * N);
    for (long i = 0; i < (long)rows * N; i++) acc[i] = (int32_t)(5000 * frand());
    for (long i = 0; i < (long)rows * N; i++) yw[i] = (float)acc[i] * (sc[i / N] * sw[i % N]);
    void *dacc = put(acc, 4L * rows * N), *dsw = put(sw, 4 * N), *dy = zeros(4L * rows * N);
    gpu_dequant(dy, NULL, dacc, ds, dsw, rows, N, 0);
    get(y, dy, 4L * rows * N);
    report("dequant", shape, max_err(y, yw, (long)rows * N, 0), 1e-7);
    cudaFree(dx), cudaFree(dq), cudaFree(ds), cudaFree(dacc), cudaFree(dsw), cudaFree(dy);
    free(x), free(want), free(got), free(sc), free(qi), free(sw), free(y), free(yw), free(acc);
}

// The fake-quantizers of the block and floating-point formats (gpu_fake_quant_*) equal quant.c's exactly,
// for fp32 and bf16 inputs, as weights (NVFP4: the matrix's global amax) and as inputs (each row's). Rows
// span magnitudes 2^-20 .. 2^10 so block scales reach E4M3's subnormals and E8M0's small exponents.
static void op_fake_quant(int rows, int cols, QuantSpec q, const char* label) {
    long n = (long)rows * cols;
    float *x = randv(n, 1), *want = xmalloc(4 * n), *got = xmalloc(4 * n);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) x[(long)r * cols + c] *= ldexpf(1.0f, r % 31 - 20);
    for (int c = 0; c < cols; c++) x[c] = 0; // an all-zero row
    void *dx = put(x, 4 * n), *dy = zeros(4 * n);
    for (int bf = 0; bf <= 1; bf++)
        for (int weight = 0; weight <= 1; weight++) {
            uint16_t* x16 = NULL;
            if (bf) {
                x16 = to_bf16(x, n);
                cudaFree(dx);
                dx = put(x16, 2 * n);
                gpu_fake_quant_bf16(dy, dx, rows, cols, q, weight);
            } else {
                gpu_fake_quant_f32(dy, dx, rows, cols, q, weight);
            }
            if (weight)
                quant_weight_rows(want, x, rows, cols, q);
            else
                quant_input_rows(want, x, rows, cols, q);
            get(got, dy, 4 * n);
            char op[64], shape[80];
            snprintf(op, sizeof(op), "fake_quant_%s %s %s", bf ? "bf16" : "f32", label,
                     weight ? "weight" : "input");
            snprintf(shape, sizeof(shape), "(rows %d, cols %d)", rows, cols);
            report(op, shape, max_err(got, want, n, 0), 0);
            free(x16);
        }
    cudaFree(dx), cudaFree(dy);
    free(x), free(want), free(got);
}

static void op_kl(int rows, int V) {
    float *a = randv((long)rows * V, 8), *b = xmalloc(4L * rows * V);
    for (long i = 0; i < (long)rows * V; i++) b[i] = a[i] + 0.3f * frand();
    double want = kl_rows(a, b, rows, V), have = 0;
    void *da = put(a, 4L * rows * V), *db = put(b, 4L * rows * V), *dt = zeros(8), *dscr = zeros(8L * rows);
    gpu_kl_rows(dt, dscr, da, db, rows, V);
    get(&have, dt, 8);
    char shape[48];
    snprintf(shape, sizeof(shape), "(rows %d, V %d)", rows, V);
    report("kl_rows", shape, rel_diff(have, want), 1e-5);
    cudaFree(da), cudaFree(db), cudaFree(dt), cudaFree(dscr), free(a), free(b);
}

// d(mean next-token CE)/d(logits) of nb windows, as bf16 hi + lo, and the loss per row.
static void op_cross_entropy(int nb, int T, int V) {
    long n = (long)nb * T * V;
    float *logits = randv(n, 5), *want = xmalloc(4 * n), *got = xmalloc(4 * n);
    int* ids = xmalloc(sizeof(int) * nb * T);
    for (int i = 0; i < nb * T; i++) ids[i] = (int)((frand() + 1) * 0.5f * (V - 1));
    double want_loss = 0, have_loss = 0;
    for (int b = 0; b < nb; b++)
        want_loss += cross_entropy(want + (long)b * T * V, logits + (long)b * T * V, ids + b * T, T, V);
    void *dl = put(logits, 4 * n), *di = put(ids, sizeof(int) * nb * T), *dhi = zeros(2 * n),
         *dlo = zeros(2 * n);
    void* dloss = zeros(8L * nb * T);
    gpu_cross_entropy_backward(dhi, dlo, dloss, dl, di, nb * T, T, V);
    uint16_t *hi = xmalloc(2 * n), *lo = xmalloc(2 * n);
    double* lr = xmalloc(8L * nb * T);
    get(hi, dhi, 2 * n), get(lo, dlo, 2 * n), get(lr, dloss, 8L * nb * T);
    for (long i = 0; i < n; i++) got[i] = bf16_to_f32(hi[i]) + bf16_to_f32(lo[i]);
    for (int i = 0; i < nb * T; i++) have_loss += lr[i];
    char shape[64];
    snprintf(shape, sizeof(shape), "(windows %d, T %d, V %d)", nb, T, V);
    report("cross_entropy_backward (gradient)", shape, max_err(got, want, n, 0), 1e-5);
    report("cross_entropy_backward (loss)", shape, rel_diff(have_loss / (T - 1), want_loss), 1e-6);
    cudaFree(dl), cudaFree(di), cudaFree(dhi), cudaFree(dlo), cudaFree(dloss);
    free(logits), free(want), free(got), free(ids), free(hi), free(lo), free(lr);
}

static void op_grad_score(int M, int N) {
    long n = (long)M * N;
    int32_t* acc = xmalloc(4 * n);
    for (long i = 0; i < n; i++) acc[i] = (int32_t)(1000 * frand());
    float *dy = randv(n, 1), *y = randv(n, 1), *sx = randv(M, 0.005f), *sw = randv(N, 0.05f);
    for (int i = 0; i < M; i++) sx[i] += 0.01f;
    for (int i = 0; i < N; i++) sw[i] += 0.1f;
    double want = grad_score(dy, acc, sx, sw, y, M, N), have = 0;
    void *dacc = put(acc, 4 * n), *ddy = put(dy, 4 * n), *dyy = put(y, 4 * n), *dsx = put(sx, 4 * M);
    void *dsw = put(sw, 4 * N), *dt = zeros(8), *dscr = zeros(8 * 1024);
    gpu_grad_score(dt, dscr, ddy, dacc, dsx, dsw, dyy, M, N);
    get(&have, dt, 8);
    char shape[48];
    snprintf(shape, sizeof(shape), "(M %d, N %d)", M, N);
    report("grad_score", shape, rel_diff(have, want), 1e-12);
    cudaFree(dacc), cudaFree(ddy), cudaFree(dyy), cudaFree(dsx), cudaFree(dsw), cudaFree(dt), cudaFree(dscr);
    free(acc), free(dy), free(y), free(sx), free(sw);
}

static void op_sq_diff_dot(long n) {
    float *dy = randv(n, 1), *yq = randv(n, 1), *y = randv(n, 1);
    double want = sq_diff_dot(dy, yq, y, n), have = 0;
    void *ddy = put(dy, 4 * n), *dyq = put(yq, 4 * n), *dyy = put(y, 4 * n), *dt = zeros(8),
         *dscr = zeros(8 * 1024);
    gpu_sq_diff_dot(dt, dscr, ddy, dyq, dyy, n);
    get(&have, dt, 8);
    char shape[48];
    snprintf(shape, sizeof(shape), "(n %ld)", n);
    report("sq_diff_dot", shape, rel_diff(have, want), 1e-12);
    cudaFree(ddy), cudaFree(dyq), cudaFree(dyy), cudaFree(dt), cudaFree(dscr);
    free(dy), free(yq), free(y);
}

// Routing (softmax, top-k, renormalisation) and its backward; then the sort on the host and the row
// moves between tokens and experts, each direction and its backward.
static void op_moe(int T, int E, int K, int D, int renorm) {
    long TK = (long)T * K;
    float *logits = randv((long)T * E, 3), *probs = xmalloc(4L * T * E), *w = xmalloc(4 * TK);
    int *idx = xmalloc(4 * TK), *gidx = xmalloc(4 * TK);
    float *gprobs = xmalloc(4L * T * E), *gw = xmalloc(4 * TK);
    moe_route_forward(probs, idx, w, logits, T, E, K, renorm);
    void *dl = put(logits, 4L * T * E), *dp = zeros(4L * T * E), *di = zeros(4 * TK), *dw = zeros(4 * TK);
    gpu_moe_route_forward(dp, di, dw, dl, T, E, K, renorm);
    get(gprobs, dp, 4L * T * E), get(gidx, di, 4 * TK), get(gw, dw, 4 * TK);
    char shape[80];
    snprintf(shape, sizeof(shape), "(T %d, E %d, K %d%s)", T, E, K, renorm ? ", renormalised" : "");
    int same = memcmp(idx, gidx, 4 * TK) == 0;
    CHECK(same, "gpu op moe_route top-k experts = cpu", "%s: expert choices differ", shape);
    report("moe_route probs", shape, max_err(gprobs, probs, (long)T * E, 0), 1e-6);
    report("moe_route weights", shape, max_err(gw, w, TK, 0), 1e-6);
    // backward from random dw
    float *g = randv(TK, 1), *dlog = xmalloc(4L * T * E), *gdlog = xmalloc(4L * T * E);
    moe_route_backward(dlog, g, probs, idx, T, E, K, renorm);
    void *dg = put(g, 4 * TK), *ddl = zeros(4L * T * E), *dpc = put(probs, 4L * T * E), *dic = put(idx, 4 * TK);
    gpu_moe_route_backward(ddl, dg, dpc, dic, T, E, K, renorm);
    get(gdlog, ddl, 4L * T * E);
    report("moe_route_backward", shape, max_err(gdlog, dlog, (long)T * E, 1e-6), 1e-5);
    // rows: sort on the host, gather (fp32 rows, bf16 rows as bytes), scatter, their backwards
    int *order = xmalloc(4 * TK), *offs = xmalloc(4L * (E + 1)), *pos = xmalloc(4 * TK);
    moe_sort(order, offs, pos, idx, T, E, K);
    { // the device sort and the grouped GEMMs' tiles
        int *gord = xmalloc(4 * TK), *goffs = xmalloc(4L * (E + 1)), *gpos = xmalloc(4 * TK);
        int cap = (int)(TK / GROUPED_ROWS + E), *tl = xmalloc(4L * 3 * cap), *gtl = xmalloc(4L * 3 * cap);
        long long* gcnt = xmalloc(sizeof(long long) * E);
        void *so = zeros(4 * TK), *sf = zeros(4L * (E + 1)), *sp = zeros(4 * TK);
        void *sc = zeros(4 * moe_sort_scratch(TK, E)), *st = zeros(4L * 3 * cap), *sn = zeros(8L * E);
        gpu_moe_sort(so, sf, sp, dic, T, E, K, sc);
        gpu_moe_tiles(st, cap, sn, sf, E);
        get(gord, so, 4 * TK), get(goffs, sf, 4L * (E + 1)), get(gpos, sp, 4 * TK);
        get(gtl, st, 4L * 3 * cap), get(gcnt, sn, 8L * E);
        int same =
            !memcmp(gord, order, 4 * TK) && !memcmp(goffs, offs, 4L * (E + 1)) && !memcmp(gpos, pos, 4 * TK);
        CHECK(same, "gpu op moe_sort = cpu (order, offsets, positions)", "%s", shape);
        int nt = matmul_grouped_tiles(tl, offs, E), ok = 1;
        for (int t = 0; t < cap; t++)
            ok &= t < nt ? gtl[t] == tl[t] && gtl[cap + t] == tl[nt + t] && gtl[2 * cap + t] == tl[2 * nt + t]
                         : gtl[2 * cap + t] == 0;
        for (int e = 0; e < E; e++) ok &= gcnt[e] == offs[e + 1] - offs[e];
        CHECK(ok, "gpu op moe_tiles = matmul_grouped_tiles, counts = the experts' rows", "%s", shape);
        cudaFree(so), cudaFree(sf), cudaFree(sp), cudaFree(sc), cudaFree(st), cudaFree(sn);
        free(gord), free(goffs), free(gpos), free(tl), free(gtl), free(gcnt);
    }
    float *x = randv((long)T * D, 1), *rows = xmalloc(4 * TK * D), *grows = xmalloc(4 * TK * D);
    moe_gather(rows, x, order, (int)TK, K, D);
    void *dx = put(x, 4L * T * D), *drows = zeros(4 * TK * D), *dord = put(order, 4 * TK),
         *dpos = put(pos, 4 * TK);
    gpu_moe_gather(drows, dx, dord, (int)TK, K, 4 * D);
    get(grows, drows, 4 * TK * D);
    report("moe_gather", shape, max_err(grows, rows, TK * D, 0), 0);
    float *dxw = xcalloc((size_t)T * D, 4), *gdx = xmalloc(4L * T * D);
    moe_gather_backward(dxw, rows, pos, T, K, D);
    void* ddx = zeros(4L * T * D);
    gpu_moe_gather_backward(ddx, drows, dpos, T, K, D);
    get(gdx, ddx, 4L * T * D);
    report("moe_gather_backward", shape, max_err(gdx, dxw, (long)T * D, 0), 0);
    float *y = xmalloc(4L * T * D), *gy = xmalloc(4L * T * D), *gh = xmalloc(4L * T * D);
    moe_scatter(y, rows, w, pos, T, K, D);
    void *dy = zeros(4L * T * D), *dh = put(x, 4L * T * D), *dwc = put(w, 4 * TK);
    gpu_moe_scatter(dy, dh, drows, dwc, dpos, T, K, D);
    get(gy, dy, 4L * T * D), get(gh, dh, 4L * T * D);
    report("moe_scatter", shape, max_err(gy, y, (long)T * D, 0), 1e-6);
    for (long i = 0; i < (long)T * D; i++) y[i] += x[i]; // the residual add rides on it
    report("moe_scatter + residual", shape, max_err(gh, y, (long)T * D, 0), 1e-6);
    float *up = randv((long)T * D, 1), *dye = xmalloc(4 * TK * D), *gdye = xmalloc(4 * TK * D);
    float *dwt = xmalloc(4 * TK), *gdwt = xmalloc(4 * TK);
    moe_scatter_backward(dye, dwt, up, rows, w, pos, T, K, D);
    void *dup = put(up, 4L * T * D), *ddye = zeros(4 * TK * D), *ddw = zeros(4 * TK);
    gpu_moe_scatter_backward(ddye, ddw, dup, drows, dwc, dpos, T, K, D);
    get(gdye, ddye, 4 * TK * D), get(gdwt, ddw, 4 * TK);
    report("moe_scatter_backward rows", shape, max_err(gdye, dye, TK * D, 0), 0);
    report("moe_scatter_backward weights", shape, max_err(gdwt, dwt, TK, 1e-6), 1e-6);
    void* ds[] = {dl, dp, di, dw, dg, ddl, dpc, dic, dx, drows, dord, dpos, ddx, dy, dh, dwc, dup, ddye, ddw};
    for (size_t i = 0; i < sizeof(ds) / sizeof(ds[0]); i++) cudaFree(ds[i]);
    void* hs[] = {logits, probs, w,     idx, gidx, gprobs, gw, g,  dlog, gdlog, order, offs, pos,
                  x,      rows,  grows, dxw, gdx,  y,      gy, gh, up,   dye,   gdye,  dwt,  gdwt};
    for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++) free(hs[i]);
}

static const char* g_grouped = ""; // which grouped kernel runs (AUTOQ_MOE_GEMM)
static int g_ragged;               // expert sizes at the tile's edges (grouped_offs)
static int g_interleaved;          // weights as the engine's gate and up: W_e at e * 2 N K + N K

// The kernel asked for (AUTOQ_MOE_GEMM) is the one that ran: tma and wgmma on compute capability
// 9.0, mma.sync elsewhere; so a silent fallback cannot pass for the kernel under test.
static void grouped_ran(void) {
    const char *how = getenv("AUTOQ_MOE_GEMM"), *ran = gpu_matmul_grouped_kernel();
    int dev, ma, mi;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&ma, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&mi, cudaDevAttrComputeCapabilityMinor, dev);
    const char* want = ma != 9 || mi != 0 || (how && !strcmp(how, "mma")) ? "mma" : how ? how : ran;
    if (strncmp(ran, want, strlen(want))) { // "tma" asks for either schedule
        char name[96];
        snprintf(name, sizeof(name), "gpu op grouped GEMM runs the kernel asked for (%s)", want);
        CHECK(0, name, "%s ran", ran);
    }
}

// Rows per expert: a spread with empty and partial tiles, or (g_ragged) sizes at the tile's edges:
// 0 (first and last), 1, GROUPED_ROWS - 1, GROUPED_ROWS, GROUPED_ROWS + 1, 2 GROUPED_ROWS.
static void grouped_offs(int* offs, int E, int mod, int zero, int mul, int span) {
    const int edge[] = {0, 1, GROUPED_ROWS, GROUPED_ROWS + 1, 0, GROUPED_ROWS - 1, 2 * GROUPED_ROWS, 1};
    offs[0] = 0;
    for (int e = 0; e < E; e++) {
        int n = e % mod == zero ? 0 : 1 + (e * mul) % span;
        if (g_ragged) n = e == E - 1 ? 0 : edge[e % 8];
        offs[e + 1] = offs[e] + n;
    }
}

// The experts' grouped GEMM (forward and backward layouts, hi + lo inputs, bf16 output, beta 1)
// against the CPU's per-expert GEMMs on bf16-exact inputs (fp16-exact with f16, the fp16 GEMM mode);
// some experts get no rows, some a partial tile.
static void op_grouped(int E, int K, int N, int bwd, int split, int f16) {
    int* offs = xmalloc(sizeof(int) * (E + 1));
    grouped_offs(offs, E, 3, 1, 37, 150);
    int rows = offs[E];
    long wsz = (long)N * K, wn = wsz * E * (g_interleaved ? 2 : 1); // wsz: one expert's weights
    float *x = randv((long)rows * K, 1), *w = randv(wn, 0.1f), *y = randv((long)rows * N, 1);
    uint16_t *w16 = to_bf16(w, wn), *hi = xmalloc(2L * rows * K), *lo = xmalloc(2L * rows * K);
    for (long i = 0; f16 && i < wn; i++) { // fp16 weights hold the bf16 values (all in range here)
        w16[i] = f32_to_f16(w[i]);
        w[i] = f16_to_f32(w16[i]);
    }
    for (long i = 0; i < (long)rows * K; i++) { // x = hi + lo exactly on the CPU side
        if (f16) {
            hi[i] = f32_to_f16(x[i]);
            x[i] = f16_to_f32(hi[i]);
            continue;
        }
        hi[i] = f32_to_bf16(x[i]);
        lo[i] = f32_to_bf16(x[i] - bf16_to_f32(hi[i]));
        x[i] = split ? bf16_to_f32(hi[i]) + bf16_to_f32(lo[i]) : bf16_to_f32(hi[i]);
    }
    float *want = xmalloc(4L * rows * N), *got = xmalloc(4L * rows * N);
    memcpy(want, y, 4L * rows * N);
    long ws = g_interleaved ? 2 * wsz : wsz, w0 = g_interleaved ? wsz : 0; // stride, first expert's start
    matmul_grouped(want, x, w + w0, ws, offs, E, K, N, bwd, 1.0f);
    int* tiles = xmalloc(sizeof(int) * 3 * (rows / GROUPED_ROWS + E));
    int nt = matmul_grouped_tiles(tiles, offs, E);
    void *dx = put(hi, 2L * rows * K), *dl = put(lo, 2L * rows * K), *dw0 = put(w16, 2 * wn);
    void *dy = put(y, 4L * rows * N), *dt = put(tiles, sizeof(int) * 3 * nt), *dy16 = zeros(2L * rows * N);
    void* dw = (uint16_t*)dw0 + w0;
    gpu_matmul_grouped(dy, NULL, dx, split ? dl : NULL, dw, ws, dt, nt, K, N, bwd, 1.0f, f16);
    grouped_ran();
    get(got, dy, 4L * rows * N);
    char shape[128];
    snprintf(shape, sizeof(shape), "(E %d, rows %d, K %d, N %d%s%s, beta 1%s%s%s)", E, rows, K, N,
             bwd ? ", backward" : "",
             split ? ", hi + lo"
             : f16 ? ", fp16"
                   : "",
             g_ragged ? ", edge sizes" : "", g_interleaved ? ", interleaved" : "", g_grouped);
    report("matmul_grouped", shape, max_err(got, want, (long)rows * N, 0), 1e-5);
    matmul_grouped(want, x, w + w0, ws, offs, E, K, N, bwd, 0.0f); // bf16 output
    uint16_t* g16 = xmalloc(2L * rows * N);
    if (!f16) gpu_matmul_grouped(NULL, dy16, dx, NULL, dw, ws, dt, nt, K, N, bwd, 0.0f, 0);
    get(g16, dy16, 2L * rows * N);
    for (long i = 0; i < (long)rows * N; i++) got[i] = bf16_to_f32(g16[i]);
    if (!split && !f16)
        report("matmul_grouped bf16 output", shape, max_err(got, want, (long)rows * N, 0), 8e-3);
    cudaFree(dx), cudaFree(dl), cudaFree(dw0), cudaFree(dy), cudaFree(dt), cudaFree(dy16);
    free(offs), free(x), free(w), free(y), free(w16), free(hi), free(lo), free(want), free(got), free(tiles),
        free(g16);
}

// The int8 grouped GEMM with its dequantizing epilogue against the CPU's exact integer sums.
static void op_grouped_i8(int E, int K, int N) {
    int* offs = xmalloc(sizeof(int) * (E + 1));
    grouped_offs(offs, E, 4, 2, 53, 140);
    int rows = offs[E];
    long ws = (long)N * K;
    int8_t *xq = xmalloc((long)rows * K), *wq = xmalloc(ws * E);
    for (long i = 0; i < (long)rows * K; i++) xq[i] = (int8_t)(127 * frand());
    for (long i = 0; i < ws * E; i++) wq[i] = (int8_t)(7 * frand());
    float *sx = randv(rows, 0.01f), *sw = randv((long)N * E, 0.01f);
    float *want = xmalloc(4L * rows * N), *got = xmalloc(4L * rows * N);
    matmul_grouped_i8(want, xq, sx, wq, ws, sw, N, offs, E, K, N);
    int* tiles = xmalloc(sizeof(int) * 3 * (rows / GROUPED_ROWS + E));
    int nt = matmul_grouped_tiles(tiles, offs, E);
    void *dx = put(xq, (long)rows * K), *dw = put(wq, ws * E), *dsx = put(sx, 4L * rows),
         *dsw = put(sw, 4L * N * E);
    void *dy = zeros(4L * rows * N), *dt = put(tiles, sizeof(int) * 3 * nt);
    gpu_matmul_grouped_i8(dy, dx, dsx, dw, ws, dsw, N, dt, nt, K, N);
    grouped_ran();
    get(got, dy, 4L * rows * N);
    char shape[96];
    snprintf(shape, sizeof(shape), "(E %d, rows %d, K %d, N %d%s%s)", E, rows, K, N,
             g_ragged ? ", edge sizes" : "", g_grouped);
    report("matmul_grouped_i8", shape, max_err(got, want, (long)rows * N, 0), 0);
    cudaFree(dx), cudaFree(dw), cudaFree(dsx), cudaFree(dsw), cudaFree(dy), cudaFree(dt);
    free(offs), free(xq), free(wq), free(sx), free(sw), free(want), free(got), free(tiles);
}

// GPTQ: cuSOLVER's factors and cuBLAS's sums differ from LAPACK's in rounding, which can flip a
// code near a rounding boundary and carry on through the later columns; so the test asks for
// >= 99% equal codes and an output error sum ||X W^T - X Wq^T||^2 within 1% of the CPU's.
static void op_gptq(int rows, int cols, int T, GptqOrder order, QuantSpec q) {
    float *w = randv((long)rows * cols, 0.05f), *x = randv((long)T * cols, 1);
    for (int t = 0; t < T; t++) {
        x[(long)t * cols + 3] = 0;                            // a dead input column
        x[(long)t * cols + 5] = 0.8f * x[(long)t * cols + 4]; // correlated inputs
    }
    Hessian hs;
    hessian_init(&hs, cols);
    hessian_add(&hs, x, T);
    float* h = xmalloc(sizeof(float) * cols * cols);
    hessian_get(&hs, h);
    GptqOpts o = gptq_defaults;
    o.order = order;
    float *want = xmalloc(sizeof(float) * rows * cols), *got = xmalloc(sizeof(float) * rows * cols);
    int fc = gptq_quantize(want, w, h, rows, cols, q, o, NULL);
    int fg = gpu_gptq_quantize(got, w, h, rows, cols, q, o, NULL);
    long same = 0, n = (long)rows * cols;
    for (long i = 0; i < n; i++) same += fabsf(got[i] - want[i]) <= 1e-6f * fabsf(want[i]);
    double ec = 0, eg = 0;
    float* d = xmalloc(sizeof(float) * cols);
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < T; t++) {
            double sc = 0, sg = 0;
            for (int k = 0; k < cols; k++) {
                float xv = x[(long)t * cols + k], wv = w[(long)r * cols + k];
                sc += xv * (wv - want[(long)r * cols + k]);
                sg += xv * (wv - got[(long)r * cols + k]);
            }
            ec += sc * sc, eg += sg * sg;
        }
    char name[160];
    snprintf(name, sizeof(name), "gpu op gptq (%d x %d, order %d, int%d) = cpu", rows, cols, order, q.bits);
    CHECK(fc == 0 && fg == 0 && same >= 0.99 * n && fabs(eg - ec) <= 0.01 * ec, name,
          "fallback cpu %d gpu %d, %.3f%% codes equal, output error %g vs %g", fc, fg, 100.0 * same / n, eg,
          ec);
    hessian_free(&hs);
    free(w), free(x), free(h), free(want), free(got), free(d);
}

// A Hessian that is not positive definite (a negative diagonal) or not finite (a NaN on it): both
// engines fall back to round-to-nearest, the GPU deciding on the device after inverting in vain.
static void op_gptq_fallback(int rows, int cols, int nan) {
    float* w = randv((long)rows * cols, 0.05f);
    float* h = xcalloc((size_t)cols * cols, sizeof(float));
    for (int i = 0; i < cols; i++) h[(long)i * cols + i] = -1.0f - 0.01f * i;
    if (nan) h[(long)7 * cols + 7] = NAN, h[0] = 1.0f; // else potrf fails at the first column
    QuantSpec q = {.bits = 4, .narrow = 0, .ct = 1};
    float *want = xmalloc(sizeof(float) * rows * cols), *got = xmalloc(sizeof(float) * rows * cols);
    int fc = gptq_quantize(want, w, h, rows, cols, q, gptq_defaults, NULL);
    int fg = gpu_gptq_quantize(got, w, h, rows, cols, q, gptq_defaults, NULL);
    long same = 0, n = (long)rows * cols;
    for (long i = 0; i < n; i++) same += got[i] == want[i];
    char name[160];
    snprintf(name, sizeof(name), "gpu op gptq fallback to round-to-nearest (%s, %d x %d) = cpu",
             nan ? "NaN diagonal" : "not positive definite", rows, cols);
    CHECK(fc == 1 && fg == 1 && same == n, name, "fallback cpu %d gpu %d, %ld of %ld weights equal", fc, fg,
          same, n);
    free(w), free(h), free(want), free(got);
}

// The Gated DeltaNet core (gated_delta.cu, the delta rule chunked) against the CPU's token-by-token
// gated_delta.c on each of nb windows: forward and every input's gradient, fp32 both, within 1e-4
// (forward) and 5e-4 (backward) of the tensor's largest value; the GPU's time per call printed for the
// largest shapes. Twice: the plain kernels (AUTOQ_GDN_FAST=0) and the fast ones (511: shared memory, 3xTF32
// tensor cores), or once with the mask AUTOQ_GDN_FAST holds when it is set.
static void op_gated_delta(int nb, int T, int Hk, int Hv, int dk, int dv, int K) {
    GdnShape s = {T, Hk, Hv, dk, dv, K, 1e-6f};
    long C = gdn_channels(&s), nq = (long)T * C, nv = (long)T * Hv * dv, nh = (long)T * Hv;
    long n[5] = {nv, nq, nv, nh, nh}; // per window: out (and dz), dqkv, dz, db, da
    float *qkv = randv(nb * nq, 2), *z = randv(nb * nv, 2), *b = randv(nb * nh, 3), *a = randv(nb * nh, 3);
    float *dout = randv(nb * nv, 1), *w = randv(C * K, 0.8f), *A_log = randv(Hv, 2), *dt = randv(Hv, 0.5f);
    float* nw = randv(dv, 0.3f);
    // A_log in [-5, -1]: per-token decays from ~0.3 to ~0.9997, so that states carry across chunks
    for (int i = 0; i < Hv; i++) A_log[i] -= 3;
    for (int i = 0; i < dv; i++) nw[i] += 1;
    float *want[5], *got[5];
    for (int i = 0; i < 5; i++) want[i] = xmalloc(4 * nb * n[i]), got[i] = zeros(4 * nb * n[i]);
    GdnParams p = {w, A_log, dt, nw};
    GdnCache* c = gdn_cache_init(&s);
    for (int e = 0; e < nb; e++) {
        gdn_forward(&s, &p, qkv + e * nq, z + e * nv, b + e * nh, a + e * nh, want[0] + e * nv, c);
        gdn_backward(&s, &p, c, dout + e * nv, want[1] + e * nq, want[2] + e * nv, want[3] + e * nh,
                     want[4] + e * nh);
    }
    gdn_cache_free(c);
    GdnParams dp = {put(w, 4 * C * K), put(A_log, 4 * Hv), put(dt, 4 * Hv), put(nw, 4 * dv)};
    float *dqkv = put(qkv, 4 * nb * nq), *dz = put(z, 4 * nb * nv), *db = put(b, 4 * nb * nh);
    float *da = put(a, 4 * nb * nh), *ddout = put(dout, 4 * nb * nv);
    GdnGpuCache* gc = gpu_gdn_cache_init(&s, nb);
    const char* env = getenv("AUTOQ_GDN_FAST");
    static const char* masks[2] = {"0", "511"};
    for (int m = 0; m < (env ? 1 : 2); m++) {
        if (!env) setenv("AUTOQ_GDN_FAST", masks[m], 1);
        const char* mask = getenv("AUTOQ_GDN_FAST");
        const char* kind = !strcmp(mask, "0") ? "plain" : !strcmp(mask, "511") ? "fast" : mask;
        gpu_gdn_forward(&s, nb, &dp, dqkv, dz, db, da, got[0], gc);
        gpu_gdn_backward(&s, nb, &dp, gc, ddout, got[1], got[2], got[3], got[4]);
        char shape[128];
        snprintf(shape, sizeof(shape), "(%s, windows %d, T %d, Hk %d, Hv %d, dk %d, dv %d, K %d)", kind, nb, T,
                 Hk, Hv, dk, dv, K);
        static const char* what[5] = {"gated_delta forward", "gated_delta dqkv", "gated_delta dz",
                                      "gated_delta db", "gated_delta da"};
        for (int i = 0; i < 5; i++) {
            float* h = xmalloc(4 * nb * n[i]);
            get(h, got[i], 4 * nb * n[i]);
            report(what[i], shape, max_err(h, want[i], nb * n[i], 0), i ? 5e-4 : 1e-4);
            free(h);
        }
        if (T >= 512) {
            cudaEvent_t e0, e1, e2;
            cudaEventCreate(&e0), cudaEventCreate(&e1), cudaEventCreate(&e2);
            cudaEventRecord(e0, 0);
            gpu_gdn_forward(&s, nb, &dp, dqkv, dz, db, da, got[0], gc);
            cudaEventRecord(e1, 0);
            gpu_gdn_backward(&s, nb, &dp, gc, ddout, got[1], got[2], got[3], got[4]);
            cudaEventRecord(e2, 0);
            cudaEventSynchronize(e2);
            float f, bw;
            cudaEventElapsedTime(&f, e0, e1), cudaEventElapsedTime(&bw, e1, e2);
            printf("  gated_delta %s: GPU forward %.3f ms, backward %.3f ms; cache %.1f MiB\n", shape, f, bw,
                   gpu_gdn_cache_bytes(&s, nb) / 1048576.0);
            cudaEventDestroy(e0), cudaEventDestroy(e1), cudaEventDestroy(e2);
        }
    }
    if (!env) unsetenv("AUTOQ_GDN_FAST");
    gpu_gdn_cache_free(gc);
    cudaFree((void*)dp.conv_w), cudaFree((void*)dp.A_log), cudaFree((void*)dp.dt_bias),
        cudaFree((void*)dp.norm_w);
    cudaFree(dqkv), cudaFree(dz), cudaFree(db), cudaFree(da), cudaFree(ddout);
    for (int i = 0; i < 5; i++) cudaFree(got[i]), free(want[i]);
    free(qkv), free(z), free(b), free(a), free(dout), free(w), free(A_log), free(dt), free(nw);
}

// Every gated-delta shape; large: also the Qwen3.5-35B-A3B ones (seconds of CPU reference each).
static void gated_delta_ops(int large) {
    op_gated_delta(1, 70, 2, 4, 16, 8, 4);   // Hv > Hk, two chunks, the second partial
    op_gated_delta(1, 64, 1, 1, 32, 40, 2);  // one full chunk, dv not a multiple of 32
    op_gated_delta(3, 100, 2, 2, 64, 64, 4); // three windows of two chunks
    op_gated_delta(2, 130, 2, 4, 40, 24, 3); // dk, dv not multiples of 16 (the fast tiles' padding)
    if (!large) return;
    op_gated_delta(1, 512, 16, 32, 128, 128, 4); // Qwen3.5-35B-A3B's linear-attention layer
    op_gated_delta(4, 512, 16, 32, 128, 128, 4); // four of its windows
    op_gated_delta(2, 300, 16, 32, 128, 128, 4); // its heads, windows of five chunks, the last partial
}
#endif

// The hybrid families' (1 + w) RMSNorm: gpu_rmsnorm_add with w_add 1 against the CPU's norm of w + 1 (the
// CPU adds 1 at load), forward and backward.
static void op_rmsnorm_plus1(int M, int C) {
    long n = (long)M * C;
    float *x = randv(n, 3), *w = randv(C, 0.5f), *dout = randv(n, 1);
    uint16_t* w16 = to_bf16(w, C);
    float *w1 = xmalloc(4 * C), *want = xmalloc(4 * n), *got = xmalloc(4 * n), *rstd = xmalloc(4 * M);
    for (int i = 0; i < C; i++) w1[i] = w[i] + 1.0f;
    rmsnorm_forward(want, rstd, x, w1, M, C, 1e-6f);
    void *dx = put(x, 4 * n), *dw = put(w16, 2 * C), *dout_ = zeros(4 * n), *dr = zeros(4 * M);
    gpu_rmsnorm_add(dout_, NULL, NULL, dr, dx, dw, 1.0f, M, C, 1e-6f, 0);
    get(got, dout_, 4 * n);
    char shape[64];
    snprintf(shape, sizeof(shape), "(M %d, C %d)", M, C);
    report("rmsnorm (1 + w)", shape, max_err(got, want, n, 0), 1e-6);
    float* bwant = xcalloc(n, 4);
    rmsnorm_backward(bwant, dout, x, w1, rstd, M, C, 0);
    void *ddx = zeros(4 * n), *ddo = put(dout, 4 * n);
    gpu_rmsnorm_backward_add(ddx, ddo, dx, dw, 1.0f, dr, M, C, 0);
    get(got, ddx, 4 * n);
    report("rmsnorm_backward (1 + w)", shape, max_err(got, bwant, n, 0), 1e-5);
    cudaFree(dx), cudaFree(dw), cudaFree(dout_), cudaFree(dr), cudaFree(ddx), cudaFree(ddo);
    free(x), free(w), free(w16), free(w1), free(dout), free(want), free(got), free(rstd), free(bwant);
}

// The q/k norm with (1 + w) weights and partial RoPE (the first rd of each head) on q_proj rows that carry
// query then gate per head (head stride 2 hd): against the CPU's rmsnorm_forward + rope_forward_heads of the
// query part, and the backward against rope_backward_heads + rmsnorm_backward.
static void op_qk_norm_rope_part(int T, int nh, int hd, int rd, int gated) {
    long n = (long)T * nh * hd, hs = gated ? 2 * hd : hd, ld = nh * hs, nx = (long)T * ld;
    float *x = randv(nx, 1), *w = randv(hd, 0.3f), *want = xmalloc(4 * n), *got = xmalloc(4 * n);
    uint16_t* w16 = to_bf16(w, hd);
    float *w1 = xmalloc(4 * hd), *xq = xmalloc(4 * n), *rstd = xmalloc(4L * T * nh);
    for (int i = 0; i < hd; i++) w1[i] = w[i] + 1.0f;
    for (long r = 0; r < (long)T * nh; r++) memcpy(xq + r * hd, x + r * hs, 4L * hd); // the query part
    RopeTable rt;
    rope_init(&rt, T, rd, 1e4);
    rmsnorm_forward(want, rstd, xq, w1, T * nh, hd, 1e-6f);
    rope_forward_heads(want, &rt, T, nh, hd);
    void *dx = put(x, 4 * nx), *dw = put(w16, 2 * hd), *dr = zeros(4L * T * nh), *dhi = zeros(2 * n),
         *dlo = zeros(2 * n);
    void *dcos = put(rt.cos, 4L * T * rd / 2), *dsin = put(rt.sin, 4L * T * rd / 2);
    gpu_qk_norm_rope_part(dhi, dlo, dr, dx, ld, hs, dw, 1.0f, dcos, dsin, T, T, nh, hd, rd, 1e-6f, 0);
    uint16_t *hi = xmalloc(2 * n), *lo = xmalloc(2 * n);
    get(hi, dhi, 2 * n), get(lo, dlo, 2 * n);
    for (long i = 0; i < n; i++) got[i] = bf16_to_f32(hi[i]) + bf16_to_f32(lo[i]);
    char shape[80];
    snprintf(shape, sizeof(shape), "(T %d, heads %d, head_dim %d, rotary %d%s)", T, nh, hd, rd,
             gated ? ", gated rows" : "");
    report("qk_norm_rope_part", shape, max_err(got, want, n, 0), 1e-5);
    float *d = randv(n, 1), *tmp = xmalloc(4 * n), *bq = xmalloc(4 * n), *bwant = xcalloc(nx, 4),
          *bgot = xmalloc(4 * nx);
    memcpy(tmp, d, 4 * n);
    rope_backward_heads(tmp, &rt, T, nh, hd);
    rmsnorm_backward(bq, tmp, xq, w1, rstd, T * nh, hd, 0);
    for (long r = 0; r < (long)T * nh; r++) memcpy(bwant + r * hs, bq + r * hd, 4L * hd);
    void *dd = put(d, 4 * n), *ddx = zeros(4 * nx);
    gpu_qk_norm_rope_part_backward(ddx, ld, hs, dd, dx, dw, 1.0f, dr, dcos, dsin, T, T, nh, hd, rd);
    get(bgot, ddx, 4 * nx);
    report("qk_norm_rope_part_backward", shape, max_err(bgot, bwant, nx, 0), 1e-5);
    rope_free(&rt);
    cudaFree(dx), cudaFree(dw), cudaFree(dr), cudaFree(dhi), cudaFree(dlo), cudaFree(dcos), cudaFree(dsin);
    cudaFree(dd), cudaFree(ddx);
    free(x), free(w), free(w16), free(w1), free(xq), free(rstd), free(want), free(got), free(hi), free(lo);
    free(d), free(tmp), free(bq), free(bwant), free(bgot);
}

// The attention output gate on q_proj rows of query then gate per head, forward (with bf16 halves) and
// backward, against hybrid.c.
static void op_attn_gate(int M, int H, int hd) {
    long n = (long)M * H * hd, ldg = 2L * H * hd, hsg = 2L * hd;
    float *att = randv(n, 2), *q = randv((long)M * ldg, 4), *dout = randv(n, 1);
    float *want = xmalloc(4 * n), *got = xmalloc(4 * n);
    attn_gate_forward(want, att, q + hd, ldg, hsg, M, H, hd);
    void *da = put(att, 4 * n), *dq = put(q, 4L * M * ldg), *dout_ = zeros(4 * n), *dhi = zeros(2 * n),
         *dlo = zeros(2 * n);
    gpu_attn_gate(dout_, dhi, dlo, da, (float*)dq + hd, ldg, hsg, M, H, hd, 0);
    get(got, dout_, 4 * n);
    char shape[64];
    snprintf(shape, sizeof(shape), "(M %d, heads %d, head_dim %d)", M, H, hd);
    report("attn_gate", shape, max_err(got, want, n, 0), 1e-6);
    float *bd = xmalloc(4 * n), *bg = xcalloc((long)M * ldg, 4), *gd = xmalloc(4 * n),
          *gg = xmalloc(4L * M * ldg);
    attn_gate_backward(bd, bg + hd, dout, att, q + hd, ldg, hsg, M, H, hd);
    void *ddo = put(dout, 4 * n), *dgate = zeros(4L * M * ldg);
    gpu_attn_gate_backward(ddo, (float*)dgate + hd, ddo, da, (float*)dq + hd, ldg, hsg, M, H, hd); // in place
    get(gd, ddo, 4 * n), get(gg, dgate, 4L * M * ldg);
    report("attn_gate_backward", shape, fmax(max_err(gd, bd, n, 0), max_err(gg, bg, (long)M * ldg, 0)), 1e-6);
    cudaFree(da), cudaFree(dq), cudaFree(dout_), cudaFree(dhi), cudaFree(dlo), cudaFree(ddo), cudaFree(dgate);
    free(att), free(q), free(dout), free(want), free(got), free(bd), free(bg), free(gd), free(gg);
}

// Columns gathered from and scattered to a wider matrix (Qwen3-Next's fused projections), by a permutation.
static void op_cols(long M, int n, int ld) {
    float *in = randv(M * ld, 1), *want = xmalloc(4 * M * n), *got = xmalloc(4 * M * n);
    int* map = xmalloc(sizeof(int) * n);
    for (int j = 0; j < n; j++) map[j] = (int)((7L * j + 3) % ld); // distinct while gcd(7, ld) = 1
    gather_cols(want, in, map, M, n, ld);
    void *din = put(in, 4 * M * ld), *dmap = put(map, sizeof(int) * n), *dout = zeros(4 * M * n);
    gpu_gather_cols(dout, din, dmap, M, n, ld);
    get(got, dout, 4 * M * n);
    char shape[64];
    snprintf(shape, sizeof(shape), "(M %ld, %d of %d columns)", M, n, ld);
    report("gather_cols", shape, max_err(got, want, M * n, 0), 0);
    float *swant = randv(M * ld, 1), *sgot = xmalloc(4 * M * ld);
    void* dw = put(swant, 4 * M * ld);
    scatter_cols(swant, ld, want, map, M, n);
    gpu_scatter_cols(dw, ld, dout, dmap, M, n);
    get(sgot, dw, 4 * M * ld);
    report("scatter_cols", shape, max_err(sgot, swant, M * ld, 0), 0);
    cudaFree(din), cudaFree(dmap), cudaFree(dout), cudaFree(dw);
    free(in), free(want), free(got), free(map), free(swant), free(sgot);
}

// The shared expert's sigmoid gate, forward (h += s y) and backward (dy, dm +=), against hybrid.c.
static void op_shared_gate(int M, int D) {
    long n = (long)M * D;
    float *h = randv(n, 1), *m = randv(n, 1), *w = randv(D, 0.2f), *y = randv(n, 2), *dh = randv(n, 1);
    uint16_t* w16 = to_bf16(w, D);
    float *hw = xmalloc(4 * n), *s = xmalloc(4 * M), *got = xmalloc(4 * n), *sg = xmalloc(4 * M);
    memcpy(hw, h, 4 * n);
    shared_gate_forward(hw, s, m, w, y, M, D);
    void *dh_ = put(h, 4 * n), *dm_ = put(m, 4 * n), *dw = put(w16, 2 * D), *dy = put(y, 4 * n),
         *ds = zeros(4 * M);
    gpu_shared_gate(dh_, ds, dm_, dw, dy, M, D);
    get(got, dh_, 4 * n), get(sg, ds, 4 * M);
    char shape[64];
    snprintf(shape, sizeof(shape), "(M %d, D %d)", M, D);
    report("shared_gate", shape, fmax(max_err(got, hw, n, 0), max_err(sg, s, M, 0)), 1e-5);
    float *bdy = xmalloc(4 * n), *bdm = randv(n, 1), *gdy = xmalloc(4 * n), *gdm = xmalloc(4 * n);
    void *ddm = put(bdm, 4 * n), *ddy = zeros(4 * n), *ddh = put(dh, 4 * n), *ds2 = put(s, 4 * M);
    shared_gate_backward(bdy, bdm, dh, s, y, w, M, D);
    gpu_shared_gate_backward(ddy, ddm, ddh, ds2, dy, dw, M, D);
    get(gdy, ddy, 4 * n), get(gdm, ddm, 4 * n);
    report("shared_gate_backward", shape, fmax(max_err(gdy, bdy, n, 0), max_err(gdm, bdm, n, 0)), 1e-5);
    cudaFree(dh_), cudaFree(dm_), cudaFree(dw), cudaFree(dy), cudaFree(ds), cudaFree(ddm), cudaFree(ddy);
    cudaFree(ddh), cudaFree(ds2);
    free(h), free(m), free(w), free(w16), free(y), free(dh), free(hw), free(s), free(got), free(sg), free(bdy);
    free(bdm), free(gdy), free(gdm);
}

// The KV-cache fake-quantizer (gpu_kv_fake_quant) against quant_kv_tensor, window by window (each window's
// amax, per tensor): from fp32 (equal to the last bit, and the copy y exact), and in place in bf16 GEMM inputs
// of row stride ld: hi + lo (the quantized value to ~16 bits: within 2^-15 of the window's largest) and hi
// alone (within bf16's 2^-8). Windows span magnitudes 2^-12 .. 2^6.
static void op_kv_quant(int nb, int T, int KV, int hd, QuantSpec q, const char* label) {
    int width = KV * hd;
    long ld = 3L * width, rows = (long)nb * T, n = rows * width, wn = (long)T * width;
    float *x = randv(n, 1), *want = xmalloc(4 * n), *got = xmalloc(4 * n), *got2 = xmalloc(4 * n);
    for (long i = 0; i < n; i++) x[i] *= ldexpf(1.0f, (int)(i / wn) * 3 % 19 - 12);
    for (int w = 0; w < nb; w++) quant_kv_tensor(want + w * wn, x + w * wn, T * KV, hd, q);
    float *dx = put(x, 4 * n), *dy = zeros(4 * n), *dq = zeros(4 * n), *amax = zeros(4 * nb);
    gpu_kv_fake_quant(dq, dy, NULL, NULL, dx, width, nb, T, width, q, amax);
    char op[64], shape[96];
    snprintf(shape, sizeof(shape), "(%d windows of %d, %d kv heads x %d)", nb, T, KV, hd);
    get(got, dq, 4 * n);
    get(got2, dy, 4 * n);
    snprintf(op, sizeof(op), "kv_fake_quant f32 %s", label);
    report(op, shape, max_err(got, want, n, 0), 0);
    snprintf(op, sizeof(op), "kv_fake_quant f32 copy %s", label);
    report(op, shape, max_err(got2, x, n, 0), 0);
    // the GEMM inputs: hi + lo halves of x at stride ld (columns width .. 2 width of each row)
    uint16_t *hi = xcalloc(rows * ld, 2), *lo = xcalloc(rows * ld, 2);
    float* xs = xmalloc(4 * n);
    for (long r = 0; r < rows; r++)
        for (int c = 0; c < width; c++) {
            float v = x[r * width + c];
            uint16_t h = f32_to_bf16(v);
            hi[r * ld + width + c] = h;
            lo[r * ld + width + c] = f32_to_bf16(v - bf16_to_f32(h));
            xs[r * width + c] = bf16_to_f32(h) + bf16_to_f32(lo[r * ld + width + c]);
        }
    for (int with_lo = 1; with_lo >= 0; with_lo--) {
        if (!with_lo)
            for (long i = 0; i < n; i++) xs[i] = bf16_to_f32(f32_to_bf16(x[i]));
        for (int w = 0; w < nb; w++) quant_kv_tensor(want + w * wn, xs + w * wn, T * KV, hd, q);
        uint16_t *dh = put(hi, 2 * rows * ld), *dl = with_lo ? put(lo, 2 * rows * ld) : NULL;
        gpu_kv_fake_quant(NULL, NULL, dh + width, dl ? dl + width : NULL, NULL, ld, nb, T, width, q, amax);
        uint16_t *gh = xmalloc(2 * rows * ld), *gl = xmalloc(2 * rows * ld);
        get(gh, dh, 2 * rows * ld);
        if (dl) get(gl, dl, 2 * rows * ld);
        int untouched = 1;
        for (long r = 0; r < rows; r++)
            for (long c = 0; c < ld; c++) {
                long i = r * ld + c;
                if (c >= width && c < 2 * width)
                    got[r * width + c - width] = bf16_to_f32(gh[i]) + (dl ? bf16_to_f32(gl[i]) : 0.0f);
                else
                    untouched &= gh[i] == hi[i];
            }
        snprintf(op, sizeof(op), "kv_fake_quant %s %s", with_lo ? "bf16 hi+lo" : "bf16", label);
        report(op, shape, untouched ? max_err(got, want, n, 0) : 1e30, with_lo ? 1.0 / 32768 : 1.0 / 256);
        cudaFree(dh), cudaFree(dl);
        free(gh), free(gl);
    }
    cudaFree(dx), cudaFree(dy), cudaFree(dq), cudaFree(amax);
    free(x), free(want), free(got), free(got2), free(hi), free(lo), free(xs);
}

#ifdef AUTOQ_CUDA
// The grouped GEMMs under every kernel: the default, wgmma and the persistent TMA one (its schedule
// by shape, then each forced) where the device is sm_90 (else mma.sync each time), then mma.sync.
static void grouped_ops(void) {
    const char* kinds[] = {NULL, "wgmma", "tma", "tma-pingpong", "tma-cooperative", "mma"};
    const char* names[] = {", default kernel", ", wgmma",           ", tma",
                           ", tma ping-pong",  ", tma cooperative", ", mma.sync"};
    for (int k = 0; k < 6; k++) {
        g_grouped = names[k];
        if (k) setenv("AUTOQ_MOE_GEMM", kinds[k], 1);
        g_ragged = 1; // expert sizes at the tile's edges; K, N off the tiles (224 = 3.5 x 64, 200, 784)
        op_grouped(9, 224, 200, 0, 0, 0);
        op_grouped(9, 224, 200, 0, 1, 0);
        op_grouped(9, 200 / 8 * 8 + 24, 200, 1, 0, 0);
        op_grouped(9, 96, 264, 1, 1, 0);
        op_grouped(9, 224, 200, 0, 0, 1);
        op_grouped(9, 224, 200, 1, 0, 1);
        op_grouped_i8(9, 784, 200);
        op_grouped_i8(9, 2048, 264);
        g_ragged = 0;
        g_interleaved = 1; // the engine's up half of a fused gate and up block
        op_grouped(7, 256, 200, 0, 0, 0);
        op_grouped(7, 256, 200, 0, 1, 0);
        op_grouped(7, 256, 200, 1, 0, 0);
        g_interleaved = 0;
        op_grouped(8, 64, 32, 0, 1, 0);
        op_grouped(8, 32, 64, 1, 1, 0);
        op_grouped(13, 256, 200, 0, 0, 0);
        op_grouped(13, 200 / 8 * 8 + 24, 96, 1, 0, 0);
        op_grouped(5, 2048, 768, 0, 1, 0);
        op_grouped(5, 768, 2048, 1, 1, 0);
        op_grouped(5, 2048, 768, 1, 0, 0);
        op_grouped(13, 256, 200, 0, 0, 1);
        op_grouped(13, 200 / 8 * 8 + 24, 96, 1, 0, 1);
        op_grouped(5, 2048, 768, 0, 0, 1);
        op_grouped(5, 768, 2048, 1, 0, 1);
        op_grouped_i8(8, 32, 64);
        op_grouped_i8(8, 64, 32);
        op_grouped_i8(13, 2048, 768);
        op_grouped_i8(13, 784, 200);
    }
    unsetenv("AUTOQ_MOE_GEMM");
}
#endif

int main(void) {
    if (gpu_device_count() == 0) {
        SKIP("gpu ops", "no CUDA device (or built without nvcc)");
        return 0;
    }
#ifdef AUTOQ_CUDA
    printf("  device: %s\n", gpu_name());
    // AUTOQ_TEST_ONLY=gated_delta (or gated_delta_small: without the large shapes): only the gated-delta ops
    const char* only = getenv("AUTOQ_TEST_ONLY");
    if (only && !strcmp(only, "grouped")) { // AUTOQ_TEST_ONLY=grouped: only the experts' grouped GEMMs
        grouped_ops();
        return g_fail ? 1 : 0;
    }
    if (only && !strncmp(only, "gated_delta", 11)) {
        gated_delta_ops(strcmp(only, "gated_delta_small") != 0);
        return g_fail ? 1 : 0;
    }
    op_embed(37, 320, 101);
    op_split_add(4099);
    op_rmsnorm(37, 320);
    op_rmsnorm(5, 4096);
    op_qk_norm_rope(16, 4, 64);
    op_qk_norm_rope(8, 3, 128);
    op_rmsnorm_plus1(37, 320);
    op_qk_norm_rope_part(24, 4, 16, 4, 1);  // the hybrid fixtures' shape (partial_rotary_factor 0.25)
    op_qk_norm_rope_part(9, 3, 256, 64, 1); // Qwen3.5 / Qwen3-Next (head_dim 256, factor 0.25)
    op_qk_norm_rope_part(5, 2, 128, 128, 0);
    op_attn_gate(37, 4, 16);
    op_attn_gate(9, 3, 256);
    op_cols(37, 96, 131);
    op_shared_gate(37, 64);
    op_shared_gate(5, 2048);
    op_swiglu(4 * 999);
    op_swiglu(8 * 1000);
    for (int f16 = 0; f16 < 2; f16++) {
        op_flash(128, 4, 2, 64, 2, f16);
        op_flash(128, 4, 2, 128, 2, f16);
        op_flash(64, 8, 1, 128, 1, f16);
    }
    op_softmax_ds(6, 33);
    op_sum_heads(37, 2, 3, 8);
    op_quant(37, 320, (QuantSpec){.bits = 4, .narrow = 1, .ct = 0});
    op_quant(37, 320, (QuantSpec){.bits = 8, .narrow = 1, .ct = 0});
    op_quant(37, 320, (QuantSpec){.bits = 4, .narrow = 0, .ct = 1});
    op_quant(37, 320, (QuantSpec){.bits = 8, .narrow = 0, .ct = 1});
    op_quant(1001, 2048,
             (QuantSpec){.bits = 4, .narrow = 1, .ct = 0}); // rows not a multiple of a block's 8 warps
    op_fake_quant(37, 320, (QuantSpec){.bits = 8, .kind = QUANT_FP8_E4M3}, "fp8");
    op_fake_quant(37, 320, (QuantSpec){.bits = 8, .ct = 1, .kind = QUANT_FP8_E4M3}, "fp8-ct");
    op_fake_quant(37, 320, (QuantSpec){.bits = 4, .kind = QUANT_FP4_E2M1, .block = 16, .scale = QSCALE_E4M3},
                  "nvfp4");
    op_fake_quant(37, 4096, (QuantSpec){.bits = 4, .kind = QUANT_FP4_E2M1, .block = 16, .scale = QSCALE_E4M3},
                  "nvfp4");
    op_fake_quant(37, 320, (QuantSpec){.bits = 4, .kind = QUANT_FP4_E2M1, .block = 32, .scale = QSCALE_E8M0},
                  "mxfp4");
    op_fake_quant(37, 320, (QuantSpec){.bits = 4, .block = 128}, "int4-g128");
    op_fake_quant(37, 320, (QuantSpec){.bits = 4, .narrow = 0, .ct = 1, .block = 128}, "int4-g128-ct");
    QuantSpec kv_fp8 = {.bits = 8, .kind = QUANT_FP8_E4M3};
    QuantSpec kv_nvfp4 = {.bits = 4, .kind = QUANT_FP4_E2M1, .block = 16, .scale = QSCALE_E4M3};
    op_kv_quant(3, 17, 2, 16, kv_fp8, "kv_fp8"); // qwen3-tiny's KV shape, windows of odd length
    op_kv_quant(3, 17, 2, 16, kv_nvfp4, "kv_nvfp4");
    op_kv_quant(2, 512, 8, 128, kv_fp8, "kv_fp8"); // Qwen3-8B's
    op_kv_quant(2, 512, 8, 128, kv_nvfp4, "kv_nvfp4");
    op_kl(5, 3001);
    op_kl(3, 4096);
    op_cross_entropy(2, 17, 1003);
    op_grad_score(33, 70);
    op_sq_diff_dot(100003);
    op_moe(77, 8, 2, 64, 1);
    op_moe(300, 128, 8, 96, 1);
    op_moe(4096, 128, 8, 64, 1);
    op_moe(50, 60, 4, 32, 0);
    grouped_ops();
    op_gptq(96, 320, 512, GPTQ_ORDER_STATIC, (QuantSpec){.bits = 4, .narrow = 0, .ct = 1});
    op_gptq(64, 300, 256, GPTQ_ORDER_NONE, (QuantSpec){.bits = 4, .narrow = 1, .ct = 0});
    // rows not a multiple of a thread block's 16 warps, more columns than a 1024-column super-block (the
    // last one and the last 128-column block short), a Hessian wider than cuSOLVER's 512-column leaves
    // (the triangular inverse by recursive GEMMs, halves of unequal size)
    op_gptq(100, 2100, 4096, GPTQ_ORDER_STATIC, (QuantSpec){.bits = 4, .narrow = 0, .ct = 1});
    // 96 x 2^4 columns: the batched inverse (16 diagonal blocks of 96, four levels of joins); 320 and 300
    // above take it with blocks of 80 and 75, 2100 the recursion
    op_gptq(48, 1536, 2048, GPTQ_ORDER_STATIC, (QuantSpec){.bits = 4, .narrow = 0, .ct = 1});
    op_gptq_fallback(40, 700, 0);
    op_gptq_fallback(40, 700, 1);
    gated_delta_ops(1);
#endif
    return g_fail ? 1 : 0;
}

// The Gated DeltaNet core on the GPU, fp32 (CPU twin: kernels/gated_delta.c; formulas in gated_delta.h).
// The delta rule in chunked form, as flash-linear-attention computes it. Per value head and chunk of
// L <= CH tokens r = 0..L-1, with gc_r the cumulative log decay from the chunk's start (G_r = e^gc_r),
// gL = gc_{L-1}, h the state at the chunk's start:
//   M = strictly-lower(beta_r (k_r . k_s) G_r / G_s),  Tm = (I + M)^-1   (the UT transform)
//   W = Tm diag(beta G) K,  U = Tm diag(beta) V              (the WY representation)
//   Vn = U - W h                                             (the delta rule's corrected values)
//   O = diag(G) Q h + Aqk Vn,  Aqk = lower-with-diagonal((q_r . k_s) G_r / G_s)
//   h' = e^gL h + K^T diag(e^(gL - gc)) Vn
// Several windows at once (nb): each its own sequence from a zero state.
// Kernels: prep (per chunk: M, Tm, W, U, Aqk), state (sequential over chunks, per value head and block
// of 32 state columns, which evolve independently), out (per chunk). The backward walks the same
// pieces in reverse: dh (sequential, dVn and the state gradients), then per chunk the gradients of
// W, U, Tm (dM = -Tm^T dTm Tm^T), Aqk and the decays. Kernels are plain (one thread per output, fp32
// FMA loops over global memory): simple and correct before fast.
#include <math.h>

#include "cuda_common.cuh"
#include "gated_delta.h"

#define CH GDN_GPU_CHUNK

struct GdnGpuCache {
    GdnShape s;
    int nb; // windows it holds
    // forward: pre (T, C); qhat, khat (T, Hk, dk); rq, rk (T, Hk); v, U, Vn, o, z (T, Hv, dv); W (T, Hv, dk);
    // beta, gc, dgda, rstd (T, Hv); Tm, Aqk (nc, Hv, CH, CH); h (nc, Hv, dk, dv) the state at each chunk's
    // start
    float *pre, *qhat, *khat, *rq, *rk, *v, *U, *Vn, *o, *z, *W, *beta, *gc, *dgda, *rstd, *Tm, *Aqk, *h;
    // backward: dO, dVn, Y (T, Hv, dv); dW, X, dq, dk (T, Hv, dk); dT, P, dM, KK, dA (nc, Hv, CH, CH);
    // dhn (nc, Hv, dk, dv) the gradient of the state at each chunk's end; dact (T, C)
    float *dO, *dVn, *Y, *dW, *X, *dq, *dk, *dT, *P, *dM, *KK, *dA, *dhn, *dact;
};

// Windows are independent and laid one after another: token arrays hold nb T rows, chunk arrays nb nc
// chunks (global chunk cg = window nc + chunk); a chunk never crosses a window.
struct Dims {
    int T, Hk, Hv, dk, dv, K, C, rep, nc, nb;
    float eps, scale;
};

static Dims dims_of(const GdnShape* s, int nb) {
    Dims d;
    d.nb = nb, d.T = s->T, d.Hk = s->Hk, d.Hv = s->Hv, d.dk = s->dk, d.dv = s->dv, d.K = s->K;
    d.C = gdn_channels(s), d.rep = s->Hv / s->Hk, d.nc = (s->T + CH - 1) / CH;
    d.eps = s->eps, d.scale = 1.0f / sqrtf((float)s->dk);
    return d;
}

__device__ inline float sigmoid_d(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ inline float silu_d(float x) { return x / (1.0f + expf(-x)); }
__device__ inline float silu_grad_d(float x) {
    float s = sigmoid_d(x);
    return s * (1.0f + x * (1.0f - s));
}
__device__ inline int chunk_len(const Dims& d, int cg) { return min(CH, d.T - (cg % d.nc) * CH); }
// the global token row of chunk cg's first token
__device__ inline int chunk_t0(const Dims& d, int cg) { return (cg / d.nc) * d.T + (cg % d.nc) * CH; }
// the key head's row of (T, Hk, dk) for token t of value head h
__device__ inline const float* key_row(const float* x, const Dims& d, int t, int h) {
    return x + ((long)t * d.Hk + h / d.rep) * d.dk;
}
__device__ inline long vrow(const Dims& d, int t, int h) { return (long)t * d.Hv + h; }
// (nc, Hv, CH, CH) matrices of chunk c, value head h
__device__ inline long cmat(const Dims& d, int c, int h) { return ((long)c * d.Hv + h) * CH * CH; }
// (nc, Hv, dk, dv) states
__device__ inline long cstate(const Dims& d, int c, int h) { return ((long)c * d.Hv + h) * d.dk * d.dv; }

// ---------------------------------------------------------------------------------------------------
// Forward

// pre (T, C) = causal depthwise conv of x with w (C, K), no bias
__global__ void gdn_conv_kernel(float* pre, const float* x, const float* w, Dims d) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)d.nb * d.T * d.C) return;
    int t = (int)(i / d.C), c = (int)(i % d.C), tl = t % d.T; // tl: the token within its window
    float acc = 0.0f;
    for (int j = 0; j < d.K; j++) {
        int tt = tl - d.K + 1 + j;
        if (tt >= 0) acc += w[(long)c * d.K + j] * x[(long)(t - tl + tt) * d.C + c];
    }
    pre[i] = acc;
}

// One warp per (q or k, token, key head): xhat = silu(pre) / sqrt(sum silu(pre)^2 + 1e-6).
__global__ void gdn_l2norm_kernel(float* qhat, float* khat, float* rq, float* rk, const float* pre, Dims d) {
    long w = ((long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    long n = (long)d.nb * d.T * d.Hk;
    if (w >= 2 * n) return;
    int isk = w >= n;
    long row = w % n; // t * Hk + kh
    int t = (int)(row / d.Hk), kh = (int)(row % d.Hk);
    const float* x = pre + (long)t * d.C + (isk ? d.Hk * d.dk : 0) + (long)kh * d.dk;
    float* y = (isk ? khat : qhat) + row * d.dk;
    float ss = 0.0f;
    for (int i = lane; i < d.dk; i += 32) {
        float s = silu_d(x[i]);
        y[i] = s;
        ss += s * s;
    }
    float r = 1.0f / sqrtf(warp_sum(ss) + 1e-6f);
    __syncwarp();
    for (int i = lane; i < d.dk; i += 32) y[i] *= r;
    if (lane == 0) (isk ? rk : rq)[row] = r;
}

// v (T, Hv, dv) = silu(pre)'s v columns
__global__ void gdn_v_kernel(float* v, const float* pre, Dims d) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    long hv = (long)d.Hv * d.dv;
    if (i >= (long)d.nb * d.T * hv) return;
    long t = i / hv;
    v[i] = silu_d(pre[t * d.C + 2L * d.Hk * d.dk + i % hv]);
}

// One thread per (chunk, value head): beta = sigmoid(b), g = -exp(A_log) softplus(a + dt_bias) summed
// from the chunk's start into gc, and dg/da.
__global__ void gdn_gates_kernel(float* beta, float* gc, float* dgda, const float* b, const float* a,
                                 const float* A_log, const float* dt_bias, Dims d) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= d.nb * d.nc * d.Hv) return;
    int c = i / d.Hv, h = i % d.Hv;
    float A = expf(A_log[h]), cum = 0.0f;
    for (int r = 0; r < chunk_len(d, c); r++) {
        long ti = vrow(d, chunk_t0(d, c) + r, h);
        float x = a[ti] + dt_bias[h];
        beta[ti] = sigmoid_d(b[ti]);
        cum += -A * (x > 20.0f ? x : log1pf(expf(x)));
        gc[ti] = cum;
        dgda[ti] = -A * (x > 20.0f ? 1.0f : sigmoid_d(x));
    }
}

__device__ inline float dotg(const float* a, const float* b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

// One block per (chunk, value head): M, Tm = (I + M)^-1 by forward substitution, W, U, Aqk.
__global__ void gdn_prep_kernel(float* Tm_g, float* W, float* U, float* Aqk, const float* qhat,
                                const float* khat, const float* v, const float* beta, const float* gc, Dims d) {
    __shared__ float M[CH][CH + 1], Tm[CH][CH + 1], sg[CH], sb[CH], sbg[CH]; // sbg: beta e^gc
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c), t0 = chunk_t0(d, c);
    for (int r = threadIdx.x; r < CH; r += blockDim.x) {
        sg[r] = r < L ? gc[vrow(d, t0 + r, h)] : 0.0f;
        sb[r] = r < L ? beta[vrow(d, t0 + r, h)] : 0.0f;
        sbg[r] = sb[r] * expf(sg[r]);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < CH * CH; i += blockDim.x) {
        int r = i / CH, s = i % CH;
        float m = 0.0f, aq = 0.0f;
        if (r < L && s <= r) {
            const float* ks = key_row(khat, d, t0 + s, h);
            float decay = expf(sg[r] - sg[s]);
            if (s < r) m = sb[r] * dotg(key_row(khat, d, t0 + r, h), ks, d.dk) * decay;
            aq = dotg(key_row(qhat, d, t0 + r, h), ks, d.dk) * d.scale * decay;
        }
        M[r][s] = m;
        Tm[r][s] = r == s ? 1.0f : 0.0f;
        Aqk[cmat(d, c, h) + i] = aq;
    }
    __syncthreads();
    // (I + M) Tm = I, Tm unit lower: Tm[r][s] = -sum_{m=s}^{r-1} M[r][m] Tm[m][s]
    for (int r = 1; r < L; r++) {
        for (int s = threadIdx.x; s < r; s += blockDim.x) {
            float acc = 0.0f;
            for (int m = s; m < r; m++) acc += M[r][m] * Tm[m][s];
            Tm[r][s] = -acc;
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < CH * CH; i += blockDim.x) Tm_g[cmat(d, c, h) + i] = Tm[i / CH][i % CH];
    for (int i = threadIdx.x; i < L * d.dk; i += blockDim.x) {
        int r = i / d.dk, j = i % d.dk;
        float acc = 0.0f;
        for (int s = 0; s <= r; s++) acc += Tm[r][s] * sbg[s] * key_row(khat, d, t0 + s, h)[j];
        W[vrow(d, t0 + r, h) * d.dk + j] = acc;
    }
    for (int i = threadIdx.x; i < L * d.dv; i += blockDim.x) {
        int r = i / d.dv, j = i % d.dv;
        float acc = 0.0f;
        for (int s = 0; s <= r; s++) acc += Tm[r][s] * sb[s] * v[vrow(d, t0 + s, h) * d.dv + j];
        U[vrow(d, t0 + r, h) * d.dv + j] = acc;
    }
}

// One block per (value head, 32 state columns), 256 threads (32 columns x 8 row groups); over the chunks
// in order: h[c] = S; Vn = U - W S; S = e^gL S + K^T diag(e^(gL - gc)) Vn. smem: S (dk, 32), the decayed
// Vn (CH, 32).
__global__ void gdn_state_kernel(float* hs, float* Vn, const float* W, const float* U, const float* khat,
                                 const float* gc, Dims d) {
    extern __shared__ float sm[];
    float *S = sm, *sv = sm + d.dk * 32;
    int wnd = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, jj = threadIdx.x % 32, rg = threadIdx.x / 32;
    int j = blockIdx.y * 32 + jj;
    bool ok = j < d.dv;
    for (int i = rg; i < d.dk; i += 8) S[i * 32 + jj] = 0.0f;
    __syncthreads();
    for (int c = wnd * d.nc; c < (wnd + 1) * d.nc; c++) {
        int L = chunk_len(d, c), t0 = chunk_t0(d, c);
        float gL = gc[vrow(d, t0 + L - 1, h)];
        if (ok)
            for (int i = rg; i < d.dk; i += 8) hs[cstate(d, c, h) + (long)i * d.dv + j] = S[i * 32 + jj];
        for (int r = rg; r < L; r += 8) {
            const float* w = W + vrow(d, t0 + r, h) * d.dk;
            float acc = 0.0f;
            for (int i = 0; i < d.dk; i++) acc += w[i] * S[i * 32 + jj];
            float x = ok ? U[vrow(d, t0 + r, h) * d.dv + j] - acc : 0.0f;
            sv[r * 32 + jj] = expf(gL - gc[vrow(d, t0 + r, h)]) * x; // decayed to the chunk's end
            if (ok) Vn[vrow(d, t0 + r, h) * d.dv + j] = x;
        }
        __syncthreads();
        float eL = expf(gL);
        for (int i = rg; i < d.dk; i += 8) {
            float acc = 0.0f;
            for (int r = 0; r < L; r++) acc += key_row(khat, d, t0 + r, h)[i] * sv[r * 32 + jj];
            S[i * 32 + jj] = eL * S[i * 32 + jj] + acc;
        }
        __syncthreads();
    }
}

// One thread per (chunk, value head, r, j) in a grid over (nc Hv) blocks: o = G_r q_r^T h + sum_s Aqk[r][s]
// Vn_s.
__global__ void gdn_out_kernel(float* o, const float* qhat, const float* hs, const float* Aqk, const float* Vn,
                               const float* gc, Dims d) {
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c), t0 = chunk_t0(d, c);
    for (int i = threadIdx.x; i < L * d.dv; i += blockDim.x) {
        int r = i / d.dv, j = i % d.dv;
        const float* q = key_row(qhat, d, t0 + r, h);
        const float* S = hs + cstate(d, c, h);
        float inter = 0.0f, intra = 0.0f;
        for (int k = 0; k < d.dk; k++) inter += q[k] * d.scale * S[(long)k * d.dv + j];
        for (int s = 0; s <= r; s++)
            intra += Aqk[cmat(d, c, h) + r * CH + s] * Vn[vrow(d, t0 + s, h) * d.dv + j];
        o[vrow(d, t0 + r, h) * d.dv + j] = expf(gc[vrow(d, t0 + r, h)]) * inter + intra;
    }
}

// One warp per (token, value head): out = w * o * rstd * silu(z).
__global__ void gdn_norm_kernel(float* out, float* rstd, const float* o, const float* z, const float* w,
                                Dims d) {
    long row = ((long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= (long)d.nb * d.T * d.Hv) return;
    const float *x = o + row * d.dv, *zz = z + row * d.dv;
    float ss = 0.0f;
    for (int j = lane; j < d.dv; j += 32) ss += x[j] * x[j];
    float rs = 1.0f / sqrtf(warp_sum(ss) / d.dv + d.eps);
    if (lane == 0) rstd[row] = rs;
    for (int j = lane; j < d.dv; j += 32) out[row * d.dv + j] = w[j] * (x[j] * rs) * silu_d(zz[j]);
}

// ---------------------------------------------------------------------------------------------------
// Backward

// One warp per (token, value head): dO through the rmsnorm, dz through silu(z).
__global__ void gdn_norm_bwd_kernel(float* dO, float* dz, const float* dout, const float* o, const float* z,
                                    const float* rstd, const float* w, Dims d) {
    long row = ((long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= (long)d.nb * d.T * d.Hv) return;
    const float *x = o + row * d.dv, *zz = z + row * d.dv, *dy = dout + row * d.dv;
    float rs = rstd[row], dot = 0.0f;
    for (int j = lane; j < d.dv; j += 32) {
        dz[row * d.dv + j] = dy[j] * w[j] * (x[j] * rs) * silu_grad_d(zz[j]);
        dot += dy[j] * w[j] * silu_d(zz[j]) * x[j];
    }
    float k = warp_sum(dot) * rs * rs * rs / d.dv;
    for (int j = lane; j < d.dv; j += 32) dO[row * d.dv + j] = dy[j] * w[j] * silu_d(zz[j]) * rs - x[j] * k;
}

// One block per (value head, 32 columns), over the chunks in reverse, dh the gradient of the state at the
// chunk's end (zero after the last): dhn[c] = dh; dVn = Aqk^T dO + diag(e^(gL - gc)) K dh;
// dh = e^gL dh + Q^T diag(G) dO - W^T dVn (the gradient at the chunk's start).
__global__ void gdn_dh_kernel(float* dhn, float* dVn, const float* dO, const float* Aqk, const float* W,
                              const float* qhat, const float* khat, const float* gc, Dims d) {
    extern __shared__ float sm[];
    float *dh = sm, *sv = sm + d.dk * 32, *sdo = sv + CH * 32; // sdo: G_r dO_r times q's scale
    int wnd = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, jj = threadIdx.x % 32, rg = threadIdx.x / 32;
    int j = blockIdx.y * 32 + jj;
    bool ok = j < d.dv;
    for (int i = rg; i < d.dk; i += 8) dh[i * 32 + jj] = 0.0f;
    __syncthreads();
    for (int c = (wnd + 1) * d.nc - 1; c >= wnd * d.nc; c--) {
        int L = chunk_len(d, c), t0 = chunk_t0(d, c);
        float gL = gc[vrow(d, t0 + L - 1, h)];
        if (ok)
            for (int i = rg; i < d.dk; i += 8) dhn[cstate(d, c, h) + (long)i * d.dv + j] = dh[i * 32 + jj];
        for (int r = rg; r < L; r += 8) {
            float acc = 0.0f, st = 0.0f;
            if (ok)
                for (int s = r; s < L; s++)
                    acc += Aqk[cmat(d, c, h) + s * CH + r] * dO[vrow(d, t0 + s, h) * d.dv + j];
            const float* k = key_row(khat, d, t0 + r, h);
            for (int i = 0; i < d.dk; i++) st += k[i] * dh[i * 32 + jj];
            long tr = vrow(d, t0 + r, h);
            float x = acc + expf(gL - gc[tr]) * st;
            sv[r * 32 + jj] = ok ? x : 0.0f;
            sdo[r * 32 + jj] = ok ? d.scale * expf(gc[tr]) * dO[tr * d.dv + j] : 0.0f;
            if (ok) dVn[tr * d.dv + j] = x;
        }
        __syncthreads();
        for (int i = rg; i < d.dk; i += 8) {
            float acc = 0.0f;
            if (ok)
                for (int r = 0; r < L; r++)
                    acc += key_row(qhat, d, t0 + r, h)[i] * sdo[r * 32 + jj] -
                           W[vrow(d, t0 + r, h) * d.dk + i] * sv[r * 32 + jj];
            dh[i * 32 + jj] = expf(gL) * dh[i * 32 + jj] + acc;
        }
        __syncthreads();
    }
}

// dW (T, Hv, dk) = -dVn h^T, per token row of its chunk.
__global__ void gdn_dw_kernel(float* dW, const float* dVn, const float* hs, Dims d) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)d.nb * d.T * d.Hv * d.dk) return;
    long row = i / d.dk;
    int k = (int)(i % d.dk), t = (int)(row / d.Hv), h = (int)(row % d.Hv), cg = t / d.T * d.nc + t % d.T / CH;
    const float *S = hs + cstate(d, cg, h) + (long)k * d.dv, *g = dVn + row * d.dv;
    float acc = 0.0f;
    for (int j = 0; j < d.dv; j++) acc += g[j] * S[j];
    dW[i] = -acc;
}

// One thread per (chunk, head, r, s): dA = dO_r . Vn_s (s <= r); dT = beta_s (G_s dW_r . k_s + dVn_r . v_s),
// KK = (k_r . k_s) G_r / G_s (s < r); zero elsewhere.
__global__ void gdn_pairs_kernel(float* dA, float* dT, float* KK, const float* dO, const float* Vn,
                                 const float* dW, const float* dVn, const float* khat, const float* v,
                                 const float* beta, const float* gc, Dims d) {
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c), t0 = chunk_t0(d, c);
    for (int i = threadIdx.x; i < CH * CH; i += blockDim.x) {
        int r = i / CH, s = i % CH;
        float a = 0.0f, t = 0.0f, kk = 0.0f;
        if (r < L && s <= r) {
            long tr = vrow(d, t0 + r, h), ts = vrow(d, t0 + s, h);
            a = dotg(dO + tr * d.dv, Vn + ts * d.dv, d.dv);
            if (s < r) {
                const float* ks = key_row(khat, d, t0 + s, h);
                t = beta[ts] * (expf(gc[ts]) * dotg(dW + tr * d.dk, ks, d.dk) +
                                dotg(dVn + tr * d.dv, v + ts * d.dv, d.dv));
                kk = dotg(key_row(khat, d, t0 + r, h), ks, d.dk) * expf(gc[tr] - gc[ts]);
            }
        }
        dA[cmat(d, c, h) + i] = a, dT[cmat(d, c, h) + i] = t, KK[cmat(d, c, h) + i] = kk;
    }
}

// P = Tm^T dT (per chunk and head; Tm lower, dT strictly lower)
__global__ void gdn_p_kernel(float* P, const float* Tm, const float* dT, Dims d) {
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c);
    const float *tm = Tm + cmat(d, c, h), *dt = dT + cmat(d, c, h);
    for (int i = threadIdx.x; i < CH * CH; i += blockDim.x) {
        int r = i / CH, b = i % CH;
        float acc = 0.0f;
        for (int a = max(r, b + 1); a < L; a++) acc += tm[a * CH + r] * dt[a * CH + b];
        P[cmat(d, c, h) + i] = acc;
    }
}

// dM = -P Tm^T, strictly lower
__global__ void gdn_dm_kernel(float* dM, const float* P, const float* Tm, Dims d) {
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c);
    const float *tm = Tm + cmat(d, c, h), *p = P + cmat(d, c, h);
    for (int i = threadIdx.x; i < CH * CH; i += blockDim.x) {
        int r = i / CH, s = i % CH;
        float acc = 0.0f;
        if (r < L && s < r)
            for (int b = 0; b <= s; b++) acc += p[r * CH + b] * tm[s * CH + b];
        dM[cmat(d, c, h) + i] = -acc;
    }
}

// X = Tm^T dW (T, Hv, dk) and Y = Tm^T dVn (T, Hv, dv), per chunk: X_s = sum_{r >= s} Tm[r][s] dW_r.
__global__ void gdn_xy_kernel(float* X, float* Y, const float* Tm, const float* dW, const float* dVn, Dims d) {
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c), t0 = chunk_t0(d, c), n = d.dk + d.dv;
    const float* tm = Tm + cmat(d, c, h);
    for (int i = threadIdx.x; i < L * n; i += blockDim.x) {
        int s = i / n, k = i % n;
        bool isx = k < d.dk;
        const float* src = isx ? dW : dVn;
        int w = isx ? d.dk : d.dv, kk = isx ? k : k - d.dk;
        float acc = 0.0f;
        for (int r = s; r < L; r++) acc += tm[r * CH + s] * src[vrow(d, t0 + r, h) * w + kk];
        (isx ? X : Y)[vrow(d, t0 + s, h) * w + kk] = acc;
    }
}

// One thread per (chunk, head, r, i): dq (of the scaled q) and dk for value head h, (T, Hv, dk).
__global__ void gdn_dqk_kernel(float* dq, float* dk, const float* dO, const float* hs, const float* dhn,
                               const float* Vn, const float* dA, const float* dM, const float* X,
                               const float* qhat, const float* khat, const float* beta, const float* gc,
                               Dims d) {
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c), t0 = chunk_t0(d, c);
    const float *da = dA + cmat(d, c, h), *dm = dM + cmat(d, c, h);
    float gL = gc[vrow(d, t0 + L - 1, h)];
    for (int e = threadIdx.x; e < L * d.dk; e += blockDim.x) {
        int r = e / d.dk, i = e % d.dk;
        long tr = vrow(d, t0 + r, h);
        float gr = gc[tr];
        const float *S = hs + cstate(d, c, h) + (long)i * d.dv, *dS = dhn + cstate(d, c, h) + (long)i * d.dv;
        float a = 0.0f, b = 0.0f;
        for (int j = 0; j < d.dv; j++) a += dO[tr * d.dv + j] * S[j], b += dS[j] * Vn[tr * d.dv + j];
        float q = expf(gr) * a, k = expf(gL - gr) * b + beta[tr] * expf(gr) * X[tr * d.dk + i];
        for (int s = 0; s <= r; s++) // Aqk's row r: q_r, and its column r: k_r
            q += da[r * CH + s] * expf(gr - gc[vrow(d, t0 + s, h)]) * key_row(khat, d, t0 + s, h)[i];
        for (int s = r; s < L; s++)
            k += da[s * CH + r] * expf(gc[vrow(d, t0 + s, h)] - gr) * key_row(qhat, d, t0 + s, h)[i] * d.scale;
        for (int s = 0; s < r; s++) // M's row r and column r
            k += dm[r * CH + s] * beta[tr] * expf(gr - gc[vrow(d, t0 + s, h)]) * key_row(khat, d, t0 + s, h)[i];
        for (int s = r + 1; s < L; s++) {
            long ts = vrow(d, t0 + s, h);
            k += dm[s * CH + r] * beta[ts] * expf(gc[ts] - gr) * key_row(khat, d, t0 + s, h)[i];
        }
        dq[tr * d.dk + i] = q;
        dk[tr * d.dk + i] = k;
    }
}

// dv = beta Y into dact's v columns (T, C)
__global__ void gdn_dv_kernel(float* dact, const float* Y, const float* beta, Dims d) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    long hv = (long)d.Hv * d.dv;
    if (i >= (long)d.nb * d.T * hv) return;
    long t = i / hv;
    dact[t * d.C + 2L * d.Hk * d.dk + i % hv] = beta[i / d.dv] * Y[i];
}

// One block of GDN_DG_PARTS x CH threads per (chunk, value head). Thread (part, r) sums its part of the
// O(dk dv) terms of token r (o's inter-chunk part, the state update's k_r Vn_r term, <dh', h>); then thread
// r: dbeta_r and the gradient of gc_r, and thread 0 dg = the reverse cumulative sum of dgc; db, da.
#define GDN_DG_PARTS 4
__global__ void gdn_dgate_kernel(float* db, float* da, const float* dO, const float* hs, const float* dhn,
                                 const float* Vn, const float* v, const float* X, const float* Y,
                                 const float* dA, const float* Aqk, const float* dM, const float* KK,
                                 const float* qhat, const float* khat, const float* beta, const float* gc,
                                 const float* dgda, Dims d) {
    __shared__ float po[GDN_DG_PARTS][CH], pe[GDN_DG_PARTS][CH], ph[GDN_DG_PARTS][CH], dgc[CH];
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c), t0 = chunk_t0(d, c);
    int r = threadIdx.x % CH, part = threadIdx.x / CH;
    long m0 = cmat(d, c, h);
    float gL = gc[vrow(d, t0 + L - 1, h)], oi = 0.0f, er = 0.0f, sh = 0.0f;
    const float *S = hs + cstate(d, c, h), *dS = dhn + cstate(d, c, h);
    if (r < L) {
        long tr = vrow(d, t0 + r, h);
        const float *q = key_row(qhat, d, t0 + r, h), *k = key_row(khat, d, t0 + r, h);
        for (int i = part; i < d.dk; i += GDN_DG_PARTS) {
            float a = 0.0f, b = 0.0f;
            for (int j = 0; j < d.dv; j++)
                a += S[(long)i * d.dv + j] * dO[tr * d.dv + j], b += dS[(long)i * d.dv + j] * Vn[tr * d.dv + j];
            oi += q[i] * d.scale * a, er += k[i] * b;
        }
        long n = (long)d.dk * d.dv, step = (long)L * GDN_DG_PARTS;
        for (long i = r + (long)part * L; i < n; i += step) sh += dS[i] * S[i];
    }
    po[part][r] = oi, pe[part][r] = er, ph[part][r] = sh;
    __syncthreads();
    if (part == 0) {
        float g = 0.0f;
        er = 0.0f, oi = 0.0f;
        for (int p = 0; p < GDN_DG_PARTS; p++) oi += po[p][r], er += pe[p][r];
        if (r < L) {
            long tr = vrow(d, t0 + r, h);
            float gr = gc[tr], kx = dotg(key_row(khat, d, t0 + r, h), X + tr * d.dk, d.dk);
            float dbeta = expf(gr) * kx + dotg(v + tr * d.dv, Y + tr * d.dv, d.dv);
            er *= expf(gL - gr);
            g = beta[tr] * expf(gr) * kx + expf(gr) * oi - er;
            for (int s = 0; s < L; s++) {
                if (s < r) {
                    dbeta += dM[m0 + r * CH + s] * KK[m0 + r * CH + s];
                    g += dM[m0 + r * CH + s] * beta[tr] * KK[m0 + r * CH + s];
                }
                if (s > r) g -= dM[m0 + s * CH + r] * beta[vrow(d, t0 + s, h)] * KK[m0 + s * CH + r];
                if (s <= r) g += dA[m0 + r * CH + s] * Aqk[m0 + r * CH + s];
                if (s >= r) g -= dA[m0 + s * CH + r] * Aqk[m0 + s * CH + r];
            }
            db[tr] = dbeta * beta[tr] * (1.0f - beta[tr]);
        }
        dgc[r] = g;
        pe[0][r] = er; // the decayed e_r, for the sum below
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float esum = 0.0f, hsum = 0.0f;
        for (int s = 0; s < L; s++) esum += pe[0][s];
        for (int p = 0; p < GDN_DG_PARTS; p++)
            for (int s = 0; s < L; s++) hsum += ph[p][s];
        dgc[L - 1] += esum + expf(gL) * hsum; // h' = e^gL h + sum_r e^(gL - gc_r) k_r Vn_r^T
        float acc = 0.0f;
        for (int s = L - 1; s >= 0; s--) {
            acc += dgc[s];
            long ts = vrow(d, t0 + s, h);
            da[ts] = acc * dgda[ts];
        }
    }
}

// One warp per (q or k, token, key head): the value heads' gradients summed, times mult (q's scale), back
// through the L2 norm into dact's q / k columns (still before silu').
__global__ void gdn_l2norm_bwd_kernel(float* dact, const float* dq, const float* dk, const float* qhat,
                                      const float* khat, const float* rq, const float* rk, Dims d) {
    long w = ((long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    long n = (long)d.nb * d.T * d.Hk;
    if (w >= 2 * n) return;
    int isk = w >= n;
    long row = w % n;
    int t = (int)(row / d.Hk), kh = (int)(row % d.Hk);
    const float *src = isk ? dk : dq, *y = (isk ? khat : qhat) + row * d.dk;
    float mult = isk ? 1.0f : d.scale, r = (isk ? rk : rq)[row], dot = 0.0f;
    for (int i = lane; i < d.dk; i += 32) {
        float g = 0.0f;
        for (int m = 0; m < d.rep; m++) g += src[vrow(d, t, kh * d.rep + m) * d.dk + i];
        dot += g * mult * y[i];
    }
    dot = warp_sum(dot);
    float* dst = dact + (long)t * d.C + (isk ? d.Hk * d.dk : 0) + (long)kh * d.dk;
    for (int i = lane; i < d.dk; i += 32) {
        float g = 0.0f;
        for (int m = 0; m < d.rep; m++) g += src[vrow(d, t, kh * d.rep + m) * d.dk + i];
        dst[i] = r * (g * mult - y[i] * dot);
    }
}

// dqkv (T, C): through silu' and the conv's transpose.
__global__ void gdn_conv_bwd_kernel(float* dqkv, const float* dact, const float* pre, const float* w, Dims d) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)d.nb * d.T * d.C) return;
    int t = (int)(i / d.C), c = (int)(i % d.C), tl = t % d.T;
    float acc = 0.0f;
    for (int j = 0; j < d.K; j++) {
        int to = tl + d.K - 1 - j; // the output (in the window) that read x[t] through tap j
        long o = (long)(t - tl + to) * d.C + c;
        if (to < d.T) acc += w[(long)c * d.K + j] * dact[o] * silu_grad_d(pre[o]);
    }
    dqkv[i] = acc;
}

// ---------------------------------------------------------------------------------------------------

// The cache's buffers, in floats: (what, count) in one table so that init, free and bytes agree.
// clang-format off
#define GDN_BUFFERS(F)                                                                                         \
    F(pre, tc) F(qhat, tk) F(khat, tk) F(rq, th_k) F(rk, th_k) F(v, vv) F(U, vv) F(Vn, vv) F(o, vv)           \
    F(z, vv) F(W, vk) F(beta, th) F(gc, th) F(dgda, th) F(rstd, th) F(Tm, mm) F(Aqk, mm) F(h, ss)             \
    F(dO, vv) F(dVn, vv) F(Y, vv) F(dW, vk) F(X, vk) F(dq, vk) F(dk, vk) F(dT, mm) F(P, mm) F(dM, mm)         \
    F(KK, mm) F(dA, mm) F(dhn, ss) F(dact, tc)
// clang-format on

struct GdnSizes {
    long tc, tk, th_k, vv, vk, th, mm, ss;
};

static GdnSizes sizes_of(const Dims& d) {
    long T = (long)d.nb * d.T, ncs = (long)d.nb * d.nc * d.Hv;
    return GdnSizes{T * d.C,         T * d.Hk * d.dk, T * d.Hk,      T * d.Hv * d.dv,
                    T * d.Hv * d.dk, T * d.Hv,        ncs * CH * CH, ncs * d.dk * d.dv};
}

static float* dalloc(long n) {
    float* p;
    cudaCheck(cudaMalloc(&p, sizeof(float) * (n > 0 ? n : 1)));
    return p;
}

static void check_shape(const GdnShape* s, int nb) {
    if (s->T < 1 || s->Hk < 1 || s->Hv < 1 || s->Hv % s->Hk || s->dk < 1 || s->dv < 1 || s->K < 1 || nb < 1) {
        fprintf(stderr, "autoq: gpu_gdn: bad shape (T %d, Hk %d, Hv %d, dk %d, dv %d, K %d, windows %d)\n",
                s->T, s->Hk, s->Hv, s->dk, s->dv, s->K, nb);
        exit(1);
    }
}

extern "C" size_t gpu_gdn_cache_bytes(const GdnShape* s, int nb) {
    GdnSizes z = sizes_of(dims_of(s, nb));
    size_t n = 0;
#define GDN_COUNT(name, count) n += (size_t)z.count;
    GDN_BUFFERS(GDN_COUNT)
#undef GDN_COUNT
    return n * sizeof(float);
}

extern "C" GdnGpuCache* gpu_gdn_cache_init(const GdnShape* s, int nb) {
    check_shape(s, nb);
    GdnGpuCache* c = (GdnGpuCache*)calloc(1, sizeof(GdnGpuCache));
    if (!c) {
        fprintf(stderr, "autoq: out of memory\n");
        exit(1);
    }
    c->s = *s, c->nb = nb;
    GdnSizes z = sizes_of(dims_of(s, nb));
#define GDN_ALLOC(name, count) c->name = dalloc(z.count);
    GDN_BUFFERS(GDN_ALLOC)
#undef GDN_ALLOC
    return c;
}

extern "C" void gpu_gdn_cache_free(GdnGpuCache* c) {
    if (!c) return;
#define GDN_FREE(name, count) cudaFree(c->name);
    GDN_BUFFERS(GDN_FREE)
#undef GDN_FREE
    free(c);
}

// The call's shape must be the cache's, with at most its windows.
static Dims call_dims(const GdnShape* s, const GdnGpuCache* c, int nb) {
    if (s->T != c->s.T || s->Hk != c->s.Hk || s->Hv != c->s.Hv || s->dk != c->s.dk || s->dv != c->s.dv ||
        s->K != c->s.K || nb < 1 || nb > c->nb) {
        fprintf(stderr,
                "autoq: gpu_gdn: the shape or window count (%d) does not fit the cache's (%d windows)\n", nb,
                c->nb);
        exit(1);
    }
    return dims_of(s, nb);
}

// dynamic shared memory of the state / dh kernels: (dk + 2 CH) x 32 floats
static size_t state_smem(const Dims& d, const void* kernel) {
    size_t n = sizeof(float) * (d.dk + 2 * CH) * 32;
    if (n > 48 * 1024)
        cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)n));
    return n;
}

extern "C" void gpu_gdn_forward(const GdnShape* s, int nb, const GdnParams* p, const float* qkv, const float* z,
                                const float* b, const float* a, float* out, GdnGpuCache* c) {
    Dims d = call_dims(s, c, nb);
    long rows = (long)nb * d.T, tc = rows * d.C, vv = rows * d.Hv * d.dv;
    int chunks = nb * d.nc * d.Hv;
    gdn_conv_kernel<<<ceil_div(tc, 256), 256>>>(c->pre, qkv, p->conv_w, d);
    gdn_l2norm_kernel<<<ceil_div(2 * rows * d.Hk * 32, 256), 256>>>(c->qhat, c->khat, c->rq, c->rk, c->pre, d);
    gdn_v_kernel<<<ceil_div(vv, 256), 256>>>(c->v, c->pre, d);
    gdn_gates_kernel<<<ceil_div(chunks, 128), 128>>>(c->beta, c->gc, c->dgda, b, a, p->A_log, p->dt_bias, d);
    cudaCheck(cudaMemcpyAsync(c->z, z, sizeof(float) * vv, cudaMemcpyDeviceToDevice));
    gdn_prep_kernel<<<chunks, 256>>>(c->Tm, c->W, c->U, c->Aqk, c->qhat, c->khat, c->v, c->beta, c->gc, d);
    dim3 sg(nb * d.Hv, ceil_div(d.dv, 32));
    gdn_state_kernel<<<sg, 256, state_smem(d, (const void*)gdn_state_kernel)>>>(c->h, c->Vn, c->W, c->U,
                                                                                c->khat, c->gc, d);
    gdn_out_kernel<<<chunks, 256>>>(c->o, c->qhat, c->h, c->Aqk, c->Vn, c->gc, d);
    gdn_norm_kernel<<<ceil_div(rows * d.Hv * 32, 256), 256>>>(out, c->rstd, c->o, c->z, p->norm_w, d);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_gdn_backward(const GdnShape* s, int nb, const GdnParams* p, GdnGpuCache* c,
                                 const float* dout, float* dqkv, float* dz, float* db, float* da) {
    Dims d = call_dims(s, c, nb);
    long rows = (long)nb * d.T, tc = rows * d.C, vv = rows * d.Hv * d.dv, vk = rows * d.Hv * d.dk;
    int chunks = nb * d.nc * d.Hv;
    gdn_norm_bwd_kernel<<<ceil_div(rows * d.Hv * 32, 256), 256>>>(c->dO, dz, dout, c->o, c->z, c->rstd,
                                                                  p->norm_w, d);
    dim3 sg(nb * d.Hv, ceil_div(d.dv, 32));
    gdn_dh_kernel<<<sg, 256, state_smem(d, (const void*)gdn_dh_kernel)>>>(c->dhn, c->dVn, c->dO, c->Aqk, c->W,
                                                                          c->qhat, c->khat, c->gc, d);
    gdn_dw_kernel<<<ceil_div(vk, 256), 256>>>(c->dW, c->dVn, c->h, d);
    gdn_pairs_kernel<<<chunks, 256>>>(c->dA, c->dT, c->KK, c->dO, c->Vn, c->dW, c->dVn, c->khat, c->v, c->beta,
                                      c->gc, d);
    gdn_p_kernel<<<chunks, 256>>>(c->P, c->Tm, c->dT, d);
    gdn_dm_kernel<<<chunks, 256>>>(c->dM, c->P, c->Tm, d);
    gdn_xy_kernel<<<chunks, 256>>>(c->X, c->Y, c->Tm, c->dW, c->dVn, d);
    gdn_dqk_kernel<<<chunks, 256>>>(c->dq, c->dk, c->dO, c->h, c->dhn, c->Vn, c->dA, c->dM, c->X, c->qhat,
                                    c->khat, c->beta, c->gc, d);
    gdn_dv_kernel<<<ceil_div(vv, 256), 256>>>(c->dact, c->Y, c->beta, d);
    gdn_dgate_kernel<<<chunks, GDN_DG_PARTS * CH>>>(db, da, c->dO, c->h, c->dhn, c->Vn, c->v, c->X, c->Y, c->dA,
                                                    c->Aqk, c->dM, c->KK, c->qhat, c->khat, c->beta, c->gc,
                                                    c->dgda, d);
    gdn_l2norm_bwd_kernel<<<ceil_div(2 * rows * d.Hk * 32, 256), 256>>>(c->dact, c->dq, c->dk, c->qhat, c->khat,
                                                                        c->rq, c->rk, d);
    gdn_conv_bwd_kernel<<<ceil_div(tc, 256), 256>>>(dqkv, c->dact, c->pre, p->conv_w, d);
    cudaCheck(cudaGetLastError());
}

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
#include <mma.h>

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
    int dkp, dvp, ow; // the fast kernels' tiles: dk, dv rounded up to 16; the out kernel's column block
    float eps, scale;
};

static Dims dims_of(const GdnShape* s, int nb) {
    Dims d;
    d.nb = nb, d.T = s->T, d.Hk = s->Hk, d.Hv = s->Hv, d.dk = s->dk, d.dv = s->dv, d.K = s->K;
    d.C = gdn_channels(s), d.rep = s->Hv / s->Hk, d.nc = (s->T + CH - 1) / CH;
    d.eps = s->eps, d.scale = 1.0f / sqrtf((float)s->dk);
    d.dkp = (s->dk + 15) / 16 * 16, d.dvp = (s->dv + 15) / 16 * 16, d.ow = min(64, d.dvp);
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

// The prep kernels' gates of chunk rows r < CH (zero past L): sg = gc, sb = beta, sbg = beta e^gc. No barrier:
// the caller syncs before reading them.
__device__ inline void stage_gates(float* sg, float* sb, float* sbg, const float* beta, const float* gc,
                                   const Dims& d, int L, int t0, int h) {
    for (int r = threadIdx.x; r < CH; r += blockDim.x) {
        sg[r] = r < L ? gc[vrow(d, t0 + r, h)] : 0.0f;
        sb[r] = r < L ? beta[vrow(d, t0 + r, h)] : 0.0f;
        sbg[r] = sb[r] * expf(sg[r]);
    }
}

// One block per (chunk, value head): M, Tm = (I + M)^-1 by forward substitution, W, U, Aqk.
__global__ void gdn_prep_kernel(float* Tm_g, float* W, float* U, float* Aqk, const float* qhat,
                                const float* khat, const float* v, const float* beta, const float* gc, Dims d) {
    __shared__ float M[CH][CH + 1], Tm[CH][CH + 1], sg[CH], sb[CH], sbg[CH]; // sbg: beta e^gc
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c), t0 = chunk_t0(d, c);
    stage_gates(sg, sb, sbg, beta, gc, d, L, t0, h);
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
// Row r of a chunk in the gates' backward (gdn_dgate_kernel and gdn_dgate_fast): from oi = q_r . (S dO_r) and
// *er = k_r . (dS Vn_r) (the sums over the state), writes db for token r, decays *er to the chunk's end, and
// returns the gradient of its cumulative log decay gc_r.
__device__ inline float gdn_gate_row(float* db, float* er, float gL, float oi, const float* v, const float* X,
                                     const float* Y, const float* dA, const float* Aqk, const float* dM,
                                     const float* KK, const float* khat, const float* beta, const float* gc,
                                     const Dims& d, int t0, int h, int r, int L, long m0) {
    long tr = vrow(d, t0 + r, h);
    float gr = gc[tr], kx = dotg(key_row(khat, d, t0 + r, h), X + tr * d.dk, d.dk);
    float dbeta = expf(gr) * kx + dotg(v + tr * d.dv, Y + tr * d.dv, d.dv);
    *er *= expf(gL - gr);
    float g = beta[tr] * expf(gr) * kx + expf(gr) * oi - *er;
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
    return g;
}

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
        if (r < L)
            g = gdn_gate_row(db, &er, gL, oi, v, X, Y, dA, Aqk, dM, KK, khat, beta, gc, d, t0, h, r, L, m0);
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
// Fast kernels (AUTOQ_GDN_FAST, one bit per piece: see gdn_fast_mask). The same pieces and the same cache
// buffers as the plain kernels above, each a thread block that stages its chunk's tiles in shared memory
// (rows past the chunk's end and columns past dk / dv zero, widths padded to 16) and multiplies them on
// the tensor cores: wmma m16n16k8 with tf32 inputs, each operand split hi + lo (x = hi + lo, both tf32)
// and three products summed in fp32 (hi hi + hi lo + lo hi, the "3xTF32" of CUTLASS), which keeps
// fp32-level accuracy (about 2^-21 relative per product) where one tf32 product would lose 2^-11.

namespace wm = nvcuda::wmma;
typedef wm::fragment<wm::accumulator, 16, 16, 8, float> FragC;

template <typename L> struct IsRow { static const bool v = false; };
template <> struct IsRow<wm::row_major> { static const bool v = true; };

// x = hi + lo with both in tf32
template <typename F> __device__ inline void tf32_split(F& hi, F& lo) {
    for (int i = 0; i < hi.num_elements; i++) {
        float x = hi.x[i];
        hi.x[i] = wm::__float_to_tf32(x);
        lo.x[i] = wm::__float_to_tf32(x - hi.x[i]);
    }
}

// C (M x N, row-major, ldc) = beta C + alpha A B, A (M x K) and B (K x N) row- or column-major (LA, LB) as
// wmma reads them; all in shared memory, M and N multiples of 16, K of 8, every ld a multiple of 4 and every
// pointer 32-byte aligned. The block's warps take the 16 x 16 tiles of C in turn (the same warp the same
// tile on every call with the same M, N). No barrier inside: the caller syncs before and after.
template <typename LA, typename LB>
__device__ void smem_gemm(float* C, int ldc, const float* A, int lda, const float* B, int ldb, int M, int N,
                          int K, float alpha, float beta) {
    int warp = threadIdx.x / 32, nw = blockDim.x / 32, tn = N / 16, tiles = (M / 16) * tn;
    for (int t = warp; t < tiles; t += nw) {
        int tm = t / tn, tj = t % tn;
        FragC acc;
        wm::fill_fragment(acc, 0.0f);
        for (int k = 0; k < K; k += 8) {
            wm::fragment<wm::matrix_a, 16, 16, 8, wm::precision::tf32, LA> a, al;
            wm::fragment<wm::matrix_b, 16, 16, 8, wm::precision::tf32, LB> b, bl;
            const float* pa = IsRow<LA>::v ? A + (long)tm * 16 * lda + k : A + tm * 16 + (long)k * lda;
            const float* pb = IsRow<LB>::v ? B + (long)k * ldb + tj * 16 : B + k + (long)tj * 16 * ldb;
            wm::load_matrix_sync(a, pa, lda);
            wm::load_matrix_sync(b, pb, ldb);
            tf32_split(a, al);
            tf32_split(b, bl);
            wm::mma_sync(acc, al, b, acc);
            wm::mma_sync(acc, a, bl, acc);
            wm::mma_sync(acc, a, b, acc);
        }
        float* pc = C + (long)tm * 16 * ldc + tj * 16;
        if (beta != 0.0f) {
            FragC old;
            wm::load_matrix_sync(old, pc, ldc, wm::mem_row_major);
            for (int i = 0; i < acc.num_elements; i++) acc.x[i] = beta * old.x[i] + alpha * acc.x[i];
        } else if (alpha != 1.0f) {
            for (int i = 0; i < acc.num_elements; i++) acc.x[i] *= alpha;
        }
        wm::store_matrix_sync(pc, acc, ldc, wm::mem_row_major);
    }
}

typedef wm::row_major RM;
typedef wm::col_major CM;

// rows x width tile s (ld lds) from global rows g + r ldg, columns col..; zero at r >= L or column >= n.
// float4 at a time where every row start is 16-byte aligned (dk, dv multiples of 4: the real models).
__device__ inline void tile_load(float* s, int lds, const float* g, long ldg, int rows, int L, int n,
                                 int width) {
    if (((uintptr_t)g | (uintptr_t)(ldg * 4) | (n & 3) | (width & 3) | (lds & 3)) % 16 == 0) {
        int w4 = width / 4;
        for (int i = threadIdx.x; i < rows * w4; i += blockDim.x) {
            int r = i / w4, j = i % w4 * 4;
            float4 x = r < L && j < n ? *(const float4*)(g + (long)r * ldg + j) : make_float4(0, 0, 0, 0);
            *(float4*)(s + r * lds + j) = x;
        }
        return;
    }
    for (int i = threadIdx.x; i < rows * width; i += blockDim.x) {
        int r = i / width, j = i % width;
        s[r * lds + j] = r < L && j < n ? g[(long)r * ldg + j] : 0.0f;
    }
}
// rows r < L, columns j < n of tile s to global
__device__ inline void tile_store(float* g, long ldg, const float* s, int lds, int L, int n) {
    for (int i = threadIdx.x; i < L * n; i += blockDim.x) {
        int r = i / n, j = i % n;
        g[(long)r * ldg + j] = s[r * lds + j];
    }
}

// Row strides of the chunk's first token in the (T, Hk, dk) key arrays and the (T, Hv, w) value arrays.
__device__ inline const float* key_rows(const float* x, const Dims& d, int t0, int h) {
    return x + ((long)t0 * d.Hk + h / d.rep) * d.dk;
}
__device__ inline long val_off(const Dims& d, int t0, int h, int w) { return ((long)t0 * d.Hv + h) * w; }

#define GDN_THREADS 256
#define LC (CH + 4) // ld of a CH x CH tile

// Tm = (I + M)^-1 in place of T (identity on entry), M strictly lower (ld LC), blockwise: the four 16 x 16
// diagonal blocks by substitution (a thread per column), then block (i, j) = -T_ii sum_{k=j}^{i-1} M_ik T_kj
// by the distance i - j (X: a CH x CH scratch).
__device__ void tri_inverse(float* T, const float* M, float* X) {
    int tid = threadIdx.x;
    if (tid < CH) {
        int b = tid / 16 * 16, s = tid % 16;
        for (int r = s + 1; r < 16; r++) {
            float acc = 0.0f;
            for (int m = s; m < r; m++) acc += M[(b + r) * LC + b + m] * T[(b + m) * LC + b + s];
            T[(b + r) * LC + b + s] = -acc;
        }
    }
    __syncthreads();
    for (int dist = 1; dist < CH / 16; dist++) {
        int n = (CH / 16 - dist) * 256;
        for (int e = tid; e < n; e += blockDim.x) {
            int j = e / 256, i = j + dist, r = 16 * i + (e % 256) / 16, s = 16 * j + e % 16;
            float acc = 0.0f;
            for (int m = 16 * j; m < 16 * i; m++) acc += M[r * LC + m] * T[m * LC + s];
            X[r * LC + s] = acc;
        }
        __syncthreads();
        for (int e = tid; e < n; e += blockDim.x) {
            int j = e / 256, i = j + dist, r = 16 * i + (e % 256) / 16, s = 16 * j + e % 16;
            float acc = 0.0f;
            for (int m = 16 * i; m <= r; m++) acc += T[r * LC + m] * X[m * LC + s];
            T[r * LC + s] = -acc;
        }
        __syncthreads();
    }
}

// gdn_prep_fast's W = Tm diag(beta G) K and U = Tm diag(beta) V: the CH x np tile sX (K or V, ld LX) scaled
// by row (scale: sbg or sb), times Tm (sT, ld LC) into sO (ld LX), its L x n part stored to out (ld ldo).
__device__ void wy_product(float* out, long ldo, float* sO, float* sX, int LX, const float* sT,
                           const float* scale, int L, int n, int np) {
    for (int i = threadIdx.x; i < CH * np; i += blockDim.x) sX[(i / np) * LX + i % np] *= scale[i / np];
    __syncthreads();
    smem_gemm<RM, RM>(sO, LX, sT, LC, sX, LX, CH, np, CH, 1.0f, 0.0f);
    __syncthreads();
    tile_store(out, ldo, sO, LX, L, n);
}

// One block per (chunk, value head): KK^T and QK^T on the tensor cores, M and Aqk, Tm blockwise, W = Tm
// diag(beta G) K and U = Tm diag(beta) V. Buffers reused so that two blocks fit an SM: sK holds K then V,
// sQ holds Q, then the inverse's scratch, then W and U; sT holds QK^T, then Tm.
__global__ void __launch_bounds__(GDN_THREADS)
    gdn_prep_fast(float* Tm_g, float* W, float* U, float* Aqk, const float* qhat, const float* khat,
                  const float* v, const float* beta, const float* gc, Dims d) {
    extern __shared__ __align__(128) float gdn_sm[];
    int LX = max(d.dkp, d.dvp) + 4, nq = CH * max(LX, LC);
    float *sK = gdn_sm, *sQ = sK + CH * LX, *sA = sQ + nq, *sT = sA + CH * LC, *sg = sT + CH * LC;
    float *sb = sg + CH, *sbg = sb + CH;
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c), t0 = chunk_t0(d, c);
    long lk = (long)d.Hk * d.dk;
    tile_load(sK, LX, key_rows(khat, d, t0, h), lk, CH, L, d.dk, d.dkp);
    tile_load(sQ, LX, key_rows(qhat, d, t0, h), lk, CH, L, d.dk, d.dkp);
    stage_gates(sg, sb, sbg, beta, gc, d, L, t0, h);
    __syncthreads();
    smem_gemm<RM, CM>(sA, LC, sK, LX, sK, LX, CH, CH, d.dkp, 1.0f, 0.0f);
    smem_gemm<RM, CM>(sT, LC, sQ, LX, sK, LX, CH, CH, d.dkp, 1.0f, 0.0f);
    __syncthreads();
    float* aq = Aqk + cmat(d, c, h);
    for (int i = threadIdx.x; i < CH * CH; i += blockDim.x) {
        int r = i / CH, s = i % CH;
        float decay = r < L && s <= r ? expf(sg[r] - sg[s]) : 0.0f;
        aq[i] = sT[r * LC + s] * d.scale * decay;
        sA[r * LC + s] = s < r ? sb[r] * sA[r * LC + s] * decay : 0.0f;
        sT[r * LC + s] = r == s ? 1.0f : 0.0f;
    }
    __syncthreads();
    tri_inverse(sT, sA, sQ);
    float* tm = Tm_g + cmat(d, c, h);
    for (int i = threadIdx.x; i < CH * CH; i += blockDim.x) tm[i] = sT[(i / CH) * LC + i % CH];
    wy_product(W + val_off(d, t0, h, d.dk), (long)d.Hv * d.dk, sQ, sK, LX, sT, sbg, L, d.dk, d.dkp);
    tile_load(sK, LX, v + val_off(d, t0, h, d.dv), (long)d.Hv * d.dv, CH, L, d.dv, d.dvp);
    __syncthreads();
    wy_product(U + val_off(d, t0, h, d.dv), (long)d.Hv * d.dv, sQ, sK, LX, sT, sb, L, d.dv, d.dvp);
}

#define GDN_CW 32 // state columns per block of the sequential passes
#define LW (GDN_CW + 4)

// One block per (window, value head, 32 state columns), over the chunks in order: h[c] = S; Vn = U - W S;
// S = e^gL S + K^T diag(e^(gL - gc)) Vn, the products on the tensor cores, S in shared memory.
__global__ void __launch_bounds__(GDN_THREADS)
    gdn_state_fast(float* hs, float* Vn, const float* W, const float* U, const float* khat, const float* gc,
                   Dims d) {
    extern __shared__ __align__(128) float gdn_sm[];
    int LK = d.dkp + 4;
    float *sS = gdn_sm, *sW = sS + d.dkp * LW, *sK = sW + CH * LK, *sU = sK + CH * LK, *sg = sU + CH * LW;
    int wnd = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, c0 = blockIdx.y * GDN_CW, nv = min(GDN_CW, d.dv - c0);
    for (int i = threadIdx.x; i < d.dkp * LW; i += blockDim.x) sS[i] = 0.0f;
    __syncthreads();
    for (int c = wnd * d.nc; c < (wnd + 1) * d.nc; c++) {
        int L = chunk_len(d, c), t0 = chunk_t0(d, c);
        float gL = gc[vrow(d, t0 + L - 1, h)];
        tile_store(hs + cstate(d, c, h) + c0, d.dv, sS, LW, d.dk, nv);
        tile_load(sW, LK, W + val_off(d, t0, h, d.dk), (long)d.Hv * d.dk, CH, L, d.dk, d.dkp);
        tile_load(sK, LK, key_rows(khat, d, t0, h), (long)d.Hk * d.dk, CH, L, d.dk, d.dkp);
        tile_load(sU, LW, U + val_off(d, t0, h, d.dv) + c0, (long)d.Hv * d.dv, CH, L, nv, GDN_CW);
        for (int r = threadIdx.x; r < CH; r += blockDim.x) sg[r] = r < L ? gc[vrow(d, t0 + r, h)] : 0.0f;
        __syncthreads();
        smem_gemm<RM, RM>(sU, LW, sW, LK, sS, LW, CH, GDN_CW, d.dkp, -1.0f, 1.0f);
        __syncthreads();
        float* vn = Vn + val_off(d, t0, h, d.dv) + c0;
        for (int i = threadIdx.x; i < CH * GDN_CW; i += blockDim.x) {
            int r = i / GDN_CW, j = i % GDN_CW;
            float x = sU[r * LW + j];
            if (r < L && j < nv) vn[(long)r * d.Hv * d.dv + j] = x;
            sU[r * LW + j] = r < L ? expf(gL - sg[r]) * x : 0.0f; // decayed to the chunk's end
        }
        __syncthreads();
        smem_gemm<CM, RM>(sS, LW, sK, LK, sU, LW, d.dkp, GDN_CW, CH, 1.0f, expf(gL));
        __syncthreads();
    }
}

// One block per (chunk, value head, d.ow output columns): O = diag(scale G) Q h + Aqk Vn. Aqk and Vn reuse
// Q's and h's buffers (two blocks to an SM).
__global__ void __launch_bounds__(GDN_THREADS)
    gdn_out_fast(float* o, const float* qhat, const float* hs, const float* Aqk, const float* Vn,
                 const float* gc, Dims d) {
    extern __shared__ __align__(128) float gdn_sm[];
    int LK = d.dkp + 4, LO = d.ow + 4, nq = CH * max(LK, LC), nh = max(d.dkp, CH) * LO;
    float *sQ = gdn_sm, *sH = sQ + nq, *sO = sH + nh, *sg = sO + CH * LO, *sA = sQ, *sV = sH;
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c), t0 = chunk_t0(d, c);
    int c0 = blockIdx.y * d.ow, nv = min(d.ow, d.dv - c0);
    tile_load(sQ, LK, key_rows(qhat, d, t0, h), (long)d.Hk * d.dk, CH, L, d.dk, d.dkp);
    tile_load(sH, LO, hs + cstate(d, c, h) + c0, d.dv, d.dkp, d.dk, nv, d.ow);
    for (int r = threadIdx.x; r < CH; r += blockDim.x) sg[r] = r < L ? gc[vrow(d, t0 + r, h)] : 0.0f;
    __syncthreads();
    smem_gemm<RM, RM>(sO, LO, sQ, LK, sH, LO, CH, d.ow, d.dkp, 1.0f, 0.0f);
    __syncthreads();
    tile_load(sA, LC, Aqk + cmat(d, c, h), CH, CH, CH, CH, CH);
    tile_load(sV, LO, Vn + val_off(d, t0, h, d.dv) + c0, (long)d.Hv * d.dv, CH, L, nv, d.ow);
    for (int i = threadIdx.x; i < CH * d.ow; i += blockDim.x) {
        int r = i / d.ow;
        sO[r * LO + i % d.ow] *= r < L ? d.scale * expf(sg[r]) : 0.0f;
    }
    __syncthreads();
    smem_gemm<RM, RM>(sO, LO, sA, LC, sV, LO, CH, d.ow, CH, 1.0f, 1.0f);
    __syncthreads();
    tile_store(o + val_off(d, t0, h, d.dv) + c0, (long)d.Hv * d.dv, sO, LO, L, nv);
}

// One block per (window, value head, 32 columns), over the chunks in reverse, dh the state's gradient at the
// chunk's end: dhn[c] = dh; dVn = diag(e^(gL - gc)) K dh + Aqk^T dO; dh = e^gL dh + Q^T diag(scale G) dO -
// W^T dVn. sK holds K, then Q, then W (two blocks to an SM).
__global__ void __launch_bounds__(GDN_THREADS)
    gdn_dh_fast(float* dhn, float* dVn, const float* dO, const float* Aqk, const float* W, const float* qhat,
                const float* khat, const float* gc, Dims d) {
    extern __shared__ __align__(128) float gdn_sm[];
    int LK = d.dkp + 4;
    float *sD = gdn_sm, *sK = sD + d.dkp * LW, *sA = sK + CH * LK, *sO = sA + CH * LC, *sV = sO + CH * LW;
    float* sg = sV + CH * LW;
    int wnd = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, c0 = blockIdx.y * GDN_CW, nv = min(GDN_CW, d.dv - c0);
    long lk = (long)d.Hk * d.dk;
    for (int i = threadIdx.x; i < d.dkp * LW; i += blockDim.x) sD[i] = 0.0f;
    __syncthreads();
    for (int c = (wnd + 1) * d.nc - 1; c >= wnd * d.nc; c--) {
        int L = chunk_len(d, c), t0 = chunk_t0(d, c);
        float gL = gc[vrow(d, t0 + L - 1, h)];
        tile_store(dhn + cstate(d, c, h) + c0, d.dv, sD, LW, d.dk, nv);
        tile_load(sK, LK, key_rows(khat, d, t0, h), lk, CH, L, d.dk, d.dkp);
        tile_load(sA, LC, Aqk + cmat(d, c, h), CH, CH, CH, CH, CH);
        tile_load(sO, LW, dO + val_off(d, t0, h, d.dv) + c0, (long)d.Hv * d.dv, CH, L, nv, GDN_CW);
        for (int r = threadIdx.x; r < CH; r += blockDim.x) sg[r] = r < L ? gc[vrow(d, t0 + r, h)] : 0.0f;
        __syncthreads();
        smem_gemm<RM, RM>(sV, LW, sK, LK, sD, LW, CH, GDN_CW, d.dkp, 1.0f, 0.0f);
        __syncthreads();
        for (int i = threadIdx.x; i < CH * GDN_CW; i += blockDim.x) {
            int r = i / GDN_CW;
            sV[r * LW + i % GDN_CW] *= r < L ? expf(gL - sg[r]) : 0.0f;
        }
        tile_load(sK, LK, key_rows(qhat, d, t0, h), lk, CH, L, d.dk, d.dkp);
        __syncthreads();
        smem_gemm<CM, RM>(sV, LW, sA, LC, sO, LW, CH, GDN_CW, CH, 1.0f, 1.0f);
        __syncthreads();
        float* dv = dVn + val_off(d, t0, h, d.dv) + c0;
        for (int i = threadIdx.x; i < CH * GDN_CW; i += blockDim.x) {
            int r = i / GDN_CW, j = i % GDN_CW;
            if (r < L && j < nv) dv[(long)r * d.Hv * d.dv + j] = sV[r * LW + j];
            sO[r * LW + j] *= r < L ? d.scale * expf(sg[r]) : 0.0f;
        }
        __syncthreads();
        smem_gemm<CM, RM>(sD, LW, sK, LK, sO, LW, d.dkp, GDN_CW, CH, 1.0f, expf(gL));
        __syncthreads();
        tile_load(sK, LK, W + val_off(d, t0, h, d.dk), (long)d.Hv * d.dk, CH, L, d.dk, d.dkp);
        __syncthreads();
        smem_gemm<CM, RM>(sD, LW, sK, LK, sV, LW, d.dkp, GDN_CW, CH, -1.0f, 1.0f);
        __syncthreads();
    }
}

// One block per (chunk, value head): dW = -dVn h^T.
__global__ void __launch_bounds__(GDN_THREADS)
    gdn_dw_fast(float* dW, const float* dVn, const float* hs, Dims d) {
    extern __shared__ __align__(128) float gdn_sm[];
    int LK = d.dkp + 4, LV = d.dvp + 4;
    float *sV = gdn_sm, *sH = sV + CH * LV, *sR = sH + d.dkp * LV;
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c), t0 = chunk_t0(d, c);
    tile_load(sV, LV, dVn + val_off(d, t0, h, d.dv), (long)d.Hv * d.dv, CH, L, d.dv, d.dvp);
    tile_load(sH, LV, hs + cstate(d, c, h), d.dv, d.dkp, d.dk, d.dv, d.dvp);
    __syncthreads();
    smem_gemm<RM, CM>(sR, LK, sV, LV, sH, LV, CH, d.dkp, d.dvp, -1.0f, 0.0f);
    __syncthreads();
    tile_store(dW + val_off(d, t0, h, d.dk), (long)d.Hv * d.dk, sR, LK, L, d.dk);
}

// One block per (chunk, value head): dA = dO Vn^T (s <= r); dT = beta_s (G_s dW K^T + dVn V^T) and
// KK = (K K^T) G_r / G_s (s < r); zero elsewhere.
__global__ void __launch_bounds__(GDN_THREADS)
    gdn_pairs_fast(float* dA, float* dT, float* KK, const float* dO, const float* Vn, const float* dW,
                   const float* dVn, const float* khat, const float* v, const float* beta, const float* gc,
                   Dims d) {
    extern __shared__ __align__(128) float gdn_sm[];
    int LX = max(d.dkp, d.dvp) + 4;
    float *sA = gdn_sm, *sB = sA + CH * LX, *R1 = sB + CH * LX, *R2 = R1 + CH * LC; // R1: dA, then KK
    float *sg = R2 + CH * LC, *sb = sg + CH;
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c), t0 = chunk_t0(d, c);
    long lv = (long)d.Hv * d.dv, vo = val_off(d, t0, h, d.dv), m0 = cmat(d, c, h);
    tile_load(sA, LX, dO + vo, lv, CH, L, d.dv, d.dvp);
    tile_load(sB, LX, Vn + vo, lv, CH, L, d.dv, d.dvp);
    for (int r = threadIdx.x; r < CH; r += blockDim.x) {
        sg[r] = r < L ? gc[vrow(d, t0 + r, h)] : 0.0f;
        sb[r] = r < L ? beta[vrow(d, t0 + r, h)] : 0.0f;
    }
    __syncthreads();
    smem_gemm<RM, CM>(R1, LC, sA, LX, sB, LX, CH, CH, d.dvp, 1.0f, 0.0f);
    __syncthreads();
    for (int i = threadIdx.x; i < CH * CH; i += blockDim.x) {
        int r = i / CH, s = i % CH;
        dA[m0 + i] = r < L && s <= r ? R1[r * LC + s] : 0.0f;
    }
    tile_load(sA, LX, dW + val_off(d, t0, h, d.dk), (long)d.Hv * d.dk, CH, L, d.dk, d.dkp);
    tile_load(sB, LX, key_rows(khat, d, t0, h), (long)d.Hk * d.dk, CH, L, d.dk, d.dkp);
    __syncthreads();
    smem_gemm<RM, CM>(R2, LC, sA, LX, sB, LX, CH, CH, d.dkp, 1.0f, 0.0f);
    smem_gemm<RM, CM>(R1, LC, sB, LX, sB, LX, CH, CH, d.dkp, 1.0f, 0.0f);
    __syncthreads();
    for (int i = threadIdx.x; i < CH * CH; i += blockDim.x) {
        int s = i % CH;
        R2[(i / CH) * LC + s] *= expf(sg[s]);
    }
    tile_load(sA, LX, dVn + vo, lv, CH, L, d.dv, d.dvp);
    tile_load(sB, LX, v + vo, lv, CH, L, d.dv, d.dvp);
    __syncthreads();
    smem_gemm<RM, CM>(R2, LC, sA, LX, sB, LX, CH, CH, d.dvp, 1.0f, 1.0f);
    __syncthreads();
    for (int i = threadIdx.x; i < CH * CH; i += blockDim.x) {
        int r = i / CH, s = i % CH;
        bool lo = r < L && s < r;
        dT[m0 + i] = lo ? sb[s] * R2[r * LC + s] : 0.0f;
        KK[m0 + i] = lo ? R1[r * LC + s] * expf(sg[r] - sg[s]) : 0.0f;
    }
}

// One block per (chunk, value head): P = Tm^T dT, dM = -P Tm^T (strictly lower, rows < L).
__global__ void __launch_bounds__(GDN_THREADS)
    gdn_pdm_fast(float* P, float* dM, const float* Tm, const float* dT, Dims d) {
    extern __shared__ __align__(128) float gdn_sm[];
    float *sT = gdn_sm, *sD = sT + CH * LC, *sP = sD + CH * LC;
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c);
    long m0 = cmat(d, c, h);
    tile_load(sT, LC, Tm + m0, CH, CH, CH, CH, CH);
    tile_load(sD, LC, dT + m0, CH, CH, CH, CH, CH);
    __syncthreads();
    smem_gemm<CM, RM>(sP, LC, sT, LC, sD, LC, CH, CH, CH, 1.0f, 0.0f);
    __syncthreads();
    tile_store(P + m0, CH, sP, LC, CH, CH);
    smem_gemm<RM, CM>(sD, LC, sP, LC, sT, LC, CH, CH, CH, -1.0f, 0.0f);
    __syncthreads();
    for (int i = threadIdx.x; i < CH * CH; i += blockDim.x) {
        int r = i / CH, s = i % CH;
        dM[m0 + i] = r < L && s < r ? sD[r * LC + s] : 0.0f;
    }
}

// One block per (chunk, value head): X = Tm^T dW, Y = Tm^T dVn (sW holds dW, then dVn), and dv = beta Y into
// dact's v columns (gdn_dv_kernel's work).
__global__ void __launch_bounds__(GDN_THREADS)
    gdn_xy_fast(float* X, float* Y, float* dact, const float* Tm, const float* dW, const float* dVn,
                const float* beta, Dims d) {
    extern __shared__ __align__(128) float gdn_sm[];
    int LX = max(d.dkp, d.dvp) + 4;
    float *sT = gdn_sm, *sW = sT + CH * LC, *sR = sW + CH * LX;
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c), t0 = chunk_t0(d, c);
    tile_load(sT, LC, Tm + cmat(d, c, h), CH, CH, CH, CH, CH);
    tile_load(sW, LX, dW + val_off(d, t0, h, d.dk), (long)d.Hv * d.dk, CH, L, d.dk, d.dkp);
    __syncthreads();
    smem_gemm<CM, RM>(sR, LX, sT, LC, sW, LX, CH, d.dkp, CH, 1.0f, 0.0f);
    __syncthreads();
    tile_store(X + val_off(d, t0, h, d.dk), (long)d.Hv * d.dk, sR, LX, L, d.dk);
    tile_load(sW, LX, dVn + val_off(d, t0, h, d.dv), (long)d.Hv * d.dv, CH, L, d.dv, d.dvp);
    __syncthreads();
    smem_gemm<CM, RM>(sR, LX, sT, LC, sW, LX, CH, d.dvp, CH, 1.0f, 0.0f);
    __syncthreads();
    tile_store(Y + val_off(d, t0, h, d.dv), (long)d.Hv * d.dv, sR, LX, L, d.dv);
    for (int i = threadIdx.x; i < L * d.dv; i += blockDim.x) {
        int r = i / d.dv, j = i % d.dv;
        dact[(long)(t0 + r) * d.C + 2L * d.Hk * d.dk + (long)h * d.dv + j] =
            beta[vrow(d, t0 + r, h)] * sR[r * LX + j];
    }
}

// One block per (chunk, value head): dq = diag(G) dO h^T + (dA o D) K and dk = diag(e^(gL - gc)) Vn dhn^T +
// diag(beta G) X + scale (dA o D)^T Q + E K, with D_rs = G_r / G_s and E_rs = beta_r dM_rs D_rs (s < r),
// dM_sr beta_s D_sr (s > r). Beside them, for the gates, per token oi_r = scale q_r . (dO h^T)_r and
// er_r = k_r . (Vn dhn^T)_r, and <dhn, h>: into the chunk's P (free by now) at 0, CH and 2 CH.
__global__ void __launch_bounds__(GDN_THREADS)
    gdn_dqk_fast(float* dq, float* dk, float* stash, const float* dO, const float* hs, const float* dhn,
                 const float* Vn, const float* dA, const float* dM, const float* X, const float* qhat,
                 const float* khat, const float* beta, const float* gc, Dims d) {
    extern __shared__ __align__(128) float gdn_sm[];
    int LK = d.dkp + 4, LV = d.dvp + 4, nh = max(d.dkp * LV, 2 * CH * LK);
    float *sO = gdn_sm, *sH = sO + CH * LV, *sDQ = sH + nh, *sDK = sDQ + CH * LK, *sE1 = sDK + CH * LK;
    float *sE2 = sE1 + CH * LC, *sg = sE2 + CH * LC, *sb = sg + CH;
    float *sK = sH, *sQ = sH + CH * LK;
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c), t0 = chunk_t0(d, c);
    long lv = (long)d.Hv * d.dv, vo = val_off(d, t0, h, d.dv), m0 = cmat(d, c, h);
    const float *S = hs + cstate(d, c, h), *dS = dhn + cstate(d, c, h);
    tile_load(sO, LV, dO + vo, lv, CH, L, d.dv, d.dvp);
    tile_load(sH, LV, S, d.dv, d.dkp, d.dk, d.dv, d.dvp);
    for (int r = threadIdx.x; r < CH; r += blockDim.x) {
        sg[r] = r < L ? gc[vrow(d, t0 + r, h)] : 0.0f;
        sb[r] = r < L ? beta[vrow(d, t0 + r, h)] : 0.0f;
    }
    __syncthreads();
    smem_gemm<RM, CM>(sDQ, LK, sO, LV, sH, LV, CH, d.dkp, d.dvp, 1.0f, 0.0f);
    __syncthreads();
    tile_load(sO, LV, Vn + vo, lv, CH, L, d.dv, d.dvp);
    tile_load(sH, LV, dS, d.dv, d.dkp, d.dk, d.dv, d.dvp);
    __syncthreads();
    smem_gemm<RM, CM>(sDK, LK, sO, LV, sH, LV, CH, d.dkp, d.dvp, 1.0f, 0.0f);
    float sh = 0.0f;
    for (int i = threadIdx.x; i < d.dk * d.dv; i += blockDim.x) sh += sH[(i / d.dv) * LV + i % d.dv] * S[i];
    sh = block_sum(sh); // syncs: sH is free after it
    if (threadIdx.x == 0) stash[m0 + 2 * CH] = sh;
    float gL = sg[L - 1];
    tile_load(sK, LK, key_rows(khat, d, t0, h), (long)d.Hk * d.dk, CH, L, d.dk, d.dkp);
    tile_load(sQ, LK, key_rows(qhat, d, t0, h), (long)d.Hk * d.dk, CH, L, d.dk, d.dkp);
    for (int i = threadIdx.x; i < CH * CH; i += blockDim.x) {
        int r = i / CH, s = i % CH;
        float e1 = 0.0f, e2 = 0.0f;
        if (r < L && s < L) {
            if (s <= r) e1 = dA[m0 + i] * expf(sg[r] - sg[s]);
            if (s < r) e2 = sb[r] * dM[m0 + i] * expf(sg[r] - sg[s]);
            if (s > r) e2 = dM[m0 + s * CH + r] * sb[s] * expf(sg[s] - sg[r]);
        }
        sE1[r * LC + s] = e1, sE2[r * LC + s] = e2;
    }
    __syncthreads();
    const float* xr = X + val_off(d, t0, h, d.dk);
    for (int r = threadIdx.x / 32; r < CH; r += blockDim.x / 32) {
        int lane = threadIdx.x % 32;
        float oi = 0.0f, er = 0.0f;
        for (int i = lane; i < d.dkp; i += 32)
            oi += sDQ[r * LK + i] * sQ[r * LK + i], er += sDK[r * LK + i] * sK[r * LK + i];
        oi = warp_sum(oi) * d.scale, er = warp_sum(er);
        if (lane == 0) stash[m0 + r] = oi, stash[m0 + CH + r] = er;
        float G = expf(sg[r]), eL = r < L ? expf(gL - sg[r]) : 0.0f;
        for (int i = lane; i < d.dkp; i += 32) {
            float x = r < L && i < d.dk ? xr[(long)r * d.Hv * d.dk + i] : 0.0f;
            sDQ[r * LK + i] *= G;
            sDK[r * LK + i] = eL * sDK[r * LK + i] + sb[r] * G * x;
        }
    }
    __syncthreads();
    smem_gemm<RM, RM>(sDQ, LK, sE1, LC, sK, LK, CH, d.dkp, CH, 1.0f, 1.0f);
    smem_gemm<CM, RM>(sDK, LK, sE1, LC, sQ, LK, CH, d.dkp, CH, d.scale, 1.0f);
    smem_gemm<RM, RM>(sDK, LK, sE2, LC, sK, LK, CH, d.dkp, CH, 1.0f, 1.0f);
    __syncthreads();
    tile_store(dq + val_off(d, t0, h, d.dk), (long)d.Hv * d.dk, sDQ, LK, L, d.dk);
    tile_store(dk + val_off(d, t0, h, d.dk), (long)d.Hv * d.dk, sDK, LK, L, d.dk);
}

// One block of CH threads per (chunk, value head): the gates' gradients as gdn_dgate_kernel, with the
// O(dk dv) sums from gdn_dqk_fast's stash.
__global__ void gdn_dgate_fast(float* db, float* da, const float* stash, const float* v, const float* X,
                               const float* Y, const float* dA, const float* Aqk, const float* dM,
                               const float* KK, const float* khat, const float* beta, const float* gc,
                               const float* dgda, Dims d) {
    __shared__ float dgc[CH], pe[CH];
    int c = blockIdx.x / d.Hv, h = blockIdx.x % d.Hv, L = chunk_len(d, c), t0 = chunk_t0(d, c), r = threadIdx.x;
    long m0 = cmat(d, c, h);
    float gL = gc[vrow(d, t0 + L - 1, h)], g = 0.0f, er = 0.0f;
    if (r < L) {
        er = stash[m0 + CH + r];
        g = gdn_gate_row(db, &er, gL, stash[m0 + r], v, X, Y, dA, Aqk, dM, KK, khat, beta, gc, d, t0, h, r, L,
                         m0);
    }
    dgc[r] = g, pe[r] = er;
    __syncthreads();
    if (r == 0) {
        float esum = 0.0f;
        for (int s = 0; s < L; s++) esum += pe[s];
        dgc[L - 1] += esum + expf(gL) * stash[m0 + 2 * CH];
        float acc = 0.0f;
        for (int s = L - 1; s >= 0; s--) {
            acc += dgc[s];
            long ts = vrow(d, t0 + s, h);
            da[ts] = acc * dgda[ts];
        }
    }
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

// Which pieces run the fast kernels: AUTOQ_GDN_FAST, a bit mask (GDN_FAST_* below; 0 = all plain, 511 = all
// fast), else GDN_FAST_DEFAULT. One bit per piece so that a wrong result can be traced to one kernel.
enum {
    GDN_FAST_PREP = 1,
    GDN_FAST_STATE = 2,
    GDN_FAST_OUT = 4,
    GDN_FAST_DH = 8,
    GDN_FAST_DW = 16,
    GDN_FAST_PAIRS = 32,
    GDN_FAST_PDM = 64,
    GDN_FAST_XY = 128,
    GDN_FAST_DQK = 256, // dq, dk and the gates' gradients (gdn_dgate_fast reads gdn_dqk_fast's sums)
    GDN_FAST_ALL = 511
};
#ifndef GDN_FAST_DEFAULT
#define GDN_FAST_DEFAULT GDN_FAST_ALL
#endif

static int gdn_fast_mask(void) {
    const char* e = getenv("AUTOQ_GDN_FAST");
    if (!e || !*e) return GDN_FAST_DEFAULT;
    char* end;
    long m = strtol(e, &end, 0);
    if (*end || m < 0 || m > GDN_FAST_ALL) {
        fprintf(stderr, "autoq: AUTOQ_GDN_FAST: '%s' is not a mask from 0 (plain kernels) to %d (all fast)\n",
                e, GDN_FAST_ALL);
        exit(2);
    }
    return (int)m;
}

// Whether a fast kernel's shared memory (bytes, plus a margin for block_sum's static arrays) fits the device:
// when not (dk or dv too large) the piece runs the plain kernel.
static bool fast_fits(const void* kernel, size_t bytes) {
    int dev, most;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaDeviceGetAttribute(&most, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if (bytes + 512 > (size_t)most) return false;
    if (bytes > 48 * 1024)
        cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return true;
}

// The fast kernels' shared memory in bytes, as each lays it out.
static size_t fast_smem(const Dims& d, int piece) {
    long LK = d.dkp + 4, LV = d.dvp + 4, LX = LK > LV ? LK : LV, LO = d.ow + 4, n = 0;
    switch (piece) {
    case GDN_FAST_PREP:
        n = CH * LX + CH * (LX > LC ? LX : LC) + 2 * CH * LC + 3 * CH;
        break;
    case GDN_FAST_STATE:
        n = d.dkp * LW + 2 * CH * LK + CH * LW + CH;
        break;
    case GDN_FAST_OUT:
        n = CH * (LK > LC ? LK : LC) + (d.dkp > CH ? d.dkp : CH) * LO + CH * LO + CH;
        break;
    case GDN_FAST_DH:
        n = d.dkp * LW + CH * LK + CH * LC + 2 * CH * LW + CH;
        break;
    case GDN_FAST_DW:
        n = CH * LV + d.dkp * LV + CH * LK;
        break;
    case GDN_FAST_PAIRS:
        n = 2 * CH * LX + 2 * CH * LC + 2 * CH;
        break;
    case GDN_FAST_PDM:
        n = 3 * CH * LC;
        break;
    case GDN_FAST_XY:
        n = CH * LC + 2 * CH * LX;
        break;
    case GDN_FAST_DQK: {
        long nh = d.dkp * LV > 2 * CH * LK ? d.dkp * LV : 2 * CH * LK;
        n = CH * LV + nh + 2 * CH * LK + 2 * CH * LC + 2 * CH;
        break;
    }
    }
    return sizeof(float) * n;
}

// The piece runs fast: its bit is set and its shared memory fits (then *smem its bytes).
static bool use_fast(int mask, int piece, const Dims& d, const void* kernel, size_t* smem) {
    *smem = fast_smem(d, piece);
    return (mask & piece) && fast_fits(kernel, *smem);
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
    int fm = gdn_fast_mask();
    size_t sm;
    if (use_fast(fm, GDN_FAST_PREP, d, (const void*)gdn_prep_fast, &sm))
        gdn_prep_fast<<<chunks, GDN_THREADS, sm>>>(c->Tm, c->W, c->U, c->Aqk, c->qhat, c->khat, c->v, c->beta,
                                                   c->gc, d);
    else
        gdn_prep_kernel<<<chunks, 256>>>(c->Tm, c->W, c->U, c->Aqk, c->qhat, c->khat, c->v, c->beta, c->gc, d);
    dim3 sg(nb * d.Hv, ceil_div(d.dv, 32));
    if (use_fast(fm, GDN_FAST_STATE, d, (const void*)gdn_state_fast, &sm))
        gdn_state_fast<<<sg, GDN_THREADS, sm>>>(c->h, c->Vn, c->W, c->U, c->khat, c->gc, d);
    else
        gdn_state_kernel<<<sg, 256, state_smem(d, (const void*)gdn_state_kernel)>>>(c->h, c->Vn, c->W, c->U,
                                                                                    c->khat, c->gc, d);
    if (use_fast(fm, GDN_FAST_OUT, d, (const void*)gdn_out_fast, &sm))
        gdn_out_fast<<<dim3(chunks, ceil_div(d.dvp, d.ow)), GDN_THREADS, sm>>>(c->o, c->qhat, c->h, c->Aqk,
                                                                               c->Vn, c->gc, d);
    else
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
    int fm = gdn_fast_mask();
    size_t sm;
    dim3 sg(nb * d.Hv, ceil_div(d.dv, 32));
    if (use_fast(fm, GDN_FAST_DH, d, (const void*)gdn_dh_fast, &sm))
        gdn_dh_fast<<<sg, GDN_THREADS, sm>>>(c->dhn, c->dVn, c->dO, c->Aqk, c->W, c->qhat, c->khat, c->gc, d);
    else
        gdn_dh_kernel<<<sg, 256, state_smem(d, (const void*)gdn_dh_kernel)>>>(c->dhn, c->dVn, c->dO, c->Aqk,
                                                                              c->W, c->qhat, c->khat, c->gc, d);
    if (use_fast(fm, GDN_FAST_DW, d, (const void*)gdn_dw_fast, &sm))
        gdn_dw_fast<<<chunks, GDN_THREADS, sm>>>(c->dW, c->dVn, c->h, d);
    else
        gdn_dw_kernel<<<ceil_div(vk, 256), 256>>>(c->dW, c->dVn, c->h, d);
    if (use_fast(fm, GDN_FAST_PAIRS, d, (const void*)gdn_pairs_fast, &sm))
        gdn_pairs_fast<<<chunks, GDN_THREADS, sm>>>(c->dA, c->dT, c->KK, c->dO, c->Vn, c->dW, c->dVn, c->khat,
                                                    c->v, c->beta, c->gc, d);
    else
        gdn_pairs_kernel<<<chunks, 256>>>(c->dA, c->dT, c->KK, c->dO, c->Vn, c->dW, c->dVn, c->khat, c->v,
                                          c->beta, c->gc, d);
    if (use_fast(fm, GDN_FAST_PDM, d, (const void*)gdn_pdm_fast, &sm)) {
        gdn_pdm_fast<<<chunks, GDN_THREADS, sm>>>(c->P, c->dM, c->Tm, c->dT, d);
    } else {
        gdn_p_kernel<<<chunks, 256>>>(c->P, c->Tm, c->dT, d);
        gdn_dm_kernel<<<chunks, 256>>>(c->dM, c->P, c->Tm, d);
    }
    if (use_fast(fm, GDN_FAST_XY, d, (const void*)gdn_xy_fast, &sm)) {
        gdn_xy_fast<<<chunks, GDN_THREADS, sm>>>(c->X, c->Y, c->dact, c->Tm, c->dW, c->dVn, c->beta, d);
    } else {
        gdn_xy_kernel<<<chunks, 256>>>(c->X, c->Y, c->Tm, c->dW, c->dVn, d);
        gdn_dv_kernel<<<ceil_div(vv, 256), 256>>>(c->dact, c->Y, c->beta, d);
    }
    if (use_fast(fm, GDN_FAST_DQK, d, (const void*)gdn_dqk_fast, &sm)) {
        // the chunk's P (read by gdn_dm only) holds the gates' sums
        gdn_dqk_fast<<<chunks, GDN_THREADS, sm>>>(c->dq, c->dk, c->P, c->dO, c->h, c->dhn, c->Vn, c->dA, c->dM,
                                                  c->X, c->qhat, c->khat, c->beta, c->gc, d);
        gdn_dgate_fast<<<chunks, CH>>>(db, da, c->P, c->v, c->X, c->Y, c->dA, c->Aqk, c->dM, c->KK, c->khat,
                                       c->beta, c->gc, c->dgda, d);
    } else {
        gdn_dqk_kernel<<<chunks, 256>>>(c->dq, c->dk, c->dO, c->h, c->dhn, c->Vn, c->dA, c->dM, c->X, c->qhat,
                                        c->khat, c->beta, c->gc, d);
        gdn_dgate_kernel<<<chunks, GDN_DG_PARTS * CH>>>(db, da, c->dO, c->h, c->dhn, c->Vn, c->v, c->X, c->Y,
                                                        c->dA, c->Aqk, c->dM, c->KK, c->qhat, c->khat, c->beta,
                                                        c->gc, c->dgda, d);
    }
    gdn_l2norm_bwd_kernel<<<ceil_div(2 * rows * d.Hk * 32, 256), 256>>>(c->dact, c->dq, c->dk, c->qhat, c->khat,
                                                                        c->rq, c->rk, d);
    gdn_conv_bwd_kernel<<<ceil_div(tc, 256), 256>>>(dqkv, c->dact, c->pre, p->conv_w, d);
    cudaCheck(cudaGetLastError());
}

// The Gated DeltaNet core on the CPU, fp32, as transformers 5.17 computes it (see gated_delta.h for the
// formulas). The delta rule runs token by token (transformers' torch_recurrent_gated_delta_rule; its
// chunked fallback is the same function of the inputs). Every value head is one sequential computation,
// so OpenMP over heads gives bit-identical results for any thread count.
//
// The backward recomputes the states of the recurrence chunk by chunk from checkpoints saved every
// GDN_CKPT tokens by the forward: (T / GDN_CKPT) states per head instead of T.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/util.h"
#include "gated_delta.h"

#define GDN_CKPT 64

struct GdnCache {
    GdnShape s;
    float* pre;  // (T, C) the conv's output before SiLU
    float* qhat; // (T, Hk, dk) q L2-normalised (not yet scaled)
    float* khat; // (T, Hk, dk) k L2-normalised
    float* rq;   // (T, Hk) q's inverse norm, rsqrt(sum q^2 + 1e-6)
    float* rk;   // (T, Hk)
    float* beta; // (T, Hv) sigmoid(b)
    float* g;    // (T, Hv) log of the decay
    float* dgda; // (T, Hv) dg / da
    float* u;    // (T, Hv, dv) v - S^T k after the decay (delta = beta u)
    float* o;    // (T, Hv, dv) the delta rule's output, before the gated norm
    float* rstd; // (T, Hv) the gated norm's 1 / rms
    float* z;    // (T, Hv, dv) a copy of the gate input
    float* ckpt; // (ceil(T / GDN_CKPT), Hv, dk, dv) the state before tokens 0, GDN_CKPT, ...
};

static int n_ckpt(const GdnShape* s) { return (s->T + GDN_CKPT - 1) / GDN_CKPT; }

// The config loader rejects such shapes with exit 2 naming the field; reaching here is a bug.
static void check_shape(const GdnShape* s) {
    if (s->T < 1 || s->Hk < 1 || s->Hv < 1 || s->Hv % s->Hk || s->dk < 1 || s->dv < 1 || s->K < 1 ||
        !(s->eps >= 0))
        fail_other("gated delta: bad shape (T %d, Hk %d, Hv %d, dk %d, dv %d, K %d)", s->T, s->Hk, s->Hv, s->dk,
                   s->dv, s->K);
}

static void check_cache(const GdnShape* s, const GdnCache* c) {
    check_shape(s);
    if (s->T != c->s.T || s->Hk != c->s.Hk || s->Hv != c->s.Hv || s->dk != c->s.dk || s->dv != c->s.dv ||
        s->K != c->s.K)
        fail_other("gated delta: the shape differs from its cache's");
}

GdnCache* gdn_cache_init(const GdnShape* s) {
    check_shape(s);
    GdnCache* c = xcalloc(1, sizeof(GdnCache));
    long T = s->T, C = gdn_channels(s), kd = (long)s->Hk * s->dk, vd = (long)s->Hv * s->dv;
    c->s = *s;
    c->pre = xmalloc(sizeof(float) * T * C);
    c->qhat = xmalloc(sizeof(float) * T * kd);
    c->khat = xmalloc(sizeof(float) * T * kd);
    c->rq = xmalloc(sizeof(float) * T * s->Hk);
    c->rk = xmalloc(sizeof(float) * T * s->Hk);
    c->beta = xmalloc(sizeof(float) * T * s->Hv);
    c->g = xmalloc(sizeof(float) * T * s->Hv);
    c->dgda = xmalloc(sizeof(float) * T * s->Hv);
    c->u = xmalloc(sizeof(float) * T * vd);
    c->o = xmalloc(sizeof(float) * T * vd);
    c->rstd = xmalloc(sizeof(float) * T * s->Hv);
    c->z = xmalloc(sizeof(float) * T * vd);
    c->ckpt = xmalloc(sizeof(float) * n_ckpt(s) * s->Hv * s->dk * s->dv);
    return c;
}

void gdn_cache_free(GdnCache* c) {
    if (!c) return;
    free(c->pre), free(c->qhat), free(c->khat), free(c->rq), free(c->rk), free(c->beta), free(c->g);
    free(c->dgda), free(c->u), free(c->o), free(c->rstd), free(c->z), free(c->ckpt);
    free(c);
}

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
static float siluf(float x) { return x / (1.0f + expf(-x)); }
// d silu(x) / dx = s (1 + x (1 - s)), s = sigmoid(x)
static float silu_grad(float x) {
    float s = sigmoidf(x);
    return s * (1.0f + x * (1.0f - s));
}
// torch's softplus (beta 1, threshold 20): x itself above 20
static float softplusf(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// ---------------------------------------------------------------------------------------------------
// Forward pieces

// pre (T, C) = causal depthwise conv of x (T, C) with w (C, K): pre[t][c] = sum_j w[c][j] x[t-K+1+j][c]
// (conv1d with padding K-1, its first T outputs); no bias.
static void conv_forward(const GdnShape* s, const float* w, const float* x, float* pre) {
    int T = s->T, C = gdn_channels(s), K = s->K;
#pragma omp parallel for
    for (int t = 0; t < T; t++)
        for (int c = 0; c < C; c++) {
            float acc = 0.0f;
            for (int j = 0; j < K; j++) {
                int tt = t - K + 1 + j;
                if (tt >= 0) acc += w[(long)c * K + j] * x[(long)tt * C + c];
            }
            pre[(long)t * C + c] = acc;
        }
}

// Per head of d values at column col0 of silu(pre) (row stride C): out (T, H, d) = x * r,
// r (T, H) = rsqrt(sum x^2 + 1e-6) (transformers' l2norm).
static void l2norm_forward(const float* pre, int T, int C, int col0, int H, int d, float* out, float* r) {
#pragma omp parallel for
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            const float* x = pre + (long)t * C + col0 + (long)h * d;
            float* y = out + ((long)t * H + h) * d;
            float ss = 0.0f;
            for (int i = 0; i < d; i++) {
                y[i] = siluf(x[i]);
                ss += y[i] * y[i];
            }
            float ri = 1.0f / sqrtf(ss + 1e-6f);
            r[(long)t * H + h] = ri;
            for (int i = 0; i < d; i++) y[i] *= ri;
        }
}

// beta = sigmoid(b), g = -exp(A_log) softplus(a + dt_bias), and dg/da, all (T, Hv).
static void gates_forward(const GdnShape* s, const GdnParams* p, const float* b, const float* a, GdnCache* c) {
    for (long i = 0; i < (long)s->T * s->Hv; i++) {
        int h = (int)(i % s->Hv);
        float A = expf(p->A_log[h]), x = a[i] + p->dt_bias[h];
        c->beta[i] = sigmoidf(b[i]);
        c->g[i] = -A * softplusf(x);
        c->dgda[i] = -A * (x > 20.0f ? 1.0f : sigmoidf(x));
    }
}

// One token of the delta rule on S (dk, dv): S = e^g S; u = v - S^T k; S += k (beta u)^T; o = S^T q.
static void delta_step(float* restrict S, int dk, int dv, const float* restrict q, const float* restrict k,
                       const float* restrict v, float beta, float g, float* restrict u, float* restrict o) {
    float eg = expf(g);
    for (int j = 0; j < dv; j++) u[j] = 0.0f;
    for (int i = 0; i < dk; i++) {
        float* Si = S + (long)i * dv;
        for (int j = 0; j < dv; j++) {
            Si[j] *= eg;
            u[j] += Si[j] * k[i];
        }
    }
    for (int j = 0; j < dv; j++) u[j] = v[j] - u[j];
    for (int j = 0; j < dv; j++) o[j] = 0.0f;
    for (int i = 0; i < dk; i++) {
        float* Si = S + (long)i * dv;
        for (int j = 0; j < dv; j++) {
            Si[j] += k[i] * (beta * u[j]);
            o[j] += Si[j] * q[i];
        }
    }
}

// The delta rule for value head h over the window, from a zero state; checkpoints the state every
// GDN_CKPT tokens. v is read from silu(pre), so it is formed here per token.
static void delta_forward_head(GdnCache* c, int h) {
    const GdnShape* s = &c->s;
    int T = s->T, Hk = s->Hk, Hv = s->Hv, dk = s->dk, dv = s->dv, C = gdn_channels(s), kh = h / (Hv / Hk);
    long sz = (long)dk * dv;
    float scale = 1.0f / sqrtf((float)dk);
    float* S = xcalloc(sz, sizeof(float));
    float *q = xmalloc(sizeof(float) * dk), *v = xmalloc(sizeof(float) * dv);
    for (int t = 0; t < T; t++) {
        if (t % GDN_CKPT == 0) memcpy(c->ckpt + ((long)(t / GDN_CKPT) * Hv + h) * sz, S, sizeof(float) * sz);
        const float* qh = c->qhat + ((long)t * Hk + kh) * dk;
        const float* kk = c->khat + ((long)t * Hk + kh) * dk;
        const float* pv = c->pre + (long)t * C + 2L * Hk * dk + (long)h * dv;
        for (int i = 0; i < dk; i++) q[i] = qh[i] * scale;
        for (int j = 0; j < dv; j++) v[j] = siluf(pv[j]);
        long ti = (long)t * Hv + h;
        delta_step(S, dk, dv, q, kk, v, c->beta[ti], c->g[ti], c->u + ti * dv, c->o + ti * dv);
    }
    free(S), free(q), free(v);
}

// out (T, Hv, dv) = w * o * rstd * silu(z), rstd = 1 / sqrt(mean over dv of o^2 + eps), per head.
static void gated_norm_forward(const GdnShape* s, const float* w, GdnCache* c, float* out) {
    int dv = s->dv;
#pragma omp parallel for
    for (long r = 0; r < (long)s->T * s->Hv; r++) {
        const float *o = c->o + r * dv, *z = c->z + r * dv;
        float ss = 0.0f;
        for (int j = 0; j < dv; j++) ss += o[j] * o[j];
        float rs = 1.0f / sqrtf(ss / dv + s->eps);
        c->rstd[r] = rs;
        for (int j = 0; j < dv; j++) out[r * dv + j] = w[j] * (o[j] * rs) * siluf(z[j]);
    }
}

void gdn_forward(const GdnShape* s, const GdnParams* p, const float* qkv, const float* z, const float* b,
                 const float* a, float* out, GdnCache* cache) {
    GdnCache* c = cache ? cache : gdn_cache_init(s);
    check_cache(s, c);
    int T = s->T, C = gdn_channels(s);
    conv_forward(s, p->conv_w, qkv, c->pre);
    l2norm_forward(c->pre, T, C, 0, s->Hk, s->dk, c->qhat, c->rq);
    l2norm_forward(c->pre, T, C, s->Hk * s->dk, s->Hk, s->dk, c->khat, c->rk);
    gates_forward(s, p, b, a, c);
    memcpy(c->z, z, sizeof(float) * T * s->Hv * s->dv);
#pragma omp parallel for schedule(dynamic, 1)
    for (int h = 0; h < s->Hv; h++) delta_forward_head(c, h);
    gated_norm_forward(s, p->norm_w, c, out);
    if (!cache) gdn_cache_free(c);
}

// ---------------------------------------------------------------------------------------------------
// Backward pieces

// dout (T, Hv, dv) -> do (T, Hv, dv) through the rmsnorm, dz through silu(z).
static void gated_norm_backward(const GdnShape* s, const float* w, const GdnCache* c, const float* dout,
                                float* dO, float* dz) {
    int dv = s->dv;
#pragma omp parallel for
    for (long r = 0; r < (long)s->T * s->Hv; r++) {
        const float *o = c->o + r * dv, *z = c->z + r * dv, *dy = dout + r * dv;
        float rs = c->rstd[r], dot = 0.0f;
        for (int j = 0; j < dv; j++) {
            float n = o[j] * rs;
            dz[r * dv + j] = dy[j] * w[j] * n * silu_grad(z[j]);
            dot += dy[j] * w[j] * siluf(z[j]) * o[j];
        }
        float k = dot * rs * rs * rs / dv;
        for (int j = 0; j < dv; j++) dO[r * dv + j] = dy[j] * w[j] * siluf(z[j]) * rs - o[j] * k;
    }
}

// One token of the delta rule backward. St: the state after the token, Sp: the state before it (not
// decayed); dS (dk, dv): in, the gradient of St; out, that of Sp. Gradients of q (scaled), k, v, beta, g.
static void delta_step_backward(const float* restrict St, const float* restrict Sp, float* restrict dS, int dk,
                                int dv, const float* restrict q, const float* restrict k,
                                const float* restrict u, float beta, float g, const float* restrict dO,
                                float* restrict dq, float* restrict dk_, float* restrict dv_, float* dbeta,
                                float* dg, float* restrict ddelta) {
    float eg = expf(g);
    // o = St^T q: dS += q dO^T, dq = St dO; S = S' + k delta^T: ddelta = dS^T k, dk = dS delta
    for (int j = 0; j < dv; j++) ddelta[j] = 0.0f;
    for (int i = 0; i < dk; i++) {
        const float* Si = St + (long)i * dv;
        float* dSi = dS + (long)i * dv;
        float aq = 0.0f, ak = 0.0f;
        for (int j = 0; j < dv; j++) {
            dSi[j] += q[i] * dO[j];
            aq += Si[j] * dO[j];
            ddelta[j] += dSi[j] * k[i];
            ak += dSi[j] * (beta * u[j]);
        }
        dq[i] = aq;
        dk_[i] = ak;
    }
    // delta = beta (v - S'^T k): dv = beta ddelta, dbeta = ddelta . u, dkv = -beta ddelta (in ddelta)
    float db = 0.0f;
    for (int j = 0; j < dv; j++) {
        dv_[j] = beta * ddelta[j];
        db += ddelta[j] * u[j];
        ddelta[j] = -beta * ddelta[j];
    }
    *dbeta = db;
    // kv = S'^T k, S' = e^g Sp: dS' = dS + k dkv^T, dk += S' dkv, dg = <dS', S'>, dSp = e^g dS'
    float gsum = 0.0f;
    for (int i = 0; i < dk; i++) {
        const float* Si = Sp + (long)i * dv;
        float* dSi = dS + (long)i * dv;
        float ak = 0.0f, ag = 0.0f;
        for (int j = 0; j < dv; j++) {
            float sp = eg * Si[j];
            dSi[j] += k[i] * ddelta[j];
            ak += sp * ddelta[j];
            ag += dSi[j] * sp;
            dSi[j] *= eg;
        }
        dk_[i] += ak;
        gsum += ag;
    }
    *dg = gsum;
}

// Value head h: the states of each checkpointed chunk recomputed forward, then walked backward.
// dO (T, Hv, dv); out: dq, dk (T, Hv, dk) per value head, dv into dact's v columns (row stride C),
// dbeta, dg (T, Hv).
static void delta_backward_head(const GdnCache* c, int h, const float* dO, float* dq, float* dk, float* dact,
                                float* dbeta, float* dg) {
    const GdnShape* s = &c->s;
    int T = s->T, Hk = s->Hk, Hv = s->Hv, dk_ = s->dk, dv = s->dv, C = gdn_channels(s), kh = h / (Hv / Hk);
    long sz = (long)dk_ * dv;
    float scale = 1.0f / sqrtf((float)dk_);
    float* st = xmalloc(sizeof(float) * sz * (GDN_CKPT + 1)); // states before and after each token
    float* dS = xcalloc(sz, sizeof(float));
    float *q = xmalloc(sizeof(float) * dk_), *ddelta = xmalloc(sizeof(float) * dv);
    for (int ck = n_ckpt(s) - 1; ck >= 0; ck--) {
        int t0 = ck * GDN_CKPT, t1 = t0 + GDN_CKPT < T ? t0 + GDN_CKPT : T;
        memcpy(st, c->ckpt + ((long)ck * Hv + h) * sz, sizeof(float) * sz);
        for (int t = t0; t < t1; t++) { // S = e^g S + k (beta u)^T, as delta_step rounds it
            long ti = (long)t * Hv + h;
            const float *kk = c->khat + ((long)t * Hk + kh) * dk_, *u = c->u + ti * dv;
            float eg = expf(c->g[ti]), beta = c->beta[ti];
            const float* Sp = st + (t - t0) * sz;
            float* Sn = st + (t - t0 + 1) * sz;
            for (int i = 0; i < dk_; i++)
                for (int j = 0; j < dv; j++) {
                    float x = Sp[(long)i * dv + j] * eg;
                    Sn[(long)i * dv + j] = x + kk[i] * (beta * u[j]);
                }
        }
        for (int t = t1 - 1; t >= t0; t--) {
            long ti = (long)t * Hv + h;
            const float* qh = c->qhat + ((long)t * Hk + kh) * dk_;
            for (int i = 0; i < dk_; i++) q[i] = qh[i] * scale;
            float* dvt = dact + (long)t * C + 2L * Hk * dk_ + (long)h * dv;
            delta_step_backward(st + (t - t0 + 1) * sz, st + (t - t0) * sz, dS, dk_, dv, q,
                                c->khat + ((long)t * Hk + kh) * dk_, c->u + ti * dv, c->beta[ti], c->g[ti],
                                dO + ti * dv, dq + ti * dk_, dk + ti * dk_, dvt, dbeta + ti, dg + ti, ddelta);
        }
    }
    free(st), free(dS), free(q), free(ddelta);
}

// dq, dk (T, Hv, d) summed over the value heads of each key head (in head order), times mult, then back
// through the L2 norm and the SiLU into dact's columns from col0.
static void l2norm_backward(const GdnCache* c, const float* dx_v, const float* xhat, const float* r, float mult,
                            int col0, float* dact) {
    const GdnShape* s = &c->s;
    int T = s->T, Hk = s->Hk, Hv = s->Hv, d = s->dk, C = gdn_channels(s), rep = Hv / Hk;
#pragma omp parallel for
    for (int t = 0; t < T; t++) {
        float* dy = xmalloc(sizeof(float) * d);
        for (int kh = 0; kh < Hk; kh++) {
            for (int i = 0; i < d; i++) dy[i] = 0.0f;
            for (int m = 0; m < rep; m++) {
                const float* src = dx_v + ((long)t * Hv + kh * rep + m) * d;
                for (int i = 0; i < d; i++) dy[i] += src[i];
            }
            // y = x r, r = (sum x^2 + eps)^-1/2: dx = r dy - x r^3 (dy . x) = r (dy - yhat (dy . yhat))
            const float* y = xhat + ((long)t * Hk + kh) * d;
            float ri = r[(long)t * Hk + kh], dot = 0.0f;
            for (int i = 0; i < d; i++) dot += dy[i] * mult * y[i];
            float* dst = dact + (long)t * C + col0 + (long)kh * d;
            for (int i = 0; i < d; i++) dst[i] = ri * (dy[i] * mult - y[i] * dot);
        }
        free(dy);
    }
}

// dqkv (T, C): through the SiLU (dact times silu'(pre)) and the conv (its transpose).
static void conv_backward(const GdnShape* s, const float* w, const float* pre, float* dact, float* dqkv) {
    int T = s->T, C = gdn_channels(s), K = s->K;
    for (long i = 0; i < (long)T * C; i++) dact[i] *= silu_grad(pre[i]);
#pragma omp parallel for
    for (int t = 0; t < T; t++)
        for (int c = 0; c < C; c++) {
            float acc = 0.0f;
            for (int j = 0; j < K; j++) {
                int to = t + K - 1 - j; // the output that read x[t] through tap j
                if (to < T) acc += w[(long)c * K + j] * dact[(long)to * C + c];
            }
            dqkv[(long)t * C + c] = acc;
        }
}

void gdn_backward(const GdnShape* s, const GdnParams* p, const GdnCache* c, const float* dout, float* dqkv,
                  float* dz, float* db, float* da) {
    check_cache(s, c);
    int T = s->T, Hv = s->Hv, C = gdn_channels(s);
    long vd = (long)T * Hv * s->dv, kd = (long)T * Hv * s->dk;
    float *dO = xmalloc(sizeof(float) * vd), *dq = xmalloc(sizeof(float) * kd),
          *dk = xmalloc(sizeof(float) * kd);
    float *dact = xmalloc(sizeof(float) * T * C), *dbeta = xmalloc(sizeof(float) * T * Hv);
    float* dg = xmalloc(sizeof(float) * T * Hv);
    gated_norm_backward(s, p->norm_w, c, dout, dO, dz);
#pragma omp parallel for schedule(dynamic, 1)
    for (int h = 0; h < Hv; h++) delta_backward_head(c, h, dO, dq, dk, dact, dbeta, dg);
    for (long i = 0; i < (long)T * Hv; i++) {
        db[i] = dbeta[i] * c->beta[i] * (1.0f - c->beta[i]);
        da[i] = dg[i] * c->dgda[i];
    }
    // q was scaled by 1 / sqrt(dk) after the norm
    l2norm_backward(c, dq, c->qhat, c->rq, 1.0f / sqrtf((float)s->dk), 0, dact);
    l2norm_backward(c, dk, c->khat, c->rk, 1.0f, s->Hk * s->dk, dact);
    // the norm was of silu(pre): l2norm_backward gave d silu(pre) for q, k; delta_backward_head gave v's
    conv_backward(s, p->conv_w, c->pre, dact, dqkv);
    free(dO), free(dq), free(dk), free(dact), free(dbeta), free(dg);
}

// Causal attention on the CPU, one head at a time through GEMMs: S = Q K^T,
// a masked row softmax, O = P V. Heads run in parallel; OpenBLAS (OpenMP
// build) runs single-threaded inside the parallel region.
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"

// T x T scratch of one head: a window too long for memory ends the run (exit 1), never a crash.
static float* scratch(int T) {
    float* p = malloc(sizeof(float) * (size_t)T * T);
    if (!p) {
        fprintf(stderr, "autoq: out of memory for the %d x %d attention scores of one head\n", T, T);
        exit(1);
    }
    return p;
}

// s (T, T) = q_h (T, hd; row stride ldq) . k_h (T, hd; row stride ldk)^T * scale
static void scores(float* s, const float* q, int ldq, const float* k, int ldk, int T, int hd, float scale) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, q, ldq, k, ldk, 0.0f, s, T);
}

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, int T, int H,
                       int KV, int hd) {
    int rep = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel
    {
        float* s = scratch(T);
#pragma omp for schedule(dynamic)
        for (int h = 0; h < H; h++) {
            int kh = h / rep;
            scores(s, q + (long)h * hd, H * hd, k + (long)kh * hd, KV * hd, T, hd, scale);
            for (int t = 0; t < T; t++) {
                float* row = s + (long)t * T;
                float m = -INFINITY;
                for (int j = 0; j <= t; j++) m = row[j] > m ? row[j] : m;
                float sum = 0.0f;
                for (int j = 0; j <= t; j++) {
                    row[j] = expf(row[j] - m);
                    sum += row[j];
                }
                float inv = 1.0f / sum;
                for (int j = 0; j <= t; j++) row[j] *= inv;
                for (int j = t + 1; j < T; j++) row[j] = 0.0f; // causal mask
                lse[(long)h * T + t] = m + logf(sum);
            }
            // out_h (T, hd; stride H*hd) = P (T, T) . v_h (T, hd; stride KV*hd)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, s, T, v + (long)kh * hd,
                        KV * hd, 0.0f, out + (long)h * hd, H * hd);
        }
        free(s);
    }
}

// Per kv head (so dk, dv have one writer): for each of its query heads,
// P = exp(S - lse), dP = dO V^T, dS = P (dP - rowsum(P dP)) * scale,
// dQ = dS K, dK += dS^T Q, dV += P^T dO.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* lse, int T, int H, int KV, int hd) {
    int rep = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
    int ldq = H * hd, ldk = KV * hd;
#pragma omp parallel
    {
        float* p = scratch(T);
        float* dp = scratch(T);
#pragma omp for schedule(dynamic)
        for (int kh = 0; kh < KV; kh++) {
            const float* kk = k + (long)kh * hd;
            const float* vv = v + (long)kh * hd;
            for (int t = 0; t < T; t++) {
                memset(dk + (long)t * ldk + (long)kh * hd, 0, sizeof(float) * hd);
                memset(dv + (long)t * ldk + (long)kh * hd, 0, sizeof(float) * hd);
            }
            for (int h = kh * rep; h < (kh + 1) * rep; h++) {
                const float* qq = q + (long)h * hd;
                const float* dd = dout + (long)h * hd;
                scores(p, qq, ldq, kk, ldk, T, hd, scale);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dd, ldq, vv, ldk, 0.0f, dp,
                            T);
                for (int t = 0; t < T; t++) {
                    float* pr = p + (long)t * T;
                    float* dr = dp + (long)t * T;
                    float l = lse[(long)h * T + t], D = 0.0f;
                    for (int j = 0; j <= t; j++) {
                        pr[j] = expf(pr[j] - l);
                        D += pr[j] * dr[j];
                    }
                    for (int j = 0; j <= t; j++) dr[j] = pr[j] * (dr[j] - D) * scale;
                    for (int j = t + 1; j < T; j++) pr[j] = dr[j] = 0.0f;
                }
                // dq_h = dS K ; dk += dS^T Q ; dv += P^T dO
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, dp, T, kk, ldk, 0.0f,
                            dq + (long)h * hd, ldq);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, dp, T, qq, ldq, 1.0f,
                            dk + (long)kh * hd, ldk);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, p, T, dd, ldq, 1.0f,
                            dv + (long)kh * hd, ldk);
            }
        }
        free(p);
        free(dp);
    }
}

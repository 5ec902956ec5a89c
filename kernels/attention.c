#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

static float dot(const float* a, const float* b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, int T, int H,
                       int KV, int hd) {
    int rep = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel
    {
        float* s = malloc(sizeof(float) * T);
#pragma omp for collapse(2)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                int kh = h / rep;
                const float* qt = q + ((long)t * H + h) * hd;
                float m = -INFINITY;
                for (int j = 0; j <= t; j++) {
                    s[j] = dot(qt, k + ((long)j * KV + kh) * hd, hd) * scale;
                    if (s[j] > m) m = s[j];
                }
                float sum = 0.0f;
                for (int j = 0; j <= t; j++) {
                    s[j] = expf(s[j] - m);
                    sum += s[j];
                }
                float* o = out + ((long)t * H + h) * hd;
                memset(o, 0, sizeof(float) * hd);
                for (int j = 0; j <= t; j++) {
                    const float* vj = v + ((long)j * KV + kh) * hd;
                    float p = s[j] / sum;
                    for (int d = 0; d < hd; d++) o[d] += p * vj[d];
                }
                lse[(long)h * T + t] = m + logf(sum);
            }
        free(s);
    }
}

// Two phases so that every output element has one writer: rows (dq and the
// row term D_t = sum_j P dP) first, then columns (dk, dv) per kv head.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* lse, int T, int H, int KV, int hd) {
    int rep = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
    float* Drow = malloc(sizeof(float) * (size_t)H * T);
#pragma omp parallel
    {
        float* p = malloc(sizeof(float) * T);
        float* dp = malloc(sizeof(float) * T);
#pragma omp for collapse(2)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                int kh = h / rep;
                const float* qt = q + ((long)t * H + h) * hd;
                const float* dot_ = dout + ((long)t * H + h) * hd;
                float l = lse[(long)h * T + t], D = 0.0f;
                for (int j = 0; j <= t; j++) {
                    p[j] = expf(dot(qt, k + ((long)j * KV + kh) * hd, hd) * scale - l);
                    dp[j] = dot(dot_, v + ((long)j * KV + kh) * hd, hd);
                    D += p[j] * dp[j];
                }
                Drow[(long)h * T + t] = D;
                float* dqt = dq + ((long)t * H + h) * hd;
                memset(dqt, 0, sizeof(float) * hd);
                for (int j = 0; j <= t; j++) {
                    float ds = p[j] * (dp[j] - D) * scale;
                    const float* kj = k + ((long)j * KV + kh) * hd;
                    for (int d = 0; d < hd; d++) dqt[d] += ds * kj[d];
                }
            }
#pragma omp for collapse(2)
        for (int kh = 0; kh < KV; kh++)
            for (int j = 0; j < T; j++) {
                const float* kj = k + ((long)j * KV + kh) * hd;
                const float* vj = v + ((long)j * KV + kh) * hd;
                float* dkj = dk + ((long)j * KV + kh) * hd;
                float* dvj = dv + ((long)j * KV + kh) * hd;
                memset(dkj, 0, sizeof(float) * hd);
                memset(dvj, 0, sizeof(float) * hd);
                for (int h = kh * rep; h < (kh + 1) * rep; h++)
                    for (int t = j; t < T; t++) {
                        const float* qt = q + ((long)t * H + h) * hd;
                        const float* dot_ = dout + ((long)t * H + h) * hd;
                        float pj = expf(dot(qt, kj, hd) * scale - lse[(long)h * T + t]);
                        float ds = pj * (dot(dot_, vj, hd) - Drow[(long)h * T + t]) * scale;
                        for (int d = 0; d < hd; d++) {
                            dkj[d] += ds * qt[d];
                            dvj[d] += pj * dot_[d];
                        }
                    }
            }
        free(p);
        free(dp);
    }
    free(Drow);
}

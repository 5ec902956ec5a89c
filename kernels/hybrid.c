// CPU twins of kernels/hybrid.cu (formulas in hybrid.h), as engine/forward.c and engine/backward.c compute
// them.
#include "hybrid.h"

#include <math.h>

static float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

void attn_gate_forward(float* out, const float* att, const float* gate, long ldg, long hsg, int M, int H,
                       int hd) {
    for (long t = 0; t < M; t++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < hd; i++) {
                long o = (t * H + h) * hd + i;
                out[o] = att[o] * sigm(gate[t * ldg + h * hsg + i]);
            }
}

void attn_gate_backward(float* datt, float* dgate, const float* dout, const float* att, const float* gate,
                        long ldg, long hsg, int M, int H, int hd) {
    for (long t = 0; t < M; t++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < hd; i++) {
                long o = (t * H + h) * hd + i, g = t * ldg + h * hsg + i;
                float s = sigm(gate[g]);
                dgate[g] = dout[o] * att[o] * s * (1.0f - s);
                datt[o] = dout[o] * s;
            }
}

void gather_cols(float* out, const float* in, const int* map, long M, int n, long ld_in) {
    for (long t = 0; t < M; t++)
        for (int j = 0; j < n; j++) out[t * n + j] = in[t * ld_in + map[j]];
}

void scatter_cols(float* out, long ld_out, const float* in, const int* map, long M, int n) {
    for (long t = 0; t < M; t++)
        for (int j = 0; j < n; j++) out[t * ld_out + map[j]] = in[t * n + j];
}

void shared_gate_forward(float* h, float* s, const float* m, const float* w, const float* y, int M, int D) {
    for (long t = 0; t < M; t++) {
        float z = 0.0f;
        for (int i = 0; i < D; i++) z += m[t * D + i] * w[i];
        s[t] = sigm(z);
        for (int i = 0; i < D; i++) h[t * D + i] += s[t] * y[t * D + i];
    }
}

void shared_gate_backward(float* dy, float* dm, const float* dh, const float* s, const float* y, const float* w,
                          int M, int D) {
    for (long t = 0; t < M; t++) {
        double dot = 0;
        for (int i = 0; i < D; i++) {
            dy[t * D + i] = s[t] * dh[t * D + i];
            dot += (double)dh[t * D + i] * y[t * D + i];
        }
        float dl = (float)(dot * s[t] * (1.0 - s[t]));
        for (int i = 0; i < D; i++) dm[t * D + i] += dl * w[i];
    }
}

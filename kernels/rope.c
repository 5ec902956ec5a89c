#include <math.h>
#include <stdlib.h>

#include "rope.h"

// Angles follow transformers: inv_freq in fp32, pos * inv_freq in fp32.
void rope_init(RopeTable* r, int T, int hd, double theta) {
    int half = hd / 2;
    r->T = T;
    r->hd = hd;
    r->cos = malloc(sizeof(float) * (size_t)T * half);
    r->sin = malloc(sizeof(float) * (size_t)T * half);
    for (int i = 0; i < half; i++) {
        float inv = (float)(1.0 / pow(theta, (double)(2 * i) / hd));
        for (int t = 0; t < T; t++) {
            float a = (float)t * inv;
            r->cos[(long)t * half + i] = cosf(a);
            r->sin[(long)t * half + i] = sinf(a);
        }
    }
}

void rope_free(RopeTable* r) {
    free(r->cos);
    free(r->sin);
}

// The first r->hd values of each head of hd rotated (hd == r->hd: the whole head).
static void rotate(float* x, const RopeTable* r, int T, int nh, int hd, float sign) {
    int half = r->hd / 2;
#pragma omp parallel for
    for (int t = 0; t < T; t++) {
        const float* c = r->cos + (long)t * half;
        const float* s = r->sin + (long)t * half;
        for (int h = 0; h < nh; h++) {
            float* v = x + ((long)t * nh + h) * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], si = sign * s[i];
                v[i] = a * c[i] - b * si;
                v[i + half] = b * c[i] + a * si;
            }
        }
    }
}

void rope_forward(float* x, const RopeTable* r, int T, int nh) { rotate(x, r, T, nh, r->hd, 1.0f); }

// The rotation is orthogonal: its transpose is the rotation by -angle.
void rope_backward(float* dx, const RopeTable* r, int T, int nh) { rotate(dx, r, T, nh, r->hd, -1.0f); }

void rope_forward_heads(float* x, const RopeTable* r, int T, int nh, int hd) { rotate(x, r, T, nh, hd, 1.0f); }

void rope_backward_heads(float* dx, const RopeTable* r, int T, int nh, int hd) {
    rotate(dx, r, T, nh, hd, -1.0f);
}

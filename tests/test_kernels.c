// CPU kernels and the activation backward against finite differences.
#include <string.h>

#include "check.h"
#include "datasets/npy.h"
#include "engine/forward.h"
#include "engine/util.h"

static unsigned g_seed = 12345;
static float frand(void) {
    g_seed = g_seed * 1664525u + 1013904223u;
    return ((g_seed >> 8) / 16777216.0f) * 2.0f - 1.0f;
}
static void fill(float* x, int n, float s) {
    for (int i = 0; i < n; i++) x[i] = s * frand();
}

// Loss = sum(out * r) for a fixed random r, so dL/dout = r.
static double dot_f(const float* a, const float* b, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static void test_rmsnorm(void) {
    enum { M = 3, C = 16 };
    float x[M * C], w[C], out[M * C], r[M * C], dx[M * C], rstd[M];
    fill(x, M * C, 2.0f);
    fill(w, C, 1.0f);
    fill(r, M * C, 1.0f);
    rmsnorm_forward(out, rstd, x, w, M, C, 1e-6f);
    rmsnorm_backward(dx, r, x, w, rstd, M, C, 0);
    double worst = 0;
    for (int i = 0; i < M * C; i++) {
        float h = 1e-3f, keep = x[i];
        x[i] = keep + h;
        rmsnorm_forward(out, NULL, x, w, M, C, 1e-6f);
        double lp = dot_f(out, r, M * C);
        x[i] = keep - h;
        rmsnorm_forward(out, NULL, x, w, M, C, 1e-6f);
        double lm = dot_f(out, r, M * C);
        x[i] = keep;
        double fd = (lp - lm) / (2 * h);
        worst = fmax(worst, fabs(fd - dx[i]));
    }
    CHECK(worst < 2e-3, "rmsnorm backward = finite differences", "worst %g", worst);
}

static void test_attention(void) {
    enum { T = 5, H = 4, KV = 2, HD = 8 };
    int nq = T * H * HD, nk = T * KV * HD;
    float q[T * H * HD], k[T * KV * HD], v[T * KV * HD], out[T * H * HD], lse[H * T], r[T * H * HD];
    float dq[T * H * HD], dk[T * KV * HD], dv[T * KV * HD];
    fill(q, nq, 1.0f);
    fill(k, nk, 1.0f);
    fill(v, nk, 1.0f);
    fill(r, nq, 1.0f);
    attention_forward(out, lse, q, k, v, T, H, KV, HD);
    attention_backward(dq, dk, dv, r, q, k, v, lse, T, H, KV, HD);
    float* xs[3] = {q, k, v};
    float* gs[3] = {dq, dk, dv};
    int ns[3] = {nq, nk, nk};
    const char* names[3] = {"attention backward dq", "attention backward dk", "attention backward dv"};
    for (int which = 0; which < 3; which++) {
        double worst = 0;
        for (int i = 0; i < ns[which]; i++) {
            float h = 1e-3f, keep = xs[which][i];
            xs[which][i] = keep + h;
            attention_forward(out, lse, q, k, v, T, H, KV, HD);
            double lp = dot_f(out, r, nq);
            xs[which][i] = keep - h;
            attention_forward(out, lse, q, k, v, T, H, KV, HD);
            double lm = dot_f(out, r, nq);
            xs[which][i] = keep;
            worst = fmax(worst, fabs((lp - lm) / (2 * h) - gs[which][i]));
        }
        CHECK(worst < 2e-3, names[which], "worst %g", worst);
    }
}

static void test_rope_swiglu_kl(void) {
    enum { T = 6, NH = 2, HD = 8 };
    RopeTable rt;
    rope_init(&rt, T, HD, 1e4);
    float x[T * NH * HD], y[T * NH * HD];
    fill(x, T * NH * HD, 1.0f);
    memcpy(y, x, sizeof(x));
    rope_forward(y, &rt, T, NH);
    rope_backward(y, &rt, T, NH);
    double worst = 0;
    for (int i = 0; i < T * NH * HD; i++) worst = fmax(worst, fabs(x[i] - y[i]));
    CHECK(worst < 1e-6, "rope backward is the inverse rotation", "worst %g", worst);
    rope_free(&rt);

    float g[8], u[8], o[8], r[8], dg[8], du[8];
    fill(g, 8, 3.0f);
    fill(u, 8, 1.0f);
    fill(r, 8, 1.0f);
    swiglu_backward(dg, du, r, g, u, 8);
    worst = 0;
    for (int i = 0; i < 8; i++) {
        float h = 1e-3f, keep = g[i];
        g[i] = keep + h;
        swiglu_forward(o, g, u, 8);
        double lp = dot_f(o, r, 8);
        g[i] = keep - h;
        swiglu_forward(o, g, u, 8);
        double lm = dot_f(o, r, 8);
        g[i] = keep;
        worst = fmax(worst, fabs((lp - lm) / (2 * h) - dg[i]));
    }
    CHECK(worst < 1e-3, "swiglu backward = finite differences", "worst %g", worst);

    enum { V = 1000 };
    float a[V], b[V];
    fill(a, V, 20.0f);
    fill(b, V, 20.0f);
    double ma = -1e30, mb = -1e30, sa = 0, sb = 0, kl = 0;
    for (int i = 0; i < V; i++) ma = fmax(ma, a[i]), mb = fmax(mb, b[i]);
    for (int i = 0; i < V; i++) sa += exp(a[i] - ma), sb += exp(b[i] - mb);
    for (int i = 0; i < V; i++) {
        double lp = a[i] - ma - log(sa), lq = b[i] - mb - log(sb);
        kl += exp(lp) * (lp - lq);
    }
    double got = kl_row(a, b, V);
    CHECK(rel_diff(got, kl) < 1e-6, "streaming KL = two-pass double-precision KL (float exps)",
          "got %.12g want %.12g", got, kl);
    CHECK(fabs(kl_row(a, a, V)) < 1e-12, "KL(P||P) = 0", "got %g", kl_row(a, a, V));
}

// The whole backward: dL/d(embedding output) against finite differences of
// the mean next-token cross-entropy, on the committed Qwen3-VL fixture.
static void test_model_backward(void) {
    const char* dir = "tests/fixtures/qwen3-vl-tiny";
    Model m;
    model_load(&m, dir);
    int T = 12, D = m.c.hidden_size;
    int ids[12];
    for (int t = 0; t < T; t++) ids[t] = (t * 37 + 5) % m.c.vocab_size;
    RunState s;
    run_init(&s, &m, T, 1);
    GradState g;
    grad_init(&g, &m, T);
    model_forward(&m, &s, ids, NULL);
    int calls = 0;
    void hook(int idx, const float* dy, void* ctx);
    model_backward(&m, &s, &g, ids, hook, &calls);
    float* dh = xmalloc(sizeof(float) * T * D);
    memcpy(dh, g.dh, sizeof(float) * T * D);
    float* h0 = xmalloc(sizeof(float) * T * D);
    memcpy(h0, s.acts[0].h_in, sizeof(float) * T * D);
    double worst = 0, scale = 0;
    for (int probe = 0; probe < 24; probe++) {
        int i = (probe * 131) % (T * D);
        float h = 2e-3f;
        memcpy(s.acts[0].h_in, h0, sizeof(float) * T * D);
        s.acts[0].h_in[i] += h;
        model_forward_from(&m, &s, 0, NULL);
        double lp = cross_entropy(NULL, s.logits, ids, T, m.c.vocab_size);
        memcpy(s.acts[0].h_in, h0, sizeof(float) * T * D);
        s.acts[0].h_in[i] -= h;
        model_forward_from(&m, &s, 0, NULL);
        double lm = cross_entropy(NULL, s.logits, ids, T, m.c.vocab_size);
        double fd = (lp - lm) / (2 * h);
        worst = fmax(worst, fabs(fd - dh[i]));
        scale = fmax(scale, fabs(fd));
    }
    CHECK(worst < 2e-2 * scale + 1e-5, "model backward = finite differences", "worst %g (scale %g)", worst,
          scale);
    CHECK(calls == m.n_linears, "backward reaches every linear once", "%d hook calls for %d linears", calls,
          m.n_linears);
    free(dh);
    free(h0);
    grad_free(&g);
    run_free(&s, &m);
    model_free(&m);
}

void hook(int idx, const float* dy, void* ctx) {
    (void)idx;
    (void)dy;
    (*(int*)ctx)++;
}

int main(void) {
    test_rmsnorm();
    test_attention();
    test_rope_swiglu_kl();
    test_model_backward();
    return g_fail ? 1 : 0;
}

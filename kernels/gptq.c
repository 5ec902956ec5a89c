// GPTQ on the CPU (README, "GPTQ"): the reference its CUDA twin (gptq.cu) is tested against.
// The steps and their order follow llm-compressor's quantize_weight (scale from the original
// row, activation order, dead columns, dampening, the upper Cholesky factor of the inverse
// Hessian, lazy block updates), so the integer codes agree with it (tests/ref/gptq_ref.py).
#include "gptq.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/util.h"

const GptqOpts gptq_defaults = {0.01, GPTQ_ORDER_STATIC, 128};

// LAPACK (OpenBLAS ships it): Fortran names, the trailing length of the character argument.
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);
void dpotri_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);

void hessian_init(Hessian* h, int n) {
    h->n = n;
    h->tokens = 0;
    h->xtx = xcalloc((size_t)n * n, sizeof(float));
}

void hessian_free(Hessian* h) {
    free(h->xtx);
    h->xtx = NULL;
}

void hessian_add(Hessian* h, const float* x, int T) {
    // xtx (n, n) += x^T x, upper triangle only
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, h->n, T, 1.0f, x, h->n, 1.0f, h->xtx, h->n);
    h->tokens += T;
}

void hessian_get(const Hessian* h, float* out) {
    int n = h->n;
    float f = h->tokens ? 2.0f / (float)h->tokens : 0.0f;
    for (int i = 0; i < n; i++)
        for (int j = i; j < n; j++)
            out[(size_t)i * n + j] = out[(size_t)j * n + i] = f * h->xtx[(size_t)i * n + j];
}

static const float* g_diag;
static int by_diag_desc(const void* a, const void* b) {
    int i = *(const int*)a, j = *(const int*)b;
    if (g_diag[i] != g_diag[j]) return g_diag[i] > g_diag[j] ? -1 : 1;
    return (i > j) - (i < j); // ties by index: a stable order
}

void gptq_order(int* perm, const float* diag, int cols, GptqOrder order) {
    for (int i = 0; i < cols; i++) perm[i] = i;
    if (order == GPTQ_ORDER_NONE) return;
    g_diag = diag;
    qsort(perm, cols, sizeof(int), by_diag_desc);
}

void gptq_prepare(double* hp, unsigned char* dead, const float* h, const int* perm, int cols, double damp) {
    double mean = 0;
#pragma omp parallel for
    for (int a = 0; a < cols; a++)
        for (int b = 0; b < cols; b++) hp[(size_t)a * cols + b] = h[(size_t)perm[a] * cols + perm[b]];
    for (int a = 0; a < cols; a++) { // in order: the mean's sum does not depend on the thread count
        double* d = &hp[(size_t)a * cols + a];
        dead[a] = *d == 0.0;
        if (dead[a]) *d = 1.0; // a column no token ever used: its weights are zeroed instead
        mean += *d;
    }
    mean /= cols;
    for (int a = 0; a < cols; a++) hp[(size_t)a * cols + a] += damp * mean;
}

void gptq_row_scales(float* out, const float* given, const float* w, int rows, int cols, QuantSpec q) {
#pragma omp parallel for
    for (int r = 0; r < rows; r++) {
        float m = 0.0f;
        for (int j = 0; given == NULL && j < cols; j++) m = fmaxf(m, fabsf(w[(size_t)r * cols + j]));
        out[r] = given ? given[r] : quant_scale(m, q);
    }
}

// u (n, n) row-major upper = the upper Cholesky factor of the inverse of the SPD matrix hp
// (hp = L L^T; then hp^-1 = U^T U). Row-major upper is Fortran's lower triangle. 0 on success.
static int inverse_cholesky(double* hp, int n) {
    int info = 0;
    dpotrf_("L", &n, hp, &n, &info, 1);
    if (info) return 1;
    dpotri_("L", &n, hp, &n, &info, 1);
    if (info) return 1;
    dpotrf_("L", &n, hp, &n, &info, 1);
    return info != 0;
}

int gptq_quantize(float* wq, const float* w, const float* h, int rows, int cols, QuantSpec q, GptqOpts o,
                  const float* scale) {
    int* perm = xmalloc(sizeof(int) * cols);
    unsigned char* dead = xmalloc(cols);
    double* hp = xmalloc(sizeof(double) * cols * cols);
    float* u = xmalloc(sizeof(float) * cols * cols);
    float* W = xmalloc(sizeof(float) * rows * cols); // (rows, cols) the working copy, permuted
    float* sc = xmalloc(sizeof(float) * rows);
    int B = o.block > 0 ? o.block : 128;
    float* err = xmalloc(sizeof(float) * rows * B); // (rows, B) a block's scaled errors
    gptq_row_scales(sc, scale, w, rows, cols, q);   // fixed before GPTQ moves any weight
    float* diag = xmalloc(sizeof(float) * cols);
    int finite = 1;
    for (int i = 0; i < cols; i++) diag[i] = h[(size_t)i * cols + i], finite &= isfinite(diag[i]) != 0;
    gptq_order(perm, diag, cols, o.order);
    free(diag);
    gptq_prepare(hp, dead, h, perm, cols, o.damp);
    // a NaN or Inf input makes its diagonal so; OpenBLAS's potrf (unlike LAPACK's) goes on through a NaN
    int fallback = !finite || inverse_cholesky(hp, cols);
    for (int i = 0; i < cols; i++)
        for (int j = 0; j < cols; j++) // identity on failure: plain round-to-nearest
            u[(size_t)i * cols + j] = j < i      ? 0.0f
                                      : fallback ? (float)(i == j)
                                                 : (float)hp[(size_t)i * cols + j];
#pragma omp parallel for
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) W[(size_t)r * cols + k] = dead[k] ? 0.0f : w[(size_t)r * cols + perm[k]];
    for (int i1 = 0; i1 < cols; i1 += B) {
        int i2 = i1 + B < cols ? i1 + B : cols, nb = i2 - i1;
        // within a block each row is independent: quantize a column, push its error right
#pragma omp parallel for
        for (int r = 0; r < rows; r++) {
            float* wr = W + (size_t)r * cols;
            for (int i = i1; i < i2; i++) {
                const float* ui = u + (size_t)i * cols;
                float x = wr[i], qv = quant_value_scaled(x, sc[r], q);
                float e = (x - qv) / ui[i];
                wr[i] = qv;
                err[(size_t)r * B + (i - i1)] = e;
                for (int j = i + 1; j < i2; j++) wr[j] -= e * ui[j];
            }
        }
        // W[:, i2:] -= err (rows, nb) u[i1:i2, i2:] (nb, cols - i2)
        if (i2 < cols)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols - i2, nb, -1.0f, err, B,
                        u + (size_t)i1 * cols + i2, cols, 1.0f, W + i2, cols);
    }
#pragma omp parallel for
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) wq[(size_t)r * cols + perm[k]] = W[(size_t)r * cols + k];
    free(perm);
    free(dead);
    free(hp);
    free(u);
    free(W);
    free(sc);
    free(err);
    return fallback;
}

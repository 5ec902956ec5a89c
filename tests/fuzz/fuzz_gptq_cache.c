// libFuzzer: a GPTQ cache file (scoring/gptq_cache.c) through gptq_cache_load, against the Qwen3-VL
// tiny fixture loaded once (weights in fp32: the reader checks each entry's row scales against them)
// with one w4a8 format. Byte 0 picks how the rest becomes the file (mode = byte 0 % 3):
//   0  the file as it is;
//   1  the same, with the expected key written at bytes 8..15 and a valid checksum at the end;
//   2  a valid file (RTN weights, written by gptq_cache_save at start-up) with the rest applied as
//      5-byte patches (offset u32 little-endian, modulo the size; the byte), key and checksum fixed,
// so the fuzzer reaches the entries behind the checksum (what a valid checksum must not let through)
// with small inputs. A file the reader accepts must survive gptq_cache_save and load again to the
// same weights.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/util.h"
#include "../../kernels/gptq.h"
#include "../../kernels/quant.h"
#include "../../scoring/gptq_cache.h"
#include "fuzz.h"

static Model g_model;
static Format g_fmt;
static const GptqCacheKey k_key = {0x0123456789abcdefull};
static char g_name[64];
static uint8_t* g_base; // the valid file of mode 2
static size_t g_base_len;

static void free_all(float** wq, int n) {
    for (int i = 0; i < n; i++) free(wq[i]);
}

// RTN weights of every linear on the format's row scales, cached, and the file read back.
static void make_base(void) {
    int nl = g_model.n_linears;
    float** wq = calloc((size_t)nl, sizeof(float*));
    for (int i = 0; i < nl; i++) {
        const Linear* l = &g_model.linears[i];
        float* s = malloc(sizeof(float) * l->out);
        gptq_row_scales(s, NULL, l->w, l->out, l->in, g_fmt.w);
        float lo, hi;
        quant_bounds(g_fmt.w, &lo, &hi);
        wq[i] = malloc(sizeof(float) * l->out * l->in);
        for (size_t j = 0; j < (size_t)l->out * l->in; j++) {
            float sc = s[j / l->in], c = sc > 0 ? rintf(l->w[j] / sc) : 0.0f;
            wq[i][j] = fminf(fmaxf(c, lo), hi) * sc;
        }
        free(s);
    }
    gptq_cache_save(fuzz_dir(), &k_key, &g_model, wq, 1, &g_fmt, NULL, NULL);
    free_all(wq, nl);
    free(wq);
    char why[160];
    g_base = (uint8_t*)input_read(path_join(fuzz_dir(), g_name), (size_t)-1, 0, &g_base_len, why, sizeof(why));
    if (!g_base) abort();
}

int LLVMFuzzerInitialize(int* argc, char*** argv) {
    (void)argc;
    (void)argv;
    g_quiet = 1;
    model_load(&g_model, "tests/fixtures/qwen3-vl-tiny");
    format_load(&g_fmt, "w4a8", 0);
    snprintf(g_name, sizeof(g_name), "gptq-%016llx.bin", (unsigned long long)k_key.hash);
    make_base();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
    if (n == 0) return 0;
    int nl = g_model.n_linears, mode = data[0] % 3;
    size_t len = mode == 2 ? g_base_len : n - 1;
    uint8_t* file = malloc(len ? len : 1);
    if (mode == 2) {
        memcpy(file, g_base, len);
        for (size_t p = 1; p + 5 <= n; p += 5) {
            uint32_t off;
            memcpy(&off, data + p, 4);
            file[off % len] = data[p + 4];
        }
    } else {
        memcpy(file, data + 1, len);
    }
    if (mode && len >= 24) {
        memcpy(file + 8, &k_key.hash, 8);
        uint64_t sum = gptq_cache_hash(0xcbf29ce484222325ull, file, len - 8);
        memcpy(file + len - 8, &sum, 8);
    }
    fuzz_file(g_name, file, len);
    free(file);
    // untracked (FUZZ_RUN's first argument 0): the loaded weights outlive the call; the reader never
    // exits through fail_*, so nothing is left to sweep
    float** wq = calloc((size_t)nl, sizeof(float*));
    float** again = calloc((size_t)nl, sizeof(float*));
    int ok = 0;
    FUZZ_RUN(0, (void)0, ok = gptq_cache_load(fuzz_dir(), &k_key, &g_model, wq, 1, &g_fmt, NULL, NULL));
    if (ok) { // written back (over the input) and read again: the same weights
        int ok2 = 0;
        FUZZ_RUN(0, (void)0, gptq_cache_save(fuzz_dir(), &k_key, &g_model, wq, 1, &g_fmt, NULL, NULL);
                 ok2 = gptq_cache_load(fuzz_dir(), &k_key, &g_model, again, 1, &g_fmt, NULL, NULL));
        if (!ok2) abort();
        for (int i = 0; i < nl; i++) {
            const Linear* l = &g_model.linears[i];
            if (!wq[i] != !again[i] || (wq[i] && memcmp(wq[i], again[i], sizeof(float) * l->out * l->in) != 0))
                abort();
        }
    }
    free_all(wq, nl), free_all(again, nl);
    free(wq), free(again);
    return 0;
}

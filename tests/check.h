// Minimal test harness: each check prints PASS/FAIL/SKIP lines that
// tests/run.sh counts into the closing "N passed, N failed" line.
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int g_fail = 0;

#define CHECK(cond, name, ...)                                                                                 \
    do {                                                                                                       \
        if (cond) {                                                                                            \
            printf("PASS %s\n", name);                                                                         \
        } else {                                                                                               \
            printf("FAIL %s: ", name);                                                                         \
            printf(__VA_ARGS__);                                                                               \
            printf("  (%s:%d)\n", __FILE__, __LINE__);                                                         \
            g_fail++;                                                                                          \
        }                                                                                                      \
        fflush(stdout);                                                                                        \
    } while (0)

#define SKIP(name, why)                                                                                        \
    do {                                                                                                       \
        printf("SKIP %s: %s\n", name, why);                                                                    \
        fflush(stdout);                                                                                        \
    } while (0)

static inline int file_exists(const char* p) {
    FILE* f = fopen(p, "rb");
    if (f) fclose(f);
    return f != NULL;
}

// 1 when dir holds a model (its config.json); else one SKIP line for name ("DIR missing") and 0: the C suites'
// twin of tests/lib.sh's skip_without_model.
static inline int model_present(const char* dir, const char* name) {
    char cfg[1024];
    snprintf(cfg, sizeof(cfg), "%s/config.json", dir);
    if (file_exists(cfg)) return 1;
    printf("SKIP %s: %s missing\n", name, dir);
    fflush(stdout);
    return 0;
}

// Relative difference with a floor on the denominator.
static inline double rel_diff(double a, double b) {
    double d = fabs(a - b), s = fmax(fabs(a), fabs(b));
    return s > 0 ? d / s : d;
}

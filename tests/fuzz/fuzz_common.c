// See fuzz.h. The tracker is a pointer hash set filled by __wrap_malloc and
// friends (link with -Wl,--wrap=malloc,...): only calls from statically linked
// objects go through it; jansson is routed to it with json_set_alloc_funcs.
#include "fuzz.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void* __real_malloc(size_t n);
void* __real_calloc(size_t n, size_t s);
void* __real_realloc(void* p, size_t n);
void __real_free(void* p);

// Leaks are swept by the tracker; LeakSanitizer would only repeat them.
const char* __asan_default_options(void) { return "detect_leaks=0"; }

#define TRACK_CAP (1u << 20) // slots; tracking stops (nothing swept) if it fills
#define TOMB ((void*)1)
static void** g_slot;
static unsigned* g_touched; // slots written this input, to clear them cheaply
static size_t g_ntouched, g_live;
static int g_track, g_full;

static unsigned slot_hash(void* p) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (unsigned)x & (TRACK_CAP - 1);
}

static void track_add(void* p) {
    if (!g_track || !p || g_full) return;
    if (g_ntouched + 1 >= TRACK_CAP / 2) {
        g_full = 1;
        return;
    }
    unsigned i = slot_hash(p);
    while (g_slot[i] && g_slot[i] != TOMB) i = (i + 1) & (TRACK_CAP - 1);
    g_slot[i] = p;
    g_touched[g_ntouched++] = i;
    g_live++;
}

static int track_del(void* p) {
    if (!g_track || !p) return 0;
    for (unsigned i = slot_hash(p);; i = (i + 1) & (TRACK_CAP - 1)) {
        if (!g_slot[i]) return 0;
        if (g_slot[i] == p) {
            g_slot[i] = TOMB;
            g_live--;
            return 1;
        }
    }
}

void* __wrap_malloc(size_t n) {
    void* p = __real_malloc(n);
    track_add(p);
    return p;
}

void* __wrap_calloc(size_t n, size_t s) {
    void* p = __real_calloc(n, s);
    track_add(p);
    return p;
}

void* __wrap_realloc(void* p, size_t n) {
    track_del(p);
    void* q = __real_realloc(p, n);
    track_add(q ? q : p);
    return q;
}

void __wrap_free(void* p) {
    track_del(p);
    __real_free(p);
}

void fuzz_track_begin(void) {
    if (!g_slot) {
        g_slot = __real_calloc(TRACK_CAP, sizeof(void*));
        g_touched = __real_malloc(sizeof(unsigned) * TRACK_CAP);
        json_set_alloc_funcs(__wrap_malloc, __wrap_free);
    }
    g_track = 1;
    g_full = 0;
}

void fuzz_track_end(void) {
    g_track = 0;
    for (size_t k = 0; k < g_ntouched; k++) {
        unsigned i = g_touched[k];
        if (g_slot[i] && g_slot[i] != TOMB) __real_free(g_slot[i]);
        g_slot[i] = NULL;
    }
    g_ntouched = g_live = 0;
}

static char g_dir[64];

static void dir_remove(void) {
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", g_dir);
}

const char* fuzz_dir(void) {
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof(g_dir), "/tmp/autoq-fuzz-XXXXXX");
        if (!mkdtemp(g_dir)) {
            perror("mkdtemp");
            abort();
        }
        atexit(dir_remove);
    }
    return g_dir;
}

const char* fuzz_file(const char* name, const uint8_t* data, size_t n) {
    static char path[16][256];
    static const char* names[16];
    int k = 0;
    while (k < 15 && names[k] && strcmp(names[k], name) != 0) k++;
    names[k] = name;
    snprintf(path[k], sizeof(path[k]), "%s/%s", fuzz_dir(), name);
    FILE* f = fopen(path[k], "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        perror(path[k]);
        abort();
    }
    return path[k];
}

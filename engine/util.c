#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

int g_quiet = 0;

#define MAX_TMP 16
static char* g_tmp[MAX_TMP];

void tmp_register(const char* path) {
    for (int i = 0; i < MAX_TMP; i++)
        if (!g_tmp[i]) {
            g_tmp[i] = xstrdup(path);
            return;
        }
}

void tmp_unregister(const char* path) {
    for (int i = 0; i < MAX_TMP; i++)
        if (g_tmp[i] && strcmp(g_tmp[i], path) == 0) {
            free(g_tmp[i]);
            g_tmp[i] = NULL;
        }
}

static void tmp_cleanup(void) {
    for (int i = 0; i < MAX_TMP; i++)
        if (g_tmp[i]) unlink(g_tmp[i]);
}

static void vmsg(const char* prefix, const char* fmt, va_list ap) {
    fflush(stdout);
    fprintf(stderr, "autoq: %s", prefix);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void fail_input(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmsg("error: ", fmt, ap);
    va_end(ap);
    tmp_cleanup();
    exit(EXIT_BAD_INPUT);
}

void fail_other(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmsg("error: ", fmt, ap);
    va_end(ap);
    tmp_cleanup();
    exit(EXIT_FAILURE_OTHER);
}

void warn_msg(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmsg("warning: ", fmt, ap);
    va_end(ap);
}

void info_msg(const char* fmt, ...) {
    if (g_quiet) return;
    va_list ap;
    va_start(ap, fmt);
    vmsg("", fmt, ap);
    va_end(ap);
}

void* xmalloc(size_t n) {
    void* p = malloc(n ? n : 1);
    if (!p) fail_other("out of memory allocating %zu bytes", n);
    return p;
}

void* xcalloc(size_t n, size_t size) {
    void* p = calloc(n ? n : 1, size ? size : 1);
    if (!p) fail_other("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

char* xstrdup(const char* s) {
    size_t n = strlen(s) + 1;
    char* p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

char* path_join(const char* dir, const char* name) {
    size_t a = strlen(dir), b = strlen(name);
    char* p = xmalloc(a + b + 2);
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

char* read_file(const char* path, size_t* len) {
    FILE* f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char* buf = xmalloc(cap + 1);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            if (!buf) fail_other("out of memory reading %s", path);
        }
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

void out_open(OutFile* o, const char* path) {
    o->path = xstrdup(path);
    o->tmp = xmalloc(strlen(path) + 32);
    sprintf(o->tmp, "%s.tmp.%d", path, (int)getpid());
    o->f = fopen(o->tmp, "wb");
    if (!o->f) fail_input("%s: cannot create output file: %s", path, strerror(errno));
    tmp_register(o->tmp);
}

void out_close(OutFile* o) {
    int bad = ferror(o->f);
    if (fclose(o->f) != 0 || bad) {
        unlink(o->tmp);
        fail_other("%s: write failed", o->path);
    }
    if (rename(o->tmp, o->path) != 0) {
        unlink(o->tmp);
        fail_other("%s: cannot rename into place: %s", o->path, strerror(errno));
    }
    tmp_unregister(o->tmp);
    free(o->path);
    free(o->tmp);
}

void out_abort(OutFile* o) {
    fclose(o->f);
    unlink(o->tmp);
    tmp_unregister(o->tmp);
    free(o->path);
    free(o->tmp);
}

double time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

size_t peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss * 1024;
}

float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40); // NaN stays NaN
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    int exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    float f;
    if (exp == 0) {
        f = ldexpf((float)mant, -24);
    } else if (exp == 31) {
        f = mant ? NAN : INFINITY;
    } else {
        f = ldexpf((float)(mant | 0x400), exp - 25);
    }
    uint32_t u;
    memcpy(&u, &f, 4);
    u |= sign;
    memcpy(&f, &u, 4);
    return f;
}

void progress_init(Progress* p, const char* label, long total) {
    p->label = label;
    p->total = total;
    p->done = 0;
    p->t0 = p->last = time_now();
    p->tty = isatty(2) && !g_quiet;
}

static void progress_draw(Progress* p, double now) {
    double el = now - p->t0;
    double rate = el > 0 ? p->done / el : 0;
    double eta = rate > 0 ? (p->total - p->done) / rate : 0;
    int width = 30, fill = p->total ? (int)(width * p->done / p->total) : width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r%s [%s] %ld/%ld %.2f/s ETA %.0fs ", p->label, bar, p->done, p->total, rate, eta);
}

void progress_step(Progress* p, long n) {
    p->done += n;
    double now = time_now();
    if (p->tty && (now - p->last > 0.2 || p->done == p->total)) {
        progress_draw(p, now);
        p->last = now;
    }
}

void progress_end(Progress* p) {
    if (p->tty) {
        progress_draw(p, time_now());
        fputc('\n', stderr);
    }
}

// Small helpers shared by every module: error exits, checked allocation,
// atomic file writes. Errors in user input exit with status 2, anything
// else with status 1 (SPEC §1).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define EXIT_BAD_INPUT 2
#define EXIT_FAILURE_OTHER 1

// Prints "autoq: <message>" and exits with status 2 (bad usage or input).
void fail_input(const char* fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
// Prints "autoq: <message>" and exits with status 1 (anything else).
void fail_other(const char* fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
// Warning on stderr; never fatal.
void warn_msg(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// Informational line on stderr unless quiet.
void info_msg(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
extern int g_quiet;

void* xmalloc(size_t n);
void* xcalloc(size_t n, size_t size);
char* xstrdup(const char* s);
char* path_join(const char* dir, const char* name);
// Reads a whole file; returns NULL (errno set) when it cannot be opened.
char* read_file(const char* path, size_t* len);

// Atomic output: write to PATH.tmp.PID, rename on close, remove on abort.
// Every file autoq writes goes through this, so a failure never leaves a
// half-written output behind.
typedef struct {
    FILE* f;
    char* path;
    char* tmp;
} OutFile;
void out_open(OutFile* o, const char* path);
void out_close(OutFile* o); // flush, fsync-free rename
void out_abort(OutFile* o);
// Registers a temporary path removed if the process exits through fail_*.
void tmp_register(const char* path);
void tmp_unregister(const char* path);

double time_now(void); // seconds, monotonic
size_t peak_rss_bytes(void);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f); // round to nearest even
float f16_to_f32(uint16_t h);

// Progress bar on stderr when it is a terminal: rate and ETA.
typedef struct {
    const char* label;
    long total;
    long done;
    double t0;
    double last;
    int tty;
} Progress;
void progress_init(Progress* p, const char* label, long total);
void progress_step(Progress* p, long n);
void progress_end(Progress* p);

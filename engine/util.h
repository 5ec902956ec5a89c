// Small helpers shared by every module: error exits, checked allocation,
// atomic file writes. Errors in user input exit with status 2, anything
// else with status 1 (README §1).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../kernels/bf16.h" // bf16_to_f32, f32_to_bf16

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
void* xrealloc(void* p, size_t n);
char* xstrdup(const char* s);
char* path_join(const char* dir, const char* name);

// Sizes derived from input go through these, so a hostile shape or count
// exits 2 naming `what` (e.g. "x.npy: field 'shape'") instead of wrapping.
size_t size_mul(size_t a, size_t b, const char* what);
size_t size_mul3(size_t a, size_t b, size_t c, const char* what);
size_t size_add(size_t a, size_t b, const char* what);

// Size caps on inputs read whole into memory (exit 2 naming the file and cap).
#define MAX_TEXT_BYTES ((size_t)1 << 30)        // .txt / .jsonl calibration text: 1 GiB
#define MAX_JSON_BYTES ((size_t)256 << 20)      // config.json, tokenizer.json, index, recipes: 256 MiB
#define MAX_ST_HEADER_BYTES ((size_t)100 << 20) // a safetensors JSON header (the format's own limit)

// Opens an input read-only and refuses anything but a regular file (a FIFO,
// device or directory would block, never end, or fail obscurely). The open
// itself is O_NONBLOCK so a FIFO cannot block it. Exits 2 naming path and
// `what` ("config.json", "weights", ...) on any failure. Returns the fd;
// *size gets the file size when size is not NULL.
int open_regular(const char* path, const char* what, size_t* size);
// Reads a whole regular file of at most max bytes (NUL-terminated); exits 2
// naming the path, `what` and the cap otherwise.
char* read_input(const char* path, const char* what, size_t max, size_t* len);
// Reads a whole file or pipe (`--text <(cmd)`), for text given on the command
// line; returns NULL (errno set) when it cannot be opened. Exits 2 for a
// directory or device (/dev/zero would never end) and over MAX_TEXT_BYTES.
char* read_file(const char* path, size_t* len);
// s for an error message: at most 80 bytes cut on a UTF-8 boundary, "..."
// when cut, control characters shown as '?'. buf holds CLIP_BUF bytes.
#define CLIP_BUF 96
const char* str_clip(char* buf, const char* s);

// Atomic output: write to PATH.tmp.PID, rename on close, remove on abort.
// Every file autoq writes goes through this, so a failure never leaves a
// half-written output behind.
typedef struct {
    FILE* f;
    char* path;
    char* tmp;
} OutFile;
// Validates an output path before any compute: not empty, not a directory,
// not a device, FIFO or socket (nor a symlink to one: outputs are written to a
// temporary file and renamed, so writing through to such a node is refused),
// and its folder exists and is writable. "-" (stdout) passes. Exits 2 naming
// the path and `what` ("--out", "--logits", ...).
void out_check(const char* path, const char* what);
void out_open(OutFile* o, const char* path);
void out_close(OutFile* o); // flush, fsync-free rename
void out_abort(OutFile* o);
// Registers a temporary path (a file, or an empty folder: rmdir) removed, newest first, if the
// process exits through fail_* or
// is killed by SIGINT, SIGTERM, SIGHUP or SIGPIPE (handlers installed on the
// first registration where the signal still has its default action).
void tmp_register(const char* path);
void tmp_unregister(const char* path);

double time_now(void); // seconds, monotonic
size_t peak_rss_bytes(void);
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

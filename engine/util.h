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
#define MAX_H5_BYTES ((size_t)1 << 30)          // a scores file (HDF5): 1 GiB

// ---- Inputs: one policy for every file autoq reads (README §1) ----
// Every input goes through input_open: opened O_NONBLOCK (a FIFO cannot block the open), plus
// O_NOFOLLOW with INPUT_NOFOLLOW (a folder others may write to: the GPTQ cache), then fstat'd on the
// open descriptor (no race with a rename): anything but a regular file (FIFO, device, socket,
// directory) is refused before a byte is read, and so is a file over max bytes (MAX_TEXT_BYTES,
// MAX_JSON_BYTES, ...). JSON files are read by input_json (engine/input.h) on top of this.
#define INPUT_NOFOLLOW 1
// Returns the fd (*size = the file size), or -1 with errno set (ENOENT: missing) and why = the
// reason, worded to follow "PATH: WHAT " ("is a FIFO, not a regular file", ...). Never exits.
int input_open(const char* path, size_t max, int flags, size_t* size, char* why, size_t cap);
// The whole file (NUL-terminated, *len its size), or NULL as input_open. Never exits.
char* input_read(const char* path, size_t max, int flags, size_t* len, char* why, size_t cap);
// input_open / input_read that exit 2 naming path and `what` ("config.json", "weights", ...).
int open_regular(const char* path, const char* what, size_t* size);
char* read_input(const char* path, const char* what, size_t max, size_t* len);
// read_input, but NULL (errno ENOENT) when the file does not exist.
char* read_input_opt(const char* path, const char* what, size_t max, size_t* len);
// Reads a whole file or pipe (`--text <(cmd)`), for text given on the command
// line; returns NULL (errno set) when it cannot be opened. Exits 2 for a
// directory or device (/dev/zero would never end) and over MAX_TEXT_BYTES.
char* read_file(const char* path, size_t* len);
// s for an error message: at most 80 bytes cut on a UTF-8 boundary, "..."
// when cut, control characters shown as '?'. buf holds CLIP_BUF bytes.
#define CLIP_BUF 96
const char* str_clip(char* buf, const char* s);

// ---- Outputs ----
// Atomic output: written to PATH.tmp.XXXXXX (tmp_create), renamed on close, removed on abort, on
// fail_* and on SIGINT, SIGTERM, SIGHUP and SIGPIPE. Every file autoq writes goes through this, so
// a failure never leaves a half-written output behind.
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
// Creates a temporary file for output path: PATH.tmp.XXXXXX (six random characters, retried while
// taken), O_CREAT | O_EXCL | O_NOFOLLOW (never a file or link planted under the name), read-write,
// mode 0666 less the umask, registered (tmp_register). Returns the fd and *tmp (malloc'd), or -1
// with errno set. Never exits: the GPTQ cache's failures are warnings.
int tmp_create(const char* path, char** tmp);
// Renames tmp onto path and unregisters it; on failure removes tmp and returns -1 (errno set).
int tmp_commit(const char* tmp, const char* path);
// Registers a temporary path removed, newest first, if the process exits through fail_* or is
// killed by SIGINT, SIGTERM, SIGHUP or SIGPIPE (handlers installed on the first registration where
// the signal still has its default action). A folder goes with the files in it (not sub-folders).
void tmp_register(const char* path);
void tmp_unregister(const char* path);

// Output folders (quantize --out, gen OUT_DIR): built in a temporary folder beside OUT, swapped in.
// outdir_check, before any compute: OUT not empty, not "/", "." or ".."; when it exists, a folder
// (not a link), refused (exit 2) unless force, or empty and empty_ok; with force it must hold files
// only (no sub-folders); its parent a writable folder. `what` starts messages ("quantize: --out").
void outdir_check(const char* out, int force, int empty_ok, const char* what);
// Creates OUT.tmp.XXXXXX (0755 less the umask), registered: on failure or signal it is removed
// with its files. Returns its path (malloc'd).
char* outdir_begin(const char* out);
// Puts tmp in OUT's place: an existing OUT is swapped atomically (renameat2 RENAME_EXCHANGE; on a file
// system without it, moved aside under a fresh name first) and its old files removed; signals are
// held meanwhile, so OUT is always either the old folder or the new one, and nothing else is left.
void outdir_install(const char* tmp, const char* out);

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

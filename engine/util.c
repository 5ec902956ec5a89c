#define _GNU_SOURCE // renameat2, getrandom
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int g_quiet = 0;

#ifdef AUTOQ_FUZZ
#include <setjmp.h>
// Set by the fuzz harness (tests/fuzz): fail_* jump back to it instead of exiting.
jmp_buf* g_fuzz_jmp;
#endif

// Temporary outputs, removed by fail_* and by the signal handler. Fixed
// slots (no malloc, no pointers swapped under the handler's feet): a slot is
// marked used only after its path is complete, and unused before it is
// cleared, so the handler never reads a half-written path.
#define MAX_TMP 32
static char g_tmp[MAX_TMP][PATH_MAX];
static volatile sig_atomic_t g_tmp_used[MAX_TMP];

static int rm_folder(const char* path);

// Newest first; a folder (unlink: EISDIR) goes with its files. Async-signal-safe.
static void tmp_cleanup(void) {
    for (int i = MAX_TMP - 1; i >= 0; i--)
        if (g_tmp_used[i] && unlink(g_tmp[i]) != 0 && errno == EISDIR) rm_folder(g_tmp[i]);
}

// Async-signal-safe: unlink and re-raise with the default action, so the
// process still dies of the signal (exit status and core as usual).
static void tmp_on_signal(int sig) {
    tmp_cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void tmp_install_handlers(void) {
    static int done = 0;
    if (done) return;
    done = 1;
    const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        struct sigaction old;
        // Leave alone a signal someone already ignores or handles.
        if (sigaction(sigs[i], NULL, &old) != 0 || old.sa_handler != SIG_DFL) continue;
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = tmp_on_signal;
        sigfillset(&sa.sa_mask);
        sa.sa_flags = SA_RESETHAND;
        sigaction(sigs[i], &sa, NULL);
    }
}

void tmp_register(const char* path) {
    if (strlen(path) >= PATH_MAX) fail_input("%s: output path is too long", path);
    tmp_install_handlers();
    // after every live entry, so the slots keep registration order (cleanup goes newest first)
    int last = MAX_TMP - 1;
    while (last >= 0 && !g_tmp_used[last]) last--;
    for (int i = last + 1; i < MAX_TMP; i++)
        if (!g_tmp_used[i]) {
            strcpy(g_tmp[i], path);
            g_tmp_used[i] = 1;
            return;
        }
    fail_other("%s: more than %d temporary outputs at once", path, MAX_TMP);
}

void tmp_unregister(const char* path) {
    for (int i = 0; i < MAX_TMP; i++)
        if (g_tmp_used[i] && strcmp(g_tmp[i], path) == 0) {
            g_tmp_used[i] = 0;
            g_tmp[i][0] = 0;
        }
}

static void vmsg(const char* prefix, const char* fmt, va_list ap) {
    fflush(stdout);
    fprintf(stderr, "autoq: %s", prefix);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

__attribute__((noreturn)) static void fail_exit(int code, const char* fmt, va_list ap) {
#ifdef AUTOQ_FUZZ
    if (g_fuzz_jmp) {
        // Still format the message (a bad format argument is a finding), quietly.
        char buf[512];
        va_list aq;
        va_copy(aq, ap);
        vsnprintf(buf, sizeof(buf), fmt, aq);
        va_end(aq);
        if (getenv("AUTOQ_FUZZ_VERBOSE")) fprintf(stderr, "autoq: error: %s\n", buf);
        longjmp(*g_fuzz_jmp, code);
    }
#endif
    vmsg("error: ", fmt, ap);
    tmp_cleanup();
    exit(code);
}

void fail_input(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fail_exit(EXIT_BAD_INPUT, fmt, ap);
}

void fail_other(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fail_exit(EXIT_FAILURE_OTHER, fmt, ap);
}

void warn_msg(const char* fmt, ...) {
#ifdef AUTOQ_FUZZ
    if (g_fuzz_jmp && !getenv("AUTOQ_FUZZ_VERBOSE")) return; // a warning per input would drown the fuzzer
#endif
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
    void* p = calloc(n ? n : 1, size ? size : 1); // calloc checks n * size itself
    if (!p) fail_other("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void* xrealloc(void* p, size_t n) {
    void* q = realloc(p, n ? n : 1);
    if (!q) fail_other("out of memory allocating %zu bytes", n);
    return q;
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

size_t size_mul(size_t a, size_t b, const char* what) {
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) fail_input("%s: size %zu x %zu overflows", what, a, b);
    return r;
}

size_t size_mul3(size_t a, size_t b, size_t c, const char* what) {
    return size_mul(size_mul(a, b, what), c, what);
}

size_t size_add(size_t a, size_t b, const char* what) {
    size_t r;
    if (__builtin_add_overflow(a, b, &r)) fail_input("%s: size %zu + %zu overflows", what, a, b);
    return r;
}

const char* str_clip(char* buf, const char* s) {
    const size_t max = 80;
    size_t n = 0;
    while (s[n] && n < max) n++;
    int cut = s[n] != 0;
    if (cut) // back up to the start of a UTF-8 character
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    strcpy(buf + n, cut ? "..." : "");
    return buf;
}

// ---- Inputs: one policy for every file autoq reads (README §1) ----
// Opened O_NONBLOCK (a FIFO cannot stall the open; O_NOFOLLOW too where a link could be planted),
// then fstat'd: a FIFO, device, socket or directory is refused before a byte is read, and so is a
// file over the caller's cap. why gets the reason, to follow "PATH: WHAT ".

static const char* node_kind(mode_t m) {
    return S_ISDIR(m)    ? "a directory"
           : S_ISFIFO(m) ? "a FIFO"
           : S_ISCHR(m)  ? "a character device"
           : S_ISBLK(m)  ? "a block device"
           : S_ISSOCK(m) ? "a socket"
           : S_ISLNK(m)  ? "a symbolic link"
                         : "a special file";
}

int input_open(const char* path, size_t max, int flags, size_t* size, char* why, size_t cap) {
    int of = O_RDONLY | O_NONBLOCK | O_CLOEXEC | (flags & INPUT_NOFOLLOW ? O_NOFOLLOW : 0);
    int fd = open(path, of);
    if (fd < 0) {
        int e = errno;
        // O_NOFOLLOW on a link fails with ELOOP: say what it is
        if (e == ELOOP && (flags & INPUT_NOFOLLOW))
            snprintf(why, cap, "is a symbolic link, refused here");
        else
            snprintf(why, cap, "cannot be opened: %s", strerror(e));
        errno = e;
        return -1;
    }
    struct stat st;
    int e = 0;
    if (fstat(fd, &st) != 0) {
        e = errno;
        snprintf(why, cap, "cannot be read: %s", strerror(e));
    } else if (!S_ISREG(st.st_mode)) {
        e = EINVAL;
        snprintf(why, cap, "is %s, not a regular file", node_kind(st.st_mode));
    } else if ((uint64_t)st.st_size > (uint64_t)max) {
        e = EFBIG;
        snprintf(why, cap, "is %lld bytes, over the %zu MiB limit for this kind of input",
                 (long long)st.st_size, max >> 20);
    }
    if (e) {
        close(fd);
        errno = e;
        return -1;
    }
    if (size) *size = (size_t)st.st_size;
    return fd;
}

// Reads exactly size bytes (the size fstat gave; a file that shrinks meanwhile is an error).
static char* read_fd(int fd, size_t size, size_t* len) {
    char* buf = xmalloc(size_add(size, 1, "file size"));
    size_t n = 0;
    while (n < size) {
        ssize_t r = read(fd, buf + n, size - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(buf);
            if (r == 0) errno = EIO;
            return NULL;
        }
        n += (size_t)r;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

char* input_read(const char* path, size_t max, int flags, size_t* len, char* why, size_t cap) {
    size_t size = 0;
    int fd = input_open(path, max, flags, &size, why, cap);
    if (fd < 0) return NULL;
    char* buf = read_fd(fd, size, len);
    int e = errno;
    close(fd);
    if (!buf) {
        snprintf(why, cap, "cannot be read: %s", strerror(e));
        errno = e;
    }
    return buf;
}

int open_regular(const char* path, const char* what, size_t* size) {
    char why[160];
    int fd = input_open(path, (size_t)-1, 0, size, why, sizeof(why));
    if (fd < 0) fail_input("%s: %s %s", path, what, why);
    return fd;
}

char* read_input(const char* path, const char* what, size_t max, size_t* len) {
    char why[160];
    char* buf = input_read(path, max, 0, len, why, sizeof(why));
    if (!buf) fail_input("%s: %s %s", path, what, why);
    return buf;
}

char* read_input_opt(const char* path, const char* what, size_t max, size_t* len) {
    char why[160];
    char* buf = input_read(path, max, 0, len, why, sizeof(why));
    if (!buf && errno != ENOENT) fail_input("%s: %s %s", path, what, why);
    return buf;
}

static void check_cap(int fd, const char* path, const char* what, size_t size, size_t max) {
    if (size <= max) return;
    close(fd);
    fail_input("%s: %s is %zu bytes, over the %zu MiB limit for this kind of input", path, what, size,
               max >> 20);
}

// A pipe (e.g. `--text <(cmd)` or /dev/stdin) read to its end, at most max bytes.
static char* read_stream(int fd, const char* path, size_t max, size_t* len) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    size_t cap = 1 << 16, n = 0;
    char* buf = xmalloc(cap + 1);
    for (;;) {
        if (n == cap) {
            if (cap > max) {
                close(fd);
                fail_input("%s: input is over the %zu MiB limit for this kind of input", path, max >> 20);
            }
            cap *= 2;
            buf = xrealloc(buf, cap + 1);
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            free(buf);
            return NULL;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    if (n > max) {
        close(fd);
        fail_input("%s: input is over the %zu MiB limit for this kind of input", path, max >> 20);
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

char* read_file(const char* path, size_t* len) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    char* buf;
    if (S_ISFIFO(st.st_mode)) {
        buf = read_stream(fd, path, MAX_TEXT_BYTES, len); // a pipe ends; no writer reads as empty
    } else if (S_ISREG(st.st_mode)) {
        check_cap(fd, path, "input", (size_t)st.st_size, MAX_TEXT_BYTES);
        buf = read_fd(fd, (size_t)st.st_size, len);
    } else {
        close(fd);
        fail_input("%s: is %s, not a regular file or a pipe", path,
                   S_ISDIR(st.st_mode) ? "a directory" : "a device or socket");
    }
    int e = errno;
    close(fd);
    errno = e;
    return buf;
}

// The folder part of path ("." when there is none); malloc'd.
static char* path_dir(const char* path) {
    const char* slash = strrchr(path, '/');
    if (!slash) return xstrdup(".");
    if (slash == path) return xstrdup("/");
    char* d = xmalloc((size_t)(slash - path) + 1);
    memcpy(d, path, (size_t)(slash - path));
    d[slash - path] = 0;
    return d;
}

void out_check(const char* path, const char* what) {
    if (!path || !*path) fail_input("%s: the output path is empty", what);
    if (strcmp(path, "-") == 0) return;
    size_t n = strlen(path);
    if (n + 32 >= PATH_MAX) fail_input("%s: %s: output path is too long", path, what);
    struct stat st;
    if (path[n - 1] == '/') fail_input("%s: %s names a directory, not a file", path, what);
    // stat follows a symlink: a link to a device or FIFO is refused like the node itself.
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) fail_input("%s: %s is a directory, not a file", path, what);
        if (!S_ISREG(st.st_mode))
            fail_input(
                "%s: %s is a device, FIFO or socket; outputs are written to a temporary file and renamed "
                "into place, so autoq refuses to replace it",
                path, what);
    }
    char* dir = path_dir(path);
    if (stat(dir, &st) != 0) fail_input("%s: %s: folder %s does not exist", path, what, dir);
    if (!S_ISDIR(st.st_mode)) fail_input("%s: %s: %s is not a folder", path, what, dir);
    if (access(dir, W_OK | X_OK) != 0) fail_input("%s: %s: folder %s is not writable", path, what, dir);
    free(dir);
}

// A name beside path no other run uses: PATH.tmp.XXXXXX (six random characters, as mkstemp's), so
// nothing a killed run left behind, or someone planted, can collide with it.
static char* tmp_name(const char* path) {
    static const char k_chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    static uint64_t counter;
    unsigned char r[6];
    if (getrandom(r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
        uint64_t x = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull ^ (uint64_t)(time_now() * 1e9) ^ ++counter;
        for (int i = 0; i < 6; i++) r[i] = (unsigned char)(x >> (8 * i));
    }
    size_t n = strlen(path);
    if (n + 16 >= PATH_MAX) fail_input("%s: output path is too long", path);
    char* t = xmalloc(n + 16);
    memcpy(t, path, n);
    memcpy(t + n, ".tmp.", 5);
    for (int i = 0; i < 6; i++) t[n + 5 + i] = k_chars[r[i] % (sizeof(k_chars) - 1)];
    t[n + 11] = 0;
    return t;
}

// Signals that remove temporary outputs, held off while one is created and registered (so a signal
// can neither leave it unregistered nor remove a file of that name that is not ours).
static void sig_hold(sigset_t* old) {
    sigset_t block;
    sigemptyset(&block);
    const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) sigaddset(&block, sigs[i]);
    sigprocmask(SIG_BLOCK, &block, old);
}

static void sig_release(const sigset_t* old) { sigprocmask(SIG_SETMASK, old, NULL); }

int tmp_create(const char* path, char** tmp) {
    for (int tries = 0; tries < 100; tries++) {
        char* t = tmp_name(path);
        sigset_t old;
        sig_hold(&old);
        // O_EXCL | O_NOFOLLOW: never a file or link planted under the name (O_EXCL fails on a link)
        int fd = open(t, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        int e = errno;
        if (fd >= 0) tmp_register(t);
        sig_release(&old);
        if (fd >= 0) {
            *tmp = t;
            return fd;
        }
        free(t);
        errno = e;
        if (e != EEXIST) return -1;
    }
    return -1;
}

int tmp_commit(const char* tmp, const char* path) {
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        tmp_unregister(tmp);
        errno = e;
        return -1;
    }
    tmp_unregister(tmp);
    return 0;
}

void out_open(OutFile* o, const char* path) {
    out_check(path, "output");
    o->path = xstrdup(path);
    int fd = tmp_create(path, &o->tmp);
    if (fd < 0) fail_input("%s: cannot create output file: %s", path, strerror(errno));
    o->f = fdopen(fd, "wb");
    if (!o->f) fail_other("%s: fdopen: %s", path, strerror(errno));
}

void out_close(OutFile* o) {
    int bad = ferror(o->f);
    if (fclose(o->f) != 0 || bad) {
        unlink(o->tmp);
        fail_other("%s: write failed", o->path);
    }
    if (tmp_commit(o->tmp, o->path) != 0)
        fail_other("%s: cannot rename into place: %s", o->path, strerror(errno));
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

// ---- Output folders (quantize --out, gen OUT_DIR) ----

void outdir_check(const char* out, int force, int empty_ok, const char* what) {
    if (!*out) fail_input("%s: the output folder path is empty", what);
    const char* base = strrchr(out, '/');
    base = base ? base + 1 : out;
    // "/", ".", "..": a folder that cannot be renamed into place
    if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        fail_input("%s: %s: name the output folder itself (not '/', '.' or '..')", what, out);
    if (strlen(out) + 16 >= PATH_MAX) fail_input("%s: %s: output path is too long", what, out);
    struct stat st;
    if (lstat(out, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) fail_input("%s: %s exists and is not a folder", what, out);
        DIR* d = opendir(out);
        if (!d) fail_input("%s: %s: %s", what, out, strerror(errno));
        int n = 0;
        struct dirent* e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            n++;
            char* p = path_join(out, e->d_name);
            int sub = lstat(p, &st) == 0 && S_ISDIR(st.st_mode);
            free(p);
            if (sub && force) {
                closedir(d);
                fail_input("%s: %s holds the folder '%s'; --force replaces folders of files only", what, out,
                           e->d_name);
            }
        }
        closedir(d);
        if (!force && (n || !empty_ok))
            fail_input("%s: %s exists%s (add --force to replace it)", what, out, n ? " and is not empty" : "");
    }
    char* parent = path_dir(out);
    if (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode) || access(parent, W_OK | X_OK) != 0)
        fail_input("%s: %s: its folder %s is not a writable folder", what, out, parent);
    free(parent);
}

char* outdir_begin(const char* out) {
    for (int tries = 0; tries < 100; tries++) {
        char* t = tmp_name(out);
        sigset_t old;
        sig_hold(&old);
        int ok = mkdir(t, 0755) == 0, e = errno;
        if (ok) tmp_register(t); // a folder: removed with its files (tmp_cleanup)
        sig_release(&old);
        if (ok) return t;
        free(t);
        if (e != EEXIST) fail_input("%s: cannot create a folder beside it: %s", out, strerror(e));
    }
    fail_other("%s: no free temporary folder name", out);
}

// The files of folder path (not its sub-folders), then the folder; async-signal-safe (raw getdents64,
// no malloc), so the signal handler uses it too. 0 when the folder is gone.
static int rm_folder(const char* path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return rmdir(path);
    char buf[4096] __attribute__((aligned(8)));
    for (int pass = 0; pass < 8; pass++) { // entries removed while listing may hide others: list again
        long n, removed = 0;
        lseek(fd, 0, SEEK_SET);
        while ((n = syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0)
            for (long off = 0; off < n;) {
                struct {
                    uint64_t ino;
                    int64_t off;
                    unsigned short reclen;
                    unsigned char type;
                    char name[];
                }* de = (void*)(buf + off);
                off += de->reclen;
                if (de->name[0] == '.' && (!de->name[1] || (de->name[1] == '.' && !de->name[2]))) continue;
                removed += unlinkat(fd, de->name, 0) == 0;
            }
        if (!removed) break;
    }
    close(fd);
    return rmdir(path);
}

void outdir_install(const char* tmp, const char* out) {
    // No signal between the swap and the end of the clean-up: OUT is always a whole checkpoint.
    sigset_t old;
    sig_hold(&old);
    struct stat st;
    int had = lstat(out, &st) == 0;
    // An existing OUT (outdir_check: a folder of files) swaps atomically with the new one, which
    // then holds the old files under the temporary name, removed below.
    int swapped = had && renameat2(AT_FDCWD, tmp, AT_FDCWD, out, RENAME_EXCHANGE) == 0;
    if (had && !swapped) { // a file system without RENAME_EXCHANGE: move OUT aside under a fresh name
        char* aside = outdir_begin(out);
        if (rename(out, aside) != 0) fail_other("%s: cannot move aside: %s", out, strerror(errno));
        if (rename(tmp, out) != 0) {
            int e = errno;
            rename(aside, out);
            fail_other("%s: cannot rename into place: %s", out, strerror(e));
        }
        tmp_unregister(tmp);
        if (rm_folder(aside) != 0)
            warn_msg("%s: the replaced folder could not be removed: %s", aside, strerror(errno));
        tmp_unregister(aside);
        free(aside);
    } else if (swapped) {
        if (rm_folder(tmp) != 0)
            warn_msg("%s: the replaced folder could not be removed: %s", tmp, strerror(errno));
        tmp_unregister(tmp);
    } else {
        // RENAME_NOREPLACE: a folder that appeared since outdir_check is not replaced
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, out, RENAME_NOREPLACE) != 0 &&
            (errno != EINVAL || rename(tmp, out) != 0))
            fail_other("%s: cannot rename into place: %s", out, strerror(errno));
        tmp_unregister(tmp);
    }
    sig_release(&old);
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

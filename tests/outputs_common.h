// Shared by tests/test_outputs.c and tests/test_h5.c: a scratch directory, a child process per
// failure case (expect_exit), and a synthetic scores table. Include after defining _GNU_SOURCE.
#pragma once
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "engine/util.h"
#include "scoring/table.h"

static char g_dir[64];

static inline char* tmp_path(const char* name) {
    static char buf[8][256];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", g_dir, name);
    return buf[k];
}

// ---- a child process per failure case: fail_input exits, and a crash must not stop the suite ----
typedef void (*ChildFn)(const void* arg);

static inline int run_child(ChildFn fn, const void* arg, char* err, size_t cap) {
    fflush(stdout);
    fflush(stderr);
    char* errf = tmp_path("child.err");
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 2);
        alarm(30); // a hang is a failure too
        fn(arg);
        exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    FILE* f = fopen(errf, "rb");
    size_t n = f ? fread(err, 1, cap - 1, f) : 0;
    err[n] = 0;
    if (f) fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static inline void expect_exit(const char* name, ChildFn fn, const void* arg, int want, const char* fragment) {
    char err[4096];
    int rc = run_child(fn, arg, err, sizeof(err));
    if (getenv("AUTOQ_TEST_VERBOSE") && *err) printf("  %s", err); // to read the messages themselves
    CHECK(rc == want && strstr(err, fragment), name, "exit %d (want %d), stderr: %s (want '%s')", rc, want, err,
          fragment);
}

// ---- a synthetic scores table: ng groups of one down_proj each, 4 x 8 weights ----
static inline void table_make(ScoreTable* t, int ng, int nf) {
    memset(t, 0, sizeof(*t));
    snprintf(t->model, sizeof(t->model), "models/tiny");
    snprintf(t->method, sizeof(t->method), "kl");
    snprintf(t->numerics, sizeof(t->numerics), "modelopt");
    snprintf(t->disabled_csv, sizeof(t->disabled_csv), "*lm_head*");
    t->nf = nf;
    format_load(&t->fmts[0], "configs/formats/w4a8.json", 0);
    if (nf > 1) format_load(&t->fmts[1], "configs/formats/w8a8.json", 0);
    t->num_samples = 2, t->seq_len = 16;
    t->ng = t->nl = ng;
    t->gname = xcalloc(ng, sizeof(char*));
    t->gmembers = xcalloc(ng, sizeof(char*));
    t->lname = xcalloc(ng, sizeof(char*));
    t->params = xmalloc(sizeof(long) * ng);
    t->active = xmalloc(sizeof(long) * ng);
    t->disabled = xcalloc(ng, 1);
    t->score = xmalloc(sizeof(double) * ng * nf);
    t->lshape = xmalloc(sizeof(long) * 2 * ng);
    t->lgroup = xmalloc(sizeof(int) * ng);
    for (int g = 0; g < ng; g++) {
        char name[64];
        snprintf(name, sizeof(name), "model.layers.%d.mlp.down_proj", g);
        t->gname[g] = xstrdup(name);
        t->gmembers[g] = xstrdup(name);
        t->lname[g] = xstrdup(name);
        t->params[g] = t->active[g] = 32;
        t->lshape[2 * g] = 4, t->lshape[2 * g + 1] = 8;
        t->lgroup[g] = g;
        for (int f = 0; f < nf; f++) t->score[(size_t)f * ng + g] = (g + 1) * 0.5 / (f + 1);
    }
}

static inline void table_write(const ScoreTable* t, const char* path) {
    table_h5_finish(table_h5_create(t, path), path);
}

// The command-line parser shared by every command (engine/args.h).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "util.h"

// Options that take no value in every command; every other --option takes the
// next argument, except the command's own extra flags (--json in info and eval).
static const char* const k_flags[] = {"--no-grouping", "--verify", "--decode",       "--shuffle",
                                      "--quiet",       "--help",   "--shard-layers", NULL};

const char* const k_json_flag[] = {"--json", NULL};

static const char* const* g_extra_flags;

static int is_flag(const char* s) {
    for (int i = 0; k_flags[i]; i++)
        if (strcmp(s, k_flags[i]) == 0) return 1;
    for (int i = 0; g_extra_flags && g_extra_flags[i]; i++)
        if (strcmp(s, g_extra_flags[i]) == 0) return 1;
    return 0;
}

void args_init(Args* a, int argc, char** argv, const char* const* extra_flags) {
    g_extra_flags = extra_flags;
    a->argc = argc;
    a->argv = argv;
    a->cmd = argv[0];
    a->used = calloc(argc, sizeof(int));
    a->used[0] = 1;
    if (args_flag(a, "--quiet")) g_quiet = 1;
}

static int find(Args* a, const char* name) {
    for (int i = 1; i < a->argc; i++) {
        if (strcmp(a->argv[i], name) == 0) return i;
        if (a->argv[i][0] == '-' && !is_flag(a->argv[i])) i++;
    }
    return -1;
}

const char* args_str(Args* a, const char* name) {
    int i = find(a, name);
    if (i < 0) return NULL;
    if (i + 1 >= a->argc) fail_input("%s: option %s needs a value", a->cmd, name);
    a->used[i] = a->used[i + 1] = 1;
    return a->argv[i + 1];
}

int args_multi(Args* a, const char* name, const char** out, int max) {
    int n = 0;
    for (int i = 1; i < a->argc; i++) {
        if (strcmp(a->argv[i], name) == 0) {
            if (i + 1 >= a->argc) fail_input("%s: option %s needs a value", a->cmd, name);
            if (n == max) fail_input("%s: option %s given more than %d times", a->cmd, name, max);
            a->used[i] = a->used[i + 1] = 1;
            out[n++] = a->argv[++i];
        } else if (a->argv[i][0] == '-' && !is_flag(a->argv[i])) {
            i++;
        }
    }
    return n;
}

int args_flag(Args* a, const char* name) {
    int i = find(a, name);
    if (i < 0) return 0;
    a->used[i] = 1;
    return 1;
}

int args_int(Args* a, const char* name, int def, int lo, int hi) {
    const char* s = args_str(a, name);
    if (!s) return def;
    char* end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0 || v < lo || v > hi)
        fail_input("%s: option %s = '%s' must be an integer in [%d, %d]", a->cmd, name, s, lo, hi);
    return (int)v;
}

double args_double(Args* a, const char* name, double def) {
    const char* s = args_str(a, name);
    if (!s) return def;
    char* end;
    double v = strtod(s, &end);
    if (*s == 0 || *end != 0) fail_input("%s: option %s = '%s' is not a number", a->cmd, name, s);
    return v;
}

const char* args_pos(Args* a, int k) {
    int n = 0;
    for (int i = 1; i < a->argc; i++) {
        if (a->argv[i][0] == '-' && a->argv[i][1]) {
            if (!is_flag(a->argv[i])) i++;
            continue;
        }
        if (n++ == k) {
            a->used[i] = 1;
            return a->argv[i];
        }
    }
    return NULL;
}

void args_done(Args* a) {
    for (int i = 1; i < a->argc; i++)
        if (!a->used[i]) fail_input("%s: unknown or misplaced argument '%s'", a->cmd, a->argv[i]);
    free(a->used);
}

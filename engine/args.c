// The command-line parser, driven by each command's declared option table (engine/args.h).
#include "args.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "paths.h"
#include "util.h"

// Every command also takes these (not in its table).
static const Opt k_common[] = {
    {"--quiet", OPT_FLAG, NULL, NULL, 0, 0, 0, 0, "no progress bar or information messages on stderr"},
    {"--help", OPT_FLAG, NULL, NULL, 0, 0, 0, 0, "this text, on stdout (also -h)"},
};
#define N_COMMON 2

static int is_pos(const Opt* o) { return o->name[0] != '-'; }

// Row r of a's table, the common options after the command's own.
static const Opt* row(const Args* a, int r) {
    int own = a->n_opts - N_COMMON;
    return r < own ? &a->spec->opts[r] : &k_common[r - own];
}

static int find_row(const Args* a, const char* name) {
    for (int r = 0; r < a->n_opts; r++)
        if (strcmp(row(a, r)->name, name) == 0) return r;
    return -1;
}

// "a|b|c" as "a, b or c" (each followed by suffix: "=FILE").
static void choices_text(char* out, size_t cap, const char* choices, const char* suffix) {
    out[0] = 0;
    int n = 1;
    for (const char* p = choices; *p; p++) n += *p == '|';
    const char* p = choices;
    for (int i = 0; i < n; i++) {
        const char* bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        size_t at = strlen(out);
        snprintf(out + at, cap - at, "%s%.*s%s", i == 0 ? "" : i == n - 1 ? " or " : ", ", (int)len, p, suffix);
        p = bar ? bar + 1 : p + len;
    }
}

static int in_choices(const char* choices, const char* s, size_t len) {
    for (const char* p = choices; *p;) {
        const char* bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && strncmp(p, s, len) == 0) return 1;
        if (!bar) break;
        p = bar + 1;
    }
    return 0;
}

static void check_value(const Args* a, const Opt* o, const char* v) {
    char buf[256];
    char* end;
    switch (o->type) {
    case OPT_INT: {
        long x = strtol(v, &end, 10);
        if (*v == 0 || *end != 0 || x < o->lo || x > o->hi)
            fail_input("%s: option %s = '%s' must be an integer in [%.0f, %.0f]", a->cmd, o->name, v, o->lo,
                       o->hi);
        break;
    }
    case OPT_DOUBLE: {
        double x = strtod(v, &end);
        int lo_ok = (o->flags & OPT_LO_OPEN) ? x > o->lo : x >= o->lo;
        if (*v == 0 || *end != 0 || !isfinite(x) || !lo_ok || !(x <= o->hi))
            fail_input("%s: option %s = '%s' must be a number in %c%g, %g]", a->cmd, o->name, v,
                       (o->flags & OPT_LO_OPEN) ? '(' : '[', o->lo, o->hi);
        break;
    }
    case OPT_ENUM:
        if (!in_choices(o->choices, v, strlen(v))) {
            choices_text(buf, sizeof(buf), o->choices, "");
            fail_input("%s: %s must be %s (got '%s')", a->cmd, o->name, buf, v);
        }
        break;
    case OPT_OUT:
        if (o->flags & OPT_KEYED) {
            const char* eq = strchr(v, '=');
            if (!eq || !eq[1] || !in_choices(o->choices, v, (size_t)(eq - v))) {
                choices_text(buf, sizeof(buf), o->choices, "=FILE");
                fail_input("%s: %s '%s' must be %s", a->cmd, o->name, v, buf);
            }
        }
        break;
    default:
        break;
    }
}

// The path an input or output value names (NAME=FILE: the FILE), or NULL where it names none.
static const char* value_path(const Opt* o, const char* v) {
    if (o->type != OPT_IN && o->type != OPT_OUT && o->type != OPT_OUT_DIR) return NULL;
    if ((o->flags & OPT_STDOUT) && strcmp(v, "-") == 0) return NULL;
    if (o->flags & OPT_KEYED) return strchr(v, '=') + 1;
    // a repeated input may be NAME=FILE (score --data, README §1): the FILE, unless the whole value is a file
    const char* eq = strchr(v, '=');
    if (o->type == OPT_IN && (o->flags & OPT_REPEAT) && eq && access(v, F_OK) != 0) return eq + 1;
    return v;
}

// Outputs never alias an input or another output: compared by device and inode, so links and
// other spellings of one file are caught; an output folder may not hold an input either (README §1).
static void check_aliasing(const Args* a) {
    for (int r = 0; r < a->n_opts; r++) {
        const Opt* o = row(a, r);
        if (o->type != OPT_OUT && o->type != OPT_OUT_DIR) continue;
        for (int k = 0; k < a->count[r]; k++) {
            const char* out = value_path(o, a->val[r * a->argc + k]);
            if (!out) continue;
            PathId oid;
            path_id(&oid, out);
            for (int s = 0; s < a->n_opts; s++) {
                const Opt* p = row(a, s);
                int input = p->type == OPT_IN, output = p->type == OPT_OUT || p->type == OPT_OUT_DIR;
                if (!input && !output) continue;
                for (int m = 0; m < a->count[s]; m++) {
                    if (output && (s > r || (s == r && m >= k))) continue; // each pair of outputs once
                    const char* other = value_path(p, a->val[s * a->argc + m]);
                    if (!other) continue;
                    PathId id;
                    path_id(&id, other);
                    if (path_id_same(&oid, &id))
                        fail_input("%s: %s %s and %s %s name the same file; an output may not overwrite %s",
                                   a->cmd, o->name, out, p->name, other, input ? "an input" : "another output");
                    if (input && o->type == OPT_OUT_DIR && path_within(other, out))
                        fail_input("%s: %s %s holds the input %s %s; an output folder may not hold an input "
                                   "(it may be replaced)",
                                   a->cmd, o->name, out, p->name, other);
                }
            }
        }
    }
}

// Whether argv[i] is in an option's place (not a value) and names --help or -h; options that take
// a value skip it, as the parse below does.
static int wants_help(const Args* a) {
    for (int i = 1; i < a->argc; i++) {
        const char* s = a->argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) return 1;
        int r = s[0] == '-' && s[1] ? find_row(a, s) : -1;
        if (r >= 0 && row(a, r)->type != OPT_FLAG) i++;
    }
    return 0;
}

void args_parse(Args* a, const Command* c, int argc, char** argv) {
    memset(a, 0, sizeof(*a));
    a->cmd = c->name;
    a->spec = c;
    a->argc = argc;
    a->argv = argv;
    while (c->opts[a->n_opts].name) a->n_opts++;
    a->n_opts += N_COMMON;
    a->count = xcalloc(a->n_opts, sizeof(int));
    a->val = xcalloc((size_t)a->n_opts * argc, sizeof(char*));
    a->read = xcalloc(a->n_opts, 1);
    if (wants_help(a)) {
        args_usage(stdout, c);
        exit(0);
    }
    int next_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char* s = argv[i];
        int r;
        if (s[0] == '-' && s[1]) {
            r = find_row(a, s);
            if (r < 0 || is_pos(row(a, r)))
                fail_input("%s: unknown option '%s' (autoq %s --help lists its options)", a->cmd, s, a->cmd);
        } else {
            for (r = next_pos; r < a->n_opts && !is_pos(row(a, r)); r++) {
            }
            if (r >= a->n_opts)
                fail_input("%s: unknown or misplaced argument '%s' (autoq %s --help lists its arguments)",
                           a->cmd, s, a->cmd);
            next_pos = r + 1;
            a->val[r * argc] = s;
            a->count[r] = 1;
            check_value(a, row(a, r), s);
            continue;
        }
        const Opt* o = row(a, r);
        if (o->flags & OPT_REFUSED) fail_input("%s: %s %s", a->cmd, o->name, o->help);
        if (a->count[r] && !(o->flags & OPT_REPEAT)) fail_input("%s: option %s given twice", a->cmd, o->name);
        const char* v = "";
        if (o->type != OPT_FLAG) {
            if (i + 1 >= argc) fail_input("%s: option %s needs a value", a->cmd, o->name);
            v = argv[++i];
            // `--out --force`: a forgotten value, not an output named --force
            if (v[0] == '-' && v[1] == '-' && find_row(a, v) >= 0)
                fail_input("%s: option %s needs a value (got the option %s)", a->cmd, o->name, v);
            check_value(a, o, v);
        }
        a->val[r * argc + a->count[r]++] = v;
    }
    for (int r = 0; r < a->n_opts; r++) {
        const Opt* o = row(a, r);
        if (!(o->flags & OPT_REQUIRED) || a->count[r] || !is_pos(o)) continue;
        fail_input("%s: %s missing", a->cmd, o->meta ? o->meta : o->name);
    }
    for (int r = 0; r < a->n_opts; r++) {
        const Opt* o = row(a, r);
        if (!(o->flags & OPT_REQUIRED) || a->count[r] || is_pos(o)) continue;
        if (o->type == OPT_ENUM) {
            char buf[256];
            choices_text(buf, sizeof(buf), o->choices, "");
            fail_input("%s: %s is required (%s)", a->cmd, o->name, buf);
        }
        fail_input("%s: %s is required", a->cmd, o->name);
    }
    check_aliasing(a);
    if (args_flag(a, "--quiet")) g_quiet = 1;
    a->read[find_row(a, "--help")] = 1;
}

// Row of name, marked read; -1 when the table has no such option.
static int take(Args* a, const char* name) {
    int r = find_row(a, name);
    if (r >= 0) a->read[r] = 1;
    return r;
}

const char* args_str(Args* a, const char* name) {
    int r = take(a, name);
    return r >= 0 && a->count[r] ? a->val[r * a->argc + a->count[r] - 1] : NULL;
}

int args_flag(Args* a, const char* name) {
    int r = take(a, name);
    return r >= 0 && a->count[r] > 0;
}

int args_multi(Args* a, const char* name, const char** out, int max) {
    int r = take(a, name);
    if (r < 0) return 0;
    if (a->count[r] > max) fail_input("%s: option %s given more than %d times", a->cmd, name, max);
    for (int k = 0; k < a->count[r]; k++) out[k] = a->val[r * a->argc + k];
    return a->count[r];
}

int args_int(Args* a, const char* name, int def) {
    const char* s = args_str(a, name);
    return s ? (int)strtol(s, NULL, 10) : def;
}

double args_double(Args* a, const char* name, double def) {
    const char* s = args_str(a, name);
    return s ? strtod(s, NULL) : def;
}

const char* args_pos(Args* a, int i) {
    for (int r = 0; r < a->n_opts; r++) {
        if (!is_pos(row(a, r)) || i-- > 0) continue;
        a->read[r] = 1;
        return a->count[r] ? a->val[r * a->argc] : NULL;
    }
    return NULL;
}

void args_refuse(Args* a, unsigned groups, const char* why) {
    for (int r = 0; r < a->n_opts; r++)
        if ((row(a, r)->group & groups) && a->count[r])
            fail_input("%s: %s is not used %s", a->cmd, row(a, r)->name, why);
}

void args_done(Args* a) {
    for (int r = 0; r < a->n_opts; r++)
        if (a->count[r] && !a->read[r])
            fail_input("%s: %s is not used here (autoq %s --help)", a->cmd, row(a, r)->name, a->cmd);
    free(a->count);
    free(a->val);
    free(a->read);
    a->count = NULL, a->val = NULL, a->read = NULL;
}

// ---- usage, generated from the table ----

// "--name META" as the synopsis shows it.
static void opt_text(char* out, size_t cap, const Opt* o) {
    if (is_pos(o)) {
        snprintf(out, cap, "%s", o->name);
        return;
    }
    const char* meta = o->type == OPT_ENUM ? o->choices : o->meta;
    if (o->type == OPT_FLAG)
        snprintf(out, cap, "%s", o->name);
    else if (o->flags & OPT_KEYED)
        snprintf(out, cap, "%s %s=%s", o->name, o->choices, meta ? meta : "FILE");
    else
        snprintf(out, cap, "%s %s", o->name, meta ? meta : "VALUE");
}

void args_synopsis(FILE* f, const Command* c, int width) {
    char head[32];
    snprintf(head, sizeof(head), "autoq %-8s ", c->name);
    int indent = (int)strlen(head), col = indent;
    fputs(head, f);
    for (int r = 0; c->opts[r].name; r++) {
        const Opt* o = &c->opts[r];
        if (o->flags & OPT_REFUSED) continue;
        char text[160], item[176];
        opt_text(text, sizeof(text), o);
        int req = (o->flags & OPT_REQUIRED) != 0;
        snprintf(item, sizeof(item), "%s%s%s%s", req ? "" : "[", text, req ? "" : "]",
                 (o->flags & OPT_REPEAT) ? "..." : "");
        int len = (int)strlen(item);
        if (col > indent && col + 1 + len > width) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        }
        fprintf(f, "%s%s", col > indent ? " " : "", item);
        col += (col > indent) + len;
    }
    fputc('\n', f);
}

static void usage_row(FILE* f, const Opt* o) {
    char text[160];
    opt_text(text, sizeof(text), o);
    const char* kind = o->type == OPT_IN                              ? " (read)"
                       : o->type == OPT_OUT || o->type == OPT_OUT_DIR ? " (written)"
                                                                      : "";
    const char* req = (o->flags & OPT_REQUIRED) ? " (required)" : "";
    if (strlen(text) > 28)
        fprintf(f, "  %s\n  %-28s  %s%s%s\n", text, "", o->help, kind, req);
    else
        fprintf(f, "  %-28s  %s%s%s\n", text, o->help, kind, req);
}

void args_usage(FILE* f, const Command* c) {
    fprintf(f, "usage:\n");
    args_synopsis(f, c, 100);
    fprintf(f, "\n%s\n\n", c->summary);
    for (int r = 0; c->opts[r].name; r++)
        if (!(c->opts[r].flags & OPT_REFUSED)) usage_row(f, &c->opts[r]);
    for (int r = 0; r < N_COMMON; r++) usage_row(f, &k_common[r]);
    fprintf(f,
            "\nAn output may not be an input or another output (README §1). README.md explains each option.\n");
}

// The small argument parser every command shares: `--name value` options, flags, positionals;
// anything left unread is an error (exit 2).
#pragma once

typedef struct {
    int argc;
    char** argv;
    int* used;
    const char* cmd;
} Args;

// extra_flags: NULL-terminated options that take no value in this command (or NULL).
void args_init(Args* a, int argc, char** argv, const char* const* extra_flags);
extern const char* const k_json_flag[]; // {"--json", NULL}
// Value of --name, or NULL. Marks it used.
const char* args_str(Args* a, const char* name);
int args_flag(Args* a, const char* name);
// Every value of a repeatable option; returns the count (at most max).
int args_multi(Args* a, const char* name, const char** out, int max);
int args_int(Args* a, const char* name, int def, int lo, int hi);
double args_double(Args* a, const char* name, double def);
// The i-th positional argument (not an option or an option's value), or NULL.
const char* args_pos(Args* a, int i);
// Exits 2 if any argument was not consumed.
void args_done(Args* a);

// The command line: each command declares its options in a table (autoq.c), and args_parse reads
// argv against it in one place: values typed and range-checked, flags known, unknown or unused
// options refused, outputs checked against inputs and each other (README §1). Errors exit 2.
#pragma once

#include <stdio.h>

typedef enum {
    OPT_FLAG,    // takes no value
    OPT_STR,     // any text (checked by the command)
    OPT_INT,     // an integer in [lo, hi]
    OPT_DOUBLE,  // a finite number in [lo, hi] ((lo, hi] with OPT_LO_OPEN)
    OPT_ENUM,    // one of choices ("kl|gradient")
    OPT_IN,      // a file or folder read
    OPT_OUT,     // a file written
    OPT_OUT_DIR, // a folder written (an input inside it would be replaced)
} OptType;

enum {
    OPT_REQUIRED = 1, // exit 2 when missing
    OPT_REPEAT = 2,   // may be given more than once
    OPT_LO_OPEN = 4,  // OPT_DOUBLE: lo itself is out of range
    OPT_KEYED = 8,    // OPT_OUT: NAME=FILE, NAME one of choices
    OPT_STDOUT = 16,  // OPT_OUT: "-" is stdout
    OPT_REFUSED = 32, // never accepted here: help is the reason (kept so the message can say why)
};

// The modes an option belongs to (Opt.group), which a command refuses where it does not use them
// (args_refuse): scoring a model (search without --scores), calibration data and the quantizer
// (search --scores without --verify), gen's --ids, eval --format, plain eval, search --refine's settings,
// search --memory-budget's.
enum {
    G_SCORE = 1,
    G_DATA = 2,
    G_QUANT = 4,
    G_IDS = 8,
    G_FORMAT = 16,
    G_PLAIN = 32,
    G_REFINE = 64,
    G_MEM = 128,
    G_BOOT = 256 // search --bootstrap's seed
};

// One option, or a positional argument when name does not start with '-'.
typedef struct {
    const char* name; // "--data", or "MODEL"
    OptType type;
    const char* meta;    // the value's placeholder in the usage ("D"); a positional: what is missing
    const char* choices; // OPT_ENUM: "a|b|c"; OPT_KEYED: the NAMEs
    double lo, hi;       // OPT_INT, OPT_DOUBLE
    unsigned flags;      // OPT_REQUIRED ...
    unsigned group;      // the mode it belongs to, for args_refuse (0: none)
    const char* help;    // one line
} Opt;

typedef struct Args Args;

typedef struct {
    const char* name;    // "score"
    const char* summary; // one line
    const Opt* opts;     // ends with a row whose name is NULL
    int (*run)(Args* a);
} Command;

struct Args {
    const char* cmd; // the command's name, for messages
    const Command* spec;
    int argc;
    char** argv;
    int n_opts;
    int* count;          // (n_opts) times given
    const char** val;    // (n_opts * argc) the values given, in order
    unsigned char* read; // (n_opts) read by the command (args_done refuses what was not)
};

// Parses argv (argv[0] the command's name) against c's table; --help or -h prints the usage on
// stdout and exits 0. Every problem is exit 2 here, before any work.
void args_parse(Args* a, const Command* c, int argc, char** argv);
// Value of --name, or NULL. An option not in the table reads as not given.
const char* args_str(Args* a, const char* name);
int args_flag(Args* a, const char* name);
// Every value of a repeatable option; returns the count (at most max).
int args_multi(Args* a, const char* name, const char** out, int max);
// Typed values, range-checked by args_parse; def when not given.
int args_int(Args* a, const char* name, int def);
double args_double(Args* a, const char* name, double def);
// The i-th positional argument, or NULL.
const char* args_pos(Args* a, int i);
// Exit 2 naming the first option of `groups` that was given: this mode does not use it (why: "with
// --scores").
void args_refuse(Args* a, unsigned groups, const char* why);
// Exit 2 if an option given was never read (a mode of the command that ignores it); frees a.
void args_done(Args* a);
// The one-line synopsis (wrapped at width, continuation lines indented) and the full usage.
void args_synopsis(FILE* f, const Command* c, int width);
void args_usage(FILE* f, const Command* c);

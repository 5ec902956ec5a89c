#include "data.h"

#include <stdlib.h>
#include <string.h>

#include "../engine/util.h"

static int ends_with(const char* s, const char* suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static void select_windows(TokenIds* t, const DataOpts* o) {
    int n = t->n;
    if (o->num_samples > 0 && o->num_samples < n) n = o->num_samples;
    int T = t->t;
    if (o->seq_len > 0) {
        if (o->seq_len > t->t)
            fail_input("%s: --seq-len %d is longer than the %d tokens per row the file holds", o->path, o->seq_len,
                       t->t);
        T = o->seq_len;
    }
    if (T < 2) fail_input("%s: windows of %d token(s) leave nothing to predict; need at least 2", o->path, T);
    int* ids = xmalloc(sizeof(int) * (size_t)n * T);
    for (int i = 0; i < n; i++) memcpy(ids + (long)i * T, t->ids + (long)i * t->t, sizeof(int) * T);
    free(t->ids);
    t->ids = ids;
    t->n = n;
    t->t = T;
}

void data_load(TokenIds* out, const DataOpts* o) {
    if (ends_with(o->path, ".npy")) {
        npy_read_ids(out, o->path, o->vocab);
        select_windows(out, o);
        info_msg("data: %s: %d windows x %d tokens", o->path, out->n, out->t);
        return;
    }
    fail_input("%s: unsupported --data type (expected .npy, .txt or .jsonl)", o->path);
}

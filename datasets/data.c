#include "data.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/util.h"
#include "tokenizer.h"

#define DEFAULT_TEXT_SEQ_LEN 256

void data_opts_parse(DataOpts* o, Args* a) {
    memset(o, 0, sizeof(*o));
    o->path = args_str(a, "--data");
    o->num_samples = args_int(a, "--num-samples", 0); // ranges: the option tables (autoq.c)
    o->seq_len = args_int(a, "--seq-len", 0);
    o->shuffle = args_flag(a, "--shuffle");
    o->seed = (unsigned long)args_int(a, "--seed", 0);
}

static int ends_with(const char* s, const char* suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static uint64_t splitmix(uint64_t* s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Deterministic Fisher-Yates over window indices.
static void shuffle(int* order, int n, unsigned long seed) {
    uint64_t s = seed * 0x2545F4914F6CDD1Dull + 1;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(splitmix(&s) % (uint64_t)(i + 1));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

// Keeps windows [N, T] of t (already [rows, T]): shuffle, then the first N.
static void pick_windows(TokenIds* t, const DataOpts* o) {
    int* order = xmalloc(sizeof(int) * t->n);
    for (int i = 0; i < t->n; i++) order[i] = i;
    if (o->shuffle) shuffle(order, t->n, o->seed);
    int n = (o->num_samples > 0 && o->num_samples < t->n) ? o->num_samples : t->n;
    int* ids = xmalloc(size_mul3(sizeof(int), (size_t)n, (size_t)t->t, o->path));
    for (int i = 0; i < n; i++)
        memcpy(ids + (long)i * t->t, t->ids + (long)order[i] * t->t, sizeof(int) * t->t);
    free(order);
    free(t->ids);
    t->ids = ids;
    t->n = n;
}

static void load_npy(TokenIds* out, const DataOpts* o) {
    npy_read_ids(out, o->path, o->vocab);
    int T = out->t;
    if (o->seq_len > 0) {
        if (o->seq_len > out->t)
            fail_input("%s: --seq-len %d is longer than the %d tokens per row the file holds", o->path,
                       o->seq_len, out->t);
        T = o->seq_len;
        for (int i = 0; i < out->n; i++)
            memmove(out->ids + (long)i * T, out->ids + (long)i * out->t, sizeof(int) * T);
        out->t = T;
    }
    if (T < 2) fail_input("%s: windows of %d token(s) leave nothing to predict; need at least 2", o->path, T);
    int rows = out->n;
    pick_windows(out, o);
    info_msg("data: %s: %d of %d windows x %d tokens%s", o->path, out->n, rows, out->t,
             o->shuffle ? " (shuffled)" : "");
}

// The Qwen chat template for {"messages": [{"role", "content"}, ...]}.
static char* render_messages(const char* path, int line, json_t* msgs) {
    size_t cap = 256, n = 0;
    char* s = xmalloc(cap);
    size_t i;
    json_t* m;
    json_array_foreach(msgs, i, m) {
        json_t* role = json_object_get(m, "role");
        json_t* content = json_object_get(m, "content");
        if (!json_is_string(role) || !json_is_string(content))
            fail_input("%s:%d: messages[%zu] needs string fields 'role' and 'content'", path, line, i);
        size_t need = json_string_length(role) + json_string_length(content) + 32;
        if (n + need >= cap) s = xrealloc(s, cap = 2 * (n + need));
        n += (size_t)sprintf(s + n, "<|im_start|>%s\n", json_string_value(role));
        memcpy(s + n, json_string_value(content), json_string_length(content));
        n += json_string_length(content);
        n += (size_t)sprintf(s + n, "<|im_end|>\n");
    }
    s[n] = 0;
    return s;
}

static void push_doc(Tokenizer* tk, IdVec* all, const char* text, size_t len, int eos, int* docs,
                     const char* src, size_t base) {
    if (*docs > 0 && eos >= 0) idvec_push(all, eos);
    if (*docs == 1 && eos < 0) // config.json may have eos_token_id null (some MoE exports)
        warn_msg("%s: the model's config.json has no eos_token_id: documents are joined with no separator",
                 src);
    tok_encode(tk, text, len, all, src, base);
    (*docs)++;
}

static void load_text(TokenIds* out, const DataOpts* o, int jsonl) {
    char* tpath = path_join(o->model_dir, "tokenizer.json");
    Tokenizer* tk = tok_load(tpath);
    free(tpath);
    size_t len;
    char* buf = read_input(o->path, jsonl ? "JSON lines data" : "text data", MAX_TEXT_BYTES, &len);
    IdVec all = {0};
    int docs = 0;
    if (!jsonl) {
        push_doc(tk, &all, buf, len, o->eos, &docs, o->path, 0);
    } else {
        int line = 0;
        for (char *p = buf, *nl; p < buf + len; p = nl + 1) {
            nl = memchr(p, '\n', (size_t)(buf + len - p));
            if (!nl) nl = buf + len;
            line++;
            size_t n = (size_t)(nl - p);
            while (n && (p[n - 1] == '\r' || p[n - 1] == ' ')) n--;
            if (n == 0) continue;
            json_error_t err;
            json_t* j = json_loadb(p, n, 0, &err);
            if (!j || !json_is_object(j))
                fail_input("%s:%d: not a JSON object (%s)", o->path, line, j ? "" : err.text);
            json_t* text = json_object_get(j, "text");
            json_t* msgs = json_object_get(j, "messages");
            if (json_is_string(text)) {
                push_doc(tk, &all, json_string_value(text), json_string_length(text), o->eos, &docs, o->path,
                         0);
            } else if (json_is_array(msgs)) {
                char* r = render_messages(o->path, line, msgs);
                push_doc(tk, &all, r, strlen(r), o->eos, &docs, o->path, 0);
                free(r);
            } else {
                fail_input("%s:%d: needs a string field 'text' or a list 'messages'", o->path, line);
            }
            json_decref(j);
        }
    }
    free(buf);
    int T = o->seq_len > 0 ? o->seq_len : DEFAULT_TEXT_SEQ_LEN;
    for (size_t i = 0; i < all.n; i++)
        if (all.ids[i] >= o->vocab)
            fail_input("%s: token id %d from the tokenizer is outside the model's vocabulary (%d)", o->path,
                       all.ids[i], o->vocab);
    if (all.n < (size_t)T)
        fail_input("%s: %zu tokens are shorter than one window of --seq-len %d", o->path, all.n, T);
    int rows = (int)(all.n / (size_t)T);
    out->n = rows;
    out->t = T;
    out->ids = xmalloc(size_mul3(sizeof(int), (size_t)rows, (size_t)T, o->path));
    memcpy(out->ids, all.ids, sizeof(int) * (size_t)rows * T);
    pick_windows(out, o);
    info_msg("data: %s: %zu tokens from %d document(s) -> %d windows of %d; using %d%s", o->path, all.n, docs,
             rows, T, out->n, o->shuffle ? " (shuffled)" : "");
    idvec_free(&all);
    tok_free(tk);
}

void data_load(TokenIds* out, const DataOpts* o) {
    if (ends_with(o->path, ".npy"))
        load_npy(out, o);
    else if (ends_with(o->path, ".txt"))
        load_text(out, o, 0);
    else if (ends_with(o->path, ".jsonl"))
        load_text(out, o, 1);
    else
        fail_input("%s: unsupported --data type (expected .npy, .txt or .jsonl)", o->path);
}

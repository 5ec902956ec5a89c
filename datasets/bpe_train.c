#define PCRE2_CODE_UNIT_WIDTH 8
#include "bpe_train.h"

#include <jansson.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "../engine/util.h"

// One distinct pre-token: its bytes in the text (the dedupe key), its symbols as merged so far,
// how often it occurs, and the merge step that last visited it.
typedef struct {
    const unsigned char* src;
    int len;
    int* sym;
    int n;
    long count;
    int stamp;
} Word;

// An adjacent symbol pair: its count over the corpus (overlapping occurrences, as a full recount
// gives) and the words it may occur in (entries go stale as words change; stamps skip repeats).
typedef struct {
    int a, b;
    long count;
    int* where;
    int n_where, cap_where;
    int stamp; // the merge step that last changed its count
} Pair;

typedef struct {
    long count;
    int a, b, pair;
} HeapEntry;

typedef struct {
    Pair* p;
    int n, cap;
    int* slot; // open addressing over (a, b): pair index + 1, 0 empty
    size_t n_slots;
    HeapEntry* heap; // max-heap by count, ties to the smallest (a, b); stale entries skipped at the top
    size_t n_heap, cap_heap;
    int* touched; // the pairs the current merge changed
    int n_touched, cap_touched;
} PairStats;

static size_t pair_hash(int a, int b) {
    uint64_t k = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) * 0x9E3779B97F4A7C15ull;
    return (size_t)(k ^ k >> 29);
}

static void pairs_rehash(PairStats* ps) {
    free(ps->slot);
    ps->n_slots = ps->n_slots ? ps->n_slots * 2 : 1 << 16;
    ps->slot = xcalloc(ps->n_slots, sizeof(int));
    for (int i = 0; i < ps->n; i++) {
        size_t h = pair_hash(ps->p[i].a, ps->p[i].b) & (ps->n_slots - 1);
        while (ps->slot[h]) h = (h + 1) & (ps->n_slots - 1);
        ps->slot[h] = i + 1;
    }
}

// The index of pair (a, b), created with count 0 when absent.
static int pairs_get(PairStats* ps, int a, int b) {
    if (2 * (size_t)(ps->n + 1) > ps->n_slots) pairs_rehash(ps);
    size_t h = pair_hash(a, b) & (ps->n_slots - 1);
    for (; ps->slot[h]; h = (h + 1) & (ps->n_slots - 1)) {
        Pair* p = &ps->p[ps->slot[h] - 1];
        if (p->a == a && p->b == b) return ps->slot[h] - 1;
    }
    if (ps->n == ps->cap) ps->p = xrealloc(ps->p, sizeof(Pair) * (ps->cap = ps->cap ? 2 * ps->cap : 1024));
    ps->p[ps->n] = (Pair){.a = a, .b = b, .stamp = -1};
    ps->slot[h] = ps->n + 1;
    return ps->n++;
}

static int heap_above(const HeapEntry* x, const HeapEntry* y) {
    if (x->count != y->count) return x->count > y->count;
    return x->a != y->a ? x->a < y->a : x->b < y->b;
}

static void heap_push(PairStats* ps, int i) {
    if (ps->n_heap == ps->cap_heap)
        ps->heap =
            xrealloc(ps->heap, sizeof(HeapEntry) * (ps->cap_heap = ps->cap_heap ? 2 * ps->cap_heap : 4096));
    HeapEntry e = {ps->p[i].count, ps->p[i].a, ps->p[i].b, i};
    size_t k = ps->n_heap++;
    for (; k > 0 && heap_above(&e, &ps->heap[(k - 1) / 2]); k = (k - 1) / 2)
        ps->heap[k] = ps->heap[(k - 1) / 2];
    ps->heap[k] = e;
}

static void heap_pop(PairStats* ps) {
    HeapEntry e = ps->heap[--ps->n_heap];
    size_t k = 0, n = ps->n_heap;
    for (;;) {
        size_t c = 2 * k + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_above(&ps->heap[c + 1], &ps->heap[c])) c++;
        if (!heap_above(&ps->heap[c], &e)) break;
        ps->heap[k] = ps->heap[c];
        k = c;
    }
    if (n) ps->heap[k] = e;
}

// Adds delta occurrences of (a, b); records the step that changed it (its heap entry is renewed after
// the step) and, when asked, word w among the pair's words.
static void pairs_add(PairStats* ps, int a, int b, long delta, int w, int step, int record) {
    int i = pairs_get(ps, a, b);
    Pair* p = &ps->p[i];
    p->count += delta;
    if (p->stamp != step) {
        p->stamp = step;
        if (ps->n_touched == ps->cap_touched)
            ps->touched = xrealloc(
                ps->touched, sizeof(int) * (ps->cap_touched = ps->cap_touched ? 2 * ps->cap_touched : 1024));
        ps->touched[ps->n_touched++] = i;
    }
    if (record && (p->n_where == 0 || p->where[p->n_where - 1] != w)) {
        if (p->n_where == p->cap_where)
            p->where = xrealloc(p->where, sizeof(int) * (p->cap_where = p->cap_where ? 2 * p->cap_where : 4));
        p->where[p->n_where++] = w;
    }
}

// Progress of a long step: progress.h's bar on a terminal, otherwise a line every 10 s.
static void bpe_progress(Progress* p, long n, double* last_line) {
    progress_step(p, n);
    double now = time_now();
    if (!p->tty && now - *last_line > 10) {
        info_msg("%s: %ld of %ld (%.0fs)", p->label, p->done, p->total, now - p->t0);
        *last_line = now;
    }
}

void bpe_check_text(const char* text, size_t len, const char* name) {
    if (!len) return;
    // Checked once: pcre2_match would check the rest of the text again on every call.
    int errc;
    PCRE2_SIZE bad = 0;
    pcre2_code* probe = pcre2_compile((PCRE2_SPTR) "", 0, PCRE2_UTF, &errc, &bad, NULL);
    pcre2_match_data* pmd = pcre2_match_data_create(1, NULL);
    int rc = pcre2_match(probe, (PCRE2_SPTR)text, len, 0, 0, pmd, NULL);
    bad = pcre2_get_startchar(pmd);
    pcre2_match_data_free(pmd);
    pcre2_code_free(probe);
    if (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21)
        fail_input("%s: not UTF-8 text (an invalid sequence at byte %zu)", name, (size_t)bad);
}

// Distinct pre-tokens (QWEN_SPLIT_REGEX) with their counts, deduplicated by a hash of their bytes.
static Word* pretokenize(const char* text, size_t len, const char* name, int* n_words) {
    int errc;
    bpe_check_text(text, len, name);
    PCRE2_SIZE erroff;
    pcre2_code* re = pcre2_compile((PCRE2_SPTR)QWEN_SPLIT_REGEX, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                                   &errc, &erroff, NULL);
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); // the interpreter matches the same where JIT is missing
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(re, NULL);
    int cap = 1024, nw = 0;
    Word* words = xmalloc(sizeof(Word) * cap);
    size_t n_slots = 1 << 16;
    int* slot = xcalloc(n_slots, sizeof(int)); // word index + 1, 0 empty
    Progress pr;
    progress_init(&pr, "gen: BPE pre-tokens (bytes)", (long)len);
    double last_line = pr.t0;
    PCRE2_SIZE pos = 0;
    while (pos < len && pcre2_match(re, (PCRE2_SPTR)text, len, pos, PCRE2_NO_UTF_CHECK, md, NULL) >= 0) {
        PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        PCRE2_SIZE next = ov[1];
        if (ov[1] == ov[0]) { // (the pattern matches no empty string) step over one character
            next = ov[0] + 1;
            while (next < len && ((unsigned char)text[next] & 0xC0) == 0x80) next++;
        } else {
            int n = (int)(ov[1] - ov[0]);
            const unsigned char* p = (const unsigned char*)text + ov[0];
            uint64_t h = 0xcbf29ce484222325ull; // FNV-1a
            for (int k = 0; k < n; k++) h = (h ^ p[k]) * 0x100000001b3ull;
            size_t at = (size_t)h & (n_slots - 1);
            while (slot[at] && (words[slot[at] - 1].len != n || memcmp(words[slot[at] - 1].src, p, n)))
                at = (at + 1) & (n_slots - 1);
            if (slot[at]) {
                words[slot[at] - 1].count++;
            } else {
                if (nw == cap) words = xrealloc(words, sizeof(Word) * (cap *= 2));
                words[nw] = (Word){.src = p, .len = n, .sym = xmalloc(sizeof(int) * n), .n = n, .count = 1};
                for (int k = 0; k < n; k++) words[nw].sym[k] = p[k];
                slot[at] = ++nw;
                if (2 * (size_t)nw > n_slots) { // grow: re-insert every word
                    free(slot);
                    slot = xcalloc(n_slots *= 2, sizeof(int));
                    for (int w = 0; w < nw; w++) {
                        uint64_t g = 0xcbf29ce484222325ull;
                        for (int k = 0; k < words[w].len; k++) g = (g ^ words[w].src[k]) * 0x100000001b3ull;
                        size_t b = (size_t)g & (n_slots - 1);
                        while (slot[b]) b = (b + 1) & (n_slots - 1);
                        slot[b] = w + 1;
                    }
                }
            }
        }
        bpe_progress(&pr, (long)(next - pos), &last_line);
        pos = next;
    }
    progress_end(&pr);
    free(slot);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    *n_words = nw;
    return words;
}

// Greedy merges: the most frequent adjacent pair, ties to the smallest ids, until n_merges or no
// pair occurs twice. Incremental: each merge recounts only the words holding its pair.
int bpe_learn(const char* text, size_t len, const char* name, int n_merges, int (*merges)[2]) {
    int nw;
    Word* words = pretokenize(text, len, name, &nw);
    PairStats ps = {0};
    for (int w = 0; w < nw; w++)
        for (int k = 0; k + 1 < words[w].n; k++)
            pairs_add(&ps, words[w].sym[k], words[w].sym[k + 1], words[w].count, w, -1, 1);
    for (int i = 0; i < ps.n; i++) heap_push(&ps, i);
    ps.n_touched = 0;
    Progress pr;
    progress_init(&pr, "gen: BPE merges", n_merges);
    double last_line = pr.t0;
    int done = 0;
    for (; done < n_merges; done++) {
        while (ps.n_heap && ps.heap[0].count != ps.p[ps.heap[0].pair].count) heap_pop(&ps); // stale
        if (!ps.n_heap || ps.heap[0].count < 2) break;
        int best = ps.heap[0].pair, ba = ps.p[best].a, bb = ps.p[best].b, id = 256 + done;
        heap_pop(&ps);
        merges[done][0] = ba;
        merges[done][1] = bb;
        int* where = ps.p[best].where; // (a, b) never forms again: its list is not appended to
        int n_where = ps.p[best].n_where;
        for (int i = 0; i < n_where; i++) {
            Word* wd = &words[where[i]];
            if (wd->stamp == done + 1) continue;
            wd->stamp = done + 1;
            int has = 0;
            for (int k = 0; k + 1 < wd->n && !has; k++) has = wd->sym[k] == ba && wd->sym[k + 1] == bb;
            if (!has) continue;
            for (int k = 0; k + 1 < wd->n; k++)
                pairs_add(&ps, wd->sym[k], wd->sym[k + 1], -wd->count, 0, done, 0);
            int o = 0;
            for (int k = 0; k < wd->n; k++) {
                if (k + 1 < wd->n && wd->sym[k] == ba && wd->sym[k + 1] == bb) {
                    wd->sym[o++] = id;
                    k++;
                } else {
                    wd->sym[o++] = wd->sym[k];
                }
            }
            wd->n = o;
            // Only pairs holding the new symbol are new to this word; the others keep their entry.
            for (int k = 0; k + 1 < wd->n; k++)
                pairs_add(&ps, wd->sym[k], wd->sym[k + 1], wd->count, where[i], done,
                          wd->sym[k] == id || wd->sym[k + 1] == id);
        }
        free(ps.p[best].where);
        ps.p[best].where = NULL;
        ps.p[best].n_where = ps.p[best].cap_where = 0;
        for (int i = 0; i < ps.n_touched; i++) // renew the entries of the pairs this merge changed
            if (ps.p[ps.touched[i]].count > 0) heap_push(&ps, ps.touched[i]);
        ps.n_touched = 0;
        bpe_progress(&pr, 1, &last_line);
    }
    progress_end(&pr);
    for (int i = 0; i < ps.n; i++) free(ps.p[i].where);
    free(ps.p);
    free(ps.slot);
    free(ps.heap);
    free(ps.touched);
    for (int w = 0; w < nw; w++) free(words[w].sym);
    free(words);
    return done;
}

void bpe_train_write(const char* path, const char* text, size_t len, const char* name, int vocab_size) {
    int n_merges = vocab_size - 256 - 3;
    if (n_merges < 0) fail_input("gen: vocab %d is too small for a byte-level tokenizer (>= 259)", vocab_size);
    // Symbol strings in the byte-level alphabet.
    char** strs = xcalloc(vocab_size, sizeof(char*));
    int nb = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        int cp = printable ? b : 256 + nb++;
        strs[b] = xcalloc(8, 1);
        utf8proc_encode_char(cp, (utf8proc_uint8_t*)strs[b]);
    }
    int(*merges)[2] = xmalloc(sizeof(int[2]) * (n_merges ? n_merges : 1));
    int done = bpe_learn(text, len, name, n_merges, merges);
    for (int i = 0; i < done; i++) {
        const char *x = strs[merges[i][0]], *y = strs[merges[i][1]];
        strs[256 + i] = xmalloc(strlen(x) + strlen(y) + 1);
        strcpy(strs[256 + i], x);
        strcat(strs[256 + i], y);
    }
    int n_ids = 256 + done;
    // Pad the vocabulary with unused symbols so the ids of the specials are vocab_size - 3 .. - 1.
    json_t* vocab = json_object();
    for (int i = 0; i < n_ids; i++) json_object_set_new(vocab, strs[i], json_integer(i));
    for (int i = n_ids; i < vocab_size - 3; i++) {
        char pad[32];
        snprintf(pad, sizeof(pad), "<|unused_%d|>", i);
        json_object_set_new(vocab, pad, json_integer(i));
    }
    json_t* jm = json_array();
    for (int i = 0; i < done; i++)
        json_array_append_new(jm, json_pack("[s,s]", strs[merges[i][0]], strs[merges[i][1]]));
    const char* specials[3] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    json_t* added = json_array();
    for (int i = 0; i < 3; i++)
        json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", vocab_size - 3 + i,
                                               "content", specials[i], "single_word", 0, "lstrip", 0, "rstrip",
                                               0, "normalized", 0, "special", 1));
    json_t* root = json_pack(
        "{s:s,s:n,s:n,s:o,s:{s:s},s:{s:s,s:[{s:s,s:{s:s},s:s,s:b},{s:s,s:b,s:b,s:b}]},s:n,s:{s:s,s:b,s:b,s:b},"
        "s:{s:s,s:n,s:n,s:s,s:s,s:b,s:b,s:b,s:o,s:o}}",
        "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer", "type", "NFC",
        "pre_tokenizer", "type", "Sequence", "pretokenizers", "type", "Split", "pattern", "Regex",
        QWEN_SPLIT_REGEX, "behavior", "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space", 0,
        "trim_offsets", 0, "use_regex", 0, "post_processor", "decoder", "type", "ByteLevel", "add_prefix_space",
        0, "trim_offsets", 0, "use_regex", 0, "model", "type", "BPE", "dropout", "unk_token",
        "continuing_subword_prefix", "", "end_of_word_suffix", "", "fuse_unk", 0, "byte_fallback", 0,
        "ignore_merges", 0, "vocab", vocab, "merges", jm);
    if (!root) fail_other("gen: cannot build tokenizer.json");
    OutFile o;
    out_open(&o, path);
    json_dumpf(root, o.f, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    out_close(&o);
    json_decref(root);
    free(merges);
    for (int i = 0; i < vocab_size; i++) free(strs[i]);
    free(strs);
}

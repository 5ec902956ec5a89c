#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include <jansson.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "../engine/util.h"
#include "../engine/input.h"

// ---- open-addressing hash maps ----
typedef struct {
    char* key;
    int len;
    int val;
} StrSlot;

typedef struct {
    StrSlot* s;
    size_t cap, n;
} StrMap;

static uint64_t fnv(const char* p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

static void strmap_init(StrMap* m, size_t want) {
    m->cap = 16;
    while (m->cap < want * 2) m->cap *= 2;
    m->s = xcalloc(m->cap, sizeof(StrSlot));
    m->n = 0;
}

static int strmap_get(const StrMap* m, const char* k, size_t n) {
    for (size_t i = fnv(k, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->s[i].key) return -1;
        if ((size_t)m->s[i].len == n && memcmp(m->s[i].key, k, n) == 0) return m->s[i].val;
    }
}

static void strmap_put(StrMap* m, const char* k, size_t n, int val) {
    for (size_t i = fnv(k, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->s[i].key) {
            m->s[i].key = xmalloc(n + 1);
            memcpy(m->s[i].key, k, n);
            m->s[i].key[n] = 0;
            m->s[i].len = (int)n;
            m->s[i].val = val;
            m->n++;
            return;
        }
        if ((size_t)m->s[i].len == n && memcmp(m->s[i].key, k, n) == 0) {
            m->s[i].val = val;
            return;
        }
    }
}

static void strmap_free(StrMap* m) {
    for (size_t i = 0; i < m->cap; i++) free(m->s[i].key);
    free(m->s);
}

typedef struct {
    uint64_t key; // (left id << 32) | right id, +1 so 0 means empty
    int rank, id;
} MergeSlot;

typedef struct {
    MergeSlot* s;
    size_t cap;
} MergeMap;

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static MergeSlot* merge_find(const MergeMap* m, int a, int b) {
    uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    for (size_t i = mix(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->s[i].key == k || m->s[i].key == 0) return &m->s[i];
    }
}

// ---- the tokenizer ----
typedef struct {
    char* content;
    int len, id;
} Added;

// Cache of pre-token -> ids: real text repeats words constantly.
typedef struct {
    StrMap map; // pre-token -> offset into ids
    int* ids;   // [count, id, id, ...] records
    size_t n, cap;
} Cache;

struct Tokenizer {
    StrMap vocab;
    int n_ids;
    char** id_str; // token string (byte-level alphabet, or added content)
    int* id_added; // 1 for added tokens (decoded verbatim)
    MergeMap merges;
    Added* added;
    int n_added;
    int nfc;
    pcre2_code* re;
    pcre2_match_data* md;
    pcre2_match_context* mctx; // a JIT stack larger than the 32 KiB default
    pcre2_jit_stack* jstack;
    int byte_id[256];
    uint8_t added_first[256]; // first bytes of added tokens: skip the scan elsewhere
    int unicode_byte[512];    // byte-level alphabet code point -> byte, -1 if none
    Cache cache;
    char* path; // tokenizer.json, for messages at encode time
};

// Ids above this are refused: far beyond any real vocabulary, and the id
// tables are sized by the largest id.
#define MAX_TOKEN_ID (1 << 24)

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to 256+k.
static void byte_alphabet(int* cp_of_byte) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        cp_of_byte[b] = printable ? b : 256 + n++;
    }
}

static int encode_cp(int cp, char* out) { return (int)utf8proc_encode_char(cp, (utf8proc_uint8_t*)out); }

static const char* jstr(json_t* o, const char* k) {
    json_t* v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static void check_supported(const char* path, json_t* root) {
    json_t* model = json_object_get(root, "model");
    const char* mt = jstr(model, "type");
    if (!mt || strcmp(mt, "BPE") != 0)
        fail_input("%s: model.type '%s' is not supported (only byte-level BPE, as Qwen2/Qwen3)", path,
                   mt ? mt : "(missing)");
    if (json_is_true(json_object_get(model, "byte_fallback")))
        fail_input("%s: model.byte_fallback is not supported", path);
    const char* pre = jstr(model, "continuing_subword_prefix");
    const char* suf = jstr(model, "end_of_word_suffix");
    if ((pre && *pre) || (suf && *suf))
        fail_input("%s: model.continuing_subword_prefix / end_of_word_suffix are not supported", path);
    if (json_is_true(json_object_get(model, "ignore_merges")))
        fail_input("%s: model.ignore_merges is not supported", path);
    json_t* norm = json_object_get(root, "normalizer");
    if (norm && !json_is_null(norm) && !(jstr(norm, "type") && strcmp(jstr(norm, "type"), "NFC") == 0))
        fail_input("%s: normalizer type '%s' is not supported (NFC or none)", path,
                   jstr(norm, "type") ? jstr(norm, "type") : "?");
    json_t* dec = json_object_get(root, "decoder");
    if (dec && !json_is_null(dec) && !(jstr(dec, "type") && strcmp(jstr(dec, "type"), "ByteLevel") == 0))
        fail_input("%s: decoder type '%s' is not supported (ByteLevel)", path,
                   jstr(dec, "type") ? jstr(dec, "type") : "?");
}

// The pre-tokenizer must be Sequence[Split(regex, Isolated), ByteLevel(use_regex false)].
static const char* split_regex(const char* path, json_t* root) {
    json_t* pt = json_object_get(root, "pre_tokenizer");
    const char* type = jstr(pt, "type");
    json_t* seq = json_object_get(pt, "pretokenizers");
    if (!type || strcmp(type, "Sequence") != 0 || json_array_size(seq) != 2)
        fail_input("%s: pre_tokenizer '%s' is not supported (Sequence of Split and ByteLevel, as Qwen)", path,
                   type ? type : "(missing)");
    json_t* sp = json_array_get(seq, 0);
    json_t* bl = json_array_get(seq, 1);
    if (!jstr(sp, "type") || strcmp(jstr(sp, "type"), "Split") != 0)
        fail_input("%s: pre_tokenizer.pretokenizers[0] must be Split", path);
    if (!jstr(sp, "behavior") || strcmp(jstr(sp, "behavior"), "Isolated") != 0 ||
        json_is_true(json_object_get(sp, "invert")))
        fail_input("%s: pre_tokenizer Split behavior must be Isolated, not inverted", path);
    const char* re = jstr(json_object_get(sp, "pattern"), "Regex");
    if (!re) fail_input("%s: pre_tokenizer Split pattern must be a Regex", path);
    if (!jstr(bl, "type") || strcmp(jstr(bl, "type"), "ByteLevel") != 0 ||
        json_is_true(json_object_get(bl, "use_regex")) || json_is_true(json_object_get(bl, "add_prefix_space")))
        fail_input("%s: pre_tokenizer.pretokenizers[1] must be ByteLevel without regex or prefix space", path);
    return re;
}

static void load_vocab(Tokenizer* t, const char* path, json_t* model, json_t* added) {
    json_t* vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) fail_input("%s: model.vocab missing or not an object", path);
    t->n_ids = 0;
    const char* k;
    json_t* v;
    json_object_foreach(vocab, k, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= MAX_TOKEN_ID) {
            char clip[CLIP_BUF];
            fail_input("%s: model.vocab['%s'] is not a valid id in [0, %d)", path, str_clip(clip, k),
                       MAX_TOKEN_ID);
        }
        if (json_integer_value(v) + 1 > t->n_ids) t->n_ids = (int)json_integer_value(v) + 1;
    }
    size_t ai;
    json_array_foreach(added, ai, v) {
        json_t* id = json_object_get(v, "id");
        if (!json_is_integer(id) || !jstr(v, "content"))
            fail_input("%s: added_tokens[%zu] needs id and content", path, ai);
        json_int_t x = json_integer_value(id);
        if (x < 0 || x >= MAX_TOKEN_ID)
            fail_input("%s: added_tokens[%zu].id = %lld is out of range [0, %d)", path, ai, (long long)x,
                       MAX_TOKEN_ID);
        if (!*jstr(v, "content")) fail_input("%s: added_tokens[%zu].content is empty", path, ai);
        if (x + 1 > t->n_ids) t->n_ids = (int)x + 1;
    }
    t->id_str = xcalloc(t->n_ids, sizeof(char*));
    t->id_added = xcalloc(t->n_ids, sizeof(int));
    strmap_init(&t->vocab, json_object_size(vocab));
    json_object_foreach(vocab, k, v) {
        strmap_put(&t->vocab, k, strlen(k), (int)json_integer_value(v));
        free(t->id_str[json_integer_value(v)]); // two strings with one id: the last wins
        t->id_str[json_integer_value(v)] = xstrdup(k);
    }
    t->n_added = (int)json_array_size(added);
    t->added = xcalloc(t->n_added ? t->n_added : 1, sizeof(Added));
    json_array_foreach(added, ai, v) {
        int id = (int)json_integer_value(json_object_get(v, "id"));
        t->added[ai].content = xstrdup(jstr(v, "content"));
        t->added[ai].len = (int)strlen(t->added[ai].content);
        t->added[ai].id = id;
        free(t->id_str[id]);
        t->id_str[id] = xstrdup(t->added[ai].content);
        t->id_added[id] = 1;
        t->added_first[(unsigned char)t->added[ai].content[0]] = 1;
    }
}

// One merge as its two halves: ["a", "b"] or "a b" (split at the first
// space, into heap copies: merge strings are untrusted and any length).
static void merge_halves(const char* path, size_t i, json_t* m, char** a, char** b) {
    const char* s;
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = xstrdup(json_string_value(json_array_get(m, 0)));
        *b = xstrdup(json_string_value(json_array_get(m, 1)));
    } else if (json_is_string(m) && strchr(s = json_string_value(m), ' ')) {
        size_t la = (size_t)(strchr(s, ' ') - s);
        *a = xmalloc(la + 1);
        memcpy(*a, s, la);
        (*a)[la] = 0;
        *b = xstrdup(s + la + 1);
    } else {
        fail_input("%s: model.merges[%zu] is neither [a, b] nor \"a b\"", path, i);
    }
}

static void load_merges(Tokenizer* t, const char* path, json_t* model) {
    json_t* merges = json_object_get(model, "merges");
    if (!json_is_array(merges)) fail_input("%s: model.merges missing or not a list", path);
    size_t n = json_array_size(merges);
    if (n >= (size_t)INT32_MAX) fail_input("%s: model.merges has %zu entries", path, n);
    t->merges.cap = 16;
    while (t->merges.cap < 2 * n + 2) t->merges.cap *= 2;
    t->merges.s = xcalloc(t->merges.cap, sizeof(MergeSlot));
    size_t i;
    json_t* m;
    json_array_foreach(merges, i, m) {
        char *a, *b;
        merge_halves(path, i, m, &a, &b);
        size_t la = strlen(a), lb = strlen(b);
        char* joined = xmalloc(la + lb + 1);
        memcpy(joined, a, la);
        memcpy(joined + la, b, lb + 1);
        int ia = strmap_get(&t->vocab, a, la), ib = strmap_get(&t->vocab, b, lb);
        int ij = strmap_get(&t->vocab, joined, la + lb);
        if (ia < 0 || ib < 0 || ij < 0) {
            char ca[CLIP_BUF], cb[CLIP_BUF];
            fail_input("%s: model.merges[%zu] ('%s' '%s') uses tokens not in the vocab", path, i,
                       str_clip(ca, a), str_clip(cb, b));
        }
        free(a);
        free(b);
        free(joined);
        MergeSlot* s = merge_find(&t->merges, ia, ib);
        if (s->key) continue; // duplicate merge: the first (lowest rank) wins
        s->key = (((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib) + 1;
        s->rank = (int)i;
        s->id = ij;
    }
}

Tokenizer* tok_load(const char* path_in) {
    struct stat st;
    char* path = NULL;
    if (stat(path_in, &st) == 0 && S_ISDIR(st.st_mode))
        path = path_join(path_in, "tokenizer.json");
    else
        path = xstrdup(path_in);
    json_t* root = input_json(path, "tokenizer.json", 0);
    if (!json_is_object(root)) fail_input("%s: tokenizer.json is not a JSON object", path);
    check_supported(path, root);
    const char* re = split_regex(path, root);
    Tokenizer* t = xcalloc(1, sizeof(Tokenizer));
    t->path = xstrdup(path);
    json_t* norm = json_object_get(root, "normalizer");
    t->nfc = norm && !json_is_null(norm);
    json_t* added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added))
        fail_input("%s: added_tokens must be a list", path);
    json_t* none = json_array();
    load_vocab(t, path, json_object_get(root, "model"), json_is_array(added) ? added : none);
    json_decref(none);
    load_merges(t, path, json_object_get(root, "model"));
    // The byte alphabet is checked before the regex is compiled: nothing after
    // the compile fails, so no PCRE2 object is left behind by a bad file.
    int cp_of_byte[256];
    byte_alphabet(cp_of_byte);
    for (int i = 0; i < 512; i++) t->unicode_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        char s[8];
        int n = encode_cp(cp_of_byte[b], s);
        t->byte_id[b] = strmap_get(&t->vocab, s, n);
        if (t->byte_id[b] < 0) fail_input("%s: model.vocab lacks the byte-level symbol for byte %d", path, b);
        t->unicode_byte[cp_of_byte[b]] = b;
    }
    int errcode;
    PCRE2_SIZE erroff;
    t->re =
        pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &errcode, &erroff, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof(msg));
        fail_input("%s: pre_tokenizer regex does not compile at offset %zu: %s", path, (size_t)erroff,
                   (char*)msg);
    }
    pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE);
    t->md = pcre2_match_data_create_from_pattern(t->re, NULL);
    t->mctx = pcre2_match_context_create(NULL);
    t->jstack = pcre2_jit_stack_create(32 << 10, 8 << 20, NULL);
    if (!t->md || !t->mctx || !t->jstack) fail_other("out of memory creating the regex match data");
    pcre2_jit_stack_assign(t->mctx, NULL, t->jstack);
    strmap_init(&t->cache.map, 1 << 16);
    t->cache.cap = 1 << 20;
    t->cache.ids = xmalloc(sizeof(int) * t->cache.cap);
    json_decref(root);
    free(path);
    return t;
}

void tok_free(Tokenizer* t) {
    strmap_free(&t->vocab);
    strmap_free(&t->cache.map);
    for (int i = 0; i < t->n_ids; i++) free(t->id_str[i]);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->id_str);
    free(t->id_added);
    free(t->added);
    free(t->merges.s);
    free(t->cache.ids);
    pcre2_match_data_free(t->md);
    pcre2_match_context_free(t->mctx);
    pcre2_jit_stack_free(t->jstack);
    pcre2_code_free(t->re);
    free(t->path);
    free(t);
}

int tok_vocab_size(const Tokenizer* t) { return t->n_ids; }

int tok_added_id(const Tokenizer* t, const char* content) {
    for (int i = 0; i < t->n_added; i++)
        if (strcmp(t->added[i].content, content) == 0) return t->added[i].id;
    return -1;
}

void idvec_push(IdVec* v, int id) {
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 1024;
        v->ids = xrealloc(v->ids, size_mul(sizeof(int), v->cap, "token ids"));
    }
    v->ids[v->n++] = id;
}

void idvec_free(IdVec* v) {
    free(v->ids);
    memset(v, 0, sizeof(*v));
}

// ---- BPE over one pre-token ----
typedef struct {
    int rank, pos, a, b;
} HeapItem;

static int heap_less(const HeapItem* x, const HeapItem* y) {
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static void heap_push(HeapItem* h, int* n, HeapItem it) {
    int i = (*n)++;
    h[i] = it;
    while (i > 0 && heap_less(&h[i], &h[(i - 1) / 2])) {
        HeapItem tmp = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = tmp;
        i = (i - 1) / 2;
    }
}

static HeapItem heap_pop(HeapItem* h, int* n) {
    HeapItem top = h[0];
    h[0] = h[--(*n)];
    for (int i = 0;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && heap_less(&h[l], &h[m])) m = l;
        if (r < *n && heap_less(&h[r], &h[m])) m = r;
        if (m == i) break;
        HeapItem tmp = h[i];
        h[i] = h[m];
        h[m] = tmp;
        i = m;
    }
    return top;
}

static void push_pair(const Tokenizer* t, HeapItem* h, int* nh, const int* id, int pos, int next) {
    if (next < 0) return;
    MergeSlot* s = merge_find(&t->merges, id[pos], id[next]);
    if (s->key) heap_push(h, nh, (HeapItem){s->rank, pos, id[pos], id[next]});
}

static void bpe(const Tokenizer* t, const unsigned char* p, int n, IdVec* out) {
    int stack_ids[64], stack_nx[64], stack_pv[64];
    HeapItem stack_h[128];
    int* id = n <= 64 ? stack_ids : xmalloc(sizeof(int) * n);
    int* nx = n <= 64 ? stack_nx : xmalloc(sizeof(int) * n);
    int* pv = n <= 64 ? stack_pv : xmalloc(sizeof(int) * n);
    HeapItem* h = n <= 64 ? stack_h : xmalloc(sizeof(HeapItem) * 2 * n);
    int nh = 0;
    for (int i = 0; i < n; i++) {
        id[i] = t->byte_id[p[i]];
        nx[i] = i + 1 < n ? i + 1 : -1;
        pv[i] = i - 1;
    }
    for (int i = 0; i + 1 < n; i++) push_pair(t, h, &nh, id, i, i + 1);
    while (nh > 0) {
        HeapItem it = heap_pop(h, &nh);
        int pos = it.pos, nxt = nx[pos];
        // Stale entries: a neighbour changed since the pair was pushed.
        if (id[pos] < 0 || nxt < 0 || id[pos] != it.a || id[nxt] != it.b) continue;
        id[pos] = merge_find(&t->merges, it.a, it.b)->id;
        id[nxt] = -1;
        nx[pos] = nx[nxt];
        if (nx[pos] >= 0) pv[nx[pos]] = pos;
        if (pv[pos] >= 0) push_pair(t, h, &nh, id, pv[pos], pos);
        push_pair(t, h, &nh, id, pos, nx[pos]);
    }
    for (int i = 0; i >= 0; i = nx[i]) idvec_push(out, id[i]);
    if (n > 64) {
        free(id);
        free(nx);
        free(pv);
        free(h);
    }
}

static void encode_piece(Tokenizer* t, const char* p, size_t n, IdVec* out) {
    if (n == 0) return;
    Cache* c = &t->cache;
    int off = n <= 256 ? strmap_get(&c->map, p, n) : -1;
    if (off >= 0) {
        for (int i = 0; i < c->ids[off]; i++) idvec_push(out, c->ids[off + 1 + i]);
        return;
    }
    size_t start = out->n;
    bpe(t, (const unsigned char*)p, (int)n, out);
    size_t k = out->n - start;
    if (n <= 256 && c->n + k + 1 <= c->cap && c->map.n * 2 < c->map.cap) {
        c->ids[c->n] = (int)k;
        memcpy(c->ids + c->n + 1, out->ids + start, sizeof(int) * k);
        strmap_put(&c->map, p, n, (int)c->n);
        c->n += k + 1;
    }
}

// A match error is not "no match": the text would be tokenized wrongly. Every one comes from the
// tokenizer's regex, limits hit included (a pattern that backtracks catastrophically, such as
// "(.*)*x", runs into PCRE2's match limit on ordinary text): bad input, exit 2.
static void match_failed(const Tokenizer* t, int rc, size_t pos) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof(msg));
    if (rc == PCRE2_ERROR_NOMEMORY) fail_other("%s: out of memory matching the pre_tokenizer regex", t->path);
    const char* why =
        rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT ||
                rc == PCRE2_ERROR_JIT_STACKLIMIT
            ? " (the pattern backtracks too much; the tokenizer's regex is at fault, not the text)"
            : "";
    fail_input(
        "%s: pre_tokenizer.pretokenizers[0].pattern.Regex failed at text byte %zu: %s (PCRE2 error %d)%s",
        t->path, pos, (char*)msg, rc, why);
}

// A segment with no added tokens: NFC, regex split, byte-level BPE per piece.
static void encode_segment(Tokenizer* t, const char* s, size_t n, IdVec* out) {
    if (n == 0) return;
    char* norm = NULL;
    if (t->nfc) {
        // NFC only changes text with combining marks or compatibility forms; skip pure ASCII.
        int ascii = 1;
        for (size_t i = 0; i < n && ascii; i++) ascii = (unsigned char)s[i] < 0x80;
        if (!ascii) {
            utf8proc_uint8_t* r = NULL;
            utf8proc_ssize_t rl = utf8proc_map((const utf8proc_uint8_t*)s, (utf8proc_ssize_t)n, &r,
                                               UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (rl < 0) fail_other("utf8proc: %s", utf8proc_errmsg(rl));
            norm = (char*)r;
            s = norm;
            n = (size_t)rl;
        }
    }
    PCRE2_SIZE pos = 0;
    while (pos < n) {
        int rc = pcre2_match(t->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, t->md, t->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) {
            encode_piece(t, s + pos, n - pos, out); // trailing gap (Isolated keeps it)
            break;
        }
        if (rc < 0) match_failed(t, rc, pos);
        PCRE2_SIZE* ov = pcre2_get_ovector_pointer(t->md);
        if (ov[0] > pos) encode_piece(t, s + pos, ov[0] - pos, out);
        if (ov[1] == ov[0]) { // empty match: step one character
            size_t step = 1;
            while (ov[0] + step < n && ((unsigned char)s[ov[0] + step] & 0xC0) == 0x80) step++;
            encode_piece(t, s + ov[0], step, out);
            pos = ov[0] + step;
            continue;
        }
        encode_piece(t, s + ov[0], ov[1] - ov[0], out);
        pos = ov[1];
    }
    free(norm);
}

static void check_utf8(const char* s, size_t n, const char* src, size_t base) {
    size_t i = 0;
    while (i < n) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t*)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k < 0) fail_input("%s: invalid UTF-8 at byte offset %zu", src ? src : "text", base + i);
        i += (size_t)k;
    }
}

void tok_encode(Tokenizer* t, const char* s, size_t n, IdVec* out, const char* src, size_t base) {
    check_utf8(s, n, src, base);
    // Added tokens first, leftmost-longest, on the raw text (they are not normalized).
    size_t seg = 0, i = 0;
    while (i < n) {
        int best = -1, blen = 0;
        if (t->added_first[(unsigned char)s[i]]) {
            for (int a = 0; a < t->n_added; a++) {
                int L = t->added[a].len;
                if (L > blen && (size_t)L <= n - i && memcmp(s + i, t->added[a].content, L) == 0)
                    best = a, blen = L;
            }
        }
        if (best < 0) {
            i++;
            continue;
        }
        encode_segment(t, s + seg, i - seg, out);
        idvec_push(out, t->added[best].id);
        i += blen;
        seg = i;
    }
    encode_segment(t, s + seg, n - seg, out);
}

char* tok_decode(const Tokenizer* t, const int* ids, size_t n, size_t* len) {
    size_t cap = 64 + n * 8, k = 0;
    char* out = xmalloc(cap);
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids || !t->id_str[ids[i]])
            fail_input("decode: id %d is not in the vocabulary", ids[i]);
        const char* s = t->id_str[ids[i]];
        size_t sl = strlen(s);
        if (k + sl + 8 > cap) {
            cap = 2 * (k + sl + 8);
            out = xrealloc(out, cap);
        }
        if (t->id_added[ids[i]]) {
            memcpy(out + k, s, sl);
            k += sl;
            continue;
        }
        for (size_t j = 0; j < sl;) {
            utf8proc_int32_t cp;
            utf8proc_ssize_t r =
                utf8proc_iterate((const utf8proc_uint8_t*)s + j, (utf8proc_ssize_t)(sl - j), &cp);
            if (r <= 0) break;
            j += (size_t)r;
            out[k++] = (char)(cp >= 0 && cp < 512 && t->unicode_byte[cp] >= 0 ? t->unicode_byte[cp] : '?');
        }
    }
    out[k] = 0;
    if (len) *len = k;
    return out;
}

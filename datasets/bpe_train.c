#define PCRE2_CODE_UNIT_WIDTH 8
#include "bpe_train.h"

#include <jansson.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "../engine/util.h"

typedef struct {
    int* sym; // symbol ids of one distinct pre-token
    int n;
    long count;
} Word;

static char* sym_str(char** strs, int id) { return strs[id]; }

void bpe_train_write(const char* path, const char* text, size_t len, int vocab_size) {
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
    // Distinct pre-tokens with counts (linear scan dedupe keeps this short; the corpus is small).
    int errc;
    PCRE2_SIZE erroff;
    pcre2_code* re = pcre2_compile((PCRE2_SPTR)QWEN_SPLIT_REGEX, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                                   &errc, &erroff, NULL);
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(re, NULL);
    int cap = 1024, nw = 0;
    Word* words = xmalloc(sizeof(Word) * cap);
    PCRE2_SIZE pos = 0;
    while (pos < len && pcre2_match(re, (PCRE2_SPTR)text, len, pos, 0, md, NULL) >= 0) {
        PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        if (ov[1] == ov[0]) {
            pos = ov[0] + 1;
            continue;
        }
        int n = (int)(ov[1] - ov[0]);
        const unsigned char* p = (const unsigned char*)text + ov[0];
        int found = -1;
        for (int w = 0; w < nw && found < 0; w++) {
            if (words[w].n != n) continue;
            int same = 1;
            for (int k = 0; k < n && same; k++) same = words[w].sym[k] == p[k];
            if (same) found = w;
        }
        if (found >= 0) {
            words[found].count++;
        } else {
            if (nw == cap) words = realloc(words, sizeof(Word) * (cap *= 2));
            words[nw].sym = xmalloc(sizeof(int) * n);
            for (int k = 0; k < n; k++) words[nw].sym[k] = p[k];
            words[nw].n = n;
            words[nw].count = 1;
            nw++;
        }
        pos = ov[1];
    }
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    // Greedy merges: the most frequent adjacent pair, ties to the smallest ids.
    int(*merges)[2] = xmalloc(sizeof(int[2]) * (n_merges ? n_merges : 1));
    int done = 0;
    long* counts = xmalloc(sizeof(long) * (size_t)vocab_size * vocab_size);
    for (; done < n_merges; done++) {
        int V = 256 + done;
        memset(counts, 0, sizeof(long) * (size_t)V * V);
        for (int w = 0; w < nw; w++)
            for (int k = 0; k + 1 < words[w].n; k++)
                counts[(size_t)words[w].sym[k] * V + words[w].sym[k + 1]] += words[w].count;
        long best = 0;
        int ba = -1, bb = -1;
        for (int a = 0; a < V; a++)
            for (int b = 0; b < V; b++)
                if (counts[(size_t)a * V + b] > best) best = counts[(size_t)a * V + b], ba = a, bb = b;
        if (best < 2) break;
        int id = V;
        merges[done][0] = ba;
        merges[done][1] = bb;
        strs[id] = xmalloc(strlen(strs[ba]) + strlen(strs[bb]) + 1);
        strcpy(strs[id], strs[ba]);
        strcat(strs[id], strs[bb]);
        for (int w = 0; w < nw; w++) {
            int o = 0;
            for (int k = 0; k < words[w].n; k++) {
                if (k + 1 < words[w].n && words[w].sym[k] == ba && words[w].sym[k + 1] == bb) {
                    words[w].sym[o++] = id;
                    k++;
                } else {
                    words[w].sym[o++] = words[w].sym[k];
                }
            }
            words[w].n = o;
        }
    }
    free(counts);
    int n_ids = 256 + done;
    // Pad the vocabulary with unused symbols so the ids of the specials are vocab_size - 3 .. - 1.
    json_t* vocab = json_object();
    for (int i = 0; i < n_ids; i++) json_object_set_new(vocab, sym_str(strs, i), json_integer(i));
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
    for (int w = 0; w < nw; w++) free(words[w].sym);
    free(words);
    free(merges);
    for (int i = 0; i < vocab_size; i++) free(strs[i]);
    free(strs);
}

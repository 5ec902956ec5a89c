// Byte-level BPE tokenizer of the Qwen2/Qwen3 kind, read from a Hugging Face
// tokenizer.json: added/special tokens matched first, NFC (utf8proc), the
// Split pre-tokenizer regex (PCRE2, UTF + Unicode properties), ByteLevel,
// then BPE merges by rank with a heap over a linked list of symbols.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct Tokenizer Tokenizer;

typedef struct {
    int* ids;
    size_t n, cap;
} IdVec;

// path is a tokenizer.json or a folder holding one. Exits 2 naming the
// unsupported part for tokenizers of another kind.
Tokenizer* tok_load(const char* path);
void tok_free(Tokenizer* t);
// Appends the ids of text[0..len) to out. Invalid UTF-8 exits 2 naming the
// byte offset (plus base_offset, so callers can report file offsets) and src.
void tok_encode(Tokenizer* t, const char* text, size_t len, IdVec* out, const char* src, size_t base_offset);
// Decodes ids to bytes (malloc'd, NUL-terminated; *len gets the length).
char* tok_decode(const Tokenizer* t, const int* ids, size_t n, size_t* len);
int tok_vocab_size(const Tokenizer* t);
// Id of an added token by content, or -1.
int tok_added_id(const Tokenizer* t, const char* content);
void idvec_push(IdVec* v, int id);
void idvec_free(IdVec* v);

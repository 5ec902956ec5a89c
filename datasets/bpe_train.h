// A small byte-level BPE trainer: writes a Qwen-style tokenizer.json for
// generated demo checkpoints (vocab = 256 bytes + merges + special tokens).
#pragma once
#include <stddef.h>

#define QWEN_SPLIT_REGEX                                                                                       \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "                                      \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"                                                             \
    "\\s+(?!\\S)|\\s+"

// Exit 2 naming `name` (the corpus file) and the byte when text is not UTF-8.
void bpe_check_text(const char* text, size_t len, const char* name);

// Learns up to n_merges merges (pairs of symbol ids; byte b is id b, merge i makes id 256 + i) from
// UTF-8 text: the most frequent adjacent pair within the pre-tokens of QWEN_SPLIT_REGEX, ties to the
// smallest ids, until no pair occurs twice. Returns how many it learned. Checks the text
// first (bpe_check_text).
int bpe_learn(const char* text, size_t len, const char* name, int n_merges, int (*merges)[2]);

// Learns vocab_size - 256 - 3 merges from text and writes path (atomically).
// The last three ids are <|endoftext|>, <|im_start|>, <|im_end|>.
void bpe_train_write(const char* path, const char* text, size_t len, const char* name, int vocab_size);

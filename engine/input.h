// JSON inputs, on the input policy of engine/util.h (README §1): config.json, tokenizer.json, the
// shard index, recipes, format files, score checkpoints, ... are each read whole through
// read_input (a regular file of at most MAX_JSON_BYTES, never a FIFO or device) and parsed with
// jansson from memory, so no JSON reader opens a file any other way.
#pragma once
#include <stddef.h>

#include "util.h"

struct json_t;
// Reads and parses path; exits 2 naming path and `what` when it cannot be read, is not a regular
// file, is over MAX_JSON_BYTES, or is not valid JSON (with the line and jansson's reason).
// jflags: jansson's decoding flags (JSON_REJECT_DUPLICATES, ...).
struct json_t* input_json(const char* path, const char* what, size_t jflags);
// input_json, but NULL (errno ENOENT) when the file does not exist.
struct json_t* input_json_opt(const char* path, const char* what, size_t jflags);

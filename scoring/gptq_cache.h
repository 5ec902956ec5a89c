// GPTQ weights kept between runs (README, "GPTQ"): --gptq-cache DIR holds one file per
// checkpoint + data + settings, DIR/gptq-<key>.bin, the key a hash of the linears' weights, the
// token ids, the formats' weight quantizers, the GPTQ options and what was quantized. A file that
// does not match its key, is truncated, fails its checksum or holds scales or codes its formats
// would not give (or is not a regular file: a FIFO or link is never opened) is ignored with a warning and
// recomputed (then replaced); a write that fails is a warning, never a failed run.
#pragma once
#include <stdint.h>

#include "../datasets/npy.h"
#include "../kernels/gptq.h"
#include "format.h"
#include "groups.h"

typedef struct {
    uint64_t hash;
} GptqCacheKey;

// FNV-1a over n bytes (8 at a time), continuing from h (start: 0xcbf29ce484222325): the key's hash
// and the file's checksum (tests/fuzz/fuzz_gptq_cache.c fixes checksums up with it).
uint64_t gptq_cache_hash(uint64_t h, const void* p, size_t n);

// mode: "scores" (every enabled linear of gs, per format) or a recipe's pipeline, "sequential" or
// "basic" ("-gpu" appended on the GPU: the linears choice names, choice[i] indexing fmts; nf is then
// 1 and fmts the recipe's formats). The mode is hashed first, so no two pipelines share a file.
void gptq_cache_key(GptqCacheKey* k, const char* mode, const Model* m, const TokenIds* ids, const Format* fmts,
                    int nf, const int* choice, const Groups* gs, const GptqOpts* o);
// Fills wq (nf, n_linears) from the cache file; 1 when found and valid, else 0 (wq untouched).
// fmts, choice and scales as gptq_cache_save took them: each entry must hold exactly the row scales
// and the code range they give. The file is read as any input (engine/util.h: never a FIFO, device
// or symbolic link); anything wrong with it is a warning and 0, never an error.
int gptq_cache_load(const char* dir, const GptqCacheKey* k, const Model* m, float** wq, int nf,
                    const Format* fmts, const int* choice, float* const* scales);
// Writes wq (nf, n_linears; NULL entries skipped) as int8 codes and per-row scales; entry (f, i)
// was quantized with fmts[choice ? choice[i] : f] on scales[i] (n_linears, one recipe), or on RTN's
// scales of the original rows when scales is NULL.
void gptq_cache_save(const char* dir, const GptqCacheKey* k, const Model* m, float** wq, int nf,
                     const Format* fmts, const int* choice, float* const* scales);

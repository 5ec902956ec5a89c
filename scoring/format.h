// Candidate formats read from JSON in ModelOpt's quant_cfg dialect (README §4).
#pragma once
#include <jansson.h>
#include <stdint.h>

#include "../kernels/quant.h"

// The compact JSON text of a format file as loaded; every field is validated, so it stays small.
#define FORMAT_DEF_MAX 1024

typedef struct {
    char name[64];            // file stem, e.g. "w4a8"; unique among the formats of one run
    char path[512];           // where the definition came from: its file, or the scores / recipe file and field
    int builtin;              // named by stem (configs/formats/NAME.json), not by a path
    char def[FORMAT_DEF_MAX]; // {"quant_cfg": ..., "algorithm": ...} as loaded: what outputs store
    int w_enable;
    QuantSpec w; // per output channel, static
    int in_enable;
    QuantSpec in; // per token, dynamic
    int bits;     // smallest num_bits among enabled quantizers, E + M + 1 for floats (ModelOpt's cost)
    // A KV-cache format (README §4): ModelOpt's "*[kv]_bmm_quantizer" alone, no weight or input quantizer.
    // It applies to a full-attention layer's K and V as its cache stores them (K after k_norm and RoPE).
    int kv;
    QuantSpec kvq; // E4M3 with one per-tensor scale (block 0), or NVFP4 blocks of 16 along head_dim
} Format;

// The quantizer key of a KV-cache format, as ModelOpt's FP8_KV_CFG / NVFP4_KV_CFG spell it.
#define KV_QUANTIZER_KEY "*[kv]_bmm_quantizer"

// The storage bits of n cached K or V values under KV-cache format f (NULL: bf16, 16 n): E4M3 8 n; NVFP4
// 4 n + 8 per block of 16 (its E4M3 block scales; n a multiple of 16). The per-tensor fp32 scales a
// checkpoint stores (k_scale, v_scale) are format_kv_scale_bits.
int64_t format_kv_bits(const Format* f, int64_t n);
// The bits of the per-layer scale tensors a KV-cache format stores (fp32 k_scale and v_scale: 64), 0 for bf16.
int64_t format_kv_scale_bits(const Format* f);

// The true storage cost in bits of one weight (out, in) under f (README §7): its values plus their scales.
// Integer / E4M3 per channel: bits x out x in + 16 out (a bf16 scale per row); blocks along the input:
// bits x out x in + out x ceil(in / block) x scale bits (fp32 scales stored as bf16: 16; E4M3 and E8M0:
// 8). NVFP4's one fp32 global scale per tensor is left out (see README §7). A disabled weight quantizer
// stores bf16: 16 x out x in.
int64_t format_weight_bits(const Format* f, long out, long in);

// A format applies to a linear only when its blocks along the input (the weight's or the input's) divide
// the input width: a padded last block is what ModelOpt's fake quantization does, but vLLM and
// compressed-tensors cannot serve such a group, so search never offers it (README §5). Returns the
// block size that does not divide in, 0 when f applies.
int format_misfit_block(const Format* f, long in);

// NAME is a path to a .json file or the stem of configs/formats/NAME.json
// (looked up beside the autoq binary, then in the working directory).
// ct selects compressed-tensors numerics. Exits 2 naming the file and field.
void format_load(Format* f, const char* name, int ct);
// Comma-separated list; returns the count. Two formats with one name exit 2.
int formats_load(Format* out, int max, const char* csv, int ct);
// The whole format as data, for scores and recipe files:
// {"name", "bits", "numerics", "definition": {"quant_cfg": ..., "algorithm": ...}}.
json_t* format_to_json(const Format* f);
// Rebuilds a format from format_to_json's record; `where` names the record in
// messages (e.g. "s.h5: /formats/definition[0]"). Exits 2 on any bad field.
void format_from_json(Format* f, const json_t* rec, const char* where);

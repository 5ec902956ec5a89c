// autoq quantize (search/quantize.c): a recipe applied to a checkpoint, written as llm-compressor saves it.
#pragma once
#include "../engine/model.h"
#include "../scoring/format.h"

// scales[i] (out) for each chosen linear (choice[i] >= 0; others untouched): the per-row scales its
// checkpoint stores, RTN's of the original row in the weight's dtype (bf16 for a BF16 tensor, as
// llm-compressor stores them). GPTQ quantizes on these, so that eval deploys what quantize writes.
// Per row, or per group of q.block values for a group format: (out, quantize_scale_cols) row-major.
void quantize_scales(float** scales, const Model* m, const Format* fmts, const int* choice);
// Scales per row of a weight (in columns) under weight quantizer q: 1, or one per group.
int quantize_scale_cols(QuantSpec q, int in);
// Round-to-nearest codes (out, in) of w on the stored scales sc, as compressed-tensors computes them on
// the checkpoint's dtype (bf: a bf16 quotient): int8 values, or E4M3 bytes for an FP8 format.
void quantize_codes(int8_t* codes, const float* w, int out, int in, const float* sc, QuantSpec q, int bf);
// The weight a checkpoint loads as: code x scale, in bf16 when bf (compressed-tensors multiplies in the
// scale's dtype).
void quantize_dequant(float* wq, const int8_t* codes, int out, int in, const float* sc, QuantSpec q, int bf);
// wq[i] for each chosen linear whose format quantize writes (quantize_writable): the weight the
// checkpoint quantize writes loads as, round-to-nearest on the stored scales; others stay NULL.
void quantize_deployed(float** wq, const Model* m, const Format* fmts, const int* choice);
// GPTQ's code x scale weights as the checkpoint loads them: rounded to bf16 for a bf16 weight.
void quantize_round_deployed(float** wq, const Model* m);
// Whether autoq quantize writes format f (README §10).
int quantize_writable(const Format* f);

// autoq quantize (search/quantize.c): a recipe applied to a checkpoint, written as llm-compressor saves it.
#pragma once
#include "../engine/model.h"
#include "../scoring/format.h"

// scales[i] (out) for each chosen linear (choice[i] >= 0; others untouched): the per-row scales its
// checkpoint stores, RTN's of the original row in the weight's dtype (bf16 for a BF16 tensor, as
// llm-compressor stores them). GPTQ quantizes on these, so that eval deploys what quantize writes.
void quantize_scales(float** scales, const Model* m, const Format* fmts, const int* choice);

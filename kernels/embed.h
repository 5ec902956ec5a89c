// Embedding lookup: h (M, D) = table[ids]. CPU embed.c, CUDA embed.cu.
#pragma once
#include <stdint.h>

#include "bf16.h"

#ifdef __cplusplus
extern "C" {
#endif

// h (M, D) fp32 = table (V, D)[ids (M)]
void embed_forward(float* h, const float* table, const int* ids, int M, int D);
void gpu_embed(float* h, const bf16_t* table, const int* ids, int M, int D); // table bf16

#ifdef __cplusplus
}
#endif

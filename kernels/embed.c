// Embedding gather on the CPU. CUDA twin: kernels/embed.cu.
#include <string.h>

#include "embed.h"

void embed_forward(float* h, const float* table, const int* ids, int M, int D) {
    for (int t = 0; t < M; t++) memcpy(h + (long)t * D, table + (long)ids[t] * D, sizeof(float) * D);
}

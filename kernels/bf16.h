// bf16 as the C side stores it: the raw 16 bits. CUDA sources cast to __nv_bfloat16.
#pragma once
#include <stdint.h>

typedef uint16_t bf16_t;

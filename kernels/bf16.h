// bf16 as the C side stores it: the raw 16 bits. CUDA sources cast to __nv_bfloat16.
#pragma once
#include <stdint.h>
#include <string.h>

typedef uint16_t bf16_t;

// The conversions, inline: generators and uploads run them over billions of values.
static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) { // round to nearest even
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40); // NaN stays NaN
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

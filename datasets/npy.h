// NumPy .npy files: token ids in (int32/int64, [N, T]) and float32 arrays out.
#pragma once
#include <stdint.h>

typedef struct {
    int n, t; // shape [N, T]
    int* ids; // (N, T)
} TokenIds;

// Reads a 2-D int32/int64 C-order array; exits 2 naming the file and field.
// Ids must lie in [0, vocab); vocab <= 0 skips that check.
void npy_read_ids(TokenIds* out, const char* path, int vocab);
void token_ids_free(TokenIds* t);
// Writes float32 array of the given shape (atomic). ndim 1..4.
void npy_write_f32(const char* path, const float* data, int ndim, const long* shape);
void npy_write_i32(const char* path, const int* data, int ndim, const long* shape);

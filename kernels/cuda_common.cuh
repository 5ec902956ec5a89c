// Shared by the CUDA sources: error-checking macros that report file and line.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define cudaCheck(call)                                                                                           \
    do {                                                                                                          \
        cudaError_t e_ = (call);                                                                                  \
        if (e_ != cudaSuccess) {                                                                                  \
            fprintf(stderr, "autoq: CUDA error %s at %s:%d: %s\n", cudaGetErrorName(e_), __FILE__, __LINE__,     \
                    cudaGetErrorString(e_));                                                                      \
            exit(1);                                                                                              \
        }                                                                                                         \
    } while (0)

#define cublasCheck(call)                                                                                         \
    do {                                                                                                          \
        cublasStatus_t s_ = (call);                                                                               \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                        \
            fprintf(stderr, "autoq: cuBLAS error %d at %s:%d\n", (int)s_, __FILE__, __LINE__);                     \
            exit(1);                                                                                              \
        }                                                                                                         \
    } while (0)

static inline int ceil_div(long a, long b) { return (int)((a + b - 1) / b); }

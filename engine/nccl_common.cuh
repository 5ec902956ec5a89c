// Shared by the NCCL users (gpu_multi.cu, gpu_pipeline.cu): the error-checking macro, reporting
// file and line like cudaCheck.
#pragma once
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>

#define ncclCheck(call)                                                                                        \
    do {                                                                                                       \
        ncclResult_t r_ = (call);                                                                              \
        if (r_ != ncclSuccess) {                                                                               \
            fprintf(stderr, "autoq: NCCL error %s at %s:%d\n", ncclGetErrorString(r_), __FILE__, __LINE__);    \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

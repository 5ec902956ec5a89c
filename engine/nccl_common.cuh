// Shared by the NCCL users (scoring/score_multi.cu, scoring/score_pipeline.cu): the error-checking
// macro, reporting file and line like cudaCheck, and the set-up of a rank of a multi-process run.
#pragma once
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>

#include "../kernels/cuda_common.cuh"

extern "C" {
#include "rendezvous.h"
}

#define ncclCheck(call)                                                                                        \
    do {                                                                                                       \
        ncclResult_t r_ = (call);                                                                              \
        if (r_ != ncclSuccess) {                                                                               \
            fprintf(stderr, "autoq: NCCL error %s at %s:%d\n", ncclGetErrorString(r_), __FILE__, __LINE__);    \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

// h (n, host) = its sum over every rank of comm, in fp64 (through a device buffer of this GPU).
static inline void nccl_allreduce_host(double* h, long n, ncclComm_t comm) {
    double* buf;
    cudaCheck(cudaMalloc(&buf, sizeof(double) * n));
    cudaCheck(cudaMemcpy(buf, h, sizeof(double) * n, cudaMemcpyHostToDevice));
    ncclCheck(ncclAllReduce(buf, buf, n, ncclFloat64, ncclSum, comm, 0));
    cudaCheck(cudaMemcpy(h, buf, sizeof(double) * n, cudaMemcpyDeviceToHost));
    cudaCheck(cudaFree(buf));
}

// Rank `rank` of `world` processes: rank 0 makes the NCCL id and publishes it through the
// rendezvous, the others fetch it; this process takes GPU rank % (GPUs it sees) and joins the
// communicator. Returns that GPU. Never NVLink multicast (see the device notes).
static inline int nccl_join(ncclComm_t* comm, const RdvSpec* rdv, int rank, int world) {
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    ncclUniqueId id;
    if (rank == 0) {
        ncclCheck(ncclGetUniqueId(&id));
        rdv_publish(rdv, &id, sizeof(id), world, 600.0);
    } else {
        rdv_fetch(rdv, &id, sizeof(id), world, 600.0);
    }
    int count = 0;
    cudaCheck(cudaGetDeviceCount(&count));
    cudaCheck(cudaSetDevice(rank % count));
    ncclCheck(ncclCommInitRank(comm, world, id, rank));
    return rank % count;
}

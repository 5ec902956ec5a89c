// Mixture-of-experts routing on the GPU: the CUDA twins of kernels/moe.c, same orders of
// summation (one thread, warp or block per token or assignment, k in rank order; the routing's
// backward is moe.h's per-token code), so that they agree with the CPU to float rounding of expf.
#include "cuda_common.cuh"
#include "matmul.h"
#include "moe.h"

// One warp per token, the token's probabilities in shared memory: moe_route_token's arithmetic (the
// softmax sum in expert order by one lane, the selection as its scan: the largest probability, the
// lowest expert among ties), so the choices are the CPU's. A thread per token ran the selection's
// K x E loop alone and took as long as the gate and up GEMMs.
#define ROUTE_WARPS 8
__global__ void route_kernel(float* probs, int* idx, float* w, const float* logits, int T, int E, int K,
                             int renorm) {
    extern __shared__ float route_p[]; // (ROUTE_WARPS, E)
    int lane = threadIdx.x % 32;
    long t = blockIdx.x * (long)ROUTE_WARPS + threadIdx.x / 32;
    if (t >= T) return; // the whole warp
    const float* x = logits + t * E;
    float *p = route_p + (threadIdx.x / 32) * E, mx = x[0], sum = 0;
    for (int e = lane; e < E; e += 32) mx = x[e] > mx ? x[e] : mx;
    mx = warp_max(mx);
    for (int e = lane; e < E; e += 32) p[e] = expf(x[e] - mx);
    __syncwarp();
    if (lane == 0)
        for (int e = 0; e < E; e++) sum += p[e];
    sum = __shfl_sync(0xffffffffu, sum, 0);
    for (int e = lane; e < E; e += 32) probs[t * E + e] = p[e] = p[e] / sum;
    __syncwarp();
    float s = 0;
    for (int k = 0; k < K; k++) {
        float bv = -1.0f; // probabilities are >= 0; a taken expert is marked -1
        int bi = E;
        for (int e = lane; e < E; e += 32)
            if (p[e] > bv) bv = p[e], bi = e;
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
        }
        s += bv;
        if (lane == 0) idx[t * K + k] = bi, w[t * K + k] = bv, p[bi] = -1.0f;
        __syncwarp();
    }
    for (int k = lane; renorm && k < K; k += 32) w[t * K + k] /= s;
}

__global__ void route_backward_kernel(float* dlogits, const float* dw, const float* probs, const int* idx,
                                      int T, int E, int K, int renorm) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < T) moe_route_token_backward(t, dlogits, dw, probs, idx, E, K, renorm);
}

// One block per row, 4-byte words.
__global__ void gather_kernel(int* rows, const int* src, const int* order, int K, int words) {
    long r = blockIdx.x;
    const int* s = src + (long)(order[r] / K) * words;
    int* d = rows + r * words;
    for (int i = threadIdx.x; i < words; i += blockDim.x) d[i] = s[i];
}

// One block per token; each thread owns columns and adds the K rows in rank order.
__global__ void gather_backward_kernel(float* dx, const float* drows, const int* pos, int K, int D) {
    long t = blockIdx.x;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float o = dx[t * D + i];
        for (int k = 0; k < K; k++) o += drows[(long)pos[t * K + k] * D + i];
        dx[t * D + i] = o;
    }
}

__global__ void scatter_kernel(float* y, float* h, const float* ye, const float* w, const int* pos, int K,
                               int D) {
    long t = blockIdx.x;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float o = 0;
        for (int k = 0; k < K; k++) o += ye[(long)pos[t * K + k] * D + i] * w[t * K + k];
        if (y) y[t * D + i] = o;
        if (h) h[t * D + i] += o;
    }
}

// One block per assignment a = t K + k: dye's row pos[a] = w[a] dy[t]; dw[a] = dy[t] . ye's row.
__global__ void scatter_backward_kernel(float* dye, float* dw, const float* dy, const float* ye, const float* w,
                                        const int* pos, int K, int D) {
    long a = blockIdx.x, t = a / K, r = pos[a];
    double dot = 0;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float g = dy[t * D + i];
        dye[r * D + i] = w[a] * g;
        dot += (double)g * ye[r * D + i];
    }
    dot = block_sum(dot);
    if (threadIdx.x == 0) dw[a] = (float)dot;
}

extern "C" void gpu_moe_route_forward(float* probs, int* idx, float* w, const float* logits, int T, int E,
                                      int K, int renorm) {
    if (E > 1536) { // ROUTE_WARPS rows of E floats in 48 KiB of shared memory
        fprintf(stderr, "autoq: internal: the GPU router takes at most 1536 experts (%d)\n", E);
        exit(1);
    }
    route_kernel<<<ceil_div(T, ROUTE_WARPS), 32 * ROUTE_WARPS, sizeof(float) * ROUTE_WARPS * E>>>(
        probs, idx, w, logits, T, E, K, renorm);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_moe_route_backward(float* dlogits, const float* dw, const float* probs, const int* idx,
                                       int T, int E, int K, int renorm) {
    route_backward_kernel<<<ceil_div(T, 128), 128>>>(dlogits, dw, probs, idx, T, E, K, renorm);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_moe_gather(void* rows, const void* src, const int* order, int n, int K, int row_bytes) {
    if (n == 0) return;
    gather_kernel<<<n, 128>>>((int*)rows, (const int*)src, order, K, row_bytes / 4);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_moe_gather_backward(float* dx, const float* drows, const int* pos, int T, int K, int D) {
    gather_backward_kernel<<<T, 256>>>(dx, drows, pos, K, D);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_moe_scatter(float* y, float* h, const float* ye, const float* w, const int* pos, int T,
                                int K, int D) {
    scatter_kernel<<<T, 256>>>(y, h, ye, w, pos, K, D);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_moe_scatter_backward(float* dye, float* dw, const float* dy, const float* ye,
                                         const float* w, const int* pos, int T, int K, int D) {
    scatter_backward_kernel<<<T * K, 256>>>(dye, dw, dy, ye, w, pos, K, D);
    cudaCheck(cudaGetLastError());
}

// ---- the sort by expert on the device: assignments in chunks of SORT_CHUNK; per chunk and expert a
// count (one block per chunk), a scan over chunks and experts (one block), then each chunk places
// its assignments in order (one thread per chunk: stable, as moe_sort) ----
#define SORT_CHUNK MOE_SORT_CHUNK

__global__ void sort_count_kernel(int* cnt, const int* idx, long n, int E) {
    extern __shared__ int hist[];
    for (int e = threadIdx.x; e < E; e += blockDim.x) hist[e] = 0;
    __syncthreads();
    long a0 = blockIdx.x * (long)SORT_CHUNK, a1 = a0 + SORT_CHUNK < n ? a0 + SORT_CHUNK : n;
    for (long a = a0 + threadIdx.x; a < a1; a += blockDim.x) atomicAdd(&hist[idx[a]], 1);
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) cnt[(long)blockIdx.x * E + e] = hist[e];
}

// cnt (chunks, E) becomes each chunk's first row per expert; offs (E+1) the experts' first rows.
__global__ void sort_scan_kernel(int* cnt, int* offs, int chunks, int E) {
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        int s = 0;
        for (int c = 0; c < chunks; c++) {
            int v = cnt[(long)c * E + e];
            cnt[(long)c * E + e] = s;
            s += v;
        }
        offs[e + 1] = s; // totals for now
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        offs[0] = 0;
        for (int e = 0; e < E; e++) offs[e + 1] += offs[e];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x)
        for (int c = 0; c < chunks; c++) cnt[(long)c * E + e] += offs[e];
}

// One warp per chunk, 32 assignments a step: lanes routed to the same expert find each other
// (__match_any_sync) and take consecutive rows in lane order, so the order stays stable.
__global__ void sort_place_kernel(int* order, int* pos, const int* cnt, const int* idx, long n, int E) {
    extern __shared__ int next[]; // (E) the next free row of each expert
    int lane = threadIdx.x;
    long a0 = blockIdx.x * (long)SORT_CHUNK, a1 = a0 + SORT_CHUNK < n ? a0 + SORT_CHUNK : n;
    for (int e = lane; e < E; e += 32) next[e] = cnt[(long)blockIdx.x * E + e];
    __syncwarp();
    for (long s = a0; s < a1; s += 32) {
        long a = s + lane;
        bool ok = a < a1;
        int ex = ok ? idx[a] : -1 - lane; // idle lanes match nobody
        unsigned peers = __match_any_sync(0xffffffffu, ex);
        int rank = __popc(peers & ((1u << lane) - 1)), base = ok ? next[ex] : 0;
        __syncwarp();
        if (ok) {
            order[base + rank] = (int)a;
            pos[a] = base + rank;
            if (rank == __popc(peers) - 1) next[ex] = base + rank + 1;
        }
        __syncwarp();
    }
}

extern "C" void gpu_moe_sort(int* order, int* offs, int* pos, const int* idx, int T, int E, int K,
                             int* scratch) {
    long n = (long)T * K;
    int chunks = (int)((n + SORT_CHUNK - 1) / SORT_CHUNK);
    sort_count_kernel<<<chunks, 256, sizeof(int) * E>>>(scratch, idx, n, E);
    cudaCheck(cudaGetLastError());
    sort_scan_kernel<<<1, 256>>>(scratch, offs, chunks, E);
    cudaCheck(cudaGetLastError());
    sort_place_kernel<<<chunks, 32, sizeof(int) * E>>>(order, pos, scratch, idx, n, E);
    cudaCheck(cudaGetLastError());
}

// One block: each expert's tile count, a serial scan (E is small), then each expert writes its tiles.
__global__ void tiles_kernel(int* tiles, int cap, long long* counts, const int* offs, int E) {
    extern __shared__ int first[]; // (E+1) first tile of each expert
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        first[e + 1] = (offs[e + 1] - offs[e] + GROUPED_ROWS - 1) / GROUPED_ROWS;
        if (counts) counts[e] += offs[e + 1] - offs[e];
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        first[0] = 0;
        for (int e = 0; e < E; e++) first[e + 1] += first[e];
    }
    __syncthreads();
    for (int t = first[E] + threadIdx.x; t < cap; t += blockDim.x) tiles[2 * cap + t] = 0;
    for (int e = threadIdx.x; e < E; e += blockDim.x)
        for (int t = first[e], r = offs[e]; r < offs[e + 1]; t++, r += GROUPED_ROWS) {
            tiles[t] = e;
            tiles[cap + t] = r;
            tiles[2 * cap + t] = offs[e + 1] - r < GROUPED_ROWS ? offs[e + 1] - r : GROUPED_ROWS;
        }
}

extern "C" void gpu_moe_tiles(int* tiles, int cap, long long* counts, const int* offs, int E) {
    tiles_kernel<<<1, 256, sizeof(int) * (E + 1)>>>(tiles, cap, counts, offs, E);
    cudaCheck(cudaGetLastError());
}

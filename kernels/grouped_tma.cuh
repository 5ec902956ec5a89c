// The experts' grouped GEMM in its persistent Hopper form (sm_90a, included by matmul.cu after the
// wgmma helpers it reuses). One CTA per SM walks the work list (tile of GROUPED_ROWS rows of one
// expert) x (TM_BN output columns), round robin. Warpgroup 0 is the producer: one thread issues the
// bulk tensor copies (TMA, cuTensorMap descriptors built on the host) of each k step's A and B tiles
// into a ring of shared-memory stages, each guarded by a "full" mbarrier (the copies' bytes landed)
// and an "empty" one (the consumer's multiplies are done with it). Warpgroups 1 and 2 are the
// consumers, on wgmma, writing their results straight to global memory. PP (ping-pong):
// they take turns, each a whole 128 x 128 tile (two m64n128 accumulators), so one's epilogue (the
// fp32 stores are as long as the multiplies on the down projection's shape) overlaps the other's
// multiplies; else (cooperative) both share each 128 x 256 tile, 64 rows each, and only the loads
// overlap the epilogue. setmaxnreg moves registers from the producer to the consumers' accumulators.
// Ragged rows need no zero fill: a tile's rows past its expert's rows belong to the next expert (or
// lie past the buffer, where TMA fills zeros) and only feed output rows the epilogue skips; the ends
// of K and N are zero-filled by TMA. Same sums in the same k order as grouped_wg_kernel.
#include <cuda.h> // CUtensorMap and the driver's prototypes only: the entry points come from cudart

#define TM_BN(PP) ((PP) ? 128 : 256)   // output columns of a tile (128-column wgmma halves)
#define TM_BTILE(PP) (TM_BN(PP) * 128) // bytes of one stage's B tile
// stages of 32 to 64 KiB, 192 KiB in all, within the 227 KiB of shared memory a CTA may have
#define TM_STAGES(PP, LO) ((PP) ? ((LO) ? 4 : 6) : ((LO) ? 3 : 4))
#define TM_SMEM(PP, LO) (TM_STAGES(PP, LO) * (((LO) ? 2 : 1) * WG_TILE + TM_BTILE(PP)) + 1024)
#define TM_CONSUMER_WARPS(PP) ((PP) ? 4 : 8) // arrivals that free a stage: its consumers' warps
#ifndef TM_INFLIGHT
#define TM_INFLIGHT 1 // wgmma groups left running while a stage is given back (0 or 1)
#endif

__device__ inline uint32_t tm_smem(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ inline void tm_bar_init(uint64_t* b, int n) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(tm_smem(b)), "r"(n) : "memory");
}
__device__ inline void tm_bar_expect(uint64_t* b, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(tm_smem(b)), "r"(bytes)
                 : "memory");
}
__device__ inline void tm_bar_arrive(uint64_t* b) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(tm_smem(b)) : "memory");
}
// Waits for the completion of the barrier's phase of this parity (parity 1 passes on a fresh barrier:
// the phase "before" the first counts as completed, so the producer's first pass over the ring waits
// for nothing).
__device__ inline void tm_bar_wait(uint64_t* b, uint32_t parity) {
    asm volatile("{\n.reg .pred p;\nTM_WAIT:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
                 "@!p bra TM_WAIT;\n}\n" ::"r"(tm_smem(b)),
                 "r"(parity)
                 : "memory");
}
__device__ inline void tm_load_2d(void* dst, const CUtensorMap* m, int c0, int c1, uint64_t* bar) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, "
                 "%3}], [%4];\n" ::"r"(tm_smem(dst)),
                 "l"((uint64_t)m), "r"(c0), "r"(c1), "r"(tm_smem(bar))
                 : "memory");
}
__device__ inline void tm_load_3d(void* dst, const CUtensorMap* m, int c0, int c1, int c2, uint64_t* bar) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, "
                 "%3, %4}], [%5];\n" ::"r"(tm_smem(dst)),
                 "l"((uint64_t)m), "r"(c0), "r"(c1), "r"(c2), "r"(tm_smem(bar))
                 : "memory");
}

// MODE as grouped_wg_kernel's: 0 bf16 W_e (N, K); 1 bf16 W_e (K, N); 2 int8 with the dequantizing
// epilogue; 3, 4 as 0, 1 in fp16. ma0 / ma1: x hi / lo (K, rows); mb: the weights, 3-d with the
// expert outermost. A stage: A hi, A lo (LO), then B (forward: TM_BN rows of 128 bytes of K; backward:
// TM_BN / 64 pieces of 64 columns by 64 k rows, MN-major).
template <int MODE, bool LO, bool PP>
__global__ void __launch_bounds__(384, 1)
    grouped_tma_kernel(const __grid_constant__ CUtensorMap ma0, const __grid_constant__ CUtensorMap ma1,
                       const __grid_constant__ CUtensorMap mb, float* y, __nv_bfloat16* y16, const float* sx,
                       const float* sw, long swstride, const int* tiles, int nt, int K, int N, float beta) {
#ifdef WG_ON
    constexpr int ST = TM_STAGES(PP, LO), BN = TM_BN(PP), BT = TM_BTILE(PP), parts = LO ? 2 : 1,
                  es = MODE == 2 ? 1 : 2;
    constexpr bool mn = MODE == 1 || MODE == 4;
    constexpr uint32_t stage_bytes = parts * WG_TILE + BT;
    extern __shared__ uint8_t tm_raw[];
    __shared__ __align__(8) uint64_t full[ST], empty[ST], turn[2];
    uint8_t* smem = (uint8_t*)(((uintptr_t)tm_raw + 1023) & ~(uintptr_t)1023); // the swizzle's alignment
    uint8_t* sa = smem;                                                        // ST stages of A parts
    uint8_t* sbt = smem + ST * parts * WG_TILE;                                // ST stages of B
    int tid = threadIdx.x, wg = tid / 128, nbn = (N + BN - 1) / BN, items = nt * nbn;
    int nk = (int)(((long)K * es + 127) / 128);
    if (tid == 0) {
        for (int s = 0; s < ST; s++) tm_bar_init(&full[s], 1), tm_bar_init(&empty[s], TM_CONSUMER_WARPS(PP));
        tm_bar_init(&turn[0], 4), tm_bar_init(&turn[1], 4);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    if (wg == 0) { // the producer
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
        if (tid != 0) return;
        int s = 0;
        uint32_t ph = 0;
        for (int i = blockIdx.x; i < items; i += gridDim.x) {
            int t = i / nbn, n0 = (i % nbn) * BN;
            if (tiles[2 * nt + t] == 0) continue; // a spare tile of a device-built list
            int e = tiles[t], r0 = tiles[nt + t];
            for (int kt = 0; kt < nk; kt++) {
                tm_bar_wait(&empty[s], ph ^ 1);
                tm_bar_expect(&full[s], stage_bytes);
                uint8_t* a = sa + s * parts * WG_TILE;
                tm_load_2d(a, &ma0, kt * (128 / es), r0, &full[s]);
                if (LO) tm_load_2d(a + WG_TILE, &ma1, kt * (128 / es), r0, &full[s]);
                uint8_t* b = sbt + s * BT;
                if (mn)
                    for (int j = 0; j < BN / 64; j++)
                        tm_load_3d(b + j * 8192, &mb, n0 + 64 * j, kt * 64, e, &full[s]);
                else
                    tm_load_3d(b, &mb, kt * (128 / es), n0, e, &full[s]);
                if (++s == ST) s = 0, ph ^= 1;
            }
        }
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
    // consumer c: with PP, every other tile with rows; else rows 64 c .. 64 c + 63 of each
    int c = wg - 1, lane = tid % 32, done = 0, mine = 0;
    typedef typename std::conditional<MODE == 2, int, float>::type acc_t;
    int s = 0, prev = 0;
    uint32_t ph = 0;
    for (int i = blockIdx.x; i < items; i += gridDim.x) {
        int t = i / nbn, n0 = (i % nbn) * BN, rn = tiles[2 * nt + t];
        if (rn == 0) continue;
        if (PP && done++ % 2 != c) { // the other consumer's tile: skip its nk stages
            s += nk;
            ph ^= (s / ST) & 1;
            s %= ST;
            continue;
        }
        // Ping-pong: this tile's multiplies start once the other consumer's (the tile before) have
        // waited on all their stages. Besides alternating the two, that keeps the parity waits on
        // the full barriers exact: a wait for fill f of a stage must not begin before fill f - 1
        // completed, or the barrier's parity would still read as f's.
        if (PP && (c == 1 || mine > 0)) tm_bar_wait(&turn[c], (uint32_t)((mine - (c == 0)) & 1));
        mine++;
        int e = tiles[t], r0 = tiles[nt + t];
        acc_t d0[64], d1[64]; // ping-pong: rows 0-63 and 64-127; cooperative: columns 0-127, 128-255
#pragma unroll
        for (int j = 0; j < 64; j++) d0[j] = 0, d1[j] = 0;
        for (int kt = 0; kt < nk; kt++) {
            tm_bar_wait(&full[s], ph);
            const uint8_t* a = sa + s * parts * WG_TILE + (PP ? 0 : c * 8192);
            const uint8_t* b = sbt + s * BT;
            wg_fence();
#pragma unroll
            for (int ks = 0; ks < 4; ks++) { // four k steps of 32 bytes (16 bf16, 32 int8)
                uint64_t b0 = mn ? wg_desc(b + ks * 2048, 8192, 1024) : wg_desc(b + ks * 32, 16, 1024);
                uint64_t b1 =
                    mn ? wg_desc(b + 16384 + ks * 2048, 8192, 1024) : wg_desc(b + 16384 + ks * 32, 16, 1024);
#pragma unroll
                for (int p = 0; p < parts; p++) {
                    uint64_t da0 = wg_desc(a + p * WG_TILE + ks * 32, 16, 1024);
                    uint64_t da1 = PP ? wg_desc(a + p * WG_TILE + 8192 + ks * 32, 16, 1024) : da0;
                    if (PP) b1 = b0;
                    if constexpr (MODE == 2) {
                        wg_mma_s8(d0, da0, b0);
                        wg_mma_s8(d1, da1, b1);
                    } else {
                        wg_mma_16<mn, (MODE >= 3)>(d0, da0, b0);
                        wg_mma_16<mn, (MODE >= 3)>(d1, da1, b1);
                    }
                }
            }
            wg_commit();
            // TM_INFLIGHT 1: this k step's multiplies keep running while the previous step's stage is
            // given back (its group is done), so the tensor cores never drain between k steps
            wg_wait<TM_INFLIGHT>(d0);
            wg_pin(d1);
            if (lane == 0 && (TM_INFLIGHT == 0 || kt > 0)) tm_bar_arrive(&empty[TM_INFLIGHT ? prev : s]);
            prev = s;
            if (++s == ST) s = 0, ph ^= 1;
        }
        if (PP && lane == 0) tm_bar_arrive(&turn[1 - c]); // the other consumer's turn
        if (TM_INFLIGHT) {
            wg_wait<0>(d0);
            wg_pin(d1);
            if (lane == 0) tm_bar_arrive(&empty[prev]); // the tile's last stage
        }
        // fragments as grouped_wg_kernel's, per accumulator h: lane 4 g + q of warp w holds rows
        // w 16 + g, + 8 of its 64 and columns 8 j + 2 q, + 1
        int g = lane / 4, q = lane % 4, wr = (tid % 128) / 32 * 16;
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int j = 0; j < 16; j++)
#pragma unroll
                for (int hr = 0; hr < 2; hr++) {
                    int row = (PP ? 64 * h : 64 * c) + wr + g + 8 * hr;
                    int col = n0 + (PP ? 0 : 128 * h) + 8 * j + 2 * q;
                    if (row >= rn || col >= N) continue;
                    long o = (long)(r0 + row) * N + col;
                    const acc_t* d = h ? d1 : d0;
                    float v0 = (float)d[4 * j + 2 * hr], v1 = (float)d[4 * j + 2 * hr + 1];
                    if constexpr (MODE == 2) {
                        float sv = sx[r0 + row];
                        const float* ws = sw + e * swstride + col;
                        *(float2*)(y + o) = make_float2(v0 * (sv * ws[0]), v1 * (sv * ws[1]));
                    } else if (y16) {
                        *(__nv_bfloat162*)(y16 + o) = __floats2bfloat162_rn(v0, v1);
                    } else {
                        float2 old = beta == 0.0f ? make_float2(0, 0) : *(float2*)(y + o);
                        *(float2*)(y + o) = make_float2(v0 + beta * old.x, v1 + beta * old.y);
                    }
                }
    }
#endif
}

// ---- the host side: descriptors through the driver's entry points (no -lcuda link) ----
typedef CUresult (*tm_encode_fn)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                 const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
typedef CUresult (*tm_range_fn)(CUdeviceptr*, size_t*, CUdeviceptr);

static void* tm_entry(const char* name) {
    void* fn = NULL;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
    if (cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &q) != cudaSuccess) fn = NULL;
#else
    if (cudaGetDriverEntryPoint(name, &fn, cudaEnableDefault, &q) != cudaSuccess) fn = NULL;
#endif
    return q == cudaDriverEntryPointSuccess ? fn : NULL;
}

static tm_encode_fn tm_encode;
static tm_range_fn tm_range;

// Bytes readable from p on: up to the end of its allocation (0 when unknown). The host does not know
// how many rows the device-built tile list covers, so A's descriptor spans the allocation instead.
static long tm_readable(const void* p) {
    CUdeviceptr base;
    size_t size;
    if (tm_range((CUdeviceptr*)&base, &size, (CUdeviceptr)p) != CUDA_SUCCESS) return 0;
    return (long)(base + size - (CUdeviceptr)p);
}

// A tiled descriptor with the 128-byte swizzle wgmma reads (zeros outside the tensor); 0 when the
// driver refuses it.
static int tm_map(CUtensorMap* m, CUtensorMapDataType dt, int rank, const void* p, const cuuint64_t* dims,
                  const cuuint64_t* strides, const cuuint32_t* box) {
    const cuuint32_t one[3] = {1, 1, 1};
    return tm_encode(m, dt, rank, (void*)p, dims, strides, box, one, CU_TENSOR_MAP_INTERLEAVE_NONE,
                     CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                     CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// The schedule (PP 1 ping-pong, 0 cooperative) that ran faster on an H200 (bench/README.md): ping-pong
// with hi + lo and on int8 codes, and on a bf16 / fp16 forward whose K >= N (gate, up); cooperative
// on the backward and where N > K (down): 432 against 414 TFLOP/s on the uniform down shape, 425 / 428
// against 364 / 361 on the skewed down and down backward. AUTOQ_MOE_GEMM=tma-pingpong or
// tma-cooperative forces one.
static int tm_pingpong(const char* how, int mode, int lo, int K, int N) {
    if (how && !strcmp(how, "tma-pingpong")) return 1;
    if (how && !strcmp(how, "tma-cooperative")) return 0;
    return lo || mode == 2 || ((mode == 0 || mode == 3) && K >= N);
}

// Launches the persistent kernel with schedule pp; 0 (nothing launched) where a descriptor cannot
// describe the operands (alignment, strides, an allocation the driver does not know), so the caller
// falls back.
static int grouped_tma(int pp, int mode, float* y, __nv_bfloat16* y16, const void* xhi, const void* xlo,
                       const void* w, long wstride, const float* sx, const float* sw, long swstride,
                       const int* tiles, int nt, int K, int N, float beta) {
    if (!tm_encode || !tm_range) return 0;
    int es = mode == 2 ? 1 : 2, mn = mode == 1 || mode == 4;
    CUtensorMapDataType dt = es == 1 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_UINT16;
    long rb = (long)K * es, wb = (long)N * K * es, ws = wstride * es;
    long ra = tm_readable(xhi), rl = xlo ? tm_readable(xlo) : ra, rw = tm_readable(w);
    if (ws % 16 || ws <= 0 || (uintptr_t)w % 16 || (uintptr_t)xhi % 16 || (uintptr_t)xlo % 16 || ra < rb ||
        rl < rb || rw < wb)
        return 0;
    CUtensorMap m[3];
    cuuint64_t da[2] = {(cuuint64_t)K, (cuuint64_t)(ra / rb)}, sa[1] = {(cuuint64_t)rb};
    cuuint32_t ba[2] = {(cuuint32_t)(128 / es), GROUPED_ROWS};
    if (!tm_map(&m[0], dt, 2, xhi, da, sa, ba)) return 0;
    da[1] = (cuuint64_t)(rl / rb);
    if (!tm_map(&m[1], dt, 2, xlo ? xlo : xhi, da, sa, ba)) return 0;
    cuuint64_t experts = (cuuint64_t)((rw - wb) / ws + 1); // those whose whole block is readable
    cuuint64_t db[3] = {(cuuint64_t)(mn ? N : K), (cuuint64_t)(mn ? K : N), experts};
    cuuint64_t sb[2] = {(cuuint64_t)(mn ? (long)N * es : rb), (cuuint64_t)ws};
    cuuint32_t bb[3] = {(cuuint32_t)(mn ? 64 : 128 / es), (cuuint32_t)(mn ? 64 : TM_BN(pp)), 1};
    if (!tm_map(&m[2], dt, 3, w, db, sb, bb)) return 0;
    static int sms[64];
    int dev;
    cudaCheck(cudaGetDevice(&dev));
    if (dev < 64 && !sms[dev])
        cudaCheck(cudaDeviceGetAttribute(&sms[dev], cudaDevAttrMultiProcessorCount, dev));
    int items = nt * ((N + TM_BN(pp) - 1) / TM_BN(pp)), grid = dev < 64 && sms[dev] < items ? sms[dev] : items;
    size_t smem = TM_SMEM(pp, xlo != NULL);
#define TM_LAUNCH(M, L, P)                                                                                     \
    grouped_tma_kernel<M, L, P>                                                                                \
        <<<grid, 384, smem>>>(m[0], m[1], m[2], y, y16, sx, sw, swstride, tiles, nt, K, N, beta)
#define TM_LAUNCH2(M, L)                                                                                       \
    do {                                                                                                       \
        if (pp)                                                                                                \
            TM_LAUNCH(M, L, true);                                                                             \
        else                                                                                                   \
            TM_LAUNCH(M, L, false);                                                                            \
    } while (0)
    if (mode == 0 && !xlo) TM_LAUNCH2(0, false);
    if (mode == 0 && xlo) TM_LAUNCH2(0, true);
    if (mode == 1 && !xlo) TM_LAUNCH2(1, false);
    if (mode == 1 && xlo) TM_LAUNCH2(1, true);
    if (mode == 2) TM_LAUNCH2(2, false);
    if (mode == 3) TM_LAUNCH2(3, false);
    if (mode == 4) TM_LAUNCH2(4, false);
#undef TM_LAUNCH2
#undef TM_LAUNCH
    cudaCheck(cudaGetLastError());
    return 1;
}

// Once per device: the kernels' shared-memory limits, and the driver's entry points; 0 where the
// driver offers no tensor-map encoder.
static int tm_setup(void) {
    if (!tm_encode) tm_encode = (tm_encode_fn)tm_entry("cuTensorMapEncodeTiled");
    if (!tm_range) tm_range = (tm_range_fn)tm_entry("cuMemGetAddressRange");
#define TM_KERNELS(P)                                                                                          \
    (const void*)grouped_tma_kernel<0, false, P>, (const void*)grouped_tma_kernel<0, true, P>,                 \
        (const void*)grouped_tma_kernel<1, false, P>, (const void*)grouped_tma_kernel<1, true, P>,             \
        (const void*)grouped_tma_kernel<2, false, P>, (const void*)grouped_tma_kernel<3, false, P>,            \
        (const void*)grouped_tma_kernel<4, false, P>
    const void* k[] = {TM_KERNELS(false), TM_KERNELS(true)};
#undef TM_KERNELS
    const int lo[] = {0, 1, 0, 1, 0, 0, 0};
    for (int i = 0; i < 14; i++)
        cudaCheck(cudaFuncSetAttribute(k[i], cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       TM_SMEM(i >= 7, lo[i % 7])));
    return tm_encode && tm_range;
}

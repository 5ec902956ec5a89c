// Streaming layers from host memory (README "Streaming"): an engine whose streamed decoder layers live in
// the checkpoint's mapping and are copied, through the pinned staging buffers of the engine's uploads,
// into one of two layer slots on the GPU as passes reach them: layer l + 1 (or the next one the caller
// names) goes over the bus while layer l computes. C interface.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif
#include "gpu.h"

typedef struct GpuStream GpuStream;

// The layer slots are carved, for every family: one device buffer of the largest streamed layer's bytes, each
// layer filled into it laid out by the resident upload's own code (layer_upload, moe_upload), every tensor
// starting at a multiple of this many bytes (cudaMalloc's alignment), so that any layer (attention or Gated
// DeltaNet, dense or sparse) takes its turn in either slot, and a slot holds a layer's bytes plus under this
// much per tensor (scoring/stream_plan.c counts it).
#define GPU_SLOT_ALIGN 256

// An engine for batches of B windows of T tokens holding the layers with res[l] (and lm_head, the final
// norm); the others stream through two slots that hold any of them (GPU_SLOT_ALIGN). lbytes
// (L): each layer's bytes on the GPU, for the count of bytes copied. *st receives the streaming state (freed
// before the engine).
GpuEngine* gpu_stream_engine(const Model* m, int T, int B, int gemm, const unsigned char* res,
                             const double* lbytes, GpuStream** st);
void gpu_stream_free(GpuStream* st);
// Layer l's weights ready for the work queued next (blocks until its copy is over); marks the start of l.
void gpu_stream_begin(GpuStream* st, int l);
// Layer l's work is queued: marks its end; then copies layer `next` (-1: none) into the other slot once the
// work that last read that slot is done, while l computes.
void gpu_stream_end(GpuStream* st, int l, int next);
// What the GPU runs until the next gpu_stream_begin is work (a head, a loss), not a wait for a copy.
void gpu_stream_break(GpuStream* st);
// Embeds ids (nb, T) into h (device, (nb T, D) fp32) from the checkpoint's table on the host: the rows
// gpu_embed would read, converted the same way (bf16 as is, F16 / F32 through bf16).
void gpu_stream_embed(GpuStream* st, const int* ids, int nb, float* h);
// A block of bytes per layer (host[l], pinned, bytes[l]; NULL for resident layers) that follows each streamed
// layer into its slot: two device slots of the largest, filled with the layer's weights; bind(ctx, l, dev)
// is called when layer l begins with its block's device copy (given weights: GPTQ's codes).
void gpu_stream_extra(GpuStream* st, void* const* host, const size_t* bytes, void (*bind)(void*, int, void*),
                      void* ctx);
// Pinned host memory for spilled states (freed with the stream), and the bytes moved each way through it.
void* gpu_stream_host_alloc(GpuStream* st, size_t bytes);
void gpu_stream_count_spill(GpuStream* st, double h2d, double d2h);
// Keeps the checkpoint's page-locking (hold 1) across streamed engines made and freed one after another
// (search --refine's streamed recipes), else each would page-lock it again; hold 0 lets it go.
void gpu_stream_pin_hold(const Model* m, int hold);
// Waits for the queued work, then: bytes copied host->GPU (layers and spilled states), and the seconds the
// GPU waited between layers' work (the copies not hidden behind compute), since the stream began.
void gpu_stream_stats(GpuStream* st, double* h2d_bytes, double* unhidden_s);

#ifdef __cplusplus
}
#endif

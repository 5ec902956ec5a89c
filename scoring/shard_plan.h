// Where --shard-layers cuts the decoder into pipeline stages: by work, as the scoring method spreads
// it over the layers, within each GPU's memory (README "Several GPUs").
#pragma once
#include "../engine/config.h"
#include "groups.h"

// Stage s of `parts` holds layers bounds[s]..bounds[s+1]-1, with batches of B windows of T tokens.
// Work is counted in FLOPs per token of each pass's GEMMs and token-mixer products (attention's, or a Gated
// DeltaNet's delta rule in its chunked form: shard_gdn_head_flops per value head). kl (gradient 0)
// runs the reference pass through every layer and, per format (nf), each enabled group's pass from
// its own layer on, each ending in lm_head and the KL on the last stage: layer l sees 1 + nf x
// (enabled groups at layers <= l) passes and the head 1 + nf x (enabled groups). The gradient runs
// every layer and lm_head forward, then backward with the quantized outputs: two passes' products for
// lm_head, three for a layer (a stage recomputes each layer's forward before its backward), and each
// enabled group's quantized products once per format. A stage must fit 90% of mem[s] (its GPU's memory) by
// shard_stage_bytes. Without a split by work that fits, the split whose fullest stage needs the least
// memory. Returns 1 when the split is by work.
int shard_plan(const Config* c, const Groups* gs, int nf, int gradient, int T, int B, int parts,
               const double* mem, int* bounds);
// What stage s of `parts` needs holding layers l0..l1-1: its bf16 weights (the embedding on the first,
// the final norm and lm_head on the last) and an upper estimate of the engine's other buffers:
// activations and their bf16 copies, the attention scores, the quantized plan's int8 pool (a layer),
// the layer inputs kept for the batches in flight, the last stage's logits (twice), a sparse layer's
// expert rows, the hybrid families' buffers (Gated DeltaNet projections, attention gate, shared expert) and
// the Gated DeltaNet core's cache, 1 GiB for the CUDA context and library workspaces; the gradient's
// buffers twice.
double shard_stage_bytes(const Config* c, int gradient, int T, int B, int parts, int s, int l0, int l1);
// The whole work per token of scoring, as shard_plan counts it (the passes' GEMM and attention
// products): what `score` divides by its time for the TFLOP/s it reports. The gradient's: the forward,
// the activation backward and the quantized products, plus a second forward of every layer with `every`
// (a pipeline stage's or a streamed gradient), else of each layer l with recomputed[l] (host, L entries;
// NULL: none, the work the method requires).
double shard_work_flops(const Config* c, const Groups* gs, int nf, int gradient, int T, int every,
                        const unsigned char* recomputed);
// Bytes of layer l's weights on the GPU, from its family's rows of the architecture table: bf16, the Gated
// DeltaNet's conv, decays and gated norm fp32 (a sparse layer holds every expert).
double shard_layer_bytes(const Config* c, int l);
// FLOPs per token of one value head of the Gated DeltaNet's delta rule, chunked (WY) form with chunks of
// min(GDN_GPU_CHUNK, T) tokens (the formula is in shard_plan.c).
double shard_gdn_head_flops(const Config* c, int T);

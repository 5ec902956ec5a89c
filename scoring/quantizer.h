// The weight quantizer behind every candidate (README, "GPTQ"): round-to-nearest, or GPTQ with
// Hessians collected here from the calibration windows (experts: every token through every expert). Scoring
// uses each linear's GPTQ weights under the unquantized model's inputs; a recipe is deployed with
// llm-compressor's sequential pipeline (layer after layer, quantized layers feeding the next Hessians)
// or, with --gptq-pipeline basic, its basic one (every Hessian from the unquantized model).
#pragma once
#include "../datasets/npy.h"
#include "../engine/args.h"
#include "../kernels/gptq.h"
#include "score.h"

typedef enum { QUANTIZER_RTN, QUANTIZER_GPTQ } QuantizerKind;
// How a recipe's GPTQ weights are calibrated (llm-compressor's oneshot pipeline); scores are always basic.
typedef enum { GPTQ_PIPELINE_SEQUENTIAL, GPTQ_PIPELINE_BASIC } GptqPipeline;

typedef struct {
    QuantizerKind kind;
    GptqOpts gptq;
    const char* cache_dir; // --gptq-cache DIR: GPTQ weights kept between runs, or NULL
    // (n_linears) the per-row scales each linear is quantized with, or NULL: RTN's scale of each
    // original row (autoq quantize gives the scales its checkpoint stores, rounded to its dtype)
    float** scales;
    int ckpt_scales; // scales are quantize_scales' (search/quantize.h), a function of the model: cacheable
    // (n_linears) or NULL: with scales given, the GPU pipeline hands each linear's int8 codes (out, in)
    // here instead of its weights in wq (autoq quantize stores codes; 1 byte a weight off the card)
    int8_t** codes;
    int use_gpu; // gptq_recipe on the GPU (gptq_sequential_gpu, gptq_basic_gpu) for dense models
    // --gpu-memory (bytes, 0: none): the GPU pipeline's cap; its windows' residual stream waits in pinned host
    // memory instead of a device pool when the pool would pass it (README "Streaming")
    double gpu_mem;
    GptqPipeline pipeline; // --gptq-pipeline: how gptq_recipe deploys (default sequential, llm-compressor's)
} Quantizer;

// --quantizer rtn|gptq, --gptq-dampening F, --gptq-actorder none|static|group, --gptq-cache DIR,
// --gptq-pipeline basic|sequential (the gptq options without --quantizer gptq are an error, exit 2;
// --gptq-pipeline on score too: scores are always basic).
void quantizer_parse(Quantizer* q, Args* a);
const char* quantizer_name(const Quantizer* q);
// --device auto|cpu|cuda of a command whose GPTQ may run on the GPU (quantize, eval): GPTQ's layer
// passes on the GPU for dense models unless cpu; cuda without a device or on a mixture-of-experts
// model (c, from the folder dir) is exit 2. Needs only the config: a command can choose how to load
// the model from it.
void quantizer_set_device(Quantizer* q, const char* dev, const Config* c, const char* dir, const char* cmd);
// --gpu-memory SIZE of eval and quantize (NULL: none), after quantizer_set_device: the cap on GPTQ's GPU
// pipeline; exit 2 when malformed, or when no GPTQ runs on the GPU.
void quantizer_set_gpu_memory(Quantizer* q, const char* size, const char* cmd);
const char* gptq_pipeline_name(GptqPipeline p);

// A layer's Hessian sites: the attention input (q/k/v), o_proj's, the MLP input (gate/up, experts' too),
// down_proj's; past SITES, one per expert's down_proj.
enum { SITE_ATTN, SITE_O, SITE_MLP, SITE_DOWN, SITES };
// The site of linear i within its layer's Hessians, and the width of a site's input.
int linear_site(const Model* m, int i);
int site_width(const Model* m, int site);
// The Hessian a linear's input feeds, layer * 4 + site: q/k/v share the attention input (0), o_proj
// has its own (1), gate/up share the MLP input (2, experts' too), down_proj its own (3); an expert's
// down_proj is 4 + its expert, past its layer's four (its input differs per expert).
int hessian_site(const Model* m, int linear);
// The input of that site in a forward pass's saved activations of layer l.
const float* site_input(const RunState* s, int l, int site);

// The candidate weights of every (format, enabled linear): RTN, or GPTQ from the unquantized
// model's inputs on ids (cached in q->cache_dir when set).
void qcache_build(QuantCache* qc, const Model* m, const Groups* gs, const Format* fmts, int nf,
                  const Quantizer* q, const TokenIds* ids);

// GPTQ weights wq (l->out, l->in) as the CUDA engine runs them: codes (out, in) int8 and scales (out),
// each row's scale RTN's of the original row (l->w, fp32 host: model_load), as GPTQ fixed it, so that
// codes x scale == wq exactly. Exits (status 1) when a weight is not: the scales do not match.
void qcache_codes(int8_t* codes, float* scales, const float* wq, const Linear* l, QuantSpec w);

// A recipe deployed with GPTQ in q->pipeline: wq (n_linears) receives the weights of each chosen
// linear (choice[i] >= 0 indexes fmts; others NULL, caller frees), from the cache when q->cache_dir
// holds them. Sequential (llm-compressor's default): layer l's Hessians come from the windows run
// through layers 0..l-1 with their GPTQ weights and unquantized activations, as llm-compressor
// calibrates. Basic: every Hessian from the unquantized model, as the scores quantize.
void gptq_recipe(float** wq, const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                 const Quantizer* q);
// The sequential pipeline on one GPU (scoring/gptq_gpu.cu), dense models only: the layer passes, X^T X
// and the GPTQ updates on the device, one decoder layer resident at a time, quantized layers rounded to bf16.
void gptq_sequential_gpu(float** wq, const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                         const Quantizer* q);
// The basic pipeline on one GPU (every Hessian from the unquantized model, one pass per layer) for nsets
// recipes at once: choices and wq (nsets, n_linears), e.g. one set per format for the scores.
void gptq_basic_gpu_sets(float** wq, const Model* m, const TokenIds* ids, const Format* fmts,
                         const int* choices, int nsets, const Quantizer* q);
// The basic pipeline on one GPU, dense models only (same contract; wq zeroed by the caller).
void gptq_basic_gpu(float** wq, const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                    const Quantizer* q);

// Runs a mixed recipe (every chosen group quantized at once) and measures
// what the per-group scores predicted: KL to the unquantized model (same
// units as the kl score) and the change in mean next-token NLL.
#pragma once
#include "../datasets/npy.h"
#include "../engine/model.h"
#include "../scoring/format.h"
#include "../scoring/quantizer.h"

typedef struct {
    double kl;      // sum over samples and positions
    double nll_ref; // mean over samples of the per-sample mean NLL
    double nll_q;
    int n_quantized;       // linears quantized
    int gptq;              // deployed with GPTQ (else round-to-nearest)
    GptqPipeline pipeline; // GPTQ's: sequential or basic
} VerifyResult;

// The KV-cache choice of each layer the next verify calls deploy (an index into their fmts, -1 bf16), or NULL
// for none (README §7): the caller keeps kv alive until then.
void verify_set_kv(const int* kv);
// choice[i] per linear of the model: -1 keeps it, else an index into fmts.
void verify_run(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice, VerifyResult* r);
// The same with given weights for the linears where given[i] is not NULL (the rest round-to-nearest).
void verify_run_with(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                     float* const* given, VerifyResult* r);
// The recipe deployed with quantizer q: round-to-nearest, or GPTQ in q->pipeline on ids
// (gptq_recipe), then measured on the same windows.
void verify_recipe(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                   const Quantizer* q, VerifyResult* r);
// The unquantized model's logits of every window, computed once for repeated measurements (search --refine):
// logits NULL when they would pass 1 GiB (each measurement then runs the reference pass again).
typedef struct {
    float* logits; // (n, T, V)
    double nll;    // mean over windows of the per-window mean NLL
    int n;
} VerifyRef;
void verify_ref_init(VerifyRef* ref, const Model* m, const TokenIds* ids);
void verify_ref_free(VerifyRef* ref);
// verify_recipe with the reference passes taken from ref (NULL: computed).
void verify_recipe_ref(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                       const Quantizer* q, const VerifyRef* ref, VerifyResult* r);
// The same, writing the quantized model's logits of the first window to logits (.npy, (T, V)) unless NULL.
void verify_recipe_logits(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                          const Quantizer* q, const char* logits, VerifyResult* r);

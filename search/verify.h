// Runs a mixed recipe (every chosen group quantized at once) and measures
// what the per-group scores predicted: KL to the unquantized model (same
// units as the kl score) and the change in mean next-token NLL.
#pragma once
#include "../datasets/npy.h"
#include "../engine/model.h"
#include "../scoring/format.h"
#include "../scoring/measure_gpu.h"
#include "../scoring/measure_plan.h"
#include "../scoring/quantizer.h"

typedef struct {
    double kl;      // sum over samples and positions
    double nll_ref; // mean over samples of the per-sample mean NLL
    double nll_q;
    int n_quantized;       // linears quantized
    int gptq;              // deployed with GPTQ (else round-to-nearest)
    GptqPipeline pipeline; // GPTQ's: sequential or basic
    int on_gpu;            // measured on the CUDA engine (else the CPU engine)
    int streamed;          // its layers streamed from host memory (README "Streaming")
} VerifyResult;

// Where the next verify_recipe / verify_recipe_logits calls measure (eval --recipe / --format, search --verify;
// README "Streaming"): the CUDA engine, resident or with its layers streamed within cap, or the CPU engine.
typedef struct {
    const char* cmd; // "eval" or "search --verify", for messages
    int want;        // --device cuda
    int gpu;         // the CUDA engine where it can measure (--device cuda, or auto with a GPU visible)
    double cap;      // --gpu-memory in bytes, 0: 90% of the GPU's free memory
    int said;        // the CPU fallback's reason said once
    int runs;        // measurements made
    int once;        // the plan and the statistics said for the first measurement only (search --refine)
    int stream;      // every measurement streamed (search --refine where the resident one does not fit)
    int batch;       // the engine batch, 0: the planner's (AUTOQ_MEASURE_BATCH in tests)
} VerifyDevice;
// From --device (NULL: auto) and --gpu-memory (cap bytes, 0 none); exit 2 for --device cuda without a GPU and
// for a cap that caps nothing (no CUDA device in use and capped_else 0: the cap caps nothing else either, such
// as GPTQ's pipeline on the GPU or the scoring).
void verify_device_init(VerifyDevice* d, const char* cmd, const char* device, double cap, int capped_else);
// The device the next verify calls use (NULL: the CPU engine); the caller keeps d alive until then.
void verify_set_device(VerifyDevice* d);

// Plans the measurement of ids on d's GPU (scoring/measure_plan.h) whose linears with w[i] set (w NULL: every
// linear) carry deployed fp32 weights, within --gpu-memory or 90% of the free memory, and where it is resident
// opens it: *res (NULL when it streams; d->stream forces that). A resident measurement the engine's own check
// refuses (what it allocates beyond the plan's bytes) is planned streamed instead. 0, with the reason in why,
// when no plan fits.
int verify_open_gpu(VerifyDevice* d, const Model* m, const TokenIds* ids, float* const* w, MeasurePlan* p,
                    GpuMeasure** res, char* why, size_t nwhy);
// The recipe (choice, given as verify_run_with's) measured on the CUDA engine through d (README "Streaming"):
// resident when the model, every window's reference logits and the recipe's fp32 weights fit the cap, else
// streamed; each window's KL into wkl (ids->n) unless NULL. Returns 0 where the CPU engine measures instead (a
// KV-cache choice set by verify_set_kv, or no plan fits under --device auto; --device cuda exits 2 there).
int verify_measure_gpu(VerifyDevice* d, const Model* m, const TokenIds* ids, const Format* fmts,
                       const int* choice, float* const* given, VerifyResult* r, double* wkl);

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

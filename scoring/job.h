// One scoring job on any device: parse the scoring options, load the model, data, groups and
// formats, then score every window with checkpoint / resume and work accounting, dispatching once
// to a back end: the CPU scorer (score.c), one GPU (score_gpu.cu), several GPUs or ranks
// (score_multi.cu) or a layer pipeline (score_pipeline.cu). `score` and `search` share it.
#pragma once
#include "../datasets/data.h"
#include "../engine/args.h"
#include "score.h"
#include "quantizer.h"
#include "score_gpu.h"
#include "stream_plan.h"
#include "table.h"

typedef struct {
    const char* model_dir;
    DataOpts data;
    TokenIds ids;
    Model model;
    Patterns dis;
    Groups groups;
    Format fmts[MAX_FORMATS];
    int nf;
    Method method;
    Quantizer quant; // --quantizer: the candidates' weights, round-to-nearest or GPTQ
    int ct;
    int no_grouping;
    int batch_size;
    int use_gpu;   // resolved --device
    int need_host; // the caller runs the CPU engine too (search --verify)
    const char* device;
    int gpu_gemm;          // --gpu-gemm: GEMM_FP16 (default for kl), GEMM_BF16X2 (kl where fp16 cannot run, and
                           // any method with an 8-bit format) or GEMM_BF16 (default for gradient)
    int gpu_gemm_given;    // --gpu-gemm was on the command line
    int ngpus;             // --gpus (0: every visible GPU)
    int shard;             // --shard-layers: GPUs hold layer ranges (pipeline) instead of whole copies
    int stages;            // --stages: with --shard-layers and --nccl-init, ranks per pipeline (a host's GPUs)
    const char* nccl_init; // --nccl-init file:PATH|tcp:HOST:PORT (multi-process run)
    int rank, world;
    RdvSpec rdv;
    const char* format_csv;
    const char* disabled_csv;
    int min_expert_tokens; // --min-expert-tokens: fewer tokens routed to an expert is warned about
    // --gpu-memory (bytes, 0 when not given): the cap on what autoq uses of the GPU; a model that does not
    // fit it (or the GPU) streams its layers from host memory (README "Streaming")
    double gpu_mem;
    int streamed;           // the run streamed its layers
    double stream_h2d;      // bytes copied host->GPU (layers, spilled states)
    double stream_unhidden; // seconds the GPU waited between layers (copies not hidden)
    double stream_alloc;    // the engine's own device allocations (gpu_alloc_bytes)
    // results
    double* score; // (nf, groups), summed over the windows done
    // Each window's contribution (README §8 /groups/window_scores): (windows, nf, groups), the CPU scorer
    // only; NULL when unavailable (a GPU back end, or a run resumed from a checkpoint).
    double* wscore;
    // Calibration domains (--data NAME=FILE repeated, README §8 /domains): nd = 0 for one plain --data FILE.
    // Each domain is scored in turn; score, wscore and the expert counts then cover every domain's windows.
    int nd;
    char dname[MAX_DOMAINS][MAX_DOMAIN_NAME + 1];
    const char* dpath[MAX_DOMAINS];
    int dsamples[MAX_DOMAINS];
    double* dscore;    // (nd, nf, groups)
    int total_windows; // with domains: every domain's windows
    // Expert coverage (README §6), mixture-of-experts models only (else NULL): the tokens routed to
    // each expert in the unquantized passes, summed over the windows done; row j is the j-th sparse
    // layer in layer order (sparse_layers[j]), E = model.c.num_experts columns.
    long* expert_tokens; // (model.c.n_sparse, E)
    int* sparse_layers;  // (model.c.n_sparse) the layer index of each row
    int samples_done;
    // (L) 1 for a layer the gradient's backward recomputed on some GPU (README "Several GPUs": the work
    // executed); the CPU engine keeps every layer's activations
    unsigned char* recomputed;
    Work work;
    size_t gpu_peak;
    double seconds;
} ScoreJob;

// Reads MODEL, --data, --method, --format, --numerics, --disabled-layers, --no-grouping,
// --num-samples, --seq-len, --batch-size, --device, --gpu-gemm, --gpus, --shard-layers, --stages,
// --nccl-init, --rank, --world-size, --gpu-memory, --shuffle, --seed, --min-expert-tokens, --quantizer and the
// --gptq-* options.
void score_job_parse(ScoreJob* j, Args* a, int need_method);
// Loads the model, data, groups and formats; exits 2 on bad input.
void score_job_load(ScoreJob* j);
// Scores every window; with checkpoint, saves the sums after each batch and resumes from them.
void score_job_run(ScoreJob* j, const char* checkpoint);
void score_job_table(const ScoreJob* j, ScoreTable* t);
// The byte budget's model facts (ScoreTable's other_params and KV layers) from a loaded model.
void table_set_memory(ScoreTable* t, const Model* m);
// Expert coverage on stderr, one line per sparse layer, and a warning for every layer with experts
// that saw fewer than --min-expert-tokens tokens (never fatal).
void score_job_report_experts(const ScoreJob* j);
void score_job_free(ScoreJob* j);

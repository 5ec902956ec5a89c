// What `score` and `search` share: parsing the scoring options, loading the
// model, data, groups and formats, and turning scores into a ScoreTable.
#pragma once
#include <jansson.h>

#include "cli.h"
#include "datasets/data.h"
#include "scoring/score.h"
#include "scoring/table.h"
#include "engine/gpu.h"

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
    int ct;
    int no_grouping;
    int batch_size;
    int use_gpu;   // resolved --device
    int need_host; // the caller runs the CPU engine too (search --verify)
    const char* device;
    int gpu_split;         // --gpu-gemm bf16x2 (default) or bf16
    int ngpus;             // --gpus (0: every visible GPU)
    int shard;             // --shard-layers: GPUs hold layer ranges (pipeline) instead of whole copies
    const char* nccl_init; // --nccl-init file:PATH|tcp:HOST:PORT (multi-process run)
    int rank, world;
    RdvSpec rdv;
    const char* format_csv;
    const char* disabled_csv;
    Scorer scorer;
    GpuEngine* gpu;
    size_t gpu_peak;
    double seconds;
} ScoreJob;

// Reads MODEL, --data, --method, --format, --numerics, --disabled-layers,
// --no-grouping, --num-samples, --seq-len, --batch-size, --device, --shuffle, --seed.
void score_job_parse(ScoreJob* j, Args* a, int need_method);
// Loads the model, data, groups and formats; exits 2 on bad input.
void score_job_load(ScoreJob* j);
void score_job_run(ScoreJob* j, const char* checkpoint);
void score_job_table(const ScoreJob* j, ScoreTable* t);
void score_job_free(ScoreJob* j);

// Calibration windows from --data (README §1): .npy ids now, text via the tokenizer.
#pragma once
#include "../engine/args.h"
#include "npy.h"

typedef struct {
    const char* path;
    const char* model_dir; // where tokenizer.json lives for text input
    int vocab;
    int eos;         // joins documents of text input
    int num_samples; // 0: all
    int seq_len;     // 0: as the file has it (npy) / required for text
    int shuffle;
    unsigned long seed;
} DataOpts;

// --data, --num-samples, --seq-len, --shuffle, --seed into o (the rest of o zeroed).
void data_opts_parse(DataOpts* o, Args* a);
// Loads windows [N, T]; exits 2 on bad input; reports what was used on stderr.
void data_load(TokenIds* out, const DataOpts* o);

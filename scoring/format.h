// Candidate formats read from JSON in ModelOpt's quant_cfg dialect (SPEC §4).
#pragma once
#include "../kernels/kernels.h"

typedef struct {
    char name[64]; // file stem, e.g. "w4a8"
    char path[512];
    int builtin; // named by stem (configs/formats/NAME.json), not by a path
    int w_enable;
    QuantSpec w; // per output channel, static
    int in_enable;
    QuantSpec in; // per token, dynamic
    int bits;     // smallest num_bits among enabled quantizers (ModelOpt's cost)
} Format;

// NAME is a path to a .json file or the stem of configs/formats/NAME.json
// (looked up beside the autoq binary, then in the working directory).
// ct selects compressed-tensors numerics. Exits 2 naming the file and field.
void format_load(Format* f, const char* name, int ct);
// Comma-separated list; returns the count.
int formats_load(Format* out, int max, const char* csv, int ct);

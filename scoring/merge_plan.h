// The merged kl scorer's plan (scoring/score_merge.cu): how many windows one merged engine batch holds, how
// many passes' states a wave keeps on the GPU, and which passes each wave takes. Pure arithmetic on byte
// counts, so the CPU tests check it (tests/test_merge_plan.c).
//
// kl runs layer-major there: at layer l the reference advances, the passes born at l run it with their group
// quantized, one engine batch (B windows) each, and every older pass, whose layer-l weights are unquantized,
// advances through it together with the others, as merged engine batches of up to Bm windows. A pass keeps
// its residual state (B T D fp32) on the GPU from its birth to its head; when every pass's state does not
// fit, the passes (sorted by birth layer) go in waves, each wave running from its first birth layer to the
// last layer.
#pragma once
#include "../engine/config.h"

typedef struct {
    double avail;        // device bytes for the engine's batch buffers and the states (beyond the weights)
    double window_bytes; // the engine's buffers per window of a merged batch
    double pass_bytes;   // one pass's state: B windows (B T D fp32)
    double fixed_bytes;  // beside them whatever Bm: the reference state and its saved input, logits (2 B T V)
    int B;               // windows per pass (the engine batch)
    int n_pass;          // passes of one engine batch (enabled (format, group) pairs)
    int bm_max;          // merged windows at most (more stops paying once the GEMMs are full)
} MergeSpec;

typedef struct {
    int bm;       // windows per merged engine batch (>= B)
    int per_wave; // passes whose states a wave holds (<= n_pass)
    int n_waves;
} MergePlan;

// Bm: bm_max (at least B) when it and every state fit; else up to half of what is left after the fixed
// bytes and one pass, never below B. Then as many passes per wave as the rest holds, waves of equal size.
// Returns 1, or 0 when not even Bm = B with one pass per wave fits (the plan then says Bm = B, one pass).
int merge_plan(const MergeSpec* s, MergePlan* p);
// Passes per wave from the bytes measured once the engine is built (avail: free device memory for the
// states), at most n_pass, at least 1; the waves then of equal size (their count into *n_waves).
int merge_wave_size(double avail, double pass_bytes, int n_pass, int* n_waves);
// The first pass of each wave (n_waves + 1 entries, the last n_pass): n_pass passes in waves of equal size
// (the first ones one larger), per_wave at most. Returns the number of waves.
int merge_waves(int n_pass, int per_wave, int* start);
// Passes p0 .. p1 - 1 (birth layers sorted ascending): how many were born before layer l (they advance merged
// through l) and, into *born, how many at l.
int merge_older(const int* birth, int p0, int p1, int l, int* born);
// The engine's buffers per window of a merged kl batch (GEMM mode split: bf16 hi + lo; emu: an emulated
// format), an upper estimate from shard_stage_bytes's and stream_mode_bytes's (without the logits, which a
// merged batch never computes, and with one layer's saved inputs).
double merge_window_bytes(const Config* c, int T, int split, int emu);

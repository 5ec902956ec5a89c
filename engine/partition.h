// How work is shared among GPUs: calibration windows for data parallelism, decoder layers for a pipeline.
#pragma once

// n windows among parts: contiguous, balanced ranges, the first n % parts ranges one window longer.
void partition_windows(int n, int parts, int i, int* lo, int* hi);

// Layer ranges for pipeline stages (--shard-layers): stage s holds layers bounds[s]..bounds[s+1]-1
// (bounds has parts + 1 entries; every stage at least one layer). The largest stage's work is as small
// as it can be (work[l] per layer, head_work besides on the first stage, tail_work on the last: the final
// norm, lm_head and the loss) while each stage's bytes (bytes[l] per layer, head_bytes besides on the first:
// the embedding, tail_bytes on the last) fit its cap[s]. Returns 0 when no split fits.
typedef struct {
    int L, parts;
    const double *work, *bytes; // (L)
    double head_work, tail_work, head_bytes, tail_bytes;
    const double* cap; // (parts)
} LayerSplit;
int partition_layers(const LayerSplit* p, int* bounds);

// A rank's per-window rows (its windows lo..hi-1, n values each) into full (every window's rows), the other
// rows left as they are (zeros): an fp64 all-reduce (sum) of every rank's full then gives each window's rows
// exactly, in window order, since each entry has one nonzero term (a --nccl-init run's per-window scores).
void partition_place_rows(double* full, const double* own, int lo, int hi, long n);

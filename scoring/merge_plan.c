#include "merge_plan.h"

#include <math.h>

#include "shard_plan.h"
#include "stream_plan.h"

int merge_waves(int n_pass, int per_wave, int* start) {
    if (per_wave < 1) per_wave = 1;
    int n = (n_pass + per_wave - 1) / per_wave, base = n ? n_pass / n : 0, extra = n ? n_pass % n : 0;
    start[0] = 0;
    for (int w = 0; w < n; w++) start[w + 1] = start[w] + base + (w < extra);
    return n;
}

int merge_wave_size(double avail, double pass_bytes, int n_pass, int* n_waves) {
    double fit = pass_bytes > 0 ? floor(avail / pass_bytes) : n_pass;
    int per = fit >= n_pass ? n_pass : fit < 1 ? 1 : (int)fit;
    int n = n_pass > 0 ? (n_pass + per - 1) / per : 0;
    if (n_waves) *n_waves = n;
    return n ? (n_pass + n - 1) / n : per; // waves of equal size: no last one nearly empty
}

int merge_plan(const MergeSpec* s, MergePlan* p) {
    int B = s->B, bm = s->bm_max > B ? s->bm_max : B;
    double left = s->avail - s->fixed_bytes;
    if (left >= bm * s->window_bytes + s->n_pass * s->pass_bytes) { // everything fits: one wave
        p->bm = bm, p->per_wave = s->n_pass, p->n_waves = s->n_pass > 0;
        return 1;
    }
    double half = (left - s->pass_bytes) / 2; // the merged batch takes up to half, the states the rest
    int fit = s->window_bytes > 0 ? (int)fmin(floor(half / s->window_bytes), bm) : bm;
    p->bm = fit > B ? fit : B;
    double states = left - p->bm * s->window_bytes;
    if (states < s->pass_bytes) {
        p->bm = B, p->per_wave = 1, p->n_waves = s->n_pass;
        return 0;
    }
    p->per_wave = merge_wave_size(states, s->pass_bytes, s->n_pass, &p->n_waves);
    return 1;
}

int merge_older(const int* birth, int p0, int p1, int l, int* born) {
    int older = 0, at = 0;
    for (int p = p0; p < p1; p++) older += birth[p] < l, at += birth[p] == l;
    if (born) *born = at;
    return older;
}

double merge_window_bytes(const Config* c, int T, int split, int emu) {
    double one = shard_stage_bytes(c, 0, T, 1, 1, 0, 0, 0) - shard_stage_bytes(c, 0, T, 0, 1, 0, 0, 0);
    one -= 8.0 * T * c->vocab_size; // the last stage's logits (twice): a merged batch runs no head
    one += stream_mode_bytes(c, T, 1, split, emu) - stream_mode_bytes(c, T, 0, split, emu);
    return one + 4.0 * T * c->hidden_size; // the saved inputs of one layer
}

// Runs a mixed recipe (every chosen group quantized at once) and measures
// what the per-group scores predicted: KL to the unquantized model (same
// units as the kl score) and the change in mean next-token NLL.
#pragma once
#include "../datasets/npy.h"
#include "../engine/model.h"
#include "../scoring/format.h"

typedef struct {
    double kl;      // sum over samples and positions
    double nll_ref; // mean over samples of the per-sample mean NLL
    double nll_q;
    int n_quantized; // linears quantized
} VerifyResult;

// choice[i] per linear of the model: -1 keeps it, else an index into fmts.
void verify_run(const Model* m, const TokenIds* ids, const Format* fmts, const int* choice, VerifyResult* r);

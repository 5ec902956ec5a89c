// The Qwen3 decoder forward pass (SPEC §3) and its backward with respect to
// activations only (the gradient score needs dL/dY of every linear, never
// weight gradients). One sample of T tokens at a time, fp32 on the CPU.
#pragma once
#include "../kernels/kernels.h"
#include "model.h"

// What one forward pass does to each linear: NULL wq keeps it in full precision.
typedef struct {
    const float** wq;   // (n_linears) fake-quantized weight (out, in) or NULL
    QuantSpec* in_spec; // (n_linears) input quantizer; bits == 0 disables it
} QuantPlan;

typedef struct {
    float* h_in;      // (T, D) residual stream entering the layer
    float* a;         // (T, D) input_layernorm(h_in): the input of q, k, v
    float* rstd_in;   // (T)
    float* q_lin;     // (T, H*hd) q_proj output, before q_norm
    float* k_lin;     // (T, KV*hd)
    float* q_rstd;    // (T*H)
    float* k_rstd;    // (T*KV)
    float* q;         // (T, H, hd) normed and rotated
    float* k;         // (T, KV, hd)
    float* v;         // (T, KV, hd)
    float* att;       // (T, H*hd) attention output: the input of o_proj
    float* lse;       // (H, T)
    float* h_mid;     // (T, D)
    float* m;         // (T, D) post_attention_layernorm(h_mid): input of gate, up
    float* rstd_post; // (T)
    float* g;         // (T, I)
    float* u;         // (T, I)
    float* act;       // (T, I) silu(g) * u: the input of down_proj
} LayerActs;

typedef struct {
    int T;
    int save;        // keep every layer's activations (needed by backward and prefix reuse)
    LayerActs* acts; // (L); without save every entry shares one set of buffers
    float* h_final;  // (T, D)
    float* hf;       // (T, D) final norm output
    float* rstd_f;   // (T)
    float* logits;   // (T, V)
    float* xq;       // (T, max in) quantized input scratch
    RopeTable rope;
} RunState;

void run_init(RunState* s, const Model* m, int T, int save);
void run_free(RunState* s, const Model* m);
// Embeds ids into acts[0].h_in.
void model_embed(const Model* m, RunState* s, const int* ids);
// Runs layers start..L-1 from acts[start].h_in, then the final norm and lm_head.
void model_forward_from(const Model* m, RunState* s, int start, const QuantPlan* plan);
// Full forward of ids; plan may be NULL.
void model_forward(const Model* m, RunState* s, const int* ids, const QuantPlan* plan);

// Called with dL/dY of linear `index` (T, out) as backward reaches it.
typedef void (*GradHook)(int index, const float* dy, void* ctx);
typedef struct {
    float *dh, *dh2, *da, *dq, *dk, *dv, *datt, *dm, *dg, *du, *dact, *dlogits;
} GradState;
void grad_init(GradState* g, const Model* m, int T);
void grad_free(GradState* g);
// Backward of mean next-token cross-entropy through a saved forward (save=1,
// no quantization). Returns the loss. Calls hook for every linear.
double model_backward(const Model* m, RunState* s, GradState* g, const int* ids, GradHook hook, void* ctx);

// Applies one linear, quantized or not, as the plan says: out (T, lin.out).
void linear_apply(const Model* m, RunState* s, int index, float* out, const float* x, const QuantPlan* plan);

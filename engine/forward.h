// The Qwen3 decoder forward pass (README §3) and its backward with respect to
// activations only (the gradient score needs dL/dY of every linear, never
// weight gradients). One sample of T tokens at a time, fp32 on the CPU.
#pragma once
#include "../kernels/attention.h"
#include "../kernels/embed.h"
#include "../kernels/gated_delta.h"
#include "../kernels/loss.h"
#include "../kernels/matmul.h"
#include "../kernels/moe.h"
#include "../kernels/quant.h"
#include "../kernels/rmsnorm.h"
#include "../kernels/rope.h"
#include "../kernels/swiglu.h"
#include "model.h"

// What one forward pass does to each linear: NULL wq keeps it in full precision.
typedef struct {
    const float** wq;   // (n_linears) fake-quantized weight (out, in) or NULL
    QuantSpec* in_spec; // (n_linears) input quantizer; bits == 0 disables it
    // (num_layers) KV-cache quantizer of each full-attention layer (README §4): K (after k_norm and RoPE) and
    // V fake-quantized as the cache stores them, before attention reads them; NULL or bits == 0: bf16.
    QuantSpec* kv;
} QuantPlan;

// The rows of a sparse layer's experts, one per assignment (token t, rank k), grouped by expert in
// the order of LayerActs.order.
typedef struct {
    float* g;   // (T K, I_moe) gate outputs
    float* u;   // (T K, I_moe) up outputs
    float* act; // (T K, I_moe) silu(g) * u: the input of down
    float* ye;  // (T K, D) down outputs, before the routing weight
} MoeRows;

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
    // sparse layers only (README §3): routing on m, then the experts on their tokens
    float* r_logits; // (T, E) router logits
    float* probs;    // (T, E) their softmax
    int* idx;        // (T, K) top-k experts of each token, rank order
    float* w;        // (T, K) their weights (renormalised when the config says)
    int* order;      // (T K) assignments t K + k sorted by expert (moe_sort)
    int* offs;       // (E+1) first row of each expert in order
    int* pos;        // (T K) row of each assignment
    MoeRows ex;
    float* y_moe; // (T, D) the routed experts' sum (without the shared expert) before the residual add
    // gated attention (hybrid families): q_proj yields query and gate per head
    float* q_raw; // (T, 2 H hd) q_proj output: per head hd query values then hd gate values
    float* gate;  // (T, H hd) the gate logits
    float* att_g; // (T, H hd) att * sigmoid(gate): the input of o_proj
    // Gated DeltaNet layers (README §3)
    float* g_raw;  // (T, 2 Hk dk + 2 Hv dv) Qwen3-Next's in_proj_qkvz output, per key-head group
    float* g_raw2; // (T, 2 Hv) Qwen3-Next's in_proj_ba output
    float* g_qkv;  // (T, C) q | k | v before the conv
    float* g_z;    // (T, Hv dv)
    float* g_b;    // (T, Hv)
    float* g_a;    // (T, Hv)
    float* g_out;  // (T, Hv dv) the core's output: the input of out_proj
    GdnCache* gdn; // saved for the backward (save only)
    // the shared expert of a sparse layer: y += sigmoid(m sh_w^T) down(silu(gate(m)) * up(m))
    float* sh_g;   // (T, I_sh)
    float* sh_u;   // (T, I_sh)
    float* sh_act; // (T, I_sh) the input of shared_expert.down_proj
    float* sh_y;   // (T, D) shared_expert.down_proj output
    float* sh_s;   // (T) sigmoid of the shared expert gate
} LayerActs;

typedef struct {
    int T;
    int save;        // keep every layer's activations (needed by backward and prefix reuse)
    LayerActs* acts; // (L); without save every entry shares one set of buffers
    float* h_final;  // (T, D)
    float* hf;       // (T, D) final norm output
    float* rstd_f;   // (T)
    float* logits;   // (T, V)
    float* xq;       // (T max(K, 1), max in) quantized input scratch
    float* xs;       // (T K, D) a sparse layer's inputs gathered by expert
    RopeTable rope;
} RunState;

// Exits 2 when windows of T tokens are longer than the model's max_position_embeddings.
void model_check_seq_len(const Model* m, int T, const char* what);
void run_init(RunState* s, const Model* m, int T, int save);
void run_free(RunState* s, const Model* m);
// Embeds ids into acts[0].h_in.
void model_embed(const Model* m, RunState* s, const int* ids);
// Runs layers start..L-1 from acts[start].h_in, then the final norm and lm_head.
void model_forward_from(const Model* m, RunState* s, int start, const QuantPlan* plan);
// Layer l alone, from acts[l].h_in into h_out (T, D) (GPTQ's sequential pass, one layer at a time).
void model_forward_layer(const Model* m, RunState* s, int l, float* h_out, const QuantPlan* plan);
// Full forward of ids; plan may be NULL.
void model_forward(const Model* m, RunState* s, const int* ids, const QuantPlan* plan);

// Called with dL/dY of linear `index` (T, out) as backward reaches it. A sparse layer's experts
// are seen as one block instead (their linears get no call): index = moe_hook_index(l) < 0, dy =
// dL/dY of the block output acts[l].y_moe (T, D), which equals dL/dh there; the block's input is
// acts[l].m.
typedef void (*GradHook)(int index, const float* dy, void* ctx);
static inline int moe_hook_index(int l) { return -1 - l; }
static inline int moe_hook_layer(int index) { return -1 - index; }
// With GradState.kv_hooks, full-attention layer l also calls the hook with dL/dK (which 0; post-RoPE K, (T,
// KV hd)) and dL/dV (which 1) as attention reads them: index kv_hook_index(L, l, which) < -L.
static inline int kv_hook_index(int L, int l, int which) { return -1 - L - 2 * l - which; }
static inline int kv_hook_layer(int L, int index) { return (-1 - L - index) / 2; }
static inline int kv_hook_which(int L, int index) { return (-1 - L - index) % 2; }
typedef struct {
    float *dh, *dh2, *da, *dq, *dk, *dv, *datt, *dm, *dg, *du, *dact, *dlogits;
    // sparse layers: routing weights (T K), router logits (T, E), rows (T K, D) and (T K, I_moe)
    float *dw, *drl, *dye, *dxs, *dgm, *dum, *dactm;
    // hybrid families: gated attention, Gated DeltaNet, shared expert
    float *dgate, *dqraw, *dg_qkv, *dg_z, *dg_b, *dg_a, *dg_raw, *dg_raw2, *dg_out, *dsh_g, *dsh_u, *dsh_act,
        *dsh_y;
    int kv_hooks; // call the hook with dL/dK and dL/dV of every full-attention layer (kv_hook_index)
} GradState;
void grad_init(GradState* g, const Model* m, int T);
void grad_free(GradState* g);
// Backward of mean next-token cross-entropy through a saved forward (save=1,
// no quantization). Returns the loss. Calls hook for every linear.
double model_backward(const Model* m, RunState* s, GradState* g, const int* ids, GradHook hook, void* ctx);

// Applies one linear, quantized or not, as the plan says: out (T, lin.out).
void linear_apply(const Model* m, RunState* s, int index, float* out, const float* x, const QuantPlan* plan);
// The same on n rows (n <= T max(K, 1)).
void linear_apply_rows(const Model* m, RunState* s, int index, float* out, const float* x, int n,
                       const QuantPlan* plan);
// The experts of sparse layer l on the routing saved in acts[l] (router and routing are never
// quantized): y (T, D) = sum over k of w_k down_e(silu(gate_e(m)) * up_e(m)), every expert linear
// quantized as the plan says; r receives the per-assignment rows.
void moe_experts_apply(const Model* m, RunState* s, int l, const MoeRows* r, float* y, const QuantPlan* plan);
// Tokens routed to each expert of sparse layer l in the last pass: counts (E) += them.
void moe_count_tokens(const Model* m, const RunState* s, int l, long* counts);
// The largest row count of the quantization scratch: T, or T K with experts.
int run_rows(const Model* m, int T);
// The input X of linear lin in a saved pass (experts: their layer's MLP input, before gathering).
const float* model_linear_input(const RunState* r, const Linear* lin);

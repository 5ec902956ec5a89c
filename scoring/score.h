// Per-group sensitivity scores on the CPU (README, "Scoring"): KL divergence with prefix reuse,
// and the gradient (Fisher) proxy from one activation-only backward.
#pragma once
#include "../datasets/npy.h"
#include "../engine/forward.h"
#include "format.h"
#include "groups.h"

typedef enum { METHOD_KL, METHOD_GRADIENT } Method;

// Whether format f is a choice of group g: KV-cache formats for KV-cache groups, the others for linears
// (the other pairs are never scored: their score is 0 and search never offers them).
static inline int format_fits(const Format* f, const Group* g) { return f->kv == g->kv; }

// Fake-quantized weights for every (format, candidate linear of an enabled group).
typedef struct {
    int nf, nl;
    float** wq; // (nf * nl); NULL for linears of disabled groups
} QuantCache;

void qcache_init(QuantCache* qc, const Model* m, const Groups* gs, const Format* fmts, int nf);
void qcache_free(QuantCache* qc);

// A plan with nothing quantized; plan_set_group quantizes one group with format f.
void plan_init(QuantPlan* p, const Model* m);
void plan_free(QuantPlan* p);
void plan_clear(QuantPlan* p, const Model* m);
void plan_set_group(QuantPlan* p, const QuantCache* qc, const Groups* gs, const Format* fmts, int g, int f);

typedef struct {
    const Model* m;
    const Groups* gs;
    const Format* fmts;
    int nf;
    Method method;
    QuantCache qc;
    int qc_owned;  // qc built by scorer_init (round-to-nearest), not given
    double* score; // (nf, n_groups): where the sample being scored adds
    // (n_sparse, E) where the tokens routed to each expert of each sparse layer (in layer order)
    // in the unquantized pass add, or NULL
    long* expert_tokens;
    // scratch
    RunState ref, q;
    GradState grad;
    QuantPlan plan;
    int* kv_group; // (num_layers) the KV-cache group of each layer, or -1
    float *ref_logits, *y, *yq;
    MoeRows mq; // a sparse layer's expert rows in the gradient score's quantized block
    // kl in layer-major order (AUTOQ_KL_ORDER=layer-major): while layer l runs, the reference and every
    // pass born at or before l (a (format, group) pass is born at its group's layer from the reference's
    // input there) advance through it; states (n_pass, T, D), one per pass
    int layer_major;
    int n_pass;
    int *pass_f, *pass_g; // (n_pass) the format and group of each pass, in the group-major order
    float* states;
} Scorer;

void scorer_init(Scorer* s, const Model* m, const Groups* gs, const Format* fmts, int nf, Method method, int T);
// The same with the candidate weights given (GPTQ, scoring/quantizer.h); qc must outlive s.
void scorer_init_with(Scorer* s, const Model* m, const Groups* gs, const Format* fmts, int nf, Method method,
                      int T, const QuantCache* qc);
void scorer_free(Scorer* s);
// Adds one calibration window's contribution to score (nf, n_groups).
void scorer_add_sample(Scorer* s, const int* ids, double* score);
const char* method_name(Method m);
// The kl order: 1 layer-major, 0 group-major (the default: on the CPU it is the faster, README "Streaming"),
// from AUTOQ_KL_ORDER (layer-major | group-major); exits 2 on another value.
int kl_order_layer_major(void);

// Work done, in full forward passes, on any device: kl shows its prefix reuse here.
typedef struct {
    double forward_equiv; // what was computed
    double naive_equiv;   // what one full forward per group would have cost
} Work;
// Adds the work of scoring nb windows; recompute: the gradient's backward recomputes each layer.
void work_add(Work* w, const Model* m, const Groups* gs, int nf, Method method, int nb, int recompute);

// Built instead of the GPU scorers when nvcc is absent. The scoring job checks for a device before it
// gets here (engine/gpu_none.c reports none), so these only name the missing build.
#include <stdio.h>

#include "../engine/util.h"
#include "quantizer.h"
#include "measure_gpu.h"
#include "score_gpu.h"
#include "score_merge.h"
#include "score_stream.h"

void gpu_scorer_init(GpuScorer* s, GpuEngine* e, const GpuScoreSpec* sp) {
    (void)s, (void)e, (void)sp;
    fail_input("--device cuda: this autoq was built without CUDA");
}
void gpu_scorer_windows(GpuScorer* s, double* out) { (void)s, (void)out; }
void gpu_score_kl(GpuScorer* s, const int* ids, int nb, double* score) {
    (void)s, (void)ids, (void)nb, (void)score;
}
double gpu_score_gradient(GpuScorer* s, const int* ids, int nb, double* score) {
    (void)s, (void)ids, (void)nb, (void)score;
    return 0.0;
}
void gpu_score_multi(const GpuScoreSpec* sp, const int* ids, int n, int ngpus, double* score, double* seconds,
                     size_t* peak) {
    (void)sp, (void)ids, (void)n, (void)ngpus, (void)score, (void)seconds, (void)peak;
    fail_input("--gpus: this autoq was built without CUDA");
}
void gpu_score_ranked(const GpuScoreSpec* sp, const int* ids, int n, int rank, int world, const RdvSpec* rdv,
                      double* score, double* seconds, size_t* peak) {
    (void)sp, (void)ids, (void)n, (void)rank, (void)world, (void)rdv, (void)score, (void)seconds, (void)peak;
    fail_input("--nccl-init: this autoq was built without CUDA");
}
void gpu_score_sharded(const GpuScoreSpec* sp, const int* ids, int n, int ngpus, double* score, double* seconds,
                       size_t* peak) {
    (void)sp, (void)ids, (void)n, (void)ngpus, (void)score, (void)seconds, (void)peak;
    fail_input("--shard-layers: this autoq was built without CUDA");
}
void gpu_score_sharded_ranked(const GpuScoreSpec* sp, const int* ids, int n, int stages, int rank, int world,
                              const RdvSpec* rdv, double* score, double* seconds, size_t* peak) {
    (void)sp, (void)ids, (void)n, (void)stages, (void)rank, (void)world, (void)rdv, (void)score, (void)seconds,
        (void)peak;
    fail_input("--shard-layers: this autoq was built without CUDA");
}
void gptq_sequential_gpu(float** wq, const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                         const Quantizer* q) {
    (void)wq, (void)m, (void)ids, (void)fmts, (void)choice, (void)q;
    fail_input("--device cuda: this autoq was built without CUDA");
}

void gptq_basic_gpu_sets(float** wq, const Model* m, const TokenIds* ids, const Format* fmts,
                         const int* choices, int nsets, const Quantizer* q) {
    (void)wq, (void)m, (void)ids, (void)fmts, (void)choices, (void)nsets, (void)q;
    fail_input("--device cuda: this autoq was built without CUDA");
}

void gptq_basic_gpu(float** wq, const Model* m, const TokenIds* ids, const Format* fmts, const int* choice,
                    const Quantizer* q) {
    (void)wq, (void)m, (void)ids, (void)fmts, (void)choice, (void)q;
    fail_input("--device cuda: this autoq was built without CUDA");
}
size_t gpu_stream_free_memory(void) { return 0; }
void gpu_stream_scorer_init(GpuStreamScorer* ss, const GpuScoreSpec* sp, const StreamPlan* plan) {
    (void)ss, (void)sp, (void)plan;
    fail_input("--gpu-memory: this autoq was built without CUDA");
}
void gpu_stream_scorer_free(GpuStreamScorer* ss) { (void)ss; }
void gpu_stream_score_kl(GpuStreamScorer* ss, const int* ids, int nw, double* score, double* wrows, int more) {
    (void)ss, (void)ids, (void)nw, (void)score, (void)wrows, (void)more;
}
double gpu_stream_score_gradient(GpuStreamScorer* ss, const int* ids, int nw, double* score, double* wrows,
                                 int more) {
    (void)ss, (void)ids, (void)nw, (void)score, (void)wrows, (void)more;
    return 0.0;
}
void gpu_score_multi_stream(const GpuScoreSpec* sp, const StreamPlan* plan, double* stats, const int* ids,
                            int n, int ngpus, double* score, double* seconds, size_t* peak) {
    (void)sp, (void)plan, (void)stats, (void)ids, (void)n, (void)ngpus, (void)score, (void)seconds, (void)peak;
    fail_input("--gpus: this autoq was built without CUDA");
}
void gpu_stream_pin_hold(const Model* m, int hold) { (void)m, (void)hold; }
void gpu_stream_stats(GpuStream* st, double* h2d_bytes, double* unhidden_s) {
    (void)st;
    *h2d_bytes = *unhidden_s = 0;
}
GpuMeasure* gpu_measure_init(const Model* m, const TokenIds* held, size_t recipe_bytes, char* why, size_t n) {
    (void)m, (void)held, (void)recipe_bytes;
    snprintf(why, n, "this autoq was built without CUDA");
    return NULL;
}
GpuMeasure* gpu_measure_init_batch(const Model* m, const TokenIds* held, int B, size_t recipe_bytes, char* why,
                                   size_t n) {
    (void)B;
    return gpu_measure_init(m, held, recipe_bytes, why, n);
}
GpuMeasure* gpu_measure_stream_init(const Model* m, const TokenIds* held, const MeasurePlan* p, float* const* w,
                                    const QuantSpec* in) {
    (void)m, (void)held, (void)p, (void)w, (void)in;
    fail_input("--device cuda: this autoq was built without CUDA");
}
void gpu_measure_stats(GpuMeasure* g, double* h2d, double* unhidden_s, double* peak, double* alloc) {
    (void)g, *h2d = *unhidden_s = *peak = *alloc = 0;
}
size_t gpu_measure_free_memory(void) { return 0; }
void gpu_measure_set(GpuMeasure* g, int idx, const float* w, QuantSpec in) {
    (void)g, (void)idx, (void)w, (void)in;
}
void gpu_measure_run(GpuMeasure* g, double* kl, double* nll_ref, double* nll_q, double* wkl) {
    (void)g, (void)wkl, *kl = *nll_ref = *nll_q = 0.0;
}
void gpu_measure_free(GpuMeasure* g) { (void)g; }
void gpu_merge_scorer_init(GpuMergeScorer* ms, const GpuScoreSpec* sp, int bm, int per_wave) {
    (void)ms, (void)sp, (void)bm, (void)per_wave;
    fail_input("--device cuda: this autoq was built without CUDA");
}
void gpu_merge_scorer_free(GpuMergeScorer* ms) { (void)ms; }
void gpu_merge_score_kl(GpuMergeScorer* ms, const int* ids, int nb, double* score, double* wrows) {
    (void)ms, (void)ids, (void)nb, (void)score, (void)wrows;
}

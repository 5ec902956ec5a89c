// Built instead of the CUDA engine when nvcc is absent: no devices.
#include <stddef.h>

#include "gpu.h"
#include "util.h"

int gpu_device_count(void) { return 0; }
const char* gpu_name(void) { return "none"; }
GpuEngine* gpu_engine_init(const Model* m, int T, int B, int split) {
    (void)m, (void)T, (void)B, (void)split;
    fail_input("--device cuda: this autoq was built without CUDA (nvcc not found at build time)");
}
void gpu_engine_free(GpuEngine* e) { (void)e; }
void gpu_forward_logits(GpuEngine* e, const int* ids, int nb, float* logits) {
    (void)e, (void)ids, (void)nb, (void)logits;
}
void gpu_score_kl(GpuEngine* e, const Groups* gs, const Format* fmts, int nf, const int* ids, int nb,
                  double* score) {
    (void)e, (void)gs, (void)fmts, (void)nf, (void)ids, (void)nb, (void)score;
}
double gpu_score_gradient(GpuEngine* e, const Groups* gs, const Format* fmts, int nf, const int* ids, int nb,
                          double* score) {
    (void)e, (void)gs, (void)fmts, (void)nf, (void)ids, (void)nb, (void)score;
    return 0.0;
}
size_t gpu_peak_bytes(GpuEngine* e) {
    (void)e;
    return 0;
}

void gpu_score_multi(const Model* m, const Groups* gs, const Format* fmts, int nf, int gradient, const int* ids,
                     int n, int T, int B, int split, int ngpus, double* score, double* seconds, size_t* peak) {
    (void)m, (void)gs, (void)fmts, (void)nf, (void)gradient, (void)ids, (void)n, (void)T, (void)B, (void)split;
    (void)ngpus, (void)score, (void)seconds, (void)peak;
    fail_input("--gpus: this autoq was built without CUDA");
}

void gpu_score_sharded(const Model* m, const Groups* gs, const Format* fmts, int nf, int gradient,
                       const int* ids, int n, int T, int B, int split, int ngpus, double* score,
                       double* seconds, size_t* peak) {
    (void)m, (void)gs, (void)fmts, (void)nf, (void)gradient, (void)ids, (void)n, (void)T, (void)B, (void)split;
    (void)ngpus, (void)score, (void)seconds, (void)peak;
    fail_input("--shard-layers: this autoq was built without CUDA");
}

void gpu_score_ranked(const Model* m, const Groups* gs, const Format* fmts, int nf, int gradient,
                      const int* ids, int n, int T, int B, int split, int rank, int world, const RdvSpec* rdv,
                      double* score, double* seconds, size_t* peak) {
    (void)m, (void)gs, (void)fmts, (void)nf, (void)gradient, (void)ids, (void)n, (void)T, (void)B, (void)split;
    (void)rank, (void)world, (void)rdv, (void)score, (void)seconds, (void)peak;
    fail_input("--nccl-init: this autoq was built without CUDA");
}

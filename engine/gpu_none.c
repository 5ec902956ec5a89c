// Built instead of the CUDA engine when nvcc is absent: no devices, and an engine that cannot start.
#include <stddef.h>

#include "gpu.h"
#include "util.h"

int gpu_device_count(void) { return 0; }
const char* gpu_name(void) { return "none"; }
GpuEngine* gpu_engine_init(const Model* m, int T, int B, int gemm) {
    (void)m, (void)T, (void)B, (void)gemm;
    fail_input("--device cuda: this autoq was built without CUDA (nvcc not found at build time)");
}
int gpu_fp16_supported(const Config* c, int T) { return (void)c, (void)T, 0; }
void gpu_engine_free(GpuEngine* e) { (void)e; }
size_t gpu_peak_bytes(GpuEngine* e) {
    (void)e;
    return 0;
}
size_t gpu_alloc_bytes(GpuEngine* e) {
    (void)e;
    return 0;
}
void gpu_expert_tokens(GpuEngine* e, long* counts) { (void)e, (void)counts; }
void gpu_set_capture(GpuEngine* e, GpuCapture fn, void* ctx) { (void)e, (void)fn, (void)ctx; }
void* gpu_linear_weight(GpuEngine* e, int idx) { return (void)e, (void)idx, NULL; }
void gpu_select_device(int d) { (void)d; }
void gpu_recipe_set(GpuEngine* e, int idx, const float* w, QuantSpec in) {
    (void)e, (void)idx, (void)w, (void)in;
}
void gpu_recipe_clear(GpuEngine* e) { (void)e; }

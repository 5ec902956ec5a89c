// libFuzzer: a safetensors file (header, offsets, shapes, values) through
// st_open_file, the finite-value scan and the fp32 conversion.
#include <stdlib.h>

#include "../../engine/safetensors.h"
#include "fuzz.h"

static StCheckpoint g_ck;

static void use_checkpoint(StCheckpoint* ck) {
    for (int i = 0; i < ck->n; i++) {
        const StTensor* t = &ck->t[i];
        st_find(ck, t->name);
        if (t->dtype != DT_BF16 && t->dtype != DT_F16 && t->dtype != DT_F32) continue;
        st_check_finite(t);
        float* out = malloc(t->nbytes * 2 + 4);
        st_to_f32(t, out);
        free(out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
    const char* path = fuzz_file("model.safetensors", data, n);
    // st_free also after a failed open: no mapping may pile up.
    FUZZ_RUN(1, st_free(&g_ck), st_open_file(&g_ck, path); use_checkpoint(&g_ck));
    return 0;
}

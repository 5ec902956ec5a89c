// README §4 fake-quant numerics pinned at the rounding and clamping edges.
#include <string.h>

#include "check.h"
#include "kernels/quant.h"
#include "scoring/format.h"

static void expect_row(const char* name, const float* x, const float* want, int n, QuantSpec q) {
    float out[16];
    quant_input_rows(out, x, 1, n, q);
    int ok = 1;
    for (int i = 0; i < n; i++) ok &= out[i] == want[i];
    CHECK(ok, name, "got [%g %g %g %g ...] want [%g %g %g %g ...]", out[0], out[1], out[2], out[3], want[0],
          want[1], want[2], want[3]);
}

int main(void) {
    QuantSpec w4 = {4, 1, 0}, w4wide = {4, 0, 0}, a8 = {8, 1, 0}, ct4 = {4, 0, 1}, ct8 = {8, 0, 1};
    // amax 7 -> scale 1: rint is half to even; narrow clamps to [-7, 7].
    float x1[] = {7.0f, 2.5f, 3.5f, -2.5f, -0.5f, 0.5f, 1.5f, -6.5f};
    float y1[] = {7.0f, 2.0f, 4.0f, -2.0f, -0.0f, 0.0f, 2.0f, -6.0f};
    expect_row("int4 narrow: round half to even", x1, y1, 8, w4);
    // amax 14 -> scale 2: -14/2 = -7 stays, values beyond cannot occur; check scale application.
    float x2[] = {-14.0f, 3.0f, 5.0f, 1.0f};
    float y2[] = {-14.0f, 4.0f, 4.0f, 0.0f};
    expect_row("int4 narrow: scale amax/7, 1.5 and 2.5 round to 2", x2, y2, 4, w4);
    // narrow_range false clamps to [-8, 7] with the same amax/7 scale, and |x / s| <= 7 always:
    // with ModelOpt numerics both settings give identical values.
    float x3[] = {-7.0f, 7.0f, -3.5f, 6.5f, -6.5f, 0.3f, -1.1f, 2.2f};
    float y3[8];
    quant_input_rows(y3, x3, 1, 8, w4);
    expect_row("int4 wide = narrow under amax/7 scaling", x3, y3, 8, w4wide);
    // int8 per token: amax 127 -> scale 1.
    float x4[] = {127.0f, -126.5f, 0.5f, -127.0f};
    float y4[] = {127.0f, -126.0f, 0.0f, -127.0f};
    expect_row("int8 narrow: half to even, clamp at 127", x4, y4, 4, a8);
    // zero and tiny amax give zeros.
    float x5[] = {0.0f, 0.0f, 0.0f, 0.0f};
    expect_row("zero row gives zeros", x5, x5, 4, a8);
    float x6[] = {1e-8f, -2e-8f, 0.0f, 5e-9f};
    expect_row("amax below 2^-24 gives zeros", x6, x5, 4, a8);
    // compressed-tensors: scale amax/7.5, clamp [-8, 7]: +7.5 -> rint 8 -> clamps to 7; -7.5 -> -8 stays.
    float x7[] = {7.5f, -7.5f, 3.5f, -0.75f};
    float y7[] = {7.0f, -8.0f, 4.0f, -1.0f};
    expect_row("compressed-tensors int4: amax/7.5, clamp [-8, 7]", x7, y7, 4, ct4);
    float x8[] = {127.5f, -127.5f, 2.5f, 0.0f};
    float y8[] = {127.0f, -128.0f, 2.0f, 0.0f};
    expect_row("compressed-tensors int8: amax/127.5, clamp [-128, 127]", x8, y8, 4, ct8);
    // Weights are per output row: each row has its own scale.
    float w[] = {7.0f, 1.0f, 0.0f, 0.0f, 0.5f, 0.2f}, wq[6];
    quant_weight_rows(wq, w, 2, 3, w4);
    CHECK(wq[0] == 7.0f && wq[1] == 1.0f && wq[3] == 0.0f && wq[4] == 0.5f && wq[5] == 3.0f * (0.5f / 7.0f),
          "weights quantized per output row", "row1 = %g %g %g", wq[3], wq[4], wq[5]);
    // Format files
    Format f;
    format_load(&f, "configs/formats/w4a8.json", 0);
    CHECK(f.w.bits == 4 && f.w.narrow && f.in.bits == 8 && f.in.narrow && f.bits == 4 && f.w_enable &&
              f.in_enable,
          "w4a8.json parsed", "bits %d/%d narrow %d/%d cost %d", f.w.bits, f.in.bits, f.w.narrow, f.in.narrow,
          f.bits);
    format_load(&f, "configs/formats/w8a8.json", 1);
    CHECK(f.w.bits == 8 && f.bits == 8 && f.w.ct && f.in.ct, "w8a8.json parsed", "bits %d", f.bits);
    return g_fail ? 1 : 0;
}

// Host parts of multi-GPU scoring: window partitioning.
#include "check.h"
#include "engine/partition.h"

int main(void) {
    int ok = 1;
    for (int n = 0; n <= 40; n++)
        for (int parts = 1; parts <= 9; parts++) {
            int next = 0, mn = 1 << 30, mx = 0;
            for (int i = 0; i < parts; i++) {
                int lo, hi;
                partition_windows(n, parts, i, &lo, &hi);
                ok &= lo == next && hi >= lo;
                next = hi;
                mn = hi - lo < mn ? hi - lo : mn;
                mx = hi - lo > mx ? hi - lo : mx;
            }
            ok &= next == n && mx - mn <= 1;
        }
    CHECK(ok, "windows split into contiguous ranges covering all, sizes within one", "violated");
    return g_fail ? 1 : 0;
}

#include "partition.h"

void partition_windows(int n, int parts, int i, int* lo, int* hi) {
    int base = n / parts, extra = n % parts;
    *lo = i * base + (i < extra ? i : extra);
    *hi = *lo + base + (i < extra ? 1 : 0);
}

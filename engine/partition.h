// How n calibration windows are shared among parts (GPUs): contiguous,
// balanced ranges, the first n % parts ranges one window longer.
#pragma once

void partition_windows(int n, int parts, int i, int* lo, int* hi);

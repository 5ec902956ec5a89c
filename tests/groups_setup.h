// The scoring tests' groups (test_score.c, test_moe.c, test_kl_order.c, test_gptq.c, test_gpu.c): a model's
// groups as autoq score builds them by default, and the w4a8 format most of them score.
#pragma once
#include "scoring/format.h"
#include "scoring/groups.h"

// Grouped (no --no-grouping), DEFAULT_DISABLED's patterns disabled; with kv each full-attention layer's
// KV-cache group too (groups_add_kv). Free with groups_free.
static inline void groups_default(Groups* gs, const Model* m, int kv) {
    Patterns dis;
    patterns_parse(&dis, DEFAULT_DISABLED);
    groups_build(gs, m, 0, &dis);
    if (kv) groups_add_kv(gs, m, &dis);
    patterns_free(&dis);
}

// groups_default without KV-cache groups, and f = configs/formats/w4a8.json in autoq's numerics.
static inline void groups_w4a8(Groups* gs, Format* f, const Model* m) {
    groups_default(gs, m, 0);
    format_load(f, "configs/formats/w4a8.json", 0);
}

#include "kv_scales.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/forward.h"
#include "../engine/input.h"
#include "../engine/util.h"

int kv_recipe_uses_kv(const char* path) {
    json_t* j = input_json(path, "recipe", JSON_REJECT_DUPLICATES);
    json_t *fs = json_object_get(j, "formats"), *gs = json_object_get(j, "groups"), *f, *g;
    size_t i, k;
    int uses = 0;
    // a format whose definition holds the KV-cache quantizer, chosen by some group
    json_array_foreach(fs, i, f) {
        json_t* qc = json_object_get(json_object_get(f, "definition"), "quant_cfg");
        const char* name = json_string_value(json_object_get(f, "name"));
        if (!json_object_get(qc, KV_QUANTIZER_KEY) || !name) continue;
        json_array_foreach(gs, k, g) {
            const char* ch = json_string_value(json_object_get(g, "choice"));
            uses |= ch && strcmp(ch, name) == 0;
        }
    }
    json_decref(j);
    return uses;
}

void kv_calibrate(const Model* m, const TokenIds* ids, float* amax) {
    int L = m->c.num_layers, T = ids->t;
    long n = (long)T * m->c.num_kv_heads * m->c.head_dim;
    memset(amax, 0, sizeof(float) * 2 * L);
    RunState s;
    run_init(&s, m, T, 1);
    for (int w = 0; w < ids->n; w++) {
        model_forward(m, &s, ids->ids + (long)w * T, NULL);
        for (int l = 0; l < L; l++) {
            if (m->c.linear[l]) continue;
            const LayerActs* a = &s.acts[l];
            for (long i = 0; i < n; i++) {
                amax[2 * l] = fmaxf(amax[2 * l], fabsf(a->k[i]));
                amax[2 * l + 1] = fmaxf(amax[2 * l + 1], fabsf(a->v[i]));
            }
        }
    }
    run_free(&s, m);
}

float kv_fp8_scale(float amax) { return amax > 0.0f ? amax / 448.0f : 1.0f; }

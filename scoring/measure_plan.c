#include "measure_plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/util.h"
#include "groups.h"
#include "shard_plan.h"

int measure_batch(int T, int V, int n) {
    int B = 8192 / T > 0 ? 8192 / T : 1;
    while (B > 1 && sizeof(float) * (size_t)B * T * V > (2UL << 30)) B--;
    return B > n ? (n > 0 ? n : 1) : B;
}

double measure_spec(StreamSpec* s, const double* extra, double batch_bytes, double fixed_more, double table,
                    double held) {
    double* lb = xmalloc(sizeof(double) * s->L);
    double most_l = 0, most_x = 0, most = 0, sum = 0;
    for (int l = 0; l < s->L; l++) {
        lb[l] = s->layer_bytes[l] + extra[l];
        most_l = fmax(most_l, s->layer_bytes[l]);
        most_x = fmax(most_x, extra[l]);
        most = fmax(most, lb[l]);
        sum += lb[l];
    }
    double resident = s->fixed_bytes + fixed_more + table + sum + held + s->batch_bytes;
    s->layer_bytes = lb;
    // gpu_stream_extra's two slots are the largest extra each, beside the two layer slots of the largest layer
    s->fixed_bytes += fixed_more + batch_bytes + 2 * (most_l + most_x - most);
    int* birth = xmalloc(sizeof(int));
    birth[0] = 0; // the quantized state: born with the reference at layer 0
    s->birth_layer = birth;
    s->n_births = 1;
    s->gradient = 0;
    s->no_spill = 1;
    s->force = 1;
    return resident;
}

void measure_spec_free(StreamSpec* s) {
    free((double*)s->layer_bytes);
    free((int*)s->birth_layer);
    s->layer_bytes = NULL;
    s->birth_layer = NULL;
}

// The measurement's spec of engine batch B (stream_spec_model's model counts, no groups), into s; returns the
// resident measurement's bytes.
static double model_spec(StreamSpec* s, const Config* c, const double* extra, int T, int B, int n, double cap) {
    Groups none;
    memset(&none, 0, sizeof(none));
    stream_spec_model(s, c, &none, NULL, 0, 0, T, B, n, cap, 1, 1);
    double M = (double)B * T, V = c->vocab_size, D = c->hidden_size, I = c->moe_intermediate;
    double batch = 4 * M * V + 8 * M;                       // an engine batch's reference logits and KL rows
    double more = 4.0 * n * T + 8.0 * n + 64;               // the windows' ids, their KLs, the sums
    if (c->n_sparse) more += 4 * M * c->top_k * fmax(D, I); // a recipe's gathered expert rows
    double held = 4.0 * n * T * V;
    StreamSpec b = *s; // stream_spec_model's arrays, freed once measure_spec has its own
    double r = measure_spec(s, extra, batch, more, 2 * V * D, held);
    stream_spec_free(&b);
    return r;
}

int measure_plan(MeasurePlan* p, const Config* c, const double* extra, int T, int n, int B0, double cap,
                 int force, int k_force) {
    memset(p, 0, sizeof(*p));
    int B = B0 > 0 ? (B0 < n ? B0 : n) : measure_batch(T, c->vocab_size, n);
    for (int first = 1;; first = 0) {
        StreamSpec s;
        double res = model_spec(&s, c, extra, T, B, n, cap);
        if (first) p->resident = res;
        if (first && !force && res <= cap) {
            measure_spec_free(&s);
            p->B = B;
            return 1;
        }
        s.k_force = k_force;
        int ok = stream_plan(&s, &p->sp);
        measure_spec_free(&s);
        if (ok) {
            p->streamed = 1;
            p->B = B;
            return 1;
        }
        p->need = p->sp.gpu_bytes;
        stream_plan_free(&p->sp);
        if (B == 1) return 0;
        B /= 2;
    }
}

void measure_plan_free(MeasurePlan* p) { stream_plan_free(&p->sp); }

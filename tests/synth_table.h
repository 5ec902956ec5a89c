// A small synthetic scores table for the search tests (test_bootstrap.c, test_refine.c): ng groups
// "model.layers.g.mlp.down_proj" of one 128 x 256 linear each, formats w4a8 and w8a8, kl scores, all zero
// (the test fills t->score). synth_table_kv turns its last groups into KV-cache groups; synth_search_bytes
// searches such a table with a byte budget.
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scoring/format.h"
#include "scoring/table.h"
#include "search/recipe.h"

static void synth_table_init(ScoreTable* t, const char* model, int ng, int num_samples) {
    memset(t, 0, sizeof(*t));
    snprintf(t->model, sizeof(t->model), "%s", model);
    snprintf(t->method, sizeof(t->method), "kl");
    snprintf(t->numerics, sizeof(t->numerics), "modelopt");
    snprintf(t->quantizer, sizeof(t->quantizer), "rtn");
    t->nf = 2;
    format_load(&t->fmts[0], "w4a8", 0);
    format_load(&t->fmts[1], "w8a8", 0);
    t->num_samples = num_samples;
    t->seq_len = 8;
    t->ng = t->nl = ng;
    t->gname = calloc(ng, sizeof(char*));
    t->gmembers = calloc(ng, sizeof(char*));
    t->lname = calloc(ng, sizeof(char*));
    t->params = calloc(ng, sizeof(long));
    t->active = calloc(ng, sizeof(long));
    t->disabled = calloc(ng, 1);
    t->score = calloc((size_t)t->nf * ng, sizeof(double));
    t->lshape = calloc(2 * (size_t)ng, sizeof(long));
    t->lgroup = calloc(ng, sizeof(int));
    for (int g = 0; g < ng; g++) {
        char name[64];
        snprintf(name, sizeof(name), "model.layers.%d.mlp.down_proj", g);
        t->gname[g] = strdup(name);
        t->gmembers[g] = strdup(name);
        t->lname[g] = strdup(name);
        t->params[g] = t->active[g] = 128 * 256;
        t->lshape[2 * g] = 128, t->lshape[2 * g + 1] = 256;
        t->lgroup[g] = g;
    }
}

// The last n_kv groups become the KV-cache groups of layers 0 .. n_kv - 1 ("model.layers.l.self_attn.kv_cache",
// no members, no parameters, 64 values per token: 2 x KV heads x head_dim), formats 1 and 2 kv_fp8 and
// kv_nvfp4 (t->nf = 3), with the byte model's other parameters; the linears are the groups before them.
static void synth_table_kv(ScoreTable* t, int n_kv) {
    int first = t->ng - n_kv;
    t->nf = 3;
    format_load(&t->fmts[1], "kv_fp8", 0);
    format_load(&t->fmts[2], "kv_nvfp4", 0);
    t->nl = first;
    t->gkv = calloc(t->ng, 1);
    t->has_memory = 1;
    t->other_params = 4096;
    t->n_kvl = n_kv;
    t->kvl_name = calloc(n_kv, sizeof(char*));
    t->kvl_values = calloc(n_kv, sizeof(long));
    for (int l = 0; l < n_kv; l++) {
        int g = first + l;
        char name[64];
        snprintf(name, sizeof(name), "model.layers.%d.self_attn.kv_cache", l);
        free(t->gname[g]), free(t->gmembers[g]);
        t->gname[g] = strdup(name);
        t->gmembers[g] = strdup("");
        t->kvl_name[l] = strdup(name);
        t->kvl_values[l] = 64;
        t->params[g] = t->active[g] = 0;
        t->gkv[g] = 1;
    }
    free(t->score);
    t->score = calloc((size_t)t->nf * t->ng, sizeof(double));
}

// A quiet search over t with a byte budget (true bits, memory cost, candidates scope): KV caches of context
// tokens x 1 sequence, 1024 bytes of overhead. Free with search_free.
static void synth_search_bytes(SearchCtx* c, const ScoreTable* t, long context) {
    search_init(c, t, SCOPE_CANDIDATES, COST_MEMORY, BITS_TRUE);
    MemBudget mb = {1, context, 1, 1024};
    search_set_memory(c, &mb);
    c->quiet = 1;
}

// Layer groups that share one quantization decision and the disabled_layers
// wildcards of README §5.
#pragma once
#include "../engine/model.h"

#define DEFAULT_DISABLED "*lm_head*,*vpm*,*resampler*,*visual*"

typedef struct {
    int n;
    char** pat;
    int* hits; // modules each pattern matched
} Patterns;

// Splits a comma-separated list; empty items are ignored.
void patterns_parse(Patterns* p, const char* csv);
void patterns_free(Patterns* p);
// fnmatch rules as Python's fnmatch: * crosses dots, no backslash escapes, case-sensitive.
int patterns_match(Patterns* p, const char* name);

typedef struct {
    char name[160];
    int* members; // (n_members) linear indices; a layer's experts group holds 3 E of them
    int n_members;
    int experts; // 1: the experts group of a sparse layer (scored as one block, README §6)
    int kv;      // 1: a full-attention layer's KV cache (<prefix>layers.L.self_attn.kv_cache): no members, no
                 // weights (params 0); its choices are the KV-cache formats (README §5)
    long params;
    int layer;
    int disabled;
} Group;

typedef struct {
    int n;
    Group* g;
    int* group_of; // (n_linears)
    int n_enabled;
} Groups;

// Groups {q,k,v}, {gate,up}, o_proj, down_proj (or one per linear with
// no_grouping); in a sparse layer every expert's gate, up and down form one
// group <prefix>layers.L.mlp.experts (no_grouping too), and the router is never
// a candidate. Marks groups with any disabled member. Warns for patterns that
// match no module of the model (candidates, routers, lm_head, visual tower).
void groups_build(Groups* gs, const Model* m, int no_grouping, Patterns* disabled);
void groups_free(Groups* gs);
// Adds the KV-cache group of every full-attention layer (a Gated DeltaNet layer's recurrent state is
// fixed-size: no KV cache, no group), each after its layer's groups; disabled when a pattern matches its
// name. Call once after groups_build when a KV-cache format is scored.
void groups_add_kv(Groups* gs, const Model* m, Patterns* disabled);
// The KV-cache group name of layer l: "<prefix>layers.L.self_attn.kv_cache".
void kv_group_name(char* out, size_t cap, const Model* m, int l);

// Layer groups that share one quantization decision and the disabled_layers
// wildcards of SPEC §5.
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
    int members[3]; // linear indices
    int n_members;
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
// no_grouping); marks groups with any disabled member. Warns for patterns
// that match no module of the model (candidates, lm_head, visual tower).
void groups_build(Groups* gs, const Model* m, int no_grouping, Patterns* disabled);
void groups_free(Groups* gs);

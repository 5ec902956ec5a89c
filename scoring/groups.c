#include "groups.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/util.h"

void patterns_parse(Patterns* p, const char* csv) {
    memset(p, 0, sizeof(*p));
    char* s = xstrdup(csv ? csv : "");
    int cap = 1;
    for (char* c = s; *c; c++) cap += *c == ',';
    p->pat = xcalloc(cap, sizeof(char*));
    p->hits = xcalloc(cap, sizeof(int));
    char* save = NULL;
    for (char* tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        size_t n = strlen(tok);
        while (n && tok[n - 1] == ' ') tok[--n] = 0;
        if (n) p->pat[p->n++] = xstrdup(tok);
    }
    free(s);
}

void patterns_free(Patterns* p) {
    for (int i = 0; i < p->n; i++) free(p->pat[i]);
    free(p->pat);
    free(p->hits);
    memset(p, 0, sizeof(*p));
}

int patterns_match(Patterns* p, const char* name) {
    int any = 0;
    for (int i = 0; i < p->n; i++)
        if (fnmatch(p->pat[i], name, FNM_NOESCAPE) == 0) {
            p->hits[i]++;
            any = 1;
        }
    return any;
}

static Group* new_group(Groups* gs, int l, int cap, const char* fmt, const char* a, const char* b) {
    Group* g = &gs->g[gs->n++];
    g->layer = l;
    g->members = xcalloc(cap, sizeof(int));
    snprintf(g->name, sizeof(g->name), fmt, a, b);
    return g;
}

static void add_member(Groups* gs, const Model* m, int idx) {
    Group* g = &gs->g[gs->n - 1];
    g->members[g->n_members++] = idx;
    g->params += (long)m->linears[idx].out * m->linears[idx].in;
    gs->group_of[idx] = gs->n - 1;
}

// Layer l's groups: attention {q,k,v} and o_proj, then {gate,up} and down_proj or the experts.
static void layer_groups(Groups* gs, const Model* m, int l, int no_grouping) {
    char pre[64];
    snprintf(pre, sizeof(pre), "%slayers.%d.", m->c.prefix, l);
    int base = m->lin0[l], n = m->lin0[l + 1] - base;
    for (int k = 0; k < n; k++) {
        int idx = base + k;
        const Linear* lin = &m->linears[idx];
        if (lin->expert >= 0) {
            if (lin->expert == 0 && lin->kind == LIN_GATE)
                new_group(gs, l, n - LIN_GATE, "%s%s", pre, "mlp.experts")->experts = 1;
            add_member(gs, m, idx);
            continue;
        }
        int joins = !no_grouping && (k == LIN_K || k == LIN_V || k == LIN_UP);
        if (!joins && (no_grouping || k == LIN_O || k == LIN_DOWN))
            new_group(gs, l, 1, "%s%s", lin->name, "");
        else if (!joins)
            new_group(gs, l, 3, "%s%s", pre, k == LIN_Q ? "self_attn.qkv" : "mlp.gate_up");
        add_member(gs, m, idx);
    }
}

void groups_build(Groups* gs, const Model* m, int no_grouping, Patterns* dis) {
    memset(gs, 0, sizeof(*gs));
    gs->g = xcalloc(m->n_linears, sizeof(Group));
    gs->group_of = xcalloc(m->n_linears, sizeof(int));
    for (int l = 0; l < m->c.num_layers; l++) layer_groups(gs, m, l, no_grouping);
    for (int i = 0; i < gs->n; i++) {
        Group* g = &gs->g[i];
        for (int j = 0; j < g->n_members; j++)
            g->disabled |= patterns_match(dis, m->linears[g->members[j]].name);
        gs->n_enabled += !g->disabled;
    }
    // Other modules count for the "matches nothing" warning, never as candidates.
    patterns_match(dis, "lm_head");
    char name[256];
    for (int l = 0; l < m->c.num_layers; l++) { // routers: counted, never candidates
        if (!model_layer_sparse(m, l)) continue;
        snprintf(name, sizeof(name), "%slayers.%d.mlp.gate", m->c.prefix, l);
        patterns_match(dis, name);
    }
    for (int i = 0; i < m->ck.n; i++) {
        const char* t = m->ck.t[i].name;
        if (strncmp(t, "model.visual.", 13) != 0) continue;
        snprintf(name, sizeof(name), "%s", t);
        char* dot = strrchr(name, '.');
        if (dot) *dot = 0; // module name: drop .weight / .bias
        patterns_match(dis, name);
    }
}

void groups_free(Groups* gs) {
    for (int i = 0; i < gs->n; i++) free(gs->g[i].members);
    free(gs->g);
    free(gs->group_of);
    memset(gs, 0, sizeof(*gs));
}

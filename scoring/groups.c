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

static Group* new_group(Groups* gs, int l, int cap, const char* name) {
    Group* g = &gs->g[gs->n++];
    g->layer = l;
    g->members = xcalloc(cap, sizeof(int));
    snprintf(g->name, sizeof(g->name), "%s", name);
    return g;
}

static void add_member(Groups* gs, const Model* m, Group* g, int idx) {
    g->members[g->n_members++] = idx;
    g->params += (long)m->linears[idx].out * m->linears[idx].in;
    gs->group_of[idx] = (int)(g - gs->g);
}

// The architecture table's row of linear lin (the experts' row for an expert's linear).
static const ArchTensor* linear_row(const Model* m, const Linear* lin) {
    return lin->expert >= 0 ? arch_experts(m->c.fam) : arch_linear(m->c.fam, lin->kind);
}

// Layer l's groups (README §5) as its family's table says: a linear joins the group its row names
// (q, k, v: self_attn.qkv; gate, up: mlp.gate_up; in_proj_qkv, in_proj_z: linear_attn.in_proj_qkvz; ...),
// or stands alone under its own name; a sparse layer's experts are one group whatever no_grouping says.
static void layer_groups(Groups* gs, const Model* m, int l, int no_grouping) {
    int base = m->lin0[l], n = m->lin0[l + 1] - base, first = gs->n;
    for (int k = 0; k < n; k++) {
        int idx = base + k;
        const Linear* lin = &m->linears[idx];
        const ArchTensor* row = linear_row(m, lin);
        char name[160];
        if (row && row->group && (lin->expert >= 0 || !no_grouping))
            snprintf(name, sizeof(name), "%slayers.%d.%s", m->c.prefix, l, row->group);
        else
            snprintf(name, sizeof(name), "%s", lin->name);
        Group* g = NULL;
        for (int j = first; j < gs->n && !g; j++)
            if (strcmp(gs->g[j].name, name) == 0) g = &gs->g[j];
        if (!g) {
            g = new_group(gs, l, n, name);
            g->experts = lin->expert >= 0;
        }
        add_member(gs, m, g, idx);
    }
}

// Module names that are never candidates count for the "matches nothing" warning: lm_head, every
// non-linear row of the architecture table (routers, shared expert gates, conv1d, norms, A_log,
// dt_bias), the vision tower and the multi-token-prediction tensors.
static void match_others(const Model* m, Patterns* dis) {
    const Config* c = &m->c;
    const ArchFamily* f = c->fam;
    char name[256];
    patterns_match(dis, "lm_head");
    for (int l = 0; l < c->num_layers; l++)
        for (int i = 0; i < f->n_tensors; i++) {
            const ArchTensor* r = &f->tensors[i];
            if (r->lin >= 0 || !arch_layer_has(c, l, r->part)) continue;
            snprintf(name, sizeof(name), "%slayers.%d.%s", c->prefix, l, r->name);
            size_t n = strlen(name);
            if (n > 7 && strcmp(name + n - 7, ".weight") == 0) name[n - 7] = 0; // the module's name
            patterns_match(dis, name);
        }
    for (int i = 0; i < m->ck.n; i++) {
        const char* t = m->ck.t[i].name;
        if (strncmp(t, "model.visual.", 13) != 0 && strncmp(t, "mtp.", 4) != 0) continue;
        snprintf(name, sizeof(name), "%s", t);
        char* dot = strrchr(name, '.');
        if (dot) *dot = 0; // module name: drop .weight / .bias
        patterns_match(dis, name);
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
    match_others(m, dis);
}

void kv_group_name(char* out, size_t cap, const Model* m, int l) {
    snprintf(out, cap, "%slayers.%d.self_attn.kv_cache", m->c.prefix, l);
}

void groups_add_kv(Groups* gs, const Model* m, Patterns* dis) {
    int L = m->c.num_layers, n = gs->n;
    Group* old = gs->g;
    gs->g = xcalloc((size_t)n + L, sizeof(Group));
    int k = 0, out = 0;
    for (int l = 0; l < L; l++) {
        while (k < n && old[k].layer == l) gs->g[out++] = old[k++];
        if (m->c.linear[l]) continue;
        Group* g = &gs->g[out++];
        g->layer = l;
        g->kv = 1;
        kv_group_name(g->name, sizeof(g->name), m, l);
        g->disabled = patterns_match(dis, g->name);
        gs->n_enabled += !g->disabled;
    }
    while (k < n) gs->g[out++] = old[k++];
    free(old);
    gs->n = out;
    for (int g = 0; g < gs->n; g++)
        for (int j = 0; j < gs->g[g].n_members; j++) gs->group_of[gs->g[g].members[j]] = g;
}

void groups_free(Groups* gs) {
    for (int i = 0; i < gs->n; i++) free(gs->g[i].members);
    free(gs->g);
    free(gs->group_of);
    memset(gs, 0, sizeof(*gs));
}

// autoq info: the model's shape, its candidate linears, their groups and what is disabled.
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/args.h"
#include "../engine/util.h"
#include "groups.h"
#include "table.h"

// The mixture-of-experts structure: experts, top-k, which layers are sparse; routers never candidates.
static void print_moe(const Model* m) {
    const Config* c = &m->c;
    printf("experts      %d per sparse layer, top-%d%s, intermediate %d; routers (mlp.gate) are never "
           "candidates\n",
           c->num_experts, c->top_k, c->norm_topk ? " renormalised" : "", c->moe_intermediate);
    printf("sparse       %d of %d layers:", c->n_sparse, c->num_layers);
    for (int l = 0; l < c->num_layers; l++)
        if (c->sparse[l]) printf(" %d", l);
    printf("\n");
}

int cmd_info(Args* a) {
    const char* dis_csv = args_str(a, "--disabled-layers");
    int json = args_flag(a, "--json");
    int no_grouping = args_flag(a, "--no-grouping");
    const char* dir = args_pos(a, 0); // required by the table (autoq.c)
    args_done(a);
    Model m;
    model_load(&m, dir);
    Patterns dis;
    patterns_parse(&dis, dis_csv ? dis_csv : DEFAULT_DISABLED);
    Groups gs;
    groups_build(&gs, &m, no_grouping, &dis);
    for (int i = 0; dis_csv && i < dis.n; i++)
        if (!dis.hits[i]) warn_msg("--disabled-layers pattern '%s' matches no module of %s", dis.pat[i], dir);
    const Config* c = &m.c;
    long cand = 0;
    for (int i = 0; i < m.n_linears; i++) cand += (long)m.linears[i].out * m.linears[i].in;
    if (json) {
        json_t* j = json_object();
        json_object_set_new(j, "model", json_string(dir));
        json_object_set_new(j, "model_type", json_string(c->model_type));
        json_object_set_new(j, "num_layers", json_integer(c->num_layers));
        json_object_set_new(j, "hidden_size", json_integer(c->hidden_size));
        json_object_set_new(j, "intermediate_size", json_integer(c->intermediate_size));
        json_object_set_new(j, "num_heads", json_integer(c->num_heads));
        json_object_set_new(j, "num_kv_heads", json_integer(c->num_kv_heads));
        json_object_set_new(j, "head_dim", json_integer(c->head_dim));
        json_object_set_new(j, "vocab_size", json_integer(c->vocab_size));
        json_object_set_new(j, "rope_theta", json_real(c->rope_theta));
        json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
        json_object_set_new(j, "params", json_integer((json_int_t)m.n_params));
        json_object_set_new(j, "candidate_params", json_integer(cand));
        json_object_set_new(j, "visual_tensors", json_integer(m.n_visual));
        if (c->n_sparse) {
            json_t* moe = json_object();
            json_object_set_new(moe, "num_experts", json_integer(c->num_experts));
            json_object_set_new(moe, "top_k", json_integer(c->top_k));
            json_object_set_new(moe, "moe_intermediate_size", json_integer(c->moe_intermediate));
            json_object_set_new(moe, "norm_topk_prob", json_boolean(c->norm_topk));
            json_t* sl = json_array();
            for (int l = 0; l < c->num_layers; l++)
                if (c->sparse[l]) json_array_append_new(sl, json_integer(l));
            json_object_set_new(moe, "sparse_layers", sl);
            json_object_set_new(moe, "router_candidate", json_false());
            json_object_set_new(j, "moe", moe);
        }
        json_t* ls = json_array();
        for (int i = 0; i < m.n_linears; i++) {
            const Linear* l = &m.linears[i];
            const Group* g = &gs.g[gs.group_of[i]];
            json_t* o = json_object();
            json_object_set_new(o, "name", json_string(l->name));
            json_object_set_new(o, "shape", json_pack("[i,i]", l->out, l->in));
            json_object_set_new(o, "params", json_integer((long)l->out * l->in));
            json_object_set_new(o, "group", json_string(g->name));
            json_object_set_new(o, "disabled", json_boolean(g->disabled));
            json_array_append_new(ls, o);
        }
        json_object_set_new(j, "linears", ls);
        json_write_file(j, NULL);
        json_decref(j);
    } else {
        printf("model        %s (%s)\n", dir, c->model_type);
        printf("layers       %d, hidden %d, intermediate %d, vocab %d\n", c->num_layers, c->hidden_size,
               c->intermediate_size, c->vocab_size);
        printf("attention    %d heads x %d, %d kv heads, rope theta %g\n", c->num_heads, c->head_dim,
               c->num_kv_heads, c->rope_theta);
        printf("lm_head      %s\n",
               c->tie_word_embeddings && m.lm_head == m.embed ? "tied to embed_tokens" : "own weight");
        printf("parameters   %zu language model, %ld in candidate linears\n", m.n_params, cand);
        if (c->n_sparse) print_moe(&m);
        if (m.n_visual) printf("visual       %d tensors under model.visual.* (not loaded)\n", m.n_visual);
        printf("groups       %d (%d enabled), disabled patterns: %s\n\n", gs.n, gs.n_enabled,
               dis_csv ? dis_csv : DEFAULT_DISABLED);
        printf("%-48s %-13s %10s  %-40s %s\n", "linear", "shape", "params", "group", "disabled");
        for (int i = 0; i < m.n_linears; i++) {
            const Linear* l = &m.linears[i];
            const Group* g = &gs.g[gs.group_of[i]];
            char shape[32];
            snprintf(shape, sizeof(shape), "%dx%d", l->out, l->in);
            printf("%-48s %-13s %10ld  %-40s %s\n", l->name, shape, (long)l->out * l->in, g->name,
                   g->disabled ? "yes" : "no");
        }
        for (int l = 0; l < c->num_layers; l++) {
            if (!c->sparse[l]) continue;
            char name[96], shape[32];
            snprintf(name, sizeof(name), "%slayers.%d.mlp.gate", c->prefix, l);
            snprintf(shape, sizeof(shape), "%dx%d", c->num_experts, c->hidden_size);
            printf("%-48s %-13s %10ld  %-40s %s\n", name, shape, (long)c->num_experts * c->hidden_size, "-",
                   "router, never a candidate");
        }
        printf("%-48s %-13s %10ld  %-40s %s\n", "lm_head", "", (long)c->vocab_size * c->hidden_size, "-",
               "never a candidate");
    }
    groups_free(&gs);
    patterns_free(&dis);
    model_free(&m);
    return 0;
}

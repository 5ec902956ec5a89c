// autoq info: the model's shape, its candidate linears, their groups and what is disabled.
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/args.h"
#include "../engine/util.h"
#include "groups.h"
#include "table.h"
#include "../search/target.h"

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

// The hybrid families' layer types, Gated DeltaNet shape, partial RoPE and shared expert (README §2).
static void print_hybrid(const Model* m) {
    const Config* c = &m->c;
    printf("layer types  %d linear_attention (Gated DeltaNet), %d full_attention:", c->n_linear,
           c->num_layers - c->n_linear);
    for (int l = 0; l < c->num_layers; l++)
        if (!c->linear[l]) printf(" %d", l);
    printf(" full\n");
    printf("deltanet     %d key heads x %d, %d value heads x %d, conv kernel %d%s\n", c->lin_hk, c->lin_dk,
           c->lin_hv, c->lin_dv, c->lin_conv,
           c->fam->fused_gdn ? "; in_proj_qkvz / in_proj_ba stored fused" : "");
    printf("gated attn   q_proj rows %d (query + output gate per head); rope on %d of %d dims "
           "(partial_rotary_factor "
           "%g)%s\n",
           2 * c->num_heads * c->head_dim, c->rotary_dim, c->head_dim, c->partial_rotary,
           c->mrope_section[0] + c->mrope_section[1] + c->mrope_section[2]
               ? "; mrope_section read, text positions make it plain RoPE"
               : "");
    if (c->shared_inter)
        printf("shared       expert of intermediate %d in every sparse layer, gated by "
               "sigmoid(shared_expert_gate)\n",
               c->shared_inter);
}

// The architecture table's non-candidate tensors of every layer other than norms: routers, shared
// expert gates, the Gated DeltaNet's conv1d, A_log, dt_bias and gated norm.
static void print_others(const Model* m) {
    const Config* c = &m->c;
    const ArchFamily* f = c->fam;
    for (int i = 0; i < f->n_tensors; i++) {
        const ArchTensor* r = &f->tensors[i];
        if (r->lin >= 0 || !r->role || strcmp(r->role, "norm") == 0) continue;
        for (int l = 0; l < c->num_layers; l++) {
            if (!arch_layer_has(c, l, r->part)) continue;
            char name[160], shape[32], why[64];
            snprintf(name, sizeof(name), "%slayers.%d.%s", c->prefix, l, r->name);
            size_t n = strlen(name);
            if (n > 7 && strcmp(name + n - 7, ".weight") == 0) name[n - 7] = 0;
            long a = arch_dim(c, r->shape[0]), b = r->ndim > 1 ? arch_dim(c, r->shape[1]) : 1;
            long k = r->ndim > 2 ? arch_dim(c, r->shape[2]) : 1;
            if (r->ndim > 1)
                snprintf(shape, sizeof(shape), "%ldx%ld", a, b * k);
            else
                snprintf(shape, sizeof(shape), "%ld", a);
            snprintf(why, sizeof(why), "%s, never a candidate", r->role);
            printf("%-48s %-13s %10ld  %-40s %s\n", name, shape, a * b * k, "-", why);
        }
    }
}

// The largest block along the input, a power of two up to 128, that divides every member's input width
// of group g: formats with larger blocks are not offered for it (README §5, format_misfit_block).
static int group_max_block(const Model* m, const Group* g) {
    int b = 128;
    for (int j = 0; j < g->n_members; j++)
        while (b > 1 && m->linears[g->members[j]].in % b) b /= 2;
    return b;
}

// Groups that cannot take blocks of 128 (int4 groups of 128; NVFP4 needs 16, MXFP4 32), by limit.
static void print_block_limits(const Model* m, const Groups* gs) {
    for (int lim = 64; lim >= 1; lim /= 2) {
        int n = 0;
        for (int i = 0; i < gs->n; i++) n += group_max_block(m, &gs->g[i]) == lim;
        if (!n) continue;
        printf("blocks       %d group(s) take blocks of at most %d along the input (formats with larger blocks "
               "are "
               "not offered for them):",
               n, lim);
        int shown = 0;
        for (int i = 0; i < gs->n && shown < 4; i++)
            if (group_max_block(m, &gs->g[i]) == lim) printf("%s %s", shown++ ? "," : "", gs->g[i].name);
        printf("%s\n", n > 4 ? ", ..." : "");
    }
}

// The KV-cache groups (README §5): one per full-attention layer, scored with a KV-cache format (kv_fp8,
// kv_nvfp4); a Gated DeltaNet layer keeps a fixed-size recurrent state instead. disabled[l]: a pattern
// matches the group's name.
static void kv_disabled(const Model* m, Patterns* dis, int* disabled) {
    for (int l = 0; l < m->c.num_layers; l++) {
        char name[192];
        kv_group_name(name, sizeof(name), m, l);
        disabled[l] = !m->c.linear[l] && patterns_match(dis, name);
    }
}

static json_t* kv_json(const Model* m, const int* disabled) {
    json_t* a = json_array();
    for (int l = 0; l < m->c.num_layers; l++) {
        char name[192];
        kv_group_name(name, sizeof(name), m, l);
        if (m->c.linear[l]) continue;
        json_array_append_new(a, json_pack("{s:s,s:i,s:i,s:b}", "name", name, "layer", l, "values_per_token",
                                           2 * m->c.num_kv_heads * m->c.head_dim, "disabled", disabled[l]));
    }
    return a;
}

static void kv_print(const Model* m, const int* disabled) {
    int full = 0;
    for (int l = 0; l < m->c.num_layers; l++) full += !m->c.linear[l];
    long v = 2L * m->c.num_kv_heads * m->c.head_dim;
    printf("\n%-48s %-13s %10s  %s\n", "KV cache (KV-cache formats kv_fp8, kv_nvfp4)", "per token",
           "bf16 bytes", "disabled");
    for (int l = 0; l < m->c.num_layers; l++) {
        char name[192];
        kv_group_name(name, sizeof(name), m, l);
        if (m->c.linear[l])
            printf("%-48s %-13s %10s  %s\n", name, "-", "-",
                   "Gated DeltaNet: a fixed-size recurrent state, no KV cache");
        else
            printf("%-48s %-13ld %10ld  %s\n", name, v, 2 * v, disabled[l] ? "yes" : "no");
    }
    printf("%d full-attention layers: %ld bytes of bf16 KV cache per token\n", full, 2 * v * full);
}

int cmd_info(Args* a) {
    const char* dis_csv = args_str(a, "--disabled-layers");
    int json = args_flag(a, "--json");
    int no_grouping = args_flag(a, "--no-grouping");
    const char* dir = args_pos(a, 0);
    const char* target_s = args_str(a, "--target");
    const char* arch_s = args_str(a, "--arch");
    args_done(a);
    if (arch_s && !target_s) fail_input("info: --arch goes with --target");
    if (!dir && !target_s) fail_input("info: MODEL is required (or --target alone, to list its rules)");
    Target target;
    if (target_s) target_load(&target, target_s, arch_s);
    if (!dir) { // the engine's rules alone
        if (json) {
            json_t* j = target_to_json(&target);
            json_write_file(j, NULL);
            json_decref(j);
        } else
            target_print(&target, stdout);
        target_free(&target);
        return 0;
    }
    Model m;
    model_load(&m, dir);
    Patterns dis;
    patterns_parse(&dis, dis_csv ? dis_csv : DEFAULT_DISABLED);
    Groups gs;
    groups_build(&gs, &m, no_grouping, &dis);
    int* kvdis = xcalloc(m.c.num_layers, sizeof(int));
    kv_disabled(&m, &dis, kvdis);
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
        if (c->fam->hybrid) {
            json_t* h = json_object();
            json_t* lt = json_array();
            for (int l = 0; l < c->num_layers; l++)
                json_array_append_new(lt, json_string(c->linear[l] ? "linear_attention" : "full_attention"));
            json_object_set_new(h, "layer_types", lt);
            json_object_set_new(h, "linear_num_key_heads", json_integer(c->lin_hk));
            json_object_set_new(h, "linear_num_value_heads", json_integer(c->lin_hv));
            json_object_set_new(h, "linear_key_head_dim", json_integer(c->lin_dk));
            json_object_set_new(h, "linear_value_head_dim", json_integer(c->lin_dv));
            json_object_set_new(h, "linear_conv_kernel_dim", json_integer(c->lin_conv));
            json_object_set_new(h, "fused_in_proj", json_boolean(c->fam->fused_gdn));
            json_object_set_new(h, "partial_rotary_factor", json_real(c->partial_rotary));
            json_object_set_new(h, "rotary_dim", json_integer(c->rotary_dim));
            json_object_set_new(h, "attn_output_gate", json_boolean(c->fam->attn_gate));
            json_object_set_new(h, "shared_expert_intermediate_size", json_integer(c->shared_inter));
            json_object_set_new(j, "hybrid", h);
            json_object_set_new(j, "mtp_tensors", json_integer(m.n_mtp));
        }
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
            int mb = group_max_block(&m, g);
            if (mb < 128) json_object_set_new(o, "max_block", json_integer(mb));
            json_array_append_new(ls, o);
        }
        json_object_set_new(j, "linears", ls);
        json_object_set_new(j, "kv_caches", kv_json(&m, kvdis));
        if (target_s) json_object_set_new(j, "target", target_to_json(&target));
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
        if (c->fam->hybrid) print_hybrid(&m);
        if (m.n_visual) printf("visual       %d tensors under model.visual.* (not loaded)\n", m.n_visual);
        if (m.n_mtp)
            printf("mtp          %d multi-token-prediction tensors under mtp.* (not loaded)\n", m.n_mtp);
        print_block_limits(&m, &gs);
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
        print_others(&m);
        printf("%-48s %-13s %10ld  %-40s %s\n", "lm_head", "", (long)c->vocab_size * c->hidden_size, "-",
               "never a candidate");
        kv_print(&m, kvdis);
        if (target_s) {
            printf("\n");
            target_print(&target, stdout);
        }
    }
    free(kvdis);
    if (target_s) target_free(&target);
    groups_free(&gs);
    patterns_free(&dis);
    model_free(&m);
    return 0;
}

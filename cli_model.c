// autoq info, eval and gen.
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_common.h"
#include "datasets/data.h"
#include "engine/forward.h"
#include "engine/generate.h"
#include "engine/util.h"
#include "scoring/groups.h"
#include "search/recipe.h"
#include "datasets/bpe_train.h"

const char* const k_json_flag[] = {"--json", NULL};

// eval --recipe / --format: the quantized model against the unquantized one.
static int eval_quantized(Model* m, TokenIds* ids, const char* recipe, const char* format, const char* dis_csv,
                          int json) {
    Format fmts[MAX_FORMATS];
    int* choice = xmalloc(sizeof(int) * m->n_linears);
    if (recipe) {
        recipe_read(recipe, m, fmts, choice);
    } else {
        format_load(&fmts[0], format, 0);
        Patterns dis;
        patterns_parse(&dis, dis_csv ? dis_csv : DEFAULT_DISABLED);
        Groups gs;
        groups_build(&gs, m, 0, &dis);
        for (int i = 0; i < m->n_linears; i++) choice[i] = gs.g[gs.group_of[i]].disabled ? -1 : 0;
        groups_free(&gs);
        patterns_free(&dis);
    }
    VerifyResult r;
    double t0 = time_now();
    verify_run(m, ids, fmts, choice, &r);
    double el = time_now() - t0;
    if (json) {
        json_t* j =
            json_pack("{s:s,s:i,s:i,s:i,s:f,s:f,s:f,s:f,s:f}", "model", m->dir, "num_samples", ids->n,
                      "seq_len", ids->t, "quantized_linears", r.n_quantized, "kl", r.kl, "nll_ref", r.nll_ref,
                      "nll_quantized", r.nll_q, "nll_delta", r.nll_q - r.nll_ref, "seconds", el);
        json_write_file(j, NULL);
        json_decref(j);
    } else {
        printf("%d of %d linears quantized; %d x %d tokens\n", r.n_quantized, m->n_linears, ids->n, ids->t);
        printf("mean nll %.6f -> %.6f (%+.6f), perplexity %.4f -> %.4f\n", r.nll_ref, r.nll_q,
               r.nll_q - r.nll_ref, exp(r.nll_ref), exp(r.nll_q));
        printf("KL to the unquantized model: %.6g summed, %.6g per token\n", r.kl,
               r.kl / ((double)ids->n * ids->t));
    }
    free(choice);
    token_ids_free(ids);
    model_free(m);
    return 0;
}

int cmd_info(int argc, char** argv) {
    Args a;
    args_init(&a, argc, argv, k_json_flag);
    const char* dis_csv = args_str(&a, "--disabled-layers");
    int json = args_flag(&a, "--json");
    int no_grouping = args_flag(&a, "--no-grouping");
    const char* dir = args_pos(&a, 0);
    args_done(&a);
    if (!dir) fail_input("info: MODEL folder missing");
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
        printf("%-48s %-13s %10ld  %-40s %s\n", "lm_head", "", (long)c->vocab_size * c->hidden_size, "-",
               "never a candidate");
    }
    groups_free(&gs);
    patterns_free(&dis);
    model_free(&m);
    return 0;
}

int cmd_eval(int argc, char** argv) {
    Args a;
    args_init(&a, argc, argv, k_json_flag);
    DataOpts d = {0};
    d.path = args_str(&a, "--data");
    d.shuffle = args_flag(&a, "--shuffle");
    d.seed = (unsigned long)args_int(&a, "--seed", 0, 0, 1 << 30);
    d.num_samples = args_int(&a, "--num-samples", 0, 1, 1 << 30);
    d.seq_len = args_int(&a, "--seq-len", 0, 2, 1 << 20);
    const char* logits_path = args_str(&a, "--logits");
    const char* recipe = args_str(&a, "--recipe");
    const char* format = args_str(&a, "--format");
    const char* dis_csv = args_str(&a, "--disabled-layers");
    int json = args_flag(&a, "--json");
    const char* dir = args_pos(&a, 0);
    args_done(&a);
    if (!dir) fail_input("eval: MODEL folder missing");
    if (!d.path) fail_input("eval: --data is required");
    if (recipe && format) fail_input("eval: give --recipe or --format, not both");
    Model m;
    model_load(&m, dir);
    d.model_dir = dir;
    d.vocab = m.c.vocab_size;
    d.eos = m.c.eos_token_id;
    TokenIds ids;
    data_load(&ids, &d);
    if (recipe || format) return eval_quantized(&m, &ids, recipe, format, dis_csv, json);
    RunState s;
    run_init(&s, &m, ids.t, 0);
    double* nll = xcalloc(ids.n, sizeof(double));
    double total = 0, t0 = time_now();
    Progress p;
    progress_init(&p, "eval", ids.n);
    for (int i = 0; i < ids.n; i++) {
        const int* x = ids.ids + (long)i * ids.t;
        model_forward(&m, &s, x, NULL);
        nll[i] = cross_entropy(NULL, s.logits, x, ids.t, m.c.vocab_size);
        total += nll[i];
        if (i == 0 && logits_path) {
            long shape[2] = {ids.t, m.c.vocab_size};
            npy_write_f32(logits_path, s.logits, 2, shape);
        }
        progress_step(&p, 1);
    }
    progress_end(&p);
    double el = time_now() - t0, mean = total / ids.n;
    if (json) {
        json_t* j = json_object();
        json_object_set_new(j, "model", json_string(dir));
        json_object_set_new(j, "num_samples", json_integer(ids.n));
        json_object_set_new(j, "seq_len", json_integer(ids.t));
        json_t* arr = json_array();
        for (int i = 0; i < ids.n; i++) json_array_append_new(arr, json_real(nll[i]));
        json_object_set_new(j, "nll", arr);
        json_object_set_new(j, "mean_nll", json_real(mean));
        json_object_set_new(j, "perplexity", json_real(exp(mean)));
        json_object_set_new(j, "seconds", json_real(el));
        json_write_file(j, NULL);
        json_decref(j);
    } else {
        printf("%-8s %12s\n", "sample", "nll");
        for (int i = 0; i < ids.n; i++) printf("%-8d %12.6f\n", i, nll[i]);
        printf("mean nll %.6f  perplexity %.4f  (%d x %d tokens, %.2fs, %.0f tokens/s)\n", mean, exp(mean),
               ids.n, ids.t, el, ids.n * (double)ids.t / el);
    }
    free(nll);
    run_free(&s, &m);
    token_ids_free(&ids);
    model_free(&m);
    return 0;
}

int cmd_gen(int argc, char** argv) {
    Args a;
    args_init(&a, argc, argv, NULL);
    const char* preset = args_str(&a, "--preset");
    long seed = args_int(&a, "--seed", 1, 0, 1 << 30);
    const char* ids_path = args_str(&a, "--ids");
    const char* corpus = args_str(&a, "--corpus");
    int n = args_int(&a, "--num-samples", 8, 1, 1 << 20);
    int t = args_int(&a, "--seq-len", 128, 2, 1 << 20);
    const char* dir = args_pos(&a, 0);
    args_done(&a);
    if (!dir) fail_input("gen: OUT_DIR missing");
    const GenPreset* p = gen_preset(preset ? preset : "tiny");
    if (!p) fail_input("gen: --preset '%s' is not one of tiny, 0.6b, 8b", preset);
    double t0 = time_now();
    gen_checkpoint(dir, p, (uint64_t)seed);
    info_msg("gen: wrote %s (%s shape, seed %ld) in %.1fs", dir, p->name, seed, time_now() - t0);
    if (corpus) {
        size_t len;
        char* text = read_file(corpus, &len);
        if (!text) fail_input("%s: cannot read corpus", corpus);
        char* tp = path_join(dir, "tokenizer.json");
        bpe_train_write(tp, text, len, p->vocab);
        info_msg("gen: wrote %s (byte-level BPE trained on %s)", tp, corpus);
        free(tp);
        free(text);
    }
    if (ids_path) {
        int* ids = xmalloc(sizeof(int) * (size_t)n * t);
        gen_ids(ids, n, t, p->vocab, (uint64_t)seed);
        long shape[2] = {n, t};
        npy_write_i32(ids_path, ids, 2, shape);
        free(ids);
        info_msg("gen: wrote %s (%d x %d token ids)", ids_path, n, t);
    }
    return 0;
}

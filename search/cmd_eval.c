// autoq eval: NLL of the model on calibration windows, or with --recipe / --format the quantized
// model against the unquantized one (KL and NLL change).
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../datasets/data.h"
#include "../engine/args.h"
#include "../engine/forward.h"
#include "../engine/gpu.h"
#include "../engine/util.h"
#include "../scoring/groups.h"
#include "../scoring/stream_plan.h"
#include "../scoring/table.h"
#include "recipe.h"

// eval --recipe / --format: the quantized model against the unquantized one.
static int eval_quantized(Model* m, TokenIds* ids, const char* recipe, const char* format, const char* dis_csv,
                          const Quantizer* q, int json, int allow_partial, const char* logits,
                          VerifyDevice* dev) {
    Format fmts[MAX_FORMATS];
    int* choice = xmalloc(sizeof(int) * m->n_linears);
    int* kv = xmalloc(sizeof(int) * m->c.num_layers);
    if (recipe) {
        int nf = recipe_read(recipe, m, fmts, choice, allow_partial);
        if (recipe_read_kv(recipe, m, fmts, nf, kv, allow_partial)) verify_set_kv(kv);
    } else {
        format_load(&fmts[0], format, 0);
        Patterns dis;
        patterns_parse(&dis, dis_csv ? dis_csv : DEFAULT_DISABLED);
        Groups gs;
        groups_build(&gs, m, 0, &dis);
        for (int i = 0; i < m->n_linears; i++) choice[i] = gs.g[gs.group_of[i]].disabled || fmts[0].kv ? -1 : 0;
        if (fmts[0].kv) { // a KV-cache format: every full-attention layer's KV cache, no linear
            groups_add_kv(&gs, m, &dis);
            for (int l = 0; l < m->c.num_layers; l++) kv[l] = -1;
            for (int g = 0; g < gs.n; g++)
                if (gs.g[g].kv && !gs.g[g].disabled) kv[gs.g[g].layer] = 0;
            verify_set_kv(kv);
        }
        groups_free(&gs);
        patterns_free(&dis);
    }
    VerifyResult r;
    double t0 = time_now();
    verify_set_device(dev);
    verify_recipe_logits(m, ids, fmts, choice, q, logits, &r);
    verify_set_device(NULL);
    double el = time_now() - t0;
    if (json) {
        json_t* j = json_pack("{s:s,s:s,s:i,s:i,s:i,s:f,s:f,s:f,s:f,s:f,s:s,s:b}", "model", m->dir, "quantizer",
                              quantizer_name(q), "num_samples", ids->n, "seq_len", ids->t, "quantized_linears",
                              r.n_quantized, "kl", r.kl, "nll_ref", r.nll_ref, "nll_quantized", r.nll_q,
                              "nll_delta", r.nll_q - r.nll_ref, "seconds", el, "device",
                              r.on_gpu ? "cuda" : "cpu", "streamed", r.streamed);
        if (r.gptq) json_object_set_new(j, "gptq_pipeline", json_string(gptq_pipeline_name(r.pipeline)));
        json_write_file(j, NULL);
        json_decref(j);
    } else {
        printf("%d of %d linears quantized (%s%s%s); %d x %d tokens, measured on the %s engine%s\n",
               r.n_quantized, m->n_linears, quantizer_name(q), r.gptq ? ", pipeline " : "",
               r.gptq ? gptq_pipeline_name(r.pipeline) : "", ids->n, ids->t, r.on_gpu ? "CUDA" : "CPU",
               r.streamed ? " (streamed layers)" : "");
        printf("mean nll %.6f -> %.6f (%+.6f), perplexity %.4f -> %.4f\n", r.nll_ref, r.nll_q,
               r.nll_q - r.nll_ref, exp(r.nll_ref), exp(r.nll_q));
        printf("KL to the unquantized model: %.6g summed, %.6g per token\n", r.kl,
               r.kl / ((double)ids->n * ids->t));
    }
    verify_set_kv(NULL);
    free(kv);
    free(choice);
    token_ids_free(ids);
    model_free(m);
    return 0;
}

int cmd_eval(Args* a) {
    DataOpts d;
    data_opts_parse(&d, a); // --data: required by the table (autoq.c), as MODEL
    const char* logits_path = args_str(a, "--logits");
    const char* recipe = args_str(a, "--recipe");
    const char* format = args_str(a, "--format");
    const char* dis_csv = args_str(a, "--disabled-layers");
    int json = args_flag(a, "--json");
    int allow_partial = args_flag(a, "--allow-partial");
    Quantizer q;
    quantizer_parse(&q, a);
    const char* dev = args_str(a, "--device");
    const char* gpu_mem = args_str(a, "--gpu-memory");
    const char* dir = args_pos(a, 0);
    if (recipe && format) fail_input("eval: give --recipe or --format, not both");
    if (!format) args_refuse(a, G_FORMAT, "without --format (a recipe names its own disabled groups)");
    args_done(a);
    if (logits_path) out_check(logits_path, "--logits");
    if (q.kind == QUANTIZER_GPTQ && !recipe && !format)
        fail_input("eval: --quantizer gptq goes with --recipe or --format (what to quantize)");
    double cap = stream_parse_cap("eval", gpu_mem);
    if (gpu_mem && !recipe && !format)
        fail_input("eval: --gpu-memory caps the measurement of --recipe or --format (and GPTQ's GPU pipeline); "
                   "the plain NLL runs on the CPU engine");
    if (dev && !strcmp(dev, "cuda") && !gpu_device_count())
        fail_input("eval --device cuda: no CUDA device found");
    Model m;
    model_load(&m, dir);
    // GPTQ's step on the GPU where quantizer_set_device puts it (its own refusals: MoE and hybrid models); the
    // measurement where verify_device_init does (README "Streaming"): --logits keeps it on the CPU engine,
    // whose fp32 logits it writes
    if (q.kind == QUANTIZER_GPTQ) quantizer_set_device(&q, dev, &m.c, dir, "eval");
    q.gpu_mem = q.use_gpu ? cap : 0;
    if (logits_path && cap && !q.use_gpu)
        fail_input(
            "eval: --gpu-memory: --logits measures on the CPU engine (its fp32 logits), which the cap does "
            "not concern");
    VerifyDevice vd;
    verify_device_init(&vd, "eval", logits_path ? "cpu" : dev, cap, q.use_gpu);
    if (logits_path && dev && !strcmp(dev, "cuda"))
        info_msg("eval: --logits: measured on the CPU engine, whose fp32 logits it writes");
    d.model_dir = dir;
    d.vocab = m.c.vocab_size;
    d.eos = m.c.eos_token_id;
    if (d.seq_len) model_check_seq_len(&m, d.seq_len, "--seq-len");
    TokenIds ids;
    data_load(&ids, &d);
    model_check_seq_len(&m, ids.t, d.path);
    if (recipe || format)
        return eval_quantized(&m, &ids, recipe, format, dis_csv, &q, json, allow_partial, logits_path, &vd);
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
        if (!isfinite(nll[i])) fail_other("eval: the NLL of window %d is not finite (%g)", i, nll[i]);
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

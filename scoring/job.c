#include "job.h"

#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../engine/forward.h"
#include "../engine/util.h"
#include "checkpoint.h"
#include "score_merge.h"
#include "score_stream.h"
#include "shard_plan.h"

static void require_utf8(const char* cmd, const char* what, const char* s) {
    json_t* v = s ? json_string(s) : NULL; // jansson validates UTF-8
    if (s && !v) fail_input("%s: %s is not valid UTF-8", cmd, what);
    json_decref(v);
}

// --data NAME=FILE, repeated: calibration domains (README §1). One plain --data FILE is no domain at all.
static void parse_domains(ScoreJob* j, Args* a) {
    const char* v[MAX_DOMAINS + 1];
    int n = args_multi(a, "--data", v, MAX_DOMAINS);
    if (n == 1 && (!strchr(v[0], '=') || access(v[0], F_OK) == 0)) return;
    for (int d = 0; d < n; d++) {
        const char* eq = strchr(v[d], '=');
        size_t len = eq ? (size_t)(eq - v[d]) : 0;
        if (!eq || access(v[d], F_OK) == 0)
            fail_input("%s: --data '%s': several --data must each be NAME=FILE (calibration domains)", a->cmd,
                       v[d]);
        if (len == 0 || len > MAX_DOMAIN_NAME ||
            strspn(v[d], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                         "0123456789_-") != len ||
            !eq[1])
            fail_input("%s: --data '%s': NAME must be 1 to %d letters, digits, '_' or '-', and FILE given",
                       a->cmd, v[d], MAX_DOMAIN_NAME);
        memcpy(j->dname[d], v[d], len);
        j->dname[d][len] = 0;
        j->dpath[d] = eq + 1;
        for (int e = 0; e < d; e++)
            if (!strcmp(j->dname[e], j->dname[d]))
                fail_input("%s: --data: domain '%s' given twice", a->cmd, j->dname[d]);
    }
    j->nd = n;
    j->data.path = j->dpath[0];
    // --quantizer gptq: GPTQ's weights depend on the calibration data, so each domain is scored with GPTQ
    // weights calibrated on its own windows (score_job_run_one per domain: per-domain GPTQ, README §7).
}

void score_job_parse(ScoreJob* j, Args* a, int need_method) {
    memset(j, 0, sizeof(*j));
    data_opts_parse(&j->data, a);
    // every value is already checked against the command's table (autoq.c): enums, ranges
    const char* method = args_str(a, "--method");
    if (!method && need_method) fail_input("%s: --method is required (kl or gradient)", a->cmd);
    j->method = method && strcmp(method, "gradient") == 0 ? METHOD_GRADIENT : METHOD_KL;
    quantizer_parse(&j->quant, a);
    j->format_csv = args_str(a, "--format");
    if (!j->format_csv) j->format_csv = "w4a8";
    const char* num = args_str(a, "--numerics");
    j->ct = num && strcmp(num, "compressed-tensors") == 0;
    j->disabled_csv = args_str(a, "--disabled-layers");
    if (!j->disabled_csv) j->disabled_csv = DEFAULT_DISABLED;
    j->no_grouping = args_flag(a, "--no-grouping");
    j->batch_size = args_int(a, "--batch-size", 4);
    const char* dev = args_str(a, "--device");
    j->device = dev ? dev : "auto";
    const char* gg = args_str(a, "--gpu-gemm");
    if (gg && !strcmp(gg, "fp16") && j->method != METHOD_KL)
        fail_input("%s: --gpu-gemm fp16 is for --method kl (forward passes only)", a->cmd);
    // default: fp16 GEMM inputs for kl (small KL values sit below a plain-bf16 model's noise floor; fp16's
    // 3 more bits lift them off it at bf16's cost), bf16 hi + lo where fp16 cannot run (settled in
    // score_job_load); plain bf16 for gradient, whose 4-bit scores it reproduces within 2% (tests/test_gpu.c;
    // 8-bit formats and the hybrid families, bf16 hi + lo for both methods, are settled in score_job_load)
    if (gg)
        j->gpu_gemm = !strcmp(gg, "fp16") ? GEMM_FP16 : !strcmp(gg, "bf16x2") ? GEMM_BF16X2 : GEMM_BF16;
    else
        j->gpu_gemm = j->method == METHOD_KL ? GEMM_FP16 : GEMM_BF16;
    j->gpu_gemm_given = gg != NULL;
    j->ngpus = args_int(a, "--gpus", 0);
    j->nccl_init = args_str(a, "--nccl-init");
    j->rank = args_int(a, "--rank", -1);
    j->world = args_int(a, "--world-size", 0);
    int given = (j->nccl_init != NULL) + (j->rank >= 0) + (j->world > 0);
    if (given != 0 && given != 3) fail_input("%s: --nccl-init, --rank and --world-size go together", a->cmd);
    if (j->nccl_init) rdv_parse(&j->rdv, j->nccl_init);
    if (j->nccl_init && j->rank >= j->world)
        fail_input("%s: --rank %d must be below --world-size %d", a->cmd, j->rank, j->world);
    if (j->nccl_init && j->ngpus)
        fail_input("%s: --gpus and --nccl-init exclude each other (one GPU per rank)", a->cmd);
    j->shard = args_flag(a, "--shard-layers");
    j->stages = args_int(a, "--stages", 0);
    if (j->stages && !(j->shard && j->nccl_init))
        fail_input("%s: --stages goes with --shard-layers and --nccl-init (ranks per pipeline)", a->cmd);
    if (j->stages && j->world % j->stages)
        fail_input("%s: --stages %d must divide --world-size %d (ranks p S .. p S + S - 1 form pipeline p)",
                   a->cmd, j->stages, j->world);
    j->gpu_mem = stream_parse_cap(a->cmd, args_str(a, "--gpu-memory"));
    j->quant.gpu_mem = j->gpu_mem; // GPTQ's pipeline on the GPU keeps to the cap too
    parse_domains(j, a);
    j->min_expert_tokens = args_int(a, "--min-expert-tokens", 16);
    j->model_dir = args_pos(a, 0);
    // Both end up in the JSON and HDF5 outputs, which hold UTF-8 only: refuse them now, not after a run.
    require_utf8(a->cmd, "MODEL", j->model_dir);
    require_utf8(a->cmd, "--disabled-layers", j->disabled_csv);
}

// The hybrid families (Gated DeltaNet layers): bf16 hi + lo GEMM inputs by default; GPTQ runs on the CPU
// (below), so --gpu-memory has nothing to cap there.
static void hybrid_check(ScoreJob* j) {
    static Config c; // ~12 KiB: read before the model is loaded one way or the other
    config_load(&c, j->model_dir);
    if (!c.fam->hybrid) return;
    // Plain bf16 GEMM inputs strayed by up to 20% (gradient) and 66% (kl) from the fp32 CPU engine on the
    // hybrid fixtures (one H100; bf16 hi + lo: within 0.2% and 0.5%): hi + lo is their default. fp16 (kl)
    // runs on request only: the published hybrid models have head_dim 256, which the fused attention
    // kernel that the fp16 mode needs does not take.
    if (!j->gpu_gemm_given) j->gpu_gemm = GEMM_BF16X2;
    if (j->gpu_mem && j->quant.kind == QUANTIZER_GPTQ)
        fail_input("--gpu-memory: --quantizer gptq on %s (%s, Gated DeltaNet layers) runs on the CPU, which "
                   "--gpu-memory does not cap; drop --gpu-memory (RTN scores stream on the GPU)",
                   j->model_dir, c.model_type);
}

void score_job_load(ScoreJob* j) {
    if (!j->model_dir) fail_input("MODEL folder missing");
    if (!j->data.path) fail_input("--data is required");
    j->nf = formats_load(j->fmts, MAX_FORMATS, j->format_csv, j->ct);
    // An 8-bit format's perturbation (~2^-8 of an activation) is the size of plain bf16's input rounding,
    // so plain-bf16 gradient scores of w8a8 / fp8 stray by up to 7% on qwen3-tiny: take hi + lo for them.
    // A KV-cache format's K and V live in the attention's GEMM inputs: hi + lo carries them as the CPU's fp32.
    for (int f = 0; f < j->nf && !j->gpu_gemm_given; f++)
        if (j->fmts[f].bits >= 8 || j->fmts[f].kv) j->gpu_gemm = GEMM_BF16X2;
    int want_gpu = strcmp(j->device, "cuda") == 0;
    hybrid_check(j);
    if (want_gpu && gpu_device_count() == 0) fail_input("--device cuda: no CUDA device found");
    j->use_gpu = (want_gpu || (strcmp(j->device, "auto") == 0 && gpu_device_count() > 0));
    // What the GPU engine cannot run: formats without a weight quantizer, emulated formats (every one but
    // the integer per-channel ones) on mixture-of-experts layers, and GPTQ weights under an emulated format
    // (the engine holds them as int8 codes for its int8 GEMM). --device auto leaves the GPU for the CPU
    // then; --device cuda refuses below.
    const char* gpu_why = NULL;
    const Format* gpu_fmt = NULL;
    if (j->use_gpu) {
        static Config cfg; // ~4 KiB: the model's shape before loading it one way or the other
        config_load(&cfg, j->model_dir);
        for (int f = 0; f < j->nf && !gpu_why; f++) {
            const Format* fm = &j->fmts[f];
            QuantSpec none = {0};
            int gptq = j->quant.kind == QUANTIZER_GPTQ;
            if (fm->kv) { // K and V fake-quantized in the attention's bf16 hi + lo inputs: not the fp16 mode
                if (j->gpu_gemm == GEMM_FP16 && j->gpu_gemm_given)
                    gpu_why =
                        "is a KV-cache format, which the CUDA engine scores with --gpu-gemm bf16x2 or bf16 "
                        "(not fp16)",
                    gpu_fmt = fm;
                continue;
            }
            if (!fm->w_enable)
                gpu_why = "has no weight quantizer", gpu_fmt = fm;
            else if (gptq && quant_is_int_rows(fm->w) &&
                     quant_gpu_emulated(fm->w, fm->in_enable ? fm->in : none))
                gpu_why = "has no integer per-token input quantizer, which --quantizer gptq needs on the CUDA "
                          "engine (its GPTQ weights run as int8 GEMMs)",
                gpu_fmt = fm;
            else if (cfg.n_sparse && quant_gpu_emulated(fm->w, fm->in_enable ? fm->in : none))
                gpu_why =
                    "(E4M3 / E2M1 values, block scales or no input quantizer) is emulated by the CUDA engine "
                    "for dense layers only, and this model has mixture-of-experts layers",
                gpu_fmt = fm;
        }
    }
    // GPTQ on the CUDA engine knows Qwen3's Hessian sites only: a hybrid model's GPTQ stays on the CPU.
    if (j->use_gpu && !gpu_why && j->quant.kind == QUANTIZER_GPTQ) {
        static Config hc; // ~12 KiB
        config_load(&hc, j->model_dir);
        if (hc.fam->hybrid && want_gpu)
            fail_input(
                "--quantizer gptq --device cuda: %s (%s) has Gated DeltaNet layers, whose GPTQ runs on the "
                "CPU only; use --device cpu",
                j->model_dir, hc.model_type);
        if (hc.fam->hybrid) {
            warn_msg(
                "%s (%s): GPTQ of Gated DeltaNet models runs on the CPU: scoring on the CPU (--device auto)",
                j->model_dir, hc.model_type);
            j->use_gpu = 0;
        }
    }
    if (gpu_why && !want_gpu) {
        warn_msg("format '%s' %s: scoring on the CPU (--device auto)", gpu_fmt->name, gpu_why);
        j->use_gpu = 0;
    }
    if (j->ngpus && !j->use_gpu)
        fail_input("--gpus %d: no CUDA device in use (--device cpu or none found)", j->ngpus);
    if (j->use_gpu) {
        int have = gpu_device_count();
        if (j->ngpus > have) fail_input("--gpus %d: only %d CUDA device(s) visible", j->ngpus, have);
        if (!j->ngpus) j->ngpus = have;
    }
    if (j->shard && j->nccl_init) { // a pipeline of --stages ranks per host, data parallel across hosts
        if (!j->use_gpu) fail_input("--shard-layers: needs CUDA devices (--device cuda)");
        if (!j->stages) j->stages = j->ngpus < j->world ? j->ngpus : j->world;
        if (j->world % j->stages)
            fail_input("--stages %d must divide --world-size %d (ranks p S .. p S + S - 1 form pipeline p)",
                       j->stages, j->world);
    } else if (j->shard && (!j->use_gpu || j->ngpus < 2))
        fail_input("--shard-layers: needs 2 or more CUDA devices (--device cuda --gpus N; %d in use)",
                   j->use_gpu ? j->ngpus : 0);
    if (gpu_why && j->use_gpu)
        fail_input("%s: format '%s' %s; use --device cpu", gpu_fmt->path, gpu_fmt->name, gpu_why);
    if (j->gpu_mem && !j->use_gpu)
        fail_input("--gpu-memory: no CUDA device in use (--device cpu or none found)");
    if (j->gpu_mem && (j->shard || j->nccl_init))
        fail_input(
            "--gpu-memory: streamed layers run on the GPUs of one process, data parallel (--gpus N), not "
            "with %s yet (README \"Not done yet\")",
            j->shard ? "--shard-layers" : "--nccl-init");
    // bf16 to the GPU, no fp32 host copy, unless the host runs passes too: GPTQ's Hessians (and its codes'
    // scales) or search --verify
    if (j->use_gpu && !j->need_host && j->quant.kind != QUANTIZER_GPTQ)
        model_open(&j->model, j->model_dir);
    else
        model_load(&j->model, j->model_dir);
    patterns_parse(&j->dis, j->disabled_csv);
    groups_build(&j->groups, &j->model, j->no_grouping, &j->dis);
    int any_kv = 0;
    for (int f = 0; f < j->nf; f++) {
        any_kv |= j->fmts[f].kv;
        if (j->fmts[f].kv && j->fmts[f].kvq.block && j->model.c.head_dim % j->fmts[f].kvq.block)
            fail_input("%s: KV-cache format '%s' has blocks of %d, which do not divide head_dim %d of %s",
                       j->fmts[f].path, j->fmts[f].name, j->fmts[f].kvq.block, j->model.c.head_dim,
                       j->model_dir);
    }
    if (any_kv) groups_add_kv(&j->groups, &j->model, &j->dis);
    if (strcmp(j->disabled_csv, DEFAULT_DISABLED) != 0)
        for (int i = 0; i < j->dis.n; i++)
            if (!j->dis.hits[i])
                warn_msg("--disabled-layers pattern '%s' matches no module of %s", j->dis.pat[i], j->model_dir);
    if (j->groups.n_enabled == 0)
        fail_input("--disabled-layers '%s' disables every candidate group of %s: nothing to score",
                   j->disabled_csv, j->model_dir);
    j->data.model_dir = j->model_dir;
    j->data.vocab = j->model.c.vocab_size;
    j->data.eos = j->model.c.eos_token_id;
    if (j->data.seq_len) model_check_seq_len(&j->model, j->data.seq_len, "--seq-len");
    data_load(&j->ids, &j->data);
    model_check_seq_len(&j->model, j->ids.t, j->data.path);
    if (j->use_gpu && j->gpu_gemm == GEMM_FP16 && !gpu_fp16_supported(&j->model.c, j->ids.t)) {
        if (j->gpu_gemm_given)
            fail_input(
                "--gpu-gemm fp16: runs windows a multiple of 64 tokens, head_dim 64 or 128, hidden and expert "
                "sizes multiples of 16 (%s: seq_len %d, head_dim %d); use bf16x2",
                j->model_dir, j->ids.t, j->model.c.head_dim);
        j->gpu_gemm = GEMM_BF16X2;
    }
    // The fp16 mode on the hybrid families runs (one H100) but sits on a noise floor there: these models
    // amplify fp16's 11-bit GEMM inputs to several percent of kl, as the CPU engine does with its linears'
    // inputs rounded to fp16. Refused unless the test hook asks for it (tests/test_gpu_hybrid.sh; README "Not
    // done yet").
    if (j->use_gpu && j->gpu_gemm == GEMM_FP16 && j->model.c.fam->hybrid && !getenv("AUTOQ_HYBRID_FP16"))
        fail_input(
            "--gpu-gemm fp16: %s (%s) has Gated DeltaNet layers, on which fp16 GEMM inputs move kl by "
            "several percent (6%% on a test model, where bf16x2 stays within 0.2%% of the CPU); use bf16x2 "
            "(their default)",
            j->model_dir, j->model.c.model_type);
}

// What a byte budget needs beside the groups (README §7): the parameters outside the candidate linears that a
// server loads (every checkpoint tensor but mtp.*, less the linears' weights: embeddings, lm_head unless tied,
// norms, routers, a vision tower, ...), and each full-attention layer's K and V values per token.
void table_set_memory(ScoreTable* t, const Model* m) {
    long total = 0, lin = 0;
    for (int i = 0; i < m->ck.n; i++) {
        const StTensor* s = &m->ck.t[i];
        if (strncmp(s->name, "mtp.", 4) == 0) continue;
        long n = 1;
        for (int d = 0; d < s->ndim; d++) n *= (long)s->shape[d];
        total += n;
    }
    for (int i = 0; i < m->n_linears; i++) lin += (long)m->linears[i].out * m->linears[i].in;
    t->has_memory = 1;
    t->other_params = total - lin;
    t->n_kvl = 0;
    t->kvl_name = xcalloc(m->c.num_layers, sizeof(char*));
    t->kvl_values = xmalloc(sizeof(long) * m->c.num_layers);
    for (int l = 0; l < m->c.num_layers; l++) {
        if (m->c.linear[l]) continue; // Gated DeltaNet: a fixed-size recurrent state, no KV cache
        char name[192];
        kv_group_name(name, sizeof(name), m, l);
        t->kvl_name[t->n_kvl] = xstrdup(name);
        t->kvl_values[t->n_kvl++] = 2L * m->c.num_kv_heads * m->c.head_dim;
    }
}

// The expert coverage counts, each row named by its layer's experts group.
static void table_set_coverage(const ScoreJob* j, ScoreTable* t) {
    const Config* c = &j->model.c;
    if (!j->expert_tokens) return;
    t->n_cov = c->n_sparse;
    t->n_experts = c->num_experts;
    t->min_expert_tokens = j->min_expert_tokens;
    t->cov_name = xcalloc(c->n_sparse, sizeof(char*));
    t->cov_tokens = xmalloc(sizeof(long) * c->n_sparse * c->num_experts);
    memcpy(t->cov_tokens, j->expert_tokens, sizeof(long) * c->n_sparse * c->num_experts);
    for (int r = 0; r < c->n_sparse; r++) {
        char name[192];
        snprintf(name, sizeof(name), "%slayers.%d.mlp.experts", c->prefix, j->sparse_layers[r]);
        t->cov_name[r] = xstrdup(name);
    }
}

void score_job_table(const ScoreJob* j, ScoreTable* t) {
    memset(t, 0, sizeof(*t));
    const Model* m = &j->model;
    const Groups* gs = &j->groups;
    snprintf(t->model, sizeof(t->model), "%s", j->model_dir);
    snprintf(t->method, sizeof(t->method), "%s", method_name(j->method));
    snprintf(t->numerics, sizeof(t->numerics), "%s", j->ct ? "compressed-tensors" : "modelopt");
    snprintf(t->quantizer, sizeof(t->quantizer), "%s", quantizer_name(&j->quant));
    snprintf(t->disabled_csv, sizeof(t->disabled_csv), "%s", j->disabled_csv);
    t->nf = j->nf;
    for (int f = 0; f < j->nf; f++) t->fmts[f] = j->fmts[f];
    t->num_samples = j->nd ? j->total_windows : j->ids.n;
    t->seq_len = j->ids.t;
    t->ng = gs->n;
    t->gname = xcalloc(gs->n, sizeof(char*));
    t->gmembers = xcalloc(gs->n, sizeof(char*));
    t->params = xmalloc(sizeof(long) * gs->n);
    t->active = xmalloc(sizeof(long) * gs->n);
    t->disabled = xmalloc(gs->n);
    t->gkv = xcalloc(gs->n, 1);
    t->score = xmalloc(sizeof(double) * gs->n * j->nf);
    for (int g = 0; g < gs->n; g++) {
        const Group* gr = &gs->g[g];
        t->gname[g] = xstrdup(gr->name);
        size_t len = 1;
        for (int k = 0; k < gr->n_members; k++) len += strlen(m->linears[gr->members[k]].name) + 1;
        char* buf = xcalloc(len, 1);
        for (int k = 0; k < gr->n_members; k++) {
            if (k) strcat(buf, ",");
            strcat(buf, m->linears[gr->members[k]].name);
        }
        t->gmembers[g] = buf;
        t->params[g] = gr->params;
        // a token reads top_k of the E experts (3 E I H params, so the product divides exactly)
        t->active[g] = gr->experts ? gr->params / m->c.num_experts * m->c.top_k : gr->params;
        t->disabled[g] = (uint8_t)gr->disabled;
        t->gkv[g] = (uint8_t)gr->kv;
        for (int f = 0; f < j->nf; f++)
            t->score[(size_t)f * gs->n + g] = gr->disabled ? 0.0 : j->score[(size_t)f * gs->n + g];
    }
    t->nl = m->n_linears;
    t->lname = xcalloc(m->n_linears, sizeof(char*));
    t->lshape = xmalloc(sizeof(long) * 2 * m->n_linears);
    t->lgroup = xmalloc(sizeof(int) * m->n_linears);
    for (int i = 0; i < m->n_linears; i++) {
        t->lname[i] = xstrdup(m->linears[i].name);
        t->lshape[2 * i] = m->linears[i].out;
        t->lshape[2 * i + 1] = m->linears[i].in;
        t->lgroup[i] = gs->group_of[i];
    }
    table_set_coverage(j, t);
    table_set_memory(t, m);
    if (j->nd) {
        t->nd = j->nd;
        memcpy(t->dname, j->dname, sizeof(t->dname));
        memcpy(t->dsamples, j->dsamples, sizeof(t->dsamples));
        t->dscore = xmalloc(sizeof(double) * j->nd * j->nf * gs->n);
        memcpy(t->dscore, j->dscore, sizeof(double) * j->nd * j->nf * gs->n);
    }
    if (j->wscore && (j->nd || j->samples_done == j->ids.n)) { // disabled groups: 0, as their scores
        size_t n = (size_t)j->nf * gs->n;
        t->nw = t->num_samples;
        t->wscore = xmalloc(sizeof(double) * n * t->nw);
        memcpy(t->wscore, j->wscore, sizeof(double) * n * t->nw);
        for (int w = 0; w < t->nw; w++)
            for (int f = 0; f < j->nf; f++)
                for (int g = 0; g < gs->n; g++)
                    if (gs->g[g].disabled) t->wscore[(size_t)w * n + (size_t)f * gs->n + g] = 0.0;
    }
}

static int cmp_long(const void* a, const void* b) {
    long x = *(const long*)a, y = *(const long*)b;
    return (x > y) - (x < y);
}

void score_job_report_experts(const ScoreJob* j) {
    const Config* c = &j->model.c;
    if (!j->expert_tokens) return;
    int E = c->num_experts;
    long* v = xmalloc(sizeof(long) * E);
    for (int r = 0; r < c->n_sparse; r++) {
        const long* n = j->expert_tokens + (size_t)r * E;
        memcpy(v, n, sizeof(long) * E);
        qsort(v, E, sizeof(long), cmp_long);
        double med = E % 2 ? v[E / 2] : 0.5 * (v[E / 2 - 1] + v[E / 2]);
        info_msg("score: %slayers.%d.mlp.experts: tokens per expert min %ld, median %g, max %ld (%d experts, "
                 "top-%d)",
                 c->prefix, j->sparse_layers[r], v[0], med, v[E - 1], E, c->top_k);
        int few = 0;
        for (int e = 0; e < E; e++) few += n[e] < j->min_expert_tokens;
        if (!few) continue;
        char list[512] = "";
        int shown = 0;
        for (int e = 0; e < E && shown < 32; e++)
            if (n[e] < j->min_expert_tokens)
                snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%d (%ld)", shown++ ? ", " : "", e,
                         n[e]);
        warn_msg("%slayers.%d.mlp.experts: %d of %d experts saw fewer than %d tokens (--min-expert-tokens), so "
                 "their share of the score rests on little data: expert (tokens) %s%s",
                 c->prefix, j->sparse_layers[r], few, E, j->min_expert_tokens, list,
                 few > shown ? ", ..." : "");
    }
    free(v);
}

void score_job_free(ScoreJob* j) {
    free(j->score);
    free(j->dscore);
    free(j->wscore);
    free(j->expert_tokens);
    free(j->sparse_layers);
    free(j->recomputed);
    token_ids_free(&j->ids);
    groups_free(&j->groups);
    patterns_free(&j->dis);
    model_free(&j->model);
}

// ---- the run: one back end chosen once, then the windows in batches ----

static int stream_decide(ScoreJob* j, int* B, StreamPlan* plan);

// Several GPUs (data parallel, ranks or a layer pipeline): every window at once, no checkpoint.
static void run_gpus(ScoreJob* j, const GpuScoreSpec* sp, const char* checkpoint) {
    const char* how = j->nccl_init ? "--nccl-init" : j->shard ? "--shard-layers" : "--gpus";
    if (checkpoint) fail_input("--checkpoint: not supported with %s (use one GPU)", how);
    double t0 = time_now();
    if (j->nccl_init && j->shard) {
        gpu_score_sharded_ranked(sp, j->ids.ids, j->ids.n, j->stages, j->rank, j->world, &j->rdv, j->score,
                                 &j->seconds, &j->gpu_peak);
    } else if (j->nccl_init) {
        gpu_score_ranked(sp, j->ids.ids, j->ids.n, j->rank, j->world, &j->rdv, j->score, &j->seconds,
                         &j->gpu_peak);
    } else {
        info_msg("score: %d CUDA devices (%s), batches of %d windows, %s", j->ngpus, gpu_name(), sp->B,
                 j->shard ? "layers sharded over the GPUs" : "data parallel");
        GpuScoreSpec ssp = *sp; // data parallel: each GPU streams its layers by one plan (README "Streaming")
        StreamPlan plan;
        double stats[3] = {0, 0, 0};
        memset(&plan, 0, sizeof(plan));
        if (!j->shard) j->streamed = stream_decide(j, &ssp.B, &plan);
        if (j->shard)
            gpu_score_sharded(sp, j->ids.ids, j->ids.n, j->ngpus, j->score, &j->seconds, &j->gpu_peak);
        else if (j->streamed)
            gpu_score_multi_stream(&ssp, &plan, stats, j->ids.ids, j->ids.n, j->ngpus, j->score, &j->seconds,
                                   &j->gpu_peak);
        else
            gpu_score_multi(sp, j->ids.ids, j->ids.n, j->ngpus, j->score, &j->seconds, &j->gpu_peak);
        j->stream_h2d = stats[0], j->stream_unhidden = stats[1], j->stream_alloc = stats[2];
        stream_plan_free(&plan);
        info_msg("score: %.2fs including the weight uploads", time_now() - t0);
    }
    j->samples_done = j->ids.n; // seconds: the slowest GPU's scoring, loading excluded as on one GPU
    work_add(&j->work, &j->model, &j->groups, j->nf, j->method, j->ids.n, 1);
}

// Whether every score so far is finite. In the fp16 GEMM mode an activation beyond fp16's range (65504)
// becomes an infinity, and the passes through it NaN.
static int scores_finite(const ScoreJob* j) {
    for (long i = 0; i < (long)j->nf * j->groups.n; i++)
        if (!isfinite(j->score[i])) return 0;
    return 1;
}

// One window on the CPU scorer, its contribution kept apart: the difference of the sums around it, so the
// sums themselves add in the same order as without it (bit-identical scores).
static void add_window(ScoreJob* j, Scorer* cpu, const int* ids, int w) {
    size_t n = (size_t)j->nf * j->groups.n;
    double* out = j->wscore ? j->wscore + (size_t)w * n : NULL;
    if (out) memcpy(out, j->score, sizeof(double) * n);
    scorer_add_sample(cpu, ids, j->score);
    if (out)
        for (size_t k = 0; k < n; k++) out[k] = j->score[k] - out[k];
}

// Whether the run streams its layers (README "Streaming"): under --gpu-memory when the plan says the model
// does not fit it, and without it when the weights alone exceed 90% of the GPU's free memory. Plans into
// plan, with the engine batch *B (--batch-size) halved until a streamed plan fits; exits 2 when not even
// one window with two layer slots fits.
static int stream_decide(ScoreJob* j, int* B, StreamPlan* plan) {
    const Config* c = &j->model.c;
    if (!j->use_gpu || j->shard || j->nccl_init) return 0;
    double free_b = (double)gpu_stream_free_memory(), cap = j->gpu_mem;
    // bench: the streamed code path (layer-major) even where the model fits, its layers then resident
    const char* force = getenv("AUTOQ_STREAM");
    int forced = force && !strcmp(force, "1");
    if (!cap && forced) cap = 0.9 * free_b;
    if (!cap) {
        double w = 2.0 * c->vocab_size * c->hidden_size;
        for (int l = 0; l < c->num_layers; l++) w += shard_layer_bytes(c, l);
        if (w <= 0.9 * free_b) return 0;
        cap = 0.9 * free_b;
    }
    const char* kf = getenv("AUTOQ_STREAM_BATCHES"); // tests and bench: engine batches per streamed batch
    int b = *B, ok, emu = 0;
    for (int f = 0; f < j->nf; f++) {
        QuantSpec none = {0};
        emu |= quant_gpu_emulated(j->fmts[f].w, j->fmts[f].in_enable ? j->fmts[f].in : none);
    }
    double resident = 0; // the one-window resident plan's peak, named when the cap is too small
    for (;;) {
        StreamSpec s;
        stream_spec_model(&s, c, &j->groups, j->fmts, j->nf, j->method == METHOD_GRADIENT, j->ids.t, b,
                          j->ids.n, cap, j->gpu_gemm == GEMM_BF16X2, emu);
        if (j->quant.kind == QUANTIZER_GPTQ) // GPTQ's codes (a byte a weight) and row scales per format
            for (int l = 0; l < c->num_layers; l++) ((double*)s.layer_bytes)[l] *= 1 + j->nf * STREAM_GIVEN;
        if (b == 1) {
            StreamSpec r = s;
            StreamPlan rp;
            r.cap = INFINITY, r.force = 0;
            stream_plan(&r, &rp);
            resident = rp.gpu_bytes;
            stream_plan_free(&rp);
        }
        s.k_force = kf ? atoi(kf) : 0;
        // AUTOQ_STREAM_SPILL=0: kl keeps every in-flight state on the GPU (tests: the plan without the ring)
        const char* sp_env = getenv("AUTOQ_STREAM_SPILL");
        s.no_spill = j->method == METHOD_KL && sp_env && !strcmp(sp_env, "0");
        s.force = forced;
        ok = stream_plan(&s, plan);
        stream_spec_free(&s);
        if (ok || b == 1) break;
        if (!plan->streamed) break; // resident: the cap holds the whole model
        stream_plan_free(plan);
        b /= 2;
    }
    if (!ok)
        fail_input("--gpu-memory: %.3f GiB is too small for %s with windows of %d tokens: streaming needs at "
                   "least %.3f GiB (%.0f bytes); every layer resident needs %.3f GiB (%.0f bytes)",
                   cap / 1073741824.0, j->model_dir, j->ids.t, plan->gpu_bytes / 1073741824.0, plan->gpu_bytes,
                   resident / 1073741824.0, resident);
    if (!plan->streamed) {
        info_msg(
            "score: --gpu-memory %.3f GiB: the model fits (planned peak %.3f GiB (%.0f bytes)): every layer "
            "resident",
            cap / 1073741824.0, plan->gpu_bytes / 1073741824.0, plan->gpu_bytes);
        stream_plan_free(plan);
        return 0;
    }
    if (b < *B)
        warn_msg("--gpu-memory: engine batches of %d windows instead of --batch-size %d (the cap)", b, *B);
    *B = b;
    // as score_stream.cu holds them: with spills, two of the GPU's states are the slots spilled ones compute in
    int on_gpu = plan->states_gpu < plan->states_peak ? plan->states_gpu - 2 : plan->states_peak;
    on_gpu = on_gpu < 1 ? 1 : on_gpu;
    info_msg("score: streaming layers from host memory: %d of %d layers resident, batches of %d x %d windows, "
             "%d of %d in-flight states on the GPU (%s), planned peak %.3f GiB (%.0f bytes) of %.3f GiB, %.2f "
             "GiB host->GPU per batch",
             plan->n_resident, c->num_layers, plan->k, b, on_gpu, plan->states_peak,
             on_gpu < plan->states_peak ? "the rest in pinned host memory, through two GPU slots"
                                        : "none spilled",
             plan->gpu_bytes / 1073741824.0, plan->gpu_bytes, cap / 1073741824.0,
             (plan->weight_h2d + plan->spill_h2d) / 1073741824.0);
    return 1;
}

// One device: the CPU scorer one window at a time (on the candidate weights qc), or one GPU in batches of
// --batch-size windows. Returns 0, or 1 when the fp16 GEMM mode overflowed (the run stopped there).
static int run_one(ScoreJob* j, const GpuScoreSpec* sp, const QuantCache* qc, const char* checkpoint) {
    Scorer cpu;
    GpuScorer gpu;
    GpuStreamScorer ss;
    GpuMergeScorer ms; // kl with the passes' forwards merged across groups (AUTOQ_KL_MERGE=1, for now)
    StreamPlan plan;
    memset(&plan, 0, sizeof(plan));
    GpuEngine* e = NULL;
    int B = 1;
    GpuScoreSpec ssp = *sp; // a streamed run's engine batch may be smaller
    j->streamed = stream_decide(j, &ssp.B, &plan);
    const char* mv = getenv("AUTOQ_KL_MERGE");
    int merged = !j->streamed && j->use_gpu && j->method == METHOD_KL && mv && !strcmp(mv, "1");
    if (merged) {
        B = sp->B;
        gpu_merge_scorer_init(&ms, sp, 0, 0);
        e = ms.e;
        const char* how[3] = {"bf16", "bf16 hi+lo", "fp16"};
        info_msg("score: CUDA device %s, batches of %d windows, GEMM inputs %s", gpu_name(), B,
                 how[j->gpu_gemm]);
    } else if (j->streamed) {
        gpu_stream_scorer_init(&ss, &ssp, &plan);
        e = ss.e;
        B = plan.k * ssp.B;
        const char* how[3] = {"bf16", "bf16 hi+lo", "fp16"};
        info_msg("score: CUDA device %s, streamed batches of %d windows, GEMM inputs %s", gpu_name(), B,
                 how[j->gpu_gemm]);
    } else if (j->use_gpu) {
        B = sp->B;
        e = gpu_engine_init(&j->model, j->ids.t, B, j->gpu_gemm);
        gpu_scorer_init(&gpu, e, sp);
        const char* how[3] = {"bf16 (kl: bf16 activations, fp32 residual)", "bf16 hi+lo (~16 bits)",
                              "fp16 (11 bits), fp32 GEMM outputs"};
        info_msg("score: CUDA device %s, batches of %d windows, GEMM inputs %s", gpu_name(), B,
                 how[j->gpu_gemm]);
    } else {
        scorer_init_with(&cpu, &j->model, &j->groups, j->fmts, j->nf, j->method, j->ids.t, qc);
        cpu.expert_tokens = j->expert_tokens;
    }
    json_t* id = checkpoint_identity(j);
    int start = checkpoint ? checkpoint_load(checkpoint, id, j) : 0; // window scores too, where it kept them
    if (start) info_msg("score: resuming from %s after %d of %d samples", checkpoint, start, j->ids.n);
    // Test hook: a run killed (SIGKILL, as kill -9) after K samples (tests/test_score.sh).
    const char* abort_after = getenv("AUTOQ_TEST_ABORT_AFTER");
    double t0 = time_now();
    Progress p;
    progress_init(&p, method_name(j->method), j->ids.n);
    progress_step(&p, start);
    int overflow = 0;
    for (int i = start; i < j->ids.n;) {
        int nb = j->ids.n - i < B ? j->ids.n - i : B;
        const int* ids = j->ids.ids + (long)i * j->ids.t;
        double* wrows = j->wscore ? j->wscore + (size_t)i * j->nf * j->groups.n : NULL;
        if (!j->use_gpu) {
            add_window(j, &cpu, ids, i);
        } else if (j->streamed && j->method == METHOD_GRADIENT) { // the batch's per-window scores into its rows
            gpu_stream_score_gradient(&ss, ids, nb, j->score, wrows, i + nb < j->ids.n);
        } else if (j->streamed) {
            gpu_stream_score_kl(&ss, ids, nb, j->score, wrows, i + nb < j->ids.n);
        } else if (merged) {
            gpu_merge_score_kl(&ms, ids, nb, j->score, wrows);
        } else { // the batch's per-window scores into its rows
            gpu_scorer_windows(&gpu, wrows);
            if (j->method == METHOD_GRADIENT)
                gpu_score_gradient(&gpu, ids, nb, j->score);
            else
                gpu_score_kl(&gpu, ids, nb, j->score);
        }
        if (e && j->expert_tokens) gpu_expert_tokens(e, j->expert_tokens); // with the batch, for checkpoints
        work_add(&j->work, &j->model, &j->groups, j->nf, j->method, nb, j->use_gpu);
        j->samples_done += nb;
        i += nb;
        if (j->use_gpu && j->gpu_gemm == GEMM_FP16 && !scores_finite(j)) {
            overflow = 1;
            break;
        }
        if (checkpoint) checkpoint_save(checkpoint, id, j);
        progress_step(&p, nb);
        if (abort_after && j->samples_done == atoi(abort_after)) raise(SIGKILL); // as kill -9 would
    }
    progress_end(&p);
    j->seconds = time_now() - t0;
    json_decref(id);
    if (e) {
        j->gpu_peak = gpu_peak_bytes(e);
        if (j->streamed) {
            gpu_stream_stats(ss.st, &j->stream_h2d, &j->stream_unhidden);
            j->stream_alloc = (double)gpu_alloc_bytes(e);
            gpu_stream_scorer_free(&ss);
        }
        if (merged) gpu_merge_scorer_free(&ms);
        gpu_engine_free(e);
    } else {
        scorer_free(&cpu);
    }
    stream_plan_free(&plan);
    return overflow;
}

// Every window on the job's devices: several GPUs at once, or one device. Returns 1 when the fp16 GEMM
// mode overflowed (non-finite scores).
static int run_scores(ScoreJob* j, const GpuScoreSpec* sp, const QuantCache* qc, const char* checkpoint) {
    // Test hook: the data-parallel back end (gpu_score_multi) on one GPU (tests/test_gpu_stream.sh)
    const char* multi = getenv("AUTOQ_TEST_MULTI");
    int one = !(multi && !strcmp(multi, "1") && j->use_gpu && !j->shard && !j->nccl_init);
    if (one && !(j->use_gpu && (j->nccl_init || j->shard || j->ngpus > 1)))
        return run_one(j, sp, qc, checkpoint);
    run_gpus(j, sp, checkpoint);
    return j->gpu_gemm == GEMM_FP16 && !scores_finite(j);
}

static void score_job_run_one(ScoreJob* j, const char* checkpoint) {
    j->score = xcalloc((size_t)j->nf * j->groups.n, sizeof(double));
    // Each window's contribution (README §8), on every back end (a --nccl-init run gathers every rank's
    // windows with an all-reduce); beyond 1 GiB they are left out.
    size_t wbytes = sizeof(double) * (size_t)j->ids.n * j->nf * j->groups.n;
    if (wbytes <= (1UL << 30)) j->wscore = xcalloc(wbytes, 1);
    if (!j->wscore)
        warn_msg("score: per-window scores would take %.1f GiB: not kept (search --bootstrap needs them)",
                 wbytes / 1073741824.0);
    const Config* c = &j->model.c;
    if (!j->recomputed) j->recomputed = xcalloc(c->num_layers, 1); // gradient engines mark what they recompute
    if (c->n_sparse) {
        j->expert_tokens = xcalloc((size_t)c->n_sparse * c->num_experts, sizeof(long));
        j->sparse_layers = xcalloc(c->n_sparse, sizeof(int));
        for (int l = 0, r = 0; l < c->num_layers; l++)
            if (c->sparse[l]) j->sparse_layers[r++] = l;
    }
    GpuScoreSpec sp = {&j->model,
                       &j->groups,
                       j->fmts,
                       j->nf,
                       j->method == METHOD_GRADIENT,
                       j->ids.t,
                       j->batch_size < j->ids.n ? j->batch_size : j->ids.n,
                       j->gpu_gemm,
                       j->expert_tokens,
                       NULL,
                       j->wscore,
                       j->gpu_mem,
                       j->recomputed};
    // The candidates' weights, built here for every back end: the CPU scorer takes them as they are, the
    // GPU engines take GPTQ's as int8 codes (round-to-nearest they quantize themselves, from bf16).
    QuantCache qc;
    memset(&qc, 0, sizeof(qc));
    int build = !j->use_gpu || j->quant.kind == QUANTIZER_GPTQ;
    // GPTQ's Hessians and weights on the GPU too, for dense models (gptq_basic_gpu_sets)
    j->quant.use_gpu = j->use_gpu && j->quant.kind == QUANTIZER_GPTQ && !j->model.c.n_sparse;
    // each rank of a host on its own device (nccl_join's choice, made here already), not all on device 0
    if (j->quant.use_gpu && j->nccl_init) gpu_select_device(j->rank % gpu_device_count());
    if (build) qcache_build(&qc, &j->model, &j->groups, j->fmts, j->nf, &j->quant, &j->ids);
    if (j->use_gpu && build) {
        sp.qc = &qc;
        info_msg("score: GPTQ weights resident on the GPU as int8 codes + row scales (%d format(s))", j->nf);
    }
    if (run_scores(j, &sp, &qc, checkpoint)) { // from the start, with the GEMM inputs that keep fp32's range
        warn_msg("score: fp16 GEMM inputs overflowed (activations beyond 65504) and gave non-finite scores; "
                 "scoring again with --gpu-gemm bf16x2");
        if (checkpoint) unlink(checkpoint); // it holds the fp16 run's progress, and its identity
        memset(j->score, 0, sizeof(double) * j->nf * j->groups.n);
        if (j->wscore) memset(j->wscore, 0, wbytes);
        if (j->expert_tokens) memset(j->expert_tokens, 0, sizeof(long) * c->n_sparse * c->num_experts);
        j->work = (Work){0};
        j->samples_done = 0;
        j->gpu_gemm = sp.split = GEMM_BF16X2;
        run_scores(j, &sp, &qc, checkpoint);
    }
    if (build) qcache_free(&qc);
    score_job_report_experts(j);
}

// Every domain in turn (README §8 /domains): each domain's windows loaded and scored as one plain run, the
// sums, window scores and expert counts then joined in domain order.
void score_job_run(ScoreJob* j, const char* checkpoint) {
    if (!j->nd) {
        score_job_run_one(j, checkpoint);
        return;
    }
    if (checkpoint) fail_input("--checkpoint: not supported with several --data domains");
    if (j->nccl_init) fail_input("--nccl-init: not supported with several --data domains");
    size_t n = (size_t)j->nf * j->groups.n;
    const Config* c = &j->model.c;
    size_t ne = (size_t)c->n_sparse * c->num_experts;
    double* total = xcalloc(n, sizeof(double));
    double* wall = NULL;
    long* experts = ne ? xcalloc(ne, sizeof(long)) : NULL;
    int have_w = 1, T = j->ids.t;
    Work work = {0};
    double seconds = 0;
    j->dscore = xcalloc(n * j->nd, sizeof(double));
    j->total_windows = 0;
    for (int d = 0; d < j->nd; d++) {
        if (d) { // the next domain's windows, as score_job_load read the first's
            token_ids_free(&j->ids);
            j->data.path = j->dpath[d];
            data_load(&j->ids, &j->data);
            model_check_seq_len(&j->model, j->ids.t, j->data.path);
            if (j->ids.t != T)
                fail_input("--data %s=%s: windows of %d tokens, domain %s's have %d (give --seq-len)",
                           j->dname[d], j->dpath[d], j->ids.t, j->dname[0], T);
            free(j->score);
            free(j->wscore);
            free(j->expert_tokens);
            free(j->sparse_layers);
            j->score = j->wscore = NULL;
            j->expert_tokens = NULL;
            j->sparse_layers = NULL;
            j->work = (Work){0};
            j->samples_done = 0;
        }
        info_msg("score: domain %s (%s), %d windows", j->dname[d], j->dpath[d], j->ids.n);
        score_job_run_one(j, NULL);
        j->dsamples[d] = j->ids.n;
        for (size_t k = 0; k < n; k++) total[k] += j->score[k];
        memcpy(j->dscore + d * n, j->score, sizeof(double) * n);
        have_w &= j->wscore != NULL;
        if (have_w) {
            wall = realloc(wall, sizeof(double) * n * (j->total_windows + j->ids.n));
            if (!wall) fail_other("out of memory");
            memcpy(wall + n * j->total_windows, j->wscore, sizeof(double) * n * j->ids.n);
        }
        for (size_t k = 0; k < ne; k++) experts[k] += j->expert_tokens[k];
        work.forward_equiv += j->work.forward_equiv;
        work.naive_equiv += j->work.naive_equiv;
        seconds += j->seconds;
        j->total_windows += j->ids.n;
    }
    memcpy(j->score, total, sizeof(double) * n);
    free(total);
    free(j->wscore);
    j->wscore = have_w ? wall : NULL;
    if (!have_w) free(wall);
    if (ne) memcpy(j->expert_tokens, experts, sizeof(long) * ne);
    free(experts);
    j->work = work;
    j->seconds = seconds;
    j->samples_done = j->total_windows;
}

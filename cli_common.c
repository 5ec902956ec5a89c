#include "cli_common.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "engine/util.h"

void score_job_parse(ScoreJob* j, Args* a, int need_method) {
    memset(j, 0, sizeof(*j));
    j->data.path = args_str(a, "--data");
    j->data.num_samples = args_int(a, "--num-samples", 0, 1, 1 << 30);
    j->data.seq_len = args_int(a, "--seq-len", 0, 2, 1 << 20);
    j->data.shuffle = args_flag(a, "--shuffle");
    j->data.seed = (unsigned long)args_int(a, "--seed", 0, 0, 1 << 30);
    const char* method = args_str(a, "--method");
    if (method && strcmp(method, "kl") == 0)
        j->method = METHOD_KL;
    else if (method && strcmp(method, "gradient") == 0)
        j->method = METHOD_GRADIENT;
    else if (method || need_method)
        fail_input("%s: --method must be kl or gradient (got '%s')", a->cmd, method ? method : "nothing");
    j->format_csv = args_str(a, "--format");
    if (!j->format_csv) j->format_csv = "w4a8";
    const char* num = args_str(a, "--numerics");
    if (num && strcmp(num, "compressed-tensors") == 0)
        j->ct = 1;
    else if (num && strcmp(num, "modelopt") != 0)
        fail_input("%s: --numerics must be modelopt or compressed-tensors (got '%s')", a->cmd, num);
    j->disabled_csv = args_str(a, "--disabled-layers");
    if (!j->disabled_csv) j->disabled_csv = DEFAULT_DISABLED;
    j->no_grouping = args_flag(a, "--no-grouping");
    j->batch_size = args_int(a, "--batch-size", 4, 1, 1 << 16);
    const char* dev = args_str(a, "--device");
    if (dev && strcmp(dev, "auto") && strcmp(dev, "cpu") && strcmp(dev, "cuda"))
        fail_input("%s: --device must be auto, cpu or cuda (got '%s')", a->cmd, dev);
    j->device = dev ? dev : "auto";
    const char* gg = args_str(a, "--gpu-gemm");
    if (gg && strcmp(gg, "bf16") && strcmp(gg, "bf16x2"))
        fail_input("%s: --gpu-gemm must be bf16x2 or bf16 (got '%s')", a->cmd, gg);
    // default: bf16 hi + lo for kl (small KL values sit below a plain-bf16 model's noise floor);
    // plain bf16 for gradient, whose scores it already reproduces within 1% (tests/test_gpu.c)
    j->gpu_split = gg ? strcmp(gg, "bf16x2") == 0 : j->method == METHOD_KL;
    j->ngpus = args_int(a, "--gpus", 0, 1, 64);
    j->nccl_init = args_str(a, "--nccl-init");
    j->rank = args_int(a, "--rank", -1, 0, 1 << 20);
    j->world = args_int(a, "--world-size", 0, 1, 1 << 20);
    int given = (j->nccl_init != NULL) + (j->rank >= 0) + (j->world > 0);
    if (given != 0 && given != 3) fail_input("%s: --nccl-init, --rank and --world-size go together", a->cmd);
    if (j->nccl_init) rdv_parse(&j->rdv, j->nccl_init);
    if (j->nccl_init && j->rank >= j->world)
        fail_input("%s: --rank %d must be below --world-size %d", a->cmd, j->rank, j->world);
    if (j->nccl_init && j->ngpus)
        fail_input("%s: --gpus and --nccl-init exclude each other (one GPU per rank)", a->cmd);
    j->shard = args_flag(a, "--shard-layers");
    if (j->shard && j->nccl_init)
        fail_input("%s: --shard-layers runs one process over --gpus N, not with --nccl-init", a->cmd);
    j->model_dir = args_pos(a, 0);
}

void score_job_load(ScoreJob* j) {
    if (!j->model_dir) fail_input("MODEL folder missing");
    if (!j->data.path) fail_input("--data is required");
    j->nf = formats_load(j->fmts, MAX_FORMATS, j->format_csv, j->ct);
    int want_gpu = strcmp(j->device, "cuda") == 0;
    if (want_gpu && gpu_device_count() == 0) fail_input("--device cuda: no CUDA device found");
    j->use_gpu = want_gpu || (strcmp(j->device, "auto") == 0 && gpu_device_count() > 0);
    if (j->ngpus && !j->use_gpu)
        fail_input("--gpus %d: no CUDA device in use (--device cpu or none found)", j->ngpus);
    if (j->use_gpu) {
        int have = gpu_device_count();
        if (j->ngpus > have) fail_input("--gpus %d: only %d CUDA device(s) visible", j->ngpus, have);
        if (!j->ngpus) j->ngpus = have;
    }
    if (j->shard && (!j->use_gpu || j->ngpus < 2))
        fail_input("--shard-layers: needs 2 or more CUDA devices (--device cuda --gpus N; %d in use)",
                   j->use_gpu ? j->ngpus : 0);
    for (int f = 0; j->use_gpu && f < j->nf; f++)
        if (!j->fmts[f].w_enable || !j->fmts[f].in_enable)
            fail_input(
                "%s: the CUDA engine runs formats with both a weight and an input quantizer; use --device cpu",
                j->fmts[f].path);
    if (j->use_gpu && !j->need_host)
        model_open(&j->model, j->model_dir); // bf16 to the GPU, no fp32 host copy
    else
        model_load(&j->model, j->model_dir);
    patterns_parse(&j->dis, j->disabled_csv);
    groups_build(&j->groups, &j->model, j->no_grouping, &j->dis);
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
    data_load(&j->ids, &j->data);
}

void score_job_table(const ScoreJob* j, ScoreTable* t) {
    memset(t, 0, sizeof(*t));
    const Model* m = &j->model;
    const Groups* gs = &j->groups;
    snprintf(t->model, sizeof(t->model), "%s", j->model_dir);
    snprintf(t->method, sizeof(t->method), "%s", method_name(j->method));
    snprintf(t->numerics, sizeof(t->numerics), "%s", j->ct ? "compressed-tensors" : "modelopt");
    snprintf(t->disabled_csv, sizeof(t->disabled_csv), "%s", j->disabled_csv);
    t->nf = j->nf;
    for (int f = 0; f < j->nf; f++) {
        snprintf(t->fmt_name[f], 64, "%s", j->fmts[f].name);
        t->fmt_bits[f] = j->fmts[f].bits;
    }
    t->num_samples = j->ids.n;
    t->seq_len = j->ids.t;
    t->ng = gs->n;
    t->gname = xcalloc(gs->n, sizeof(char*));
    t->gmembers = xcalloc(gs->n, sizeof(char*));
    t->params = xmalloc(sizeof(long) * gs->n);
    t->disabled = xmalloc(gs->n);
    t->score = xmalloc(sizeof(double) * gs->n * j->nf);
    for (int g = 0; g < gs->n; g++) {
        const Group* gr = &gs->g[g];
        t->gname[g] = xstrdup(gr->name);
        char buf[3 * 170] = "";
        for (int k = 0; k < gr->n_members; k++) {
            if (k) strcat(buf, ",");
            strcat(buf, m->linears[gr->members[k]].name);
        }
        t->gmembers[g] = xstrdup(buf);
        t->params[g] = gr->params;
        t->disabled[g] = (uint8_t)gr->disabled;
        for (int f = 0; f < j->nf; f++)
            t->score[(size_t)f * gs->n + g] = gr->disabled ? 0.0 : j->scorer.score[(size_t)f * gs->n + g];
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
}

void score_job_free(ScoreJob* j) {
    if (j->scorer.on_gpu) {
        if (j->gpu) gpu_engine_free(j->gpu);
        free(j->scorer.score);
    } else if (j->scorer.score) {
        scorer_free(&j->scorer);
    }
    token_ids_free(&j->ids);
    groups_free(&j->groups);
    patterns_free(&j->dis);
    model_free(&j->model);
}

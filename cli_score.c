// autoq score: per-group sensitivity over calibration windows, with
// checkpoint/resume, a table on stdout, JSON and HDF5 outputs.
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_common.h"
#include "engine/util.h"

static uint32_t crc32_ids(const int* ids, size_t n) {
    uint32_t c = 0xffffffffu;
    const unsigned char* p = (const unsigned char*)ids;
    for (size_t i = 0; i < n * sizeof(int); i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return ~c;
}

// The identity of a scoring run: a checkpoint resumes only the same run.
static json_t* run_identity(const ScoreJob* j) {
    json_t* id = json_object();
    json_object_set_new(id, "model", json_string(j->model_dir));
    json_object_set_new(id, "method", json_string(method_name(j->method)));
    json_object_set_new(id, "formats", json_string(j->format_csv));
    json_object_set_new(id, "numerics", json_string(j->ct ? "compressed-tensors" : "modelopt"));
    json_object_set_new(id, "disabled_layers", json_string(j->disabled_csv));
    json_object_set_new(id, "no_grouping", json_boolean(j->no_grouping));
    json_object_set_new(id, "num_samples", json_integer(j->ids.n));
    json_object_set_new(id, "seq_len", json_integer(j->ids.t));
    json_object_set_new(id, "data_crc32", json_integer(crc32_ids(j->ids.ids, (size_t)j->ids.n * j->ids.t)));
    // The engine and its batching fix the summation order, so a resumed run must use the same.
    json_object_set_new(id, "engine", json_string(j->use_gpu ? "cuda" : "cpu"));
    if (j->use_gpu) {
        json_object_set_new(id, "batch_size", json_integer(j->batch_size));
        json_object_set_new(id, "gpu_gemm", json_string(j->gpu_split ? "bf16x2" : "bf16"));
    }
    return id;
}

static void checkpoint_save(const char* path, json_t* id, const Scorer* s) {
    json_t* j = json_object();
    json_object_set(j, "run", id);
    json_object_set_new(j, "samples_done", json_integer(s->samples_done));
    json_object_set_new(j, "forward_equiv", json_real(s->forward_equiv));
    json_object_set_new(j, "naive_equiv", json_real(s->naive_equiv));
    json_t* sc = json_array();
    for (int i = 0; i < s->nf * s->gs->n; i++) json_array_append_new(sc, json_real(s->score[i]));
    json_object_set_new(j, "scores", sc);
    OutFile o;
    out_open(&o, path);
    json_dumpf(j, o.f, JSON_REAL_PRECISION(17)); // %.17g round-trips every double exactly
    out_close(&o);
    json_decref(j);
}

// Returns the number of samples already done (0 when there is no checkpoint).
static int checkpoint_load(const char* path, json_t* id, Scorer* s) {
    if (access(path, F_OK) != 0) return 0;
    json_error_t err;
    json_t* j = json_load_file(path, 0, &err);
    if (!j) fail_input("%s: checkpoint is not valid JSON (line %d: %s)", path, err.line, err.text);
    json_t* run = json_object_get(j, "run");
    const char* key;
    json_t* val;
    json_object_foreach(id, key, val) {
        if (!json_equal(val, json_object_get(run, key)))
            fail_input(
                "%s: checkpoint belongs to another run (field '%s' differs); remove it or pick another file",
                path, key);
    }
    json_t* sc = json_object_get(j, "scores");
    json_t* done = json_object_get(j, "samples_done");
    if (!json_is_array(sc) || (int)json_array_size(sc) != s->nf * s->gs->n || !json_is_integer(done))
        fail_input("%s: checkpoint field 'scores' or 'samples_done' is malformed", path);
    for (int i = 0; i < s->nf * s->gs->n; i++) s->score[i] = json_number_value(json_array_get(sc, i));
    s->samples_done = (int)json_integer_value(done);
    s->forward_equiv = json_number_value(json_object_get(j, "forward_equiv"));
    s->naive_equiv = json_number_value(json_object_get(j, "naive_equiv"));
    json_decref(j);
    return s->samples_done;
}

// On the GPU the Scorer keeps only the sums; returns the windows per batch.
static int gpu_sums_init(ScoreJob* j, Scorer* s) {
    memset(s, 0, sizeof(*s));
    s->m = &j->model;
    s->gs = &j->groups;
    s->fmts = j->fmts;
    s->nf = j->nf;
    s->method = j->method;
    s->score = xcalloc((size_t)j->nf * j->groups.n, sizeof(double));
    s->on_gpu = 1;
    return j->batch_size < j->ids.n ? j->batch_size : j->ids.n;
}

// Scores on one GPU in batches of --batch-size windows.
static void gpu_init(ScoreJob* j, Scorer* s) {
    int B = gpu_sums_init(j, s);
    j->gpu = gpu_engine_init(&j->model, j->ids.t, B, j->gpu_split);
    info_msg("score: CUDA device %s, batches of %d windows, GEMM inputs %s", gpu_name(), B,
             j->gpu_split ? "bf16 hi+lo (~16 bits)" : "bf16 (kl: bf16 activations, fp32 residual)");
}

// Several GPUs: every window at once, data parallel (engine/gpu_multi.cu).
static void run_multi(ScoreJob* j, Scorer* s, const char* checkpoint) {
    if (checkpoint) fail_input("--checkpoint: not supported with --gpus %d (use one GPU)", j->ngpus);
    int B = gpu_sums_init(j, s);
    info_msg("score: %d CUDA devices (%s), batches of %d windows, data parallel", j->ngpus, gpu_name(), B);
    double t0 = time_now(), gpu_seconds;
    gpu_score_multi(&j->model, &j->groups, j->fmts, j->nf, j->method == METHOD_GRADIENT, j->ids.ids, j->ids.n,
                    j->ids.t, B, j->gpu_split, j->ngpus, s->score, &gpu_seconds, &j->gpu_peak);
    s->samples_done = j->ids.n;
    j->seconds = gpu_seconds; // the slowest GPU's scoring, loading excluded as on one GPU
    info_msg("score: %.2fs including the weight uploads", time_now() - t0);
}

// Several GPUs, each holding a range of layers (engine/gpu_pipeline.cu).
static void run_sharded(ScoreJob* j, Scorer* s, const char* checkpoint) {
    if (checkpoint) fail_input("--checkpoint: not supported with --shard-layers");
    int B = gpu_sums_init(j, s);
    info_msg("score: %d CUDA devices (%s), batches of %d windows, layers sharded over the GPUs", j->ngpus,
             gpu_name(), B);
    double t0 = time_now(), gpu_seconds;
    gpu_score_sharded(&j->model, &j->groups, j->fmts, j->nf, j->method == METHOD_GRADIENT, j->ids.ids, j->ids.n,
                      j->ids.t, B, j->gpu_split, j->ngpus, s->score, &gpu_seconds, &j->gpu_peak);
    s->samples_done = j->ids.n;
    j->seconds = gpu_seconds;
    info_msg("score: %.2fs including the weight uploads", time_now() - t0);
}

// One rank of a multi-process run (--nccl-init): this process's GPU, its share of the windows.
static void run_ranked(ScoreJob* j, Scorer* s, const char* checkpoint) {
    if (checkpoint) fail_input("--checkpoint: not supported with --nccl-init");
    int B = gpu_sums_init(j, s);
    gpu_score_ranked(&j->model, &j->groups, j->fmts, j->nf, j->method == METHOD_GRADIENT, j->ids.ids, j->ids.n,
                     j->ids.t, B, j->gpu_split, j->rank, j->world, &j->rdv, s->score, &j->seconds,
                     &j->gpu_peak);
    s->samples_done = j->ids.n;
}

void score_job_run(ScoreJob* j, const char* checkpoint) {
    Scorer* s = &j->scorer;
    if (j->use_gpu && j->nccl_init) {
        run_ranked(j, s, checkpoint);
        return;
    }
    if (j->use_gpu && j->shard) {
        run_sharded(j, s, checkpoint);
        return;
    }
    if (j->use_gpu && j->ngpus > 1) {
        run_multi(j, s, checkpoint);
        return;
    }
    if (j->use_gpu)
        gpu_init(j, s);
    else
        scorer_init(s, &j->model, &j->groups, j->fmts, j->nf, j->method, j->ids.t);
    json_t* id = run_identity(j);
    int start = checkpoint ? checkpoint_load(checkpoint, id, s) : 0;
    if (start > j->ids.n) fail_input("%s: checkpoint has more samples than the data", checkpoint);
    if (start) info_msg("score: resuming from %s after %d of %d samples", checkpoint, start, j->ids.n);
    // Test hook: simulates a run killed after K samples (tests/test_score.sh).
    const char* abort_after = getenv("AUTOQ_TEST_ABORT_AFTER");
    double t0 = time_now();
    Progress p;
    progress_init(&p, method_name(j->method), j->ids.n);
    progress_step(&p, start);
    for (int i = start; i < j->ids.n;) {
        int nb = 1;
        if (j->use_gpu) {
            nb = j->ids.n - i < j->batch_size ? j->ids.n - i : j->batch_size;
            const int* ids = j->ids.ids + (long)i * j->ids.t;
            s->samples_done += nb;
            if (j->method == METHOD_GRADIENT) {
                gpu_score_gradient(j->gpu, &j->groups, j->fmts, j->nf, ids, nb, s->score);
                s->forward_equiv += 4.0 * nb; // forward, recompute, backward (about twice a forward)
            } else {
                gpu_score_kl(j->gpu, &j->groups, j->fmts, j->nf, ids, nb, s->score);
                for (int g = 0; g < j->groups.n; g++)
                    if (!j->groups.g[g].disabled)
                        s->forward_equiv += j->nf * nb *
                                            (double)(j->model.c.num_layers - j->groups.g[g].layer) /
                                            j->model.c.num_layers;
                s->forward_equiv += nb;
                s->naive_equiv += nb * (1.0 + j->nf * j->groups.n_enabled);
            }
        } else {
            scorer_add_sample(s, j->ids.ids + (long)i * j->ids.t);
        }
        i += nb;
        if (checkpoint) checkpoint_save(checkpoint, id, s);
        progress_step(&p, nb);
        if (abort_after && s->samples_done == atoi(abort_after)) abort();
    }
    if (j->use_gpu) j->gpu_peak = gpu_peak_bytes(j->gpu);
    progress_end(&p);
    j->seconds = time_now() - t0;
    json_decref(id);
}

int cmd_score(int argc, char** argv) {
    Args a;
    args_init(&a, argc, argv, NULL);
    ScoreJob j;
    score_job_parse(&j, &a, 1);
    const char* h5 = args_str(&a, "--out");
    const char* json = args_str(&a, "--json");
    const char* checkpoint = args_str(&a, "--checkpoint");
    args_done(&a);
    score_job_load(&j);
    score_job_run(&j, checkpoint);
    if (j.nccl_init && j.rank != 0) { // rank 0 writes the results
        score_job_free(&j);
        return 0;
    }
    ScoreTable t;
    score_job_table(&j, &t);
    int json_stdout = json && strcmp(json, "-") == 0;
    if (!json_stdout) table_print(&t);
    Scorer* s = &j.scorer;
    info_msg("score: %s, %d groups (%d enabled) x %d format(s), %d x %d tokens in %.2fs (%.0f tokens/s), peak "
             "RSS %.0f MiB%s",
             method_name(j.method), j.groups.n, j.groups.n_enabled, j.nf, j.ids.n, j.ids.t, j.seconds,
             j.ids.n * (double)j.ids.t / j.seconds, peak_rss_bytes() / 1048576.0,
             j.use_gpu ? ", on the GPU" : "");
    if (j.use_gpu) info_msg("score: peak GPU memory %.2f GiB", j.gpu_peak / 1073741824.0);
    if (j.method == METHOD_KL)
        info_msg("score: prefix reuse: %.1f forward-equivalents instead of %.1f (%.0f%% saved)",
                 s->forward_equiv, s->naive_equiv, 100.0 * (1.0 - s->forward_equiv / s->naive_equiv));
    if (json) table_write_json(&t, json);
    if (h5) table_h5_finish(table_h5_create(&t, h5), h5);
    table_free(&t);
    score_job_free(&j);
    return 0;
}

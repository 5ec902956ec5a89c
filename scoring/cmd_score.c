// autoq score: per-group sensitivity over calibration windows; a table on stdout, JSON and HDF5.
#include <string.h>

#include "../engine/args.h"
#include "../engine/util.h"
#include "job.h"
#include "shard_plan.h"

int cmd_score(Args* a) {
    ScoreJob j;
    score_job_parse(&j, a, 1);
    const char* h5 = args_str(a, "--out");
    const char* json = args_str(a, "--json");
    const char* checkpoint = args_str(a, "--checkpoint");
    args_done(a);
    // every output path is checked before any compute, so a typo never costs a whole run
    if (h5) out_check(h5, "--out");
    if (json) out_check(json, "--json");
    if (checkpoint) out_check(checkpoint, "--checkpoint");
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
    info_msg("score: %s, %d groups (%d enabled) x %d format(s), %d x %d tokens in %.2fs (%.0f tokens/s), peak "
             "RSS %.0f MiB%s",
             method_name(j.method), j.groups.n, j.groups.n_enabled, j.nf, j.ids.n, j.ids.t, j.seconds,
             j.ids.n * (double)j.ids.t / j.seconds, peak_rss_bytes() / 1048576.0,
             j.use_gpu ? ", on the GPU" : "");
    if (j.use_gpu) info_msg("score: peak GPU memory %.2f GiB", j.gpu_peak / 1073741824.0);
    if (j.streamed)
        info_msg(
            "score: streamed layers: %.2f GiB copied host->GPU, %.3fs of copies not hidden behind compute, "
            "%.3f GiB (%.0f bytes) allocated by the engine (the peak above counts the CUDA libraries' "
            "workspaces and any other process on the GPU too)",
            j.stream_h2d / 1073741824.0, j.stream_unhidden, j.stream_alloc / 1073741824.0, j.stream_alloc);
    // the work the method requires (README "Several GPUs"), and where the gradient recomputed layers, the work
    // executed with their second forward
    const Config* c = &j.model.c;
    int grad = j.method == METHOD_GRADIENT, nrec = 0;
    for (int l = 0; grad && j.recomputed && l < c->num_layers; l++) nrec += j.recomputed[l];
    double tokens = (double)j.ids.n * j.ids.t;
    double flops = shard_work_flops(c, &j.groups, j.nf, grad, j.ids.t, 0, NULL) * tokens;
    double exec = shard_work_flops(c, &j.groups, j.nf, grad, j.ids.t, 0, j.recomputed) * tokens;
    char also[160] = "";
    if (nrec)
        snprintf(also, sizeof(also), "; executed %.3g TFLOP with %d of %d layers recomputed, %.3g TFLOP/s",
                 exec / 1e12, nrec, c->num_layers, exec / 1e12 / j.seconds);
    info_msg("score: %.3g TFLOP of the passes' GEMM, attention and delta-rule products (README \"Several "
             "GPUs\"), %.3g TFLOP/s%s",
             flops / 1e12, flops / 1e12 / j.seconds, also);
    if (j.method == METHOD_KL)
        info_msg("score: prefix reuse: %.1f forward-equivalents instead of %.1f (%.0f%% saved)",
                 j.work.forward_equiv, j.work.naive_equiv,
                 100.0 * (1.0 - j.work.forward_equiv / j.work.naive_equiv));
    if (json) table_write_json(&t, json);
    if (h5) table_h5_finish(table_h5_create(&t, h5), h5);
    table_free(&t);
    score_job_free(&j);
    return 0;
}

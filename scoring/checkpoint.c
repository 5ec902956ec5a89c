#include "checkpoint.h"
#include "../engine/input.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

#include "../engine/util.h"

static uint32_t crc32_ids(const int* ids, size_t n) {
    uint32_t c = 0xffffffffu;
    const unsigned char* p = (const unsigned char*)ids;
    for (size_t i = 0; i < n * sizeof(int); i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return ~c;
}

json_t* checkpoint_identity(const ScoreJob* j) {
    json_t* id = json_object();
    json_object_set_new(id, "model", json_string(j->model_dir));
    json_object_set_new(id, "method", json_string(method_name(j->method)));
    json_object_set_new(id, "formats", json_string(j->format_csv));
    if (j->quant.kind == QUANTIZER_GPTQ) { // absent for rtn, so earlier checkpoints still resume
        json_object_set_new(id, "quantizer", json_string("gptq"));
        json_object_set_new(id, "gptq_dampening", json_real(j->quant.gptq.damp));
        json_object_set_new(id, "gptq_actorder", json_integer(j->quant.gptq.order));
    }
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
        const char* gemm[3] = {"bf16", "bf16x2", "fp16"};
        json_object_set_new(id, "gpu_gemm", json_string(gemm[j->gpu_gemm]));
    }
    return id;
}

void checkpoint_save(const char* path, json_t* id, const ScoreJob* j) {
    json_t* o = json_object();
    json_object_set(o, "run", id);
    json_object_set_new(o, "samples_done", json_integer(j->samples_done));
    json_object_set_new(o, "forward_equiv", json_real(j->work.forward_equiv));
    json_object_set_new(o, "naive_equiv", json_real(j->work.naive_equiv));
    json_t* sc = json_array();
    for (int i = 0; i < j->nf * j->groups.n; i++) json_array_append_new(sc, json_real(j->score[i]));
    json_object_set_new(o, "scores", sc);
    // each window's contribution (README §8 /groups/window_scores), while the checkpoint stays small: it is
    // rewritten after every window
    size_t nw = (size_t)j->samples_done * j->nf * j->groups.n;
    if (j->wscore && nw <= CHECKPOINT_MAX_WINDOW_NUMBERS) {
        json_t* ws = json_array();
        for (size_t i = 0; i < nw; i++) json_array_append_new(ws, json_real(j->wscore[i]));
        json_object_set_new(o, "window_scores", ws);
    }
    if (j->expert_tokens) { // expert coverage resumes with the sums
        json_t* et = json_array();
        for (long i = 0; i < (long)j->model.c.n_sparse * j->model.c.num_experts; i++)
            json_array_append_new(et, json_integer(j->expert_tokens[i]));
        json_object_set_new(o, "expert_tokens", et);
    }
    OutFile f;
    out_open(&f, path);
    json_dumpf(o, f.f, JSON_REAL_PRECISION(17)); // %.17g round-trips every double exactly
    out_close(&f);
    json_decref(o);
}

// A finite, non-negative number (scores and work counts are sums of squares and of passes).
static double number_field(const char* path, json_t* v, const char* field) {
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < 0)
        fail_input("%s: checkpoint field '%s' must be a finite number >= 0", path, field);
    return json_number_value(v);
}

int checkpoint_load(const char* path, json_t* id, ScoreJob* j) {
    json_t* o = input_json_opt(path, "checkpoint", JSON_REJECT_DUPLICATES);
    if (!o) return 0; // none yet: a fresh run
    if (!json_is_object(o)) fail_input("%s: checkpoint is not a JSON object", path);
    json_t* run = json_object_get(o, "run");
    const char* key;
    json_t* val;
    json_object_foreach(id, key, val) {
        if (!json_equal(val, json_object_get(run, key)))
            fail_input(
                "%s: checkpoint belongs to another run (field '%s' differs); remove it or pick another file",
                path, key);
    }
    json_t* sc = json_object_get(o, "scores");
    int n = j->nf * j->groups.n;
    if (!json_is_array(sc) || (int)json_array_size(sc) != n)
        fail_input("%s: checkpoint field 'scores' must be an array of %d numbers", path, n);
    for (int i = 0; i < n; i++) j->score[i] = number_field(path, json_array_get(sc, i), "scores");
    if (j->expert_tokens) {
        json_t* et = json_object_get(o, "expert_tokens");
        long ne = (long)j->model.c.n_sparse * j->model.c.num_experts;
        if (!json_is_array(et) || (long)json_array_size(et) != ne)
            fail_input("%s: checkpoint field 'expert_tokens' must be an array of %ld integers", path, ne);
        for (long i = 0; i < ne; i++) {
            json_t* v = json_array_get(et, i);
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                fail_input("%s: checkpoint field 'expert_tokens' must hold integers >= 0", path);
            j->expert_tokens[i] = (long)json_integer_value(v);
        }
    }
    json_t* done = json_object_get(o, "samples_done");
    // json_integer_value is 64-bit: compare before narrowing, so 2^32 can never wrap to 0
    if (!json_is_integer(done) || json_integer_value(done) < 0 || json_integer_value(done) > j->ids.n)
        fail_input("%s: checkpoint field 'samples_done' must be an integer in [0, %d]", path, j->ids.n);
    j->samples_done = (int)json_integer_value(done);
    // A checkpoint without window scores (an older one, or one past the size limit) resumes without them.
    json_t* ws = json_object_get(o, "window_scores");
    size_t nw = (size_t)j->samples_done * n;
    if (j->wscore && j->samples_done && json_is_array(ws) && json_array_size(ws) == nw) {
        for (size_t i = 0; i < nw; i++) {
            json_t* v = json_array_get(ws, i);
            if (!json_is_number(v) || !isfinite(json_number_value(v)))
                fail_input("%s: checkpoint field 'window_scores' must hold finite numbers", path);
            j->wscore[i] = json_number_value(v);
        }
    } else if (ws && !json_is_array(ws)) {
        fail_input("%s: checkpoint field 'window_scores' must be an array", path);
    } else if (j->samples_done && j->wscore) {
        if (ws) fail_input("%s: checkpoint field 'window_scores' must hold %zu numbers", path, nw);
        warn_msg(
            "score: %s holds no per-window scores: the resumed run keeps none (search --bootstrap needs them)",
            path);
        free(j->wscore);
        j->wscore = NULL;
    }
    j->work.forward_equiv = number_field(path, json_object_get(o, "forward_equiv"), "forward_equiv");
    j->work.naive_equiv = number_field(path, json_object_get(o, "naive_equiv"), "naive_equiv");
    json_decref(o);
    return j->samples_done;
}

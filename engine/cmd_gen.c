// autoq gen: a seeded Qwen3 or Qwen3-MoE checkpoint of a preset shape (with a byte-level BPE tokenizer
// trained on a corpus, and token ids), for the demo, tests and benchmarks.
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "../datasets/bpe_train.h"
#include "../datasets/npy.h"
#include "args.h"
#include "config.h"
#include "generate.h"
#include "util.h"

int cmd_gen(Args* a) {
    const char* preset = args_str(a, "--preset");
    long seed = args_int(a, "--seed", 1);
    const char* ids_path = args_str(a, "--ids");
    const char* corpus = args_str(a, "--corpus");
    if (!ids_path) args_refuse(a, G_IDS, "without --ids");
    int n = args_int(a, "--num-samples", 8);
    int t = args_int(a, "--seq-len", 128);
    int layers = args_int(a, "--layers", 0);        // 0: the preset's
    int shard_mib = args_int(a, "--shard-mib", -1); // -1: the preset's
    int force = args_flag(a, "--force");
    const char* dir = args_pos(a, 0); // required by the table (autoq.c)
    args_done(a);
    const GenPreset* found = gen_preset(preset ? preset : "tiny");
    if (!found) fail_input("gen: --preset '%s' is not one of %s", preset, gen_preset_names());
    GenPreset p = *found;
    if (layers) {
        // Fewer layers (the accuracy checks use a 4-layer 30b-a3b shape): mlp_only_layers beyond
        // the last layer go.
        p.layers = layers;
        int k = 0;
        for (int i = 0; i < p.n_mlp_only; i++)
            if (p.mlp_only[i] < layers) p.mlp_only[k++] = p.mlp_only[i];
        p.n_mlp_only = k;
    }
    if (shard_mib >= 0) p.shard_mib = shard_mib;
    // The corpus is read and checked first: bad text leaves no weights behind.
    size_t len = 0;
    char* text = corpus ? read_file(corpus, &len) : NULL;
    if (corpus && !text) fail_input("%s: cannot read corpus", corpus);
    if (text) bpe_check_text(text, len, corpus);
    // A model folder is never overwritten by accident (README, gen): an existing non-empty OUT_DIR
    // needs --force; the model is built in a temporary folder beside it and swapped in whole.
    outdir_check(dir, force, 1, "gen");
    char* tmp = outdir_begin(dir);
    double t0 = time_now();
    gen_checkpoint(tmp, dir, &p, (uint64_t)seed);
    double el = time_now() - t0;
    double gb = (double)gen_weight_bytes(&p) / 1e9;
    if (corpus) {
        char* tp = path_join(tmp, "tokenizer.json");
        bpe_train_write(tp, text, len, corpus, p.vocab);
        free(tp);
        free(text);
    }
    // Test hook: a signal once the files are written (tests/test_harden2.sh)
    if (getenv("AUTOQ_TEST_SIGNAL_WRITE")) raise(SIGTERM);
    outdir_install(tmp, dir);
    free(tmp);
    info_msg("gen: wrote %s (%s shape, %d layers, seed %ld): %.2f GB of weights in %.1fs (%.2f GB/s)", dir,
             p.name, p.layers, seed, gb, el, gb / (el > 1e-9 ? el : 1e-9));
    if (corpus) info_msg("gen: wrote %s/tokenizer.json (byte-level BPE trained on %s)", dir, corpus);
    if (ids_path) {
        int* ids = xmalloc(sizeof(int) * (size_t)n * t);
        gen_ids(ids, n, t, p.vocab, (uint64_t)seed);
        long shape[2] = {n, t};
        npy_write_i32(ids_path, ids, 2, shape);
        free(ids);
        info_msg("gen: wrote %s (%d x %d token ids)", ids_path, n, t);
    }
    return 0;
}

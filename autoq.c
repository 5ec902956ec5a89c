// autoq: which linear layers of a Qwen3 / Qwen3-VL model can take W4A8.
// The program's entry: each command lives in the folder whose work it drives (README, "Layout").
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/util.h"

int cmd_gen(int argc, char** argv);      // engine/cmd_gen.c
int cmd_tokenize(int argc, char** argv); // datasets/cmd_tokenize.c
int cmd_info(int argc, char** argv);     // scoring/cmd_info.c
int cmd_score(int argc, char** argv);    // scoring/cmd_score.c
int cmd_search(int argc, char** argv);   // search/cmd_search.c
int cmd_eval(int argc, char** argv);     // search/cmd_eval.c
int cmd_quantize(int argc, char** argv); // search/quantize.c

// Every command and option, on stderr (autoq --help, autoq CMD --help).
static void cli_usage(void) {
    fprintf(
        stderr,
        "usage:\n"
        "  autoq info     MODEL [--disabled-layers P,...] [--no-grouping] [--json]\n"
        "  autoq eval     MODEL --data D [--recipe R | --format F [--disabled-layers P,...]] [--logits "
        "OUT.npy]\n"
        "                 [--quantizer rtn|gptq [GPTQ] [--device auto|cpu|cuda]] [--num-samples N] [--seq-len "
        "T]\n"
        "                 [--shuffle --seed S] [--json]\n"
        "  autoq score    MODEL --data D --method kl|gradient [--format F[,F...]]\n"
        "                 (F: w4a8 w8a8 fp8 nvfp4 mxfp4 w4a16 w4a8_fp8, or a quant_cfg JSON file)\n"
        "                 [--numerics modelopt|compressed-tensors] [--disabled-layers P,...] [--no-grouping]\n"
        "                 [--num-samples N] [--seq-len T] [--shuffle --seed S] [--device auto|cpu|cuda]\n"
        "                 [--gpus N [--shard-layers]] [--batch-size B] [--gpu-gemm fp16|bf16x2|bf16] [--out "
        "scores.h5]\n"
        "                 [--json FILE|-]\n"
        "                 [--nccl-init file:PATH|tcp:HOST:PORT --rank R --world-size W [--shard-layers "
        "[--stages S]]]\n"
        "                 [--checkpoint FILE] [--min-expert-tokens N] [--quantizer rtn|gptq [GPTQ]] [--quiet]\n"
        "  autoq search   (--scores scores.h5 | MODEL --data D --method M ...) --budget B\n"
        "                 [--budget-scope candidates|all] [--cost memory|active] [--bits true|modelopt]\n"
        "                 [--sweep LO:HI:STEP]\n"
        "                 [--verify [--data D] [--quantizer rtn|gptq [GPTQ]]]\n"
        "                 [--out recipe.json] [--h5 out.h5] [--emit llmcompressor=FILE] [--emit "
        "modelopt=FILE]\n"
        "  autoq quantize MODEL --recipe R --out DIR [--quantizer rtn|gptq [GPTQ] --data D [--num-samples N]\n"
        "                 [--seq-len T]] [--device auto|cpu|cuda] [--force]\n"
        "  GPTQ: [--gptq-dampening F] [--gptq-actorder none|static|group] [--gptq-cache DIR]\n"
        "        [--gptq-pipeline sequential|basic] (search --verify, eval, quantize)\n"
        "  autoq tokenize MODEL_OR_TOKENIZER_JSON --text FILE [--json] [--decode]\n"
        "  autoq gen      OUT_DIR [--preset tiny|0.6b|8b|moe-small|30b-a3b] [--layers N] [--shard-mib M]\n"
        "                 [--seed S] [--corpus TEXT] [--ids OUT.npy --num-samples N --seq-len T]\n"
        "README.md explains each option.\n");
}

int main(int argc, char** argv) {
    if (argc < 2) {
        cli_usage();
        return EXIT_BAD_INPUT;
    }
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cli_usage();
            return 0;
        }
    const char* cmd = argv[1];
    if (strcmp(cmd, "info") == 0) return cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "gen") == 0) return cmd_gen(argc - 1, argv + 1);
    if (strcmp(cmd, "score") == 0) return cmd_score(argc - 1, argv + 1);
    if (strcmp(cmd, "search") == 0) return cmd_search(argc - 1, argv + 1);
    if (strcmp(cmd, "quantize") == 0) return cmd_quantize(argc - 1, argv + 1);
    if (strcmp(cmd, "tokenize") == 0) return cmd_tokenize(argc - 1, argv + 1);
    cli_usage();
    fail_input("unknown command '%s'", cmd);
}

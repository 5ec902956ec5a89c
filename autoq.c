// autoq: which linear layers of a Qwen3 / Qwen3-VL model can take W4A8.
// Subcommands: info, eval, gen (score, search, tokenize live beside them).
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "engine/util.h"

static void usage(void) {
    fprintf(stderr, "usage:\n"
                    "  autoq info   MODEL [--disabled-layers P,...] [--json]\n"
                    "  autoq eval   MODEL --data D [--format F | --recipe R] [--logits OUT.npy] [--json]\n"
                    "               [--num-samples N] [--seq-len T]\n"
                    "  autoq score  MODEL --data D --method kl|gradient [--format w4a8[,w8a8]] [...]\n"
                    "  autoq search (--scores S.h5 | MODEL --data D --method M) --budget B [...]\n"
                    "  autoq tokenize MODEL_OR_TOKENIZER_JSON --text FILE [--json] [--decode]\n"
                    "  autoq gen    OUT_DIR [--preset tiny|0.6b|8b] [--seed S] [--ids OUT.npy --num-samples N "
                    "--seq-len T]\n"
                    "Run 'autoq CMD --help' for the options of one command; see README.md.\n");
}

int main(int argc, char** argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage();
        return argc < 2 ? EXIT_BAD_INPUT : 0;
    }
    const char* cmd = argv[1];
    if (strcmp(cmd, "info") == 0) return cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "gen") == 0) return cmd_gen(argc - 1, argv + 1);
    if (strcmp(cmd, "score") == 0) return cmd_score(argc - 1, argv + 1);
    if (strcmp(cmd, "search") == 0) return cmd_search(argc - 1, argv + 1);
    if (strcmp(cmd, "tokenize") == 0) return cmd_tokenize(argc - 1, argv + 1);
    usage();
    fail_input("unknown command '%s'", cmd);
}

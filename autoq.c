// autoq: which linear layers of a Qwen3 / Qwen3-VL model can take W4A8.
// Subcommands: info, eval, score, search, tokenize, gen (cli_*.c).
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "engine/util.h"

int main(int argc, char** argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        cli_usage();
        return argc < 2 ? EXIT_BAD_INPUT : 0;
    }
    const char* cmd = argv[1];
    if (strcmp(cmd, "info") == 0) return cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "gen") == 0) return cmd_gen(argc - 1, argv + 1);
    if (strcmp(cmd, "score") == 0) return cmd_score(argc - 1, argv + 1);
    if (strcmp(cmd, "search") == 0) return cmd_search(argc - 1, argv + 1);
    if (strcmp(cmd, "tokenize") == 0) return cmd_tokenize(argc - 1, argv + 1);
    cli_usage();
    fail_input("unknown command '%s'", cmd);
}

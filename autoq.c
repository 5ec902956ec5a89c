// autoq: which linear layers of a Qwen3 / Qwen3-VL model can take W4A8.
// The program's entry and its command line: each command's options declared in one table here
// (engine/args.h parses and checks argv against it, and prints the usage from it); each command
// lives in the folder whose work it drives (README, "Layout"). README's "Commands" block is the
// synopsis below, and tests/test_cli.sh keeps the two equal.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/args.h"
#include "engine/config.h"
#include "engine/util.h"

int cmd_gen(Args* a);              // engine/cmd_gen.c
int cmd_tokenize(Args* a);         // datasets/cmd_tokenize.c
int cmd_info(Args* a);             // scoring/cmd_info.c
int cmd_score(Args* a);            // scoring/cmd_score.c
int cmd_search(Args* a);           // search/cmd_search.c
int cmd_eval(Args* a);             // search/cmd_eval.c
int cmd_quantize(Args* a);         // search/quantize.c
int cmd_check_checkpoint(Args* a); // search/check_checkpoint.c

#define MODEL_ARG(flags, group)                                                                                \
    { "MODEL", OPT_IN, "MODEL folder", NULL, 0, 0, flags, group, "a Hugging Face model folder" }

#define DATA_OPTS(flags, group)                                                                                  \
    {"--data", OPT_IN, "D",                                                                                      \
     NULL,     0,      0,                                                                                        \
     flags,    group,  "calibration data: .npy token ids [N, T], .txt or .jsonl"},                               \
        {"--num-samples", OPT_INT, "N", NULL, 1, 1 << 30, 0, group, "keep the first N windows (default: all)"},  \
        {"--seq-len", OPT_INT, "T", NULL, 2, 1 << 20, 0, group, "tokens per window of text data (default 256)"}, \
        {"--shuffle", OPT_FLAG, NULL, NULL, 0, 0, 0, group, "shuffle the windows (deterministically) first"},    \
    {                                                                                                            \
        "--seed", OPT_INT, "S", NULL, 0, 1 << 30, 0, group, "the seed of --shuffle (default 0)"                  \
    }

#define QUANT_OPTS(group)                                                                                      \
    {"--quantizer", OPT_ENUM, NULL, "rtn|gptq", 0, 0, 0, group, "round-to-nearest (default) or GPTQ weights"}, \
        {"--gptq-dampening",                                                                                   \
         OPT_DOUBLE,                                                                                           \
         "F",                                                                                                  \
         NULL,                                                                                                 \
         0,                                                                                                    \
         1,                                                                                                    \
         0,                                                                                                    \
         group,                                                                                                \
         "GPTQ: Hessian dampening, a fraction of its mean diagonal (default 0.01)"},                           \
        {"--gptq-actorder",                                                                                    \
         OPT_ENUM,                                                                                             \
         NULL,                                                                                                 \
         "none|static|group",                                                                                  \
         0,                                                                                                    \
         0,                                                                                                    \
         0,                                                                                                    \
         group,                                                                                                \
         "GPTQ: column order (default static)"},                                                               \
    {                                                                                                          \
        "--gptq-cache", OPT_IN, "DIR", NULL, 0, 0, 0, group, "GPTQ: reuse and keep quantized weights in DIR"   \
    }

#define GPTQ_PIPELINE(group)                                                                                   \
    {                                                                                                          \
        "--gptq-pipeline", OPT_ENUM, NULL, "basic|sequential", 0, 0, 0, group,                                 \
            "GPTQ: each layer's inputs from the unquantized model (basic) or from the layers already "         \
            "quantized "                                                                                       \
            "(sequential, default)"                                                                            \
    }

#define DEVICE_OPT(group)                                                                                      \
    {                                                                                                          \
        "--device", OPT_ENUM, NULL, "auto|cpu|cuda", 0, 0, 0, group,                                           \
            "where to compute (default auto: a GPU if any)"                                                    \
    }

// eval and quantize: the cap on GPTQ's GPU pipeline (README "Streaming")
#define GPTQ_MEMORY_OPT                                                                                        \
    {                                                                                                          \
        "--gpu-memory", OPT_STR, "SIZE", NULL, 0, 0, 0, 0,                                                     \
            "cap on GPU memory of the measurement and GPTQ (16GiB, 4G); beyond it layers stream"               \
    }

// The serving engine whose rules apply (configs/targets/NAME.json) and its GPU architecture.
#define TARGET_OPTS(what)                                                                                      \
    {"--target", OPT_ENUM, NULL, "vllm|sglang|trtllm", 0, 0, 0, 0, what}, {                                    \
        "--arch", OPT_ENUM, NULL, "sm90|sm100", 0, 0, 0, 0,                                                    \
            "with --target: the GPU architecture (default sm90, Hopper; sm100 Blackwell)"                      \
    }

#define DISABLED_OPT(group)                                                                                    \
    {                                                                                                          \
        "--disabled-layers", OPT_STR, "P,...", NULL, 0, 0, 0, group,                                           \
            "fnmatch patterns of modules kept bf16 (default *lm_head*,*vpm*,*resampler*,*visual*)"             \
    }

// A scoring run's options (score, and search without --scores); search passes the modes its data and
// quantizer options belong to (--verify uses them too).
#define SCORE_OPTS(flags, group, data_group, quant_group)                                                        \
    DATA_OPTS(flags | OPT_REPEAT, data_group),                                                                   \
        {"--method", OPT_ENUM, NULL, "kl|gradient", 0, 0, flags, group, "the sensitivity measure"},              \
        {"--format",                                                                                             \
         OPT_STR,                                                                                                \
         "F[,F...]",                                                                                             \
         NULL,                                                                                                   \
         0,                                                                                                      \
         0,                                                                                                      \
         0,                                                                                                      \
         group,                                                                                                  \
         "formats: configs/formats/ names, ModelOpt config names, quant_cfg files (default w4a8)"},              \
        {"--numerics",                                                                                           \
         OPT_ENUM,                                                                                               \
         NULL,                                                                                                   \
         "modelopt|compressed-tensors",                                                                          \
         0,                                                                                                      \
         0,                                                                                                      \
         0,                                                                                                      \
         group,                                                                                                  \
         "whose quantizer arithmetic (default modelopt)"},                                                       \
        DISABLED_OPT(group),                                                                                     \
        {"--no-grouping", OPT_FLAG, NULL, NULL, 0, 0, 0, group, "one decision per linear, not per group"},       \
        QUANT_OPTS(quant_group), DEVICE_OPT(data_group),                                                         \
        {"--gpus", OPT_INT, "N", NULL, 1, 64, 0, group, "CUDA devices to use (default: all visible)"},           \
        {"--shard-layers", OPT_FLAG, NULL, NULL, 0, 0, 0, group, "split the layers over the GPUs (a pipeline)"}, \
        {"--batch-size", OPT_INT, "B", NULL, 1, 1 << 16, 0, group, "windows per GPU pass (default 4)"},          \
        {"--gpu-memory",                                                                                         \
         OPT_STR,                                                                                                \
         "SIZE",                                                                                                 \
         NULL,                                                                                                   \
         0,                                                                                                      \
         0,                                                                                                      \
         0,                                                                                                      \
         data_group,                                                                                             \
         "cap on GPU memory (16GiB, 4G); beyond it layers stream from host memory"},                             \
        {"--gpu-gemm",                                                                                           \
         OPT_ENUM,                                                                                               \
         NULL,                                                                                                   \
         "fp16|bf16x2|bf16",                                                                                     \
         0,                                                                                                      \
         0,                                                                                                      \
         0,                                                                                                      \
         group,                                                                                                  \
         "GPU GEMM inputs (default fp16 for kl, bf16 for gradient)"},                                            \
        {"--nccl-init",                                                                                          \
         OPT_STR,                                                                                                \
         "file:PATH|tcp:HOST:PORT",                                                                              \
         NULL,                                                                                                   \
         0,                                                                                                      \
         0,                                                                                                      \
         0,                                                                                                      \
         group,                                                                                                  \
         "one process per GPU: where the ranks meet"},                                                           \
        {"--rank", OPT_INT, "R", NULL, 0, 1 << 20, 0, group, "this process's rank (with --nccl-init)"},          \
        {"--world-size", OPT_INT, "W", NULL, 1, 1 << 20, 0, group, "number of ranks (with --nccl-init)"},        \
        {"--stages", OPT_INT, "S",                                                                               \
         NULL,       1,       1 << 16,                                                                           \
         0,          group,   "ranks per layer pipeline (--shard-layers --nccl-init)"},                          \
    {                                                                                                            \
        "--min-expert-tokens", OPT_INT, "N", NULL, 0, 1 << 30, 0, group,                                         \
            "warn about experts routed fewer tokens (default 16)"                                                \
    }

static const Opt k_info[] = {
    MODEL_ARG(0, 0),
    DISABLED_OPT(0),
    {"--no-grouping", OPT_FLAG, NULL, NULL, 0, 0, 0, 0, "one group per linear"},
    {"--json", OPT_FLAG, NULL, NULL, 0, 0, 0, 0, "JSON on stdout instead of the table"},
    TARGET_OPTS("list the rules this serving engine imposes (MODEL then optional)"),
    {NULL},
};

static const Opt k_eval[] = {
    MODEL_ARG(OPT_REQUIRED, 0),
    DATA_OPTS(OPT_REQUIRED, 0),
    {"--recipe", OPT_IN, "R", NULL, 0, 0, 0, 0,
     "measure this recipe (search --out) against the unquantized model"},
    {"--allow-partial", OPT_FLAG, NULL, NULL, 0, 0, 0, 0,
     "with --recipe: deploy it even if it does not name every linear of MODEL (a warning)"},
    {"--format", OPT_STR, "F", NULL, 0, 0, 0, 0, "measure every candidate linear in format F"},
    {"--disabled-layers", OPT_STR, "P,...", NULL, 0, 0, 0, G_FORMAT,
     "with --format: fnmatch patterns kept bf16"},
    QUANT_OPTS(0),
    GPTQ_PIPELINE(0),
    DEVICE_OPT(0),
    GPTQ_MEMORY_OPT,
    {"--logits", OPT_OUT, "OUT.npy", NULL, 0, 0, 0, 0,
     "the first window's logits [T, V] float32 (the quantized model's with --recipe or --format)"},
    {"--json", OPT_FLAG, NULL, NULL, 0, 0, 0, 0, "JSON on stdout instead of the table"},
    {NULL},
};

static const Opt k_score[] = {
    MODEL_ARG(OPT_REQUIRED, 0),
    SCORE_OPTS(OPT_REQUIRED, 0, 0, 0),
    {"--out", OPT_OUT, "scores.h5", NULL, 0, 0, 0, 0, "the scores as HDF5 (search --scores reads it)"},
    {"--json", OPT_OUT, "FILE|-", NULL, 0, 0, OPT_STDOUT, 0, "the scores as JSON (-: on stdout alone)"},
    {"--checkpoint", OPT_OUT, "FILE", NULL, 0, 0, 0, 0, "save progress after every window; resume from it"},
    {"--gptq-pipeline", OPT_ENUM, NULL, "basic|sequential", 0, 0, OPT_REFUSED, 0, // say why, not "unknown"
     "chooses how a recipe is deployed (search --verify, eval, quantize); scores always quantize with the "
     "basic "
     "pipeline"},
    {NULL},
};

// search --scores reads scores: the scoring options are refused there (G_SCORE), and the data and
// quantizer ones unless --verify deploys the recipe (G_DATA, G_QUANT).
static const Opt k_search[] = {
    MODEL_ARG(0, G_DATA),
    {"--scores", OPT_IN, "scores.h5", NULL, 0, 0, 0, 0,
     "search these scores (score --out) instead of scoring MODEL"},
    {"--budget", OPT_DOUBLE, "B", NULL, 0, 16, OPT_LO_OPEN, 0,
     "average bits per candidate weight (or --sweep)"},
    {"--budget-scope", OPT_ENUM, NULL, "candidates|all", 0, 0, 0, 0, "what the budget averages over"},
    {"--cost", OPT_ENUM, NULL, "memory|active", 0, 0, 0, 0, "weights stored, or read per token (experts)"},
    {"--bits", OPT_ENUM, NULL, "true|modelopt", 0, 0, 0, 0, "a format's bits with its scales, or ModelOpt's"},
    {"--memory-budget", OPT_STR, "SIZE", NULL, 0, 0, 0, 0,
     "bytes for weights, KV cache and overhead (24GiB, 16GB, 1.5e10; instead of --budget)"},
    {"--context", OPT_INT, "T", NULL, 1, 1 << 30, 0, G_MEM,
     "--memory-budget: tokens per sequence the KV cache holds"},
    {"--batch", OPT_INT, "N", NULL, 1, 1 << 20, 0, G_MEM,
     "--memory-budget: sequences the KV cache holds at once (default 1)"},
    {"--overhead", OPT_STR, "SIZE", NULL, 0, 0, 0, G_MEM,
     "--memory-budget: fixed bytes for the runtime (activations, CUDA context; default 1GiB)"},
    {"--kv-uniform", OPT_FLAG, NULL, NULL, 0, 0, 0, 0,
     "one KV-cache format for every full-attention layer (as vLLM and SGLang serve it)"},
    {"--sweep", OPT_STR, "LO:HI:STEP", NULL, 0, 0, 0, 0,
     "solve every budget of the range (the Pareto frontier; sizes with --memory-budget)"},
    {"--verify", OPT_FLAG, NULL, NULL, 0, 0, 0, 0, "measure each recipe's KL and NLL on --data"},
    {"--bootstrap", OPT_INT, "N", NULL, 1, 100000, 0, 0,
     "resample the windows N times: each group's score interval and how often each choice comes back"},
    {"--bootstrap-seed", OPT_INT, "S", NULL, 0, 1 << 30, 0, G_BOOT, "the seed of --bootstrap (default 1)"},
    {"--objective", OPT_STR, "mean|max|weights:NAME=W,...", NULL, 0, 0, 0, 0,
     "over calibration domains (score --data NAME=FILE): mean, worst-case or weighted predicted loss"},
    {"--refine", OPT_FLAG, NULL, NULL, 0, 0, 0, 0,
     "measure the recipe and its neighbours on held-out windows, fit interactions, re-solve (README §7)"},
    {"--refine-rounds", OPT_INT, "N", NULL, 1, 100, 0, G_REFINE, "--refine: at most N rounds (default 3)"},
    {"--refine-windows", OPT_INT, "N", NULL, 1, 1 << 20, 0, G_REFINE,
     "--refine: held-out windows measured (default 8)"},
    {"--refine-candidates", OPT_INT, "N", NULL, 1, 1000, 0, G_REFINE,
     "--refine: neighbours measured per round (default 6)"},
    SCORE_OPTS(0, G_SCORE, G_DATA, G_QUANT),
    GPTQ_PIPELINE(G_QUANT),
    TARGET_OPTS("offer each group only the formats this serving engine runs (configs/targets/)"),
    {"--out", OPT_OUT, "recipe.json", NULL, 0, 0, 0, 0, "the recipe (eval --recipe, quantize --recipe)"},
    {"--h5", OPT_OUT, "out.h5", NULL, 0, 0, 0, 0, "the solution and sweep as HDF5 (bench/plot.py)"},
    {"--emit", OPT_OUT, "FILE", "llmcompressor|modelopt", 0, 0, OPT_KEYED | OPT_REPEAT, 0,
     "the recipe as an llm-compressor YAML or a ModelOpt quant_cfg JSON"},
    {NULL},
};

static const Opt k_quantize[] = {
    MODEL_ARG(OPT_REQUIRED, 0),
    {"--recipe", OPT_IN, "R", NULL, 0, 0, OPT_REQUIRED, 0, "the recipe to apply (search --out)"},
    {"--out", OPT_OUT_DIR, "DIR", NULL, 0, 0, OPT_REQUIRED, 0, "the quantized checkpoint's folder"},
    {"--force", OPT_FLAG, NULL, NULL, 0, 0, 0, 0, "replace --out if it is a folder of files"},
    {"--allow-partial", OPT_FLAG, NULL, NULL, 0, 0, 0, 0,
     "deploy a recipe that does not name every linear of MODEL (those left out stay bf16; a warning)"},
    QUANT_OPTS(0),
    GPTQ_PIPELINE(0),
    DATA_OPTS(0, 0),
    DEVICE_OPT(0),
    GPTQ_MEMORY_OPT,
    {NULL},
};

static const Opt k_check[] = {
    {"DIR", OPT_IN, "DIR", NULL, 0, 0, OPT_REQUIRED, 0, "a compressed-tensors checkpoint folder"},
    {"--target", OPT_ENUM, NULL, "vllm|sglang|trtllm", 0, 0, OPT_REQUIRED, 0,
     "the serving engine whose rules apply (configs/targets/)"},
    {"--arch", OPT_ENUM, NULL, "sm90|sm100", 0, 0, 0, 0, "the GPU architecture (default: the profile's, sm90)"},
    {"--json", OPT_FLAG, NULL, NULL, 0, 0, 0, 0, "the findings as JSON on stdout"},
    {NULL},
};

static const Opt k_tokenize[] = {
    {"MODEL_OR_TOKENIZER_JSON", OPT_IN, "MODEL folder or tokenizer.json", NULL, 0, 0, OPT_REQUIRED, 0,
     "a model folder, or its tokenizer.json"},
    {"--text", OPT_IN, "FILE", NULL, 0, 0, OPT_REQUIRED, 0, "the text to encode"},
    {"--json", OPT_FLAG, NULL, NULL, 0, 0, 0, 0, "JSON on stdout instead of the ids"},
    {"--decode", OPT_FLAG, NULL, NULL, 0, 0, 0, 0, "decode the ids again and say whether they round-trip"},
    {NULL},
};

static const Opt k_gen[] = {
    {"OUT_DIR", OPT_OUT_DIR, "OUT_DIR", NULL, 0, 0, OPT_REQUIRED, 0, "the checkpoint's folder (created)"},
    {"--preset", OPT_STR, "NAME", NULL, 0, 0, 0, 0,
     "the shape (default tiny): tiny, 0.6b, 8b, moe-small, 30b-a3b, qwen3.5-27b, qwen3.5-35b-a3b, "
     "qwen3-next-80b-a3b, qwen3.5-small, qwen3.5-moe-small, qwen3-next-small, qwen3.5-moe-hd64"},
    {"--layers", OPT_INT, "N", NULL, 1, CONFIG_MAX_LAYERS, 0, 0, "change the preset's depth"},
    {"--shard-mib", OPT_INT, "M", NULL, 0, 1 << 20, 0, 0, "shard size (0: one model.safetensors)"},
    {"--seed", OPT_INT, "S", NULL, 0, 1 << 30, 0, 0, "seed of the weights and ids (default 1)"},
    {"--corpus", OPT_IN, "TEXT", NULL, 0, 0, 0, 0, "train a byte-level BPE tokenizer.json on this text"},
    {"--ids", OPT_OUT, "OUT.npy", NULL, 0, 0, 0, 0, "also write random token ids [N, T]"},
    {"--num-samples", OPT_INT, "N", NULL, 1, 1 << 20, 0, G_IDS, "with --ids: rows (default 8)"},
    {"--seq-len", OPT_INT, "T", NULL, 2, 1 << 20, 0, G_IDS, "with --ids: columns (default 128)"},
    {"--force", OPT_FLAG, NULL, NULL, 0, 0, 0, 0, "replace OUT_DIR if it holds files"},
    {NULL},
};

static const Command k_commands[] = {
    {"info", "The model's shape, its candidate linears, their groups and what is disabled.", k_info, cmd_info},
    {"eval", "NLL on calibration windows; with --recipe or --format the quantized model's KL and NLL change.",
     k_eval, cmd_eval},
    {"score", "Per-group sensitivity over calibration windows: a table on stdout, JSON and HDF5.", k_score,
     cmd_score},
    {"search",
     "The exact budgeted choice of a format (or bf16) per group; sweep, verification and exports. It scores\n"
     "MODEL, or reads --scores: then the scoring options are refused, and --data, the quantizer's and MODEL\n"
     "are for --verify only.",
     k_search, cmd_search},
    {"quantize", "A recipe applied to the checkpoint, written as llm-compressor's int-quantized checkpoint.",
     k_quantize, cmd_quantize},
    {"check-checkpoint",
     "Validates a written compressed-tensors checkpoint against a serving engine's rules: exit 0 clean, 1 "
     "with\n"
     "findings (each offending module named), 2 bad input.",
     k_check, cmd_check_checkpoint},
    {"tokenize", "Text to token ids with a Hugging Face tokenizer.json, and back.", k_tokenize, cmd_tokenize},
    {"gen", "A seeded Qwen3 or Qwen3-MoE checkpoint of a preset shape (and tokenizer, token ids).", k_gen,
     cmd_gen},
};
#define N_COMMANDS (int)(sizeof(k_commands) / sizeof(k_commands[0]))

// Every command's synopsis (autoq --help on stdout; on stderr after a usage error).
static void cli_usage(FILE* f) {
    fprintf(f, "usage:\n");
    for (int i = 0; i < N_COMMANDS; i++) args_synopsis(f, &k_commands[i], 110);
    fprintf(f, "every command: [--quiet] [--help]\n"
               "autoq COMMAND --help describes each option; README.md explains them.\n");
}

int main(int argc, char** argv) {
    if (argc < 2) {
        cli_usage(stderr);
        return EXIT_BAD_INPUT;
    }
    const char* cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        cli_usage(stdout);
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++) {
        if (strcmp(cmd, k_commands[i].name) != 0) continue;
        Args a;
        args_parse(&a, &k_commands[i], argc - 1, argv + 1);
        return k_commands[i].run(&a);
    }
    cli_usage(stderr);
    fail_input("unknown command '%s'", cmd);
}

# libFuzzer targets for every input parser (tests/fuzz/fuzz_*.c), built with
# clang, ASan and UBSan into build-fuzz/. Included by the Makefile.
#   make fuzz                   every target for FUZZ_SECONDS each (default 600)
#   make fuzz FUZZ_TARGETS=npy  one target
#   make fuzz-ci                every target for 15 s; fails on any finding
#   make fuzz-regress           replays tests/fuzz/regress/* (past findings) through every target
# A finding is written to build-fuzz/findings/<target>/crash-* (or leak-/timeout-/oom-).
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 600
FUZZ_CI_SECONDS ?= 15
FUZZ_BUILD ?= build-fuzz
FUZZ_TARGETS ?= safetensors config index tokenizer encode npy data format table recipe gptq_cache target check_ckpt
FUZZ_FLAGS := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
              -Wall -Wextra -DAUTOQ_FUZZ -std=gnu11 -fopenmp -I. -I/usr/include/hdf5/serial
# Every malloc/free from autoq's objects goes through the tracker in fuzz_common.c.
FUZZ_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free
FUZZ_LIBS := -L/usr/lib/x86_64-linux-gnu/hdf5/serial -ljansson -lhdf5 -lpcre2-8 -lutf8proc -lm
FUZZ_LIB_SRC := engine/util.c engine/input.c engine/args.c engine/paths.c engine/arch.c engine/config.c engine/safetensors.c engine/model.c datasets/tokenizer.c \
                datasets/npy.c datasets/data.c scoring/format.c scoring/table.c scoring/table_h5.c \
                scoring/groups.c search/recipe_read.c
FUZZ_LIB_OBJ := $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(FUZZ_LIB_SRC)) $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_common.o
FUZZ_CI_TARGETS ?= $(FUZZ_TARGETS)
FUZZ_BINS := $(patsubst %,$(FUZZ_BUILD)/fuzz_%,$(FUZZ_TARGETS))
# Seeds live in tests/fuzz/corpus/<target>; new inputs go to build-fuzz/corpus/<target>.
FUZZ_TOKENIZER ?= $(firstword $(wildcard ../shared/models/qwen3-tiny/tokenizer.json) tests/fuzz/corpus/tokenizer/min.json)
FUZZ_OPTS ?= -max_len=65536 -timeout=20 -rss_limit_mb=4096 -print_final_stats=1

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer $(FUZZ_WRAP) -o $@ $^ $(FUZZ_LIBS)

# The GPTQ cache's reader checks row scales with the GPTQ kernels, which need OpenBLAS / LAPACK.
BLAS_DIR ?= /usr/lib/x86_64-linux-gnu/openblas-openmp
$(FUZZ_BUILD)/fuzz_gptq_cache: $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,scoring/gptq_cache.c kernels/gptq.c kernels/quant.c)
$(FUZZ_BUILD)/fuzz_gptq_cache: FUZZ_LIBS += -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -l:libopenblas.so.0

# The engine profiles' reader; check-checkpoint's validation on top of it (PCRE2 for its "re:" targets).
$(FUZZ_BUILD)/fuzz_target: $(FUZZ_BUILD)/obj/search/target.o
$(FUZZ_BUILD)/fuzz_check_ckpt: $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,search/target.c search/check_checkpoint.c)

# Keep the objects (make would delete them as intermediates of the pattern chain).
.PRECIOUS: $(FUZZ_BUILD)/obj/%.o

fuzz-build: $(FUZZ_BINS)

# fuzz_run SECONDS, TARGETS: each target in turn; stops at the first finding.
define fuzz_run
	@set -e; for t in $(2); do \
	    mkdir -p $(FUZZ_BUILD)/corpus/$$t $(FUZZ_BUILD)/findings/$$t; \
	    echo "== fuzz_$$t ($(1) s)"; \
	    AUTOQ_FUZZ_TOKENIZER=$(FUZZ_TOKENIZER) $(FUZZ_BUILD)/fuzz_$$t $(FUZZ_OPTS) -max_total_time=$(1) \
	        -artifact_prefix=$(FUZZ_BUILD)/findings/$$t/ $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t 2>&1 | \
	        grep -E '^(#[0-9]+[[:space:]]+DONE|==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written|stat::number_of_executed_units|stat::peak_rss)' || true; \
	    if ls $(FUZZ_BUILD)/findings/$$t/* >/dev/null 2>&1; then echo "fuzz_$$t: FINDING in $(FUZZ_BUILD)/findings/$$t"; exit 1; fi; \
	done
endef

fuzz: $(FUZZ_BINS)
	$(call fuzz_run,$(FUZZ_SECONDS),$(FUZZ_TARGETS))

fuzz-ci: $(FUZZ_BINS)
	@rm -rf $(FUZZ_BUILD)/findings
	$(call fuzz_run,$(FUZZ_CI_SECONDS),$(FUZZ_CI_TARGETS))
	@$(MAKE) --no-print-directory fuzz-regress

# Past findings, replayed (no fuzzing) through the target named by their folder.
fuzz-regress: $(FUZZ_BINS)
	@set -e; for d in tests/fuzz/regress/*/; do \
	    t=$$(basename $$d); [ -x $(FUZZ_BUILD)/fuzz_$$t ] || continue; \
	    AUTOQ_FUZZ_TOKENIZER=$(FUZZ_TOKENIZER) $(FUZZ_BUILD)/fuzz_$$t -runs=1 $$d* >/dev/null 2>&1 || \
	        { echo "fuzz_$$t: a past finding in $$d fails again"; exit 1; }; \
	done; echo "fuzz-regress: every past finding passes"

.PHONY: fuzz fuzz-ci fuzz-build fuzz-regress

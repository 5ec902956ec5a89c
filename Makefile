# autoq: plain C, plus CUDA when nvcc is found.
#   make         builds ./autoq            make test    runs the suite
#   make demo    runs the main job on a generated model (MODEL=dir DATA=file for your own)
#   make bench   CPU benchmarks            make format  clang-format
CC ?= gcc
OPT ?= -O2 -g
SAN ?=
# -fno-math-errno lets expf vectorise (libmvec); nothing reads errno after math calls.
# CFLAGS / LDFLAGS given on the command line are appended, never replace these.
XCFLAGS := $(OPT) $(SAN) -std=gnu11 -Wall -Wextra -fopenmp -fno-math-errno -MMD -MP $(CFLAGS)
CPPFLAGS += -I. -I/usr/include/hdf5/serial -I/usr/include/x86_64-linux-gnu/openblas-openmp
# The OpenMP build of OpenBLAS shares our OpenMP thread pool; the pthread build fights it for the cores.
BLAS_DIR ?= /usr/lib/x86_64-linux-gnu/openblas-openmp
XLDFLAGS := $(SAN) -fopenmp -L/usr/lib/x86_64-linux-gnu/hdf5/serial -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) $(LDFLAGS)
LDLIBS += -ljansson -lyaml -l:libopenblas.so.0 -lhdf5 -lpcre2-8 -lutf8proc -lglpk -lm

BUILD ?= build
NVCC ?= $(shell command -v nvcc 2>/dev/null)
ifeq ($(NO_CUDA),1)
NVCC :=
endif

# engine/gpu_none.c and scoring/score_gpu_none.c stand in for the CUDA sources when nvcc is absent.
NO_GPU_SRC := engine/gpu_none.c scoring/score_gpu_none.c
LIB_SRC := $(filter-out $(NO_GPU_SRC),$(wildcard engine/*.c kernels/*.c scoring/*.c search/*.c datasets/*.c))
LIB_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC))
CU_SRC := $(wildcard kernels/*.cu engine/*.cu scoring/*.cu)
ifeq ($(NVCC),)
LIB_OBJ += $(patsubst %.c,$(BUILD)/%.o,$(NO_GPU_SRC))
else
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(realpath $(NVCC)))
CPPFLAGS += -DAUTOQ_CUDA -I$(CUDA_HOME)/include
LIB_OBJ += $(patsubst %.cu,$(BUILD)/%.cu.o,$(CU_SRC))
XLDFLAGS += -L$(CUDA_HOME)/lib64 -L$(CUDA_HOME)/lib64/stubs
LDLIBS += -lcublas -lcusolver -lcudart -lnccl -lstdc++ -lpthread
AQ_GENCODE = -arch=sm_90
NVFLAGS ?= -O2 $(AQ_GENCODE) -Xcompiler -Wall,-Wextra,-fopenmp -I. -DAUTOQ_CUDA -MMD -MP
endif
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))

all: autoq

# A fresh Debian / Ubuntu machine: when the compiler cannot find the build's headers, install their
# packages (as root, or through sudo when it needs no password); otherwise stop before compiling with
# the one command that would. Headers found (CPPFLAGS may point elsewhere): nothing to do.
DEB_PKGS := build-essential pkg-config libjansson-dev libhdf5-dev libopenblas-openmp-dev libpcre2-dev \
            libutf8proc-dev libyaml-dev libglpk-dev
DEP_HEADERS := jansson.h hdf5.h cblas.h yaml.h utf8proc.h glpk.h
deps:
	@printf '$(foreach h,$(DEP_HEADERS),#include <$(h)>\n)#define PCRE2_CODE_UNIT_WIDTH 8\n#include <pcre2.h>\n' | \
	    $(CC) $(CPPFLAGS) -E -x c - >/dev/null 2>&1 && exit 0; \
	command -v dpkg-query >/dev/null || { echo "make: build headers missing; install: $(DEB_PKGS)" >&2; exit 2; }; \
	missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
	    grep -q 'install ok installed' || echo $$p; done); \
	[ -n "$$missing" ] || { echo "make: build headers not found, yet $(DEB_PKGS) are installed" >&2; exit 2; }; \
	cmd="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$(echo $$missing)"; \
	if [ "$$(id -u)" = 0 ]; then echo "make: installing $$(echo $$missing)" >&2; sh -c "$$cmd" >/dev/null; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	    echo "make: installing $$(echo $$missing) with sudo" >&2; sudo sh -c "$$cmd" >/dev/null; \
	else echo "make: missing build packages; run: sudo sh -c '$$cmd'" >&2; exit 2; fi

autoq: $(BUILD)/autoq
	cp $< $@

$(LIB_OBJ) $(BUILD)/autoq.o: | deps

$(BUILD)/autoq: $(BUILD)/autoq.o $(LIB_OBJ)
	$(CC) $(XLDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(XCFLAGS) -c -o $@ $<

# The experts' Hopper GEMM (wgmma) exists in sm_90a code only; compute_90 PTX keeps the file's other
# kernels (and the mma.sync grouped GEMM it falls back to) for other GPUs.
$(BUILD)/kernels/matmul.cu.o: AQ_GENCODE = -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_90,code=[sm_90,compute_90]

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) $(CPPFLAGS) -c -o $@ $<

# $< and the objects only: a .c that a test includes (test_gated_delta's float64 twin) is in its .d too.
$(BUILD)/tests/%: tests/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(XCFLAGS) $(XLDFLAGS) -o $@ $< $(filter %.o,$^) $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(XCFLAGS) $(XLDFLAGS) -o $@ $< $(filter %.o,$^) $(LDLIBS)

test: deps $(BUILD)/autoq $(TEST_BIN)
	@AQ=$(BUILD)/autoq bash tests/run.sh $(BUILD)

# Used by .ci/run with BUILD=build-asan and sanitizer flags.
test-asan: $(BUILD)/autoq $(TEST_BIN)
	@ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 AQ=$(BUILD)/autoq bash tests/run.sh $(BUILD)

MODEL ?=
DATA ?=
demo: deps autoq
	@bash tests/demo.sh "$(MODEL)" "$(DATA)"

bench: autoq
	@bash bench/run.sh

format:
	clang-format -i $(wildcard *.c */*.[ch] */*.cu */*.cuh tests/*/*.c)

clean:
	rm -rf $(BUILD) build-asan autoq

-include tests/fuzz/fuzz.mk

.PHONY: deps all test test-asan demo bench format clean
-include $(LIB_OBJ:.o=.d) $(BUILD)/autoq.d $(TEST_BIN:=.d)

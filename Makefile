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
LDLIBS += -ljansson -l:libopenblas.so.0 -lhdf5 -lpcre2-8 -lutf8proc -lm

BUILD ?= build
NVCC ?= $(shell command -v nvcc 2>/dev/null)
ifeq ($(NO_CUDA),1)
NVCC :=
endif

LIB_SRC := $(filter-out engine/gpu_none.c,$(wildcard engine/*.c kernels/*.c scoring/*.c search/*.c datasets/*.c)) \
           cli_args.c $(wildcard cli_*.c)
LIB_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC))
CU_SRC := $(wildcard kernels/*.cu engine/*.cu)
ifeq ($(NVCC),)
LIB_OBJ += $(BUILD)/engine/gpu_none.o
else
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(realpath $(NVCC)))
CPPFLAGS += -DAUTOQ_CUDA -I$(CUDA_HOME)/include
LIB_OBJ += $(patsubst %.cu,$(BUILD)/%.cu.o,$(CU_SRC))
XLDFLAGS += -L$(CUDA_HOME)/lib64 -L$(CUDA_HOME)/lib64/stubs
LDLIBS += -lcublas -lcudart -lnccl -lstdc++ -lpthread
NVFLAGS ?= -O2 -arch=sm_90 -Xcompiler -Wall,-Wextra -I. -DAUTOQ_CUDA -MMD -MP
endif
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))

all: autoq

autoq: $(BUILD)/autoq
	cp $< $@

$(BUILD)/autoq: $(BUILD)/autoq.o $(LIB_OBJ)
	$(CC) $(XLDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(XCFLAGS) -c -o $@ $<

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(XCFLAGS) $(XLDFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(XCFLAGS) $(XLDFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS)

test: $(BUILD)/autoq $(TEST_BIN)
	@AQ=$(BUILD)/autoq bash tests/run.sh $(BUILD)

# Used by .ci/run with BUILD=build-asan and sanitizer flags.
test-asan: $(BUILD)/autoq $(TEST_BIN)
	@ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 AQ=$(BUILD)/autoq bash tests/run.sh $(BUILD)

MODEL ?=
DATA ?=
demo: autoq
	@bash tests/demo.sh "$(MODEL)" "$(DATA)"

bench: autoq
	@bash bench/run.sh

format:
	clang-format -i $(wildcard *.c *.h engine/*.[ch] kernels/*.[ch] kernels/*.cu kernels/*.cuh engine/*.cu engine/*.cuh scoring/*.[ch] search/*.[ch] datasets/*.[ch] tests/*.[ch] bench/*.c)

clean:
	rm -rf $(BUILD) build-asan autoq

.PHONY: all test test-asan demo bench format clean
-include $(LIB_OBJ:.o=.d) $(BUILD)/autoq.d $(TEST_BIN:=.d)

// Shared pieces of the libFuzzer targets (tests/fuzz/fuzz_*.c, built by
// tests/fuzz/fuzz.mk with -DAUTOQ_FUZZ): fail_* longjmp back to the target
// instead of exiting, and allocations made during one input are swept after
// it, so aborted parses neither end the fuzzer nor pile up memory.
#pragma once
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

extern jmp_buf* g_fuzz_jmp; // engine/util.c under AUTOQ_FUZZ

// Writes data to a file named name in this process's scratch folder; returns its path (static buffer per name
// slot).
const char* fuzz_file(const char* name, const uint8_t* data, size_t n);
// The scratch folder (created on first use, removed at exit).
const char* fuzz_dir(void);
// Allocation tracking through the linker's --wrap: begin records every
// malloc/calloc/realloc made by autoq's objects, end frees what is still live.
void fuzz_track_begin(void);
void fuzz_track_end(void);

// FUZZ_RUN(track, cleanup, stmt...): runs stmt; a fail_input/fail_other inside
// it returns here. cleanup runs either way, before the sweep (it may free
// what the sweep would). Returns the exit status the CLI would have had.
#define FUZZ_RUN(track, cleanup, ...)                                                                          \
    ({                                                                                                         \
        static jmp_buf jb_;                                                                                    \
        volatile int rc_ = 0;                                                                                  \
        g_fuzz_jmp = &jb_;                                                                                     \
        if (track) fuzz_track_begin();                                                                         \
        int j_ = setjmp(jb_);                                                                                  \
        if (j_ == 0) {                                                                                         \
            __VA_ARGS__;                                                                                       \
        } else {                                                                                               \
            rc_ = j_;                                                                                          \
        }                                                                                                      \
        cleanup;                                                                                               \
        if (track) fuzz_track_end();                                                                           \
        g_fuzz_jmp = NULL;                                                                                     \
        rc_;                                                                                                   \
    })

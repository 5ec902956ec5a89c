// Memory-mapped safetensors checkpoints, single file or sharded through
// model.safetensors.index.json. Every header is validated (length, JSON,
// dtypes, offsets in range and non-overlapping) before any tensor is used.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef enum { DT_BF16, DT_F16, DT_F32, DT_F64, DT_I64, DT_I32, DT_I16, DT_I8, DT_U8, DT_BOOL, DT_F8 } DType;

typedef struct {
    char* name;
    DType dtype;
    int ndim;
    int64_t shape[8];
    const uint8_t* data; // into the mmap
    size_t nbytes;
    const char* file; // owning shard path
} StTensor;

typedef struct {
    char* path;
    void* map;
    size_t size;
} StFile;

typedef struct {
    int nfiles;
    StFile* files;
    int n;
    StTensor* t; // sorted by name
} StCheckpoint;

// Opens model_dir/model.safetensors or the shards of
// model_dir/model.safetensors.index.json. Exits 2 on any malformed input.
void st_open(StCheckpoint* ck, const char* model_dir);
void st_open_file(StCheckpoint* ck, const char* path); // one file only
void st_free(StCheckpoint* ck);
const StTensor* st_find(const StCheckpoint* ck, const char* name);
const char* st_dtype_name(DType d);
// Exits 2 naming the file, tensor and element when a BF16/F16/F32 tensor
// holds a NaN or Inf (one such weight makes every score NaN). Other dtypes pass.
void st_check_finite(const StTensor* t);
// Converts a BF16/F16/F32 tensor to fp32 (exits 2 on any other dtype).
void st_to_f32(const StTensor* t, float* out);

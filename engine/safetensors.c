#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"
#include "input.h"

static const struct {
    const char* name;
    DType dt;
    int size;
} k_dtypes[] = {
    {"BF16", DT_BF16, 2}, {"F16", DT_F16, 2},   {"F32", DT_F32, 4},    {"F64", DT_F64, 8},
    {"I64", DT_I64, 8},   {"I32", DT_I32, 4},   {"I16", DT_I16, 2},    {"I8", DT_I8, 1},
    {"U8", DT_U8, 1},     {"BOOL", DT_BOOL, 1}, {"F8_E4M3", DT_F8, 1}, {"F8_E5M2", DT_F8, 1},
};
#define N_DTYPES (int)(sizeof(k_dtypes) / sizeof(k_dtypes[0]))

const char* st_dtype_name(DType d) {
    for (int i = 0; i < N_DTYPES; i++)
        if (k_dtypes[i].dt == d) return k_dtypes[i].name;
    return "?";
}

static int dtype_size(DType d) {
    for (int i = 0; i < N_DTYPES; i++)
        if (k_dtypes[i].dt == d) return k_dtypes[i].size;
    return 0;
}

static int cmp_tensor_name(const void* a, const void* b) {
    return strcmp(((const StTensor*)a)->name, ((const StTensor*)b)->name);
}

typedef struct {
    size_t begin, end;
    const char* name;
} Span;

static int cmp_span(const void* a, const void* b) {
    const Span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static void map_file(StFile* f, const char* path) {
    f->path = xstrdup(path);
    int fd = open_regular(path, "safetensors file", &f->size);
    if (f->size < 8) {
        close(fd);
        fail_input("%s: truncated file: %zu bytes, header length needs 8", path, f->size);
    }
    void* map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) fail_input("%s: mmap failed: %s", path, strerror(e));
    f->map = map;
}

static void parse_shape(const char* path, const char* name, json_t* shape, StTensor* t) {
    if (!json_is_array(shape) || json_array_size(shape) > 8)
        fail_input("%s: tensor '%s': field 'shape' must be an array of at most 8 integers", path, name);
    t->ndim = (int)json_array_size(shape);
    for (int i = 0; i < t->ndim; i++) {
        json_t* d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            fail_input("%s: tensor '%s': field 'shape'[%d] is not a non-negative integer", path, name, i);
        t->shape[i] = json_integer_value(d);
    }
}

static DType parse_dtype(const char* path, const char* name, json_t* dt) {
    if (!json_is_string(dt)) fail_input("%s: tensor '%s': field 'dtype' missing or not a string", path, name);
    for (int i = 0; i < N_DTYPES; i++)
        if (strcmp(json_string_value(dt), k_dtypes[i].name) == 0) return k_dtypes[i].dt;
    fail_input("%s: tensor '%s': unknown dtype '%s'", path, name, json_string_value(dt));
}

// Bytes the shape and dtype need; a product that overflows exits 2 naming the tensor.
static size_t tensor_bytes(const char* path, const char* name, const StTensor* t) {
    char clip[CLIP_BUF], what[CLIP_BUF + 4096];
    snprintf(what, sizeof(what), "%s: tensor '%s': field 'shape'", path, str_clip(clip, name));
    size_t n = (size_t)dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++) n = size_mul(n, (size_t)t->shape[i], what);
    return n;
}

// Appends the tensors of one mapped file to ck->t.
static void parse_header(StCheckpoint* ck, StFile* f) {
    const uint8_t* p = f->map;
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)p[i] << (8 * i);
    if (hlen > f->size - 8)
        fail_input("%s: header length %llu runs past the end of the file (%zu bytes)", f->path,
                   (unsigned long long)hlen, f->size);
    if (hlen > MAX_ST_HEADER_BYTES)
        fail_input("%s: header length %llu is over the %zu MiB limit", f->path, (unsigned long long)hlen,
                   MAX_ST_HEADER_BYTES >> 20);
    json_error_t err;
    json_t* root = json_loadb((const char*)p + 8, hlen, 0, &err);
    if (!root || !json_is_object(root))
        fail_input("%s: header is not a JSON object (%s at offset %d)", f->path, root ? "" : err.text,
                   root ? 0 : err.position + 8);
    const uint8_t* data = p + 8 + hlen;
    size_t dsize = f->size - 8 - hlen;
    size_t n = json_object_size(root);
    ck->t = xrealloc(ck->t, size_mul(sizeof(StTensor), size_add((size_t)ck->n, n, f->path), f->path));
    Span* spans = xcalloc(n, sizeof(Span));
    int ns = 0;
    const char* key;
    json_t* val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) continue;
        if (!json_is_object(val)) fail_input("%s: tensor '%s': entry is not an object", f->path, key);
        StTensor* t = &ck->t[ck->n];
        memset(t, 0, sizeof(*t));
        t->dtype = parse_dtype(f->path, key, json_object_get(val, "dtype"));
        parse_shape(f->path, key, json_object_get(val, "shape"), t);
        json_t* off = json_object_get(val, "data_offsets");
        if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(json_array_get(off, 0)) ||
            !json_is_integer(json_array_get(off, 1)))
            fail_input("%s: tensor '%s': field 'data_offsets' must be [begin, end]", f->path, key);
        json_int_t b = json_integer_value(json_array_get(off, 0));
        json_int_t e = json_integer_value(json_array_get(off, 1));
        if (b < 0 || e < b || (uint64_t)e > dsize)
            fail_input("%s: tensor '%s': data_offsets [%lld, %lld] out of range (data section is %zu bytes)",
                       f->path, key, (long long)b, (long long)e, dsize);
        size_t need = tensor_bytes(f->path, key, t);
        if (need != (size_t)(e - b))
            fail_input("%s: tensor '%s': data_offsets span %lld bytes but shape and dtype need %zu", f->path,
                       key, (long long)(e - b), need);
        t->name = xstrdup(key);
        t->data = data + b;
        t->nbytes = (size_t)(e - b);
        t->file = f->path;
        spans[ns++] = (Span){(size_t)b, (size_t)e, t->name};
        ck->n++;
    }
    if (ns > 1) qsort(spans, ns, sizeof(Span), cmp_span);
    for (int i = 1; i < ns; i++)
        if (spans[i].begin < spans[i - 1].end)
            fail_input("%s: tensors '%s' and '%s' have overlapping data_offsets", f->path, spans[i - 1].name,
                       spans[i].name);
    free(spans);
    json_decref(root);
}

static void finish(StCheckpoint* ck) {
    if (ck->n > 1) qsort(ck->t, ck->n, sizeof(StTensor), cmp_tensor_name); // never qsort(NULL, 0)
    for (int i = 1; i < ck->n; i++)
        if (strcmp(ck->t[i].name, ck->t[i - 1].name) == 0)
            fail_input("%s: tensor '%s' appears twice (also in %s)", ck->t[i].file, ck->t[i].name,
                       ck->t[i - 1].file);
}

void st_open_file(StCheckpoint* ck, const char* path) {
    memset(ck, 0, sizeof(*ck));
    ck->files = xcalloc(1, sizeof(StFile));
    ck->nfiles = 1;
    map_file(&ck->files[0], path);
    parse_header(ck, &ck->files[0]);
    finish(ck);
}

static int cmp_str(const void* a, const void* b) {
    return strcmp(*(const char* const*)a, *(const char* const*)b);
}

// Shard file names from weight_map, sorted and unique (sorting, not a
// pairwise scan, so a hostile map with many names stays O(n log n)).
static const char** index_shards(const char* index_path, json_t* wm, int* nsh) {
    size_t n = json_object_size(wm);
    const char** shards = xcalloc(n, sizeof(char*));
    size_t k = 0;
    const char* key;
    json_t* val;
    json_object_foreach(wm, key, val) {
        char clip[CLIP_BUF];
        if (!json_is_string(val))
            fail_input("%s: weight_map['%s'] is not a file name", index_path, str_clip(clip, key));
        const char* s = json_string_value(val);
        if (!*s || strchr(s, '/') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
            fail_input("%s: weight_map['%s'] = '%s' is not a file name in the model folder", index_path,
                       str_clip(clip, key), s);
        shards[k++] = s;
    }
    if (k > 1) qsort(shards, k, sizeof(char*), cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || strcmp(shards[u - 1], shards[i]) != 0) shards[u++] = shards[i];
    if (u > 1000000) fail_input("%s: weight_map names %zu shard files", index_path, u);
    *nsh = (int)u;
    return shards;
}

static void open_index(StCheckpoint* ck, const char* dir, const char* index_path) {
    json_t* root = input_json(index_path, "shard index", 0);
    json_t* wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) fail_input("%s: field 'weight_map' missing or not an object", index_path);
    if (json_object_size(wm) == 0) fail_input("%s: field 'weight_map' is empty", index_path);
    int nsh;
    const char** shards = index_shards(index_path, wm, &nsh);
    memset(ck, 0, sizeof(*ck));
    ck->files = xcalloc(nsh, sizeof(StFile));
    for (int i = 0; i < nsh; i++) {
        char* p = path_join(dir, shards[i]);
        map_file(&ck->files[i], p);
        free(p);
        ck->nfiles++;
        parse_header(ck, &ck->files[i]);
    }
    finish(ck);
    const char* key;
    json_t* val;
    json_object_foreach(wm, key, val) {
        const StTensor* t = st_find(ck, key);
        if (!t)
            fail_input("%s: tensor '%s' is listed in weight_map but missing from %s", index_path, key,
                       json_string_value(val));
        if (strcmp(strrchr(t->file, '/') ? strrchr(t->file, '/') + 1 : t->file, json_string_value(val)) != 0)
            fail_input("%s: tensor '%s' is listed in weight_map under %s but found in %s", index_path, key,
                       json_string_value(val), t->file);
    }
    free(shards);
    json_decref(root);
}

void st_open(StCheckpoint* ck, const char* dir) {
    char* single = path_join(dir, "model.safetensors");
    char* index = path_join(dir, "model.safetensors.index.json");
    if (access(index, F_OK) == 0) {
        open_index(ck, dir, index);
    } else if (access(single, F_OK) == 0) {
        st_open_file(ck, single);
    } else {
        fail_input("%s: no model.safetensors or model.safetensors.index.json", dir);
    }
    free(single);
    free(index);
}

// Also frees a checkpoint whose opening failed part way (the fuzz harness does).
void st_free(StCheckpoint* ck) {
    for (int i = 0; i < ck->n; i++) free(ck->t[i].name);
    for (int i = 0; i < ck->nfiles; i++) {
        if (ck->files[i].map) munmap(ck->files[i].map, ck->files[i].size);
        free(ck->files[i].path);
    }
    free(ck->t);
    free(ck->files);
    memset(ck, 0, sizeof(*ck));
}

const StTensor* st_find(const StCheckpoint* ck, const char* name) {
    StTensor key = {.name = (char*)name};
    if (ck->n == 0) return NULL; // never bsearch(NULL, 0)
    return bsearch(&key, ck->t, ck->n, sizeof(StTensor), cmp_tensor_name);
}

void st_to_f32(const StTensor* t, float* out) {
    size_t n = t->nbytes / (dtype_size(t->dtype) ? dtype_size(t->dtype) : 1);
    const uint8_t* d = t->data;
    uint16_t h;
    switch (t->dtype) {
    case DT_F32:
        memcpy(out, d, n * 4);
        break;
    case DT_BF16:
        for (size_t i = 0; i < n; i++) {
            memcpy(&h, d + 2 * i, 2);
            out[i] = bf16_to_f32(h);
        }
        break;
    case DT_F16:
        for (size_t i = 0; i < n; i++) {
            memcpy(&h, d + 2 * i, 2);
            out[i] = f16_to_f32(h);
        }
        break;
    default:
        fail_input("%s: tensor '%s': dtype %s is not supported for weights (BF16, F16, F32)", t->file, t->name,
                   st_dtype_name(t->dtype));
    }
}

// Index of the first non-finite element, for the message (rare path, serial).
static size_t first_nonfinite(const StTensor* t, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        uint32_t u;
        if (t->dtype == DT_F32) {
            memcpy(&u, t->data + 4 * i, 4);
            if ((u & 0x7f800000u) == 0x7f800000u) return i;
        } else {
            memcpy(&h, t->data + 2 * i, 2);
            if ((h & (t->dtype == DT_BF16 ? 0x7f80 : 0x7c00)) == (t->dtype == DT_BF16 ? 0x7f80 : 0x7c00))
                return i;
        }
    }
    return n;
}

// Non-finite iff the exponent bits are all ones; chunks of 64 Ki elements in
// parallel, each loop branch-free so it vectorises (memory speed, the
// checkpoint is read once anyway).
void st_check_finite(const StTensor* t) {
    if (t->dtype != DT_BF16 && t->dtype != DT_F16 && t->dtype != DT_F32) return;
    int es = dtype_size(t->dtype);
    size_t n = t->nbytes / (size_t)es, chunk = (size_t)1 << 16, nchunks = (n + chunk - 1) / chunk;
    const uint8_t* d = t->data;
    int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (nchunks > 4)
    for (size_t c = 0; c < nchunks; c++) {
        size_t i0 = c * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
        int acc = 0;
        if (t->dtype == DT_F32) {
            for (size_t i = i0; i < i1; i++) {
                uint32_t u;
                memcpy(&u, d + 4 * i, 4);
                acc |= (u & 0x7f800000u) == 0x7f800000u;
            }
        } else {
            uint16_t m = t->dtype == DT_BF16 ? 0x7f80 : 0x7c00;
            for (size_t i = i0; i < i1; i++) {
                uint16_t h;
                memcpy(&h, d + 2 * i, 2);
                acc |= (h & m) == m;
            }
        }
        bad |= acc;
    }
    if (!bad) return;
    size_t i = first_nonfinite(t, n);
    float v;
    if (t->dtype == DT_F32) {
        memcpy(&v, d + 4 * i, 4);
    } else {
        uint16_t h;
        memcpy(&h, d + 2 * i, 2);
        v = t->dtype == DT_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
    fail_input("%s: tensor '%s': element %zu is %s; every score would be NaN", t->file, t->name, i,
               isnan(v) ? "NaN" : "infinite");
}

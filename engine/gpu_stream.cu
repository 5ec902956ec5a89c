// Streaming layers from host memory (engine/gpu_stream.h): two layer slots on the GPU, filled from the
// checkpoint's mapping through the engine's pinned staging buffers (upload_bytes) on the uploading
// thread's own stream, so that the next layer crosses the bus while the queued work of this one runs.
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "gpu_engine.cuh"
#include "gpu_stream.h"

#define MARKS 8192 // timing events kept before they are read back

struct GpuStream {
    GpuEngine* e;
    const unsigned char* res;
    GpuLayer slot[2]; // the pointers of the layer each slot holds
    // one device buffer per slot, slot_bytes: the largest streamed layer's buffers as layer_alloc lays them out
    char* slot_buf[2];
    size_t slot_bytes;
    int slot_l[2];            // the layer each slot holds, or -1
    cudaEvent_t slot_free[2]; // recorded after the last work queued on the slot's layer
    int last;                 // the slot of the layer begun last
    double* lbytes;           // (L) bytes of each layer's weights as the GPU holds them
    double h2d;               // bytes copied host->GPU: layers and spilled states
    // start and end marks of each layer's work, in queue order; the gaps between an end and the next
    // start are GPU time spent waiting (for a copy, or for the host)
    cudaEvent_t mark[MARKS];
    unsigned char start[MARKS];
    int n_mark;
    double gap_s;
    void** host; // pinned allocations
    int n_host;
    int registered; // the checkpoint's mappings are page-locked (cudaHostRegister): copies go straight over
    // gpu_stream_extra's blocks: per layer on the host, two device slots beside the layer slots
    void* const* x_host;
    const size_t* x_bytes;
    void* x_dev[2];
    cudaStream_t xs;
    void (*x_bind)(void*, int, void*);
    void* x_ctx;
};

// Page-locks the checkpoint's mappings, so that a layer's copy is one DMA from the page cache (55 GB/s on an
// H100 host, against 7 GB/s from pageable memory and the staging copies' host memcpy) instead of host copies
// into staging buffers. Only when the checkpoint fits well within the host's memory (else it must stay
// pageable, read from disk as the page cache cycles) and not with AUTOQ_STREAM_PIN=0; a failure falls back
// to the staging buffers. Portable: every GPU of the process copies from it (--gpus N, one stream per GPU).
static int register_checkpoint(const Model* m) {
    const char* v = getenv("AUTOQ_STREAM_PIN");
    if (v && !strcmp(v, "0")) return 0;
    double total = 0, ram = (double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE);
    for (int i = 0; i < m->ck.nfiles; i++) total += m->ck.files[i].size;
    if (total > 0.6 * ram) return 0;
    double t0 = time_now();
    for (int i = 0; i < m->ck.nfiles; i++)
        if (cudaHostRegister(m->ck.files[i].map, m->ck.files[i].size,
                             cudaHostRegisterReadOnly | cudaHostRegisterPortable) != cudaSuccess) {
            (void)cudaGetLastError();
            for (int j = 0; j < i; j++) cudaHostUnregister(m->ck.files[j].map);
            warn_msg("%s: could not page-lock the checkpoint for streaming: copies go through staging buffers",
                     m->dir);
            return 0;
        }
    static int said; // search --refine's streamed recipes each page-lock it again: said once
    if (!said++)
        info_msg("streaming: page-locked the checkpoint's %.1f GiB in %.1fs", total / 1073741824.0,
                 time_now() - t0);
    return 1;
}

// The streams of one process (one per GPU) share the registration: the first registers, the last unregisters.
static pthread_mutex_t g_pin_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_pin_refs, g_pin_ok;

static int pin_acquire(const Model* m) {
    pthread_mutex_lock(&g_pin_mu);
    if (g_pin_refs++ == 0) g_pin_ok = register_checkpoint(m);
    int ok = g_pin_ok;
    pthread_mutex_unlock(&g_pin_mu);
    return ok;
}

static void pin_release(const Model* m) {
    pthread_mutex_lock(&g_pin_mu);
    if (--g_pin_refs == 0 && g_pin_ok)
        for (int i = 0; i < m->ck.nfiles; i++) cudaHostUnregister(m->ck.files[i].map);
    pthread_mutex_unlock(&g_pin_mu);
}

extern "C" void gpu_stream_pin_hold(const Model* m, int hold) {
    if (hold)
        pin_acquire(m);
    else
        pin_release(m);
}

// Layer l's weights laid out as the resident upload lays them out (moe_upload, then layer_upload), into
// base (cap bytes), or with base NULL only measured; into g. Returns the bytes they take.
static size_t slot_carve(GpuEngine* e, int l, GpuLayer* g, char* base, size_t cap, int up) {
    memset(g, 0, sizeof(GpuLayer));
    e->carving = 1, e->carve = base, e->carve_off = 0, e->carve_cap = cap;
    if (model_layer_sparse(e->m, l)) moe_upload(e, l, g, up == UP_NONE ? -1 : 1);
    layer_upload(e, l, g, 1, up);
    size_t b = e->carve_off;
    e->carving = 0, e->carve = NULL;
    return b;
}

extern "C" GpuEngine* gpu_stream_engine(const Model* m, int T, int B, int gemm, const unsigned char* res,
                                        const double* lbytes, GpuStream** out) {
    GpuEngine* e = engine_init_stream(m, T, B, gemm, res);
    GpuStream* st = (GpuStream*)xcalloc(1, sizeof(GpuStream));
    st->e = e;
    st->res = res;
    int L = m->c.num_layers, streamed = 0;
    st->lbytes = (double*)xcalloc(L, sizeof(double));
    for (int l = 0; l < L; l++) {
        st->lbytes[l] = lbytes[l];
        if (res[l]) {
            st->h2d += st->lbytes[l];
            continue;
        }
        // any layer kind takes turns in a slot (attention or Gated DeltaNet, dense or sparse): each laid out
        // in it as it comes, so a slot is the largest of them
        GpuLayer g;
        size_t b = slot_carve(e, l, &g, NULL, 0, UP_NONE);
        st->slot_bytes = b > st->slot_bytes ? b : st->slot_bytes;
        streamed = 1;
    }
    for (int k = 0; k < 2; k++) {
        st->slot_l[k] = -1;
        cudaCheck(cudaEventCreateWithFlags(&st->slot_free[k], cudaEventDisableTiming));
        if (streamed) st->slot_buf[k] = (char*)dalloc(e, st->slot_bytes);
    }
    for (int i = 0; i < MARKS; i++) cudaCheck(cudaEventCreate(&st->mark[i]));
    st->last = 1;
    st->registered = pin_acquire(m);
    *out = st;
    return e;
}

// Reads the marks back: the waits between one layer's end and the next one's start.
static void marks_flush(GpuStream* st) {
    if (!st->n_mark) return;
    cudaCheck(cudaEventSynchronize(st->mark[st->n_mark - 1]));
    for (int i = 1; i < st->n_mark; i++)
        if (!st->start[i - 1] && st->start[i]) {
            float ms;
            cudaCheck(cudaEventElapsedTime(&ms, st->mark[i - 1], st->mark[i]));
            st->gap_s += ms / 1e3;
        }
    cudaEvent_t t = st->mark[0]; // the last mark stays, to measure the gap after it
    st->mark[0] = st->mark[st->n_mark - 1];
    st->mark[st->n_mark - 1] = t;
    st->start[0] = st->start[st->n_mark - 1];
    st->n_mark = 1;
}

static void mark(GpuStream* st, int start) {
    if (st->n_mark == MARKS) marks_flush(st);
    cudaCheck(cudaEventRecord(st->mark[st->n_mark], 0));
    st->start[st->n_mark++] = start;
}

extern "C" void gpu_stream_break(GpuStream* st) {
    if (st->n_mark) st->start[st->n_mark - 1] = 1; // what runs until the next start is work, not a wait
}

// Layer l into slot k: waits for the work that last read the slot, then copies at once on this thread's
// stream (the slot's previous layer is done, nothing else reads it).
static void slot_fill(GpuStream* st, int k, int l) {
    GpuEngine* e = st->e;
    cudaCheck(cudaEventSynchronize(st->slot_free[k]));
    if (st->slot_l[k] >= 0) memset(&e->layers[st->slot_l[k]], 0, sizeof(GpuLayer));
    e->up_now = 1;
    slot_carve(e, l, &st->slot[k], st->slot_buf[k], st->slot_bytes, UP_NOW);
    e->up_now = 0;
    st->slot_l[k] = l;
    st->h2d += st->lbytes[l];
    if (st->x_host && st->x_host[l]) { // on a stream of its own: the queued work keeps running
        cudaCheck(cudaMemcpyAsync(st->x_dev[k], st->x_host[l], st->x_bytes[l], cudaMemcpyHostToDevice, st->xs));
        cudaCheck(cudaStreamSynchronize(st->xs));
        st->h2d += (double)st->x_bytes[l];
    }
}

extern "C" void gpu_stream_extra(GpuStream* st, void* const* host, const size_t* bytes,
                                 void (*bind)(void*, int, void*), void* ctx) {
    size_t most = 0;
    for (int l = 0; l < st->e->m->c.num_layers; l++)
        if (host[l] && bytes[l] > most) most = bytes[l];
    st->x_host = host, st->x_bytes = bytes, st->x_bind = bind, st->x_ctx = ctx;
    for (int k = 0; k < 2; k++) st->x_dev[k] = gpu_alloc(st->e, most);
    cudaCheck(cudaStreamCreateWithFlags(&st->xs, cudaStreamNonBlocking));
    if (st->slot_l[0] >= 0 || st->slot_l[1] >= 0)
        fail_other("internal: gpu_stream_extra after a layer streamed");
}

extern "C" void gpu_stream_begin(GpuStream* st, int l) {
    GpuEngine* e = st->e;
    if (!st->res[l]) {
        int k = st->slot_l[0] == l ? 0 : st->slot_l[1] == l ? 1 : -1;
        if (k < 0) { // not prefetched: the slot not holding the layer begun last
            k = st->last ^ 1;
            slot_fill(st, k, l);
        }
        e->layers[l] = st->slot[k];
        st->last = k;
        if (st->x_host && st->x_host[l]) st->x_bind(st->x_ctx, l, st->x_dev[k]);
    }
    mark(st, 1);
}

extern "C" void gpu_stream_end(GpuStream* st, int l, int next) {
    mark(st, 0);
    if (!st->res[l]) cudaCheck(cudaEventRecord(st->slot_free[st->last], 0));
    if (next < 0 || st->res[next] || st->slot_l[0] == next || st->slot_l[1] == next) return;
    slot_fill(st, st->last ^ 1, next); // the slot not begun last: its work was queued first
}

extern "C" void gpu_stream_embed(GpuStream* st, const int* ids, int nb, float* h) {
    GpuEngine* e = st->e;
    const Config* c = &e->m->c;
    int M = nb * e->T, D = c->hidden_size;
    cudaCheck(cudaMemcpy(e->ids, ids, sizeof(int) * M, cudaMemcpyHostToDevice));
    if (e->embed) { // lm_head shares the table: it is on the GPU
        gpu_embed(h, (const bf16_t*)e->embed, e->ids, M, D);
        return;
    }
    char name[256];
    snprintf(name, sizeof(name), "%sembed_tokens.weight", c->prefix);
    size_t n;
    const StTensor* t = find_tensor(e, name, &n);
    float* x = (float*)xmalloc(sizeof(float) * (size_t)M * D);
    for (int i = 0; i < M; i++) {
        long r = (long)ids[i] * D;
        float* o = x + (long)i * D;
        for (int j = 0; j < D; j++) {
            float v;
            if (t->dtype == DT_BF16)
                v = bf16_to_f32(((const uint16_t*)t->data)[r + j]);
            else if (t->dtype == DT_F16)
                v = bf16_to_f32(f32_to_bf16(f16_to_f32(((const uint16_t*)t->data)[r + j])));
            else
                v = bf16_to_f32(f32_to_bf16(((const float*)t->data)[r + j]));
            o[j] = v;
        }
    }
    cudaCheck(cudaMemcpy(h, x, sizeof(float) * (size_t)M * D, cudaMemcpyHostToDevice));
    free(x);
}

extern "C" void* gpu_stream_host_alloc(GpuStream* st, size_t bytes) {
    void* p;
    cudaCheck(cudaMallocHost(&p, bytes ? bytes : 16));
    st->host = (void**)realloc(st->host, sizeof(void*) * (st->n_host + 1));
    if (!st->host) fail_other("out of memory");
    st->host[st->n_host++] = p;
    return p;
}

extern "C" void gpu_stream_count_spill(GpuStream* st, double h2d, double d2h) {
    (void)d2h;
    st->h2d += h2d;
}

extern "C" void gpu_stream_stats(GpuStream* st, double* h2d_bytes, double* unhidden_s) {
    cudaCheck(cudaDeviceSynchronize());
    marks_flush(st);
    *h2d_bytes = st->h2d;
    *unhidden_s = st->gap_s;
}

extern "C" void gpu_stream_free(GpuStream* st) {
    cudaCheck(cudaDeviceSynchronize());
    for (int k = 0; k < 2; k++) {
        cudaEventDestroy(st->slot_free[k]);
        if (st->slot_l[k] >= 0) memset(&st->e->layers[st->slot_l[k]], 0, sizeof(GpuLayer));
    }
    for (int i = 0; i < MARKS; i++) cudaEventDestroy(st->mark[i]);
    if (st->x_host) cudaStreamDestroy(st->xs);
    for (int i = 0; i < st->n_host; i++) cudaFreeHost(st->host[i]);
    pin_release(st->e->m);
    free(st->host);
    free(st->lbytes);
    free(st);
}

// GPTQ's sequential pipeline (README §9) on one GPU, for dense models: scoring/quantizer.c's
// gptq_sequential with the layer passes, the Hessians and the GPTQ updates on the device. One decoder
// layer is resident at a time (a one-layer pipeline-stage engine) and the residual stream of every
// window waits in a device pool between layers. Each layer runs twice over the windows: once to sum its
// inputs' X^T X, once through its GPTQ weights to give the next layer its inputs. The passes run as a
// bf16 model does (bf16 GEMM inputs and activations, an fp32 residual stream), and X^T X sums those
// very bf16 inputs in fp32 on the tensor cores, as llm-compressor sums its bf16 model's inputs. Weights,
// Hessians and codes never leave the card until the codes are done (1 byte a weight). The next layer's
// weights go up from a second host thread into a spare set of the engine's layer buffers while the card
// works, and the codes come down asynchronously to a worker thread that hands them to the caller.
#include <cublas_v2.h>
#include <pthread.h>
#include <string.h>

#include "../engine/gpu_engine.cuh"
#include "../kernels/cuda_common.cuh"

extern "C" {
#include "../engine/util.h"
#include "quantizer.h"
}

typedef struct {
    const Model* m;
    cublasHandle_t blas;
    float* xtx[SITES]; // (n, n) device column-major sums of x x^T, the lower triangle only (all that
                       // gpu_gptq_factor reads), NULL where no linear of the site is chosen
    int on[SITES];     // the current layer chose a linear of the site
    int drop;          // the summing pass's output is dropped (the sequential pipeline): skip down's GEMM
    long tokens;
} Capture;

// A host thread beside the card's work (the copier, the uploader): its lock, its signal, the request to
// stop, and the device it drives (the caller's).
typedef struct {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, dev;
} Worker;

static void worker_start(Worker* w, void* (*fn)(void*), void* arg, const char* what) {
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->stop = 0;
    cudaCheck(cudaGetDevice(&w->dev));
    if (pthread_create(&w->thread, NULL, fn, arg)) fail_other("gptq: cannot start the %s thread", what);
}

// Asks the thread to stop, waits for it, and releases its lock and signal.
static void worker_stop(Worker* w) {
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

// Finished codes reach the caller's arrays on a worker thread while the card goes on: the first touch
// of fresh host memory (an 8 GB model's codes) costs seconds. Each layer's codes and scales land in one
// of two pinned slots (layer l in slot l % 2); a layer waits for the jobs of the one before last.
typedef struct {
    const int8_t* codes; // (rows, cols) pinned
    const float* scale;  // (rows) pinned
    int rows, cols, slot;
    int8_t** dst_codes; // the caller's codes, or NULL
    float** dst_w;      // else its weights code * scale
    cudaEvent_t copied; // the copies into the slot are done
} CopyJob;

typedef struct {
    Worker w;
    CopyJob* jobs;
    int head, tail, cap;
    long queued[2], done[2];
    int8_t* pinned[2]; // slots, `slot_bytes` each
    size_t slot_bytes, used;
} Copier;

static void copy_job_run(const CopyJob* j) {
    size_t n = (size_t)j->rows * j->cols;
    if (j->dst_codes) {
        *j->dst_codes = (int8_t*)xmalloc(n);
        memcpy(*j->dst_codes, j->codes, n);
        return;
    }
    float* w = (float*)xmalloc(sizeof(float) * n);
#pragma omp parallel for
    for (int r = 0; r < j->rows; r++)
        for (int k = 0; k < j->cols; k++)
            w[(size_t)r * j->cols + k] = (float)j->codes[(size_t)r * j->cols + k] * j->scale[r];
    *j->dst_w = w;
}

static void* copier_main(void* arg) {
    Copier* c = (Copier*)arg;
    cudaCheck(cudaSetDevice(c->w.dev));
    pthread_mutex_lock(&c->w.mu);
    for (;;) {
        while (c->head == c->tail && !c->w.stop) pthread_cond_wait(&c->w.cv, &c->w.mu);
        if (c->head == c->tail) break;
        CopyJob j = c->jobs[c->head++];
        pthread_mutex_unlock(&c->w.mu);
        cudaCheck(cudaEventSynchronize(j.copied));
        cudaCheck(cudaEventDestroy(j.copied));
        copy_job_run(&j);
        pthread_mutex_lock(&c->w.mu);
        c->done[j.slot]++;
        pthread_cond_broadcast(&c->w.cv);
    }
    pthread_mutex_unlock(&c->w.mu);
    return NULL;
}

static void copier_init(Copier* c, size_t slot_bytes) {
    memset(c, 0, sizeof(*c));
    c->slot_bytes = slot_bytes;
    for (int k = 0; k < 2; k++) cudaCheck(cudaMallocHost(&c->pinned[k], slot_bytes));
    worker_start(&c->w, copier_main, c, "copying");
}

// Layer l starts: its slot is free once the jobs of layer l - 2 are done.
static void copier_layer(Copier* c, int l) {
    pthread_mutex_lock(&c->w.mu);
    while (c->done[l % 2] != c->queued[l % 2]) pthread_cond_wait(&c->w.cv, &c->w.mu);
    pthread_mutex_unlock(&c->w.mu);
    c->used = 0;
}

// rows x cols codes and rows scales from the device into layer l's slot, in the default stream's order
// (the host goes on), then a job for the worker, which waits for the copies.
static void copier_push(Copier* c, int l, const int8_t* d_codes, const float* d_scale, int rows, int cols,
                        int8_t** dst_codes, float** dst_w) {
    size_t n = (size_t)rows * cols, need = n + sizeof(float) * rows + 16;
    if (c->used + need > c->slot_bytes) fail_other("internal: gptq copy slot overflow");
    int8_t* h = c->pinned[l % 2] + c->used;
    float* hs = (float*)(((uintptr_t)(h + n) + 15) & ~(uintptr_t)15);
    c->used += need;
    cudaEvent_t copied;
    cudaCheck(cudaMemcpyAsync(h, d_codes, n, cudaMemcpyDeviceToHost, 0));
    cudaCheck(cudaMemcpyAsync(hs, d_scale, sizeof(float) * rows, cudaMemcpyDeviceToHost, 0));
    cudaCheck(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming | cudaEventBlockingSync));
    cudaCheck(cudaEventRecord(copied, 0));
    pthread_mutex_lock(&c->w.mu);
    if (c->tail == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 64;
        c->jobs = (CopyJob*)xrealloc(c->jobs, sizeof(CopyJob) * c->cap);
    }
    c->jobs[c->tail++] = (CopyJob){h, hs, rows, cols, l % 2, dst_codes, dst_w, copied};
    c->queued[l % 2]++;
    pthread_cond_broadcast(&c->w.cv);
    pthread_mutex_unlock(&c->w.mu);
}

static void copier_free(Copier* c) {
    worker_stop(&c->w); // after the jobs queued so far
    for (int k = 0; k < 2; k++) cudaFreeHost(c->pinned[k]);
    free(c->jobs);
}

// The next layer's weights go up on this thread while the card works on the current one.
typedef struct {
    Worker w;
    GpuEngine* e;
    int want, done; // the layer asked for, and the last one uploaded
} Prefetch;

static void* prefetch_main(void* arg) {
    Prefetch* p = (Prefetch*)arg;
    cudaCheck(cudaSetDevice(p->w.dev));
    pthread_mutex_lock(&p->w.mu);
    for (;;) {
        while (p->want == p->done && !p->w.stop) pthread_cond_wait(&p->w.cv, &p->w.mu);
        if (p->w.stop) break;
        int l = p->want;
        pthread_mutex_unlock(&p->w.mu);
        gpu_engine_prefetch(p->e, l);
        pthread_mutex_lock(&p->w.mu);
        p->done = l;
        pthread_cond_broadcast(&p->w.cv);
    }
    pthread_mutex_unlock(&p->w.mu);
    return NULL;
}

static void prefetch_init(Prefetch* p, GpuEngine* e) {
    memset(p, 0, sizeof(*p));
    p->e = e;
    p->want = p->done = -1;
    worker_start(&p->w, prefetch_main, p, "upload");
}

static void prefetch_start(Prefetch* p, int l) {
    pthread_mutex_lock(&p->w.mu);
    p->want = l;
    pthread_cond_broadcast(&p->w.cv);
    pthread_mutex_unlock(&p->w.mu);
}

static void prefetch_wait(Prefetch* p, int l) {
    pthread_mutex_lock(&p->w.mu);
    while (p->done != l) pthread_cond_wait(&p->w.cv, &p->w.mu);
    pthread_mutex_unlock(&p->w.mu);
}

static void prefetch_free(Prefetch* p) { worker_stop(&p->w); }

// The device buffers of GPTQ: a factor per site (every site of a layer is prepared before any is
// factorised), and the column loop's buffers sized for the largest site (its linears' rows stacked).
typedef struct {
    GpuGptqFactor fac[SITES]; // cap 0 where no linear of the site is chosen
    float *W, *err, *scale,
        *w32;      // (rows, n) working copy, (rows, GPTQ_ERR_COLS), (rows), (rows, n) fp32 source
    int8_t* codes; // (rows, n) device
    Copier copier;
    double t_load, t_hess, t_gptq, t_pass; // seconds, for the closing line
    double dev_bytes;                      // what work_init allocated on the device
} GptqWork;

static int capture_input(GpuEngine* e, int idx, const void* x16, int M, void* ctx) {
    (void)e;
    Capture* c = (Capture*)ctx;
    const Linear* l = &c->m->linears[idx];
    int site = linear_site(c->m, idx), skip = c->drop && l->kind == LIN_DOWN; // the layer's last GEMM
    if (l->kind == LIN_Q) c->tokens += M;
    // each site's input once, at its first linear
    if ((l->kind == LIN_K || l->kind == LIN_V || l->kind == LIN_UP) || !c->on[site]) return skip;
    const float one = 1.0f;
    int n = l->in, nb = n >= 8192 ? (n + 3) / 4 : (n + 1) / 2;
    // x is (M, n) row-major = (n, M) column-major: xtx += x x^T over the tokens (bf16 products are exact
    // in fp32), the lower triangle by column blocks (of 4: 10/16 of the products, blocks still large
    // enough to fill the card): xtx[j0:, j0:j0+w] += x[j0:] x[j0:j0+w]^T
    for (int j0 = 0; j0 < n; j0 += nb) {
        int w = n - j0 < nb ? n - j0 : nb;
        const __nv_bfloat16* x = (const __nv_bfloat16*)x16;
        cublasCheck(cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, n - j0, w, M, &one, x + j0, CUDA_R_16BF, n,
                                 x + j0, CUDA_R_16BF, n, &one, c->xtx[site] + j0 + (size_t)j0 * n, CUDA_R_32F,
                                 n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    return skip;
}

// Windows [b B, b B + nb) through layer l of e: the residual stream from the pool (the embedding at
// layer 0), and back into it when `keep`; the pool on the device, or in pinned host memory (`host`).
static void run_batch(GpuEngine* e, int l, const TokenIds* ids, int b, int B, float* pool, int keep, int host) {
    int nb = ids->n - b * B < B ? ids->n - b * B : B;
    size_t TD = (size_t)ids->t * e->m->c.hidden_size, bytes = sizeof(float) * TD * nb;
    gpu_pass_begin(e, 0, ids->ids + (size_t)b * B * ids->t, nb);
    if (l > 0)
        cudaCheck(cudaMemcpy(gpu_hidden(e), pool + TD * b * B, bytes,
                             host ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToDevice));
    gpu_forward_layers(e, l, nb, 0);
    if (keep)
        cudaCheck(cudaMemcpy(pool + TD * b * B, gpu_hidden(e), bytes,
                             host ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice));
}

static int any_chosen(const int* choices, int nsets, int nl, int i) {
    for (int set = 0; set < nsets; set++)
        if (choices[(size_t)set * nl + i] >= 0) return 1;
    return 0;
}

// Linear i's original weight on the device: the engine's own copy when the checkpoint stores it in
// bf16 (then it is exact), else its fp32 values (model_linear_f32) uploaded into w32. Returns whether it
// is bf16.
static int original_weight(const void** w, GpuEngine* e, GptqWork* wk, int i) {
    const Linear* lin = &e->m->linears[i];
    char name[200];
    const StTensor* t = model_weight_tensor(e->m, i, name, sizeof(name));
    if (t && t->dtype == DT_BF16) {
        *w = gpu_linear_weight(e, i);
        return 1;
    }
    float* tmp;
    const float* w32 = model_linear_f32(e->m, i, &tmp); // quantize's model stays in its mapping
    cudaCheck(cudaMemcpy(wk->w32, w32, sizeof(float) * lin->out * lin->in, cudaMemcpyHostToDevice));
    free(tmp);
    *w = wk->w32;
    return 0;
}

// The linears of layer l reading `site` with format f stacked row after row into the working copy (their
// scales given, or RTN's of the original rows); returns the rows.
static int site_load(GptqWork* wk, GpuEngine* e, int l, int site, int f, const int* choice, const Format* fmts,
                     const Quantizer* q) {
    const Model* m = e->m;
    int rows = 0, n = wk->fac[site].n;
    for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++) {
        if (choice[i] != f || linear_site(m, i) != site) continue;
        const Linear* lin = &m->linears[i];
        const void* w;
        int bf16 = original_weight(&w, e, wk, i);
        float* sc = wk->scale + rows;
        if (q->scales)
            cudaCheck(cudaMemcpy(sc, q->scales[i], sizeof(float) * lin->out, cudaMemcpyHostToDevice));
        else if (bf16) // the codes buffer is scratch until gpu_gptq_run
            gpu_quant_rows_bf16(wk->codes, sc, (const bf16_t*)w, lin->out, n, fmts[f].w);
        else
            gpu_quant_rows_f32(wk->codes, sc, (const float*)w, lin->out, n, fmts[f].w);
        gpu_gptq_load(wk->W + (size_t)rows * n, w, bf16, lin->out, &wk->fac[site]);
        rows += lin->out;
    }
    return rows;
}

// The codes of the stacked linears to the host, as codes where the caller takes them (q->codes), else as
// weights code * scale into wq; and with `into_engine` into the engine too, bf16 weights for the next
// pass (the sequential pipeline: only then, since every set of the basic one reads the original weights).
static void site_store(float** wq, GptqWork* wk, GpuEngine* e, int l, int site, int f, const int* choice,
                       const Quantizer* q, int into_engine) {
    const Model* m = e->m;
    int rows = 0, n = wk->fac[site].n;
    for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++) {
        if (choice[i] != f || linear_site(m, i) != site) continue;
        const Linear* lin = &m->linears[i];
        const int8_t* dc = wk->codes + (size_t)rows * n;
        if (into_engine) gpu_gptq_dequant_bf16(gpu_linear_weight(e, i), dc, wk->scale + rows, lin->out, n);
        int give_codes = q->codes && q->scales;
        copier_push(&wk->copier, l, dc, wk->scale + rows, lin->out, n, give_codes ? &q->codes[i] : NULL,
                    give_codes ? NULL : &wq[i]);
        rows += lin->out;
    }
}

// GPTQ of layer l's chosen linears from the captured sums, for each set of choices (nsets, n_linears)
// into wq (nsets, n_linears): one factorisation per site, one column loop per (set, site, format) over
// the site's linears stacked. `sequential` (one set): the engine then runs the quantized layer. The host
// reads every site's diagonal first, then only queues the work.
static void layer_gptq(float** wq, GptqWork* wk, GpuEngine* e, Capture* c, int l, const Format* fmts,
                       const int* choices, int nsets, const Quantizer* q, int nf, int sequential) {
    const Model* m = c->m;
    for (int site = 0; site < SITES; site++)
        if (c->on[site])
            gpu_gptq_prepare(&wk->fac[site], c->xtx[site], 2.0f / (float)c->tokens, site_width(m, site),
                             q->gptq);
    for (int site = 0; site < SITES; site++) {
        if (!c->on[site]) continue;
        GpuGptqFactor* fac = &wk->fac[site];
        gpu_gptq_factorise(fac, c->xtx[site]);
        for (int set = 0; set < nsets; set++) {
            const int* choice = choices + (size_t)set * m->n_linears;
            for (int f = 0; f < nf; f++) {
                int rows = site_load(wk, e, l, site, f, choice, fmts, q);
                if (!rows) continue;
                gpu_gptq_run(wk->codes, wk->W, wk->err, wk->scale, rows, fac, fmts[f].w, q->gptq.block);
                site_store(wq + (size_t)set * m->n_linears, wk, e, l, site, f, choice, q, sequential);
            }
        }
    }
    for (int site = 0; site < SITES; site++) {
        if (!c->on[site] || !gpu_gptq_fallback(&wk->fac[site])) continue;
        for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++)
            if (linear_site(m, i) == site && any_chosen(choices, nsets, m->n_linears, i))
                warn_msg(
                    "%s: the dampened Hessian is not positive definite; quantized round-to-nearest instead, "
                    "as llm-compressor does (raise --gptq-dampening or add calibration data)",
                    m->linears[i].name);
    }
}

// Per site, the widest input and most stacked rows over the chosen linears of every set; the sums and
// factor of every site that is ever chosen; the column loop's buffers for the largest site.
static void work_init(GptqWork* wk, Capture* cap, const Model* m, const int* choices, int nsets) {
    memset(wk, 0, sizeof(*wk));
    size_t most = 1, lin_most = 1, rows_most = 1, layer_most = 1;
    int width[SITES] = {0};
    for (int l = 0; l < m->c.num_layers; l++) {
        size_t bytes = 0; // every set's codes and scales of the layer, as copier_push packs them
        for (size_t k = 0; k < (size_t)nsets * m->n_linears; k++) {
            const Linear* lin = &m->linears[k % m->n_linears];
            if (choices[k] >= 0 && lin->layer == l)
                bytes += (size_t)lin->out * lin->in + sizeof(float) * lin->out + 16;
        }
        if (bytes > layer_most) layer_most = bytes;
        for (int site = 0; site < SITES; site++) {
            size_t rows = 0;
            for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++)
                if (any_chosen(choices, nsets, m->n_linears, i) && linear_site(m, i) == site) {
                    rows += m->linears[i].out;
                    size_t w = (size_t)m->linears[i].out * m->linears[i].in;
                    if (w > lin_most) lin_most = w;
                }
            if (!rows) continue;
            size_t n = site_width(m, site);
            if (rows * n > most) most = rows * n;
            if (rows > rows_most) rows_most = rows;
            if ((int)n > width[site]) width[site] = (int)n;
        }
    }
    for (int site = 0; site < SITES; site++) {
        if (!width[site]) continue;
        gpu_gptq_factor_init(&wk->fac[site], width[site]);
        cudaCheck(cudaMalloc(&cap->xtx[site], sizeof(float) * width[site] * width[site]));
        double n = width[site], h = (double)(width[site] / 2 + 1); // gpu_gptq_factor_init's buffers, and xtx
        wk->dev_bytes += 5 * n + 16 * n * n + 8 * h * h + 8 + (double)wk->fac[site].work_bytes;
    }
    wk->dev_bytes += 5.0 * most + 4.0 * rows_most * (GPTQ_ERR_COLS + 1) + 4.0 * lin_most;
    cudaCheck(cudaMalloc(&wk->W, sizeof(float) * most));
    cudaCheck(cudaMalloc(&wk->codes, most));
    cudaCheck(cudaMalloc(&wk->err, sizeof(float) * rows_most * GPTQ_ERR_COLS));
    cudaCheck(cudaMalloc(&wk->scale, sizeof(float) * rows_most));
    cudaCheck(cudaMalloc(&wk->w32, sizeof(float) * lin_most));
    copier_init(&wk->copier, layer_most);
}

static void work_free(GptqWork* wk, Capture* cap) {
    for (int site = 0; site < SITES; site++) {
        if (wk->fac[site].cap) gpu_gptq_factor_free(&wk->fac[site]);
        cudaFree(cap->xtx[site]);
    }
    cudaFree(wk->W), cudaFree(wk->codes), cudaFree(wk->err), cudaFree(wk->scale), cudaFree(wk->w32);
    copier_free(&wk->copier);
}

// Layer l's chosen sites (cap->on), their sums zeroed; whether there is any.
static int layer_sites(Capture* cap, const Model* m, int l, const int* choices, int nsets) {
    int any = 0;
    memset(cap->on, 0, sizeof(cap->on));
    for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++) {
        if (!any_chosen(choices, nsets, m->n_linears, i)) continue;
        int s = linear_site(m, i);
        size_t n = site_width(m, s);
        if (!cap->on[s]) cudaCheck(cudaMemsetAsync(cap->xtx[s], 0, sizeof(float) * n * n, 0));
        cap->on[s] = any = 1;
    }
    return any;
}

// Layer after layer: sum each chosen site's X^T X over the windows, GPTQ, then move the stream on; in the
// sequential pipeline through the quantized layer (a second pass), in the basic one through the
// unquantized layer in the summing pass itself (every Hessian from the unquantized model). The engine
// holds one layer and walks (gpu_engine_walk_init); nothing here synchronises the whole device, which
// would wait for the next layer's upload too.
static void gptq_layers(float** wq, const Model* m, const TokenIds* ids, const Format* fmts, const int* choices,
                        int nsets, const Quantizer* q, int sequential) {
    const Config* c = &m->c;
    if (c->n_sparse)
        fail_input("GPTQ on the GPU: mixture-of-experts layers run on the CPU only (--device cpu)");
    int L = c->num_layers, T = ids->t, B = 16, nbat = (ids->n + B - 1) / B, nf = 0, nl = m->n_linears;
    for (size_t i = 0; i < (size_t)nsets * nl; i++) nf = choices[i] + 1 > nf ? choices[i] + 1 : nf;
    if (q->gptq.block > 128) fail_other("internal: GPTQ blocks of more than 128 columns on the GPU");
    if (q->codes && nsets > 1) fail_other("internal: GPTQ codes handed back for one recipe only");
    double t0 = time_now();
    Capture cap;
    memset(&cap, 0, sizeof(cap));
    cap.m = m;
    cap.drop = sequential;
    cublasCheck(cublasCreate(&cap.blas));
    GptqWork wk;
    work_init(&wk, &cap, m, choices, nsets);
    GpuEngine* e = gpu_engine_init_layers(m, T, B, 0, 0, 1, 1); // uploads layer 0
    gpu_engine_walk_init(e);
    // the windows' pool beside what the walk holds (its two layer sets, Hessians, buffers): on the device
    // unless that passes --gpu-memory (README "Streaming")
    // (the walk's own allocations: unlike free memory, blind to other processes on the GPU)
    float* pool;
    size_t pool_bytes = sizeof(float) * (size_t)ids->n * T * c->hidden_size;
    double used = (double)gpu_alloc_bytes(e) + wk.dev_bytes;
    if (q->gpu_mem > 0 && used > q->gpu_mem)
        fail_input(
            "--gpu-memory: %.3f GiB is too small for GPTQ on the GPU: its layer walk holds %.3f GiB (%.0f "
            "bytes) before the windows' pool of %.3f GiB (%.0f bytes)",
            q->gpu_mem / 1073741824.0, used / 1073741824.0, used, pool_bytes / 1073741824.0,
            (double)pool_bytes);
    int host_pool = q->gpu_mem > 0 && used + pool_bytes > q->gpu_mem;
    if (host_pool)
        cudaCheck(cudaMallocHost(&pool, pool_bytes));
    else
        cudaCheck(cudaMalloc(&pool, pool_bytes));
    if (q->gpu_mem > 0)
        info_msg(
            "gptq: --gpu-memory %.3f GiB: the layer walk holds %.3f GiB (%.0f bytes); the windows' pool of "
            "%.3f GiB (%.0f bytes) %s",
            q->gpu_mem / 1073741824.0, used / 1073741824.0, used, pool_bytes / 1073741824.0, (double)pool_bytes,
            host_pool ? "waits in pinned host memory" : "on the GPU");
    wk.t_load = time_now() - t0;
    Prefetch pf;
    prefetch_init(&pf, e);
    Progress p;
    progress_init(&p, sequential ? "gptq layers (GPU)" : "gptq (GPU)", L);
    for (int l = 0; l < L; l++) {
        double t1 = time_now();
        if (l > 0) prefetch_wait(&pf, l), gpu_engine_advance(e, l);
        wk.t_load += time_now() - t1;
        if (l + 1 < L) prefetch_start(&pf, l + 1); // into the set of layer l - 1, whose work is done
        copier_layer(&wk.copier, l);
        int any = layer_sites(&cap, m, l, choices, nsets);
        if (any) { // this layer as it is, on the stream so far
            t1 = time_now();
            cap.tokens = 0;
            gpu_set_capture(e, capture_input, &cap);
            for (int b = 0; b < nbat; b++) run_batch(e, l, ids, b, B, pool, !sequential, host_pool);
            gpu_set_capture(e, NULL, NULL);
            cudaCheck(cudaStreamSynchronize(0));
            wk.t_hess += time_now() - t1;
            t1 = time_now();
            layer_gptq(wq, &wk, e, &cap, l, fmts, choices, nsets, q, nf, sequential);
            cudaCheck(cudaStreamSynchronize(0));
            wk.t_gptq += time_now() - t1;
        }
        t1 = time_now();
        for (int b = 0; (sequential || !any) && b < nbat; b++) run_batch(e, l, ids, b, B, pool, 1, host_pool);
        cudaCheck(cudaStreamSynchronize(0));
        wk.t_pass += time_now() - t1;
        progress_step(&p, 1);
    }
    progress_end(&p);
    prefetch_free(&pf);
    gpu_engine_free(e);
    gpu_gptq_profile_report();
    work_free(&wk, &cap);
    cublasDestroy(cap.blas);
    if (host_pool)
        cudaFreeHost(pool);
    else
        cudaFree(pool);
    info_msg("gptq: %s pipeline over %d layers on the GPU (%s), %d x %d tokens in %.2fs (waiting for weights "
             "%.2fs, passes with X^T X %.2fs, GPTQ %.2fs, other passes %.2fs)",
             sequential ? "sequential" : "basic", L, gpu_name(), ids->n, T, time_now() - t0, wk.t_load,
             wk.t_hess, wk.t_gptq, wk.t_pass);
}

extern "C" void gptq_sequential_gpu(float** wq, const Model* m, const TokenIds* ids, const Format* fmts,
                                    const int* choice, const Quantizer* q) {
    gptq_layers(wq, m, ids, fmts, choice, 1, q, 1);
}

extern "C" void gptq_basic_gpu_sets(float** wq, const Model* m, const TokenIds* ids, const Format* fmts,
                                    const int* choices, int nsets, const Quantizer* q) {
    gptq_layers(wq, m, ids, fmts, choices, nsets, q, 0);
}

extern "C" void gptq_basic_gpu(float** wq, const Model* m, const TokenIds* ids, const Format* fmts,
                               const int* choice, const Quantizer* q) {
    gptq_layers(wq, m, ids, fmts, choice, 1, q, 0);
}

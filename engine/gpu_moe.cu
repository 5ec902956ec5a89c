// The MLP half of a sparse (mixture-of-experts) layer on the GPU: mirrors moe_route,
// moe_experts_apply and moe_backward of engine/forward.c and engine/backward.c (README §3, §6).
// The router's logits are an fp32-output GEMM; softmax, top-k, the sort by expert and the grouped
// GEMMs' tiles all run on the device (kernels/moe.cu), with no host round trip. Each expert then
// runs on its own rows: one grouped GEMM per projection (kernels/matmul.cu; cuBLAS's grouped GEMM
// refuses bf16 inputs with fp32 outputs), on int8 codes for a quantized experts group; with
// AUTOQ_MOE_GEMM=loop, one cuBLAS GEMM per expert instead (for bench/). In the fp16 GEMM mode the
// experts' weights and inputs are fp16 and the router stays bf16 (hi + lo inputs, as bf16x2 routes).
#include <string.h>

#include "gpu_engine.cuh"

// The GEMMs of a layer's experts, each over every expert with rows (README §3).
enum { G_GATE, G_UP, G_DOWN, G_DOWN_BWD, G_GATE_BWD, G_UP_BWD, G_N };

// Buffers needed by every pass; with grad, those of the backward as well (on the first gradient pass).
void moe_alloc(GpuEngine* e, int grad) {
    const Config* c = &e->m->c;
    GpuMoe* x = &e->moe;
    long M = (long)e->B * e->T, D = c->hidden_size, E = c->num_experts, K = c->top_k, I = c->moe_intermediate;
    long MK = M * K, mx = D > I ? D : I;
    if (grad) {
        x->dw = (float*)dalloc(e, 4 * MK);
        x->drl = (float*)dalloc(e, 4 * M * E);
        x->dye = (float*)dalloc(e, 4 * MK * D);
        x->dxs = (float*)dalloc(e, 4 * MK * D);
        x->dg = (float*)dalloc(e, 4 * MK * I);
        x->du = (float*)dalloc(e, 4 * MK * I);
        x->dact = (float*)dalloc(e, 4 * MK * I);
        x->d16 = (__nv_bfloat16*)dalloc(e, 2 * MK * mx);
        if (e->split) x->d_lo = (__nv_bfloat16*)dalloc(e, 2 * MK * mx);
        return;
    }
    x->E = (int)E, x->K = (int)K, x->I = (int)I;
    x->logits = (float*)dalloc(e, 4 * M * E);
    x->probs = (float*)dalloc(e, 4 * M * E);
    x->w = (float*)dalloc(e, 4 * MK);
    x->idx = (int*)dalloc(e, 4 * MK);
    x->order = (int*)dalloc(e, 4 * MK);
    x->pos = (int*)dalloc(e, 4 * MK);
    x->offs = (int*)dalloc(e, 4 * (E + 1));
    x->sort_scratch = (int*)dalloc(e, 4 * moe_sort_scratch(MK, (int)E));
    x->h_offs = (int*)xmalloc(sizeof(int) * (E + 1));
    x->ex_id = (int*)xmalloc(sizeof(int) * E);
    x->xs16 = (__nv_bfloat16*)dalloc(e, 2 * MK * D);
    if (e->split) x->xs_lo = (__nv_bfloat16*)dalloc(e, 2 * MK * D);
    x->g = (float*)dalloc(e, 4 * MK * I);
    x->u = (float*)dalloc(e, 4 * MK * I);
    x->act = (float*)dalloc(e, 4 * MK * I);
    x->ye = (float*)dalloc(e, 4 * MK * D);
    if (!e->split) { // plain bf16 kl passes keep the gate and up outputs in bf16
        x->g16 = (__nv_bfloat16*)dalloc(e, 2 * MK * I);
        x->u16 = (__nv_bfloat16*)dalloc(e, 2 * MK * I);
    }
    x->act16 = (__nv_bfloat16*)dalloc(e, 2 * MK * I);
    if (e->split) x->act_lo = (__nv_bfloat16*)dalloc(e, 2 * MK * I);
    x->y = (float*)dalloc(e, 4 * M * D);
    x->yq = (float*)dalloc(e, 4 * M * D);
    x->xq = (int8_t*)dalloc(e, MK * mx);
    x->sx = (float*)dalloc(e, 4 * M);
    x->sxs = (float*)dalloc(e, 4 * MK);
    x->nt = (int)(MK / GROUPED_ROWS + E);
    x->tiles = (int*)dalloc(e, 4 * 3 * x->nt);
    x->counts = (long long*)dalloc(e, sizeof(long long) * c->num_layers * E);
    cudaCheck(cudaMemset(x->counts, 0, sizeof(long long) * c->num_layers * E));
    const char* how = getenv("AUTOQ_MOE_GEMM");
    x->grouped = !(how && strcmp(how, "loop") == 0) && D % 16 == 0 && I % 16 == 0; // the kernels' shapes
    if (!x->grouped) x->acc = (int32_t*)dalloc(e, 4 * MK * mx); // the grouped int8 kernel dequantizes in place
    if (!e->split) { // the router's input as hi + lo when the GEMMs read plain bf16 (route)
        x->r16 = (__nv_bfloat16*)dalloc(e, 2 * M * D);
        x->r_lo = (__nv_bfloat16*)dalloc(e, 2 * M * D);
    }
    x->q_layer = -1;
}

// Host (E, a, b) -> device bf16 (E, b, a): transformers 4's fused layouts (engine/model.h).
static void upload_transposed(const StTensor* t, __nv_bfloat16* d, long E, long a, long b) {
    size_t n = (size_t)(E * a * b);
    float *f = (float*)xmalloc(n * 4), *ft = (float*)xmalloc(n * 4);
    st_to_f32(t, f);
    model_transpose_experts(ft, f, (int)E, (int)a, (int)b);
    uint16_t* h = (uint16_t*)xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = f32_to_bf16(ft[i]);
    cudaCheck(cudaMemcpy(d, h, n * 2, cudaMemcpyHostToDevice));
    free(f);
    free(ft);
    free(h);
}

// The routed experts of sparse layer l, from either checkpoint layout (the tensors model_weight_tensor finds
// for them; shapes already validated by model_open), into the fused layouts of g: its buffers allocated
// first (layer_alloc) with alloc, only allocated with alloc < 0 (a streaming slot being measured). The router
// is a row of the architecture table (layer_upload).
void moe_upload(GpuEngine* e, int l, GpuLayer* g, int alloc) {
    const Model* m = e->m;
    const Config* c = &m->c;
    long E = c->num_experts, I = c->moe_intermediate, D = c->hidden_size;
    char name[256];
    if (alloc) {
        g->ex_gu = (__nv_bfloat16*)layer_alloc(e, 2 * E * 2 * I * D);
        g->ex_down = (__nv_bfloat16*)layer_alloc(e, 2 * E * D * I);
    }
    if (alloc < 0) return;
    const StTensor* t = model_weight_tensor(m, model_lin(m, l, LIN_GATE, 0), name, sizeof(name));
    if (t && t->ndim == 3) { // fused: (E, 2 I, D) and (E, D, I), or transformers 4's (E, D, 2 I), (E, I, D)
        int v5 = t->shape[1] == 2 * I && t->shape[2] == D; // model_open decided the same way
        if (v5)
            upload_tensor(e, t, g->ex_gu);
        else
            upload_transposed(t, g->ex_gu, E, D, 2 * I);
        t = model_weight_tensor(m, model_lin(m, l, LIN_DOWN, 0), name, sizeof(name));
        if (v5)
            upload_tensor(e, t, g->ex_down);
        else
            upload_transposed(t, g->ex_down, E, I, D);
    } else {
        for (long x = 0; x < E; x++) {
            upload_tensor(e, model_weight_tensor(m, model_lin(m, l, LIN_GATE, (int)x), name, sizeof(name)),
                          g->ex_gu + x * 2 * I * D);
            upload_tensor(e, model_weight_tensor(m, model_lin(m, l, LIN_UP, (int)x), name, sizeof(name)),
                          g->ex_gu + x * 2 * I * D + I * D);
            upload_tensor(e, model_weight_tensor(m, model_lin(m, l, LIN_DOWN, (int)x), name, sizeof(name)),
                          g->ex_down + x * D * I);
        }
    }
    if (e->f16) { // the experts' GEMMs read fp16 in this mode; the router stays bf16 (route)
        snprintf(name, sizeof(name), "%slayers.%d experts (gate and up)", c->prefix, l);
        weight_to_f16(e, g->ex_gu, E * 2 * I * D, name);
        snprintf(name, sizeof(name), "%slayers.%d experts (down)", c->prefix, l);
        weight_to_f16(e, g->ex_down, E * D * I, name);
    }
}

// The next passes run layer l's experts on int8 codes of their weights: given set f (gpu_given_set
// laid them out as the pool), or quantized now with w into the plan's pool.
void moe_plan_set(GpuEngine* e, int l, QuantSpec w, int f) {
    GpuMoe* x = &e->moe;
    const GpuLayer* g = &e->layers[l];
    long D = e->m->c.hidden_size, E = x->E, I = x->I;
    x->q_layer = l;
    if (e->n_given) { // expert 0's gate and down rows start the two halves of the fused block
        x->wgu = given_codes(e, f, model_lin(e->m, l, LIN_GATE, 0), &x->sgu);
        x->wdn = given_codes(e, f, model_lin(e->m, l, LIN_DOWN, 0), &x->sdn);
        return;
    }
    x->wgu = e->wq_pool;
    x->wdn = e->wq_pool + E * 2 * I * D;
    x->sgu = e->sw_pool;
    x->sdn = e->sw_pool + E * 2 * I;
    if (e->f16) { // the same values, held as fp16 in this mode
        gpu_quant_rows_f16(x->wgu, x->sgu, (const uint16_t*)g->ex_gu, (int)(E * 2 * I), (int)D, w);
        gpu_quant_rows_f16(x->wdn, x->sdn, (const uint16_t*)g->ex_down, (int)(E * D), (int)I, w);
        return;
    }
    gpu_quant_rows_bf16(x->wgu, x->sgu, (const bf16_t*)g->ex_gu, (int)(E * 2 * I), (int)D, w);
    gpu_quant_rows_bf16(x->wdn, x->sdn, (const bf16_t*)g->ex_down, (int)(E * D), (int)I, w);
}

// Router logits (fp32), softmax, top-k, the assignments sorted by expert and the grouped GEMMs'
// tiles, all on the device: no host round trip (the per-expert loop of AUTOQ_MOE_GEMM=loop needs
// the counts on the host and waits for them).
static void route(GpuEngine* e, int l, int M) {
    const Config* c = &e->m->c;
    GpuMoe* x = &e->moe;
    int E = x->E, K = x->K;
    // The router reads m at ~16 bits whenever m is fp32 (README §3: its logits are fp32), so that
    // near-tied choices fall as on the CPU; plain bf16 kl passes keep m in bf16 only.
    const __nv_bfloat16 *rh = e->m16, *rl = e->m_lo;
    if (!e->bf16_act && !rl) {
        gpu_split_bf16((bf16_t*)x->r16, (bf16_t*)x->r_lo, e->cur.m_, (long)M * c->hidden_size);
        rh = x->r16, rl = x->r_lo;
    }
    gemm_bf16_always(e, x->logits, rh, rl, e->layers[l].router, M, c->hidden_size, E); // bf16 in every mode
    gpu_moe_route_forward(x->probs, x->idx, x->w, x->logits, M, E, K, c->norm_topk);
    gpu_moe_sort(x->order, x->offs, x->pos, x->idx, M, E, K, x->sort_scratch);
    gpu_moe_tiles(x->tiles, x->nt, x->count ? x->counts + (long)l * E : NULL, x->offs, E);
    if (x->grouped) return;
    cudaCheck(cudaMemcpy(x->h_offs, x->offs, 4L * (E + 1), cudaMemcpyDeviceToHost));
    x->n_ex = 0;
    for (int ex = 0; ex < E; ex++)
        if (x->h_offs[ex + 1] > x->h_offs[ex]) x->ex_id[x->n_ex++] = ex;
}

// One expert GEMM g over every expert with rows: the forward Y_e (n_e, N) (+)= X_e W_e^T, or the
// backward dX_e (n_e, K) (+)= dY_e W_e; X as bf16 hi (+ lo). Grouped in one kernel, or one cuBLAS
// call per expert and part (AUTOQ_MOE_GEMM=loop, for bench/).
static void ex_gemm(GpuEngine* e, int l, int g, float beta) {
    GpuMoe* x = &e->moe;
    const GpuLayer* gl = &e->layers[l];
    long D = e->m->c.hidden_size, I = x->I;
    int a16 = e->bf16_act && (g == G_GATE || g == G_UP), bwd = g >= G_DOWN_BWD;
    const __nv_bfloat16 *hi = x->d16, *lo = x->d_lo, *w = gl->ex_gu;
    long ws = 2 * I * D, K = D, N = I;
    float* y = g == G_GATE ? x->g : g == G_UP ? x->u : g == G_DOWN ? x->ye : g == G_DOWN_BWD ? x->dact : x->dxs;
    __nv_bfloat16* y16 = a16 ? (g == G_GATE ? x->g16 : x->u16) : NULL;
    if (g == G_GATE || g == G_UP) hi = x->xs16, lo = x->xs_lo;
    if (g == G_DOWN) hi = x->act16, lo = x->act_lo;
    if (g == G_DOWN || g == G_DOWN_BWD) w = gl->ex_down, ws = D * I;
    if (g == G_DOWN) K = I, N = D;
    if (g == G_GATE_BWD || g == G_UP_BWD) K = I, N = D;
    if (g == G_UP || g == G_UP_BWD) w += I * D;
    if (!e->split) lo = NULL;
    if (x->grouped) {
        gpu_matmul_grouped(a16 ? NULL : y, (bf16_t*)y16, (const bf16_t*)hi, (const bf16_t*)lo, (const bf16_t*)w,
                           ws, x->tiles, x->nt, (int)K, (int)N, bwd, beta, e->f16);
        return;
    }
    const float one = 1.0f;
    cudaDataType it = e->f16 ? CUDA_R_16F : CUDA_R_16BF;
    for (int j = 0; j < x->n_ex; j++) {
        int ex = x->ex_id[j], n = x->h_offs[ex + 1] - x->h_offs[ex];
        long r0 = x->h_offs[ex];
        void* out = a16 ? (void*)(y16 + r0 * N) : (void*)(y + r0 * N);
        for (int p = 0; p < (lo ? 2 : 1); p++) {
            const float b = p ? 1.0f : beta;
            cublasCheck(cublasGemmEx(e->blas, bwd ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, (int)N, n, (int)K,
                                     &one, w + ex * ws, it, bwd ? (int)N : (int)K, (p ? lo : hi) + r0 * K, it,
                                     (int)K, &b, out, a16 ? CUDA_R_16BF : CUDA_R_32F, (int)N,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
    }
}

// y rows (n, N) = acc * sx * sw for the rows of each expert: the dequantized int8 GEMMs, grouped in
// one kernel or one cuBLAS GEMM per expert (AUTOQ_MOE_GEMM=loop). Expert ex's codes start at
// wq + ex * ws (scales sw + ex * ss): gate and up rows sit in (2 I, D) blocks.
static void ex_int8(GpuEngine* e, float* y, const int8_t* wq, long ws, const float* sw, long ss, int kin,
                    int nout) {
    GpuMoe* x = &e->moe;
    if (x->grouped) {
        gpu_matmul_grouped_i8(y, x->xq, x->sxs, wq, ws, sw, ss, x->tiles, x->nt, kin, nout);
        return;
    }
    for (int j = 0; j < x->n_ex; j++) {
        int ex = x->ex_id[j];
        long r0 = x->h_offs[ex], n = x->h_offs[ex + 1] - r0;
        gemm_i8(e, x->acc, x->xq + r0 * kin, wq + ex * ws, (int)n, kin, nout);
        gpu_dequant(y + r0 * nout, NULL, x->acc, x->sxs + r0, sw + ex * ss, (int)n, nout, 0);
    }
}

// The experts on int8 codes (moe_plan_set): inputs quantized per token (a gathered row is its
// token's row, so quantizing before the gather is the same), ye = the unweighted outputs.
static void experts_int8(GpuEngine* e, int M) {
    GpuMoe* x = &e->moe;
    int D = e->m->c.hidden_size, I = x->I, K = x->K;
    long MK = (long)M * K;
    if (e->bf16_act)
        gpu_quant_rows_bf16(e->xq, x->sx, (const bf16_t*)e->m16, M, D, e->in_spec);
    else
        gpu_quant_rows_f32(e->xq, x->sx, e->cur.m_, M, D, e->in_spec);
    e->xq_src = NULL;
    gpu_moe_gather(x->xq, e->xq, x->order, (int)MK, K, D);
    gpu_moe_gather(x->sxs, x->sx, x->order, (int)MK, K, 4);
    long gs = 2L * I * D, ss = 2L * I;
    ex_int8(e, x->g, x->wgu, gs, x->sgu, ss, D, I);
    ex_int8(e, x->u, x->wgu + (long)I * D, gs, x->sgu + I, ss, D, I);
    gpu_swiglu(x->act, NULL, NULL, x->g, x->u, MK * I, 0);
    gpu_quant_rows_f32(x->xq, x->sxs, x->act, (int)MK, I, e->in_spec);
    ex_int8(e, x->ye, x->wdn, (long)D * I, x->sdn, D, I, D);
}

// The experts of a recipe (gpu_recipe_set): each expert's deployed fp32 weights and the layer's inputs
// fake-quantized per token (a gathered row is its token's row), one fp32 GEMM per expert with rows (the
// emulated linears' numerics, any format); ye = the unweighted outputs.
static void experts_recipe(GpuEngine* e, int l, int M) {
    const Model* md = e->m;
    GpuMoe* x = &e->moe;
    int D = md->c.hidden_size, I = x->I, K = x->K, E = x->E;
    long MK = (long)M * K;
    QuantSpec in = e->rin[model_lin(md, l, LIN_GATE, 0)];
    if (e->bf16_act) fail_other("internal: a recipe's experts need fp32 activations");
    const float* m = e->cur.m_;
    if (in.bits) {
        gpu_fake_quant_f32(e->xf, m, M, D, in, 0);
        m = e->xf;
        e->xf_src = NULL;
    }
    gpu_moe_gather(e->rxs, m, x->order, (int)MK, K, 4 * D);
    cudaCheck(cudaMemcpy(x->h_offs, x->offs, 4L * (E + 1), cudaMemcpyDeviceToHost));
    for (int ex = 0; ex < E; ex++) {
        long r0 = x->h_offs[ex], n = x->h_offs[ex + 1] - r0;
        if (!n) continue;
        gemm_f32(e, x->g + r0 * I, e->rxs + r0 * D, e->rw[model_lin(md, l, LIN_GATE, ex)], (int)n, D, I, 0);
        gemm_f32(e, x->u + r0 * I, e->rxs + r0 * D, e->rw[model_lin(md, l, LIN_UP, ex)], (int)n, D, I, 0);
    }
    gpu_swiglu(x->act, NULL, NULL, x->g, x->u, MK * I, 0);
    const float* a = x->act;
    if (in.bits) {
        gpu_fake_quant_f32(e->rxs, x->act, (int)MK, I, in, 0);
        a = e->rxs;
    }
    for (int ex = 0; ex < E; ex++) {
        long r0 = x->h_offs[ex], n = x->h_offs[ex + 1] - r0;
        if (n) gemm_f32(e, x->ye + r0 * D, a + r0 * I, e->rw[model_lin(md, l, LIN_DOWN, ex)], (int)n, I, D, 0);
    }
}

void moe_forward(GpuEngine* e, int l, int M) {
    GpuMoe* x = &e->moe;
    int D = e->m->c.hidden_size, K = x->K;
    long MK = (long)M * K, I = x->I;
    route(e, l, M);
    prof_mark(e, P_ROUTE);
    if (x->q_layer == l) {
        experts_int8(e, M);
        prof_mark(e, P_EX_Q);
    } else if (e->ron && e->ron[model_lin(e->m, l, LIN_GATE, 0)]) {
        experts_recipe(e, l, M);
        prof_mark(e, P_EX_Q);
    } else {
        gpu_moe_gather(x->xs16, e->m16, x->order, (int)MK, K, 2 * D);
        if (e->split) gpu_moe_gather(x->xs_lo, e->m_lo, x->order, (int)MK, K, 2 * D);
        prof_mark(e, P_ROUTE);
        ex_gemm(e, l, G_GATE, 0.0f);
        ex_gemm(e, l, G_UP, 0.0f);
        prof_mark(e, P_GATE_UP);
        if (e->bf16_act)
            gpu_swiglu_bf16((bf16_t*)x->act16, (const bf16_t*)x->g16, (const bf16_t*)x->u16, MK * I);
        else
            gpu_swiglu(NULL, (bf16_t*)x->act16, (bf16_t*)x->act_lo, x->g, x->u, MK * I, e->f16);
        prof_mark(e, P_SWIGLU);
        ex_gemm(e, l, G_DOWN, 0.0f);
    }
    gpu_moe_scatter(e->grad_mode ? x->y : NULL, e->h, x->ye, x->w, x->pos, M, K, D);
    prof_mark(e, P_DOWN);
}

// dh = dL/dy (the block output) on entry; e->dm = dL/dm on exit, through the experts and the
// router. The hook sees the block last: its quantized block reuses the rows' buffers.
void moe_backward(GpuEngine* e, int l, int M, GpuGradHook hook, void* ctx) {
    const Config* c = &e->m->c;
    GpuMoe* x = &e->moe;
    int D = c->hidden_size, E = x->E, K = x->K;
    long MK = (long)M * K, I = x->I;
    gpu_moe_scatter_backward(x->dye, x->dw, e->dh, x->ye, x->w, x->pos, M, K, D);
    gpu_split_bf16((bf16_t*)x->d16, (bf16_t*)x->d_lo, x->dye, MK * D);
    prof_mark(e, P_BWD);
    ex_gemm(e, l, G_DOWN_BWD, 0.0f);
    prof_mark(e, P_EX_BWD);
    gpu_swiglu_backward(x->dg, x->du, x->dact, x->g, x->u, MK * I);
    gpu_split_bf16((bf16_t*)x->d16, (bf16_t*)x->d_lo, x->dg, MK * I);
    prof_mark(e, P_BWD);
    ex_gemm(e, l, G_GATE_BWD, 0.0f);
    prof_mark(e, P_EX_BWD);
    gpu_split_bf16((bf16_t*)x->d16, (bf16_t*)x->d_lo, x->du, MK * I);
    prof_mark(e, P_BWD);
    ex_gemm(e, l, G_UP_BWD, 1.0f);
    prof_mark(e, P_EX_BWD);
    cudaCheck(cudaMemsetAsync(e->dm, 0, 4L * M * D));
    gpu_moe_gather_backward(e->dm, x->dxs, x->pos, M, K, D);
    gpu_moe_route_backward(x->drl, x->dw, x->probs, x->idx, M, E, K, c->norm_topk);
    linear_bwd(e, e->dm, x->drl, e->layers[l].router, M, D, E, 1.0f);
    grad_linear(e, hook, ctx, -1 - l, e->dh, e->cur.m_, x->y, M);
    e->xq_src = NULL; // the hook's quantized block rewrote the input codes
}

// The gradient score's quantized block (README §6): layer l's experts on int8 codes of w and
// inputs quantized with in, on the routing of the pass (just recomputed): Yq (M, D).
extern "C" const float* gpu_moe_quantized(GpuEngine* e, int l, int M, QuantSpec w, QuantSpec in, int f) {
    GpuMoe* x = &e->moe;
    if (e->nq || x->q_layer >= 0) fail_other("internal: gpu_moe_quantized during a quantized pass");
    QuantSpec keep = e->in_spec;
    e->in_spec = in;
    prof_mark(e, P_SCORE);
    moe_plan_set(e, l, w, f);
    prof_mark(e, P_GROUP);
    experts_int8(e, M);
    prof_mark(e, P_EX_Q);
    gpu_moe_scatter(x->yq, NULL, x->ye, x->w, x->pos, M, x->K, e->m->c.hidden_size);
    x->q_layer = -1;
    e->in_spec = keep;
    return x->yq;
}

extern "C" void gpu_expert_tokens(GpuEngine* e, long* counts) {
    const Config* c = &e->m->c;
    if (!e->moe.E) return;
    long n = (long)c->num_layers * c->num_experts;
    long long* have = (long long*)xmalloc(sizeof(long long) * n);
    cudaCheck(cudaMemcpy(have, e->moe.counts, sizeof(long long) * n, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemset(e->moe.counts, 0, sizeof(long long) * n));
    for (int l = 0, r = 0; l < c->num_layers; l++) {
        if (!c->sparse[l]) continue;
        if (l >= e->l0 && l < e->l1)
            for (int ex = 0; ex < c->num_experts; ex++)
                counts[(long)r * c->num_experts + ex] += (long)have[(long)l * c->num_experts + ex];
        r++;
    }
    free(have);
}

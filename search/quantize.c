// autoq quantize: a recipe applied to a checkpoint and written as llm-compressor saves it
// (README §10): compressed-tensors' "int-quantized" format, each quantized linear's weight as int8
// codes (out, in) and weight_scale (out, 1) in the checkpoint's dtype ("pack-quantized" int4 groups and
// "float-quantized" FP8 likewise), every other
// tensor byte for byte, config.json with its quantization_config, the other files (tokenizer,
// generation config) copied. Written into a fresh OUT.tmp.XXXXXX and swapped in (outdir_install), so no failure
// or signal leaves half a folder or a temporary one.
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "../datasets/data.h"
#include "../engine/args.h"
#include "../engine/gpu.h"
#include "../engine/input.h"
#include "../engine/util.h"
#include "../kernels/quant_math.h"
#include "../scoring/quantizer.h"
#include "quantize.h"
#include "kv_scales.h"
#include "recipe.h"

typedef struct {
    const Model* m;
    const int* choice;  // (n_linears) format index or -1
    int8_t** codes;     // (n_linears) (out, in) for chosen linears
    float** scales;     // (n_linears) (out) in the checkpoint's dtype's values
    DType* sdtype;      // (n_linears) the dtype of the source weight, which the scale takes
    const Format* fmts; // the recipe's formats, choice[i]'s
    // (2 num_layers) each full-attention layer's k_scale and v_scale (an E4M3 KV cache), or NULL (kv_scales.h)
    const float* kv_scale;
    float* in_gscale; // (n_linears) NVFP4 inputs: input_global_scale, 2688 / the calibrated input amax
} Quantized;

// The folder --out goes in (never empty: outdir_check refused an empty --out).
static char* out_parent(const char* out) {
    const char* slash = strrchr(out, '/');
    if (!slash) return xstrdup(".");
    if (slash == out) return xstrdup("/");
    char* parent = xstrdup(out);
    parent[slash - out] = 0;
    return parent;
}

// Every format the recipe uses must hold what int-quantized stores: integer per-channel weights.
static void check_formats(const char* recipe, const Format* fmts, int nf, const Model* m, const int* choice) {
    for (int k = 0; k < nf; k++) {
        int used = 0;
        for (int i = 0; i < m->n_linears; i++) used |= choice[i] == k;
        if (!used) continue;
        if (!fmts[k].w_enable)
            fail_input(
                "%s: formats[%d] ('%s') has no weight quantizer, which a compressed-tensors int-quantized "
                "checkpoint needs",
                recipe, k, fmts[k].name);
        if (!quantize_writable(&fmts[k]))
            fail_input(
                "%s: formats[%d] ('%s'): autoq quantize writes integer per-channel weights with integer "
                "per-token or no input quantization (int-quantized), int4 groups of 128 with FP8 per-token or "
                "no "
                "inputs (pack-quantized), FP8 per-channel weights (float-quantized) and NVFP4 "
                "(nvfp4-pack-quantized); MXFP4 is not written yet",
                recipe, k, fmts[k].name);
        // the weights are stored exactly as scored (their scales in the scores' numerics); a serving engine
        // quantizes the inputs with compressed-tensors' own numerics
        Format in_only = fmts[k];
        in_only.w_enable = 0;
        char note[512];
        if (export_numerics_note(&in_only, 1, note, sizeof(note)) > 0)
            warn_msg(
                "%s: formats[%d] ('%s') has ModelOpt numerics: the weights are stored as scored (scales "
                "amax/%d), but compressed-tensors quantizes the inputs with its own: %s; quantize a recipe "
                "scored with --numerics compressed-tensors to deploy what was scored",
                recipe, k, fmts[k].name, (1 << (fmts[k].w.bits - 1)) - 1, note);
    }
}

int quantize_scale_cols(QuantSpec q, int in) { return q.block ? (in + q.block - 1) / q.block : 1; }

// One stored scale from the amax of its row or group, in the scores' numerics: integers amax / 7 (ModelOpt)
// or amax / 7.5 (compressed-tensors), and so on (qm_int_scale); FP8 amax / 448; 0 for an all-zero block.
static float stored_scale(float amax, QuantSpec q) {
    if (q.kind == QUANT_FP8_E4M3) return amax > QUANT_AMAX_MIN ? amax / 448.0f : 0.0f;
    return quant_scale(amax, q);
}

int quantize_is_nvfp4(QuantSpec q) {
    return q.kind == QUANT_FP4_E2M1 && q.scale == QSCALE_E4M3 && q.block == 16;
}

// NVFP4 (README §4, §10): block scales s_b = e4m3(min(amax_b / (6 g), 448)) under g = amax / 2688 (amax: the
// fused unit's, nvfp4_group_amax); the checkpoint stores s_b (E4M3) and compressed-tensors' weight_global_scale
// G = 1 / g, and loads the weight as e2m1 x (s_b / G). scales = (out, in / 16) s_b values, then G.
static void nvfp4_scales(float* sc, const float* w, int out, int in, float amax) {
    float g = qm_nvfp4_global(amax), G = amax > QUANT_AMAX_MIN ? 1.0f / g : 1.0f;
    int ng = quantize_scale_cols((QuantSpec){.block = 16}, in);
#pragma omp parallel for
    for (int r = 0; r < out; r++)
        for (int b = 0; b < ng; b++) {
            float ab = 0.0f;
            for (int j = b * 16; j < in && j < (b + 1) * 16; j++) ab = fmaxf(ab, fabsf(w[(size_t)r * in + j]));
            sc[(size_t)r * ng + b] =
                amax > QUANT_AMAX_MIN ? fp8_e4m3_round(fminf(ab / (6.0f * g), 448.0f)) : 0.0f;
        }
    sc[(size_t)out * ng] = G;
}

// The unit a serving engine fuses a linear into (q/k/v, gate/up of one MLP or expert, the Gated DeltaNet's
// in_proj_qkv + z and b + a): 0 for a linear fused with nothing.
static int fused_unit(int kind) {
    switch (kind) {
    case LIN_Q:
    case LIN_K:
    case LIN_V:
        return 1;
    case LIN_GATE:
    case LIN_UP:
        return 2;
    case LIN_SH_GATE:
    case LIN_SH_UP:
        return 3;
    case LIN_GDN_QKV:
    case LIN_GDN_Z:
        return 4;
    case LIN_GDN_B:
    case LIN_GDN_A:
        return 5;
    default:
        return 0;
    }
}

static float weight_amax(const Model* m, int i) {
    float* tmp;
    const float* w = model_linear_f32(m, i, &tmp);
    float a = 0.0f;
    for (size_t k = 0; k < (size_t)m->linears[i].out * m->linears[i].in; k++) a = fmaxf(a, fabsf(w[k]));
    free(tmp);
    return a;
}

// NVFP4 global amax of linear i: the largest over the siblings fused with it that take NVFP4 too, since a
// fused module has one weight_global_scale (vLLM takes the max of its shards' and llm-compressor sets them
// equal, the smallest global scale): every sibling's block scales are then relative to the same g.
static float nvfp4_group_amax(const Model* m, const Format* fmts, const int* choice, int i) {
    const Linear* l = &m->linears[i];
    int u = fused_unit(l->kind);
    float a = weight_amax(m, i);
    for (int j = m->lin0[l->layer]; u && j < m->lin0[l->layer + 1]; j++) {
        const Linear* o = &m->linears[j];
        if (j != i && fused_unit(o->kind) == u && o->expert == l->expert && choice[j] >= 0 &&
            quantize_is_nvfp4(fmts[choice[j]].w))
            a = fmaxf(a, weight_amax(m, j));
    }
    return a;
}

void quantize_scales(float** scales, const Model* m, const Format* fmts, const int* choice) {
    for (int i = 0; i < m->n_linears; i++) {
        if (choice[i] < 0) continue;
        const Linear* l = &m->linears[i];
        QuantSpec q = fmts[choice[i]].w;
        if (quantize_is_nvfp4(q)) {
            scales[i] = xmalloc(sizeof(float) * ((size_t)l->out * quantize_scale_cols(q, l->in) + 1));
            float* tmp;
            nvfp4_scales(scales[i], model_linear_f32(m, i, &tmp), l->out, l->in,
                         nvfp4_group_amax(m, fmts, choice, i));
            free(tmp);
            continue;
        }
        char name[200];
        const StTensor* t = model_weight_tensor(m, i, name, sizeof(name));
        int bf16 = t && t->dtype == DT_BF16;
        int ng = quantize_scale_cols(q, l->in), bs = q.block ? q.block : l->in;
        scales[i] = xmalloc(sizeof(float) * l->out * ng);
        float* tmp;
        const float* w = model_linear_f32(m, i, &tmp);
#pragma omp parallel for
        for (int r = 0; r < l->out; r++)
            for (int g = 0; g < ng; g++) {
                float amax = 0.0f;
                for (int j = g * bs; j < l->in && j < (g + 1) * bs; j++)
                    amax = fmaxf(amax, fabsf(w[(size_t)r * l->in + j]));
                float sc = stored_scale(amax, q);
                scales[i][(size_t)r * ng + g] = bf16 ? bf16_to_f32(f32_to_bf16(sc)) : sc;
            }
        free(tmp);
    }
}

// The E4M3 byte of v, a value e4m3() returned (OCP "fn": bias 7, subnormals k 2^-9).
static uint8_t e4m3_byte(float v) {
    uint8_t sign = v < 0 ? 0x80 : 0;
    float a = fabsf(v);
    if (a == 0.0f) return sign;
    int e;
    frexpf(a, &e); // a = f 2^e, f in [0.5, 1)
    e -= 1;        // a = (1 + m/8) 2^e
    if (e < -6) return sign | (uint8_t)lrintf(a * 512.0f);
    int mant = (int)lrintf((a / ldexpf(1.0f, e) - 1.0f) * 8.0f);
    return sign | (uint8_t)((e + 7) << 3) | (uint8_t)mant;
}

static float e4m3_value(uint8_t b) {
    int e = (b >> 3) & 15, mant = b & 7;
    float a = e ? ldexpf(1.0f + mant / 8.0f, e - 7) : ldexpf((float)mant, -9);
    return b & 0x80 ? -a : a;
}

void quantize_codes(int8_t* codes, const float* w, int out, int in, const float* sc, QuantSpec q, int bf) {
    int ng = quantize_scale_cols(q, in), bs = q.block ? q.block : in;
    if (quantize_is_nvfp4(q)) { // codes 2 x the E2M1 value (-12 .. 12), on the scale the checkpoint loads
        float G = sc[(size_t)out * ng];
#pragma omp parallel for
        for (int r = 0; r < out; r++)
            for (int j = 0; j < in; j++) {
                size_t k = (size_t)r * in + j;
                float s = sc[(size_t)r * ng + j / 16] / G;
                codes[k] = (int8_t)(s > 0 ? 2.0f * fp4_e2m1_round(w[k] / s) : 0.0f);
            }
        return;
    }
    float lo = 0, hi = 0;
    if (q.kind == QUANT_INT) quant_bounds(q, &lo, &hi);
#pragma omp parallel for
    for (int r = 0; r < out; r++)
        for (int j = 0; j < in; j++) {
            size_t k = (size_t)r * in + j;
            float s = sc[(size_t)r * ng + j / bs], c = 0.0f;
            // as compressed-tensors runs it on the checkpoint's own dtype: a bf16 weight over a bf16
            // scale is a bf16 quotient, rounded before the rounding
            float x = s > 0 ? w[k] / s : 0.0f;
            if (bf) x = bf16_to_f32(f32_to_bf16(x));
            if (q.kind == QUANT_FP8_E4M3) {
                codes[k] = (int8_t)e4m3_byte(fp8_e4m3_round(fminf(fmaxf(x, -448.0f), 448.0f)));
                continue;
            }
            c = rintf(x);
            codes[k] = (int8_t)(c < lo ? lo : c > hi ? hi : c);
        }
}

void quantize_dequant(float* wq, const int8_t* codes, int out, int in, const float* sc, QuantSpec q, int bf) {
    int ng = quantize_scale_cols(q, in), bs = q.block ? q.block : in;
    if (quantize_is_nvfp4(q)) { // compressed-tensors: e2m1 x (weight_scale / weight_global_scale), to dtype
        float G = sc[(size_t)out * ng];
#pragma omp parallel for
        for (int r = 0; r < out; r++)
            for (int j = 0; j < in; j++) {
                size_t k = (size_t)r * in + j;
                float v = 0.5f * (float)codes[k] * (sc[(size_t)r * ng + j / 16] / G);
                wq[k] = bf ? bf16_to_f32(f32_to_bf16(v)) : v;
            }
        return;
    }
#pragma omp parallel for
    for (int r = 0; r < out; r++)
        for (int j = 0; j < in; j++) {
            size_t k = (size_t)r * in + j;
            float c = q.kind == QUANT_FP8_E4M3 ? e4m3_value((uint8_t)codes[k]) : (float)codes[k];
            float v = c * sc[(size_t)r * ng + j / bs]; // compressed-tensors: code.to(dtype) * scale
            wq[k] = bf ? bf16_to_f32(f32_to_bf16(v)) : v;
        }
}

// Whether linear i's checkpoint tensor is bf16 (its scales, quotients and products are then bf16).
static int weight_bf16(const Model* m, int i) {
    char name[200];
    const StTensor* t = model_weight_tensor(m, i, name, sizeof(name));
    return t && t->dtype == DT_BF16;
}

void quantize_deployed(float** wq, const Model* m, const Format* fmts, const int* choice) {
    float** sc = xcalloc(m->n_linears, sizeof(float*));
    int* ch = xmalloc(sizeof(int) * m->n_linears);
    for (int i = 0; i < m->n_linears; i++)
        ch[i] =
            choice[i] >= 0 && fmts[choice[i]].w_enable && quantize_writable(&fmts[choice[i]]) ? choice[i] : -1;
    quantize_scales(sc, m, fmts, ch);
    for (int i = 0; i < m->n_linears; i++) {
        if (ch[i] < 0) continue;
        const Linear* l = &m->linears[i];
        int bf = weight_bf16(m, i);
        int8_t* codes = xmalloc((size_t)l->out * l->in);
        float* tmp;
        quantize_codes(codes, model_linear_f32(m, i, &tmp), l->out, l->in, sc[i], fmts[ch[i]].w, bf);
        free(tmp);
        wq[i] = xmalloc(sizeof(float) * (size_t)l->out * l->in);
        quantize_dequant(wq[i], codes, l->out, l->in, sc[i], fmts[ch[i]].w, bf);
        free(codes), free(sc[i]);
    }
    free(sc), free(ch);
}

void quantize_round_deployed(float** wq, const Model* m) {
    for (int i = 0; i < m->n_linears; i++) {
        if (!wq[i] || !weight_bf16(m, i)) continue;
        size_t n = (size_t)m->linears[i].out * m->linears[i].in;
        for (size_t k = 0; k < n; k++) wq[i][k] = bf16_to_f32(f32_to_bf16(wq[i][k]));
    }
}

int quantize_writable(const Format* f) {
    if (!f->w_enable) return 0;
    QuantSpec w = f->w, in = f->in;
    int fp8_tokens = in.kind == QUANT_FP8_E4M3 && in.block == 0;
    if (quant_is_int_rows(w)) return !f->in_enable || quant_is_int_rows(in); // int-quantized
    if (w.kind == QUANT_INT && w.bits == 4 && w.block == 128) return !f->in_enable || fp8_tokens; // pack
    if (w.kind == QUANT_FP8_E4M3 && w.block == 0) return !f->in_enable || fp8_tokens; // float-quantized
    if (quantize_is_nvfp4(w)) return !f->in_enable || quantize_is_nvfp4(in);          // nvfp4-pack-quantized
    return 0;
}

// Integer weights packed into int32 words (pack-quantized): int4 groups, and every integer weight-only
// format, as compressed-tensors infers it (its int-quantized compressor takes only schemes with input
// activations). transformers 5.17 loads per-expert MoE weights only packed (or FP8): its
// DecompressExperts reads weight_packed / weight_shape.
static int packed_fmt(const Format* f) { return f->w.kind == QUANT_INT && (f->w.block || !f->in_enable); }

// The compressed-tensors format a writable format is stored in.
static const char* ct_format(const Format* f) {
    if (quantize_is_nvfp4(f->w)) return "nvfp4-pack-quantized";
    if (f->w.kind == QUANT_FP8_E4M3) return "float-quantized";
    return packed_fmt(f) ? "pack-quantized" : "int-quantized";
}

// Whether source tensor t is a fused experts tensor, which the checkpoint stores per expert instead.
static int fused_experts(const StTensor* t) {
    size_t n = strlen(t->name);
    const char* a = ARCH_EXPERTS_GROUP ".gate_up_proj";
    const char* b = ARCH_EXPERTS_GROUP ".down_proj";
    return t->ndim == 3 && ((n > strlen(a) && !strcmp(t->name + n - strlen(a), a)) ||
                            (n > strlen(b) && !strcmp(t->name + n - strlen(b), b)));
}

static void quantize_weights(Quantized* z, const Format* fmts, const Quantizer* q, const TokenIds* ids) {
    const Model* m = z->m;
    for (int i = 0; i < m->n_linears; i++) {
        if (z->choice[i] < 0) continue;
        char name[200];
        const StTensor* t = model_weight_tensor(m, i, name, sizeof(name));
        if (!t || (t->dtype != DT_BF16 && t->dtype != DT_F32))
            fail_input(
                "%s: %s must be a BF16 or F32 tensor to be quantized (llm-compressor stores its scale in "
                "the weight's dtype)",
                m->dir, name);
        z->sdtype[i] = t->dtype;
    }
    quantize_scales(z->scales, m, fmts, z->choice);
    float** wq = xcalloc(m->n_linears, sizeof(float*));
    if (q->kind == QUANTIZER_GPTQ) {
        Quantizer qs = *q;
        qs.scales = z->scales;
        qs.ckpt_scales = 1;
        qs.codes = z->codes; // the GPU's codes come straight back
        gptq_recipe(wq, m, ids, fmts, z->choice, &qs);
    }
    for (int i = 0; i < m->n_linears; i++) {
        if (z->choice[i] < 0 || z->codes[i]) continue;
        const Linear* l = &m->linears[i];
        QuantSpec qw = fmts[z->choice[i]].w;
        z->codes[i] = xmalloc((size_t)l->out * l->in);
        if (wq[i]) { // GPTQ's values are exactly code * scale (integer per-channel formats only)
            for (int r = 0; r < l->out; r++) {
                float sc = z->scales[i][r];
                for (int j = 0; j < l->in; j++) {
                    size_t k = (size_t)r * l->in + j;
                    z->codes[i][k] = (int8_t)(sc > 0 ? rintf(wq[i][k] / sc) : 0.0f);
                }
            }
            free(wq[i]);
            continue;
        }
        float* tmp = NULL;
        quantize_codes(z->codes[i], model_linear_f32(m, i, &tmp), l->out, l->in, z->scales[i], qw,
                       z->sdtype[i] == DT_BF16);
        free(tmp);
    }
    free(wq);
}

// NVFP4 inputs take one static global scale per linear in a served checkpoint (input_global_scale, as
// llm-compressor's static_minmax observer calibrates it): 2688 / the largest |x| of the linear's input over
// every calibration token of the unquantized model. (autoq's scores and eval use each token's own amax, §4.)
static void nvfp4_input_scales(Quantized* z, const TokenIds* ids) {
    const Model* m = z->m;
    int L = m->c.num_layers, T = ids->t;
    float* amax = xcalloc(m->n_linears, sizeof(float));
    RunState s;
    run_init(&s, m, T, 1);
    for (int w = 0; w < ids->n; w++) {
        model_forward(m, &s, ids->ids + (long)w * T, NULL);
        for (int i = 0; i < m->n_linears; i++) {
            if (z->choice[i] < 0 || !z->fmts[z->choice[i]].in_enable ||
                !quantize_is_nvfp4(z->fmts[z->choice[i]].in))
                continue;
            const Linear* l = &m->linears[i];
            const float* x = model_linear_input(&s, l);
            for (size_t k = 0; k < (size_t)T * l->in; k++) amax[i] = fmaxf(amax[i], fabsf(x[k]));
        }
    }
    (void)L;
    for (int i = 0; i < m->n_linears; i++)
        z->in_gscale[i] = amax[i] > QUANT_AMAX_MIN ? 2688.0f / amax[i] : 1.0f;
    run_free(&s, m);
    free(amax);
}

// ---- the compressed-tensors checkpoint ----

static json_t* qargs(QuantSpec q, const char* strategy, int dynamic, const char* observer,
                     const char* actorder) {
    json_t* gs = q.block ? json_integer(q.block) : json_null();
    return json_pack("{s:o,s:n,s:b,s:o,s:i,s:o,s:{},s:n,s:s,s:b,s:s,s:n}", "actorder",
                     actorder ? json_string(actorder) : json_null(), "block_structure", "dynamic", dynamic,
                     "group_size", gs, "num_bits", q.bits, "observer",
                     observer ? json_string(observer) : json_null(), "observer_kwargs", "scale_dtype",
                     "strategy", strategy, "symmetric", 1, "type", q.kind == QUANT_INT ? "int" : "float",
                     "zp_dtype");
}

// NVFP4's QuantizationArgs as compressed-tensors' NVFP4 preset spells them (E4M3 scales under a global one;
// inputs dynamic per block under the calibrated static global scale).
static json_t* qargs_nvfp4(int input) {
    return json_pack("{s:n,s:n,s:o,s:i,s:i,s:s,s:{},s:s,s:s,s:b,s:s,s:s}", "actorder", "block_structure",
                     "dynamic", input ? json_string("local") : json_false(), "group_size", 16, "num_bits", 4,
                     "observer", input ? "static_minmax" : "memoryless_minmax", "observer_kwargs",
                     "scale_dtype", "float8_e4m3fn", "strategy", "tensor_group", "symmetric", 1, "type",
                     "float", "zp_dtype", "float8_e4m3fn");
}

// quantization_config as compressed-tensors writes it: a config group per format used, targets
// 'Linear' when one format covers every quantized linear, else the exact names as "re:" patterns;
// ignore: lm_head and every linear kept in bf16.
static json_t* quant_config(const Quantized* z, const Format* fmts, int nf, const Quantizer* q) {
    const Model* m = z->m;
    const char* order = q->kind == QUANTIZER_RTN            ? NULL
                        : q->gptq.order == GPTQ_ORDER_NONE  ? NULL
                        : q->gptq.order == GPTQ_ORDER_GROUP ? "group"
                                                            : "static";
    int used[MAX_FORMATS] = {0}, nu = 0;
    for (int i = 0; i < m->n_linears; i++)
        if (z->choice[i] >= 0 && !used[z->choice[i]]++) nu++;
    json_t* groups = json_object();
    const char* fmt = NULL; // the checkpoint's format: its groups', or mixed-precision
    for (int k = 0, gi = 0; k < nf; k++) {
        if (!used[k]) continue;
        json_t* targets = json_array();
        if (nu == 1)
            json_array_append_new(targets, json_string("Linear"));
        else
            for (int i = 0, last = -1; i < m->n_linears; i++)
                if (z->choice[i] == k) {
                    // a layer's experts as one pattern, as the exports (and so llm-compressor's checkpoints)
                    // name them: thousands of per-expert patterns make compressed-tensors' matching take hours
                    const Linear* li = &m->linears[i];
                    const char* ex = li->expert >= 0 ? strstr(li->name, ARCH_EXPERTS_GROUP ".") : NULL;
                    if (ex && li->layer == last) continue;
                    char* re;
                    if (ex) {
                        char group[sizeof(li->name)];
                        snprintf(group, sizeof(group), "%.*s",
                                 (int)(ex - li->name + strlen(ARCH_EXPERTS_GROUP)), li->name);
                        re = recipe_regex_experts(group);
                        last = li->layer;
                    } else
                        re = recipe_regex_name(li->name);
                    char* t = xmalloc(strlen(re) + 4);
                    sprintf(t, "re:%s", re);
                    json_array_append_new(targets, json_string(t));
                    free(t), free(re);
                }
        const Format* f = &fmts[k];
        if (!fmt) fmt = ct_format(f);
        if (strcmp(fmt, ct_format(f))) fmt = "mixed-precision";
        int nv = quantize_is_nvfp4(f->w);
        json_t* g = json_pack(
            "{s:s,s:o,s:n,s:o,s:o}", "format", ct_format(f), "input_activations",
            !f->in_enable ? json_null()
            : nv          ? qargs_nvfp4(1)
                          : qargs(f->in, "token", 1, NULL, NULL),
            "output_activations", "targets", targets, "weights",
            nv ? qargs_nvfp4(0) : qargs(f->w, f->w.block ? "group" : "channel", 0, "memoryless_minmax", order));
        char name[32];
        snprintf(name, sizeof(name), "group_%d", gi++);
        json_object_set_new(groups, name, g);
    }
    // in module order, as compressed-tensors lists the linears it left alone: each layer's bf16 linears
    // (a sparse layer's experts, then its router and the shared expert's gate, nn.Linear modules that are
    // never candidates, README §5), lm_head last
    json_t* ignore = json_array();
    // a vision tower (never loaded, so its linears' names are unknown here) as one pattern, where
    // llm-compressor lists its linears by name: the same modules
    if (m->n_visual) json_array_append_new(ignore, json_string("re:^model\\.visual\\..*$"));
    for (int l = 0; l < m->c.num_layers; l++) {
        for (int i = m->lin0[l]; i < m->lin0[l + 1]; i++)
            if (z->choice[i] < 0) json_array_append_new(ignore, json_string(m->linears[i].name));
        if (!model_layer_sparse(m, l)) continue;
        char name[200];
        snprintf(name, sizeof(name), "%.32slayers.%d" ARCH_ROUTER, m->c.prefix, l);
        json_array_append_new(ignore, json_string(name));
        if (!m->c.shared_inter) continue;
        snprintf(name, sizeof(name), "%.32slayers.%d" ARCH_SHARED_GATE, m->c.prefix, l);
        json_array_append_new(ignore, json_string(name));
    }
    json_array_append_new(ignore, json_string("lm_head"));
    // an E4M3 KV cache: one static per-tensor scale each for K and V (the tensors k_scale, v_scale)
    json_t* kv = z->kv_scale ? json_pack("{s:i,s:s,s:b,s:s,s:b,s:n,s:n,s:n,s:n}", "num_bits", 8, "type",
                                         "float", "symmetric", 1, "strategy", "tensor", "dynamic", 0,
                                         "group_size", "block_structure", "actorder", "observer")
                             : json_null();
    return json_pack("{s:o,s:s,s:n,s:o,s:o,s:s,s:s,s:{},s:{},s:s}", "config_groups", groups, "format",
                     fmt ? fmt : "int-quantized", "global_compression_ratio", "ignore", ignore,
                     "kv_cache_scheme", kv, "quant_method", "compressed-tensors", "quantization_status",
                     "compressed", "sparsity_config", "transform_config", "version", "0.19.0");
}

// The linear whose weight tensor t is, if it is quantized; else -1.
static int quantized_linear(const Quantized* z, const StTensor* t) {
    size_t n = strlen(t->name);
    if (n < 7 || strcmp(t->name + n - 7, ".weight")) return -1;
    for (int i = 0; i < z->m->n_linears; i++)
        if (z->choice[i] >= 0 && strlen(z->m->linears[i].name) == n - 7 &&
            strncmp(z->m->linears[i].name, t->name, n - 7) == 0)
            return i;
    return -1;
}

// What the checkpoint holds, in order: each source tensor (src >= 0) as it is, or a linear (lin >= 0)
// as codes + scale when quantized, else as its bf16 weight (a fused expert's own slice).
typedef struct {
    int src, lin;
} Entry;

// The entries: every source tensor in order, a quantized linear's weight in its place; fused experts
// tensors give way to per-expert linears, as llm-compressor unfuses and saves them.
static Entry* entries(const Quantized* z, int* n) {
    const Model* m = z->m;
    const StCheckpoint* ck = &m->ck;
    Entry* e = xmalloc(sizeof(Entry) * (ck->n + m->n_linears + 1));
    int k = 0;
    for (int t = 0; t < ck->n; t++) {
        if (fused_experts(&ck->t[t])) continue;
        e[k++] = (Entry){t, quantized_linear(z, &ck->t[t])};
    }
    for (int i = 0; i < m->n_linears; i++) {
        char name[240];
        if (m->linears[i].expert < 0) continue;
        snprintf(name, sizeof(name), "%s.weight", m->linears[i].name);
        if (!st_find(ck, name)) e[k++] = (Entry){-1, i};
    }
    *n = k;
    return e;
}

static void header_add(json_t* hdr, const char* name, const char* dtype, int rows, int cols, size_t* off,
                       size_t bytes) {
    json_object_set_new(hdr, name,
                        json_pack("{s:s,s:[i,i],s:[I,I]}", "dtype", dtype, "shape", rows, cols, "data_offsets",
                                  (json_int_t)*off, (json_int_t)(*off + bytes)));
    *off += bytes;
}

// One entry's header records.
static void entry_header(json_t* hdr, const Quantized* z, Entry en, size_t* off) {
    const StCheckpoint* ck = &z->m->ck;
    if (en.lin < 0) {
        const StTensor* t = &ck->t[en.src];
        json_t* shape = json_array();
        for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        json_object_set_new(hdr, t->name,
                            json_pack("{s:s,s:o,s:[I,I]}", "dtype", st_dtype_name(t->dtype), "shape", shape,
                                      "data_offsets", (json_int_t)*off, (json_int_t)(*off + t->nbytes)));
        *off += t->nbytes;
        return;
    }
    const Linear* l = &z->m->linears[en.lin];
    char name[240], sname[248];
    snprintf(name, sizeof(name), "%s.weight", l->name);
    if (z->choice[en.lin] < 0) { // a fused expert kept in bf16: its slice, exact in bf16
        header_add(hdr, name, "BF16", l->out, l->in, off, (size_t)l->out * l->in * 2);
        return;
    }
    // the scale takes the source weight's dtype (BF16 or F32, checked by quantize_weights)
    DType d = z->sdtype[en.lin];
    QuantSpec q = z->fmts[z->choice[en.lin]].w;
    if (quantize_is_nvfp4(q)) { // nvfp4-pack-quantized: two E2M1 codes a byte, E4M3 block scales, globals
        snprintf(sname, sizeof(sname), "%s_packed", name);
        header_add(hdr, sname, "U8", l->out, l->in / 2, off, (size_t)l->out * (l->in / 2));
        snprintf(sname, sizeof(sname), "%s_scale", name);
        header_add(hdr, sname, "F8_E4M3", l->out, l->in / 16, off, (size_t)l->out * (l->in / 16));
        for (int k = 0; k < 1 + z->fmts[z->choice[en.lin]].in_enable; k++) {
            char gname[280]; // <linear>.weight_global_scale, then <linear>.input_global_scale
            snprintf(gname, sizeof(gname), "%s.%s_global_scale", l->name, k ? "input" : "weight");
            json_object_set_new(hdr, gname,
                                json_pack("{s:s,s:[i],s:[I,I]}", "dtype", "F32", "shape", 1, "data_offsets",
                                          (json_int_t)*off, (json_int_t)(*off + 4)));
            *off += 4;
        }
        return;
    }
    int ng = quantize_scale_cols(q, l->in), packed = packed_fmt(&z->fmts[z->choice[en.lin]]);
    if (packed) { // pack-quantized: 32 / bits codes an int32, the shape beside them
        int words = (int)(((long)l->in * q.bits + 31) / 32);
        snprintf(sname, sizeof(sname), "%s_packed", name);
        header_add(hdr, sname, "I32", l->out, words, off, (size_t)l->out * words * 4);
    } else {
        header_add(hdr, name, q.kind == QUANT_FP8_E4M3 ? "F8_E4M3" : "I8", l->out, l->in, off,
                   (size_t)l->out * l->in);
    }
    snprintf(sname, sizeof(sname), "%s_scale", name);
    header_add(hdr, sname, st_dtype_name(d), l->out, ng, off, (size_t)l->out * ng * (d == DT_BF16 ? 2 : 4));
    if (packed) {
        snprintf(sname, sizeof(sname), "%s_shape", name);
        json_object_set_new(hdr, sname,
                            json_pack("{s:s,s:[i],s:[I,I]}", "dtype", "I64", "shape", 2, "data_offsets",
                                      (json_int_t)*off, (json_int_t)(*off + 16)));
        *off += 16;
    }
}

static void entry_write(FILE* f, const Quantized* z, Entry en) {
    if (en.lin < 0) {
        const StTensor* t = &z->m->ck.t[en.src];
        fwrite(t->data, 1, t->nbytes, f);
        return;
    }
    const Linear* l = &z->m->linears[en.lin];
    size_t n = (size_t)l->out * l->in;
    if (z->choice[en.lin] < 0) {
        for (size_t j = 0; j < n; j++) {
            uint16_t b = f32_to_bf16(l->w[j]);
            fwrite(&b, 2, 1, f);
        }
        return;
    }
    QuantSpec q = z->fmts[z->choice[en.lin]].w;
    if (quantize_is_nvfp4(q)) { // pack_fp4_to_uint8: index | sign << 3, even column in the low nibble
        static const uint8_t idx[13] = {0, 1, 2, 3, 4, 0, 5, 0, 6, 0, 0, 0, 7}; // by |2 x value|
        const int8_t* c = z->codes[en.lin];
        for (size_t k = 0; k < n; k += 2) {
            uint8_t lo = idx[abs(c[k])] | (c[k] < 0) << 3, hi = idx[abs(c[k + 1])] | (c[k + 1] < 0) << 3;
            uint8_t b = lo | hi << 4;
            fwrite(&b, 1, 1, f);
        }
        int ng = quantize_scale_cols(q, l->in);
        for (size_t r = 0; r < (size_t)l->out * ng; r++) {
            uint8_t b = e4m3_byte(z->scales[en.lin][r]);
            fwrite(&b, 1, 1, f);
        }
        fwrite(&z->scales[en.lin][(size_t)l->out * ng], 4, 1, f); // weight_global_scale
        if (z->fmts[z->choice[en.lin]].in_enable) fwrite(&z->in_gscale[en.lin], 4, 1, f);
        return;
    }
    int packed = packed_fmt(&z->fmts[z->choice[en.lin]]), ng = quantize_scale_cols(q, l->in);
    if (packed) { // compressed-tensors' pack_to_int32: code + 2^(b-1), column c at bit b c of the row's words
        int b = q.bits, per = 32 / b, words = (int)(((long)l->in * b + 31) / 32);
        uint32_t mask = (1u << b) - 1;
        for (int r = 0; r < l->out; r++)
            for (int k = 0; k < words; k++) {
                uint32_t u = 0;
                for (int i = 0; i < per && per * k + i < l->in; i++)
                    u |= ((uint32_t)(z->codes[en.lin][(size_t)r * l->in + per * k + i] + (1 << (b - 1))) & mask)
                         << (b * i);
                fwrite(&u, 4, 1, f);
            }
    } else {
        fwrite(z->codes[en.lin], 1, n, f);
    }
    for (size_t r = 0; r < (size_t)l->out * ng; r++) {
        float s = z->scales[en.lin][r];
        uint16_t b = f32_to_bf16(s);
        if (z->sdtype[en.lin] == DT_BF16)
            fwrite(&b, 2, 1, f);
        else
            fwrite(&s, 4, 1, f);
    }
    if (packed) {
        int64_t shape[2] = {l->out, l->in};
        fwrite(shape, 8, 2, f);
    }
}

// The KV-cache scales last: `<layer>.self_attn.k_scale` and `v_scale`, F32 [1] (compressed-tensors' tensor
// strategy; vLLM reads any float dtype).
static void kv_scales_header(json_t* hdr, const Quantized* z, size_t* off) {
    const Model* m = z->m;
    for (int l = 0; z->kv_scale && l < m->c.num_layers; l++) {
        if (m->c.linear[l]) continue;
        for (int k = 0; k < 2; k++) {
            char name[240];
            snprintf(name, sizeof(name), "%slayers.%d.self_attn.%s", m->c.prefix, l, k ? "v_scale" : "k_scale");
            json_object_set_new(hdr, name,
                                json_pack("{s:s,s:[i],s:[I,I]}", "dtype", "F32", "shape", 1, "data_offsets",
                                          (json_int_t)*off, (json_int_t)(*off + 4)));
            *off += 4;
        }
    }
}

static void kv_scales_write(FILE* f, const Quantized* z) {
    for (int l = 0; z->kv_scale && l < z->m->c.num_layers; l++)
        if (!z->m->c.linear[l]) fwrite(z->kv_scale + 2 * l, 4, 2, f);
}

// One safetensors file of the entries. Returns its size.
static size_t write_safetensors(const char* path, const Quantized* z, int dry) {
    int n;
    Entry* en = entries(z, &n);
    json_t* hdr = json_object();
    json_object_set_new(hdr, "__metadata__", json_pack("{s:s}", "format", "pt"));
    size_t off = 0;
    for (int k = 0; k < n; k++) entry_header(hdr, z, en[k], &off);
    kv_scales_header(hdr, z, &off);
    char* text = json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(hdr);
    size_t hl = strlen(text), pad = (8 - hl % 8) % 8;
    size_t total = 8 + hl + pad + off;
    if (dry) {
        free(text), free(en);
        return total;
    }
    OutFile o;
    out_open(&o, path);
    uint64_t h64 = hl + pad;
    fwrite(&h64, 8, 1, o.f); // little-endian hosts only, as the reader
    fwrite(text, 1, hl, o.f);
    fwrite("        ", 1, pad, o.f);
    Progress p;
    progress_init(&p, "write", n);
    for (int k = 0; k < n; k++) {
        entry_write(o.f, z, en[k]);
        progress_step(&p, 1);
    }
    kv_scales_write(o.f, z);
    progress_end(&p);
    out_close(&o); // checks every write (a full disk fails here, the temporary file removed)
    free(text), free(en);
    return total;
}

static void write_config(const char* dir, const char* src_dir, json_t* qc) {
    char* src = path_join(src_dir, "config.json");
    json_t* c = input_json(src, "config.json", 0);
    if (!json_is_object(c)) fail_input("%s: not a JSON object", src);
    json_object_set(c, "quantization_config", qc);
    char* path = path_join(dir, "config.json");
    OutFile o;
    out_open(&o, path);
    json_dumpf(c, o.f, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    fputc('\n', o.f);
    out_close(&o);
    json_decref(c);
    free(src), free(path);
}

// Every other regular file of the model folder (tokenizer, generation config, chat template, ...).
static void copy_files(const char* dir, const char* src_dir) {
    DIR* d = opendir(src_dir);
    if (!d) fail_input("%s: %s", src_dir, strerror(errno));
    struct dirent* e;
    while ((e = readdir(d))) {
        const char* n = e->d_name;
        size_t len = strlen(n);
        if (n[0] == '.' || !strcmp(n, "config.json") || !strcmp(n, "model.safetensors.index.json") ||
            (len > 12 && !strcmp(n + len - 12, ".safetensors")))
            continue;
        char* from = path_join(src_dir, n);
        char why[160];
        int fd = input_open(from, (size_t)-1, 0, NULL, why, sizeof(why)); // never blocks on a FIFO
        if (fd < 0 && errno == EINVAL) { // not a regular file (a FIFO, a folder, ...): not copied
            free(from);
            continue;
        }
        if (fd < 0) fail_input("%s: %s", from, why);
        FILE* in = fdopen(fd, "rb");
        if (!in) fail_other("%s: fdopen: %s", from, strerror(errno));
        char* to = path_join(dir, n);
        OutFile o;
        out_open(&o, to);
        char buf[1 << 16];
        size_t k;
        while ((k = fread(buf, 1, sizeof(buf), in)) > 0) fwrite(buf, 1, k, o.f);
        if (ferror(in)) fail_other("%s: read failed", from);
        fclose(in);
        out_close(&o);
        free(from), free(to);
    }
    closedir(d);
}

// The recipe's KV-cache choice (README §10): E4M3 only. An NVFP4 KV cache has no compressed-tensors form a
// serving engine loads: vLLM's compressed-tensors loader takes per-tensor FP8 KV schemes only, and vLLM serves
// NVFP4 KV caches from ModelOpt checkpoints alone (README "Not done yet" names the sources). The checkpoint
// holds one KV-cache format for every full-attention layer (compressed-tensors' kv_cache_scheme), so a mixed
// choice is warned about. Returns the scales' storage (2 num_layers).
static float* kv_check(const char* recipe, const Model* m, const Format* fmts, int nf, int* kv,
                       int allow_partial) {
    recipe_read_kv(recipe, m, fmts, nf, kv, allow_partial);
    int full = 0, fp8 = 0;
    for (int l = 0; l < m->c.num_layers; l++) {
        full += !m->c.linear[l];
        if (kv[l] >= 0 && fmts[kv[l]].kvq.kind != QUANT_FP8_E4M3)
            fail_input("%s: %s chooses KV-cache format '%s': autoq quantize writes E4M3 KV caches (kv_fp8) "
                       "only. NVFP4 KV caches are not written: compressed-tensors 0.19's kv_cache_scheme can "
                       "hold one (strategy tensor_group, k/v global scales), but vLLM's compressed-tensors "
                       "loader refuses any KV scheme but per-tensor (vLLM main be696453, "
                       "vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py, "
                       "CompressedTensorsKVCacheMethod.validate_kv_cache_scheme), and vLLM takes an NVFP4 KV "
                       "cache only from a ModelOpt checkpoint (kv_cache_quant_algo NVFP4, k_proj.k_scale / "
                       "v_proj.v_scale = amax / 448: ModelOpt 0.47 "
                       "modelopt/torch/export/unified_export_hf.py; vLLM main 0024350b "
                       "vllm/utils/torch_utils.py get_kv_cache_quant_algo_string), a format autoq quantize "
                       "does not write; search --emit modelopt= writes the recipe for ModelOpt",
                       recipe, m->dir, fmts[kv[l]].name);
        fp8 += kv[l] >= 0;
    }
    if (fp8 < full)
        warn_msg("%s: %d of %d full-attention layers choose an E4M3 KV cache; the checkpoint's kv_cache_scheme "
                 "(one per model, as vLLM serves it) stores every layer's KV cache in E4M3",
                 recipe, fp8, full);
    return xcalloc(2 * m->c.num_layers, sizeof(float));
}

int cmd_quantize(Args* a) {
    const char* recipe = args_str(a, "--recipe"); // MODEL, --recipe, --out: required by the table (autoq.c)
    const char* out = args_str(a, "--out");       // and never an input or holding one (args_parse)
    int force = args_flag(a, "--force");
    int allow_partial = args_flag(a, "--allow-partial");
    DataOpts d;
    data_opts_parse(&d, a);
    Quantizer q;
    quantizer_parse(&q, a);
    const char* dev = args_str(a, "--device");
    const char* gpu_mem = args_str(a, "--gpu-memory");
    const char* dir = args_pos(a, 0);
    args_done(a);
    char* out_buf = xstrdup(out); // DIR/ names DIR: the temporary folder goes beside it
    for (size_t n = strlen(out_buf); n > 1 && out_buf[n - 1] == '/'; n--) out_buf[n - 1] = 0;
    out = out_buf;
    if (q.kind == QUANTIZER_GPTQ && !d.path)
        fail_input("quantize: --quantizer gptq needs --data (calibration)");
    outdir_check(out, force, 0, "quantize: --out");
    // the weights stay in the checkpoint's mapping (each linear converted when its turn comes) unless
    // the CPU's GPTQ runs the model, or experts are fused in the checkpoint (model_load slices them):
    // decided from the config, so that the checkpoint is read and checked once
    Config cfg;
    config_load(&cfg, dir);
    quantizer_set_device(&q, dev, &cfg, dir, "quantize");
    quantizer_set_gpu_memory(&q, gpu_mem, "quantize");
    Model m;
    int uses_kv = kv_recipe_uses_kv(recipe); // its scales are calibrated on the CPU engine: fp32 weights
    if (uses_kv && !d.path)
        fail_input("quantize: %s chooses a KV-cache format, whose scales need --data", recipe);
    int loaded = (q.kind == QUANTIZER_GPTQ && !q.use_gpu) || cfg.n_sparse || uses_kv, nv_in = 0;
    if (loaded)
        model_load(&m, dir);
    else
        model_open(&m, dir);
    Format fmts[MAX_FORMATS];
    int* choice = xmalloc(sizeof(int) * m.n_linears);
    int nf = recipe_read(recipe, &m, fmts, choice, allow_partial);
    check_formats(recipe, fmts, nf, &m, choice);
    int* kv = xmalloc(sizeof(int) * m.c.num_layers);
    float* kv_scale = uses_kv ? kv_check(recipe, &m, fmts, nf, kv, allow_partial) : NULL;
    nv_in = 0;
    for (int i = 0; i < m.n_linears; i++) {
        if (choice[i] < 0 || !fmts[choice[i]].in_enable || !quantize_is_nvfp4(fmts[choice[i]].in)) continue;
        if (m.linears[i].expert >= 0)
            fail_input("%s: formats[%d] ('%s'): NVFP4 inputs of experts (%s) are not written yet (their static "
                       "input_global_scale is calibrated over the tokens routed to each expert)",
                       recipe, choice[i], fmts[choice[i]].name, m.linears[i].name);
        nv_in = 1;
    }
    if (nv_in && !d.path)
        fail_input("quantize: NVFP4 inputs need --data: the checkpoint stores each linear's static "
                   "input_global_scale, calibrated on it");
    if (nv_in && !loaded) { // the calibration forward runs the fp32 model (same linears, same order)
        model_free(&m);
        model_load(&m, dir);
    }
    TokenIds ids = {0};
    if (q.kind == QUANTIZER_GPTQ || nv_in || uses_kv) {
        d.model_dir = dir;
        d.vocab = m.c.vocab_size;
        d.eos = m.c.eos_token_id;
        if (d.seq_len) model_check_seq_len(&m, d.seq_len, "--seq-len");
        data_load(&ids, &d);
        model_check_seq_len(&m, ids.t, d.path);
    }
    Quantized z = {&m,
                   choice,
                   xcalloc(m.n_linears, sizeof(int8_t*)),
                   xcalloc(m.n_linears, sizeof(float*)),
                   xcalloc(m.n_linears, sizeof(DType)),
                   fmts,
                   kv_scale,
                   xcalloc(m.n_linears, sizeof(float))};
    if (kv_scale) { // calibrated on the unquantized model, as the scores' K and V
        kv_calibrate(&m, &ids, kv_scale);
        for (int l = 0; l < 2 * m.c.num_layers; l++) kv_scale[l] = kv_fp8_scale(kv_scale[l]);
    }
    if (nv_in) nvfp4_input_scales(&z, &ids);
    // room for the weights before any compute (a full disk later still fails cleanly)
    size_t need = write_safetensors(NULL, &z, 1);
    struct statvfs sv;
    char* parent = out_parent(out);
    if (statvfs(parent, &sv) == 0 && (uint64_t)sv.f_bavail * sv.f_frsize < need + (need >> 6))
        fail_input("quantize: --out %s: the checkpoint needs %.2f GiB but its file system has %.2f GiB free",
                   out, need / 1073741824.0, (double)sv.f_bavail * sv.f_frsize / 1073741824.0);
    free(parent);
    double t0 = time_now();
    quantize_weights(&z, fmts, &q, &ids);
    char* tmp = outdir_begin(out); // removed with its files on any failure or signal
    char* st = path_join(tmp, "model.safetensors");
    size_t bytes = write_safetensors(st, &z, 0);
    // Test hook: a write failing after the weights, as a full disk would (tests/test_quantize.sh).
    if (getenv("AUTOQ_TEST_FAIL_WRITE")) fail_other("%s: write failed (AUTOQ_TEST_FAIL_WRITE)", tmp);
    if (getenv("AUTOQ_TEST_SIGNAL_WRITE")) raise(SIGTERM); // and a signal there (tests/test_harden2.sh)
    json_t* qc = quant_config(&z, fmts, nf, &q);
    write_config(tmp, dir, qc);
    copy_files(tmp, dir);
    outdir_install(tmp, out);
    int nq = 0;
    for (int i = 0; i < m.n_linears; i++) nq += choice[i] >= 0;
    info_msg("quantize: %d of %d linears quantized (%s), %.1f MiB in %s, %.2fs", nq, m.n_linears,
             quantizer_name(&q), bytes / 1048576.0, out, time_now() - t0);
    json_decref(qc);
    for (int i = 0; i < m.n_linears; i++) free(z.codes[i]), free(z.scales[i]);
    free(z.codes), free(z.scales), free(z.sdtype), free(z.in_gscale), free(st), free(tmp), free(choice),
        free(out_buf);
    free(kv), free(kv_scale);
    if (ids.ids) token_ids_free(&ids);
    model_free(&m);
    return 0;
}

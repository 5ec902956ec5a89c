// The search's exports for other tools: llm-compressor's GPTQModifier recipe (YAML, through
// libyaml) and ModelOpt's quant_cfg JSON, with the fnmatch-to-regex translation they need
// (README §8).
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "../engine/arch.h"
#include "../engine/util.h"
#include "../scoring/groups.h"
#include "../kernels/gptq.h"
#include "recipe.h"

// ---- regular expressions for llm-compressor's `re:` entries (Python `re` syntax) ----
typedef struct {
    char* s;
    size_t n, cap;
} Buf;

static void buf_putc(Buf* b, char c) {
    if (b->n + 2 > b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        b->s = xrealloc(b->s, b->cap);
    }
    b->s[b->n++] = c;
    b->s[b->n] = 0;
}

static void buf_puts(Buf* b, const char* s) {
    while (*s) buf_putc(b, *s++);
}

// One character of a literal part: what Python's re.escape escapes gets a backslash; control
// characters become \xHH, which Python and PCRE read alike and YAML shows as plain text.
static void re_literal(Buf* b, unsigned char c, const char* special) {
    if (c < 0x20 || c == 0x7f) {
        char hex[8];
        snprintf(hex, sizeof(hex), "\\x%02x", c);
        buf_puts(b, hex);
        return;
    }
    if (strchr(special, c)) buf_putc(b, '\\');
    buf_putc(b, (char)c);
}

#define RE_SPECIAL "()[]{}?*+-|^$\\.&~# "
#define RE_SET_SPECIAL "\\]^-[&~|"

// Length of the UTF-8 sequence at p and its code point (a stray byte counts as itself).
static int utf8_char(const unsigned char* p, unsigned* cp) {
    int n = p[0] < 0x80 ? 1 : p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc0 ? 2 : 1;
    for (int i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80) n = 1;
    *cp = n == 1 ? p[0] : p[0] & (0xff >> (n + 1));
    for (int i = 1; i < n; i++) *cp = (*cp << 6) | (p[i] & 0x3f);
    return n;
}

static void re_set_char(Buf* b, const unsigned char* p, int n) {
    if (n == 1)
        re_literal(b, p[0], RE_SET_SPECIAL);
    else
        for (int i = 0; i < n; i++) buf_putc(b, (char)p[i]);
}

// A bracket expression starting at p ('['); returns the characters it used, or 0 when it never
// closes (then '[' is a literal, as in fnmatch). Like Python's fnmatch.translate: '!' (and, as
// glibc's fnmatch, '^') negates, a leading ']' is literal, reversed ranges are dropped.
static int re_set(Buf* b, const char* pat) {
    const unsigned char* p = (const unsigned char*)pat + 1;
    int neg = *p == '!' || *p == '^';
    if (neg) p++;
    const unsigned char* q = p;
    if (*q == ']') q++;
    while (*q && *q != ']') q++;
    if (!*q) return 0;
    Buf in = {0};
    for (const unsigned char* r = p; r < q;) {
        unsigned lo, hi;
        int n = utf8_char(r, &lo);
        if (r + n + 1 < q && r[n] == '-') {
            int m = utf8_char(r + n + 1, &hi);
            if (lo <= hi) {
                re_set_char(&in, r, n);
                buf_putc(&in, '-');
                re_set_char(&in, r + n + 1, m);
            }
            r += n + 1 + m;
        } else {
            re_set_char(&in, r, n);
            r += n;
        }
    }
    if (!in.n)
        buf_puts(b, neg ? "." : "(?!)"); // an empty set: anything, or nothing
    else {
        buf_puts(b, neg ? "[^" : "[");
        buf_puts(b, in.s);
        buf_putc(b, ']');
    }
    free(in.s);
    return (int)(q - (const unsigned char*)pat) + 1;
}

char* recipe_regex_glob(const char* glob) {
    Buf b = {0};
    buf_putc(&b, '^');
    for (const char* p = glob; *p;) {
        int used;
        if (*p == '*') {
            if (p == glob || p[-1] != '*') buf_puts(&b, ".*"); // a run of stars is one
            p++;
        } else if (*p == '?') {
            buf_putc(&b, '.');
            p++;
        } else if (*p == '[' && (used = re_set(&b, p)) > 0) {
            p += used;
        } else {
            re_literal(&b, (unsigned char)*p++, RE_SPECIAL);
        }
    }
    buf_putc(&b, '$');
    return b.s;
}

char* recipe_regex_name(const char* name) {
    Buf b = {0};
    buf_putc(&b, '^');
    for (const char* p = name; *p; p++) re_literal(&b, (unsigned char)*p, RE_SPECIAL);
    buf_putc(&b, '$');
    return b.s;
}

// ---- exports ----
// Whether group g is a mixture-of-experts layer's experts group whose members are exactly
// "<group>.N.{gate,up,down}_proj". The exports then name the group once instead of its 3 E
// linears: ModelOpt keeps transformers 5's fused experts as one module whose per-expert quantizers
// (gate_up_proj_weight_quantizers.N, down_proj_weight_quantizers.N) no linear's name matches,
// and llm-compressor tries every ignore pattern on every linear, recompiling each regex once
// there are more than 512 of them (hours for a model with thousands of experts).
static int experts_group(const ScoreTable* t, int g) {
    const char* name = t->gname[g];
    size_t n = strlen(name), k = strlen(ARCH_EXPERTS_GROUP);
    if (n < k || strcmp(name + n - k, ARCH_EXPERTS_GROUP) != 0) return 0;
    const char* m = t->gmembers[g];
    while (*m) {
        if (strncmp(m, name, n) != 0 || m[n] != '.') return 0;
        const char* p = m + n + 1;
        const char* digits = p;
        while (*p >= '0' && *p <= '9') p++;
        if (p == digits || *p != '.') return 0;
        p++;
        size_t len = strcspn(p, ",");
        int known = 0;
        for (int x = 0; x < 3; x++)
            known |= len == strlen(arch_expert_proj[x]) && !strncmp(p, arch_expert_proj[x], len);
        if (!known) return 0;
        m = p + len + (p[len] == ',');
    }
    return 1;
}

// Calls fn for every linear of groups with the given choice (-1: kept bf16 incl. disabled), or
// once with the group's name and experts = 1 for an experts group (experts_group).
static void for_members(const ScoreTable* t, const Solution* s, int want,
                        void (*fn)(const char*, int experts, void*), void* ctx) {
    for (int g = 0; g < t->ng; g++) {
        int ch = t->disabled[g] ? -2 : s->sel[g];
        if (want == -1 ? ch >= 0 : ch != want) continue;
        if (want == -1 && t->disabled[g]) continue; // covered by the default patterns
        if (experts_group(t, g)) {
            fn(t->gname[g], 1, ctx);
            continue;
        }
        char* m = xstrdup(t->gmembers[g]);
        char* save = NULL;
        for (char* tok = strtok_r(m, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) fn(tok, 0, ctx);
        free(m);
    }
}

static int formats_used(const ScoreTable* t, const Solution* s, int* used) {
    int n = 0;
    for (int f = 0; f < t->nf; f++) used[f] = 0;
    for (int g = 0; g < t->ng; g++)
        if (!t->disabled[g] && !table_kv(t, g) && s->sel[g] >= 0) used[s->sel[g]]++;
    for (int f = 0; f < t->nf; f++) n += used[f] > 0;
    return n;
}

// The KV-cache choices of a recipe (README §8): kv_used[f] layers take KV-cache format f; returns the most
// used one (-1: every KV cache stays bf16) and sets *bf16 to the enabled KV-cache groups kept bf16. Engines
// and compressed-tensors' kv_cache_scheme hold one KV-cache format per model: a mixed choice is warned about.
static int kv_main(const ScoreTable* t, const Solution* s, int* kv_used, int* bf16) {
    int best = -1;
    *bf16 = 0;
    for (int f = 0; f < t->nf; f++) kv_used[f] = 0;
    for (int g = 0; g < t->ng; g++) {
        if (t->disabled[g] || !table_kv(t, g)) continue;
        if (s->sel[g] < 0)
            (*bf16)++;
        else
            kv_used[s->sel[g]]++;
    }
    for (int f = 0; f < t->nf; f++)
        if (kv_used[f] && (best < 0 || kv_used[f] > kv_used[best])) best = f;
    return best;
}

static void warn_kv_mixed(const char* path, const ScoreTable* t, const Solution* s, const char* tool) {
    int used[MAX_FORMATS], bf16, main = kv_main(t, s, used, &bf16), other = bf16;
    if (main < 0) return;
    for (int f = 0; f < t->nf; f++) other += f != main ? used[f] : 0;
    if (other)
        warn_msg(
            "--emit %s: the recipe mixes KV-cache formats (%d layer(s) %s, %d other); %s holds one KV-cache "
            "format per model, so every full-attention layer gets %s (search per layer only for ModelOpt)",
            path, used[main], t->fmts[main].name, other, tool, t->fmts[main].name);
}

// The YAML goes through libyaml's emitter, which quotes and escapes every string itself: no
// name or pattern can break the document or add a line of its own.
typedef struct {
    yaml_emitter_t e;
    const char* path;
} Yaml;

static void y_emit(Yaml* y, yaml_event_t* ev, int made) {
    if (!made || !yaml_emitter_emit(&y->e, ev))
        fail_input("%s: cannot write YAML: %s (names must be valid UTF-8)", y->path,
                   y->e.problem ? y->e.problem : "bad string");
}

static void y_str(Yaml* y, const char* s, yaml_scalar_style_t style) {
    yaml_event_t ev;
    int made = yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t*)s, (int)strlen(s), 1, 1, style);
    y_emit(y, &ev, made);
}

static void y_key(Yaml* y, const char* key) { y_str(y, key, YAML_PLAIN_SCALAR_STYLE); }

static void y_map(Yaml* y, int flow) {
    yaml_event_t ev;
    y_emit(y, &ev,
           yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                               flow ? YAML_FLOW_MAPPING_STYLE : YAML_BLOCK_MAPPING_STYLE));
}

static void y_map_end(Yaml* y) {
    yaml_event_t ev;
    y_emit(y, &ev, yaml_mapping_end_event_initialize(&ev));
}

static void y_seq(Yaml* y, int flow) {
    yaml_event_t ev;
    y_emit(y, &ev,
           yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                                flow ? YAML_FLOW_SEQUENCE_STYLE : YAML_BLOCK_SEQUENCE_STYLE));
}

static void y_seq_end(Yaml* y) {
    yaml_event_t ev;
    y_emit(y, &ev, yaml_sequence_end_event_initialize(&ev));
}

static void y_re(Yaml* y, char* re) { // consumes re
    char* s = xmalloc(strlen(re) + 4);
    sprintf(s, "re:%s", re);
    y_str(y, s, YAML_SINGLE_QUOTED_SCALAR_STYLE);
    free(s);
    free(re);
}

// An experts group's linears as one regex: every expert's gate_proj, up_proj and down_proj, the
// names llm-compressor gives them when it unfuses the experts (LinearExperts2D) before quantizing.
char* recipe_regex_experts(const char* group) {
    char* re = recipe_regex_name(group);
    size_t n = strlen(re);
    const char* tail = "\\.[0-9]+\\.(gate_proj|up_proj|down_proj)$";
    re = xrealloc(re, n + strlen(tail));
    strcpy(re + n - 1, tail); // replaces the closing '$'
    return re;
}

static void yaml_name_item(const char* name, int experts, void* ctx) {
    y_re(ctx, experts ? recipe_regex_experts(name) : recipe_regex_name(name));
}

// One quantizer as compressed-tensors QuantizationArgs, field for field as its presets define the same
// numerics: integers per channel / per token (autoq's w4a8, w8a8) and in groups (W4A16's group 128), FP8
// per channel / per token (FP8_DYNAMIC), NVFP4 (tensor_group of 16, E4M3 scales, inputs "local" dynamic
// with the static_minmax global scale), MXFP4 (group of 32, uint8 E8M0 scales).
static void yaml_scheme_part(Yaml* y, const char* key, QuantSpec q, int input) {
    const char* kv[24];
    int n = 0;
    char nb[16], gs[16];
    snprintf(nb, sizeof(nb), "%d", q.bits);
    snprintf(gs, sizeof(gs), "%d", q.block);
    int nvfp4 = q.kind == QUANT_FP4_E2M1 && q.scale == QSCALE_E4M3, mx = q.scale == QSCALE_E8M0;
    kv[n++] = "num_bits", kv[n++] = nb;
    kv[n++] = "type", kv[n++] = q.kind == QUANT_INT ? "int" : "float";
    kv[n++] = "symmetric", kv[n++] = "true";
    kv[n++] = "strategy";
    kv[n++] = q.block == 0 ? (input ? "token" : "channel") : nvfp4 ? "tensor_group" : "group";
    if (q.block) kv[n++] = "group_size", kv[n++] = gs;
    kv[n++] = "dynamic", kv[n++] = !input ? "false" : nvfp4 ? "local" : "true";
    if (input && nvfp4) kv[n++] = "observer", kv[n++] = "static_minmax";
    if (nvfp4 || mx) {
        kv[n++] = "scale_dtype", kv[n++] = nvfp4 ? "float8_e4m3fn" : "uint8";
        kv[n++] = "zp_dtype", kv[n++] = nvfp4 ? "float8_e4m3fn" : "uint8";
    }
    y_key(y, key);
    y_map(y, 1);
    for (int i = 0; i < n; i++) y_str(y, kv[i], YAML_PLAIN_SCALAR_STYLE);
    y_map_end(y);
}

// compressed-tensors' kv_cache_scheme (QuantizationArgs of the attention's cached K and V): FP8 one static
// per-tensor scale (k_scale, v_scale); NVFP4 as its NVFP4 input activations (tensor_group of 16).
static void yaml_kv_cache(Yaml* y, const Format* f) {
    if (f->kvq.kind == QUANT_FP4_E2M1) {
        yaml_scheme_part(y, "kv_cache_scheme", f->kvq, 1);
        return;
    }
    y_key(y, "kv_cache_scheme");
    y_map(y, 1);
    const char* kv[] = {"num_bits", "8",        "type",   "float",   "symmetric",
                        "true",     "strategy", "tensor", "dynamic", "false"};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) y_str(y, kv[i], YAML_PLAIN_SCALAR_STYLE);
    y_map_end(y);
}

static void yaml_config_groups(Yaml* y, const ScoreTable* t, const Solution* s, const Format* fmts) {
    int used[MAX_FORMATS];
    int nu = formats_used(t, s, used);
    y_key(y, "config_groups");
    y_map(y, 0);
    for (int k = 0, gi = 0; k < t->nf; k++) {
        if ((!used[k] && nu > 0) || fmts[k].kv) continue; // KV-cache formats: kv_cache_scheme
        char name[32];
        snprintf(name, sizeof(name), "group_%d", gi++);
        y_key(y, name);
        y_map(y, 0);
        y_key(y, "targets");
        y_seq(y, nu <= 1);
        if (nu <= 1)
            y_str(y, "Linear", YAML_SINGLE_QUOTED_SCALAR_STYLE);
        else
            for_members(t, s, k, yaml_name_item, y);
        y_seq_end(y);
        if (fmts[k].w_enable) yaml_scheme_part(y, "weights", fmts[k].w, 0);
        if (fmts[k].in_enable) yaml_scheme_part(y, "input_activations", fmts[k].in, 1);
        y_map_end(y);
        if (nu <= 1) break;
    }
    y_map_end(y);
}

// Whether the scores hold a group whose name ends with `tail` (a layer's experts group) or holds `part`
// (a shared expert's group): routers and shared-expert gates must then be left alone explicitly, since both
// tools would otherwise quantize these nn.Linear modules (README §5).
static int has_group(const ScoreTable* t, const char* tail, const char* part) {
    for (int g = 0; g < t->ng; g++) {
        size_t n = strlen(t->gname[g]), k = tail ? strlen(tail) : 0;
        if (tail && n >= k && strcmp(t->gname[g] + n - k, tail) == 0) return 1;
        if (part && strstr(t->gname[g], part)) return 1;
    }
    return 0;
}
static int has_experts(const ScoreTable* t) { return has_group(t, ARCH_EXPERTS_GROUP, NULL); }
static int has_shared_expert(const ScoreTable* t) { return has_group(t, NULL, ARCH_SHARED_EXPERT "."); }
// A Gated DeltaNet layer's groups sit under "<layer>.linear_attn." (README §5).
static int has_gated_delta(const ScoreTable* t) { return has_group(t, NULL, ".linear_attn."); }

static void yaml_ignore(Yaml* y, const ScoreTable* t, const Solution* s) {
    y_key(y, "ignore");
    y_seq(y, 0);
    y_str(y, "lm_head", YAML_PLAIN_SCALAR_STYLE);
    if (has_experts(t)) y_str(y, "re:.*mlp\\.gate$", YAML_PLAIN_SCALAR_STYLE); // routers (README §5)
    if (has_shared_expert(t)) y_str(y, "re:.*mlp\\.shared_expert_gate$", YAML_PLAIN_SCALAR_STYLE);
    Patterns dis; // split and trimmed exactly as scoring matched them
    patterns_parse(&dis, t->disabled_csv);
    for (int i = 0; i < dis.n; i++) y_re(y, recipe_regex_glob(dis.pat[i]));
    patterns_free(&dis);
    for_members(t, s, -1, yaml_name_item, y);
    y_seq_end(y);
}

// The comment line is the only text not written by the emitter: keep it on one line of UTF-8.
static void yaml_comment(FILE* f, const SearchCtx* c, const Solution* s, const Quantizer* q) {
    const ScoreTable* t = c->t;
    char* model = xstrdup(t->model);
    json_t* valid = json_string(model);
    for (unsigned char* p = (unsigned char*)model; *p; p++)
        if (*p < 0x20 || *p == 0x7f || (!valid && *p >= 0x80)) *p = '?';
    json_decref(valid);
    fprintf(f, "# autoq recipe for %s: %s scores, budget %.3f bits (%s scope), effective %.4f bits\n", model,
            t->method, s->budget, c->scope == SCOPE_ALL ? "all" : "candidates", s->bits[c->scope]);
    // the calibration pipeline is oneshot's argument, not the recipe's: said where a user reads it
    if (q && q->kind == QUANTIZER_GPTQ && q->pipeline == GPTQ_PIPELINE_BASIC)
        fprintf(f, "# verified with --gptq-pipeline basic: run oneshot(..., pipeline=\"basic\")\n");
    free(model);
}

// ---- numerics: what was scored against what the tool applies ----
// One quantizer's difference: integers amax / m (ModelOpt) against amax / (m + 0.5) (compressed-tensors),
// ModelOpt's narrow range [-m, m] against [-m - 1, m]; FP8 the same scale amax / 448 (the two differ in the
// last bit of a quotient only); E2M1 formats llm-compressor's own observers, not modelled (autoq refuses
// compressed-tensors numerics for them). Appends to buf; returns the relative scale change.
static double numerics_part(const char* what, QuantSpec q, int ct, char* buf, size_t n) {
    size_t len = strlen(buf);
    if (q.kind == QUANT_INT) {
        double m = (1 << (q.bits - 1)) - 1, from = q.ct ? m + 0.5 : m, to = ct ? m + 0.5 : m;
        snprintf(buf + len, n - len, "%s%s scale amax/%g -> amax/%g (x%.4f)%s", len ? "; " : "", what, from, to,
                 from / to,
                 !ct && q.narrow ? ", codes [-m, m]"
                 : !ct           ? ""
                                 : ", codes [-m-1, m]");
        return fabs(from / to - 1.0);
    }
    if (q.kind == QUANT_FP4_E2M1)
        snprintf(buf + len, n - len, "%s%s: the tool's own E2M1 block scales (not modelled by autoq)",
                 len ? "; " : "", what);
    return 0.0;
}

double export_numerics_note(const Format* f, int ct, char* buf, size_t n) {
    buf[0] = 0;
    double d = 0.0;
    char w[96], in[96];
    snprintf(w, sizeof(w), "%s weights", f->name);
    snprintf(in, sizeof(in), "%s inputs", f->name);
    if (f->w_enable && f->w.ct != ct) d = fmax(d, numerics_part(w, f->w, ct, buf, n));
    if (f->in_enable && f->in.ct != ct) d = fmax(d, numerics_part(in, f->in, ct, buf, n));
    return d;
}

// The warning of an export whose tool applies other numerics than the scores': which quantizers, by how
// much, and the command that scores in the tool's numerics (README §8).
static void warn_numerics(const char* path, const SearchCtx* c, const Solution* s, const Format* fmts, int ct) {
    const ScoreTable* t = c->t;
    int used[MAX_FORMATS];
    formats_used(t, s, used);
    char all[2048] = "", one[512];
    double worst = 0.0;
    for (int k = 0; k < t->nf; k++) {
        if (!used[k]) continue;
        worst = fmax(worst, export_numerics_note(&fmts[k], ct, one, sizeof(one)));
        if (one[0] && strlen(all) + strlen(one) + 3 < sizeof(all))
            snprintf(all + strlen(all), sizeof(all) - strlen(all), "%s%s", all[0] ? "; " : "", one);
    }
    if (!all[0]) return;
    // one line: a control character in the folder's name cannot start a line of its own
    char model[sizeof(t->model)];
    snprintf(model, sizeof(model), "%s", t->model);
    for (unsigned char* p = (unsigned char*)model; *p; p++)
        if (*p < 0x20 || *p == 0x7f) *p = '?';
    char names[512] = "";
    for (int k = 0; k < t->nf; k++)
        if (strlen(names) + strlen(t->fmts[k].name) + 2 < sizeof(names))
            snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", k ? "," : "",
                     t->fmts[k].name);
    warn_msg(
        "--emit %s=%s: WHAT IS SCORED IS NOT WHAT IS SHIPPED: these scores use %s numerics, and %s applies "
        "%s numerics: %s (largest scale change %.1f%%; on qwen3-tiny W4A8 this changes 13%% of the int4 "
        "codes, README §8). Score in the tool's numerics: autoq search %s --data DATA --method %s "
        "--numerics %s --format %s ...",
        ct ? "llmcompressor" : "modelopt", path, ct ? "ModelOpt" : "compressed-tensors",
        ct ? "llm-compressor" : "ModelOpt", ct ? "compressed-tensors" : "ModelOpt", all, 100.0 * worst, model,
        t->method, ct ? "compressed-tensors" : "modelopt", names);
}

// The GPTQ settings autoq quantized with, as GPTQModifier's own fields, so that llm-compressor runs
// them rather than its defaults: dampening_frac (--gptq-dampening), actorder (--gptq-actorder; null for
// none), block_size (autoq's 128 columns per lazy update).
static void yaml_gptq_settings(Yaml* y, const Quantizer* q) {
    GptqOpts o = q ? q->gptq : gptq_defaults;
    char v[32];
    snprintf(v, sizeof(v), "%.15g", o.damp);
    if (strtod(v, NULL) != o.damp) snprintf(v, sizeof(v), "%.17g", o.damp);
    y_key(y, "dampening_frac");
    y_str(y, v, YAML_PLAIN_SCALAR_STYLE);
    y_key(y, "actorder");
    y_str(y,
          o.order == GPTQ_ORDER_NONE    ? "null"
          : o.order == GPTQ_ORDER_GROUP ? "group"
                                        : "static",
          YAML_PLAIN_SCALAR_STYLE);
    snprintf(v, sizeof(v), "%d", o.block);
    y_key(y, "block_size");
    y_str(y, v, YAML_PLAIN_SCALAR_STYLE);
}

void export_llmcompressor(const char* path, const SearchCtx* c, const Solution* s, const Format* fmts,
                          const Quantizer* q) {
    OutFile o;
    out_open(&o, path);
    warn_numerics(path, c, s, fmts, 1);
    yaml_comment(o.f, c, s, q);
    Yaml y = {.path = path};
    if (!yaml_emitter_initialize(&y.e)) fail_other("out of memory");
    yaml_emitter_set_output_file(&y.e, o.f);
    yaml_emitter_set_unicode(&y.e, 1);
    yaml_emitter_set_width(&y.e, -1); // never fold a long pattern
    yaml_event_t ev;
    y_emit(&y, &ev, yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING));
    y_emit(&y, &ev, yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1));
    y_map(&y, 0);
    y_key(&y, "quant_stage");
    y_map(&y, 0);
    y_key(&y, "quant_modifiers");
    y_map(&y, 0);
    y_key(&y, "GPTQModifier");
    y_map(&y, 0);
    yaml_ignore(&y, c->t, s);
    yaml_config_groups(&y, c->t, s, fmts);
    int kv_used[MAX_FORMATS], kv_bf16, kv = kv_main(c->t, s, kv_used, &kv_bf16);
    if (kv >= 0) {
        warn_kv_mixed(path, c->t, s, "compressed-tensors' kv_cache_scheme (and vLLM)");
        yaml_kv_cache(&y, &fmts[kv]);
    }
    yaml_gptq_settings(&y, q);
    for (int i = 0; i < 4; i++) y_map_end(&y);
    y_emit(&y, &ev, yaml_document_end_event_initialize(&ev, 1));
    y_emit(&y, &ev, yaml_stream_end_event_initialize(&ev));
    if (!yaml_emitter_flush(&y.e)) fail_other("%s: write failed", path);
    yaml_emitter_delete(&y.e);
    out_close(&o);
}

// A module name as an fnmatch pattern that matches only itself ('[[]' is a literal '[').
static char* fnmatch_literal(const char* name, const char* suffix) {
    Buf b = {0};
    for (const char* p = name; *p; p++) {
        if (strchr("*?[", *p)) buf_putc(&b, '[');
        buf_putc(&b, *p);
        if (strchr("*?[", *p)) buf_putc(&b, ']');
    }
    buf_puts(&b, suffix);
    return b.s;
}

// "<name>.*" also covers every quantizer under an experts group, whatever its layout.
static void mo_disable(const char* name, int experts, void* ctx) {
    (void)experts;
    char* key = fnmatch_literal(name, ".*");
    json_put((json_t*)ctx, key, json_pack("{s:b}", "enable", 0), "a module name");
    free(key);
}

// ModelOpt's num_bits: an integer, or the (E, M) tuple as a JSON pair.
static json_t* mo_bits(QuantSpec q) {
    if (q.kind == QUANT_FP8_E4M3) return json_pack("[i,i]", 4, 3);
    if (q.kind == QUANT_FP4_E2M1) return json_pack("[i,i]", 2, 1);
    return json_integer(q.bits);
}

// Blocks along the input: {"-1": N, "type": ..., "scale_bits": [E, M]} (integers: fp32 scales, none given).
static json_t* mo_blocks(QuantSpec q, int input) {
    json_t* b =
        json_pack("{s:i,s:s}", "-1", q.block, "type", input || q.kind != QUANT_INT ? "dynamic" : "static");
    if (q.scale == QSCALE_E4M3) json_object_set_new(b, "scale_bits", json_pack("[i,i]", 4, 3));
    if (q.scale == QSCALE_E8M0) json_object_set_new(b, "scale_bits", json_pack("[i,i]", 8, 0));
    return b;
}

// The integer per-channel weight keeps the layout the validated exports were written in.
static json_t* mo_weight(const Format* f) {
    if (!f->w_enable) return json_pack("{s:b}", "enable", 0);
    if (f->w.block)
        return json_pack("{s:o,s:o,s:n,s:b}", "num_bits", mo_bits(f->w), "block_sizes", mo_blocks(f->w, 0),
                         "axis", "enable", 1);
    if (f->w.kind != QUANT_INT)
        return json_pack("{s:o,s:i,s:b}", "num_bits", mo_bits(f->w), "axis", 0, "enable", 1);
    return json_pack("{s:i,s:i,s:b,s:b}", "num_bits", f->w.bits, "axis", 0, "narrow_range", f->w.narrow,
                     "enable", 1);
}

static json_t* mo_input(const Format* f) {
    if (!f->in_enable) return json_pack("{s:b}", "enable", 0);
    if (f->in.block)
        return json_pack("{s:o,s:o,s:n,s:b}", "num_bits", mo_bits(f->in), "block_sizes", mo_blocks(f->in, 1),
                         "axis", "enable", 1);
    if (f->in.kind != QUANT_INT)
        return json_pack("{s:o,s:s,s:{s:n},s:b}", "num_bits", mo_bits(f->in), "type", "dynamic", "block_sizes",
                         "-1", "enable", 1);
    return json_pack("{s:i,s:s,s:{s:n},s:b,s:b}", "num_bits", f->in.bits, "type", "dynamic", "block_sizes",
                     "-1", "narrow_range", f->in.narrow, "enable", 1);
}

// A KV-cache format as ModelOpt's FP8_KV_CFG / NVFP4_KV_CFG spell their k/v_bmm_quantizer.
static json_t* mo_kv(const Format* f) {
    if (f->kvq.block)
        return json_pack("{s:o,s:o,s:n,s:b}", "num_bits", mo_bits(f->kvq), "block_sizes", mo_blocks(f->kvq, 1),
                         "axis", "enable", 1);
    return json_pack("{s:o,s:n,s:b}", "num_bits", mo_bits(f->kvq), "axis", "enable", 1);
}

typedef struct {
    json_t* qc;
    const Format* f;
} MoCtx;

// An experts group's "<group>.*weight_quantizer" matches per-expert linears
// (experts.N.gate_proj.weight_quantizer) and ModelOpt's fused-experts quantizers, whose names it
// matches with the index dropped (experts.gate_up_proj_weight_quantizers.N ->
// experts.gate_up_proj_weight_quantizer).
static void mo_override(const char* name, int experts, void* ctx) {
    MoCtx* m = ctx;
    char* key = fnmatch_literal(name, experts ? ".*weight_quantizer" : ".weight_quantizer");
    json_put(m->qc, key, mo_weight(m->f), "a module name");
    free(key);
    key = fnmatch_literal(name, experts ? ".*input_quantizer" : ".input_quantizer");
    json_put(m->qc, key, mo_input(m->f), "a module name");
    free(key);
}

void export_modelopt(const char* path, const SearchCtx* c, const Solution* s, const Format* fmts,
                     const Quantizer* q) {
    // ModelOpt's "max" algorithm has no GPTQ settings: its export is round-to-nearest (README §8)
    if (q && q->kind == QUANTIZER_GPTQ)
        warn_msg(
            "--emit modelopt=%s: ModelOpt's quant_cfg (algorithm max) quantizes round-to-nearest, not with "
            "the GPTQ weights autoq scored",
            path);
    warn_numerics(path, c, s, fmts, 0);
    const ScoreTable* t = c->t;
    int used[MAX_FORMATS];
    formats_used(t, s, used);
    int main_f = 0;
    for (int f = 1; f < t->nf; f++) main_f = used[f] > used[main_f] ? f : main_f;
    json_t* qc = json_object();
    // Everything off first, as ModelOpt's own configs start: its attention wrapper adds q/k/v/softmax
    // bmm quantizers that are on (8 bits) until a config turns them off, and autoq's formats
    // quantize linears only.
    json_object_set_new(qc, "*", json_pack("{s:b}", "enable", 0));
    json_object_set_new(qc, "*weight_quantizer", mo_weight(&fmts[main_f]));
    json_object_set_new(qc, "*input_quantizer", mo_input(&fmts[main_f]));
    Patterns dis;
    patterns_parse(&dis, t->disabled_csv);
    for (int i = 0; i < dis.n; i++)
        json_put(qc, dis.pat[i], json_pack("{s:b}", "enable", 0), "--disabled-layers");
    patterns_free(&dis);
    // ModelOpt also gives nn.Embedding a weight quantizer, which "*weight_quantizer" would enable.
    json_object_set_new(qc, "*embed_tokens*", json_pack("{s:b}", "enable", 0));
    // Routers are never quantized; "*mlp.gate.*" leaves mlp.gate_proj (a dense MLP) alone.
    if (has_experts(t)) json_object_set_new(qc, "*mlp.gate.*", json_pack("{s:b}", "enable", 0));
    if (has_shared_expert(t))
        json_object_set_new(qc, "*" ARCH_SHARED_GATE ".*", json_pack("{s:b}", "enable", 0));
    // ModelOpt wraps nn.Conv1d too (QuantConv1d): "*weight_quantizer" / "*input_quantizer" would quantize
    // the Gated DeltaNet's depthwise conv1d, never a candidate (README §5).
    if (has_gated_delta(t)) json_object_set_new(qc, "*.linear_attn.conv1d.*", json_pack("{s:b}", "enable", 0));
    for (int f = 0; f < t->nf; f++) {
        if (f == main_f || !used[f]) continue;
        MoCtx m = {qc, &fmts[f]};
        for_members(t, s, f, mo_override, &m);
    }
    for_members(t, s, -1, mo_disable, qc);
    for (int g = 0; g < t->ng; g++) // each quantized KV cache: ModelOpt's k_bmm_quantizer and v_bmm_quantizer
        if (table_kv(t, g) && !t->disabled[g] && s->sel[g] >= 0) {
            size_t n = strlen(t->gname[g]) - strlen("kv_cache");
            char* layer = xstrdup(t->gname[g]);
            layer[n] = 0; // "<prefix>layers.L.self_attn."
            char* key = fnmatch_literal(layer, "[kv]_bmm_quantizer");
            json_put(qc, key, mo_kv(&fmts[s->sel[g]]), "a module name");
            free(key);
            free(layer);
        }
    json_t* j = json_pack("{s:o,s:s}", "quant_cfg", qc, "algorithm", "max");
    OutFile o;
    out_open(&o, path);
    json_dumpf(j, o.f, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    fputc('\n', o.f);
    out_close(&o);
    json_decref(j);
}

// autoq check-checkpoint DIR --target T [--arch A]: a compressed-tensors checkpoint (autoq's or anyone's)
// validated against a serving engine's profile (target.h) before it is shipped: each config group's
// format served on the arch, fused modules and a MoE layer's experts under one scheme, every quantized
// module's tensors (codes, scales, shapes, dtypes) as its scheme's format stores them, the config fields
// an engine reads, the KV-cache scheme. Every offending module is named. Exit 0 clean, 1 with findings,
// 2 bad input (README §1).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../engine/args.h"
#include "../engine/input.h"
#include "../engine/safetensors.h"
#include "../engine/util.h"
#include "../scoring/table.h"
#include "check_checkpoint.h"
#include "target.h"

#define MAX_GROUPS 64

typedef struct {
    int present, bits, group_size, dynamic, symmetric;
    char type[8], strategy[16];
} QArgs;

typedef struct {
    const char* name;
    const char* format; // the group's own, else the top-level one
    json_t* targets;
    QArgs w, in;
    const char* kind; // target_format_kind's vocabulary, NULL when no profile names it
} CGroup;

typedef struct {
    char* name;          // module
    const StTensor* w;   // .weight
    const StTensor* wp;  // .weight_packed
    const StTensor* ws;  // .weight_scale
    const StTensor* wsh; // .weight_shape
    const StTensor* wgs; // .weight_global_scale
    const StTensor* igs; // .input_global_scale
    const StTensor* is;  // .input_scale
    int scheme;          // config group index, -1 unquantized
} Module;

typedef struct {
    json_t* list; // findings: {"module", "rule", "message"}
    int n;
    int json; // quiet: no FINDING lines on stdout
} Findings;

static void finding(Findings* fs, const char* module, const char* rule, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void finding(Findings* fs, const char* module, const char* rule, const char* fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fs->n++;
    json_array_append_new(fs->list, json_pack("{s:s,s:s,s:s}", "module", module, "rule", rule, "message", msg));
    if (!fs->json) printf("FINDING %s [%s]: %s\n", module, rule, msg);
}

static void qargs_read(QArgs* q, json_t* o, const char* path, const char* where) {
    memset(q, 0, sizeof(*q)); // whole, padding included: same_scheme compares the bytes
    if (!o || json_is_null(o)) return;
    if (!json_is_object(o)) fail_input("%s: field '%s' must be an object or null", path, where);
    q->present = 1;
    json_t* v = json_object_get(o, "num_bits");
    if (!json_is_integer(v)) fail_input("%s: field '%s.num_bits' must be an integer", path, where);
    q->bits = (int)json_integer_value(v);
    const char* t = json_string_value(json_object_get(o, "type"));
    snprintf(q->type, sizeof(q->type), "%s", t ? t : "int");
    const char* s = json_string_value(json_object_get(o, "strategy"));
    snprintf(q->strategy, sizeof(q->strategy), "%s", s ? s : "tensor");
    v = json_object_get(o, "group_size");
    q->group_size = json_is_integer(v) ? (int)json_integer_value(v) : 0;
    if (json_is_integer(v) && (json_integer_value(v) < 1 || json_integer_value(v) > (1 << 20)))
        fail_input("%s: field '%s.group_size' must be a positive integer", path, where);
    v = json_object_get(o, "dynamic");
    q->dynamic = json_is_true(v) || json_is_string(v); // "local": NVFP4's dynamic inputs under a global scale
    v = json_object_get(o, "symmetric");
    q->symmetric = !v || json_is_true(v);
}

// The kind of a scheme in the profiles' vocabulary (target_format_kind's), from compressed-tensors'
// QuantizationArgs.
static const char* scheme_kind(const QArgs* w, const QArgs* in) {
    if (!w->present || !w->symmetric) return NULL;
    int isint = strcmp(w->type, "int") == 0, isflt = strcmp(w->type, "float") == 0;
    int chan = strcmp(w->strategy, "channel") == 0, grp = strcmp(w->strategy, "group") == 0;
    int no_in = !in->present;
    int in_int8 = !no_in && strcmp(in->type, "int") == 0 && in->bits == 8 && strcmp(in->strategy, "token") == 0;
    int in_fp8 = !no_in && strcmp(in->type, "float") == 0 && in->bits == 8;
    if (isint && w->bits == 4 && chan) return no_in ? "w4a16_channel" : in_int8 ? "w4a8" : NULL;
    if (isint && w->bits == 8 && chan) return no_in ? "w8a16" : in_int8 ? "w8a8" : NULL;
    if (isint && w->bits == 4 && grp) return no_in ? "w4a16" : in_fp8 ? "w4a8_fp8" : NULL;
    if (isflt && w->bits == 8 && (chan || strcmp(w->strategy, "tensor") == 0))
        return no_in ? "fp8_weight_only" : in_fp8 ? "fp8" : NULL;
    if (isflt && w->bits == 4 && no_in && strcmp(w->strategy, "tensor_group") == 0 && w->group_size == 16)
        return "nvfp4_weight_only";
    if (isflt && w->bits == 4 && !no_in && strcmp(in->type, "float") == 0 && in->bits == 4) {
        if (strcmp(w->strategy, "tensor_group") == 0 && w->group_size == 16 && in->group_size == 16)
            return "nvfp4";
        if (grp && w->group_size == 32 && in->group_size == 32) return "mxfp4";
    }
    return NULL;
}

// Python's re.match (anchored at the start) of a compressed-tensors "re:" pattern, or an exact name.
static int target_match(const char* target, const char* name, int is_linear) {
    if (strcmp(target, "Linear") == 0) return is_linear;
    if (strncmp(target, "re:", 3) != 0) return strcmp(target, name) == 0;
    int err;
    PCRE2_SIZE off;
    pcre2_code* re = pcre2_compile((PCRE2_SPTR)(target + 3), PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED | PCRE2_UTF,
                                   &err, &off, NULL);
    if (!re) return -1;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(re, NULL);
    int rc = pcre2_match(re, (PCRE2_SPTR)name, strlen(name), 0, 0, md, NULL);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc >= 0;
}

static int list_match(json_t* list, const char* name, int is_linear, const char* path, const char* where) {
    size_t i;
    json_t* v;
    json_array_foreach(list, i, v) {
        if (!json_is_string(v)) fail_input("%s: field '%s[%zu]' must be a string", path, where, i);
        int r = target_match(json_string_value(v), name, is_linear);
        if (r < 0) fail_input("%s: field '%s[%zu]' is not a valid regular expression", path, where, i);
        if (r) return 1;
    }
    return 0;
}

static const char* k_suffix[] = {".weight",       ".weight_packed",       ".weight_scale",
                                 ".weight_shape", ".weight_global_scale", ".input_global_scale",
                                 ".input_scale"};
#define N_SUFFIX (int)(sizeof(k_suffix) / sizeof(k_suffix[0]))

static int by_name(const void* a, const void* b) {
    return strcmp(((const Module*)a)->name, ((const Module*)b)->name);
}

// The checkpoint's modules with a 2-D weight or quantized tensors, sorted by name.
static Module* modules_collect(const StCheckpoint* ck, int* n_out) {
    Module* ms = xcalloc(ck->n + 1, sizeof(Module));
    int n = 0;
    for (int i = 0; i < ck->n; i++) {
        const StTensor* t = &ck->t[i];
        size_t len = strlen(t->name);
        for (int s = 0; s < N_SUFFIX; s++) {
            size_t sl = strlen(k_suffix[s]);
            if (len <= sl || strcmp(t->name + len - sl, k_suffix[s]) != 0) continue;
            if (s == 0 && t->ndim != 2 && t->dtype != DT_I8 && t->dtype != DT_F8) break;
            char* mod = xstrdup(t->name);
            mod[len - sl] = 0;
            Module key = {.name = mod};
            Module* m = n ? bsearch(&key, ms, n, sizeof(Module), by_name) : NULL;
            if (!m) { // insert sorted (tensors come sorted by name, so this is mostly an append)
                int at = n;
                while (at > 0 && strcmp(ms[at - 1].name, mod) > 0) at--;
                memmove(&ms[at + 1], &ms[at], (n - at) * sizeof(Module));
                memset(&ms[at], 0, sizeof(Module));
                ms[at].name = mod;
                ms[at].scheme = -1;
                m = &ms[at];
                n++;
            } else
                free(mod);
            const StTensor** slot[] = {&m->w, &m->wp, &m->ws, &m->wsh, &m->wgs, &m->igs, &m->is};
            *slot[s] = t;
            break;
        }
    }
    *n_out = n;
    return ms;
}

static int quantized(const Module* m) {
    return m->wp || m->ws || (m->w && (m->w->dtype == DT_I8 || m->w->dtype == DT_F8));
}

// A linear as transformers builds it: a 2-D weight that is not an embedding (norms are 1-D).
static int is_linear(const Module* m) {
    if (quantized(m)) return 1;
    return m->w && m->w->ndim == 2 && !strstr(m->name, "embed_tokens") && !strstr(m->name, "norm");
}

static int is_float(DType d) { return d == DT_BF16 || d == DT_F16 || d == DT_F32; }

static void shape_str(char* buf, size_t n, const StTensor* t) {
    int k = snprintf(buf, n, "%s [", st_dtype_name(t->dtype));
    for (int i = 0; i < t->ndim && k < (int)n; i++)
        k += snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (k < (int)n) snprintf(buf + k, n - k, "]");
}

// One tensor of a module: present, its dtype (float: any of BF16 / F16 / F32), its 2-D shape (rows, cols;
// -1: any).
static void expect(Findings* fs, const Module* m, const StTensor* t, const char* what, DType dt, long rows,
                   long cols, const char* fmt) {
    if (!t) {
        finding(fs, m->name, "scales", "format %s stores %s.%s, which is missing", fmt, m->name, what);
        return;
    }
    int dt_ok = dt == DT_BF16 ? is_float(t->dtype) : t->dtype == dt;
    int shape_ok = rows < 0 || (t->ndim == 2 && t->shape[0] == rows && (cols < 0 || t->shape[1] == cols)) ||
                   (t->ndim == 1 && cols < 0 && rows == t->shape[0]);
    if (!dt_ok || !shape_ok) {
        char got[96], want[96];
        shape_str(got, sizeof(got), t);
        if (cols >= 0)
            snprintf(want, sizeof(want), "%s [%ld, %ld]", dt == DT_BF16 ? "BF16/F16/F32" : st_dtype_name(dt),
                     rows, cols);
        else
            snprintf(want, sizeof(want), "%s [%ld]", dt == DT_BF16 ? "BF16/F16/F32" : st_dtype_name(dt), rows);
        finding(fs, m->name, "scales", "format %s stores %s.%s as %s; it is %s", fmt, m->name, what, want, got);
    }
}

// The module's tensors as its scheme's compression format stores them.
static void check_tensors(Findings* fs, const Module* m, const CGroup* g) {
    const char* fmt = g->format ? g->format : "";
    long out = -1, in = -1;
    int gs = strcmp(g->w.strategy, "channel") == 0 ? 0 : g->w.group_size;
    if (strcmp(fmt, "pack-quantized") == 0) {
        if (!m->wsh || m->wsh->dtype != DT_I64 || m->wsh->ndim != 1 || m->wsh->shape[0] != 2) {
            finding(fs, m->name, "scales",
                    "format pack-quantized stores %s.weight_shape (I64 [2]): missing or malformed", m->name);
            return;
        }
        int64_t sh[2];
        memcpy(sh, m->wsh->data, sizeof(sh));
        out = sh[0], in = sh[1];
        if (out < 1 || in < 1) {
            finding(fs, m->name, "scales", "%s.weight_shape holds [%lld, %lld]", m->name, (long long)out,
                    (long long)in);
            return;
        }
        expect(fs, m, m->wp, "weight_packed", DT_I32, out, (in * g->w.bits + 31) / 32, fmt);
    } else if (strcmp(fmt, "int-quantized") == 0 || strcmp(fmt, "float-quantized") == 0 ||
               strcmp(fmt, "naive-quantized") == 0) {
        if (!m->w || m->w->ndim != 2) {
            finding(fs, m->name, "scales", "format %s stores %s.weight [out, in]: missing", fmt, m->name);
            return;
        }
        out = m->w->shape[0], in = m->w->shape[1];
        DType want = strcmp(fmt, "float-quantized") == 0 ? DT_F8 : DT_I8;
        if (strcmp(fmt, "naive-quantized") != 0) expect(fs, m, m->w, "weight", want, out, in, fmt);
    } else if (strcmp(fmt, "nvfp4-pack-quantized") == 0 || strcmp(fmt, "mxfp4-pack-quantized") == 0) {
        if (!m->wp || m->wp->ndim != 2) {
            finding(fs, m->name, "scales", "format %s stores %s.weight_packed [out, in/2]: missing", fmt,
                    m->name);
            return;
        }
        out = m->wp->shape[0], in = m->wp->shape[1] * 2;
        expect(fs, m, m->wp, "weight_packed", DT_U8, out, in / 2, fmt);
        int nv = fmt[0] == 'n';
        expect(fs, m, m->ws, "weight_scale", nv ? DT_F8 : DT_U8, out, in / (nv ? 16 : 32), fmt);
        if (nv) {
            expect(fs, m, m->wgs, "weight_global_scale", DT_F32, 1, -1, fmt);
            if (g->in.present) expect(fs, m, m->igs, "input_global_scale", DT_F32, 1, -1, fmt);
        }
        return;
    } else {
        finding(fs, m->name, "format", "compression format '%s' is not one check-checkpoint validates", fmt);
        return;
    }
    if (gs > 0 && in % gs) {
        finding(fs, m->name, "scales", "group_size %d does not divide the input width %ld", gs, in);
        return;
    }
    expect(fs, m, m->ws, "weight_scale", DT_BF16, out, gs > 0 ? in / gs : 1, fmt);
    if (g->in.present && !g->in.dynamic && !m->is)
        finding(fs, m->name, "scales", "static input quantization stores %s.input_scale, which is missing",
                m->name);
}

static void groups_read(CGroup* gs, int* n, json_t* qc, const char* path) {
    json_t* cg = json_object_get(qc, "config_groups");
    if (!json_is_object(cg) || json_object_size(cg) == 0)
        fail_input("%s: field 'quantization_config.config_groups' must be a non-empty object", path);
    if (json_object_size(cg) > MAX_GROUPS)
        fail_input("%s: field 'quantization_config.config_groups' has more than %d groups", path, MAX_GROUPS);
    const char* top = json_string_value(json_object_get(qc, "format"));
    const char* key;
    json_t* g;
    *n = 0;
    json_object_foreach(cg, key, g) {
        char where[160];
        snprintf(where, sizeof(where), "quantization_config.config_groups.%s", key);
        if (!json_is_object(g)) fail_input("%s: field '%s' must be an object", path, where);
        CGroup* c = &gs[(*n)++];
        c->name = key;
        c->targets = json_object_get(g, "targets");
        if (!json_is_array(c->targets)) fail_input("%s: field '%s.targets' must be an array", path, where);
        const char* f = json_string_value(json_object_get(g, "format"));
        c->format = f ? f : top;
        char w[200];
        snprintf(w, sizeof(w), "%s.weights", where);
        qargs_read(&c->w, json_object_get(g, "weights"), path, w);
        snprintf(w, sizeof(w), "%s.input_activations", where);
        qargs_read(&c->in, json_object_get(g, "input_activations"), path, w);
        c->kind = scheme_kind(&c->w, &c->in);
    }
}

// Config fields an engine reads (compressed-tensors' quantization_config).
static void check_fields(Findings* fs, json_t* qc, const CGroup* gs, int ng) {
    const char* status = json_string_value(json_object_get(qc, "quantization_status"));
    if (!status || strcmp(status, "compressed") != 0)
        finding(fs, "config.json", "config", "quantization_status is '%s'; a saved checkpoint is 'compressed'",
                status ? status : "(missing)");
    const char* top = json_string_value(json_object_get(qc, "format"));
    int differ = 0;
    for (int i = 0; i < ng; i++) {
        if (!gs[i].format || strcmp(gs[i].format, "mixed-precision") == 0)
            finding(fs, "config.json", "config",
                    "config_groups.%s has no format of its own and the top-level format is "
                    "'%s'",
                    gs[i].name, top ? top : "(missing)");
        else if (i && gs[0].format && strcmp(gs[i].format, gs[0].format) != 0)
            differ = 1;
    }
    if (differ && (!top || strcmp(top, "mixed-precision") != 0))
        finding(fs, "config.json", "config",
                "config groups use different formats but the top-level format is '%s', "
                "not 'mixed-precision'",
                top ? top : "(missing)");
    if (!json_is_array(json_object_get(qc, "ignore")) && json_object_get(qc, "ignore"))
        finding(fs, "config.json", "config", "ignore must be a list");
}

static void check_kv(Findings* fs, const Target* t, json_t* qc, const Module* ms, int nm,
                     const StCheckpoint* ck) {
    json_t* kv = json_object_get(qc, "kv_cache_scheme");
    if (!kv || json_is_null(kv)) return;
    QArgs q;
    qargs_read(&q, kv, "config.json", "quantization_config.kv_cache_scheme");
    const char* kind = strcmp(q.type, "float") == 0 && q.bits == 8   ? "fp8_e4m3"
                       : strcmp(q.type, "float") == 0 && q.bits == 4 ? "nvfp4"
                                                                     : NULL;
    const char* served[8];
    int n = target_kv_formats(t, served, 8), ok = 0;
    for (int i = 0; kind && i < n; i++) ok |= strcmp(served[i], kind) == 0;
    if (!ok)
        finding(fs, "config.json", "kv_cache",
                "kv_cache_scheme (%s %d-bit) is not a KV-cache format %s serves on %s", q.type, q.bits,
                t->engine, t->arch);
    if (q.dynamic) return;
    for (int i = 0; i < nm; i++) { // every attention layer carries its static K and V scales
        size_t len = strlen(ms[i].name);
        if (len < 7 || strcmp(ms[i].name + len - 7, ".k_proj") != 0) continue;
        char a[512], b[512];
        snprintf(a, sizeof(a), "%.*s.k_scale", (int)(len - 7), ms[i].name);
        snprintf(b, sizeof(b), "%s.output_scale", ms[i].name);
        if (!st_find(ck, a) && !st_find(ck, b))
            finding(fs, ms[i].name, "kv_cache", "static kv_cache_scheme: neither %s nor %s is stored", a, b);
    }
}

// Two schemes alike: the same weight and input arguments and compression format (two config groups may
// spell one scheme; the engine compares what they say).
static int same_scheme(const CGroup* gs, int a, int b) {
    if (a < 0 || b < 0) return a == b;
    const CGroup *x = &gs[a], *y = &gs[b];
    return memcmp(&x->w, &y->w, sizeof(QArgs)) == 0 && memcmp(&x->in, &y->in, sizeof(QArgs)) == 0 &&
           strcmp(x->format ? x->format : "", y->format ? y->format : "") == 0;
}

// Fused modules and a MoE layer's experts share one scheme (the engine loads them as one module).
static void check_fused(Findings* fs, const Target* t, const Module* ms, int nm, const CGroup* gs) {
    typedef struct {
        char key[256];
        int i;
    } K;
    K* ks = xcalloc(nm + 1, sizeof(K));
    int n = 0;
    for (int i = 0; i < nm; i++) {
        if (!is_linear(&ms[i])) continue;
        target_fused_key(t, ms[i].name, ks[n].key, sizeof(ks[n].key));
        if (ks[n].key[0]) ks[n++].i = i;
    }
    int (*cmp)(const void*, const void*) = (int (*)(const void*, const void*))strcmp; // key is first
    qsort(ks, n, sizeof(K), cmp);
    for (int a = 0; a < n;) {
        int b = a + 1;
        while (b < n && strcmp(ks[b].key, ks[a].key) == 0) b++;
        int s0 = ms[ks[a].i].scheme, same = 1;
        for (int k = a + 1; k < b; k++) same &= same_scheme(gs, ms[ks[k].i].scheme, s0);
        if (!same)
            for (int k = a; k < b; k++) {
                int s = ms[ks[k].i].scheme;
                finding(fs, ms[ks[k].i].name, strstr(ks[k].key, "#experts") ? "moe" : "fused", "%s %s; here %s",
                        t->engine,
                        strstr(ks[k].key, "#experts")
                            ? "serves a MoE layer's experts with one scheme"
                            : "fuses this module with its siblings, which must share a scheme",
                        s < 0 ? "unquantized" : gs[s].name);
            }
        a = b;
    }
    free(ks);
}

int check_checkpoint_dir(const char* dir, const Target* t, json_t* list, int quiet) {
    Findings fs = {.list = list, .n = (int)json_array_size(list), .json = quiet};
    char* cfg_path = path_join(dir, "config.json");
    json_t* cfg = input_json(cfg_path, "config.json", 0);
    json_t* qc = json_object_get(cfg, "quantization_config");
    if (!json_is_object(qc))
        fail_input("%s: no field 'quantization_config': not a compressed-tensors checkpoint", cfg_path);
    const char* method = json_string_value(json_object_get(qc, "quant_method"));
    if (!method || strcmp(method, "compressed-tensors") != 0)
        fail_input("%s: field 'quantization_config.quant_method' is '%s', not 'compressed-tensors'", cfg_path,
                   method ? method : "(missing)");
    CGroup gs[MAX_GROUPS];
    int ng;
    groups_read(gs, &ng, qc, cfg_path);
    json_t* ignore = json_object_get(qc, "ignore");
    StCheckpoint ck;
    st_open(&ck, dir);
    int nm;
    Module* ms = modules_collect(&ck, &nm);
    check_fields(&fs, qc, gs, ng);
    // each module's scheme: ignored, else the first config group whose targets match (compressed-tensors)
    int checked = 0;
    for (int i = 0; i < nm; i++) {
        Module* m = &ms[i];
        int lin = is_linear(m);
        if (!lin) continue;
        checked++;
        if (json_is_array(ignore) && list_match(ignore, m->name, lin, cfg_path, "quantization_config.ignore")) {
            if (quantized(m))
                finding(&fs, m->name, "config",
                        "stores quantized tensors but quantization_config.ignore names it");
            continue;
        }
        for (int g = 0; g < ng && m->scheme < 0; g++) {
            char where[200];
            snprintf(where, sizeof(where), "quantization_config.config_groups.%s.targets", gs[g].name);
            if (list_match(gs[g].targets, m->name, lin, cfg_path, where)) m->scheme = g;
        }
        if (m->scheme < 0) {
            if (quantized(m))
                finding(&fs, m->name, "config", "stores quantized tensors but no config group targets it");
            continue;
        }
        const CGroup* g = &gs[m->scheme];
        if (!quantized(m)) {
            finding(
                &fs, m->name, "config",
                "config_groups.%s targets it, but it is stored unquantized (add it to ignore, or quantize it)",
                g->name);
            continue;
        }
        const char *why, *src;
        TargetStatus s = target_kind_status(t, g->kind, &why, &src);
        if (s == TS_NONE)
            finding(&fs, m->name, "format", "config_groups.%s (%s) is not served by %s on %s: %s [%s]", g->name,
                    g->kind ? g->kind : "unknown scheme", t->engine, t->arch, why ? why : "", src ? src : "");
        check_tensors(&fs, m, g);
    }
    check_fused(&fs, t, ms, nm, gs);
    check_kv(&fs, t, qc, ms, nm, &ck);
    for (int g = 0; g < ng; g++) { // served, but not with the scored numerics
        const char *why, *src;
        if (target_kind_status(t, gs[g].kind, &why, &src) == TS_WEIGHT_ONLY)
            warn_msg("%s: config_groups.%s (%s) runs with its weights only on %s %s (inputs stay bf16): %s",
                     dir, gs[g].name, gs[g].kind, t->engine, t->arch, why ? why : "");
    }
    for (int i = 0; i < nm; i++) free(ms[i].name);
    free(ms);
    st_free(&ck);
    json_decref(cfg);
    free(cfg_path);
    return checked;
}

int cmd_check_checkpoint(Args* a) {
    const char* dir = args_pos(a, 0);
    const char* target_s = args_str(a, "--target");
    const char* arch_s = args_str(a, "--arch");
    Findings fs = {.list = json_array(), .json = args_flag(a, "--json")};
    args_done(a);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) fail_input("%s: not a checkpoint folder", dir);
    Target t;
    target_load(&t, target_s, arch_s);
    if (strcmp(t.checkpoint, "compressed-tensors") != 0)
        fail_input("check-checkpoint: --target %s loads %s checkpoints, not compressed-tensors ones (%s)",
                   t.name, t.checkpoint, t.path);
    int checked = check_checkpoint_dir(dir, &t, fs.list, fs.json);
    fs.n = (int)json_array_size(fs.list);
    if (fs.json) {
        json_t* j = json_pack("{s:s,s:s,s:s,s:i,s:i,s:O}", "checkpoint", dir, "target", t.name, "arch", t.arch,
                              "modules_checked", checked, "n_findings", fs.n, "findings", fs.list);
        json_write_file(j, NULL);
        json_decref(j);
    } else
        printf("%s: %d linear module(s) checked against %s on %s: %d finding(s)\n", dir, checked, t.engine,
               t.arch, fs.n);
    json_decref(fs.list);
    target_free(&t);
    return fs.n ? 1 : 0;
}

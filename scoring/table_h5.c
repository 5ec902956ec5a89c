// Scores files in HDF5 (README §8): the writer, and a reader that validates every object before
// libhdf5 converts a byte of it. Every string is written and read as a fixed-length string, so a
// damaged file can never send libhdf5 into its variable-length machinery (the global heap).
#define _GNU_SOURCE
#include <errno.h>
#include <hdf5.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../engine/util.h"
#include "table.h"

// Limits of a plausible scores file: beyond them a file is corrupt or hostile, never a model.
#define MAX_GROUPS (1 << 20)
#define MAX_LAYERS (1 << 22)
#define MAX_NAME 4096             // bytes of one group or linear name
#define MAX_MEMBERS (1 << 20)     // bytes of one comma-joined member list
#define MAX_READ_BYTES (1L << 30) // one fixed-length string dataset
#define MAX_DIM (1L << 24)
#define H5_TMP_NAME "out.h5" // the file inside the temporary folder of table_h5_create

// An open file and its path, for messages.
typedef struct {
    hid_t f;
    const char* path;
} H5In;
static uint32_t h5_checksum(const H5In* in);

static int utf8_ok(const char* s) {
    json_t* j = json_string(s);
    json_decref(j);
    return j != NULL;
}

// The output a write failure is about: the file of loc, less the temporary suffix.
static const char* h5_file_of(hid_t loc, char* buf, size_t cap) {
    if (H5Fget_name(loc, buf, cap) < 0) snprintf(buf, cap, "HDF5 output");
    char* tmp = strstr(buf, ".tmp.");
    if (tmp) *tmp = 0;
    return buf;
}

static void h5_ok(hid_t loc, herr_t rc, const char* what) {
    char buf[1024];
    if (rc < 0) fail_other("%s: cannot write %s (disk full?)", h5_file_of(loc, buf, sizeof(buf)), what);
}

// A fixed-length string of size bytes (at least 1: HDF5 has no empty type), NUL-padded UTF-8.
// Never variable-length: those live in the global heap, which a damaged file can send into loops.
static hid_t str_type(size_t size) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0 || H5Tset_size(t, size ? size : 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLPAD) < 0 ||
        H5Tset_cset(t, H5T_CSET_UTF8) < 0)
        fail_other("HDF5: cannot make a string type");
    return t;
}

void h5_attr_str(long obj, const char* name, const char* v) {
    hid_t t = str_type(strlen(v)), sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (sp < 0 || a < 0) h5_ok(obj, -1, name);
    // The type may be one byte longer than v (v = ""): write from a padded copy.
    char* buf = xcalloc(strlen(v) + 1, 1);
    memcpy(buf, v, strlen(v));
    h5_ok(obj, H5Awrite(a, t, buf), name);
    free(buf);
    h5_ok(obj, H5Aclose(a), name);
    H5Sclose(sp);
    H5Tclose(t);
}

static void attr_num(hid_t obj, const char* name, hid_t type, const void* v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (sp < 0 || a < 0) h5_ok(obj, -1, name);
    h5_ok(obj, H5Awrite(a, type, v), name);
    h5_ok(obj, H5Aclose(a), name);
    H5Sclose(sp);
}

// Attributes `units` (when not NULL) and `description` of object name under loc (README §8).
void h5_describe(long loc, const char* name, const char* units, const char* description) {
    hid_t o = H5Oopen(loc, name, H5P_DEFAULT);
    if (o < 0) h5_ok(loc, -1, name);
    if (units) h5_attr_str(o, "units", units);
    h5_attr_str(o, "description", description);
    h5_ok(loc, H5Oclose(o), name);
}

void h5_write(long loc, const char* name, long type, int rank, const unsigned long long* dims,
              const void* data) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t d = sp < 0 ? -1 : H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    // Data may reach the disk only at close: its failure is a failed write too.
    if (d < 0 || H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0 || H5Dclose(d) < 0)
        h5_ok(loc, -1, name);
    H5Sclose(sp);
}

// n strings as one [n] dataset of fixed-length strings as long as the longest, NUL-padded.
static void write_strs(hid_t loc, const char* name, char* const* s, int n) {
    size_t size = 1;
    for (int i = 0; i < n; i++) size = strlen(s[i]) > size ? strlen(s[i]) : size;
    char* buf = xcalloc(n ? (size_t)n * size : 1, 1);
    for (int i = 0; i < n; i++) memcpy(buf + (size_t)i * size, s[i], strlen(s[i]));
    hid_t t = str_type(size);
    hsize_t dims[1] = {(hsize_t)n};
    h5_write(loc, name, t, 1, dims, buf);
    H5Tclose(t);
    free(buf);
}

static hid_t group_create(hid_t f, const char* name) {
    hid_t g = H5Gcreate2(f, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) h5_ok(f, -1, name);
    return g;
}

// libhdf5's exit handler closes what is still open and crashes on a file whose close already
// failed (a full disk); our failure paths delete what they wrote, so it is not needed. It can
// only be declined before the library's first call, which in autoq is always one of these.
static void h5_init(void) {
    H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); // our messages, not libhdf5's error stack
}

// /formats/definition: one compact format_to_json record per format, the definition search uses.
static void write_formats(hid_t f, const ScoreTable* t) {
    char fmts[MAX_FORMATS * 65] = "";
    int bits[MAX_FORMATS];
    char* defs[MAX_FORMATS];
    for (int i = 0; i < t->nf; i++) {
        if (i) strcat(fmts, ",");
        strcat(fmts, t->fmts[i].name);
        bits[i] = t->fmts[i].bits;
        json_t* j = format_to_json(&t->fmts[i]);
        defs[i] = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        if (!defs[i]) fail_other("format '%s': cannot encode its definition", t->fmts[i].name);
    }
    h5_attr_str(f, "format", fmts); // README §8: the names, comma-joined
    hsize_t nf = (hsize_t)t->nf;
    h5_write(f, "format_bits", H5T_NATIVE_INT, 1, &nf, bits);
    h5_describe(f, "format_bits", "bits per weight",
                "per format (rows of /formats/definition): its cost in ModelOpt's num_bits convention, the "
                "smallest num_bits among its enabled quantizers (w4a8 4, w8a8 and fp8 8, nvfp4 4); not the "
                "true bits (values and scales) that search counts by default (README §7)");
    hid_t d = H5Oopen(f, "format_bits", H5P_DEFAULT);
    if (d < 0) h5_ok(f, -1, "format_bits");
    h5_attr_str(d, "bits_convention", "modelopt");
    h5_ok(f, H5Oclose(d), "format_bits");
    hid_t g = group_create(f, "formats");
    write_strs(g, "definition", defs, t->nf);
    h5_describe(g, "definition", NULL,
                "one JSON record per format, in the order of the root attribute format and of the columns of "
                "/groups/score: name, bits (ModelOpt's convention), numerics and definition (the quant_cfg as "
                "loaded); search uses these, never a format file of the same name");
    h5_ok(f, H5Gclose(g), "/formats");
    for (int i = 0; i < t->nf; i++) free(defs[i]);
}

const char* table_score_units(const ScoreTable* t) { return strcmp(t->method, "kl") == 0 ? "nats" : "nats^2"; }

// /groups/window_scores [groups, formats, windows]: each window's contribution, for search --bootstrap.
static void write_window_scores(hid_t g, const ScoreTable* t) {
    size_t nf = t->nf, ng = t->ng, nw = t->nw;
    double* v = xmalloc(sizeof(double) * ng * nf * nw);
    for (size_t w = 0; w < nw; w++)
        for (size_t f = 0; f < nf; f++)
            for (size_t i = 0; i < ng; i++) v[(i * nf + f) * nw + w] = t->wscore[(w * nf + f) * ng + i];
    hsize_t dims[3] = {ng, nf, nw};
    h5_write(g, "window_scores", H5T_NATIVE_DOUBLE, 3, dims, v);
    free(v);
    h5_describe(g, "window_scores", table_score_units(t),
                "[groups, formats, windows]: each calibration window's contribution to /groups/score (their "
                "sum over windows, up to rounding); search --bootstrap resamples the windows. Written by "
                "every scorer of one process (CPU, one or several GPUs); absent for --nccl-init runs");
}

static void write_groups(hid_t f, const ScoreTable* t) {
    hid_t g = group_create(f, "groups");
    write_strs(g, "name", t->gname, t->ng);
    h5_describe(g, "name", NULL, "each group's name; groups share one quantization decision (README §5)");
    write_strs(g, "members", t->gmembers, t->ng);
    h5_describe(g, "members", NULL, "each group's linears, comma-joined full module names");
    hsize_t ng = (hsize_t)t->ng, nf = (hsize_t)t->nf;
    // One format: score is [G]; several: [G, F] (row g holds every format's score).
    double* sc = xmalloc(sizeof(double) * t->ng * t->nf);
    for (int i = 0; i < t->ng; i++)
        for (int k = 0; k < t->nf; k++) sc[i * t->nf + k] = t->score[(size_t)k * t->ng + i];
    hsize_t sdims[2] = {ng, nf};
    h5_write(g, "score", H5T_NATIVE_DOUBLE, t->nf > 1 ? 2 : 1, sdims, sc);
    free(sc);
    h5_describe(
        g, "score", table_score_units(t),
        strcmp(t->method, "kl") == 0
            ? "sensitivity of each group ([groups], or [groups, formats] with several formats, column f the "
              "format of /formats/definition[f]): KL(P || Q_g) in nats, summed over calibration windows, "
              "positions and the vocabulary, Q_g the model with only group g quantized (README §6); 0 for a "
              "disabled group"
            : "sensitivity of each group ([groups], or [groups, formats] with several formats, column f the "
              "format of /formats/definition[f]): ModelOpt's Fisher proxy, the sum over calibration windows, "
              "the group's linears and their output elements of (dL/dY * dY)^2, L a window's mean next-token "
              "cross-entropy in nats, so nats squared (README §6); 0 for a disabled group");
    if (t->nw) write_window_scores(g, t);
    h5_write(g, "params", H5T_NATIVE_LONG, 1, &ng, t->params);
    h5_describe(g, "params", "parameters", "weights each group stores: the sum of out x in over its linears");
    h5_write(g, "active_params", H5T_NATIVE_LONG, 1, &ng, t->active);
    h5_describe(g, "active_params", "parameters",
                "weights a token reads: params, or for a mixture-of-experts layer's experts group params x "
                "num_experts_per_tok / num_experts (search --cost active)");
    h5_write(g, "disabled", H5T_NATIVE_UINT8, 1, &ng, t->disabled);
    h5_describe(g, "disabled", NULL,
                "1: a member matches --disabled-layers and the group stays bf16, unscored; 0: a candidate");
    h5_ok(f, H5Gclose(g), "/groups");
}

static void write_layers(hid_t f, const ScoreTable* t) {
    hid_t g = group_create(f, "layers");
    write_strs(g, "name", t->lname, t->nl);
    h5_describe(g, "name", NULL, "every candidate linear's full module name");
    hsize_t ldims[2] = {(hsize_t)t->nl, 2};
    h5_write(g, "shape", H5T_NATIVE_LONG, 2, ldims, t->lshape);
    h5_describe(g, "shape", NULL, "[linears, 2]: each linear's weight shape, out_features and in_features");
    h5_write(g, "group", H5T_NATIVE_INT, 1, ldims, t->lgroup);
    h5_describe(g, "group", NULL, "each linear's group: a row index of /groups");
    h5_ok(f, H5Gclose(g), "/layers");
}

// /coverage/<experts group>: tokens routed to each expert (i64).
static void write_coverage(hid_t f, const ScoreTable* t) {
    hid_t c = group_create(f, "coverage");
    hsize_t edims[1] = {(hsize_t)t->n_experts};
    for (int r = 0; r < t->n_cov; r++) {
        h5_write(c, t->cov_name[r], H5T_NATIVE_LONG, 1, edims, t->cov_tokens + (size_t)r * t->n_experts);
        h5_describe(c, t->cov_name[r], "tokens",
                    "tokens of the calibration windows routed to each expert of this layer in the unquantized "
                    "passes (README §6)");
    }
    attr_num(c, "min_expert_tokens", H5T_NATIVE_INT, &t->min_expert_tokens);
    h5_attr_str(c, "description",
                "per experts group, tokens routed to each expert; experts below min_expert_tokens were warned "
                "about");
    h5_ok(f, H5Gclose(c), "/coverage");
}

// /domains (score --data NAME=FILE ...): each domain's name, windows and scores [domains, groups, formats].
static void write_domains(hid_t f, const ScoreTable* t) {
    hid_t g = group_create(f, "domains");
    char* names[MAX_DOMAINS];
    for (int d = 0; d < t->nd; d++) names[d] = (char*)t->dname[d];
    write_strs(g, "name", names, t->nd);
    h5_describe(g, "name", NULL, "each calibration domain's name (score --data NAME=FILE), in window order");
    hsize_t nd = (hsize_t)t->nd;
    h5_write(g, "num_samples", H5T_NATIVE_INT, 1, &nd, t->dsamples);
    h5_describe(g, "num_samples", NULL,
                "each domain's windows: the file's windows are the domains' in order (rows of "
                "/groups/window_scores' last axis)");
    size_t ng = t->ng, nf = t->nf;
    double* v = xmalloc(sizeof(double) * t->nd * ng * nf);
    for (int d = 0; d < t->nd; d++)
        for (size_t i = 0; i < ng; i++)
            for (size_t k = 0; k < nf; k++)
                v[((size_t)d * ng + i) * nf + k] = t->dscore[((size_t)d * nf + k) * ng + i];
    hsize_t dims[3] = {nd, ng, nf};
    h5_write(g, "score", H5T_NATIVE_DOUBLE, 3, dims, v);
    free(v);
    h5_describe(g, "score", table_score_units(t),
                "[domains, groups, formats]: /groups/score of each domain's windows alone (their sum over "
                "domains is /groups/score, up to rounding)");
    h5_ok(f, H5Gclose(g), "/domains");
}

// /memory (README §8): what search --memory-budget counts beside the groups.
static void write_memory(hid_t f, const ScoreTable* t) {
    hid_t g = group_create(f, "memory");
    h5_attr_str(g, "description",
                "what a byte budget (search --memory-budget) counts beside the groups: the parameters outside "
                "the candidate linears and each full-attention layer's KV cache per token (README §7)");
    hsize_t one = 1, n = (hsize_t)t->n_kvl;
    h5_write(g, "other_params", H5T_NATIVE_LONG, 1, &one, &t->other_params);
    h5_describe(
        g, "other_params", "parameters",
        "[1]: parameters a server loads outside the candidate linears (every checkpoint tensor but "
        "mtp.*: embeddings, lm_head unless tied, norms, routers, vision tower, ...), counted at 16 bits");
    char** names = t->n_kvl ? t->kvl_name : (char*[]){""};
    write_strs(g, "kv_layer", names, t->n_kvl);
    h5_describe(g, "kv_layer", NULL,
                "each full-attention layer's KV-cache group name (<layer>.self_attn.kv_cache); Gated DeltaNet "
                "layers keep a fixed-size state and have none");
    h5_write(g, "kv_values", H5T_NATIVE_LONG, 1, &n, t->kvl_values);
    h5_describe(g, "kv_values", "values per token",
                "K and V values each token adds to that layer's cache: 2 x num_key_value_heads x head_dim");
    h5_ok(f, H5Gclose(g), "/memory");
}

long table_h5_create(const ScoreTable* t, const char* path) {
    // What table_read_h5 would reject is refused here, before anything is written.
    if (!utf8_ok(t->model)) fail_input("%s: the model path is not valid UTF-8", path);
    if (!utf8_ok(t->disabled_csv)) fail_input("%s: --disabled-layers is not valid UTF-8", path);
    h5_init();
    // libhdf5 opens files by name and follows links: the file is created in a fresh folder of our own
    // (mkdtemp: unpredictable name, mode 0700) beside PATH, where nothing can be planted, and renamed
    // into place by table_h5_finish. The 1.8 file format (superblock and object headers version 2)
    // checksums every piece of metadata: libhdf5 then refuses damaged metadata instead of decoding it
    // (table_read_h5); the root attribute checksum covers the data.
    char* dir = xmalloc(strlen(path) + 16);
    sprintf(dir, "%s.tmp.XXXXXX", path);
    if (!mkdtemp(dir)) fail_input("%s: cannot create a temporary folder beside it: %s", path, strerror(errno));
    tmp_register(dir); // removed after the file inside: cleanup goes newest first
    char* tmp = path_join(dir, H5_TMP_NAME);
    tmp_register(tmp);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18) < 0)
        fail_other("HDF5: cannot set the file format version");
    hid_t f = H5Fcreate(tmp, H5F_ACC_EXCL, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) fail_input("%s: cannot create HDF5 file", path);
    free(tmp);
    free(dir);
    h5_attr_str(
        f, "description",
        "autoq scores: each layer group's sensitivity to quantization (README §8 lists every dataset and "
        "attribute)");
    h5_attr_str(f, "model", t->model);
    h5_attr_str(f, "method", t->method);
    h5_attr_str(f, "numerics", t->numerics);
    h5_attr_str(f, "quantizer", t->quantizer[0] ? t->quantizer : "rtn"); // a table built without one: rtn
    h5_attr_str(f, "disabled_layers", t->disabled_csv);
    attr_num(f, "num_samples", H5T_NATIVE_INT, &t->num_samples);
    attr_num(f, "seq_len", H5T_NATIVE_INT, &t->seq_len);
    int version = SCORES_FORMAT_VERSION;
    attr_num(f, "format_version", H5T_NATIVE_INT, &version);
    write_formats(f, t);
    write_groups(f, t);
    write_layers(f, t);
    if (t->n_cov) write_coverage(f, t);
    if (t->nd) write_domains(f, t);
    if (t->has_memory) write_memory(f, t);
    return (long)f;
}

void table_h5_stamp(long file, const char* path) {
    hid_t f = (hid_t)file;
    H5In in = {f, path};
    char sum[32];
    snprintf(sum, sizeof(sum), "crc32:%08x", h5_checksum(&in));
    if (H5Aexists(f, "checksum") > 0) H5Adelete(f, "checksum");
    h5_attr_str(f, "checksum", sum);
}

void table_h5_finish(long file, const char* path) {
    hid_t f = (hid_t)file;
    table_h5_stamp(file, path);
    char tmp[PATH_MAX + 64];
    ssize_t n = H5Fget_name(f, tmp, sizeof(tmp));
    if (n <= 0 || n >= (ssize_t)sizeof(tmp)) fail_other("%s: HDF5 lost the temporary file's name", path);
    if (H5Fclose(f) < 0) fail_other("%s: HDF5 close failed (disk full?)", path);
    if (rename(tmp, path) != 0) fail_other("%s: cannot rename into place: %s", path, strerror(errno));
    tmp_unregister(tmp);
    tmp[n - strlen("/" H5_TMP_NAME)] = 0; // the folder
    rmdir(tmp);
    tmp_unregister(tmp);
}

// ---- reading ----
// Every HDF5 call is checked and every object's class, rank, shape and size validated before
// it is read, so a damaged or hostile file ends in one clear message (exit 2), never in an
// overflow or in libhdf5's own error stack.

// Whether name ("a" or "a/b") exists, each part a hard link: a soft or external link could point
// into another file or loop, and autoq never writes one. H5Lexists on "a/b" needs "a" first.
static int h5_exists(const H5In* in, const char* name) {
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", name);
    for (char* p = buf;; p++) {
        if (*p && *p != '/') continue;
        char c = *p;
        *p = 0;
        htri_t e = H5Lexists(in->f, buf, H5P_DEFAULT);
        H5L_info_t li;
        if (e > 0 && (H5Lget_info(in->f, buf, &li, H5P_DEFAULT) < 0 || li.type != H5L_TYPE_HARD))
            table_bad(in->path, buf, "is a soft or external link; autoq writes none");
        *p = c;
        if (e <= 0) return 0;
        if (!c) return 1;
    }
}

// A number type libhdf5 converts natively: a standard integer or IEEE float of either byte order.
// A custom one (odd precision, offset, exponent bias) is nothing autoq writes.
static int std_number(hid_t type) {
    static const hid_t* const std[] = {
        &H5T_STD_I8LE_g,  &H5T_STD_I8BE_g,   &H5T_STD_U8LE_g,   &H5T_STD_U8BE_g,   &H5T_STD_I16LE_g,
        &H5T_STD_I16BE_g, &H5T_STD_U16LE_g,  &H5T_STD_U16BE_g,  &H5T_STD_I32LE_g,  &H5T_STD_I32BE_g,
        &H5T_STD_U32LE_g, &H5T_STD_U32BE_g,  &H5T_STD_I64LE_g,  &H5T_STD_I64BE_g,  &H5T_STD_U64LE_g,
        &H5T_STD_U64BE_g, &H5T_IEEE_F32LE_g, &H5T_IEEE_F32BE_g, &H5T_IEEE_F64LE_g, &H5T_IEEE_F64BE_g};
    for (size_t i = 0; i < sizeof(std) / sizeof(std[0]); i++)
        if (H5Tequal(type, *std[i]) > 0) return 1;
    return 0;
}

// A fixed-length string type of 1 to maxlen bytes in ASCII or UTF-8; exits 2 on anything else,
// a variable-length string above all (its data sits in the global heap, see the file's head).
static size_t fixed_str_size(const H5In* in, const char* name, hid_t type, size_t maxlen) {
    htri_t vl = H5Tis_variable_str(type);
    if (vl < 0) table_bad(in->path, name, "unreadable string type");
    if (vl) table_bad(in->path, name, "is a variable-length string; autoq writes fixed-length strings");
    H5T_cset_t cs = H5Tget_cset(type);
    if (cs != H5T_CSET_ASCII && cs != H5T_CSET_UTF8)
        table_bad(in->path, name, "strings are neither ASCII nor UTF-8");
    size_t size = H5Tget_size(type);
    if (size == 0 || size > maxlen)
        table_bad(in->path, name, "fixed-length strings of %zu bytes are out of range", size);
    return size;
}

// The memory type for reading strings of the file type `type`: same size and character set, NUL-padded.
static hid_t fixed_str_mem(hid_t type, size_t size) {
    hid_t mem = H5Tcopy(H5T_C_S1);
    if (mem < 0 || H5Tset_size(mem, size) < 0 || H5Tset_strpad(mem, H5T_STR_NULLPAD) < 0 ||
        H5Tset_cset(mem, H5Tget_cset(type)) < 0)
        fail_other("HDF5: cannot make a string type");
    return mem;
}

typedef struct {
    hid_t d, type, space;
    int rank;
    hsize_t dims[3];
} Ds;

// The data of an autoq dataset is one contiguous or compact block inside the file, unfiltered:
// chunk indexes (B-trees), filters, external files and virtual sources are refused unread.
static void ds_check_storage(const H5In* in, const char* name, const Ds* ds) {
    hid_t pl = H5Dget_create_plist(ds->d);
    if (pl < 0) table_bad(in->path, name, "unreadable storage properties");
    H5D_layout_t lay = H5Pget_layout(pl);
    if (lay != H5D_CONTIGUOUS && lay != H5D_COMPACT)
        table_bad(in->path, name, "is chunked or virtual; autoq writes neither");
    if (H5Pget_nfilters(pl) != 0) table_bad(in->path, name, "is filtered; autoq writes no filters");
    if (H5Pget_external_count(pl) != 0)
        table_bad(in->path, name, "keeps its data in external files; autoq never does");
    H5Pclose(pl);
    hssize_t np = H5Sget_simple_extent_npoints(ds->space);
    size_t es = H5Tget_size(ds->type);
    hsize_t want = (hsize_t)np * es, size = 0; // np <= 2^22 x 2 and es <= 2^20 were checked
    if (np < 0 || H5Dget_storage_size(ds->d) != want)
        table_bad(in->path, name, "stores %llu bytes, its shape needs %llu",
                  (unsigned long long)H5Dget_storage_size(ds->d), (unsigned long long)want);
    haddr_t off = H5Dget_offset(ds->d);
    if (lay == H5D_CONTIGUOUS && want > 0 &&
        (off == HADDR_UNDEF || H5Fget_filesize(in->f, &size) < 0 || off > size || want > size - off))
        table_bad(in->path, name, "data lies outside the file (truncated?)");
}

// Opens a dataset of class cls and the given rank and checks its type; the caller checks the shape.
static void ds_open(const H5In* in, const char* name, H5T_class_t cls, int rank, Ds* ds) {
    static const char* const cls_name[] = {
        [H5T_INTEGER] = "integers", [H5T_FLOAT] = "floats", [H5T_STRING] = "strings"};
    memset(ds, 0, sizeof(*ds));
    if (!h5_exists(in, name)) table_bad(in->path, name, "missing (not an autoq scores file?)");
    ds->d = H5Dopen2(in->f, name, H5P_DEFAULT);
    if (ds->d < 0) table_bad(in->path, name, "cannot open as a dataset");
    ds->type = H5Dget_type(ds->d);
    if (ds->type < 0 || H5Tget_class(ds->type) != cls) table_bad(in->path, name, "must hold %s", cls_name[cls]);
    if (cls != H5T_STRING && !std_number(ds->type))
        table_bad(in->path, name, "is no standard integer or float type");
    ds->space = H5Dget_space(ds->d);
    if (ds->space < 0 || H5Sget_simple_extent_type(ds->space) != H5S_SIMPLE)
        table_bad(in->path, name, "has no simple shape");
    ds->rank = H5Sget_simple_extent_ndims(ds->space);
    if (ds->rank != rank) table_bad(in->path, name, "has %d dimensions, expected %d", ds->rank, rank);
    if (H5Sget_simple_extent_dims(ds->space, ds->dims, NULL) != rank)
        table_bad(in->path, name, "unreadable shape");
}

static void ds_close(Ds* ds) {
    H5Sclose(ds->space);
    H5Tclose(ds->type);
    H5Dclose(ds->d);
}

// A numeric dataset of exactly shape [d0] (rank 1) or [d0, d1] (rank 2), converted to mem.
static void read_num(const H5In* in, const char* name, H5T_class_t cls, hid_t mem, void* out, int rank,
                     hsize_t d0, hsize_t d1) {
    Ds ds;
    ds_open(in, name, cls, rank, &ds);
    if (ds.dims[0] != d0 || (rank == 2 && ds.dims[1] != d1))
        table_bad(in->path, name, "has shape [%llu%s%llu], expected [%llu%s%llu]",
                  (unsigned long long)ds.dims[0], rank == 2 ? ", " : "",
                  rank == 2 ? (unsigned long long)ds.dims[1] : 0ULL, (unsigned long long)d0,
                  rank == 2 ? ", " : "", rank == 2 ? (unsigned long long)d1 : 0ULL);
    ds_check_storage(in, name, &ds);
    if (H5Dread(ds.d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
        table_bad(in->path, name, "cannot read (damaged file?)");
    ds_close(&ds);
}

static char* check_str(const H5In* in, const char* name, int i, const char* s, size_t n, size_t maxlen,
                       int empty_ok) {
    if ((n == 0 && !empty_ok) || n > maxlen)
        table_bad(in->path, name, "element %d has %zu bytes (1 to %zu allowed)", i, n, maxlen);
    char* out = strndup(s, n);
    if (!out) fail_other("out of memory");
    if (strlen(out) != n || !utf8_ok(out)) table_bad(in->path, name, "element %d is not valid UTF-8 text", i);
    return out;
}

// A 1-D dataset of at most maxn fixed-length strings, each 1 (0 with empty_ok) to maxlen bytes of UTF-8.
static char** read_strs_ex(const H5In* in, const char* name, size_t maxlen, int maxn, int* n, int empty_ok) {
    Ds ds;
    ds_open(in, name, H5T_STRING, 1, &ds);
    if (ds.dims[0] > (hsize_t)maxn)
        table_bad(in->path, name, "has %llu elements (at most %d)", (unsigned long long)ds.dims[0], maxn);
    *n = (int)ds.dims[0];
    size_t size = fixed_str_size(in, name, ds.type, maxlen);
    if ((size_t)*n * size > MAX_READ_BYTES)
        table_bad(in->path, name, "fixed-length strings of %zu bytes are out of range", size);
    ds_check_storage(in, name, &ds);
    hid_t mem = fixed_str_mem(ds.type, size);
    char* buf = xcalloc(*n ? (size_t)*n * size : 1, 1);
    if (H5Dread(ds.d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        table_bad(in->path, name, "cannot read (damaged file?)");
    char** out = xcalloc(*n ? *n : 1, sizeof(char*));
    for (int i = 0; i < *n; i++) {
        const char* s = buf + (size_t)i * size;
        out[i] = check_str(in, name, i, s, strnlen(s, size), maxlen, empty_ok);
    }
    free(buf);
    H5Tclose(mem);
    ds_close(&ds);
    return out;
}

static char** read_strs(const H5In* in, const char* name, size_t maxlen, int maxn, int* n) {
    return read_strs_ex(in, name, maxlen, maxn, n, 0);
}

static hid_t attr_open(const H5In* in, const char* name, H5T_class_t cls, hid_t* type) {
    if (H5Aexists(in->f, name) <= 0) table_bad(in->path, name, "attribute missing (not an autoq scores file?)");
    hid_t a = H5Aopen(in->f, name, H5P_DEFAULT);
    if (a < 0) table_bad(in->path, name, "cannot open the attribute");
    *type = H5Aget_type(a);
    hid_t sp = H5Aget_space(a);
    if (*type < 0 || H5Tget_class(*type) != cls)
        table_bad(in->path, name, "attribute must be a %s", cls == H5T_STRING ? "string" : "number");
    if (cls != H5T_STRING && !std_number(*type))
        table_bad(in->path, name, "attribute is no standard integer type");
    if (sp < 0 || H5Sget_simple_extent_npoints(sp) != 1)
        table_bad(in->path, name, "attribute must hold one value");
    H5Sclose(sp);
    return a;
}

static void read_attr_str(const H5In* in, const char* name, char* out, size_t cap) {
    hid_t type, a = attr_open(in, name, H5T_STRING, &type);
    memset(out, 0, cap);
    size_t size = fixed_str_size(in, name, type, (size_t)-1);
    if (size >= cap) table_bad(in->path, name, "attribute is longer than %zu bytes", cap - 1);
    hid_t mem = fixed_str_mem(type, size);
    if (H5Aread(a, mem, out) < 0) table_bad(in->path, name, "cannot read the attribute");
    H5Tclose(mem);
    if (!utf8_ok(out)) table_bad(in->path, name, "attribute is not valid UTF-8 text");
    H5Tclose(type);
    H5Aclose(a);
}

static long long read_attr_int(const H5In* in, const char* name, long long lo, long long hi) {
    hid_t type, a = attr_open(in, name, H5T_INTEGER, &type);
    long long v = 0;
    if (H5Aread(a, H5T_NATIVE_LLONG, &v) < 0) table_bad(in->path, name, "cannot read the attribute");
    if (v < lo || v > hi) table_bad(in->path, name, "attribute = %lld is out of range [%lld, %lld]", v, lo, hi);
    H5Tclose(type);
    H5Aclose(a);
    return v;
}

static void read_header(const H5In* in, ScoreTable* t) {
    read_attr_str(in, "model", t->model, sizeof(t->model));
    read_attr_str(in, "method", t->method, sizeof(t->method));
    if (strcmp(t->method, "kl") && strcmp(t->method, "gradient"))
        table_bad(in->path, "method", "attribute '%s' is neither kl nor gradient", t->method);
    read_attr_str(in, "numerics", t->numerics, sizeof(t->numerics));
    if (strcmp(t->numerics, "modelopt") && strcmp(t->numerics, "compressed-tensors"))
        table_bad(in->path, "numerics", "attribute '%s' is neither modelopt nor compressed-tensors",
                  t->numerics);
    snprintf(t->quantizer, sizeof(t->quantizer), "rtn"); // files written before GPTQ have none
    if (H5Aexists(in->f, "quantizer") > 0) read_attr_str(in, "quantizer", t->quantizer, sizeof(t->quantizer));
    if (strcmp(t->quantizer, "rtn") && strcmp(t->quantizer, "gptq"))
        table_bad(in->path, "quantizer", "attribute '%s' is neither rtn nor gptq", t->quantizer);
    read_attr_str(in, "disabled_layers", t->disabled_csv, sizeof(t->disabled_csv));
    t->num_samples = (int)read_attr_int(in, "num_samples", 1, 1 << 30);
    t->seq_len = (int)read_attr_int(in, "seq_len", 1, 1 << 30);
    if (H5Aexists(in->f, "format_version") > 0) // files before version 2 have none
        read_attr_int(in, "format_version", 1, SCORES_FORMAT_VERSION);
}

// Files of autoq before /formats/definition: the names in attribute `format` are looked up among
// the built-in formats, never opened as paths.
static int read_formats_by_name(const H5In* in, ScoreTable* t, int ct) {
    char names[MAX_FORMATS * 65];
    read_attr_str(in, "format", names, sizeof(names));
    int n = 0;
    char* save = NULL;
    for (char* tok = strtok_r(names, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == MAX_FORMATS)
            table_bad(in->path, "format", "attribute names more than %d formats", MAX_FORMATS);
        if (strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != strlen(tok))
            table_bad(in->path, "format",
                      "attribute names '%s', which is no built-in format (the file stores no definitions)",
                      tok);
        warn_msg("%s: no stored format definitions (written by an older autoq); using built-in format '%s'",
                 in->path, tok);
        format_load(&t->fmts[n++], tok, ct);
    }
    if (n == 0) table_bad(in->path, "format", "attribute is empty");
    return n;
}

static int read_formats_stored(const H5In* in, ScoreTable* t) {
    const char* name = "formats/definition";
    int n;
    char** defs = read_strs(in, name, FORMAT_DEF_MAX * 2, MAX_FORMATS, &n);
    if (n == 0) table_bad(in->path, name, "holds no format");
    for (int i = 0; i < n; i++) {
        json_error_t err;
        json_t* j = json_loads(defs[i], JSON_REJECT_DUPLICATES, &err);
        if (!j) table_bad(in->path, name, "element %d is not JSON: %s", i, err.text);
        char where[600];
        snprintf(where, sizeof(where), "%s: /%s[%d]", in->path, name, i);
        format_from_json(&t->fmts[i], j, where);
        json_decref(j);
        for (int k = 0; k < i; k++)
            if (strcmp(t->fmts[k].name, t->fmts[i].name) == 0)
                table_bad(in->path, name, "two formats are named '%s'", t->fmts[i].name);
    }
    table_free_strs(defs, n);
    // The README §8 attribute must name the same formats.
    char attr[MAX_FORMATS * 65], want[MAX_FORMATS * 65] = "";
    read_attr_str(in, "format", attr, sizeof(attr));
    for (int i = 0; i < n; i++) {
        if (i) strcat(want, ",");
        strcat(want, t->fmts[i].name);
    }
    if (strcmp(attr, want))
        table_bad(in->path, "format", "attribute '%s' disagrees with /%s ('%s')", attr, name, want);
    return n;
}

static void read_formats(const H5In* in, ScoreTable* t) {
    int ct = strcmp(t->numerics, "compressed-tensors") == 0;
    t->nf = h5_exists(in, "formats/definition") ? read_formats_stored(in, t) : read_formats_by_name(in, t, ct);
    int bits[MAX_FORMATS];
    read_num(in, "format_bits", H5T_INTEGER, H5T_NATIVE_INT, bits, 1, (hsize_t)t->nf, 0);
    for (int i = 0; i < t->nf; i++) {
        if (bits[i] != t->fmts[i].bits)
            table_bad(in->path, "format_bits", "[%d] = %d, but format '%s' costs %d bits", i, bits[i],
                      t->fmts[i].name, t->fmts[i].bits);
        if (t->fmts[i].w.ct != ct)
            table_bad(in->path, "numerics", "attribute '%s' disagrees with format '%s'", t->numerics,
                      t->fmts[i].name);
    }
}

static void read_groups(const H5In* in, ScoreTable* t) {
    t->gname = read_strs(in, "groups/name", MAX_NAME, MAX_GROUPS, &t->ng);
    if (t->ng == 0) table_bad(in->path, "groups/name", "holds no group");
    int n2;
    t->gmembers = read_strs_ex(in, "groups/members", MAX_MEMBERS, MAX_GROUPS, &n2, 1); // KV-cache groups: ""

    if (n2 != t->ng) table_bad(in->path, "groups/members", "has %d rows, /groups/name %d", n2, t->ng);
    hsize_t ng = (hsize_t)t->ng;
    t->params = xmalloc(sizeof(long) * t->ng);
    t->disabled = xmalloc(t->ng);
    read_num(in, "groups/params", H5T_INTEGER, H5T_NATIVE_LONG, t->params, 1, ng, 0);
    read_num(in, "groups/disabled", H5T_INTEGER, H5T_NATIVE_UINT8, t->disabled, 1, ng, 0);
    table_mark_kv(t);
    double* sc = xmalloc(sizeof(double) * t->ng * t->nf);
    read_num(in, "groups/score", H5T_FLOAT, H5T_NATIVE_DOUBLE, sc, t->nf > 1 ? 2 : 1, ng, (hsize_t)t->nf);
    t->score = xmalloc(sizeof(double) * t->ng * t->nf);
    for (int i = 0; i < t->ng; i++)
        for (int k = 0; k < t->nf; k++) t->score[(size_t)k * t->ng + i] = sc[(size_t)i * t->nf + k];
    free(sc);
    table_check_group_values(t, in->path);
    t->active = xmalloc(sizeof(long) * t->ng); // checked against params, which are checked above
    if (h5_exists(in, "groups/active_params")) // scores of mixture-of-experts models (--cost active)
        read_num(in, "groups/active_params", H5T_INTEGER, H5T_NATIVE_LONG, t->active, 1, ng, 0);
    else
        memcpy(t->active, t->params, sizeof(long) * t->ng);
    for (int g = 0; g < t->ng; g++)
        if (table_kv(t, g) ? t->active[g] != 0 : (t->active[g] < 1 || t->active[g] > t->params[g]))
            table_bad(in->path, "groups/active_params", "group %s reads %ld of its %ld parameters per token",
                      t->gname[g], t->active[g], t->params[g]);
}

// /groups/window_scores, when present: [groups, formats, num_samples], finite and >= 0.
static void read_window_scores(const H5In* in, ScoreTable* t) {
    const char* name = "groups/window_scores";
    if (!h5_exists(in, name)) return;
    Ds ds;
    ds_open(in, name, H5T_FLOAT, 3, &ds);
    size_t ng = t->ng, nf = t->nf, nw = t->num_samples;
    if (ds.dims[0] != ng || ds.dims[1] != nf || ds.dims[2] != nw)
        table_bad(in->path, name,
                  "has shape [%llu, %llu, %llu], expected [%zu, %zu, %zu] (groups, formats, "
                  "num_samples)",
                  (unsigned long long)ds.dims[0], (unsigned long long)ds.dims[1],
                  (unsigned long long)ds.dims[2], ng, nf, nw);
    if (ng * nf > MAX_READ_BYTES / sizeof(double) / nw)
        table_bad(in->path, name, "holds more than %ld bytes", MAX_READ_BYTES);
    ds_check_storage(in, name, &ds);
    double* v = xmalloc(sizeof(double) * ng * nf * nw);
    if (H5Dread(ds.d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0)
        table_bad(in->path, name, "cannot read (damaged file?)");
    ds_close(&ds);
    t->nw = (int)nw;
    t->wscore = xmalloc(sizeof(double) * ng * nf * nw);
    for (size_t i = 0; i < ng; i++)
        for (size_t f = 0; f < nf; f++)
            for (size_t w = 0; w < nw; w++) {
                double x = v[(i * nf + f) * nw + w];
                if (!isfinite(x) || x < 0)
                    table_bad(in->path, name, "group %s, format %s, window %zu holds %g (finite and >= 0)",
                              t->gname[i], t->fmts[f].name, w, x);
                t->wscore[(w * nf + f) * ng + i] = x;
            }
    free(v);
}

// /domains, when present: names unique, windows summing to num_samples, scores finite and >= 0.
static void read_domains(const H5In* in, ScoreTable* t) {
    if (!h5_exists(in, "domains/name")) return;
    int nd;
    char** names = read_strs(in, "domains/name", MAX_DOMAIN_NAME, MAX_DOMAINS, &nd);
    if (nd < 1) table_bad(in->path, "domains/name", "holds no domain");
    t->nd = nd;
    for (int d = 0; d < nd; d++) {
        snprintf(t->dname[d], sizeof(t->dname[d]), "%s", names[d]);
        for (int e = 0; e < d; e++)
            if (!strcmp(t->dname[e], t->dname[d]))
                table_bad(in->path, "domains/name", "two domains are named '%s'", names[d]);
    }
    table_free_strs(names, nd);
    read_num(in, "domains/num_samples", H5T_INTEGER, H5T_NATIVE_INT, t->dsamples, 1, (hsize_t)nd, 0);
    long total = 0;
    for (int d = 0; d < nd; d++) {
        if (t->dsamples[d] < 1)
            table_bad(in->path, "domains/num_samples", "[%d] = %d (at least 1)", d, t->dsamples[d]);
        total += t->dsamples[d];
    }
    if (total != t->num_samples)
        table_bad(in->path, "domains/num_samples", "sums to %ld, the root attribute num_samples is %d", total,
                  t->num_samples);
    const char* name = "domains/score";
    Ds ds;
    ds_open(in, name, H5T_FLOAT, 3, &ds);
    size_t ng = t->ng, nf = t->nf;
    if (ds.dims[0] != (hsize_t)nd || ds.dims[1] != ng || ds.dims[2] != nf)
        table_bad(in->path, name,
                  "has shape [%llu, %llu, %llu], expected [%d, %zu, %zu] (domains, groups, formats)",
                  (unsigned long long)ds.dims[0], (unsigned long long)ds.dims[1],
                  (unsigned long long)ds.dims[2], nd, ng, nf);
    ds_check_storage(in, name, &ds);
    double* v = xmalloc(sizeof(double) * nd * ng * nf);
    if (H5Dread(ds.d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0)
        table_bad(in->path, name, "cannot read (damaged file?)");
    ds_close(&ds);
    t->dscore = xmalloc(sizeof(double) * nd * ng * nf);
    for (int d = 0; d < nd; d++)
        for (size_t i = 0; i < ng; i++)
            for (size_t k = 0; k < nf; k++) {
                double x = v[((size_t)d * ng + i) * nf + k];
                if (!isfinite(x) || x < 0)
                    table_bad(in->path, name, "domain %s, group %s, format %s holds %g (finite and >= 0)",
                              t->dname[d], t->gname[i], t->fmts[k].name, x);
                t->dscore[((size_t)d * nf + k) * ng + i] = x;
            }
    free(v);
}

static void read_layers(const H5In* in, ScoreTable* t) {
    t->lname = read_strs(in, "layers/name", MAX_NAME, MAX_LAYERS, &t->nl);
    if (t->nl == 0) table_bad(in->path, "layers/name", "holds no layer");
    t->lshape = xmalloc(sizeof(long) * 2 * t->nl);
    t->lgroup = xmalloc(sizeof(int) * t->nl);
    read_num(in, "layers/shape", H5T_INTEGER, H5T_NATIVE_LONG, t->lshape, 2, (hsize_t)t->nl, 2);
    read_num(in, "layers/group", H5T_INTEGER, H5T_NATIVE_INT, t->lgroup, 1, (hsize_t)t->nl, 0);
    for (int i = 0; i < t->nl; i++) {
        if (t->lgroup[i] < 0 || t->lgroup[i] >= t->ng)
            table_bad(in->path, "layers/group", "[%d] = %d is not a group index (0 to %d)", i, t->lgroup[i],
                      t->ng - 1);
        for (int k = 0; k < 2; k++)
            if (t->lshape[2 * i + k] < 1 || t->lshape[2 * i + k] > MAX_DIM)
                table_bad(in->path, "layers/shape", "layer %s has dimension %ld (1 to 2^24 allowed)",
                          t->lname[i], t->lshape[2 * i + k]);
    }
}

// /memory, when present (files written before it have none: search --memory-budget refuses them).
static void read_memory(const H5In* in, ScoreTable* t) {
    if (!h5_exists(in, "memory/other_params")) return;
    t->has_memory = 1;
    read_num(in, "memory/other_params", H5T_INTEGER, H5T_NATIVE_LONG, &t->other_params, 1, 1, 0);
    if (t->other_params < 0 || t->other_params > (1L << 40))
        table_bad(in->path, "memory/other_params", "%ld parameters is out of range (0 to 2^40)",
                  t->other_params);
    t->kvl_name = read_strs(in, "memory/kv_layer", MAX_NAME, MAX_LAYERS, &t->n_kvl);
    t->kvl_values = xmalloc(sizeof(long) * (t->n_kvl ? t->n_kvl : 1));
    read_num(in, "memory/kv_values", H5T_INTEGER, H5T_NATIVE_LONG, t->kvl_values, 1, (hsize_t)t->n_kvl, 0);
    for (int i = 0; i < t->n_kvl; i++)
        if (t->kvl_values[i] < 1 || t->kvl_values[i] > (1L << 24))
            table_bad(in->path, "memory/kv_values", "[%d] = %ld values per token (1 to 2^24)", i,
                      t->kvl_values[i]);
    for (int g = 0; g < t->ng; g++) {
        int found = !table_kv(t, g);
        for (int i = 0; i < t->n_kvl && !found; i++) found = strcmp(t->kvl_name[i], t->gname[g]) == 0;
        if (!found)
            table_bad(in->path, "groups/name", "KV-cache group %s is not a layer of /memory/kv_layer",
                      t->gname[g]);
    }
}

// ---- the data checksum (README §8) ----
// HDF5 1.8 files checksum their metadata but not the data; the root attribute checksum covers the
// rest: CRC-32 (zlib's polynomial, so Python's zlib.crc32 gives the same) over every object, depth
// first with each group's links in increasing name order, the root first: each attribute of the
// object in increasing name order as "<object path>@<name>" NUL <its bytes as stored>, then a
// dataset's "<path>" NUL <its bytes as stored> (row-major, numbers in the file's byte order,
// strings NUL-padded). The root's own checksum attribute is left out.
#define SUM_MAX_OBJECTS 4096 // groups and datasets of one file
#define SUM_MAX_ATTRS 64     // attributes of one object
#define SUM_MAX_NAME 256     // bytes of an attribute or link name
#define SUM_MAX_ATTR_BYTES (1 << 20)

static uint32_t crc32_update(uint32_t crc, const void* data, size_t n) {
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
            table[i] = c;
        }
    const unsigned char* p = data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

typedef struct {
    const H5In* in;
    uint32_t crc;
    int objects;
} Sum;

static void sum_name(Sum* s, const char* a, const char* b) {
    s->crc = crc32_update(s->crc, a, strlen(a));
    if (b) s->crc = crc32_update(s->crc, "@", 1), s->crc = crc32_update(s->crc, b, strlen(b));
    s->crc = crc32_update(s->crc, "", 1);
}

typedef struct {
    char name[SUM_MAX_ATTRS][SUM_MAX_NAME];
    int n, bad;
} AttrNames;

// Collects names only: nothing in a libhdf5 callback may exit (the fuzzers' exit is a longjmp).
static herr_t attr_name_cb(hid_t loc, const char* name, const H5A_info_t* info, void* data) {
    (void)loc, (void)info;
    AttrNames* l = data;
    if (l->n == SUM_MAX_ATTRS || strlen(name) >= SUM_MAX_NAME) {
        l->bad = 1;
        return 1;
    }
    snprintf(l->name[l->n++], SUM_MAX_NAME, "%s", name);
    return 0;
}

// A type autoq writes: a standard integer or float, or a fixed-length string of at most maxlen bytes.
static void sum_check_type(const Sum* s, const char* obj, hid_t type, size_t maxlen) {
    H5T_class_t cls = type < 0 ? H5T_NO_CLASS : H5Tget_class(type);
    if (cls == H5T_STRING)
        fixed_str_size(s->in, obj, type, maxlen);
    else if ((cls != H5T_INTEGER && cls != H5T_FLOAT) || !std_number(type))
        table_bad(s->in->path, obj, "is neither a standard number nor a fixed-length string");
}

static void sum_attrs(Sum* s, hid_t obj, const char* path) {
    static AttrNames l; // 16 KiB: off the stack
    memset(&l, 0, sizeof(l));
    hsize_t idx = 0;
    if (H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, &idx, attr_name_cb, &l) < 0 || l.bad)
        table_bad(s->in->path, path, "unreadable attributes (or more than %d)", SUM_MAX_ATTRS);
    for (int i = 0; i < l.n; i++) {
        if (strcmp(path, "/") == 0 && strcmp(l.name[i], "checksum") == 0) continue;
        char what[600];
        snprintf(what, sizeof(what), "%s@%s", path, l.name[i]);
        hid_t a = H5Aopen(obj, l.name[i], H5P_DEFAULT);
        if (a < 0) table_bad(s->in->path, what, "cannot open the attribute");
        hid_t type = H5Aget_type(a), sp = H5Aget_space(a);
        sum_check_type(s, what, type, SUM_MAX_ATTR_BYTES);
        hssize_t np = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
        size_t es = H5Tget_size(type);
        if (np < 0 || es == 0 || (size_t)np > SUM_MAX_ATTR_BYTES / es)
            table_bad(s->in->path, what, "attribute holds more than %d bytes", SUM_MAX_ATTR_BYTES);
        size_t bytes = (size_t)np * es;
        char* buf = xcalloc(bytes ? bytes : 1, 1);
        if (bytes && H5Aread(a, type, buf) < 0) table_bad(s->in->path, what, "cannot read the attribute");
        sum_name(s, path, l.name[i]);
        s->crc = crc32_update(s->crc, buf, bytes);
        free(buf);
        H5Sclose(sp);
        H5Tclose(type);
        H5Aclose(a);
    }
}

static void sum_dataset(Sum* s, hid_t d, const char* path) {
    Ds ds = {.d = d};
    ds.type = H5Dget_type(d);
    sum_check_type(s, path, ds.type, MAX_MEMBERS);
    ds.space = H5Dget_space(d);
    if (ds.space < 0 || H5Sget_simple_extent_type(ds.space) != H5S_SIMPLE)
        table_bad(s->in->path, path, "has no simple shape");
    ds.rank = H5Sget_simple_extent_ndims(ds.space);
    if (ds.rank < 1 || ds.rank > 3 || H5Sget_simple_extent_dims(ds.space, ds.dims, NULL) != ds.rank)
        table_bad(s->in->path, path, "has %d dimensions; autoq writes 1 to 3", ds.rank);
    size_t es = H5Tget_size(ds.type);
    hssize_t np = H5Sget_simple_extent_npoints(ds.space);
    if (np < 0 || (size_t)np > MAX_READ_BYTES / es)
        table_bad(s->in->path, path, "holds more than %ld bytes", MAX_READ_BYTES);
    ds_check_storage(s->in, path, &ds);
    size_t bytes = (size_t)np * es;
    char* buf = xcalloc(bytes ? bytes : 1, 1);
    if (bytes && H5Dread(d, ds.type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        table_bad(s->in->path, path, "cannot read (damaged file?)");
    sum_name(s, path, NULL);
    s->crc = crc32_update(s->crc, buf, bytes);
    free(buf);
    H5Sclose(ds.space);
    H5Tclose(ds.type);
}

// Group g at path ("/" or "/name"): its attributes, then every link's object by increasing name.
// autoq nests one level of groups under the root.
static void sum_group(Sum* s, hid_t g, const char* path, int depth) {
    sum_attrs(s, g, path);
    H5G_info_t gi;
    if (H5Gget_info(g, &gi) < 0) table_bad(s->in->path, path, "unreadable group");
    for (hsize_t i = 0; i < gi.nlinks; i++) {
        char name[SUM_MAX_NAME], child[SUM_MAX_NAME + 8];
        ssize_t len =
            H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof(name), H5P_DEFAULT);
        if (len <= 0 || len >= (ssize_t)sizeof(name))
            table_bad(s->in->path, path, "link %llu has an unreadable or too long name", (unsigned long long)i);
        snprintf(child, sizeof(child), "%s/%s", depth ? path : "", name);
        H5L_info_t li;
        if (H5Lget_info(g, name, &li, H5P_DEFAULT) < 0 || li.type != H5L_TYPE_HARD)
            table_bad(s->in->path, child, "is a soft or external link; autoq writes none");
        if (++s->objects > SUM_MAX_OBJECTS)
            table_bad(s->in->path, path, "holds more than %d objects", SUM_MAX_OBJECTS);
        hid_t o = H5Oopen(g, name, H5P_DEFAULT);
        H5I_type_t kind = o < 0 ? H5I_BADID : H5Iget_type(o);
        if (kind == H5I_GROUP && depth == 0)
            sum_group(s, o, child, 1);
        else if (kind == H5I_DATASET) {
            sum_attrs(s, o, child);
            sum_dataset(s, o, child);
        } else
            table_bad(s->in->path, child, "is neither a dataset nor a group under the root");
        H5Oclose(o);
    }
}

static uint32_t h5_checksum(const H5In* in) {
    Sum s = {in, 0, 0};
    sum_group(&s, in->f, "/", 0);
    return s.crc;
}

// The stored checksum against the data: the last check of a read, after every object was validated.
static void check_checksum(const H5In* in) {
    char stored[32];
    if (H5Aexists(in->f, "checksum") <= 0)
        table_bad(in->path, "checksum",
                  "attribute missing: the file was written by an autoq before data checksums (score again) or "
                  "by another program");
    read_attr_str(in, "checksum", stored, sizeof(stored));
    unsigned v = 0;
    int end = 0;
    if (sscanf(stored, "crc32:%8x%n", &v, &end) != 1 || end != 14 || stored[end])
        table_bad(in->path, "checksum", "attribute '%s' is not crc32: and 8 hex digits", stored);
    uint32_t got = h5_checksum(in);
    if (got != v)
        table_bad(in->path, "checksum",
                  "the data does not match: stored %08x, computed %08x (the file is damaged or was edited)", v,
                  got);
}

// Only checksummed metadata may reach libhdf5: its decoders trust what they read, and a damaged
// object header or heap of the older format overruns them (found by fuzzing). autoq writes the
// signature at offset 0 (no user block) and superblock version 2, whose metadata is checksummed;
// the version byte is checked here, before libhdf5 parses anything.
static void check_superblock(const char* path, const unsigned char* head, size_t n) {
    if (n < 9 || memcmp(head, "\x89HDF\r\n\x1a\n", 8) != 0) fail_input("%s: not an HDF5 file", path);
    if (head[8] < 2)
        fail_input("%s: HDF5 superblock version %d has no metadata checksums; autoq writes version 2 "
                   "(a file of an older autoq or another program?)",
                   path, head[8]);
}

// Opens the scores file from one read of its bytes (read_input: a regular file, bounded size, no
// race between the checks and the open): HDF5's core driver serves the image from memory, so the
// file on disk is never opened a second time.
static hid_t open_h5_image(const char* path, char** image) {
    size_t n = 0;
    *image = read_input(path, "scores file", MAX_H5_BYTES, &n);
    check_superblock(path, (const unsigned char*)*image, n);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fapl_core(fapl, 1 << 20, 0) < 0 || H5Pset_file_image(fapl, *image, n) < 0)
        fail_input("%s: cannot open the HDF5 image", path);
    // The core driver refuses the name of a file that exists on disk: the image gets one that
    // cannot (as the HDF5 high-level library's H5LTopen_file_image does).
    char name[64];
    snprintf(name, sizeof(name), "/proc/autoq-scores-image-%d-%p", (int)getpid(), (void*)*image);
    hid_t f = H5Fopen(name, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (f < 0) fail_input("%s: not an HDF5 file", path);
    return f;
}

void table_read_h5(ScoreTable* t, const char* path) {
    memset(t, 0, sizeof(*t));
    h5_init();
    char* image = NULL;
    hid_t f = open_h5_image(path, &image);
    H5In in = {f, path};
    read_header(&in, t);
    read_formats(&in, t);
    read_groups(&in, t);
    read_window_scores(&in, t);
    read_domains(&in, t);
    read_layers(&in, t);
    read_memory(&in, t);
    table_check_members(t, path);
    table_check_active(t, path);
    check_checksum(&in);
    H5Fclose(f);
    free(image);
}

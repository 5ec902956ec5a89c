// The HDF5 scores file (issues 11, 12, 25): stored format definitions survive a round trip through
// HDF5 and JSON, the hardened reader turns crafted and bit-flipped files into exit 2 with one clear
// message, never a crash or a hang, the data checksum catches every flipped bit that would change a
// recipe, active_params must follow from params, and every dataset and attribute written is the one
// README §8 lists. YAML, regex, recipe and export checks: tests/test_outputs.c.
#define _GNU_SOURCE
#include <hdf5.h>
#include <jansson.h>

#include "outputs_common.h"
#include "search/bootstrap.h"
#include "search/milp.h"
#include "search/recipe.h"
#include "search/refine.h"

// ---- editing an HDF5 file the way a damaged or hostile one would look ----
static hid_t h5_edit(const char* path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) fail_other("cannot open %s", path);
    return f;
}

static void h5_put(hid_t f, const char* name, hid_t type, int rank, const hsize_t* dims, const void* data) {
    if (H5Lexists(f, name, H5P_DEFAULT) > 0) H5Ldelete(f, name, H5P_DEFAULT);
    h5_write(f, name, type, rank, (const unsigned long long*)dims, data);
}

// String size for the helpers below: VLEN writes variable-length strings (what autoq refuses),
// 0 fixed-length ones as long as the longest, anything else fixed-length ones of that size.
#define VLEN ((size_t)-1)

static hid_t h5_str_type(const char* const* s, int n, size_t fixed) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (fixed == 0)
        for (int i = 0; i < n; i++) fixed = strlen(s[i]) > fixed ? strlen(s[i]) : fixed;
    H5Tset_size(t, fixed == VLEN ? H5T_VARIABLE : fixed ? fixed : 1);
    return t;
}

// n strings packed for type t: the pointers themselves for variable-length ones.
static void* h5_str_buf(hid_t t, const char* const* s, int n) {
    if (H5Tis_variable_str(t) > 0) return NULL;
    size_t size = H5Tget_size(t);
    char* buf = xcalloc(n, size);
    for (int i = 0; i < n; i++) strncpy(buf + i * size, s[i], size);
    return buf;
}

static void h5_put_strs(hid_t f, const char* name, const char** s, int n, size_t fixed) {
    hid_t t = h5_str_type(s, n, fixed);
    hsize_t d = (hsize_t)n;
    void* buf = h5_str_buf(t, s, n);
    h5_put(f, name, t, 1, &d, buf ? buf : (void*)s);
    free(buf);
    H5Tclose(t);
}

// A string attribute (size as for h5_put_strs), `n` copies (1: scalar).
static void h5_put_attr(hid_t f, const char* name, const char* v, size_t fixed, int n) {
    if (H5Aexists(f, name) > 0) H5Adelete(f, name);
    const char* vs[4] = {v, v, v, v};
    hid_t t = h5_str_type(vs, n, fixed);
    hsize_t d = (hsize_t)n;
    hid_t sp = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &d, NULL);
    hid_t a = H5Acreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    void* buf = h5_str_buf(t, vs, n);
    H5Awrite(a, t, buf ? buf : (void*)vs);
    free(buf);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
}

static void h5_put_attr_int(hid_t f, const char* name, long long v) {
    if (H5Aexists(f, name) > 0) H5Adelete(f, name);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, H5T_NATIVE_LLONG, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_LLONG, &v);
    H5Aclose(a);
    H5Sclose(sp);
}

static void read_child(const void* path) {
    ScoreTable t;
    table_read_h5(&t, path);
    SearchCtx c;
    search_init(&c, &t, SCOPE_CANDIDATES, COST_MEMORY, BITS_MODELOPT);
    table_free(&t);
}

typedef void (*Edit)(hid_t f);

// Writes the good table (ng groups), applies edit, and expects exit `want` naming `fragment`.
static void bad_h5(const char* name, int ng, Edit edit, int want, const char* fragment) {
    ScoreTable t;
    table_make(&t, ng, 1);
    char* path = tmp_path("bad.h5");
    table_write(&t, path);
    table_free(&t);
    hid_t f = h5_edit(path);
    edit(f);
    // A file that should read needs the checksum of its edited data; the validators a failing
    // edit is about run before the checksum is compared.
    if (want == 0) table_h5_stamp(f, path);
    H5Fclose(f);
    expect_exit(name, read_child, path, want, fragment);
}

static void e_name_rank2(hid_t f) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 1);
    hsize_t d[2] = {2, 2};
    h5_put(f, "groups/name", t, 2, d, "abcd");
    H5Tclose(t);
}
static void e_name_int(hid_t f) {
    int v[3] = {1, 2, 3};
    hsize_t d = 3;
    h5_put(f, "groups/name", H5T_NATIVE_INT, 1, &d, v);
}
static void e_name_fixed_long(hid_t f) {
    static char big[9000];
    memset(big, 'a', sizeof(big) - 1);
    const char* s[3] = {big, big, big};
    h5_put_strs(f, "groups/name", s, 3, sizeof(big));
}
static void e_name_fixed_ok(hid_t f) { // longer, NUL-terminated ASCII fixed-length strings read too
    const char* s[3] = {"model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj",
                        "model.layers.2.mlp.down_proj"};
    h5_put_strs(f, "groups/name", s, 3, 40);
    h5_put_attr(f, "model", "models/tiny", 16, 1);
}
static void e_name_vlen(hid_t f) {
    const char* s[3] = {"model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj",
                        "model.layers.2.mlp.down_proj"};
    h5_put_strs(f, "groups/name", s, 3, VLEN);
}
static void e_model_vlen(hid_t f) { h5_put_attr(f, "model", "models/tiny", VLEN, 1); }
static void e_score_chunked(hid_t f) {
    double v[3] = {1, 2, 3};
    hsize_t d = 3, chunk = 1;
    H5Ldelete(f, "groups/score", H5P_DEFAULT);
    hid_t sp = H5Screate_simple(1, &d, NULL), pl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(pl, 1, &chunk);
    hid_t ds = H5Dcreate2(f, "groups/score", H5T_NATIVE_DOUBLE, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(ds);
    H5Pclose(pl);
    H5Sclose(sp);
}
static void e_score_soft_link(hid_t f) {
    H5Lmove(f, "groups/score", f, "elsewhere", H5P_DEFAULT, H5P_DEFAULT);
    H5Lcreate_soft("/elsewhere", f, "groups/score", H5P_DEFAULT, H5P_DEFAULT);
}
static void e_score_custom_float(hid_t f) { // a 64-bit float with a bias of its own
    double v[3] = {1, 2, 3};
    hsize_t d = 3;
    hid_t t = H5Tcopy(H5T_IEEE_F64LE);
    H5Tset_ebias(t, 7);
    h5_put(f, "groups/score", t, 1, &d, v);
    H5Tclose(t);
}
static void e_name_bad_utf8(hid_t f) {
    const char* s[3] = {"model.layers.0.mlp.\xff\xfe", "b", "c"};
    h5_put_strs(f, "groups/name", s, 3, 0);
}
static void e_name_count(hid_t f) {
    const char* s[2] = {"a", "b"};
    h5_put_strs(f, "groups/name", s, 2, 0);
}
static void e_model_long(hid_t f) {
    static char big[5000];
    memset(big, 'm', sizeof(big) - 1);
    h5_put_attr(f, "model", big, 0, 1);
}
static void e_model_fixed_long(hid_t f) { h5_put_attr(f, "model", "x", 4000, 1); }
static void e_method_array(hid_t f) { h5_put_attr(f, "method", "kl", 0, 3); }
static void e_method_bogus(hid_t f) { h5_put_attr(f, "method", "magic", 0, 1); }
static void e_samples_str(hid_t f) { h5_put_attr(f, "num_samples", "8", 0, 1); }
static void e_samples_huge(hid_t f) { h5_put_attr_int(f, "num_samples", 1LL << 40); }
static void e_numerics_bogus(hid_t f) { h5_put_attr(f, "numerics", "fp8", 0, 1); }
static void e_params(hid_t f, long v) {
    long p[3] = {32, v, 32};
    hsize_t d = 3;
    h5_put(f, "groups/params", H5T_NATIVE_LONG, 1, &d, p);
}
static void e_params_2_40(hid_t f) { e_params(f, 1L << 40); }
static void e_params_2_62(hid_t f) { e_params(f, 1L << 62); }
static void e_params_neg(hid_t f) { e_params(f, -5); }
static void e_params_mismatch(hid_t f) { e_params(f, 33); }
static void e_params_total(hid_t f) { // 17 groups of 2^36: each plausible, the sum is not
    long p[17];
    hsize_t d = 17;
    for (int i = 0; i < 17; i++) p[i] = 1L << 36;
    h5_put(f, "groups/params", H5T_NATIVE_LONG, 1, &d, p);
}
static void e_score(hid_t f, double v) {
    double s[3] = {1, v, 1};
    hsize_t d = 3;
    h5_put(f, "groups/score", H5T_NATIVE_DOUBLE, 1, &d, s);
}
static void e_score_nan(hid_t f) { e_score(f, NAN); }
static void e_score_inf(hid_t f) { e_score(f, INFINITY); }
static void e_score_neg(hid_t f) { e_score(f, -1); }
static void e_score_int(hid_t f) {
    int s[3] = {1, 2, 3};
    hsize_t d = 3;
    h5_put(f, "groups/score", H5T_NATIVE_INT, 1, &d, s);
}
static void e_score_shape(hid_t f) {
    double s[6] = {0};
    hsize_t d[2] = {3, 2};
    h5_put(f, "groups/score", H5T_NATIVE_DOUBLE, 2, d, s);
}
static void e_disabled(hid_t f, uint8_t a, uint8_t b, uint8_t c) {
    uint8_t v[3] = {a, b, c};
    hsize_t d = 3;
    h5_put(f, "groups/disabled", H5T_NATIVE_UINT8, 1, &d, v);
}
static void e_all_disabled(hid_t f) { e_disabled(f, 1, 1, 1); }
static void e_disabled_7(hid_t f) { e_disabled(f, 0, 7, 0); }
static void e_layer_group(hid_t f) {
    int v[3] = {0, 9, 2};
    hsize_t d = 3;
    h5_put(f, "layers/group", H5T_NATIVE_INT, 1, &d, v);
}
static void e_layer_shape(hid_t f) {
    long v[9] = {0};
    hsize_t d[2] = {3, 3};
    h5_put(f, "layers/shape", H5T_NATIVE_LONG, 2, d, v);
}
static void e_layer_dim(hid_t f) {
    long v[6] = {4, 8, 1L << 40, 8, 4, 8};
    hsize_t d[2] = {3, 2};
    h5_put(f, "layers/shape", H5T_NATIVE_LONG, 2, d, v);
}
static void e_members(hid_t f) {
    const char* s[3] = {"model.layers.0.mlp.down_proj", "model.layers.0.mlp.down_proj", "x"};
    h5_put_strs(f, "groups/members", s, 3, 0);
}
static void e_no_layers(hid_t f) { H5Ldelete(f, "layers/name", H5P_DEFAULT); }
static void e_formats_group(hid_t f) { H5Ldelete(f, "formats", H5P_DEFAULT); }
static void e_old_file(hid_t f) { e_formats_group(f); } // before /formats/definition existed
static void e_old_path(hid_t f) {
    e_formats_group(f);
    h5_put_attr(f, "format", "../../tmp/w4a8", 0, 1);
}
static void e_format_attr(hid_t f) { h5_put_attr(f, "format", "w8a8", 0, 1); }
static void e_format_bits(hid_t f) {
    int b = 8;
    hsize_t d = 1;
    h5_put(f, "format_bits", H5T_NATIVE_INT, 1, &d, &b);
}
static void e_def(hid_t f, const char* def) { h5_put_strs(f, "formats/definition", &def, 1, 0); }
static void e_def_not_json(hid_t f) { e_def(f, "{\"name\": "); }
static void e_def_bits(hid_t f) {
    e_def(f, "{\"name\":\"w4a8\",\"bits\":4,\"numerics\":\"modelopt\",\"definition\":{\"quant_cfg\":{"
             "\"*weight_quantizer\":{\"num_bits\":-2147483648,\"axis\":0}}}}");
}
static void e_def_unknown(hid_t f) {
    e_def(
        f,
        "{\"name\":\"w4a8\",\"bits\":4,\"numerics\":\"modelopt\",\"path\":\"/etc/passwd\",\"definition\":{}}");
}
static void e_def_cost(hid_t f) { // the record's bits disagree with its own definition
    e_def(f, "{\"name\":\"w4a8\",\"bits\":2,\"numerics\":\"modelopt\",\"definition\":{\"quant_cfg\":{"
             "\"*weight_quantizer\":{\"num_bits\":4,\"axis\":0}}}}");
}
static void e_none(hid_t f) { (void)f; }
static void e_score_valid(hid_t f) { e_score(f, 2.5); } // plausible, but not what was written
static void e_no_checksum(hid_t f) { H5Adelete(f, "checksum"); }
static void e_checksum_bad(hid_t f) { h5_put_attr(f, "checksum", "sha1:0", 0, 1); }
static void e_extra_vlen(hid_t f) { // an object the reader does not use is still checked
    const char* s[1] = {"x"};
    h5_put_strs(f, "extra", s, 1, VLEN);
}
static void e_extra_attr(hid_t f) { // a compound attribute on a dataset
    hid_t d = H5Dopen2(f, "groups/params", H5P_DEFAULT), t = H5Tcreate(H5T_COMPOUND, 8);
    H5Tinsert(t, "a", 0, H5T_NATIVE_LLONG);
    hid_t sp = H5Screate(H5S_SCALAR), a = H5Acreate2(d, "odd", t, sp, H5P_DEFAULT, H5P_DEFAULT);
    long long v = 1;
    H5Awrite(a, t, &v);
    H5Aclose(a), H5Sclose(sp), H5Tclose(t), H5Dclose(d);
}

static void test_bad_h5(void) {
    bad_h5("h5 good file reads", 3, e_none, 0, "");
    bad_h5("h5 fixed-length strings read", 3, e_name_fixed_ok, 0, "");
    bad_h5("h5 groups/name variable-length", 3, e_name_vlen, 2,
           "groups/name: is a variable-length string; autoq writes fixed-length strings");
    bad_h5("h5 model attribute variable-length", 3, e_model_vlen, 2,
           "model: is a variable-length string; autoq writes fixed-length strings");
    bad_h5("h5 groups/score chunked", 3, e_score_chunked, 2, "groups/score: is chunked or virtual");
    bad_h5("h5 groups/score a soft link", 3, e_score_soft_link, 2, "groups/score: is a soft or external link");
    bad_h5("h5 groups/score custom float", 3, e_score_custom_float, 2,
           "groups/score: is no standard integer or float type");
    bad_h5("h5 groups/name rank 2", 3, e_name_rank2, 2, "groups/name: has 2 dimensions");
    bad_h5("h5 groups/name of integers", 3, e_name_int, 2, "groups/name: must hold strings");
    bad_h5("h5 groups/name fixed strings too long", 3, e_name_fixed_long, 2,
           "groups/name: fixed-length strings");
    bad_h5("h5 groups/name invalid UTF-8", 3, e_name_bad_utf8, 2, "groups/name: element 0 is not valid UTF-8");
    bad_h5("h5 groups/name count", 3, e_name_count, 2, "groups/members: has 3 rows, /groups/name 2");
    bad_h5("h5 model attribute too long", 3, e_model_long, 2, "model: attribute is longer than 511");
    bad_h5("h5 fixed model attribute too long", 3, e_model_fixed_long, 2,
           "model: attribute is longer than 511");
    bad_h5("h5 method attribute of 3 strings", 3, e_method_array, 2, "method: attribute must hold one value");
    bad_h5("h5 method unknown", 3, e_method_bogus, 2, "'magic' is neither kl nor gradient");
    bad_h5("h5 num_samples a string", 3, e_samples_str, 2, "num_samples: attribute must be a number");
    bad_h5("h5 num_samples 2^40", 3, e_samples_huge, 2,
           "num_samples: attribute = 1099511627776 is out of range");
    bad_h5("h5 numerics unknown", 3, e_numerics_bogus, 2, "'fp8' is neither modelopt");
    bad_h5("h5 params 2^40", 3, e_params_2_40, 2, "has 1099511627776 parameters");
    bad_h5("h5 params 2^62", 3, e_params_2_62, 2, "has 4611686018427387904 parameters");
    bad_h5("h5 params negative", 3, e_params_neg, 2, "has -5 parameters");
    bad_h5("h5 params total near 2^40", 17, e_params_total, 2, "parameters in all is unrealistic");
    bad_h5("h5 params disagree with layer shapes", 3, e_params_mismatch, 2, "has 33, but its layers hold 32");
    bad_h5("h5 score NaN", 3, e_score_nan, 2, "group model.layers.1.mlp.down_proj has score nan");
    bad_h5("h5 score Inf", 3, e_score_inf, 2, "has score inf");
    bad_h5("h5 score negative", 3, e_score_neg, 2, "has score -1");
    bad_h5("h5 score of integers", 3, e_score_int, 2, "groups/score: must hold floats");
    bad_h5("h5 score shape", 3, e_score_shape, 2, "groups/score: has 2 dimensions, expected 1");
    bad_h5("h5 every group disabled", 3, e_all_disabled, 2, "every group is disabled");
    bad_h5("h5 disabled not 0/1", 3, e_disabled_7, 2, "has 7 (0 or 1 allowed)");
    bad_h5("h5 layer group out of range", 3, e_layer_group, 2, "layers/group: [1] = 9 is not a group index");
    bad_h5("h5 layer shape [L,3]", 3, e_layer_shape, 2, "layers/shape: has shape [3, 3], expected [3, 2]");
    bad_h5("h5 layer dimension 2^40", 3, e_layer_dim, 2, "has dimension 1099511627776");
    bad_h5("h5 members disagree with layers", 3, e_members, 2,
           "groups/members: group model.layers.1.mlp.down_proj names");
    bad_h5("h5 layers/name missing", 3, e_no_layers, 2, "layers/name: missing");
    bad_h5("h5 old file: built-in format by name, with a warning", 3, e_old_file, 0, "older autoq");
    bad_h5("h5 old file: format attribute never opened as a path", 3, e_old_path, 2, "no built-in format");
    bad_h5("h5 format attribute disagrees with definitions", 3, e_format_attr, 2,
           "disagrees with /formats/definition");
    bad_h5("h5 format_bits disagree", 3, e_format_bits, 2, "format_bits: [0] = 8, but format 'w4a8' costs 4");
    bad_h5("h5 definition not JSON", 3, e_def_not_json, 2, "formats/definition: element 0 is not JSON");
    bad_h5("h5 definition num_bits INT_MIN", 3, e_def_bits, 2, "num_bits = -2147483648 is not supported");
    bad_h5("h5 definition unknown field", 3, e_def_unknown, 2, "unknown field 'path'");
    bad_h5("h5 definition bits disagree", 3, e_def_cost, 2,
           "field 'bits' must be an integer equal to the definition's 4");
    // issue 25 #12: the data is checksummed, not only the metadata
    bad_h5("h5 a plausible score edited without its checksum", 3, e_score_valid, 2,
           "checksum: the data does not match");
    bad_h5("h5 checksum attribute missing", 3, e_no_checksum, 2, "checksum: attribute missing");
    bad_h5("h5 checksum attribute malformed", 3, e_checksum_bad, 2, "'sha1:0' is not crc32");
    bad_h5("h5 unused dataset of variable-length strings", 3, e_extra_vlen, 2,
           "/extra: is a variable-length string");
    bad_h5("h5 compound attribute", 3, e_extra_attr, 2,
           "/groups/params@odd: is neither a standard number nor a fixed-length string");
}

// ---- active_params (issue 25 #9) ----
// A dense group (layer 0's down_proj, 4 x 8) and layer 1's experts group: E experts of gate, up [4, 8]
// and down [8, 4], top_k of them read per token.
static void table_make_moe(ScoreTable* t, int E, int top_k) {
    table_make(t, 2, 1);
    table_free_strs(t->lname, t->nl);
    free(t->lshape), free(t->lgroup), free(t->gmembers[1]), free(t->gname[1]);
    t->nl = 1 + 3 * E;
    t->lname = xcalloc(t->nl, sizeof(char*));
    t->lshape = xmalloc(sizeof(long) * 2 * t->nl);
    t->lgroup = xmalloc(sizeof(int) * t->nl);
    t->lname[0] = xstrdup("model.layers.0.mlp.down_proj");
    t->lshape[0] = 4, t->lshape[1] = 8, t->lgroup[0] = 0;
    t->gname[1] = xstrdup("model.layers.1.mlp.experts");
    char* members = xcalloc(64 * t->nl, 1);
    const char* proj[3] = {"gate_proj", "up_proj", "down_proj"};
    for (int e = 0, i = 1; e < E; e++)
        for (int k = 0; k < 3; k++, i++) {
            char name[64];
            snprintf(name, sizeof(name), "model.layers.1.mlp.experts.%d.%s", e, proj[k]);
            t->lname[i] = xstrdup(name);
            t->lshape[2 * i] = k == 2 ? 8 : 4, t->lshape[2 * i + 1] = k == 2 ? 4 : 8;
            t->lgroup[i] = 1;
            if (i > 1) strcat(members, ",");
            strcat(members, name);
        }
    t->gmembers[1] = members;
    t->params[1] = 96L * E;
    t->active[1] = 96L * top_k;
}

typedef struct {
    int E, top_k;
    long dense_active, experts_active; // 0: as written
} MoeCase;

static void moe_child(const void* arg) {
    const MoeCase* c = arg;
    ScoreTable t;
    table_make_moe(&t, c->E, c->top_k);
    if (c->dense_active) t.active[0] = c->dense_active;
    if (c->experts_active) t.active[1] = c->experts_active;
    char* path = tmp_path("moe.h5");
    table_write(&t, path);
    table_free(&t);
    read_child(path);
}

static void test_active_params(void) {
    MoeCase ok = {4, 2, 0, 0}, all = {4, 4, 0, 0}, dense = {4, 2, 1, 0}, frac = {4, 2, 0, 100},
            more = {4, 2, 0, 480};
    expect_exit("h5 experts group reading top_k of E experts reads", moe_child, &ok, 0, "");
    expect_exit("h5 experts group reading every expert reads", moe_child, &all, 0, "");
    expect_exit("h5 dense group's active_params 1 (issue 25 #9)", moe_child, &dense, 2,
                "groups/active_params: group model.layers.0.mlp.down_proj reads 1 of its 32 parameters");
    expect_exit("h5 experts group reading a fraction of an expert", moe_child, &frac, 2,
                "group model.layers.1.mlp.experts reads 100 parameters per token, which is no whole number of "
                "its 4 experts of 96");
    expect_exit("h5 experts group reading more than its experts", moe_child, &more, 2, "groups/active_params");
}

// Every byte of the interesting part of a file flipped in turn: the reader exits 0 or 2, never crashes or
// hangs.
static void flip_child(const void* path) { read_child(path); }

static void test_bit_flips(void) {
    ScoreTable t;
    table_make(&t, 3, 2);
    char* good = tmp_path("good.h5");
    table_write(&t, good);
    table_free(&t);
    size_t len;
    char* data = read_file(good, &len);
    char* path = tmp_path("flip.h5");
    int cases = 0, bad = 0, rejected = 0;
    char err[4096], first[4200] = "";
    size_t step = len / 300 + 1;
    for (size_t off = 0; off < len; off += step, cases++) {
        data[off] ^= (char)(1 << (off % 8));
        FILE* f = fopen(path, "wb");
        fwrite(data, 1, len, f);
        fclose(f);
        data[off] ^= (char)(1 << (off % 8));
        int rc = run_child(flip_child, path, err, sizeof(err));
        rejected += rc == 2;
        if (rc != 0 && rc != 2 && !bad++)
            snprintf(first, sizeof(first), "offset %zu: exit %d: %s", off, rc, err);
        if (rc == 2 && (strstr(err, "HDF5-DIAG") || !strstr(err, path)))
            if (!bad++) snprintf(first, sizeof(first), "offset %zu: unclear message: %s", off, err);
    }
    free(data);
    CHECK(bad == 0, "h5 bit flips: exit 0 or 2 with one clear message", "%d of %d cases: first %s", bad, cases,
          first);
    printf("  %d bit-flipped files of %zu bytes, %d rejected\n", cases, len, rejected);
}

// ---- 400 random single-bit flips (issue 25 #12) ----
// Each flipped file must be refused (exit 2 naming it) or read back to the very table and recipe of
// the original: the file of search --h5 with a sweep, so /search and /pareto are flipped too.
static ScoreTable g_orig;
static int g_orig_sel[8];

static void solve_one(const ScoreTable* t, double budget, int* sel) {
    SearchCtx c;
    search_init(&c, t, SCOPE_CANDIDATES, COST_MEMORY, BITS_TRUE);
    Solution s;
    search_solve(&c, &budget, 1, &s);
    memcpy(sel, s.sel, sizeof(int) * t->ng);
    solution_free(&s);
    search_free(&c);
}

static int same_strs(char** a, char** b, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(a[i], b[i])) return 0;
    return 1;
}

static int same_table(const ScoreTable* a, const ScoreTable* b) {
    if (a->ng != b->ng || a->nl != b->nl || a->nf != b->nf || a->num_samples != b->num_samples ||
        a->seq_len != b->seq_len || strcmp(a->model, b->model) || strcmp(a->method, b->method) ||
        strcmp(a->numerics, b->numerics) || strcmp(a->disabled_csv, b->disabled_csv))
        return 0;
    for (int f = 0; f < a->nf; f++)
        if (strcmp(a->fmts[f].def, b->fmts[f].def) || a->fmts[f].bits != b->fmts[f].bits) return 0;
    return same_strs(a->gname, b->gname, a->ng) && same_strs(a->gmembers, b->gmembers, a->ng) &&
           same_strs(a->lname, b->lname, a->nl) && !memcmp(a->params, b->params, sizeof(long) * a->ng) &&
           !memcmp(a->active, b->active, sizeof(long) * a->ng) && !memcmp(a->disabled, b->disabled, a->ng) &&
           !memcmp(a->score, b->score, sizeof(double) * a->ng * a->nf) &&
           !memcmp(a->lshape, b->lshape, sizeof(long) * 2 * a->nl) &&
           !memcmp(a->lgroup, b->lgroup, sizeof(int) * a->nl);
}

static void flip_recipe_child(const void* path) {
    ScoreTable t;
    table_read_h5(&t, path);
    int sel[8];
    solve_one(&t, 7.0, sel);
    if (!same_table(&t, &g_orig) || memcmp(sel, g_orig_sel, sizeof(int) * t.ng)) {
        fprintf(stderr, "read back a different table or recipe\n");
        exit(3);
    }
}

// The file of search --h5: the table of table_make, /search, /pareto of 3 budgets (verified).
static void fake_measure(void* ctx, const int* sel, VerifyResult* v, double* dkl) {
    memset(v, 0, sizeof(*v));
    for (int g = 0; g < *(const int*)ctx; g++) v->kl += 1.0 + sel[g] * (g + 1) * 0.5;
    for (int d = 0; dkl && d < MAX_DOMAINS; d++) dkl[d] = v->kl * (d + 1) / 3; // the domains: shares of it
}

static void write_search_file(const ScoreTable* t, const char* path) {
    SearchCtx c;
    search_init(&c, t, SCOPE_CANDIDATES, COST_MEMORY, BITS_TRUE);
    double b[3] = {7.0, 8.0, 16.0};
    if (t->has_memory) { // a byte budget: /search's memory_bytes, context and batch, /pareto/memory_bytes
        MemBudget mb = {1, 64, 2, 1024};
        search_set_memory(&c, &mb);
        double lo = search_min_budget(&c);
        b[0] = lo, b[1] = lo + 64, b[2] = 4 * lo;
    }
    Solution s[3];
    search_solve(&c, b, 3, s);
    for (int i = 0; i < 3; i++) {
        s[i].verified = 1;
        s[i].v.kl = 0.5 * i, s[i].v.nll_ref = 2.0, s[i].v.nll_q = 2.0 + 0.1 * i;
    }
    Bootstrap bo;
    if (t->nw) { // per-window scores: the bootstrap's /bootstrap too
        Objective sum = {OBJ_SUM, {0}};
        bootstrap_run(&bo, &c, &sum, &s[0], 8, 1);
        s[0].boot = &bo;
    }
    if (t->nd) { // calibration domains: the objective and each domain's loss
        s[0].objective = "max";
        s[0].nd = t->nd;
        objective_losses(t, s[0].sel, s[0].dloss);
    }
    Refine rf;   // --refine's /refine, on a made-up measurement
    if (t->nw) { // with domains under --objective max: /refine/measured_domain_kl too
        Objective obj = {t->nd ? OBJ_MAX : OBJ_SUM, {0}};
        RefineOpts ro = {1, 2, 1, 0, t->nd, {0}};
        for (int d = 0; d < t->nd; d++) ro.dwindows[d] = 1;
        refine_run(&rf, &c, &obj, &s[0], fake_measure, (void*)&t->ng, &ro);
        s[0].refine = &rf;
    }
    search_write_h5(path, &c, &s[0], s, 3);
    if (t->nw) bootstrap_free(&bo), refine_free(&rf);
    for (int i = 0; i < 3; i++) solution_free(&s[i]);
    search_free(&c);
}

static void test_flip_recipes(void) {
    table_make(&g_orig, 4, 2);
    g_orig.score[1] = 7.0; // distinct scores: a flipped score would change the recipe
    solve_one(&g_orig, 7.0, g_orig_sel);
    char* good = tmp_path("search.h5");
    write_search_file(&g_orig, good);
    size_t len;
    char* data = read_file(good, &len);
    char* path = tmp_path("flip_recipe.h5");
    int bad = 0, refused = 0, same = 0;
    char err[4096], first[4200] = "";
    uint64_t x = 0x9e3779b97f4a7c15ull; // fixed seed: the same 400 bits on every run
    for (int k = 0; k < 400; k++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; // xorshift64
        size_t bit = x % (len * 8);
        data[bit / 8] ^= (char)(1 << (bit % 8));
        FILE* f = fopen(path, "wb");
        fwrite(data, 1, len, f);
        fclose(f);
        data[bit / 8] ^= (char)(1 << (bit % 8));
        int rc = run_child(flip_recipe_child, path, err, sizeof(err));
        refused += rc == 2, same += rc == 0;
        if ((rc != 0 && rc != 2) || (rc == 2 && !strstr(err, path)))
            if (!bad++) snprintf(first, sizeof(first), "bit %zu: exit %d: %s", bit, rc, err);
    }
    free(data);
    CHECK(bad == 0, "h5 400 random bit flips: each refused naming the file, or the identical recipe",
          "%d of 400: first %s", bad, first);
    printf("  400 single-bit flips of a %zu-byte search file: %d refused, %d read the identical table\n", len,
           refused, same);
}

// ---- self-describing files (issue 25) and README §8's list of them ----
typedef struct {
    char path[128];
    char attrs[1024]; // " a b c " in name order
} ObjAttrs;

typedef struct {
    ObjAttrs o[64];
    int n;
} ObjList;

static herr_t attr_collect(hid_t loc, const char* name, const H5A_info_t* info, void* data) {
    (void)loc, (void)info;
    ObjAttrs* o = data;
    size_t n = strlen(o->attrs);
    snprintf(o->attrs + n, sizeof(o->attrs) - n, "%s%s ", n ? "" : " ", name);
    return 0;
}

static herr_t obj_collect(hid_t g, const char* name, const H5L_info_t* info, void* data) {
    (void)info;
    ObjList* l = data;
    if (l->n == 64) return 1;
    ObjAttrs* o = &l->o[l->n++];
    snprintf(o->path, sizeof(o->path), "/%s", name);
    hsize_t idx = 0;
    H5Aiterate_by_name(g, name, H5_INDEX_NAME, H5_ITER_INC, &idx, attr_collect, o, H5P_DEFAULT);
    return 0;
}

static void file_objects(const char* path, ObjList* l) {
    memset(l, 0, sizeof(*l));
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    snprintf(l->o[0].path, sizeof(l->o[0].path), "/");
    hsize_t idx = 0;
    H5Aiterate2(f, H5_INDEX_NAME, H5_ITER_INC, &idx, attr_collect, &l->o[0]);
    l->n = 1;
    H5Lvisit(f, H5_INDEX_NAME, H5_ITER_INC, obj_collect, l);
    H5Fclose(f);
}

// README §8's table: rows "| `/path` | ... | `attr` `attr` ... | meaning |", the attributes in the
// third cell. Returns the rows found in §8.
static int readme_objects(ObjList* l) {
    memset(l, 0, sizeof(*l));
    size_t len;
    char* text = read_file("README.md", &len);
    if (!text) return 0;
    char* sec = strstr(text, "\n### §8 ");
    char* end = sec ? strstr(sec, "\n### §9 ") : NULL;
    if (!sec || !end) return free(text), 0;
    *end = 0;
    for (char* line = strstr(sec, "\n| `/"); line && l->n < 64; line = strstr(line + 1, "\n| `/")) {
        char* eol = strchr(line + 1, '\n');
        if (eol) *eol = 0;
        ObjAttrs* o = &l->o[l->n++];
        sscanf(line + 4, "%127[^`]", o->path);
        // the third cell: between the third and fourth '|'
        char* c = line + 1;
        for (int k = 0; k < 2 && c; k++) c = strchr(c + 1, '|');
        char* c_end = c ? strchr(c + 1, '|') : NULL;
        if (!c || !c_end) continue;
        *c_end = 0;
        // backticked names, sorted as HDF5 iterates them (by name, bytewise)
        char names[32][64];
        int nn = 0;
        for (char* p = strchr(c, '`'); p && nn < 32; p = strchr(p + 1, '`')) {
            char* q = strchr(p + 1, '`');
            if (!q) break;
            snprintf(names[nn++], sizeof(names[0]), "%.*s", (int)(q - p - 1), p + 1);
            p = q;
        }
        qsort(names, nn, sizeof(names[0]), (int (*)(const void*, const void*))strcmp);
        for (int i = 0; i < nn; i++) {
            size_t n = strlen(o->attrs);
            snprintf(o->attrs + n, sizeof(o->attrs) - n, "%s%s ", n ? "" : " ", names[i]);
        }
        if (eol) *eol = '\n';
        line = c_end;
    }
    free(text);
    return l->n;
}

// A README path matches a file path exactly, or "<...>" stands for one name.
static int path_match(const char* pattern, const char* path) {
    const char* lt = strchr(pattern, '<');
    if (!lt) return strcmp(pattern, path) == 0;
    size_t n = (size_t)(lt - pattern);
    return strncmp(pattern, path, n) == 0 && path[n] && !strchr(path + n, '/');
}

static void test_self_describing(void) {
    ScoreTable t;
    table_make(&t, 3, 2);
    t.n_cov = 1, t.n_experts = 4, t.min_expert_tokens = 16;
    t.cov_name = xcalloc(1, sizeof(char*));
    t.cov_name[0] = xstrdup("model.layers.1.mlp.experts");
    t.cov_tokens = xcalloc(4, sizeof(long));
    t.nw = t.num_samples; // per-window scores: each window an equal share
    t.wscore = xmalloc(sizeof(double) * t.nw * t.nf * t.ng);
    for (int w = 0; w < t.nw; w++)
        for (int k = 0; k < t.nf * t.ng; k++) t.wscore[(size_t)w * t.nf * t.ng + k] = t.score[k] / t.nw;
    t.nd = 2; // two calibration domains of one window each, each half the scores
    snprintf(t.dname[0], sizeof(t.dname[0]), "code");
    snprintf(t.dname[1], sizeof(t.dname[1]), "prose");
    t.dsamples[0] = t.dsamples[1] = 1;
    t.dscore = xmalloc(sizeof(double) * 2 * t.nf * t.ng);
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < t.nf * t.ng; k++) t.dscore[(size_t)d * t.nf * t.ng + k] = t.score[k] / 2;
    t.has_memory = 1; // a byte budget's model facts (/memory) and a search in bytes
    t.other_params = 1000;
    t.n_kvl = 1;
    t.kvl_name = xcalloc(1, sizeof(char*));
    t.kvl_name[0] = xstrdup("model.layers.0.self_attn.kv_cache");
    t.kvl_values = xcalloc(1, sizeof(long));
    t.kvl_values[0] = 256;
    char* path = tmp_path("full.h5");
    write_search_file(&t, path); // every optional part: coverage, /search, /pareto, --verify, /memory
    table_free(&t);
    ObjList file, doc;
    file_objects(path, &file);
    int nd = readme_objects(&doc);
    // the attributes the issue asks for
    const struct {
        const char* obj;
        const char* attrs;
    } want[] = {
        {"/groups/score", " description units "},
        {"/format_bits", " bits_convention description units "},
        {"/search/selected", " description "},
        {"/pareto/budget", " description units "},
    };
    int ok = 1;
    char what[512] = "";
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        for (int k = 0; k < file.n; k++)
            if (!strcmp(file.o[k].path, want[i].obj) && strcmp(file.o[k].attrs, want[i].attrs))
                ok = 0, snprintf(what, sizeof(what), "%s has [%s]", want[i].obj, file.o[k].attrs);
    for (int k = 0; k < file.n; k++)
        if (!strcmp(file.o[k].path, "/pareto") || !strcmp(file.o[k].path, "/search"))
            if (!strstr(file.o[k].attrs, " bits ") || !strstr(file.o[k].attrs, " budget_scope ") ||
                !strstr(file.o[k].attrs, " cost "))
                ok = 0, snprintf(what, sizeof(what), "%s has [%s]", file.o[k].path, file.o[k].attrs);
    CHECK(ok, "h5 units, conventions and descriptions are attributes of the file", "%s", what);
    // README §8 lists exactly the objects and attributes written
    int match = nd > 10;
    snprintf(what, sizeof(what), "README §8 has %d rows", nd);
    for (int k = 0; k < file.n && match; k++) {
        int found = 0;
        for (int d = 0; d < nd && !found; d++)
            if (path_match(doc.o[d].path, file.o[k].path)) {
                found = 1;
                if (strcmp(doc.o[d].attrs, file.o[k].attrs))
                    match = 0, snprintf(what, sizeof(what), "%s: README lists [%s], the file has [%s]",
                                        file.o[k].path, doc.o[d].attrs, file.o[k].attrs);
            }
        if (!found) match = 0, snprintf(what, sizeof(what), "%s is missing from README §8", file.o[k].path);
    }
    for (int d = 0; d < nd && match; d++) {
        int found = 0;
        for (int k = 0; k < file.n && !found; k++) found = path_match(doc.o[d].path, file.o[k].path);
        if (!found) match = 0, snprintf(what, sizeof(what), "README §8 lists %s, never written", doc.o[d].path);
    }
    CHECK(match, "README §8 lists every object and attribute a scores / search file holds", "%s", what);
}

// ---- stored formats: HDF5 and JSON round trip ----
static void test_roundtrip(void) {
    ScoreTable t, r;
    table_make(&t, 3, 2);
    // A custom definition whose name is a built-in's: the stored one must win.
    char* custom = tmp_path("w4a8.json");
    FILE* f = fopen(custom, "w");
    fputs("{\"quant_cfg\": {\"*weight_quantizer\": {\"num_bits\": 8, \"axis\": 0, \"enable\": true},"
          " \"*input_quantizer\": {\"enable\": false}}, \"algorithm\": \"max\"}",
          f);
    fclose(f);
    format_load(&t.fmts[0], custom, 1);
    snprintf(t.numerics, sizeof(t.numerics), "compressed-tensors");
    t.fmts[1].w.ct = t.fmts[1].in.ct = 1;
    char* path = tmp_path("rt.h5");
    table_write(&t, path);
    unlink(custom);
    table_read_h5(&r, path);
    int same = r.nf == 2 && r.ng == 3 && r.nl == 3 && strcmp(r.model, t.model) == 0;
    for (int i = 0; i < 2 && same; i++)
        same = strcmp(r.fmts[i].name, t.fmts[i].name) == 0 && strcmp(r.fmts[i].def, t.fmts[i].def) == 0 &&
               r.fmts[i].bits == t.fmts[i].bits && r.fmts[i].w.bits == t.fmts[i].w.bits &&
               r.fmts[i].in_enable == t.fmts[i].in_enable && r.fmts[i].w.ct == 1;
    for (int k = 0; k < 6 && same; k++) same = r.score[k] == t.score[k];
    CHECK(same, "h5 round trip keeps every format's definition", "custom w4a8: bits %d w %d in %d, def %s",
          r.fmts[0].bits, r.fmts[0].w.bits, r.fmts[0].in_enable, r.fmts[0].def);
    CHECK(r.fmts[0].bits == 8 && !r.fmts[0].in_enable, "h5 custom 'w4a8' is the stored one, not the built-in",
          "bits %d", r.fmts[0].bits);
    table_write_json(&r, tmp_path("rt.json"));
    json_t* j = json_load_file(tmp_path("rt.json"), 0, NULL);
    json_t* rec = json_array_get(json_object_get(j, "formats"), 0);
    Format back;
    format_from_json(&back, rec, "rt.json formats[0]");
    CHECK(back.bits == 8 && strcmp(back.def, r.fmts[0].def) == 0 &&
              strcmp(json_string_value(json_object_get(j, "format")), "w4a8") == 0,
          "scores JSON stores the definitions beside 'format'", "bits %d", back.bits);
    json_decref(j);
    table_free(&t);
    table_free(&r);
}

int main(void) {
    snprintf(g_dir, sizeof(g_dir), "/tmp/autoq_h5_XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    g_quiet = 1;
    test_roundtrip();
    test_bad_h5();
    test_active_params();
    test_bit_flips();
    test_flip_recipes();
    test_self_describing();
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
    if (system(cmd) != 0) printf("  could not remove %s\n", g_dir);
    return g_fail ? 1 : 0;
}

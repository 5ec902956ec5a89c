// Scores files, recipes and exports as data (issues 11, 12): stored format definitions, a
// hardened HDF5 reader (crafted and bit-flipped files exit 2, never crash or hang), the
// llm-compressor YAML through libyaml with correctly escaped regexes, the recipe reader.
//   test_outputs                 runs the checks
//   test_outputs --yaml-json F   prints YAML file F as canonical JSON (tests/test_*.sh compare with it)
#define _GNU_SOURCE
#include <fcntl.h>
#include <fnmatch.h>
#include <hdf5.h>
#include <jansson.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml.h>

#include "check.h"
#include "engine/util.h"
#include "scoring/table.h"
#include "search/knapsack.h"
#include "search/recipe.h"

static char g_dir[64];

static char* tmp_path(const char* name) {
    static char buf[8][256];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", g_dir, name);
    return buf[k];
}

// ---- YAML -> JSON (scalars as strings, keys sorted by the dump) ----
static json_t* yaml_node_json(yaml_document_t* d, yaml_node_t* n) {
    if (n->type == YAML_SCALAR_NODE)
        return json_stringn((const char*)n->data.scalar.value, n->data.scalar.length);
    if (n->type == YAML_SEQUENCE_NODE) {
        json_t* a = json_array();
        for (yaml_node_item_t* i = n->data.sequence.items.start; i < n->data.sequence.items.top; i++)
            json_array_append_new(a, yaml_node_json(d, yaml_document_get_node(d, *i)));
        return a;
    }
    json_t* o = json_object();
    for (yaml_node_pair_t* p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t* k = yaml_document_get_node(d, p->key);
        json_object_set_new(o, (const char*)k->data.scalar.value,
                            yaml_node_json(d, yaml_document_get_node(d, p->value)));
    }
    return o;
}

// NULL when the file is not one well-formed YAML document.
static json_t* yaml_file_json(const char* path) {
    FILE* f = fopen(path, "rb");
    if (!f) return NULL;
    yaml_parser_t p;
    yaml_document_t d;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    json_t* j = NULL;
    if (yaml_parser_load(&p, &d)) {
        yaml_node_t* root = yaml_document_get_root_node(&d);
        if (root) j = yaml_node_json(&d, root);
        yaml_document_delete(&d);
    }
    yaml_parser_delete(&p);
    fclose(f);
    return j;
}

// ---- a child process per failure case: fail_input exits, and a crash must not stop the suite ----
typedef void (*ChildFn)(const void* arg);

static int run_child(ChildFn fn, const void* arg, char* err, size_t cap) {
    fflush(stdout);
    fflush(stderr);
    char* errf = tmp_path("child.err");
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 2);
        alarm(30); // a hang is a failure too
        fn(arg);
        exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    FILE* f = fopen(errf, "rb");
    size_t n = f ? fread(err, 1, cap - 1, f) : 0;
    err[n] = 0;
    if (f) fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void expect_exit(const char* name, ChildFn fn, const void* arg, int want, const char* fragment) {
    char err[4096];
    int rc = run_child(fn, arg, err, sizeof(err));
    if (getenv("AUTOQ_TEST_VERBOSE") && *err) printf("  %s", err); // to read the messages themselves
    CHECK(rc == want && strstr(err, fragment), name, "exit %d (want %d), stderr: %s (want '%s')", rc, want, err,
          fragment);
}

// ---- a synthetic scores table: ng groups of one down_proj each, 4 x 8 weights ----
static void table_make(ScoreTable* t, int ng, int nf) {
    memset(t, 0, sizeof(*t));
    snprintf(t->model, sizeof(t->model), "models/tiny");
    snprintf(t->method, sizeof(t->method), "kl");
    snprintf(t->numerics, sizeof(t->numerics), "modelopt");
    snprintf(t->disabled_csv, sizeof(t->disabled_csv), "*lm_head*");
    t->nf = nf;
    format_load(&t->fmts[0], "configs/formats/w4a8.json", 0);
    if (nf > 1) format_load(&t->fmts[1], "configs/formats/w8a8.json", 0);
    t->num_samples = 2, t->seq_len = 16;
    t->ng = t->nl = ng;
    t->gname = xcalloc(ng, sizeof(char*));
    t->gmembers = xcalloc(ng, sizeof(char*));
    t->lname = xcalloc(ng, sizeof(char*));
    t->params = xmalloc(sizeof(long) * ng);
    t->active = xmalloc(sizeof(long) * ng);
    t->disabled = xcalloc(ng, 1);
    t->score = xmalloc(sizeof(double) * ng * nf);
    t->lshape = xmalloc(sizeof(long) * 2 * ng);
    t->lgroup = xmalloc(sizeof(int) * ng);
    for (int g = 0; g < ng; g++) {
        char name[64];
        snprintf(name, sizeof(name), "model.layers.%d.mlp.down_proj", g);
        t->gname[g] = xstrdup(name);
        t->gmembers[g] = xstrdup(name);
        t->lname[g] = xstrdup(name);
        t->params[g] = t->active[g] = 32;
        t->lshape[2 * g] = 4, t->lshape[2 * g + 1] = 8;
        t->lgroup[g] = g;
        for (int f = 0; f < nf; f++) t->score[(size_t)f * ng + g] = (g + 1) * 0.5 / (f + 1);
    }
}

static void table_write(const ScoreTable* t, const char* path) {
    table_h5_finish(table_h5_create(t, path), path);
}

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
    search_init(&c, &t, SCOPE_CANDIDATES, COST_MEMORY);
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

// ---- format files ----
static void format_child(const void* text) {
    char* path = tmp_path("fmt.json");
    FILE* f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    Format fm;
    format_load(&fm, path, 0);
}

static void formats_child(const void* csv) {
    Format f[MAX_FORMATS];
    formats_load(f, MAX_FORMATS, csv, 0);
}

static void bad_format(const char* name, const char* qw, const char* fragment) {
    char text[1024];
    snprintf(text, sizeof(text), "{\"quant_cfg\": {\"*weight_quantizer\": %s}}", qw);
    expect_exit(name, format_child, text, 2, fragment);
}

static void test_formats(void) {
    bad_format("format num_bits 0", "{\"num_bits\": 0, \"axis\": 0}", "num_bits = 0 is not supported");
    bad_format("format num_bits -4", "{\"num_bits\": -4, \"axis\": 0}", "num_bits = -4 is not supported");
    bad_format("format num_bits INT_MIN", "{\"num_bits\": -2147483648, \"axis\": 0}", "num_bits = -2147483648");
    bad_format("format num_bits 2^32+4 (no wrap to 4)", "{\"num_bits\": 4294967300, \"axis\": 0}",
               "num_bits = 4294967300 is not supported");
    bad_format("format num_bits 17", "{\"num_bits\": 17, \"axis\": 0}", "num_bits = 17 is not supported");
    bad_format("format num_bits 4.5", "{\"num_bits\": 4.5, \"axis\": 0}", "num_bits missing or not an integer");
    bad_format("format num_bits \"4\"", "{\"num_bits\": \"4\", \"axis\": 0}",
               "num_bits missing or not an integer");
    bad_format("format unknown field", "{\"num_bits\": 4, \"axis\": 0, \"zero_point\": 1}",
               "unknown field 'zero_point'");
    bad_format("format disabled quantizer still validated", "{\"enable\": false, \"num_bits\": 99}",
               "num_bits = 99 is not supported");
    expect_exit("format unknown top-level field", format_child,
                "{\"quant_cfg\": {\"*weight_quantizer\": {\"num_bits\": 4, \"axis\": 0}}, \"calib\": 1}", 2,
                "unknown field 'calib'");
    expect_exit("format duplicate key", format_child,
                "{\"quant_cfg\": {\"*weight_quantizer\": {\"num_bits\": 4, \"num_bits\": 8, \"axis\": 0}}}", 2,
                "duplicate");
    expect_exit("format input axis", format_child,
                "{\"quant_cfg\": {\"*weight_quantizer\": {\"num_bits\": 4, \"axis\": 0}, \"*input_quantizer\": "
                "{\"num_bits\": 8, \"type\": \"dynamic\", \"block_sizes\": {\"-1\": null}, \"axis\": [1,2]}}}",
                2, "axis must be null");
    expect_exit("format not an object", format_child, "[1, 2]", 2, "must be a JSON object");
    expect_exit("two formats of one name", formats_child, "w4a8,configs/formats/w4a8.json", 2,
                "are both named 'w4a8'");
}

// ---- regexes from fnmatch patterns: same names as autoq's fnmatch(FNM_NOESCAPE) ----
static int re_match(const char* re, const char* s) {
    int code;
    PCRE2_SIZE off;
    pcre2_code* c = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code, &off, NULL);
    if (!c) return -1;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(c, NULL);
    int rc = pcre2_match(c, (PCRE2_SPTR)s, strlen(s), 0, 0, md, NULL);
    pcre2_match_data_free(md);
    pcre2_code_free(c);
    return rc >= 0;
}

static void test_regex(void) {
    struct {
        const char* glob;
        const char* re;
    } want[] = {
        {"*lm_head*", "^.*lm_head.*$"},
        {"model.layers.?.mlp", "^model\\.layers\\..\\.mlp$"},
        {"**a", "^.*a$"},
        {"[!0-9]x", "^[^0-9]x$"},
        {"[]a]", "^[\\]a]$"},
        {"[z-a]b", "^(?!)b$"},
        {"[!z-a]b", "^.b$"},
        {"a[b", "^a\\[b$"},
        {"it's", "^it's$"},
        {"a\\b", "^a\\\\b$"},
        {"a\nb", "^a\\x0ab$"},
        {"x(1)+{2}|$^", "^x\\(1\\)\\+\\{2\\}\\|\\$\\^$"},
        {"[\\^-]", "^[\\\\\\^\\-]$"},
    };
    int ok = 1;
    char first[512] = "";
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        char* re = recipe_regex_glob(want[i].glob);
        if (strcmp(re, want[i].re) && ok) {
            ok = 0;
            snprintf(first, sizeof(first), "%s -> %s, want %s", want[i].glob, re, want[i].re);
        }
        free(re);
    }
    CHECK(ok, "fnmatch patterns translate to escaped regexes", "%s", first);
    const char* globs[] = {"*lm_head*", "*layers.[0-2].*", "*[!a-m]_proj", "it's*", "a[b*",  "*\\*", "*[]x]*",
                           "x(1)*",     "*.mlp.?p_proj",   "[^m]*",        "*é*",   "*[é]*", "*$*"};
    const char* names[] = {"lm_head",
                           "model.layers.1.mlp.up_proj",
                           "model.layers.7.self_attn.o_proj",
                           "it's.q",
                           "a[bc",
                           "a\\",
                           "x]y",
                           "x(1)2",
                           "model.mlp.up_proj",
                           "xyz",
                           "café",
                           "q$"};
    int agree = 1;
    for (size_t g = 0; g < sizeof(globs) / sizeof(globs[0]); g++) {
        char* re = recipe_regex_glob(globs[g]);
        for (size_t n = 0; n < sizeof(names) / sizeof(names[0]); n++) {
            int a = fnmatch(globs[g], names[n], FNM_NOESCAPE) == 0, b = re_match(re, names[n]);
            if (a != b && agree) {
                agree = 0;
                snprintf(first, sizeof(first), "%s (%s) on %s: fnmatch %d, regex %d", globs[g], re, names[n], a,
                         b);
            }
        }
        free(re);
    }
    CHECK(agree, "regexes select exactly what fnmatch selects", "%s", first);
    char* re = recipe_regex_name("model.layers.0.q_proj[1]*");
    CHECK(re_match(re, "model.layers.0.q_proj[1]*") == 1 && re_match(re, "modelXlayers.0.q_proj1") == 0,
          "module names become exact regexes", "%s", re);
    free(re);
}

// ---- exports with hostile names: YAML parses and round-trips every string ----
static const char* k_nasty[] = {"model.layers.0.it's",          "model.layers.0.back\\slash",
                                "model.layers.0.a[b]",          "model.layers.0.new\nline",
                                "model.layers.0.# hash: colon", "model.layers.0.ü"};
#define N_NASTY 6

static void nasty_table(ScoreTable* t, Solution* s) {
    table_make(t, N_NASTY, 2);
    for (int g = 0; g < N_NASTY; g++) {
        free(t->gname[g]);
        free(t->gmembers[g]);
        free(t->lname[g]);
        t->gname[g] = xstrdup(k_nasty[g]);
        t->gmembers[g] = xstrdup(k_nasty[g]);
        t->lname[g] = xstrdup(k_nasty[g]);
    }
    snprintf(t->model, sizeof(t->model), "models/evil\n- injected: line");
    snprintf(t->disabled_csv, sizeof(t->disabled_csv), "*lm_head*,*it's*,*[ab]*, *\\*,*new\nline*,*]x[*");
    memset(s, 0, sizeof(*s));
    s->budget = 8;
    s->sel = xmalloc(sizeof(int) * N_NASTY);
    for (int g = 0; g < N_NASTY; g++) s->sel[g] = g % 3 - 1; // bf16, w4a8, w8a8, ...
}

static void test_yaml(void) {
    ScoreTable t;
    Solution s;
    nasty_table(&t, &s);
    SearchCtx c;
    search_init(&c, &t, SCOPE_CANDIDATES, COST_MEMORY);
    char* path = tmp_path("r.yaml");
    export_llmcompressor(path, &c, &s, t.fmts);
    json_t* j = yaml_file_json(path);
    json_t* gptq =
        json_object_get(json_object_get(json_object_get(j, "quant_stage"), "quant_modifiers"), "GPTQModifier");
    json_t* ign = json_object_get(gptq, "ignore");
    // Expected ignore list: lm_head, each pattern (trimmed, as scoring matched it), each bf16 linear.
    const char* pats[] = {"*lm_head*", "*it's*", "*[ab]*", "*\\*", "*new\nline*", "*]x[*"};
    json_t* want = json_array();
    json_array_append_new(want, json_string("lm_head"));
    for (int i = 0; i < 6; i++) {
        char* re = recipe_regex_glob(pats[i]);
        char buf[256];
        snprintf(buf, sizeof(buf), "re:%s", re);
        json_array_append_new(want, json_string(buf));
        free(re);
    }
    for (int g = 0; g < N_NASTY; g += 3) {
        char* re = recipe_regex_name(k_nasty[g]);
        char buf[256];
        snprintf(buf, sizeof(buf), "re:%s", re);
        json_array_append_new(want, json_string(buf));
        free(re);
    }
    CHECK(j && json_equal(ign, want), "YAML with hostile names parses and round-trips the ignore list",
          "got %s", j ? json_dumps(ign, 0) : "unparsable YAML");
    json_t* g0 = json_object_get(json_object_get(gptq, "config_groups"), "group_0");
    json_t* tg = json_object_get(g0, "targets");
    int ok = json_array_size(tg) == 2;
    for (size_t i = 0; i < json_array_size(tg) && ok; i++) {
        const char* v = json_string_value(json_array_get(tg, i));
        ok = v && strncmp(v, "re:", 3) == 0 && re_match(v + 3, k_nasty[3 * i + 1]) == 1 &&
             re_match(v + 3, "model.layers.0.x") == 0;
    }
    CHECK(ok, "YAML targets match exactly their linears", "%s", j ? json_dumps(g0, 0) : "-");
    CHECK(json_object_size(gptq) == 2 && json_object_size(j) == 1, "no injected keys", "%s",
          j ? json_dumps(j, 0) : "-");
    json_decref(want);
    json_decref(j);
    char* mo = tmp_path("q.json");
    export_modelopt(mo, &c, &s, t.fmts);
    j = json_load_file(mo, 0, NULL);
    json_t* qc = json_object_get(j, "quant_cfg");
    CHECK(json_object_get(qc, "model.layers.0.it's.*") &&
              json_object_get(qc, "model.layers.0.a[[]b].weight_quantizer") &&
              json_object_get(qc, "*new\nline*"),
          "ModelOpt quant_cfg keeps hostile names, literal under fnmatch", "%s", j ? json_dumps(qc, 0) : "-");
    json_decref(j);
    solution_free(&s);
    table_free(&t);
}

static void utf8_child(const void* unused) {
    (void)unused;
    ScoreTable t;
    Solution s;
    nasty_table(&t, &s);
    snprintf(t.disabled_csv, sizeof(t.disabled_csv), "*\xff*");
    SearchCtx c;
    search_init(&c, &t, SCOPE_CANDIDATES, COST_MEMORY);
    recipe_write_json(tmp_path("u.json"), &c, &s, t.fmts);
}

static void all_disabled_child(const void* unused) {
    (void)unused;
    ScoreTable t;
    table_make(&t, 2, 1);
    t.disabled[0] = t.disabled[1] = 1;
    SearchCtx c;
    search_init(&c, &t, SCOPE_CANDIDATES, COST_MEMORY);
}

// ---- the recipe reader ----
static Model g_model;

static void recipe_child(const void* text) {
    char* path = tmp_path("recipe.json");
    FILE* f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    Format fmts[MAX_FORMATS];
    int choice[2];
    recipe_read(path, &g_model, fmts, choice);
}

#define W4A8_REC                                                                                               \
    "{\"name\":\"w4a8\",\"bits\":4,\"numerics\":\"modelopt\",\"definition\":{\"quant_cfg\":{\"*weight_"        \
    "quantizer\":{"                                                                                            \
    "\"num_bits\":4,\"axis\":0}}}}"

static void test_recipe(void) {
    static Linear lin[2];
    snprintf(lin[0].name, sizeof(lin[0].name), "model.layers.0.mlp.down_proj");
    snprintf(lin[1].name, sizeof(lin[1].name), "model.layers.0.mlp.up_proj");
    g_model.n_linears = 2, g_model.linears = lin, g_model.dir = "models/tiny";
    char* path = tmp_path("recipe.json");
    FILE* f = fopen(path, "w");
    fputs("{\"formats\": [" W4A8_REC "], \"groups\": [{\"choice\": \"w4a8\", \"members\": "
          "[\"model.layers.0.mlp.down_proj\"]}]}",
          f);
    fclose(f);
    Format fmts[MAX_FORMATS];
    int choice[2];
    int nf = recipe_read(path, &g_model, fmts, choice);
    CHECK(nf == 1 && fmts[0].bits == 4 && choice[0] == 0 && choice[1] == -1, "recipe reads stored definitions",
          "nf %d choice %d %d", nf, choice[0], choice[1]);
    struct {
        const char* name;
        const char* text;
        const char* fragment;
    } bad[] = {
        {"recipe not an object", "[]", "must be a JSON object"},
        {"recipe formats empty", "{\"formats\": [], \"groups\": []}", "'formats' must be a list of 1 to 4"},
        {"recipe numerics unknown", "{\"numerics\": 3, \"formats\": [" W4A8_REC "], \"groups\": []}",
         "'numerics' must be"},
        {"recipe format record bad bits",
         "{\"formats\": [{\"name\":\"w4a8\",\"bits\":9,\"numerics\":\"modelopt\","
         "\"definition\":{\"quant_cfg\":{\"*weight_quantizer\":{\"num_bits\":4,"
         "\"axis\":0}}}}], \"groups\": []}",
         "formats[0]: field 'bits'"},
        {"recipe duplicate format names", "{\"formats\": [" W4A8_REC "," W4A8_REC "], \"groups\": []}",
         "both named 'w4a8'"},
        {"recipe groups missing", "{\"formats\": [" W4A8_REC "]}", "field 'groups' missing"},
        {"recipe group not an object", "{\"formats\": [" W4A8_REC "], \"groups\": [3]}",
         "groups[0] is not an object"},
        {"recipe choice unknown",
         "{\"formats\": [" W4A8_REC "], \"groups\": [{\"choice\": \"fp8\", \"members\": []}]}",
         "groups[0].choice 'fp8'"},
        {"recipe member not a string",
         "{\"formats\": [" W4A8_REC "], \"groups\": [{\"choice\": \"bf16\", \"members\": [7]}]}",
         "groups[0].members[0] is not a string"},
        {"recipe member unknown",
         "{\"formats\": [" W4A8_REC "], \"groups\": [{\"choice\": \"bf16\", \"members\": [\"lm_head\"]}]}",
         "is not a linear of models/tiny"},
        {"recipe member twice",
         "{\"formats\": [" W4A8_REC "], \"groups\": [{\"choice\": \"bf16\", \"members\": "
         "[\"model.layers.0.mlp.up_proj\"]}, {\"choice\": \"w4a8\", \"members\": "
         "[\"model.layers.0.mlp.up_proj\"]}]}",
         "named a second time"},
        {"recipe duplicate key", "{\"groups\": [], \"groups\": []}", "duplicate"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_exit(bad[i].name, recipe_child, bad[i].text, 2, bad[i].fragment);
}

static void test_knapsack_overflow(void) {
    KsItem it[2] = {{2, {16, 4}, {0, 1}, {1, 0}}, {2, {16, 4}, {0, 1}, {1, 0}}};
    Knapsack ks;
    int rc = ks_build(&ks, it, 2, INT64_MAX / 2, 400000000LL);
    CHECK(rc == -1, "knapsack refuses a huge table without overflow", "rc %d", rc);
}

int main(int argc, char** argv) {
    if (argc == 3 && strcmp(argv[1], "--yaml-json") == 0) {
        json_t* j = yaml_file_json(argv[2]);
        if (!j) return 1;
        json_dumpf(j, stdout, JSON_SORT_KEYS | JSON_COMPACT);
        putchar('\n');
        json_decref(j);
        return 0;
    }
    snprintf(g_dir, sizeof(g_dir), "/tmp/autoq_outputs_XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    g_quiet = 1;
    test_roundtrip();
    test_formats();
    test_regex();
    test_yaml();
    expect_exit("invalid UTF-8 never vanishes from JSON", utf8_child, NULL, 2, "not valid UTF-8");
    expect_exit("search with every group disabled says so", all_disabled_child, NULL, 2, "every group");
    test_recipe();
    test_knapsack_overflow();
    test_bad_h5();
    test_bit_flips();
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
    if (system(cmd) != 0) printf("  could not remove %s\n", g_dir);
    return g_fail ? 1 : 0;
}

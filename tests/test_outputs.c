// Recipes and exports as data (issues 11, 12): format files, the llm-compressor YAML through
// libyaml with correctly escaped regexes, ModelOpt names, the recipe reader. The HDF5 scores-file
// reader and writer: tests/test_h5.c.
//   test_outputs                 runs the checks
//   test_outputs --yaml-json F   prints YAML file F as canonical JSON (tests/test_*.sh compare with it)
#define _GNU_SOURCE
#include <fnmatch.h>
#include <jansson.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <yaml.h>

#include "outputs_common.h"
#include "search/knapsack.h"
#include "search/recipe.h"

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

// ---- format files ----
static void format_child(const void* text) {
    char* path = tmp_path("fmt.json");
    FILE* f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    Format fm;
    format_load(&fm, path, 0);
}

static void format_child_ct(const void* text) {
    char* path = tmp_path("fmt.json");
    FILE* f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    Format fm;
    format_load(&fm, path, 1);
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
    // ModelOpt's floating-point and block spellings: what autoq does not implement is named, never guessed.
    bad_format("format num_bits [5, 2] (E5M2)", "{\"num_bits\": [5, 2], \"axis\": 0}",
               "num_bits = [5, 2] is not supported");
    bad_format("format E2M1 weight without blocks", "{\"num_bits\": [2, 1], \"axis\": 0}",
               "E2M1 weights need block_sizes");
    bad_format("format E2M1 without scale_bits",
               "{\"num_bits\": [2, 1], \"block_sizes\": {\"-1\": 16, \"type\": \"dynamic\"}}",
               "block_sizes.scale_bits is required for E2M1");
    bad_format(
        "format NVFP4 blocks of 64",
        "{\"num_bits\": [2, 1], \"block_sizes\": {\"-1\": 64, \"type\": \"dynamic\", \"scale_bits\": [4, 3]}}",
        "E4M3-scaled E2M1 blocks are 16 (NVFP4) or 32");
    bad_format(
        "format MX blocks of 16",
        "{\"num_bits\": [2, 1], \"block_sizes\": {\"-1\": 16, \"type\": \"dynamic\", \"scale_bits\": [8, 0]}}",
        "E8M0-scaled (MX) blocks are 32");
    bad_format(
        "format scale_bits E5M2",
        "{\"num_bits\": [2, 1], \"block_sizes\": {\"-1\": 16, \"type\": \"dynamic\", \"scale_bits\": [5, 2]}}",
        "scale_bits must be [4, 3] (E4M3) or [8, 0] (E8M0)");
    bad_format(
        "format MXFP8 (E4M3 in blocks)",
        "{\"num_bits\": [4, 3], \"block_sizes\": {\"-1\": 32, \"type\": \"dynamic\", \"scale_bits\": [8, 0]}}",
        "E4M3 values in blocks (MXFP8) are not supported");
    bad_format(
        "format int blocks with E4M3 scales",
        "{\"num_bits\": 4, \"block_sizes\": {\"-1\": 128, \"type\": \"static\", \"scale_bits\": [4, 3]}}",
        "integer blocks take fp32 scales");
    bad_format("format block size 0", "{\"num_bits\": 4, \"block_sizes\": {\"-1\": 0, \"type\": \"static\"}}",
               "block_sizes['-1'] must be a block size from 1 to 4096");
    bad_format("format axis beside block_sizes",
               "{\"num_bits\": 4, \"axis\": 0, \"block_sizes\": {\"-1\": 128, \"type\": \"static\"}}",
               "axis must be null beside block_sizes");
    bad_format("format unknown block_sizes key",
               "{\"num_bits\": 4, \"block_sizes\": {\"-1\": 128, \"type\": \"static\", \"-2\": 4}}",
               "block_sizes'] has unknown field '-2'");
    bad_format("format per-tensor FP8 weight (axis null)", "{\"num_bits\": [4, 3], \"axis\": null}",
               "axis must be 0 (per output channel)");
    expect_exit(
        "format static NVFP4 input", format_child,
        "{\"quant_cfg\": {\"*weight_quantizer\": {\"num_bits\": 4, \"axis\": 0}, \"*input_quantizer\": "
        "{\"num_bits\": [2, 1], \"block_sizes\": {\"-1\": 16, \"type\": \"static\", \"scale_bits\": [4, 3]}}}}",
        2, "block_sizes.type must be \"dynamic\" (inputs are quantized per call)");
    expect_exit("format int8 input in blocks", format_child,
                "{\"quant_cfg\": {\"*weight_quantizer\": {\"num_bits\": 4, \"axis\": 0}, \"*input_quantizer\": "
                "{\"num_bits\": 8, \"block_sizes\": {\"-1\": 32, \"type\": \"dynamic\"}}}}",
                2, "only E2M1 inputs come in blocks");
    expect_exit("format nvfp4 under compressed-tensors numerics", format_child_ct,
                "{\"quant_cfg\": {\"*weight_quantizer\": {\"num_bits\": [2, 1], \"block_sizes\": {\"-1\": 16, "
                "\"type\": \"dynamic\", \"scale_bits\": [4, 3]}}}}",
                2, "--numerics compressed-tensors is not implemented for E2M1");
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
    search_init(&c, &t, SCOPE_CANDIDATES, COST_MEMORY, BITS_MODELOPT);
    char* path = tmp_path("r.yaml");
    export_llmcompressor(path, &c, &s, t.fmts, NULL);
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
    // ignore, config_groups and the GPTQ settings (dampening_frac, actorder, block_size)
    CHECK(json_object_size(gptq) == 5 && json_object_size(j) == 1, "no injected keys", "%s",
          j ? json_dumps(j, 0) : "-");
    json_decref(want);
    json_decref(j);
    char* mo = tmp_path("q.json");
    export_modelopt(mo, &c, &s, t.fmts, NULL);
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
    search_init(&c, &t, SCOPE_CANDIDATES, COST_MEMORY, BITS_MODELOPT);
    recipe_write_json(tmp_path("u.json"), &c, &s, t.fmts);
}

static void all_disabled_child(const void* unused) {
    (void)unused;
    ScoreTable t;
    table_make(&t, 2, 1);
    t.disabled[0] = t.disabled[1] = 1;
    SearchCtx c;
    search_init(&c, &t, SCOPE_CANDIDATES, COST_MEMORY, BITS_MODELOPT);
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
    recipe_read(path, &g_model, fmts, choice, 0);
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
    int nf = recipe_read(path, &g_model, fmts, choice, 1); // names one of the two linears
    CHECK(nf == 1 && fmts[0].bits == 4 && choice[0] == 0 && choice[1] == -1, "recipe reads stored definitions",
          "nf %d choice %d %d", nf, choice[0], choice[1]);
    struct {
        const char* name;
        const char* text;
        const char* fragment;
    } bad[] = {
        {"recipe not an object", "[]", "must be a JSON object"},
        {"recipe formats empty", "{\"formats\": [], \"groups\": []}", "'formats' must be a list of 1 to 7"},
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
    int rc = ks_build(&ks, it, 2, INT64_MAX / 2, 400000000LL), x[2] = {0, 0};
    double s = 0;
    int64_t c = 0;
    int rs = rc == 0 ? ks_solve(&ks, INT64_MAX / 2, x, &s, &c) : -1;
    CHECK(rc == 0 && ks.sparse && rs == 0 && x[0] == 0 && x[1] == 0 && c == 32,
          "a capacity past the dense table's limit takes the sparse table, without overflow",
          "rc %d sparse %d solve %d choices %d %d cost %lld", rc, ks.sparse, rs, x[0], x[1], (long long)c);
    if (rc == 0) ks_free(&ks);
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
    g_quiet = 1;
    test_formats();
    test_regex();
    test_yaml();
    expect_exit("invalid UTF-8 never vanishes from JSON", utf8_child, NULL, 2, "not valid UTF-8");
    expect_exit("search with every group disabled says so", all_disabled_child, NULL, 2, "every group");
    test_recipe();
    test_knapsack_overflow();
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
    if (system(cmd) != 0) printf("  could not remove %s\n", g_dir);
    return g_fail ? 1 : 0;
}

#define _GNU_SOURCE
#include "table.h"

#include <hdf5.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../engine/util.h"

static void free_strs(char** s, int n) {
    if (!s) return;
    for (int i = 0; i < n; i++) free(s[i]);
    free(s);
}

void table_free(ScoreTable* t) {
    free_strs(t->gname, t->ng);
    free_strs(t->gmembers, t->ng);
    free_strs(t->lname, t->nl);
    free(t->params);
    free(t->disabled);
    free(t->score);
    free(t->lshape);
    free(t->lgroup);
    memset(t, 0, sizeof(*t));
}

void json_write_file(json_t* j, const char* path) {
    if (!path || strcmp(path, "-") == 0) {
        json_dumpf(j, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
        fputc('\n', stdout);
        return;
    }
    OutFile o;
    out_open(&o, path);
    json_dumpf(j, o.f, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    fputc('\n', o.f);
    out_close(&o);
}

json_t* json_csv_list(const char* csv) {
    json_t* a = json_array();
    char* s = xstrdup(csv);
    char* save = NULL;
    for (char* tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        json_array_append_new(a, json_string(tok));
    free(s);
    return a;
}

json_t* table_group_json(const ScoreTable* t, int g) {
    json_t* o = json_object();
    json_object_set_new(o, "name", json_string(t->gname[g]));
    json_object_set_new(o, "members", json_csv_list(t->gmembers[g]));
    json_object_set_new(o, "params", json_integer(t->params[g]));
    json_object_set_new(o, "disabled", json_boolean(t->disabled[g]));
    return o;
}

static json_t* table_json(const ScoreTable* t) {
    json_t* j = json_object();
    json_object_set_new(j, "model", json_string(t->model));
    json_object_set_new(j, "method", json_string(t->method));
    json_object_set_new(j, "format", json_string(t->fmt_name[0]));
    if (t->nf > 1) {
        json_t* fs = json_array();
        for (int f = 0; f < t->nf; f++) json_array_append_new(fs, json_string(t->fmt_name[f]));
        json_object_set_new(j, "formats", fs);
    }
    json_object_set_new(j, "numerics", json_string(t->numerics));
    json_object_set_new(j, "disabled_layers", json_string(t->disabled_csv));
    json_object_set_new(j, "num_samples", json_integer(t->num_samples));
    json_object_set_new(j, "seq_len", json_integer(t->seq_len));
    json_t* gs = json_array();
    for (int g = 0; g < t->ng; g++) {
        json_t* o = table_group_json(t, g);
        if (t->disabled[g])
            json_object_set_new(o, "score", json_null());
        else
            json_object_set_new(o, "score", json_real(t->score[g]));
        if (t->nf > 1) {
            json_t* sc = json_object();
            for (int f = 0; f < t->nf; f++)
                json_object_set_new(sc, t->fmt_name[f],
                                    t->disabled[g] ? json_null() : json_real(t->score[(size_t)f * t->ng + g]));
            json_object_set_new(o, "scores", sc);
        }
        json_array_append_new(gs, o);
    }
    json_object_set_new(j, "groups", gs);
    return j;
}

void table_write_json(const ScoreTable* t, const char* path) {
    json_t* j = table_json(t);
    json_write_file(j, path);
    json_decref(j);
}

// ---- HDF5 ----
static hid_t str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

static void attr_str(hid_t obj, const char* name, const char* v) {
    hid_t t = str_type(), sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, &v);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
}

static void attr_num(hid_t obj, const char* name, hid_t type, const void* v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, type, v);
    H5Aclose(a);
    H5Sclose(sp);
}

void h5_write(long loc, const char* name, long type, int rank, const unsigned long long* dims,
              const void* data) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (d < 0 || H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        fail_other("HDF5: cannot write dataset %s", name);
    H5Dclose(d);
    H5Sclose(sp);
}

static void write_strs(hid_t loc, const char* name, char* const* s, int n) {
    hid_t t = str_type();
    hsize_t dims[1] = {(hsize_t)n};
    h5_write(loc, name, t, 1, dims, s);
    H5Tclose(t);
}

long table_h5_create(const ScoreTable* t, const char* path) {
    char* tmp = xmalloc(strlen(path) + 32);
    sprintf(tmp, "%s.tmp.%d", path, (int)getpid());
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) fail_input("%s: cannot create HDF5 file", path);
    tmp_register(tmp);
    free(tmp);
    attr_str(f, "model", t->model);
    attr_str(f, "method", t->method);
    char fmts[MAX_FORMATS * 65] = "";
    for (int i = 0; i < t->nf; i++) {
        if (i) strcat(fmts, ",");
        strcat(fmts, t->fmt_name[i]);
    }
    attr_str(f, "format", fmts);
    attr_str(f, "numerics", t->numerics);
    attr_str(f, "disabled_layers", t->disabled_csv);
    attr_num(f, "num_samples", H5T_NATIVE_INT, &t->num_samples);
    attr_num(f, "seq_len", H5T_NATIVE_INT, &t->seq_len);
    hsize_t nf = (hsize_t)t->nf;
    h5_write(f, "format_bits", H5T_NATIVE_INT, 1, &nf, t->fmt_bits);
    hid_t g = H5Gcreate2(f, "groups", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    write_strs(g, "name", t->gname, t->ng);
    write_strs(g, "members", t->gmembers, t->ng);
    hsize_t ng = (hsize_t)t->ng;
    // One format: score is [G]; several: [G, F] (row g holds every format's score).
    double* sc = xmalloc(sizeof(double) * t->ng * t->nf);
    for (int i = 0; i < t->ng; i++)
        for (int k = 0; k < t->nf; k++) sc[i * t->nf + k] = t->score[(size_t)k * t->ng + i];
    hsize_t sdims[2] = {ng, nf};
    h5_write(g, "score", H5T_NATIVE_DOUBLE, t->nf > 1 ? 2 : 1, sdims, sc);
    free(sc);
    h5_write(g, "params", H5T_NATIVE_LONG, 1, &ng, t->params);
    h5_write(g, "disabled", H5T_NATIVE_UINT8, 1, &ng, t->disabled);
    H5Gclose(g);
    g = H5Gcreate2(f, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    write_strs(g, "name", t->lname, t->nl);
    hsize_t ldims[2] = {(hsize_t)t->nl, 2};
    h5_write(g, "shape", H5T_NATIVE_LONG, 2, ldims, t->lshape);
    h5_write(g, "group", H5T_NATIVE_INT, 1, ldims, t->lgroup);
    H5Gclose(g);
    return (long)f;
}

void table_h5_finish(long file, const char* path) {
    char* tmp = xmalloc(strlen(path) + 32);
    sprintf(tmp, "%s.tmp.%d", path, (int)getpid());
    if (H5Fclose((hid_t)file) < 0) fail_other("%s: HDF5 close failed", path);
    if (rename(tmp, path) != 0) fail_other("%s: cannot rename into place", path);
    tmp_unregister(tmp);
    free(tmp);
}

// ---- reading ----
static void h5_need(hid_t id, const char* path, const char* what) {
    if (id < 0) fail_input("%s: not an autoq scores file (missing %s)", path, what);
}

static int ds_len(hid_t d) {
    hid_t sp = H5Dget_space(d);
    hsize_t dims[2] = {0, 0};
    H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    return (int)dims[0];
}

static char** read_strs(hid_t f, const char* path, const char* name, int* n) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    h5_need(d, path, name);
    *n = ds_len(d);
    char** raw = xcalloc(*n, sizeof(char*));
    hid_t t = str_type();
    if (H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0) fail_input("%s: cannot read %s", path, name);
    char** out = xcalloc(*n, sizeof(char*));
    for (int i = 0; i < *n; i++) out[i] = xstrdup(raw[i] ? raw[i] : "");
    hid_t sp = H5Dget_space(d);
    H5Dvlen_reclaim(t, sp, H5P_DEFAULT, raw);
    H5Sclose(sp);
    free(raw);
    H5Tclose(t);
    H5Dclose(d);
    return out;
}

static void read_num(hid_t f, const char* path, const char* name, hid_t type, void* out, size_t expect) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    h5_need(d, path, name);
    hid_t sp = H5Dget_space(d);
    if ((size_t)H5Sget_simple_extent_npoints(sp) != expect)
        fail_input("%s: dataset %s has %lld elements, expected %zu", path, name,
                   (long long)H5Sget_simple_extent_npoints(sp), expect);
    if (H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) fail_input("%s: cannot read %s", path, name);
    H5Sclose(sp);
    H5Dclose(d);
}

static void read_attr_str(hid_t f, const char* path, const char* name, char* out, size_t cap) {
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    h5_need(a, path, name);
    hid_t t = str_type();
    char* v = NULL;
    if (H5Aread(a, t, &v) < 0) fail_input("%s: attribute %s is not a string", path, name);
    snprintf(out, cap, "%s", v ? v : "");
    H5free_memory(v);
    H5Tclose(t);
    H5Aclose(a);
}

static int read_attr_int(hid_t f, const char* path, const char* name) {
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    h5_need(a, path, name);
    int v = 0;
    H5Aread(a, H5T_NATIVE_INT, &v);
    H5Aclose(a);
    return v;
}

void table_read_h5(ScoreTable* t, const char* path) {
    memset(t, 0, sizeof(*t));
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (access(path, R_OK) != 0) fail_input("%s: cannot read scores file", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) fail_input("%s: not an HDF5 file", path);
    read_attr_str(f, path, "model", t->model, sizeof(t->model));
    read_attr_str(f, path, "method", t->method, sizeof(t->method));
    read_attr_str(f, path, "numerics", t->numerics, sizeof(t->numerics));
    read_attr_str(f, path, "disabled_layers", t->disabled_csv, sizeof(t->disabled_csv));
    char fmts[MAX_FORMATS * 65];
    read_attr_str(f, path, "format", fmts, sizeof(fmts));
    char* save = NULL;
    for (char* tok = strtok_r(fmts, ",", &save); tok && t->nf < MAX_FORMATS; tok = strtok_r(NULL, ",", &save))
        snprintf(t->fmt_name[t->nf++], 64, "%s", tok);
    if (t->nf == 0) fail_input("%s: attribute 'format' is empty", path);
    t->num_samples = read_attr_int(f, path, "num_samples");
    t->seq_len = read_attr_int(f, path, "seq_len");
    read_num(f, path, "format_bits", H5T_NATIVE_INT, t->fmt_bits, t->nf);
    t->gname = read_strs(f, path, "groups/name", &t->ng);
    int n2;
    t->gmembers = read_strs(f, path, "groups/members", &n2);
    if (n2 != t->ng) fail_input("%s: groups/members has %d rows, groups/name %d", path, n2, t->ng);
    t->params = xmalloc(sizeof(long) * t->ng);
    t->disabled = xmalloc(t->ng);
    double* sc = xmalloc(sizeof(double) * t->ng * t->nf);
    read_num(f, path, "groups/params", H5T_NATIVE_LONG, t->params, t->ng);
    read_num(f, path, "groups/disabled", H5T_NATIVE_UINT8, t->disabled, t->ng);
    read_num(f, path, "groups/score", H5T_NATIVE_DOUBLE, sc, (size_t)t->ng * t->nf);
    t->score = xmalloc(sizeof(double) * t->ng * t->nf);
    for (int i = 0; i < t->ng; i++)
        for (int k = 0; k < t->nf; k++) t->score[(size_t)k * t->ng + i] = sc[i * t->nf + k];
    free(sc);
    t->lname = read_strs(f, path, "layers/name", &t->nl);
    t->lshape = xmalloc(sizeof(long) * 2 * t->nl);
    t->lgroup = xmalloc(sizeof(int) * t->nl);
    read_num(f, path, "layers/shape", H5T_NATIVE_LONG, t->lshape, (size_t)t->nl * 2);
    read_num(f, path, "layers/group", H5T_NATIVE_INT, t->lgroup, t->nl);
    for (int i = 0; i < t->nl; i++)
        if (t->lgroup[i] < 0 || t->lgroup[i] >= t->ng) fail_input("%s: layers/group[%d] out of range", path, i);
    for (int i = 0; i < t->ng; i++)
        if (t->params[i] <= 0) fail_input("%s: groups/params[%d] must be positive", path, i);
    H5Fclose(f);
}

static int cmp_desc(const void* a, const void* b, void* ctx) {
    const double* s = ctx;
    double x = s[*(const int*)a], y = s[*(const int*)b];
    return x < y ? 1 : (x > y ? -1 : 0);
}

void table_print(const ScoreTable* t) {
    for (int f = 0; f < t->nf; f++) {
        const double* s = t->score + (size_t)f * t->ng;
        double total = 0;
        int ne = 0;
        int* order = xmalloc(sizeof(int) * t->ng);
        for (int g = 0; g < t->ng; g++)
            if (!t->disabled[g]) {
                total += s[g];
                order[ne++] = g;
            }
        qsort_r(order, ne, sizeof(int), cmp_desc, (void*)s);
        int* rank = xcalloc(t->ng, sizeof(int));
        for (int i = 0; i < ne; i++) rank[order[i]] = i + 1;
        printf("%s scores, format %s (%d samples x %d tokens)\n", t->method, t->fmt_name[f], t->num_samples,
               t->seq_len);
        printf("%-44s %10s %14s %7s %5s\n", "group", "params", "score", "share", "rank");
        for (int g = 0; g < t->ng; g++) {
            if (t->disabled[g]) {
                printf("%-44s %10ld %14s %7s %5s\n", t->gname[g], t->params[g], "disabled", "-", "-");
                continue;
            }
            printf("%-44s %10ld %14.6g %6.2f%% %5d\n", t->gname[g], t->params[g], s[g],
                   total > 0 ? 100.0 * s[g] / total : 0.0, rank[g]);
        }
        printf("%-44s %10s %14.6g\n\n", "total", "", total);
        free(order);
        free(rank);
    }
}

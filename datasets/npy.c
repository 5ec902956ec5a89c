#include "npy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/util.h"

// The header is a Python dict literal, e.g.
//   {'descr': '<i4', 'fortran_order': False, 'shape': (2, 8), }
// parsed strictly (not searched with strstr): each key once, nothing else.
typedef struct {
    const char* path;
    const char* p; // cursor into the NUL-terminated header
    char descr[16];
    int fortran; // -1 absent
    int ndim;    // -1 absent
    long long shape[8];
} NpyHeader;

static void hdr_ws(NpyHeader* h) {
    while (*h->p == ' ' || *h->p == '\t' || *h->p == '\n') h->p++;
}

static void hdr_expect(NpyHeader* h, char c, const char* where) {
    hdr_ws(h);
    if (*h->p != c) fail_input("%s: .npy header: expected '%c' %s", h->path, c, where);
    h->p++;
}

// A quoted string (no escapes: npy keys and dtypes have none) into buf.
static void hdr_string(NpyHeader* h, char* buf, size_t cap, const char* what) {
    hdr_ws(h);
    char q = *h->p;
    if (q != '\'' && q != '"') fail_input("%s: .npy header: %s must be a quoted string", h->path, what);
    const char* end = strchr(h->p + 1, q);
    if (!end || (size_t)(end - h->p - 1) >= cap)
        fail_input("%s: .npy header: %s is malformed or too long", h->path, what);
    memcpy(buf, h->p + 1, (size_t)(end - h->p - 1));
    buf[end - h->p - 1] = 0;
    h->p = end + 1;
}

// (a, b, ...) of non-negative integers; (a,) for one dimension.
static void hdr_shape(NpyHeader* h) {
    hdr_expect(h, '(', "to open field 'shape'");
    h->ndim = 0;
    for (;;) {
        hdr_ws(h);
        if (*h->p == ')') break;
        if (h->ndim == 8) fail_input("%s: field 'shape' has more than 8 dimensions", h->path);
        if (*h->p < '0' || *h->p > '9')
            fail_input("%s: field 'shape' must hold non-negative integers", h->path);
        long long v = 0;
        while (*h->p >= '0' && *h->p <= '9') {
            if (v > (1LL << 40)) fail_input("%s: field 'shape' has a dimension too large", h->path);
            v = v * 10 + (*h->p++ - '0');
        }
        h->shape[h->ndim++] = v;
        hdr_ws(h);
        if (*h->p == ',')
            h->p++;
        else if (*h->p != ')')
            fail_input("%s: field 'shape' is malformed", h->path);
    }
    h->p++;
}

static void hdr_parse(NpyHeader* h) {
    h->descr[0] = 0;
    h->fortran = -1;
    h->ndim = -1;
    hdr_expect(h, '{', "at the start");
    for (;;) {
        hdr_ws(h);
        if (*h->p == '}') break;
        char key[32];
        hdr_string(h, key, sizeof(key), "a key");
        hdr_expect(h, ':', "after a key");
        hdr_ws(h);
        if (strcmp(key, "descr") == 0 && !h->descr[0]) {
            hdr_string(h, h->descr, sizeof(h->descr), "field 'descr'");
            if (!h->descr[0]) fail_input("%s: field 'descr' is empty", h->path);
        } else if (strcmp(key, "fortran_order") == 0 && h->fortran < 0) {
            if (strncmp(h->p, "False", 5) == 0)
                h->fortran = 0, h->p += 5;
            else if (strncmp(h->p, "True", 4) == 0)
                h->fortran = 1, h->p += 4;
            else
                fail_input("%s: field 'fortran_order' must be True or False", h->path);
        } else if (strcmp(key, "shape") == 0 && h->ndim < 0) {
            hdr_shape(h);
        } else {
            char clip[CLIP_BUF];
            fail_input("%s: .npy header: unexpected or repeated key '%s'", h->path, str_clip(clip, key));
        }
        hdr_ws(h);
        if (*h->p == ',')
            h->p++;
        else if (*h->p != '}')
            fail_input("%s: .npy header: expected ',' or '}' after a field", h->path);
    }
    h->p++;
    hdr_ws(h);
    if (*h->p) fail_input("%s: .npy header: text after the closing '}'", h->path);
    if (!h->descr[0]) fail_input("%s: .npy header has no 'descr' field", h->path);
    if (h->fortran < 0) fail_input("%s: .npy header has no 'fortran_order' field", h->path);
    if (h->ndim < 0) fail_input("%s: .npy header has no 'shape' field", h->path);
}

// Shape as text for messages: "(2, 3, 4)".
static void shape_str(const NpyHeader* h, char* buf, size_t cap) {
    size_t k = (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < h->ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", h->shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "%s)", h->ndim == 1 ? "," : "");
}

void npy_read_ids(TokenIds* out, const char* path, int vocab) {
    size_t len;
    // Regular files only; no size cap beyond what the shape accounts for below.
    char* buf = read_input(path, ".npy token ids", (size_t)-1 - 1, &len);
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) fail_input("%s: not a .npy file (bad magic)", path);
    int major = (unsigned char)buf[6];
    size_t hlen, off;
    if (major == 1) {
        hlen = (unsigned char)buf[8] | ((size_t)(unsigned char)buf[9] << 8);
        off = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12) fail_input("%s: truncated .npy header", path);
        hlen = 0;
        for (int i = 0; i < 4; i++) hlen |= (size_t)(unsigned char)buf[8 + i] << (8 * i);
        off = 12;
    } else {
        fail_input("%s: unsupported .npy version %d", path, major);
    }
    if (hlen > len - off) fail_input("%s: .npy header length %zu runs past the end of the file", path, hlen);
    char* hdr = xmalloc(hlen + 1);
    memcpy(hdr, buf + off, hlen);
    hdr[hlen] = 0;
    if (strlen(hdr) != hlen) fail_input("%s: .npy header holds a NUL byte", path);
    NpyHeader h = {.path = path, .p = hdr};
    hdr_parse(&h);
    int esize;
    if (strcmp(h.descr, "<i8") == 0)
        esize = 8;
    else if (strcmp(h.descr, "<i4") == 0)
        esize = 4;
    else {
        char clip[CLIP_BUF];
        fail_input("%s: field 'descr' = '%s': token ids must be int32 or int64 ('<i4' or '<i8')", path,
                   str_clip(clip, h.descr));
    }
    if (h.fortran) fail_input("%s: field 'fortran_order' must be False", path);
    char sh[128];
    shape_str(&h, sh, sizeof(sh));
    if (h.ndim != 2) fail_input("%s: field 'shape' = %s: token ids must be a 2-D array [N, T]", path, sh);
    long long n = h.shape[0], t = h.shape[1];
    if (n <= 0 || t <= 0) fail_input("%s: field 'shape' = %s: the array is empty", path, sh);
    if (n > (1LL << 30) || t > (1LL << 24)) fail_input("%s: field 'shape' = %s is too large", path, sh);
    char what[512];
    snprintf(what, sizeof(what), "%s: field 'shape'", path);
    size_t numel = size_mul((size_t)n, (size_t)t, what);
    if (numel > (size_t)INT32_MAX) fail_input("%s: field 'shape' = %s holds more than 2^31 ids", path, sh);
    size_t need = size_mul(numel, (size_t)esize, what);
    if (len - off - hlen != need)
        fail_input("%s: data holds %zu bytes but shape %s needs %zu (ragged or truncated)", path,
                   len - off - hlen, sh, need);
    out->n = (int)n;
    out->t = (int)t;
    out->ids = xmalloc(size_mul(sizeof(int), numel, what));
    const char* data = buf + off + hlen;
    for (size_t i = 0; i < numel; i++) {
        int64_t v;
        if (esize == 8) {
            memcpy(&v, data + 8 * i, 8);
        } else {
            int32_t v4;
            memcpy(&v4, data + 4 * i, 4);
            v = v4;
        }
        if (v < 0 || v > INT32_MAX || (vocab > 0 && v >= vocab))
            fail_input("%s: token id %lld at [%zu, %zu] is outside the vocabulary [0, %d)", path, (long long)v,
                       i / (size_t)t, i % (size_t)t, vocab);
        out->ids[i] = (int)v;
    }
    free(hdr);
    free(buf);
}

void token_ids_free(TokenIds* t) {
    free(t->ids);
    t->ids = NULL;
}

static void npy_write(const char* path, const void* data, const char* descr, int esize, int ndim,
                      const long* shape) {
    char dict[256], sh[128] = "";
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        snprintf(sh + strlen(sh), sizeof(sh) - strlen(sh), "%ld%s", shape[i],
                 ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
        numel *= (size_t)shape[i];
    }
    int n = snprintf(dict, sizeof(dict), "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, sh);
    int total = 10 + n + 1;
    int pad = (64 - total % 64) % 64;
    OutFile o;
    out_open(&o, path);
    fwrite("\x93NUMPY\x01\x00", 1, 8, o.f);
    int hl = n + pad + 1;
    unsigned char l2[2] = {(unsigned char)(hl & 0xff), (unsigned char)(hl >> 8)};
    fwrite(l2, 1, 2, o.f);
    fwrite(dict, 1, n, o.f);
    for (int i = 0; i < pad; i++) fputc(' ', o.f);
    fputc('\n', o.f);
    fwrite(data, esize, numel, o.f);
    out_close(&o);
}

void npy_write_f32(const char* path, const float* data, int ndim, const long* shape) {
    npy_write(path, data, "<f4", 4, ndim, shape);
}

void npy_write_i32(const char* path, const int* data, int ndim, const long* shape) {
    npy_write(path, data, "<i4", 4, ndim, shape);
}

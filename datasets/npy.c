#include "npy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/util.h"

// Finds 'key': value in the header dict and returns a pointer to the value.
static const char* dict_field(const char* path, const char* hdr, const char* key) {
    const char* p = strstr(hdr, key);
    if (!p) fail_input("%s: .npy header has no '%s' field", path, key);
    p = strchr(p + strlen(key), ':');
    if (!p) fail_input("%s: .npy header field '%s' is malformed", path, key);
    p++;
    while (*p == ' ') p++;
    return p;
}

void npy_read_ids(TokenIds* out, const char* path, int vocab) {
    size_t len;
    char* buf = read_file(path, &len);
    if (!buf) fail_input("%s: cannot read: %s", path, strerror(errno));
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
    if (off + hlen > len) fail_input("%s: .npy header length %zu runs past the end of the file", path, hlen);
    char* hdr = xmalloc(hlen + 1);
    memcpy(hdr, buf + off, hlen);
    hdr[hlen] = 0;
    const char* d = dict_field(path, hdr, "'descr'");
    int esize;
    if (strncmp(d, "'<i8'", 5) == 0)
        esize = 8;
    else if (strncmp(d, "'<i4'", 5) == 0)
        esize = 4;
    else
        fail_input("%s: field 'descr' = %.8s: token ids must be int32 or int64 ('<i4' or '<i8')", path, d);
    if (strncmp(dict_field(path, hdr, "'fortran_order'"), "False", 5) != 0)
        fail_input("%s: field 'fortran_order' must be False", path);
    const char* s = dict_field(path, hdr, "'shape'");
    long n = -1, t = -1;
    if (sscanf(s, "(%ld, %ld)", &n, &t) != 2)
        fail_input("%s: field 'shape' = %.24s: token ids must be a 2-D array [N, T]", path, s);
    if (n <= 0 || t <= 0) fail_input("%s: field 'shape' = (%ld, %ld): the array is empty", path, n, t);
    if (n > (1L << 30) || t > (1L << 24)) fail_input("%s: field 'shape' = (%ld, %ld) is too large", path, n, t);
    size_t need = (size_t)n * t * esize;
    if (len - off - hlen != need)
        fail_input("%s: data holds %zu bytes but shape (%ld, %ld) needs %zu (ragged or truncated)", path,
                   len - off - hlen, n, t, need);
    out->n = (int)n;
    out->t = (int)t;
    out->ids = xmalloc(sizeof(int) * n * t);
    const char* data = buf + off + hlen;
    for (long i = 0; i < n * t; i++) {
        int64_t v;
        if (esize == 8) {
            memcpy(&v, data + 8 * i, 8);
        } else {
            int32_t v4;
            memcpy(&v4, data + 4 * i, 4);
            v = v4;
        }
        if (v < 0 || (vocab > 0 && v >= vocab))
            fail_input("%s: token id %lld at [%ld, %ld] is outside the vocabulary [0, %d)", path, (long long)v,
                       i / t, i % t, vocab);
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

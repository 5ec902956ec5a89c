// File layout: "AQGPTQ1\n", key (u64), nf, n_linears (i32); per entry (format-major) a kind byte
// (0 none, 1 codes, 2 the unquantized weight), for codes out, in (i32), scales (out f32), codes
// (out in, i8); then a checksum (u64) of every byte before it. Native byte order: a cache is local.
#include "gptq_cache.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../engine/util.h"
#include "../kernels/gptq.h"
#include "../kernels/quant.h"

static const char k_magic[8] = {'A', 'Q', 'G', 'P', 'T', 'Q', '1', '\n'};

// 64-bit FNV-1a over 8-byte words (then the tail bytes): fast enough to hash a checkpoint's weights.
uint64_t gptq_cache_hash(uint64_t h, const void* p, size_t n) {
    const unsigned char* b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
    }
    for (; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t hash_spec(uint64_t h, const Format* f) {
    int spec[4] = {f->w_enable, f->w.bits, f->w.narrow, f->w.ct};
    return gptq_cache_hash(h, spec, sizeof(spec));
}

void gptq_cache_key(GptqCacheKey* k, const char* mode, const Model* m, const TokenIds* ids, const Format* fmts,
                    int nf, const int* choice, const Groups* gs, const GptqOpts* o) {
    uint64_t h = 0xcbf29ce484222325ull;
    h = gptq_cache_hash(h, mode, strlen(mode) + 1);
    for (int i = 0; i < m->n_linears; i++) {
        const Linear* l = &m->linears[i];
        h = gptq_cache_hash(h, l->name, strlen(l->name) + 1);
        if (l->w) {
            h = gptq_cache_hash(h, l->w, sizeof(float) * l->out * l->in);
        } else { // an opened model (quantize on the GPU): the checkpoint's own bytes
            char name[240];
            const StTensor* t = model_weight_tensor(m, i, name, sizeof(name));
            if (!t) fail_other("internal: %s: no checkpoint tensor to key the GPTQ cache", l->name);
            h = gptq_cache_hash(h, &t->dtype, sizeof(t->dtype));
            h = gptq_cache_hash(h, t->data, t->nbytes);
        }
        int sel = choice ? choice[i] : gs->g[gs->group_of[i]].disabled ? -1 : 0;
        h = gptq_cache_hash(h, &sel, sizeof(sel));
        if (choice && sel >= 0) h = hash_spec(h, &fmts[sel]);
    }
    int shape[3] = {ids->n, ids->t, nf};
    h = gptq_cache_hash(h, shape, sizeof(shape));
    h = gptq_cache_hash(h, ids->ids, sizeof(int) * ids->n * ids->t);
    for (int f = 0; !choice && f < nf; f++) h = hash_spec(h, &fmts[f]);
    double opts[3] = {o->damp, (double)o->order, (double)o->block};
    h = gptq_cache_hash(h, opts, sizeof(opts));
    k->hash = h;
}

static char* cache_path(const char* dir, const GptqCacheKey* k) {
    char name[64];
    snprintf(name, sizeof(name), "gptq-%016llx.bin", (unsigned long long)k->hash);
    return path_join(dir, name);
}

// A bounded reader over the file's bytes: every read checks what is left.
typedef struct {
    const unsigned char* p;
    size_t left;
} Reader;
static int take(Reader* r, void* out, size_t n) {
    if (n > r->left) return 0;
    memcpy(out, r->p, n);
    r->p += n, r->left -= n;
    return 1;
}

// What each entry must be, from the same inputs gptq_cache_save took: a linear quantized with a
// format's weight quantizer holds codes within that quantizer's range on exactly the row scales
// save derives (gptq_row_scales), so a file with a valid checksum but a changed, infinite or NaN
// scale or an out-of-range code is refused, never decoded into the model.
typedef struct {
    const Format* fmts;
    const int* choice;
    float* const* scales;
} Expect;

// NULL when every entry decodes and matches; else the reason. Fills tmp (nf, nl), which the caller
// frees on failure.
static const char* decode(Reader* r, const Model* m, float** tmp, int nf, const Expect* x) {
    for (long e = 0; e < (long)nf * m->n_linears; e++) {
        int i = (int)(e % m->n_linears);
        const Linear* l = &m->linears[i];
        int sel = x->choice ? x->choice[i] : (int)(e / m->n_linears);
        unsigned char kind;
        if (!take(r, &kind, 1) || kind > 2) return "an entry's kind is not 0, 1 or 2";
        if (kind == 0) {
            if (x->choice && sel >= 0) return "a chosen linear has no entry";
            continue;
        }
        if (sel < 0) return "an entry for a linear that is not quantized";
        const Format* fm = &x->fmts[sel];
        if (kind != (fm->w_enable ? 1 : 2)) return "an entry's kind does not match its format";
        size_t n = (size_t)l->out * l->in;
        if (kind == 2) {
            if (!l->w) return "an unquantized entry without the model's weight at hand";
            tmp[e] = xmalloc(sizeof(float) * n);
            memcpy(tmp[e], l->w, sizeof(float) * n);
            continue;
        }
        int shape[2];
        if (!take(r, shape, sizeof(shape)) || shape[0] != l->out || shape[1] != l->in)
            return "an entry's shape is not its linear's";
        if (!x->scales && !l->w) return "no weight to check an entry's scales against";
        float* scale = xmalloc(sizeof(float) * l->out);
        float* want = xmalloc(sizeof(float) * l->out);
        gptq_row_scales(want, x->scales ? x->scales[i] : NULL, l->w, l->out, l->in, fm->w);
        const char* bad = NULL;
        if (!take(r, scale, sizeof(float) * l->out) || n > r->left)
            bad = "truncated";
        else if (memcmp(scale, want, sizeof(float) * l->out) != 0)
            bad = "an entry's row scales are not the ones its format gives (changed, infinite or NaN)";
        float lo, hi;
        quant_bounds(fm->w, &lo, &hi);
        tmp[e] = bad ? NULL : xmalloc(sizeof(float) * n);
        for (size_t j = 0; !bad && j < n; j++) {
            float c = (float)(int8_t)r->p[j];
            if (c < lo || c > hi) bad = "an entry's code is outside its format's range";
            tmp[e][j] = c * scale[j / l->in];
        }
        free(scale), free(want);
        if (bad) return bad;
        r->p += n, r->left -= n;
    }
    return NULL;
}

int gptq_cache_load(const char* dir, const GptqCacheKey* k, const Model* m, float** wq, int nf,
                    const Format* fmts, const int* choice, float* const* scales) {
    char* path = cache_path(dir, k);
    char why[160];
    size_t size = 0;
    // INPUT_NOFOLLOW: a cache folder may be shared; a FIFO, device or link planted there is skipped
    unsigned char* buf = (unsigned char*)input_read(path, (size_t)-1, INPUT_NOFOLLOW, &size, why, sizeof(why));
    if (!buf) {
        if (errno != ENOENT) warn_msg("%s: GPTQ cache file %s; ignored, recomputing", path, why);
        free(path);
        return 0;
    }
    uint64_t sum = 0, key = 0;
    int counts[2] = {0, 0};
    const char* bad = NULL;
    Reader r = {buf + 8, size >= 32 ? size - 16 : 0};
    if (size < 32) bad = "truncated";
    if (!bad) memcpy(&sum, buf + size - 8, 8);
    if (!bad && (memcmp(buf, k_magic, 8) != 0 || sum != gptq_cache_hash(0xcbf29ce484222325ull, buf, size - 8)))
        bad = "corrupt (bad magic or checksum)";
    if (!bad && !(take(&r, &key, 8) && key == k->hash && take(&r, counts, sizeof(counts)) && counts[0] == nf &&
                  counts[1] == m->n_linears))
        bad = "written for another model, data or settings";
    float** tmp = xcalloc((size_t)nf * m->n_linears, sizeof(float*));
    Expect x = {fmts, choice, scales};
    if (!bad) bad = decode(&r, m, tmp, nf, &x);
    if (!bad && r.left != 0) bad = "trailing bytes";
    if (!bad) {
        memcpy(wq, tmp, sizeof(float*) * nf * m->n_linears);
        info_msg("gptq: weights from the cache %s", path);
    } else {
        for (long e = 0; e < (long)nf * m->n_linears; e++) free(tmp[e]);
        warn_msg("%s: not a valid GPTQ cache for this model, data and settings (%s); ignored, recomputing",
                 path, bad);
    }
    free(tmp);
    free(buf);
    free(path);
    return !bad;
}

void gptq_cache_save(const char* dir, const GptqCacheKey* k, const Model* m, float** wq, int nf,
                     const Format* fmts, const int* choice, float* const* scales) {
    char* path = cache_path(dir, k);
    char* tmp = NULL;
    // exclusive, no-follow, under a fresh name, removed on failure or signal (engine/util.h)
    int fd = tmp_create(path, &tmp);
    FILE* f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        warn_msg("%s: cannot write the GPTQ cache: %s", path, strerror(errno));
        if (fd >= 0) close(fd), unlink(tmp), tmp_unregister(tmp);
        free(tmp), free(path);
        return;
    }
    // built in memory and hashed in one piece, as the reader checks it
    size_t cap = 24 + (size_t)nf * m->n_linears, len = 0; // header, then a kind byte per entry
    for (long e = 0; e < (long)nf * m->n_linears; e++) {
        const Linear* l = &m->linears[e % m->n_linears];
        if (wq[e]) cap += 8 + (sizeof(float) + l->in) * l->out;
    }
    unsigned char* buf = xmalloc(cap);
#define PUT(p, n) (memcpy(buf + len, (p), (n)), len += (n))
    int counts[2] = {nf, m->n_linears}, ok = 1;
    PUT(k_magic, 8);
    PUT(&k->hash, 8);
    PUT(counts, sizeof(counts));
    for (long e = 0; e < (long)nf * m->n_linears && ok; e++) {
        int i = (int)(e % m->n_linears);
        ok = !(choice && choice[i] >= 0 && !wq[e]); // a chosen linear without weights: never cache that
        const Linear* l = &m->linears[i];
        const Format* fm = &fmts[choice ? (choice[i] < 0 ? 0 : choice[i]) : e / m->n_linears];
        unsigned char kind = !wq[e] ? 0 : fm->w_enable ? 1 : 2;
        PUT(&kind, 1);
        if (kind != 1) continue;
        int shape[2] = {l->out, l->in};
        PUT(shape, sizeof(shape));
        float* scale = (float*)(buf + len); // unaligned in buf: written by memcpy
        len += sizeof(float) * l->out;
        float* rs = xmalloc(sizeof(float) * l->out);
        gptq_row_scales(rs, scales ? scales[i] : NULL, l->w, l->out, l->in, fm->w);
        for (int row = 0; row < l->out && ok; row++) {
            float s = rs[row];
            memcpy(&scale[row], &s, sizeof(s));
            for (int j = 0; j < l->in; j++) {
                float v = wq[e][(size_t)row * l->in + j], c = s > 0 ? rintf(v / s) : 0.0f;
                ok = ok && fabsf(c) <= 128 && c * s == v; // every weight must be exactly code * scale
                buf[len + (size_t)row * l->in + j] = (unsigned char)(int8_t)c;
            }
        }
        len += (size_t)l->out * l->in;
        free(rs);
    }
#undef PUT
    uint64_t sum = gptq_cache_hash(0xcbf29ce484222325ull, buf, len);
    ok = ok && fwrite(buf, 1, len, f) == len && fwrite(&sum, 1, 8, f) == 8;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        unlink(tmp);
        tmp_unregister(tmp);
        warn_msg("%s: the GPTQ cache was not written (write failed)", path);
    } else if (tmp_commit(tmp, path) == 0) {
        info_msg("gptq: weights cached in %s", path);
    } else {
        warn_msg("%s: the GPTQ cache was not written (%s)", path, strerror(errno));
    }
    free(buf);
    free(tmp);
    free(path);
}

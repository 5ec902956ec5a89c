// The BPE trainer (datasets/bpe_train.c) against the algorithm it replaced, kept here as the reference:
// pre-tokens deduplicated by a linear scan, every merge recounting every pair of every word in a
// V x V table. Both must learn the same merges, in the same order, on text of many kinds.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "datasets/bpe_train.h"
#include "engine/util.h"

typedef struct {
    int* sym;
    int n;
    long count;
} RefWord;

// The previous bpe_train_write's merge loop, unchanged but for returning the merges.
static int ref_learn(const char* text, size_t len, int n_merges, int (*merges)[2]) {
    int errc;
    PCRE2_SIZE erroff;
    pcre2_code* re = pcre2_compile((PCRE2_SPTR)QWEN_SPLIT_REGEX, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                                   &errc, &erroff, NULL);
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(re, NULL);
    int cap = 1024, nw = 0;
    RefWord* words = xmalloc(sizeof(RefWord) * cap);
    PCRE2_SIZE pos = 0;
    while (pos < len && pcre2_match(re, (PCRE2_SPTR)text, len, pos, 0, md, NULL) >= 0) {
        PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        if (ov[1] == ov[0]) {
            pos = ov[0] + 1;
            continue;
        }
        int n = (int)(ov[1] - ov[0]);
        const unsigned char* p = (const unsigned char*)text + ov[0];
        int found = -1;
        for (int w = 0; w < nw && found < 0; w++) {
            if (words[w].n != n) continue;
            int same = 1;
            for (int k = 0; k < n && same; k++) same = words[w].sym[k] == p[k];
            if (same) found = w;
        }
        if (found >= 0) {
            words[found].count++;
        } else {
            if (nw == cap) words = xrealloc(words, sizeof(RefWord) * (cap *= 2));
            words[nw].sym = xmalloc(sizeof(int) * n);
            for (int k = 0; k < n; k++) words[nw].sym[k] = p[k];
            words[nw].n = n;
            words[nw].count = 1;
            nw++;
        }
        pos = ov[1];
    }
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    int done = 0;
    long* counts = xmalloc(sizeof(long) * (size_t)(256 + n_merges) * (256 + n_merges));
    for (; done < n_merges; done++) {
        int V = 256 + done;
        memset(counts, 0, sizeof(long) * (size_t)V * V);
        for (int w = 0; w < nw; w++)
            for (int k = 0; k + 1 < words[w].n; k++)
                counts[(size_t)words[w].sym[k] * V + words[w].sym[k + 1]] += words[w].count;
        long best = 0;
        int ba = -1, bb = -1;
        for (int a = 0; a < V; a++)
            for (int b = 0; b < V; b++)
                if (counts[(size_t)a * V + b] > best) best = counts[(size_t)a * V + b], ba = a, bb = b;
        if (best < 2) break;
        int id = V;
        merges[done][0] = ba;
        merges[done][1] = bb;
        for (int w = 0; w < nw; w++) {
            int o = 0;
            for (int k = 0; k < words[w].n; k++) {
                if (k + 1 < words[w].n && words[w].sym[k] == ba && words[w].sym[k + 1] == bb) {
                    words[w].sym[o++] = id;
                    k++;
                } else {
                    words[w].sym[o++] = words[w].sym[k];
                }
            }
            words[w].n = o;
        }
    }
    free(counts);
    for (int w = 0; w < nw; w++) free(words[w].sym);
    free(words);
    return done;
}

static void same_merges(const char* name, const char* text, size_t len, int n_merges) {
    int(*a)[2] = xmalloc(sizeof(int[2]) * (n_merges + 1));
    int(*b)[2] = xmalloc(sizeof(int[2]) * (n_merges + 1));
    int na = bpe_learn(text, len, name, n_merges, a), nb = ref_learn(text, len, n_merges, b);
    int first = -1;
    for (int i = 0; i < na && i < nb && first < 0; i++)
        if (a[i][0] != b[i][0] || a[i][1] != b[i][1]) first = i;
    char label[160];
    snprintf(label, sizeof(label), "bpe: %s: the same %d merges as the reference", name, nb);
    CHECK(na == nb && first < 0 && nb > 0, label, "%d vs %d merges, first difference at %d", na, nb, first);
    free(a);
    free(b);
}

static uint64_t g_rng = 88172645463325252ull;
static unsigned rnd(unsigned n) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (unsigned)(g_rng % n);
}

static void bad_utf8(const void* arg) {
    (void)arg;
    int m[4][2];
    bpe_learn("ok \xff\xfe text", 10, "bad.txt", 4, m);
}

// Runs fn in a child with stderr in err (up to cap bytes); returns its exit status.
static int child_status(void (*fn)(const void*), const void* arg, char* err, size_t cap) {
    char path[] = "/tmp/test_bpe_XXXXXX";
    int fd = mkstemp(path);
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        dup2(fd, 2);
        fn(arg);
        _exit(0);
    }
    int st;
    waitpid(p, &st, 0);
    ssize_t n = pread(fd, err, cap - 1, 0);
    err[n > 0 ? n : 0] = 0;
    close(fd);
    unlink(path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(void) {
    g_quiet = 1;
    size_t len;
    char* readme = read_file("README.md", &len);
    if (readme) {
        same_merges("README.md", readme, len, 500);
        free(readme);
    } else {
        SKIP("bpe: README.md", "not found (run from the repository root)");
    }
    // Runs of one byte (overlapping pairs: "aaaa" counts (a, a) three times, merges it twice), and
    // ties everywhere: a small alphabet in random words.
    char* buf = xmalloc(1 << 20);
    size_t n = 0;
    for (int w = 0; w < 4000; w++) {
        const char* alpha[] = {"a", "b", "c", "é", "日", "1", "!", " ", "\n", "\t", "'s", "aa"};
        int k = 1 + rnd(9);
        for (int i = 0; i < k; i++) n += (size_t)sprintf(buf + n, "%s", alpha[rnd(12)]);
        buf[n++] = rnd(5) ? ' ' : '\n';
    }
    same_merges("random words over a small alphabet", buf, n, 400);
    n = 0;
    for (int r = 1; r < 60; r++) {
        for (int i = 0; i < r; i++) buf[n++] = 'a' + r % 3;
        buf[n++] = ' ';
    }
    same_merges("runs of one letter", buf, n, 300);
    // Fewer pairs that occur twice than merges asked: both stop at the same place.
    n = (size_t)sprintf(buf, "hello hello world");
    same_merges("stops when no pair occurs twice", buf, n, 100);
    free(buf);
    char err[512];
    int st = child_status(bad_utf8, NULL, err, sizeof(err));
    CHECK(st == 2 && strstr(err, "bad.txt: not UTF-8 text (an invalid sequence at byte 3)"),
          "bpe: a corpus that is not UTF-8 exits 2 naming the file and byte", "exit %d: %s", st, err);
    return g_fail ? 1 : 0;
}

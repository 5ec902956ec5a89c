// Hardening against hostile inputs (issue 12), the parts only reachable from
// C: overflow-checked sizes, message clipping, config.max_pos, model_open's
// NaN scan (the GPU path), and temp outputs removed on SIGTERM / SIGINT.
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "engine/config.h"
#include "engine/model.h"
#include "engine/util.h"

static char g_dir[64];

// Runs fn(arg) in a child with stderr silenced; returns its exit status, or 128 + signal.
static int child_status(void (*fn)(const void*), const void* arg) {
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 2);
        fn(arg);
        _exit(0);
    }
    int st;
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void mul_overflow(const void* arg) {
    (void)arg;
    size_mul3((size_t)1 << 40, (size_t)1 << 20, (size_t)1 << 10, "test");
}

static void add_overflow(const void* arg) {
    (void)arg;
    size_add((size_t)-1, 2, "test");
}

static void test_sizes(void) {
    CHECK(size_mul(3, 5, "x") == 15 && size_mul3(2, 3, 4, "x") == 24 && size_add(1, 2, "x") == 3,
          "inputs: size_*", "wrong products");
    CHECK(child_status(mul_overflow, NULL) == 2, "inputs: size_mul3 overflow exits 2", "status");
    CHECK(child_status(add_overflow, NULL) == 2, "inputs: size_add overflow exits 2", "status");
}

static void test_clip(void) {
    char buf[CLIP_BUF], s[400];
    CHECK(strcmp(str_clip(buf, "short\tname"), "short?name") == 0, "inputs: str_clip control chars", "%s", buf);
    // 2-byte characters across the 80-byte cut: never half a character.
    s[0] = 'x';
    for (int i = 0; i < 150; i++) memcpy(s + 1 + 2 * i, "\xc3\xa9", 2);
    s[301] = 0;
    str_clip(buf, s);
    size_t n = strlen(buf);
    CHECK(n <= 83 && strcmp(buf + n - 3, "...") == 0 && (buf[n - 4] & 0xC0) == 0x80 &&
              (buf[n - 5] & 0xff) == 0xc3,
          "inputs: str_clip cuts on a UTF-8 boundary", "len %zu", n);
}

static void write_text(const char* path, const char* text) {
    FILE* f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_max_pos(void) {
    Config c;
    config_load(&c, "tests/fixtures/qwen3-vl-tiny");
    char* p = path_join(g_dir, "config.json");
    write_text(p,
               "{\"model_type\": \"qwen3\", \"vocab_size\": 64, \"hidden_size\": 32, \"intermediate_size\": 64,"
               " \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"max_position_embeddings\": 4096}");
    Config d;
    config_load(&d, g_dir);
    CHECK(d.max_pos == 4096 && c.max_pos >= 0, "inputs: config max_pos read", "max_pos %d", d.max_pos);
    write_text(p,
               "{\"model_type\": \"qwen3\", \"vocab_size\": 64, \"hidden_size\": 32, \"intermediate_size\": 64,"
               " \"num_hidden_layers\": 1, \"num_attention_heads\": 2}");
    config_load(&d, g_dir);
    CHECK(d.max_pos == 0, "inputs: config max_pos 0 when absent", "max_pos %d", d.max_pos);
    unlink(p);
    free(p);
}

static void open_model(const void* dir) {
    Model m;
    model_open(&m, dir);
}

// A copy of the fixture with one NaN in a weight: model_open (no fp32 copies) must refuse it.
static void test_model_open_nan(void) {
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "cp -r tests/fixtures/qwen3-vl-tiny %s/nan", g_dir);
    if (system(cmd) != 0) {
        SKIP("inputs: model_open refuses NaN weights", "cannot copy the fixture");
        return;
    }
    char dir[128], file[160];
    snprintf(dir, sizeof(dir), "%s/nan", g_dir);
    snprintf(file, sizeof(file), "%s/model.safetensors", dir);
    StCheckpoint ck;
    st_open_file(&ck, file);
    const StTensor* t = st_find(&ck, "model.language_model.layers.0.mlp.up_proj.weight");
    long off = t ? (long)(t->data - (const uint8_t*)ck.files[0].map) + 2 * 5 : -1;
    st_free(&ck);
    CHECK(off > 0, "inputs: fixture tensor found", "no up_proj");
    int fd = open(file, O_WRONLY);
    const unsigned char nan_bf16[2] = {0xc0, 0x7f};
    CHECK(pwrite(fd, nan_bf16, 2, off) == 2, "inputs: NaN written", "pwrite");
    close(fd);
    CHECK(child_status(open_model, dir) == 2, "inputs: model_open refuses NaN weights", "status");
    CHECK(child_status(open_model, "tests/fixtures/qwen3-vl-tiny") == 0,
          "inputs: model_open accepts the fixture", "status");
}

static void killed_while_writing(const void* arg) {
    // a terminal's disposition: a suite started in the background of a non-interactive shell inherits SIGINT
    // ignored, which out_open rightly leaves alone
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    OutFile o;
    out_open(&o, (const char*)arg);
    fputs("partial", o.f);
    fflush(o.f);
    raise(strcmp((const char*)arg + strlen(arg) - 3, "int") == 0 ? SIGINT : SIGTERM);
}

static int dir_entries(const char* dir) {
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "test $(ls -A %s | wc -l) -eq 0", dir);
    return system(cmd) == 0 ? 0 : 1;
}

static void test_signals(void) {
    char d[96], p[128];
    snprintf(d, sizeof(d), "%s/sig", g_dir);
    mkdir(d, 0755);
    snprintf(p, sizeof(p), "%s/out_term", d);
    int st = child_status(killed_while_writing, p);
    CHECK(st == 128 + SIGTERM && dir_entries(d) == 0, "inputs: SIGTERM removes the temporary output",
          "status %d, leftovers %d", st, dir_entries(d));
    snprintf(p, sizeof(p), "%s/out_int", d);
    st = child_status(killed_while_writing, p);
    CHECK(st == 128 + SIGINT && dir_entries(d) == 0, "inputs: SIGINT removes the temporary output",
          "status %d, leftovers %d", st, dir_entries(d));
}

static void check_out(const void* p) { out_check((const char*)p, "--out"); }

static void test_out_check(void) {
    char ok[96], sub[128];
    snprintf(ok, sizeof(ok), "%s/fine.json", g_dir);
    snprintf(sub, sizeof(sub), "%s/missing/x.json", g_dir);
    CHECK(child_status(check_out, ok) == 0, "inputs: out_check accepts a new file", "status");
    CHECK(child_status(check_out, "-") == 0, "inputs: out_check accepts - (stdout)", "status");
    const char* bad[] = {"", "/", g_dir, "/dev/null", sub};
    for (int i = 0; i < 5; i++) {
        char name[96];
        snprintf(name, sizeof(name), "inputs: out_check refuses '%s'",
                 i == 2   ? "a directory"
                 : i == 4 ? "a missing folder"
                          : bad[i]);
        CHECK(child_status(check_out, bad[i]) == 2, name, "status");
    }
}

int main(void) {
    snprintf(g_dir, sizeof(g_dir), "/tmp/autoq-test-inputs-XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    test_sizes();
    test_clip();
    test_max_pos();
    test_model_open_nan();
    test_signals();
    test_out_check();
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
    if (system(cmd) != 0) return 1;
    return g_fail ? 1 : 0;
}

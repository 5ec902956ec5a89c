// The NCCL-id rendezvous of multi-process runs, host side only: file and TCP
// round trips between two processes, world-size checks, time-outs.
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "engine/rendezvous.h"
#include "engine/util.h"

static unsigned char g_id[128];

// Runs fetch in a child; returns its exit status (0 when the bytes matched).
static int child_fetch(const RdvSpec* r, int world, double timeout) {
    pid_t p = fork();
    if (p == 0) {
        g_quiet = 1;
        unsigned char got[128];
        rdv_fetch(r, got, sizeof(got), world, timeout);
        _exit(memcmp(got, g_id, sizeof(got)) == 0 ? 0 : 3);
    }
    return p;
}

static int wait_status(pid_t p) {
    int st;
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 99;
}

int main(void) {
    for (int i = 0; i < 128; i++) g_id[i] = (unsigned char)(i * 37 + 11);
    char path[256];
    snprintf(path, sizeof(path), "/tmp/autoq-rdv-%d", (int)getpid());
    char spec[300];
    snprintf(spec, sizeof(spec), "file:%s", path);
    RdvSpec r;
    rdv_parse(&r, spec);
    CHECK(!r.tcp && strcmp(r.path, path) == 0, "parse file:PATH", "%s", r.path);
    pid_t c = child_fetch(&r, 2, 10.0);
    usleep(200000); // the reader starts first and waits
    rdv_publish(&r, g_id, sizeof(g_id), 2, 10.0);
    CHECK(wait_status(c) == 0, "file rendezvous delivers the id", "child failed");
    c = child_fetch(&r, 3, 10.0);
    CHECK(wait_status(c) == 2, "file rendezvous refuses another world size", "child status");
    rdv_done(&r);
    CHECK(access(path, F_OK) != 0, "rank 0 removes the file at the end", "still there");
    c = child_fetch(&r, 2, 0.3);
    CHECK(wait_status(c) == 1, "missing rank 0 times out (exit 1), no hang", "child status");

    int port = 20000 + (int)(getpid() % 20000);
    snprintf(spec, sizeof(spec), "tcp:127.0.0.1:%d", port);
    rdv_parse(&r, spec);
    CHECK(r.tcp && r.port == port && strcmp(r.host, "127.0.0.1") == 0, "parse tcp:HOST:PORT", "%s %d", r.host,
          r.port);
    pid_t c1 = child_fetch(&r, 3, 10.0), c2 = child_fetch(&r, 3, 10.0);
    rdv_publish(&r, g_id, sizeof(g_id), 3, 10.0);
    CHECK(wait_status(c1) == 0 && wait_status(c2) == 0, "tcp rendezvous serves every other rank",
          "child failed");
    c = child_fetch(&r, 2, 0.5);
    CHECK(wait_status(c) == 1, "tcp fetch without a server times out (exit 1)", "child status");
    return g_fail ? 1 : 0;
}

#include "rendezvous.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

#define RDV_MAGIC 0x41555451u // "AUTQ"

void rdv_parse(RdvSpec* r, const char* spec) {
    memset(r, 0, sizeof(*r));
    if (strncmp(spec, "file:", 5) == 0 && spec[5]) {
        snprintf(r->path, sizeof(r->path), "%s", spec + 5);
        return;
    }
    if (strncmp(spec, "tcp:", 4) == 0) {
        const char* colon = strrchr(spec + 4, ':');
        char* end;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (colon && colon > spec + 4 && *end == 0 && port > 0 && port < 65536) {
            r->tcp = 1;
            r->port = (int)port;
            snprintf(r->host, sizeof(r->host), "%.*s", (int)(colon - spec - 4), spec + 4);
            return;
        }
    }
    fail_input("--nccl-init '%s' must be file:PATH or tcp:HOST:PORT", spec);
}

// The payload carries the world size, so a rank never joins a run of another size.
static void pack(unsigned char* buf, const void* id, size_t n, int world) {
    uint32_t h[2] = {RDV_MAGIC, (uint32_t)world};
    memcpy(buf, h, 8);
    memcpy(buf + 8, id, n);
}

static void unpack(const unsigned char* buf, void* id, size_t n, int world, const char* where) {
    uint32_t h[2];
    memcpy(h, buf, 8);
    if (h[0] != RDV_MAGIC) fail_input("%s: not an autoq rendezvous", where);
    if ((int)h[1] != world)
        fail_input("%s: written for --world-size %u, this rank has %d (stale file from another run?)", where,
                   h[1], world);
    memcpy(id, buf + 8, n);
}

static void file_publish(const RdvSpec* r, const unsigned char* buf, size_t len) {
    if (access(r->path, F_OK) == 0)
        fail_input("%s: rendezvous file already exists (left by another run?); remove it first", r->path);
    OutFile o;
    out_open(&o, r->path); // written under a temporary name and renamed: readers never see half
    fwrite(buf, 1, len, o.f);
    out_close(&o);
}

static void file_fetch(const RdvSpec* r, unsigned char* buf, size_t len, double timeout_s) {
    double t0 = time_now();
    for (;;) {
        char why[160];
        size_t got = 0;
        char* data = input_read(r->path, 1 << 20, 0, &got, why, sizeof(why)); // never a FIFO (README §1)
        if (!data && errno != ENOENT) fail_input("%s: rendezvous file %s", r->path, why);
        if (data && got >= len) memcpy(buf, data, len);
        free(data);
        if (data && got >= len) return;
        if (time_now() - t0 > timeout_s)
            fail_other("%s: rendezvous timed out after %.0f s waiting for rank 0", r->path, timeout_s);
        usleep(50000);
    }
}

static void tcp_publish(const RdvSpec* r, const unsigned char* buf, size_t len, int world, double timeout_s) {
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons((uint16_t)r->port);
    if (bind(s, (struct sockaddr*)&a, sizeof(a)) != 0 || listen(s, 64) != 0)
        fail_other("tcp:%s:%d: cannot listen: %s", r->host, r->port, strerror(errno));
    double t0 = time_now();
    for (int served = 0; served < world - 1;) {
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(s, &fds);
        struct timeval tv = {0, 200000};
        if (select(s + 1, &fds, NULL, NULL, &tv) > 0) {
            int c = accept(s, NULL, NULL);
            if (c >= 0) {
                if (write(c, buf, len) == (ssize_t)len) served++;
                close(c);
            }
        }
        if (time_now() - t0 > timeout_s) {
            close(s);
            fail_other("tcp:%s:%d: rendezvous timed out after %.0f s with %d of %d ranks", r->host, r->port,
                       timeout_s, served + 1, world);
        }
    }
    close(s);
}

static void tcp_fetch(const RdvSpec* r, unsigned char* buf, size_t len, double timeout_s) {
    double t0 = time_now();
    char port[16];
    snprintf(port, sizeof(port), "%d", r->port);
    for (;;) {
        struct addrinfo hints = {0}, *res = NULL;
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        if (getaddrinfo(r->host, port, &hints, &res) == 0) {
            int s = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(s, res->ai_addr, res->ai_addrlen) == 0) {
                size_t got = 0;
                ssize_t k;
                while (got < len && (k = read(s, buf + got, len - got)) > 0) got += (size_t)k;
                close(s);
                freeaddrinfo(res);
                if (got == len) return;
            } else {
                close(s);
                freeaddrinfo(res);
            }
        }
        if (time_now() - t0 > timeout_s)
            fail_other("tcp:%s:%d: rendezvous timed out after %.0f s waiting for rank 0", r->host, r->port,
                       timeout_s);
        usleep(100000);
    }
}

void rdv_publish(const RdvSpec* r, const void* id, size_t n, int world, double timeout_s) {
    unsigned char* buf = xmalloc(n + 8);
    pack(buf, id, n, world);
    if (r->tcp)
        tcp_publish(r, buf, n + 8, world, timeout_s);
    else
        file_publish(r, buf, n + 8);
    free(buf);
}

void rdv_fetch(const RdvSpec* r, void* id, size_t n, int world, double timeout_s) {
    unsigned char* buf = xmalloc(n + 8);
    char where[600];
    if (r->tcp) {
        tcp_fetch(r, buf, n + 8, timeout_s);
        snprintf(where, sizeof(where), "tcp:%s:%d", r->host, r->port);
    } else {
        file_fetch(r, buf, n + 8, timeout_s);
        snprintf(where, sizeof(where), "%s", r->path);
    }
    unpack(buf, id, n, world, where);
    free(buf);
}

void rdv_done(const RdvSpec* r) {
    if (!r->tcp) unlink(r->path);
}

// Exchange of the NCCL unique id between the processes of a multi-host run:
// through a file on shared storage (file:PATH) or a TCP rendezvous served by
// rank 0 (tcp:HOST:PORT). Host code only, so CI tests it without a GPU.
#pragma once
#include <stddef.h>

typedef struct {
    int tcp;        // 0 file, 1 tcp
    char path[512]; // file:
    char host[256]; // tcp:
    int port;
} RdvSpec;

// Parses "file:PATH" or "tcp:HOST:PORT"; exits 2 naming the problem.
void rdv_parse(RdvSpec* r, const char* spec);
// Rank 0: makes the id available to world - 1 other ranks (tcp: serves them,
// returning once all have it, or exits 1 after timeout_s).
void rdv_publish(const RdvSpec* r, const void* id, size_t n, int world, double timeout_s);
// Other ranks: waits for the id (exits 1 naming the rendezvous after timeout_s).
void rdv_fetch(const RdvSpec* r, void* id, size_t n, int world, double timeout_s);
// Rank 0, at the end: removes the file (tcp: nothing).
void rdv_done(const RdvSpec* r);

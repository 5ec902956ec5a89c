// Scores as data: what `autoq score` writes (JSON, HDF5) and `autoq search`
// reads back, independent of the model in memory.
#pragma once
#include <jansson.h>
#include <stdint.h>

#define MAX_FORMATS 4

typedef struct {
    char model[512];
    char method[16];
    char numerics[32];
    char disabled_csv[1024]; // --disabled-layers patterns the scores were made with
    int nf;
    char fmt_name[MAX_FORMATS][64];
    int fmt_bits[MAX_FORMATS];
    int num_samples, seq_len;
    int ng;
    char** gname;    // (ng)
    char** gmembers; // (ng) comma-joined linear names
    long* params;    // (ng)
    uint8_t* disabled;
    double* score; // (nf, ng)
    int nl;
    char** lname; // (nl)
    long* lshape; // (nl, 2) out, in
    int* lgroup;  // (nl)
} ScoreTable;

void table_free(ScoreTable* t);
// Writes j as indented JSON with doubles that round-trip, to path ("-" or NULL: stdout), atomically.
void json_write_file(json_t* j, const char* path);
// {"name", "members", "params", "disabled"} of group g: the part every group record shares.
json_t* table_group_json(const ScoreTable* t, int g);
// ["a", "b", ...] from "a,b,..."
json_t* json_csv_list(const char* csv);
void table_write_json(const ScoreTable* t, const char* path); // "-" = stdout
// HDF5 in the SPEC §8 layout. The file is created under a temporary name;
// table_h5_create returns its id and table_h5_finish closes and renames it.
long table_h5_create(const ScoreTable* t, const char* path);
void table_h5_finish(long file, const char* path);
// Writes one dataset under loc (an HDF5 file or group id); exits 1 on failure.
void h5_write(long loc, const char* name, long type, int rank, const unsigned long long* dims,
              const void* data);
void table_read_h5(ScoreTable* t, const char* path);
void table_print(const ScoreTable* t);

// Scores as data: what `autoq score` writes (JSON, HDF5) and `autoq search`
// reads back, independent of the model in memory.
#pragma once
#include <jansson.h>
#include <stdint.h>

#include "format.h"

#define MAX_FORMATS                                                                                            \
    7 // every format of configs/formats at once: with bf16, KS_MAX_CHOICES (8) choices per group

// The scores file's root attribute format_version (README §8): 2 added /groups/window_scores; files without
// the attribute are version 1.
#define SCORES_FORMAT_VERSION 2
#define MAX_DOMAINS 16
#define MAX_DOMAIN_NAME 64

typedef struct {
    char model[512];
    char method[16];
    char numerics[32];
    char quantizer[8];       // the candidates' weights: "rtn" or "gptq" (README §9)
    char disabled_csv[1024]; // --disabled-layers patterns the scores were made with
    int nf;
    // Each format's whole definition, stored in the scores files: search and its exports use
    // these, never a format file that happens to have the same name.
    Format fmts[MAX_FORMATS];
    int num_samples, seq_len;
    int ng;
    char** gname;    // (ng)
    char** gmembers; // (ng) comma-joined linear names
    long* params;    // (ng)
    long* active;    // (ng) parameters read per token: params, or params x top_k / E for an experts group
    uint8_t* disabled;
    uint8_t* gkv;  // (ng) 1: a KV-cache group (no members, params 0; README §5)
    double* score; // (nf, ng)
    // Each calibration window's contribution to score (README §8 /groups/window_scores), for search
    // --bootstrap: (nw, nf, ng); nw = 0 and NULL when the scores file holds none.
    int nw;
    double* wscore;
    // Calibration domains (score --data NAME=FILE, README §8 /domains): nd = 0 for one unnamed domain. The
    // windows are the domains' in order (dsamples[d] each, summing to num_samples), and score their sum.
    int nd;
    char dname[MAX_DOMAINS][MAX_DOMAIN_NAME + 1];
    int dsamples[MAX_DOMAINS];
    double* dscore; // (nd, nf, ng) each domain's scores, summed over its windows
    int nl;
    char** lname; // (nl)
    long* lshape; // (nl, 2) out, in
    int* lgroup;  // (nl)
    // Expert coverage of mixture-of-experts models (written, not read back): tokens of the
    // calibration windows routed to each expert of each sparse layer, in the unquantized pass.
    int n_cov, n_experts, min_expert_tokens;
    char** cov_name;  // (n_cov) the layer's experts group, e.g. model.layers.3.mlp.experts
    long* cov_tokens; // (n_cov, n_experts)
    // What search --memory-budget counts beside the groups (README §7, §8 /memory); has_memory = 0 for files
    // written before it. other_params: parameters outside the candidate linears a server loads (stored bf16);
    // each full-attention layer's KV-cache group name and its K and V values per token (2 KV head_dim).
    int has_memory;
    long other_params;
    int n_kvl;
    char** kvl_name;  // (n_kvl)
    long* kvl_values; // (n_kvl)
} ScoreTable;

void table_free(ScoreTable* t);
// Frees n strings and the array holding them (NULL: nothing).
void table_free_strs(char** s, int n);
// json_string(s), or exit 2 naming `what` when s is not valid UTF-8 (jansson would return NULL
// and the value would vanish from the output).
json_t* json_text(const char* s, const char* what);
// json_object_set_new that exits 2 naming `what` instead of dropping a key or value it cannot hold.
void json_put(json_t* o, const char* key, json_t* v, const char* what);
// Writes j as indented JSON with doubles that round-trip, to path ("-" or NULL: stdout), atomically.
void json_write_file(json_t* j, const char* path);
// {"name", "members", "params", "disabled"} of group g: the part every group record shares.
json_t* table_group_json(const ScoreTable* t, int g);
// ["a", "b", ...] from "a,b,..."
json_t* json_csv_list(const char* csv);
void table_write_json(const ScoreTable* t, const char* path); // "-" = stdout
// ---- table_h5.c ----
// HDF5 in the README §8 layout, every string fixed-length (NUL-padded UTF-8). table_h5_create builds the
// file in memory and returns its id; table_h5_finish adds the data checksum and writes it out atomically
// (exclusive, no-follow temporary name, renamed).
long table_h5_create(const ScoreTable* t, const char* path);
void table_h5_finish(long file, const char* path);
// Stores the data checksum of an open scores file as its root attribute checksum (README §8), replacing
// one already there: table_h5_finish does it last; tests re-stamp the files they edit.
void table_h5_stamp(long file, const char* path);
// A fixed-length UTF-8 string attribute of obj (an HDF5 file, group or dataset id); exits 1 on failure.
void h5_attr_str(long obj, const char* name, const char* v);
// Attributes `units` (unless NULL) and `description` of the object name under loc (README §8).
void h5_describe(long loc, const char* name, const char* units, const char* description);
// The units of the scores: "nats" (kl) or "nats^2" (gradient, the Fisher proxy).
const char* table_score_units(const ScoreTable* t);
// Writes one dataset under loc (an HDF5 file or group id); exits 1 on failure.
void h5_write(long loc, const char* name, long type, int rank, const unsigned long long* dims,
              const void* data);
// Reads and validates a scores file (every attribute, dataset shape, type, string and value);
// exits 2 naming the file and the object at fault. Formats come from /formats/definition;
// a file without it (older autoq) falls back to configs/formats/NAME.json with a warning.
// Variable-length strings, links other than hard ones, chunked, filtered or external storage and
// non-standard number types are refused before libhdf5 reads any of their data.
void table_read_h5(ScoreTable* t, const char* path);
// ---- table.c ----
// Exits 2 with "path: obj: message": a scores file's object at fault.
void table_bad(const char* path, const char* obj, const char* fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
// Checks of a table read from path, exit 2 naming the file and dataset: every group's params,
// disabled flag and scores are plausible, and some group is enabled.
void table_check_group_values(const ScoreTable* t, const char* path);
// Each group's members are exactly the layers pointing to it, and its params their weights
// (t->lgroup must already hold valid group indexes).
void table_check_members(const ScoreTable* t, const char* path);
// Each group's active_params are its params, or for a sparse layer's experts group (members
// <group>.N.{gate,up,down}_proj) params x top_k / E, top_k one whole number for every such group.
void table_check_active(const ScoreTable* t, const char* path);
void table_print(const ScoreTable* t);
// Sets t->gkv from the groups read: a KV-cache group has no members and a name ending in ".self_attn.kv_cache".
void table_mark_kv(ScoreTable* t);
// Whether group g is a KV-cache group (gkv may be NULL: none); whether format f may be group g's choice
// (KV-cache formats for KV-cache groups only).
static inline int table_kv(const ScoreTable* t, int g) { return t->gkv && t->gkv[g]; }
static inline int table_fits(const ScoreTable* t, int f, int g) { return t->fmts[f].kv == table_kv(t, g); }

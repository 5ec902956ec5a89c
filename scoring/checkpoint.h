// Resumable scoring: the running sums of a job saved after every batch, tied to the identity of the
// run (model, method, formats, data, engine and batching, which fix the summation order), so a
// killed run started again with the same arguments ends with bit-identical scores.
#pragma once
#include <jansson.h>

#include "job.h"

// The per-window scores (README §8) travel in the checkpoint up to this many numbers (about 50 MB of JSON,
// rewritten after every window); beyond it a resumed run keeps none.
#define CHECKPOINT_MAX_WINDOW_NUMBERS (2UL << 20)

json_t* checkpoint_identity(const ScoreJob* j);
void checkpoint_save(const char* path, json_t* id, const ScoreJob* j);
// Fills the job's sums (and its per-window scores where the checkpoint holds them; else drops them) and returns
// the windows already done (0 when there is no checkpoint file); exits 2 naming the file and field when it is
// malformed or belongs to another run.
int checkpoint_load(const char* path, json_t* id, ScoreJob* j);

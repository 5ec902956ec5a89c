// check-checkpoint's validation (README "Serving engines"), apart from the command line for the fuzz target.
#pragma once
#include <jansson.h>

#include "target.h"

// Validates the compressed-tensors checkpoint folder dir (config.json's quantization_config and the
// safetensors' linear modules) against t: every problem is appended to list as {"module", "rule", "message"}
// and, unless quiet, printed as a FINDING line. Returns the number of linear modules checked; bad input exits 2
// (fail_input).
int check_checkpoint_dir(const char* dir, const Target* t, json_t* list, int quiet);

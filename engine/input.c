#include "input.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>

static json_t* parse(char* text, size_t len, const char* path, const char* what, size_t jflags) {
    json_error_t err;
    json_t* root = json_loadb(text, len, jflags, &err);
    free(text);
    if (!root) fail_input("%s: %s is not valid JSON (line %d: %s)", path, what, err.line, err.text);
    return root;
}

json_t* input_json(const char* path, const char* what, size_t jflags) {
    size_t len = 0;
    char* text = read_input(path, what, MAX_JSON_BYTES, &len);
    return parse(text, len, path, what, jflags);
}

json_t* input_json_opt(const char* path, const char* what, size_t jflags) {
    size_t len = 0;
    char* text = read_input_opt(path, what, MAX_JSON_BYTES, &len);
    if (!text) return NULL;
    return parse(text, len, path, what, jflags);
}

// autoq tokenize: text to ids with a Hugging Face tokenizer.json, and back.
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/args.h"
#include "../engine/util.h"
#include "tokenizer.h"

int cmd_tokenize(Args* a) {
    const char* text_path = args_str(a, "--text"); // both required by the table (autoq.c)
    int json = args_flag(a, "--json");
    int decode = args_flag(a, "--decode");
    const char* src = args_pos(a, 0);
    args_done(a);
    size_t len;
    char* text = read_file(text_path, &len);
    if (!text) fail_input("%s: cannot read: %s", text_path, strerror(errno));
    Tokenizer* t = tok_load(src);
    IdVec ids = {0};
    double t0 = time_now();
    tok_encode(t, text, len, &ids, text_path, 0);
    double el = time_now() - t0;
    size_t dl = 0;
    char* back = decode ? tok_decode(t, ids.ids, ids.n, &dl) : NULL;
    if (json) {
        json_t* arr = json_array();
        for (size_t i = 0; i < ids.n; i++) json_array_append_new(arr, json_integer(ids.ids[i]));
        json_t* j =
            json_pack("{s:o,s:i,s:i}", "ids", arr, "count", (json_int_t)ids.n, "bytes", (json_int_t)len);
        if (back) {
            json_object_set_new(j, "decoded", json_stringn(back, dl));
            json_object_set_new(j, "roundtrip", json_boolean(dl == len && memcmp(back, text, len) == 0));
        }
        json_dumpf(j, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(j);
    } else {
        for (size_t i = 0; i < ids.n; i++) printf("%d%c", ids.ids[i], i + 1 < ids.n ? ' ' : '\n');
        if (back) {
            fwrite(back, 1, dl, stdout);
            if (dl == 0 || back[dl - 1] != '\n') fputc('\n', stdout);
        }
    }
    info_msg(
        "tokenize: %zu bytes -> %zu tokens in %.3fs (%.1f MB/s)%s", len, ids.n, el,
        len / 1e6 / (el > 0 ? el : 1e-9),
        back ? (dl == len && memcmp(back, text, len) == 0 ? "; decode round-trips" : "; decode differs (NFC?)")
             : "");
    free(back);
    idvec_free(&ids);
    tok_free(t);
    free(text);
    return 0;
}

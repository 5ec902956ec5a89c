// Path identity for the command line's aliasing check (engine/paths.h).
#include "paths.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void path_id(PathId* id, const char* path) {
    memset(id, 0, sizeof(*id));
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(buf)) return;
    memcpy(buf, path, n + 1);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0; // DIR/ names DIR
    struct stat st;
    if (stat(buf, &st) == 0) {
        id->ok = 1, id->dev = st.st_dev, id->ino = st.st_ino;
        return;
    }
    // Not there yet: the folder it would be created in, and its name there.
    char* slash = strrchr(buf, '/');
    const char* name = slash ? slash + 1 : buf;
    if (strlen(name) >= sizeof(id->name) || !strcmp(name, ".") || !strcmp(name, "..")) return;
    memcpy(id->name, name, strlen(name) + 1); // fits: checked above
    const char* dir = ".";
    if (slash == buf)
        dir = "/";
    else if (slash)
        *slash = 0, dir = buf;
    if (stat(dir, &st) != 0) return;
    id->ok = 1, id->dev = st.st_dev, id->ino = st.st_ino;
}

int path_id_same(const PathId* a, const PathId* b) {
    return a->ok && b->ok && a->dev == b->dev && a->ino == b->ino && strcmp(a->name, b->name) == 0;
}

int path_within(const char* path, const char* dir) {
    struct stat d, st;
    if (stat(dir, &d) != 0 || !S_ISDIR(d.st_mode)) return 0;
    char* real = realpath(path, NULL);
    if (!real) return 0;
    int found = 0;
    // each ancestor of the resolved path, itself first, up to /
    for (char* end = real + strlen(real);;) {
        if (stat(real, &st) == 0 && st.st_dev == d.st_dev && st.st_ino == d.st_ino) {
            found = 1;
            break;
        }
        char* slash = strrchr(real, '/');
        if (!slash || end == real + 1) break;
        end = slash == real ? slash + 1 : slash;
        *end = 0;
    }
    free(real);
    return found;
}

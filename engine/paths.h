// Which paths name the same file: outputs may not overwrite an input or each other (README §1).
#pragma once

#include <sys/types.h>

// A file's identity: device + inode after following links, or, for a path that does not exist
// yet, its folder's device + inode and its last name (what a write would create there).
typedef struct {
    int ok; // 0: neither the path nor its folder exists (nothing it could alias)
    dev_t dev;
    ino_t ino;
    char name[256]; // "" when the path exists
} PathId;

void path_id(PathId* id, const char* path);
int path_id_same(const PathId* a, const PathId* b);
// Whether the existing file or folder `path` is `dir` or lies anywhere below it (links resolved).
int path_within(const char* path, const char* dir);

"""Compares two JSON files as data, for outputs checked against committed fixtures on any CPU.

    same_json.py A B [--rtol R] [--drop KEY=VALUE]...

The same keys, list lengths, strings, booleans and integers; numbers with a fraction within a relative
tolerance R (default 1e-3): scores are sums of float products whose last digits depend on the CPU's
BLAS kernels (OpenBLAS picks Haswell, SkylakeX, Sandybridge, ... code by CPU model). --drop KEY=VALUE:
A's KEY (a top-level key, or a dotted path to a nested one) must hold VALUE and is left out (a key added
after the fixture was made).
Prints the path of the first difference and exits 1, or exits 0. Plain python3: no numpy.
"""
import json
import sys


def diff(a, b, rtol, path="$"):
    """The first difference of a from b as 'path: why', or None."""
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or a is None:
        return None if a == b and type(a) is type(b) else f"{path}: {a!r} != {b!r}"
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(b, bool):
        if isinstance(a, int) and isinstance(b, int):
            return None if a == b else f"{path}: {a} != {b}"
        if abs(a - b) <= rtol * max(abs(a), abs(b)):
            return None
        return f"{path}: {a!r} vs {b!r}, beyond the relative tolerance {rtol:g}"
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return f"{path}: keys {sorted(set(a) ^ set(b)) or 'in another order'}"
        for k in a:
            d = diff(a[k], b[k], rtol, f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = diff(x, y, rtol, f"{path}[{i}]")
            if d:
                return d
        return None
    return f"{path}: {type(a).__name__} != {type(b).__name__}"


def main(argv):
    files, rtol, drop = [], 1e-3, []
    it = iter(argv)
    for arg in it:
        if arg == "--rtol":
            rtol = float(next(it))
        elif arg == "--drop":
            drop.append(next(it).split("=", 1))
        else:
            files.append(arg)
    if len(files) != 2:
        sys.exit(__doc__)
    a, b = (json.load(open(f)) for f in files)
    for key, value in drop:
        *path, last = key.split(".")
        obj = a
        for k in path:
            obj = obj.get(k, {}) if isinstance(obj, dict) else {}
        if not isinstance(obj, dict) or obj.get(last) != value:
            print(f"{files[0]}: '{key}' is {obj.get(last) if isinstance(obj, dict) else None!r}, expected {value!r}")
            return 1
        del obj[last]
    d = diff(a, b, rtol)
    if d:
        print(f"{files[0]} vs {files[1]}: {d}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Agreement between autoq's scores and ModelOpt's auto_quantize scores (tests/fixtures/modelopt_scores.json).

usage: compare_modelopt.py AUTOQ_KL.json AUTOQ_GRADIENT.json
Prints per-group ratio autoq/ModelOpt and the Spearman rank correlation for each method. Stdlib only.
"""
import json, sys


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    for k, i in enumerate(order):
        r[i] = float(k)
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb)


def modelopt_groups(stats):
    out = {}
    for name, st in stats.items():
        mods = st["module_names"]
        if not any(".layers." in m for m in mods):
            continue
        fmt = [i for i, f in enumerate(st["formats"]) if not f.startswith("NONE")][0]
        out[tuple(sorted(mods))] = st["scores"][fmt]
    return out


def main():
    mo = json.load(open("tests/fixtures/modelopt_scores.json"))
    for path, method in [(sys.argv[1], "kl_div"), (sys.argv[2], "gradient")]:
        aq = json.load(open(path))
        ref = modelopt_groups(mo[method]["4.8"]["candidate_stats"])
        a, b = [], []
        print(f"{method}: group, autoq, ModelOpt, ratio")
        for g in aq["groups"]:
            key = tuple(sorted(g["members"]))
            if key not in ref or g["score"] is None:
                continue
            a.append(g["score"])
            b.append(ref[key])
            print(f"  {g['name']:40s} {g['score']:12.6g} {ref[key]:12.6g} {g['score'] / ref[key]:8.4f}")
        ratios = [x / y for x, y in zip(a, b)]
        print(f"{method}: {len(a)} groups, ratio min {min(ratios):.4f} max {max(ratios):.4f}, "
              f"Spearman {spearman(a, b):.4f}")


if __name__ == "__main__":
    main()

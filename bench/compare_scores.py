"""Compares the per-group scores and timings of gpu_bench.sh's runs of one shape."""
import json, os, sys

out, shape = sys.argv[1], sys.argv[2]


def load(name):
    p = os.path.join(out, f"{shape}_{name}.json")
    return json.load(open(p)) if os.path.exists(p) else None


def by_members(j):
    return {tuple(sorted(g["members"])): g["score"] for g in j["groups"]} if j else {}


a, a1, b, c = load("autoq_bf16x2"), load("autoq_bf16"), load("torch"), load("modelopt")
if a and b:
    bs = {g["name"]: g["score"] for g in b["groups"]}
    for label, x in [("bf16x2", a), ("bf16", a1)]:
        if not x:
            continue
        r = [g["score"] / bs[g["name"]] for g in x["groups"] if g["name"] in bs and bs[g["name"]] > 0]
        print(f"   autoq {label} / pytorch per group: min {min(r):.4f} max {max(r):.4f} over {len(r)} groups")
if a and c:
    cs = by_members(c)
    r = [g["score"] / cs[tuple(sorted(g["members"]))] for g in a["groups"] if tuple(sorted(g["members"])) in cs]
    if r:
        print(f"   autoq bf16x2 / modelopt per group: min {min(r):.4f} max {max(r):.4f} over {len(r)} groups")

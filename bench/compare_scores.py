"""Compares the per-group scores of gpu_bench.sh's runs of one shape: autoq (each GEMM input
precisions) against plain PyTorch (b) and ModelOpt (c). Prints, per pair, the ratio range over all
groups, how many groups agree within 1%, the ratio range over the groups whose reference score is
at least 1% of the largest (above a plain-bf16 model's KL noise floor), and Spearman's rho."""
import json, os, sys

from rank_stats import spearman

out, shape = sys.argv[1], sys.argv[2]


def load(name):
    p = os.path.join(out, f"{shape}_{name}.json")
    return json.load(open(p)) if os.path.exists(p) else None


def key(g, by):  # by "members" (ModelOpt's module lists) or by group "name" (PyTorch)
    return tuple(sorted(g["members"])) if by == "members" else g["name"]


def compare(label, x, ref, ref_label):
    by = "members" if "members" in ref["groups"][0] else "name"
    rs = {key(g, by): g["score"] for g in ref["groups"]}
    pairs = [(g["score"], rs[key(g, by)]) for g in x["groups"] if rs.get(key(g, by), 0) > 0]
    if not pairs:
        return
    r = [a / b for a, b in pairs]
    top = max(b for _, b in pairs)
    big = [a / b for a, b in pairs if b >= 0.01 * top]
    within = sum(abs(v - 1) <= 0.01 for v in r)
    rho = spearman([a for a, _ in pairs], [b for _, b in pairs])
    print(f"   autoq {label} / {ref_label}: {min(r):.4f}..{max(r):.4f} over {len(r)} groups, {within} within 1%; "
          f"{min(big):.4f}..{max(big):.4f} over the {len(big)} groups >= 1% of the largest; Spearman {rho:.4f}")


runs = {n: load(n) for n in ["autoq_fp16", "autoq_bf16x2", "autoq_bf16", "torch", "modelopt"]}
for label in ["fp16", "bf16x2", "bf16"]:
    x = runs[f"autoq_{label}"]
    if not x:
        continue
    for ref_label, ref in [("pytorch", runs["torch"]), ("modelopt", runs["modelopt"])]:
        if ref:
            compare(label, x, ref, ref_label)

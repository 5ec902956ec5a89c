"""The table and accuracy summary of bench/moe_bench.sh, from the JSON and logs in its OUTDIR:
speed of autoq against plain PyTorch (bench/torch_moe_scores.py) on the full shape, and autoq's GPU
scores against float32 PyTorch on the 4-layer model (every group whose reference score is at least
1% of the largest must agree within 1%). Standard library only.

usage: moe_report.py OUTDIR
"""
import json, os, re, statistics, sys

from rank_stats import spearman

out = sys.argv[1]


def text(name):
    p = os.path.join(out, name)
    return open(p, errors="replace").read() if os.path.exists(p) else ""


def load(name):
    p = os.path.join(out, name)
    try:
        return json.load(open(p))
    except (OSError, ValueError):
        return None


def autoq_run(name):
    """Windows, scoring seconds, tokens/s, peak GPU GiB and wall seconds (with the load) of one
    autoq score run, from its stderr; None when it did not finish."""
    log = text(name + ".log")
    m = re.search(r"score: \w+, \d+ groups \(\d+ enabled\) x \d+ format\(s\), (\d+) x (\d+) tokens in ([\d.]+)s "
                  r"\((\d+) tokens/s\)", log)
    if not m or not load(name + ".json"):
        return None
    g = re.search(r"peak GPU memory ([\d.]+) GiB", log)
    wall = text(name + ".wall").strip()
    return {"windows": int(m[1]), "seconds": float(m[3]), "tps": float(m[4]), "peak": float(g[1]) if g else None,
            "wall": float(wall) if wall else None}


def fmt(x, spec, none="-"):
    return none if x is None else format(x, spec)


rows = []  # method, tool, windows, seconds, tokens/s, peak GiB, speed-up


def speed(method, label):
    a = autoq_run(f"{method}_autoq")
    t = load(f"{method}_torch.json")
    ref_tps = None
    if t:
        ref_tps = t["tokens_per_s"]
        if method == "kl" and "extrapolated" in t:
            x = t["extrapolated"]
            ref_tps = x["tokens_per_s"]
    up = f"{a['tps'] / ref_tps:.2f}x" if a and ref_tps else "-"
    if a:
        rows.append([method, f"autoq ({label})", a["windows"], f"{a['seconds']:.1f}", f"{a['tps']:.0f}",
                     fmt(a["peak"], ".1f"), up])
    else:
        rows.append([method, f"autoq ({label})", "-", "did not run or failed", "", "", ""])
    if t:
        if method == "kl":
            how = "prefix reuse" if t.get("prefix_reuse") else "full forward per group"
            rows.append([method, f"PyTorch bf16 ({how}), {t['groups_scored']} of {t['groups_total']} groups, batch {t['batch_size']}",
                         t["num_samples"], f"{t['seconds']:.1f}", f"{t['tokens_per_s']:.0f}", f"{t['peak_gib']:.1f}",
                         "(measured)"])
            x = t["extrapolated"]
            rows.append([method, f"PyTorch bf16, all {x['groups']} groups (extrapolated)", x["windows"],
                         f"{x['seconds']:.1f}", f"{x['tokens_per_s']:.0f}", f"{t['peak_gib']:.1f}", "1.00x"])
        else:
            rows.append([method, f"PyTorch bf16, batch {t['batch_size']}", t["num_samples"], f"{t['seconds']:.1f}",
                         f"{t['tokens_per_s']:.0f}", f"{t['peak_gib']:.1f}", "1.00x"])
    else:
        rows.append([method, "PyTorch bf16", "-", "did not run or failed", "", "", ""])


def agree(x, ref):
    """(line, passed): ratios x / ref per group, over all groups and over those >= 1% of the largest."""
    rs = {g["name"]: g["score"] for g in ref["groups"]}
    pairs = [(g["score"], rs[g["name"]]) for g in x["groups"] if rs.get(g["name"], 0) > 0]
    if len(pairs) != len(rs):
        return f"groups differ: {len(pairs)} matched of {len(rs)}", False
    r = [a / b for a, b in pairs]
    top = max(b for _, b in pairs)
    big = [a / b for a, b in pairs if b >= 0.01 * top]
    ok = all(abs(v - 1) <= 0.01 for v in big)
    worst = max(big, key=lambda v: abs(v - 1))
    return (f"{min(r):.4f}..{max(r):.4f} over {len(r)} groups, {sum(abs(v - 1) <= 0.01 for v in r)} within 1%; "
            f"{sum(abs(v - 1) <= 0.01 for v in big)} of the {len(big)} groups >= 1% of the largest within 1% "
            f"(worst {worst:.4f}); Spearman {spearman([a for a, _ in pairs], [b for _, b in pairs]):.4f}"), ok


def coverage(name):
    mins, meds, maxs = [], [], []
    for m in re.finditer(r"tokens per expert min (\d+), median ([\d.]+), max (\d+)", text(name + ".log")):
        mins.append(int(m[1]))
        meds.append(float(m[2]))
        maxs.append(int(m[3]))
    if not mins:
        return None
    return (f"expert coverage over {len(mins)} sparse layers: fewest tokens per expert {min(mins)}, "
            f"median of the layers' medians {statistics.median(meds):g}, most {max(maxs)}")


gen = re.search(r"gen: wrote \S+ \(([^)]*)\): (.*)", text("gen.log"))
if gen:
    print(f"checkpoint: {gen[1]}: {gen[2]}")
speed("gradient", "bf16")
speed("kl", "default: fp16 GEMMs")
hdr = ["method", "tool", "windows", "seconds", "tokens/s", "peak GPU GiB", "speed-up"]
w = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
for r in [hdr] + rows:
    print("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)).rstrip())
print("(seconds: scoring only, model loading excluded; peak GPU memory: autoq's own report, PyTorch's "
      "torch.cuda.max_memory_allocated; kl speed-up against the extrapolated PyTorch time)")
for name in ("gradient_autoq", "kl_autoq"):
    a = autoq_run(name)
    if a and a["wall"]:
        print(f"autoq {name.split('_')[0]}: wall {a['wall']:.1f} s including the checkpoint load")
t = load("gradient_torch.json") or load("kl_torch.json")
if t:
    print(f"PyTorch: load {t['load_seconds']:.1f} s; {t['settings']}")
c = coverage("gradient_autoq")
if c:
    print(c)
x, ref = load("gradient_autoq.json"), load("gradient_torch.json")
if x and ref and x.get("num_samples") == ref.get("num_samples"):
    print(f"gradient scores, autoq bf16 / PyTorch bf16 (same {ref['num_samples']} windows): {agree(x, ref)[0]}")

print("accuracy: 4-layer model of the same shape, autoq on the GPU against float32 PyTorch (TF32 off)")
failed = 0
for method in ("gradient", "kl"):
    ref = load(f"acc_{method}_torch.json")
    for g in ("bf16", "bf16x2"):
        x = load(f"acc_{method}_autoq_{g}.json")
        if not x or not ref:
            print(f"  {method} {g}: missing ({'autoq' if not x else 'PyTorch'} did not finish)")
            failed += 1
            continue
        line, ok = agree(x, ref)
        failed += not ok
        print(f"  {method} {g:6s} {'PASS' if ok else 'FAIL'}: {line}")
print(f"accuracy: {'every check passed' if not failed else f'{failed} check(s) failed or missing'}")

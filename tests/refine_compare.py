"""search --refine on the GPU against the CPU (README §7): the recipes both runs measured (the plain one and
every neighbour of round 1 at least: their ranking does not depend on a measurement) must have the same
measured KL within TOL relative, and the refined recipes the same choices, or else measured KLs within TOL.

usage: refine_compare.py CPU.json GPU.json TOL LABEL"""
import json
import sys

c, g = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
tol, label = float(sys.argv[3]), sys.argv[4]
rc, rg = c["refine"], g["refine"]
assert rc["device"] == "cpu" and rg["device"] == "cuda", (rc["device"], rg["device"])
key = lambda t: json.dumps(t["changes"], sort_keys=True)
cpu = {key(t): t["measured_kl"] for t in rc["tries"]}
worst, n = 0.0, 0
for t in rg["tries"]:
    k = key(t)
    if k in cpu:
        rel = abs(t["measured_kl"] - cpu[k]) / max(abs(cpu[k]), 1e-30)
        worst, n = max(worst, rel), n + 1
assert n >= 1 and key(rg["tries"][0]) in cpu
same = key(rc["tries"][rc["best"]]) == key(rg["tries"][rg["best"]]) and \
    [x["choice"] for x in c["groups"]] == [x["choice"] for x in g["groups"]]
pc, qc, pg, qg = rc["plain_measured_kl"], rc["refined_measured_kl"], rg["plain_measured_kl"], rg["refined_measured_kl"]
tc, tg = rc["seconds"] / len(rc["tries"]), rg["seconds"] / len(rg["tries"])
print(f"  {label}: {n} recipes measured by both, worst relative KL difference {worst:.2e}; plain {pc:.6g} (CPU) "
      f"{pg:.6g} (GPU), refined {qc:.6g} (CPU) {qg:.6g} (GPU), gain {100 * (pc - qc) / pc:.2f}% / "
      f"{100 * (pg - qg) / pg:.2f}%, same refined recipe: {same}; per recipe {tc:.3f} s CPU ({len(rc['tries'])}), "
      f"{tg:.3f} s GPU ({len(rg['tries'])}), {tc / tg:.1f}x")
assert worst <= tol, f"worst relative difference {worst:.3g} > {tol}"
assert same or abs(qg - qc) <= tol * qc, "different refined recipes, measured KLs apart"

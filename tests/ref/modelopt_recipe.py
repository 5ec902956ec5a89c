"""Turns the recipe ModelOpt's own search picked (tests/fixtures/modelopt_scores.json) into an autoq
recipe JSON, so `autoq eval --recipe` measures it exactly as it measures autoq's. Stdlib only.

usage: modelopt_recipe.py METHOD BUDGET OUT.json   (METHOD gradient or kl_div; BUDGET 4.5, 4.8 or 6.0)
Prints the recipe's effective bits over the candidate linears.
"""
import json, sys

method, budget, out = sys.argv[1], sys.argv[2], sys.argv[3]
mo = json.load(open("tests/fixtures/modelopt_scores.json"))[method][budget]
stats, best = mo["candidate_stats"], mo["best"]["recipe"]
groups, cost, params = [], 0, 0
for name, st in stats.items():
    mods = st["module_names"]
    if not any(".layers." in m for m in mods):
        continue  # lm_head: never a candidate in autoq
    chosen = best[name]
    quant = not chosen.startswith("NONE")
    n = st["uncompressed_cost"]
    params += n
    cost += n * (4 if quant else 16)
    groups.append({"name": name.replace(".quant_recipe", ""), "members": mods, "choice": "w4a8" if quant else "bf16"})
json.dump({"source": f"ModelOpt auto_quantize, method {method}, budget {budget}", "numerics": "modelopt",
           "formats": [{"name": "w4a8", "path": "configs/formats/w4a8.json"}], "groups": groups}, open(out, "w"), indent=1)
print(f"{cost / params:.4f}")

"""Checks that autoq's exports select exactly the intended modules (stdlib only).

usage: check_exports.py RECIPE.json RECIPE.yaml QUANT_CFG.json
Module universe: every linear the recipe names, lm_head, and a Qwen3-VL vision tower name list.
- llm-compressor: a module is ignored when an `ignore` entry matches it (`re:` entries with re.match,
  plain entries by exact name); ignored must equal {bf16 linears, lm_head, vision tower}.
- ModelOpt: quant_cfg patterns are applied in order with fnmatch on '<module>.weight_quantizer' (a
  later match overrides an earlier one); enabled must equal {linears the recipe quantizes}.
"""
import fnmatch, json, re, sys

recipe = json.load(open(sys.argv[1]))
yaml_lines = open(sys.argv[2]).read().splitlines()
qcfg = json.load(open(sys.argv[3]))["quant_cfg"]

linears, quantized = [], set()
for g in recipe["groups"]:
    for m in g["members"]:
        linears.append(m)
        if g["choice"] != "bf16":
            quantized.add(m)
visual = ["model.visual.patch_embed.proj", "model.visual.blocks.0.attn.qkv", "model.visual.blocks.0.attn.proj",
          "model.visual.blocks.0.mlp.linear_fc1", "model.visual.merger.linear_fc2",
          "model.visual.deepstack_merger_list.0.linear_fc1"]
embed = [linears[0].split(".layers.")[0] + ".embed_tokens"]  # ModelOpt gives embeddings a weight quantizer too
universe = linears + ["lm_head"] + visual + embed

# The ignore list: lines "- item" between "ignore:" and "config_groups:".
ignore, inside = [], False
for line in yaml_lines:
    s = line.strip()
    if s == "ignore:":
        inside = True
    elif s.endswith(":") and inside:
        inside = False
    elif inside and s.startswith("- "):
        ignore.append(s[2:].strip().strip("'"))


def ignored(name):
    for p in ignore:
        if p.startswith("re:"):
            if re.match(p[3:], name):
                return True
        elif p == name:
            return True
    return False


want_ignored = {m for m in linears if m not in quantized} | {"lm_head"} | set(visual)
universe_lc = linears + ["lm_head"] + visual  # llm-compressor targets Linear only
got_ignored = {m for m in universe_lc if ignored(m)}
if got_ignored != want_ignored:
    print("llm-compressor ignore mismatch:", sorted(got_ignored ^ want_ignored))
    sys.exit(1)


def enabled(name):
    state = False
    for pat, cfg in qcfg.items():
        if fnmatch.fnmatchcase(name + ".weight_quantizer", pat):
            state = cfg.get("enable", True)
    return state


got_enabled = {m for m in universe if enabled(m)}
if got_enabled != quantized:
    print("ModelOpt enable mismatch:", sorted(got_enabled ^ quantized))
    sys.exit(1)
print(f"exports ok: {len(quantized)} quantized, {len(want_ignored)} ignored of {len(universe)} modules")

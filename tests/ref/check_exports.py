"""Checks that autoq's exports select exactly the intended modules with the intended formats (stdlib only).

usage: check_exports.py RECIPE.json RECIPE_YAML QUANT_CFG.json
RECIPE_YAML is the llm-compressor recipe as JSON (tests/test_outputs --yaml-json), or the YAML itself
where PyYAML is installed. tests/ref/validate_exports.py applies the same files with the real tools; this
models their matching rules so that CI, which has neither, checks every export it writes:
- llm-compressor (compressed-tensors): a Linear is quantized by the first config group one of whose
  targets matches it ('Linear' by class; 're:' entries with re.match; others by exact name) unless an
  `ignore` entry matches it. The Linears: every linear the recipe names (experts as llm-compressor
  unfuses them, mlp.experts.N.{gate,up,down}_proj), lm_head, a Qwen3-VL vision tower name list, each
  experts layer's router mlp.gate (a Linear before transformers 5), the hybrids' shared-expert gates
  mlp.shared_expert_gate and Gated DeltaNet linear_attn.conv1d (an nn.Conv1d: not 'Linear').
- ModelOpt: quant_cfg entries apply in order, with fnmatch on the quantizer's name or on the name with a
  per-expert index dropped (gate_up_proj_weight_quantizers.3 -> gate_up_proj_weight_quantizer); an entry
  holding only "enable" toggles it, any other replaces the quantizer's settings. A new quantizer is on,
  8 bits. The quantizers: weight and input quantizers of every linear above (experts both per expert and
  as transformers 5's fused experts: gate_up_proj / down_proj weight quantizers per expert, one input
  quantizer each), the embedding's, and each attention's q/k/v/p bmm quantizers.
A quantizer is compared as a description of its numerics, "<int|float><bits>/<granularity>": channel, token,
tensor (ModelOpt's default), group<N> (fp32 or E8M0 scales) or tensor_group<N> (NVFP4's E4M3 scales under a
global scale), read alike from a ModelOpt quantizer config and from compressed-tensors QuantizationArgs.
"""
import fnmatch, json, re, sys

from quant_desc import mo_desc  # beside this file

recipe = json.load(open(sys.argv[1]))
text = open(sys.argv[2]).read()
if text.lstrip().startswith("{"):
    lc = json.loads(text)
else:
    import yaml

    lc = yaml.safe_load(text)
qcfg = json.load(open(sys.argv[3]))["quant_cfg"]
gptq = lc["quant_stage"]["quant_modifiers"]["GPTQModifier"]


def ct_desc(args):
    """compressed-tensors QuantizationArgs (as the recipe spells them) as a description."""
    st = args["strategy"]
    return f"{args['type']}{int(args['num_bits'])}/{st}" + (str(int(args["group_size"])) if "group" in st else "")


def fmt_desc(f):
    q = f.get("definition", {}).get("quant_cfg", {})
    a = q.get("*input_quantizer", {"enable": False})
    return mo_desc(q["*weight_quantizer"]), mo_desc(a) if a.get("enable", True) else None


fbits = {f["name"]: fmt_desc(f) for f in recipe["formats"]}
linears, want = [], {}  # want: linear -> (weight description, input description)
experts = {}  # experts group -> (quantized descriptions or None, number of experts)
for g in recipe["groups"]:
    linears += g["members"]
    bits = None if g["choice"] == "bf16" else fbits[g["choice"]]
    for m in g["members"]:
        if bits:
            want[m] = bits
    if g["name"].endswith(".mlp.experts"):
        idx = {int(m[len(g["name"]) + 1:].split(".")[0]) for m in g["members"]}
        assert idx == set(range(len(idx))) and len(g["members"]) == 3 * len(idx), g["name"]
        experts[g["name"]] = (bits, len(idx))
prefix = linears[0].split(".layers.")[0]
visual = ["model.visual.patch_embed.proj", "model.visual.blocks.0.attn.qkv", "model.visual.blocks.0.attn.proj",
          "model.visual.blocks.0.mlp.linear_fc1", "model.visual.merger.linear_fc2",
          "model.visual.deepstack_merger_list.0.linear_fc1"]
routers = [g[: -len(".experts")] + ".gate" for g in experts]
# the hybrids' (issue 26): each sparse layer's shared-expert gate (an nn.Linear [1, D]), and each Gated
# DeltaNet's depthwise conv1d (an nn.Conv1d: ModelOpt wraps it, llm-compressor's 'Linear' does not match it)
layers = sorted({m.rsplit(".mlp.", 1)[0] for m in linears if ".mlp.shared_expert." in m})
shared_gates = [l + ".mlp.shared_expert_gate" for l in layers]
convs = sorted({m.split(".linear_attn.")[0] + ".linear_attn.conv1d" for m in linears if ".linear_attn." in m})
universe = linears + ["lm_head"] + visual + routers + shared_gates + convs


# ---- llm-compressor ----
def lc_match(name, target):
    if target == "Linear":
        return name not in convs  # every other module of the universe is a Linear
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    return target == name


got_lc = {}
for name in universe:
    if any(lc_match(name, p) for p in gptq.get("ignore", [])):
        continue
    for cg in gptq["config_groups"].values():
        if any(lc_match(name, t) for t in cg["targets"]):
            a = cg.get("input_activations")
            got_lc[name] = (ct_desc(cg["weights"]), ct_desc(a) if a else None)
            break
if got_lc != want:
    print("llm-compressor mismatch (module, got, want):",
          sorted((n, got_lc.get(n), want.get(n)) for n in set(got_lc) | set(want) if got_lc.get(n) != want.get(n)))
    sys.exit(1)


# ---- ModelOpt ----
def normalized(name):
    return re.sub(r"(weight_quantizers?|input_quantizers?)\.\d+(?=$|\.)", lambda m: m[1].removesuffix("s"), name)


def quantizer(name):
    """(enabled, description) after every matching quant_cfg entry."""
    on, bits = True, "int8/tensor"
    for pat, cfg in qcfg.items():
        if fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(normalized(name), pat):
            if set(cfg) == {"enable"}:
                on = cfg["enable"]
            else:
                on, bits = cfg.get("enable", True), mo_desc(cfg)
    return on, bits


quantizers = {}  # quantizer name -> (weight or input, what it should be: bits or None)
for m in universe + [prefix + ".embed_tokens"]:
    quantizers[m + ".weight_quantizer"] = want[m][0] if m in want else None
    quantizers[m + ".input_quantizer"] = want[m][1] if m in want else None
for layer in sorted({m.split(".self_attn.")[0] for m in linears if ".self_attn." in m}):
    for b in "qkvp":
        quantizers[f"{layer}.self_attn.{b}_bmm_quantizer"] = None
for g, (bits, n) in experts.items():  # transformers 5's fused experts, as ModelOpt wraps them
    for p in ("gate_up_proj", "down_proj"):
        quantizers[f"{g}.{p}_input_quantizer"] = bits[1] if bits else None
        for e in range(n):
            quantizers[f"{g}.{p}_weight_quantizers.{e}"] = bits[0] if bits else None
bad = []
for q, w in quantizers.items():
    on, bits = quantizer(q)
    if (bits if on else None) != w:
        bad.append((q, bits if on else None, w))
if bad:
    print("ModelOpt mismatch (quantizer, got, want):", sorted(bad))
    sys.exit(1)
print(f"exports ok: {len(want)} linears quantized ({sum(1 for b in experts.values() if b[0])} of {len(experts)} "
      f"experts groups), {len(universe) - len(want)} modules left alone, {len(quantizers)} ModelOpt quantizers checked")

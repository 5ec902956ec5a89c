"""Applies autoq's exports with the real tools, as their users do, and checks which modules they quantize.

Needs torch, torchvision, transformers 5.17, llmcompressor, compressed-tensors and nvidia-modelopt (CPU is enough):
    pip install torch torchvision transformers==5.17.0 llmcompressor compressed-tensors nvidia-modelopt
    python3 tests/ref/validate_exports.py --tiny ../shared/models/qwen3-tiny --out tests/fixtures/exports_validation.json
For tests/fixtures/exports/{tiny,vl,moe,vl_moe}_* (qwen3-tiny, Qwen3-VL, Qwen3-MoE and Qwen3-VL-MoE):
- llm-compressor: the model is loaded inside llmcompressor's load_quantizable_moe (the MoE loading path it
  asks for: transformers 5 keeps a layer's experts as fused 3-D parameters, which it unfuses into per-expert
  Linear modules mlp.experts.N.{gate,up,down}_proj) and oneshot runs the YAML recipe (GPTQ) on the fixture's
  token windows. We read which modules carry a quantization scheme (weight and input bits) and which
  parameters GPTQ changed: exactly the scheme-carrying linears' weights, never a router, lm_head or vision tower.
  save_pretrained(save_compressed=True) must then hold a weight_scale for exactly those linears.
- ModelOpt: mtq.quantize applies the quant_cfg JSON to the model as transformers loads it; ModelOpt wraps
  fused experts itself (_QuantFusedExperts: per-expert weight quantizers gate_up_proj_weight_quantizers.N
  and down_proj_weight_quantizers.N, one input quantizer per projection). Every enabled quantizer is mapped
  to the linears it quantizes (a gate_up quantizer to expert N's gate_proj and up_proj); one that maps to no
  linear (attention bmm, router, embedding) is reported as unexpected.
Both must give exactly the recipe's quantized linears, with the recipe's weight bits and 8-bit inputs.
The recipes of the new formats (tiny_formats, vl_formats, vl_w4a8fp8) are compared finer: each linear's weight
and input numerics as "<int|float><bits>/<granularity>" (channel, token, group<N>, tensor_group<N>), read from
llm-compressor's QuantizationArgs and from ModelOpt's TensorQuantizers (num_bits, block_sizes, axis); an MXFP4
weight quantizer needs no calibrated amax (its scales come from each block).
    python3 tests/ref/validate_exports.py --only tiny_formats,vl_formats,vl_w4a8fp8 --out new.json
writes only those kinds (their entries were merged into tests/fixtures/exports_validation.json).
"""
import argparse, hashlib, importlib.metadata, json, os, re

import numpy as np
import torch

from quant_desc import mo_desc  # beside this file

KINDS = [  # name, model folder (tiny: --tiny), token windows, transformers class
    ("tiny", None, "tests/fixtures/qwen3_tiny_ids.npy", "AutoModelForCausalLM"),
    ("vl", "tests/fixtures/qwen3-vl-tiny", "tests/fixtures/qwen3_vl_tiny_ids.npy", "Qwen3VLForConditionalGeneration"),
    ("moe", "tests/fixtures/qwen3-moe-tiny", "tests/fixtures/qwen3_moe_tiny_ids.npy", "AutoModelForCausalLM"),
    ("vl_moe", "tests/fixtures/qwen3-vl-moe-tiny", "tests/fixtures/qwen3_vl_moe_tiny_ids.npy",
     "Qwen3VLMoeForConditionalGeneration"),
    # the floating-point and block formats (configs/formats): mixed recipes, every format in one of them
    ("tiny_formats", None, "tests/fixtures/qwen3_tiny_ids.npy", "AutoModelForCausalLM"),
    ("vl_formats", "tests/fixtures/qwen3-vl-tiny", "tests/fixtures/qwen3_vl_tiny_ids.npy", "Qwen3VLForConditionalGeneration"),
    ("vl_w4a8fp8", "tests/fixtures/qwen3-vl-tiny", "tests/fixtures/qwen3_vl_tiny_ids.npy", "Qwen3VLForConditionalGeneration"),
]
# The first four were validated when formats were compared by bits alone; their records keep that form.
BITS_ONLY = ("tiny", "vl", "moe", "vl_moe")
EXPERT = re.compile(r"(.*\.mlp\.experts)\.\d+\.(gate|up|down)_proj$")


def versions():
    return {p: importlib.metadata.version(p) for p in
            ("torch", "torchvision", "transformers", "llmcompressor", "compressed-tensors", "nvidia-modelopt")}


def intended(path, bits_only):
    """Linear name -> (weight, input) for every linear the recipe quantizes: bits, or descriptions."""
    r = json.load(open(path))
    fm = {}
    for f in r["formats"]:
        q = f["definition"]["quant_cfg"]
        a = q.get("*input_quantizer", {"enable": False})
        a = a if a.get("enable", True) else None
        if bits_only:
            fm[f["name"]] = (f["bits"], a["num_bits"] if a else None)
        else:
            fm[f["name"]] = (mo_desc(q["*weight_quantizer"]), mo_desc(a) if a else None)
    return {m: fm[g["choice"]] for g in r["groups"] if g["choice"] != "bf16" for m in g["members"]}


def ct_desc(args):
    """compressed-tensors QuantizationArgs as the same description."""
    st, ty = getattr(args.strategy, "value", args.strategy), getattr(args.type, "value", args.type)
    return f"{ty}{args.num_bits}/{st}" + (str(args.group_size) if "group" in st else "")


def mo_quantizer_desc(q, weight):
    """A ModelOpt TensorQuantizer as the same description. After a forward, ModelOpt keeps a per-token
    input ({-1: None}) as the axis of the leading dimensions ((0, 1) for [batch, tokens, features])."""
    nb = q.num_bits
    kind = f"int{nb}" if isinstance(nb, int) else {(4, 3): "float8", (2, 1): "float4"}[tuple(nb)]
    bs = q.block_sizes
    if bs and bs.get(-1) is not None:
        gran = ("tensor_group" if tuple(bs.get("scale_bits") or ()) == (4, 3) else "group") + str(bs[-1])
    elif bs:
        gran = "token"
    elif weight:
        gran = "channel" if q.axis in (0, (0,)) else "tensor"
    else:
        ax = q.axis if isinstance(q.axis, tuple) else (q.axis,) if q.axis is not None else ()
        gran = "token" if ax and ax == tuple(range(len(ax))) else "tensor"
    return f"{kind}/{gran}"


def model_class(name):
    import transformers

    return getattr(transformers, name)


def diff(got, want):
    """[linear, bits the tool gave (None: unquantized), bits the recipe wants (None: bf16)] where they differ."""
    return sorted([n, list(got[n]) if n in got else None, list(want[n]) if n in want else None]
                  for n in set(got) | set(want) if got.get(n) != want.get(n))


def routers(model):
    return [n for n, m in model.named_modules() if n.endswith("mlp.gate")]


def forbidden(names):
    """Modules no export may quantize: lm_head, the vision tower, routers."""
    return sorted(n for n in names if n.split(".")[0] == "lm_head" or "visual" in n.split(".") or ".mlp.gate." in n + ".")


def check_llmcompressor(d, cls_name, recipe, windows, want, bits_only):
    from torch.utils.data import DataLoader
    from llmcompressor import oneshot
    from llmcompressor.modeling.moe.linearize import load_quantizable_moe

    cls = model_class(cls_name)
    with load_quantizable_moe(cls):
        model = cls.from_pretrained(d, dtype=torch.float32).eval()
    experts = [n for n, m in model.named_modules() if EXPERT.match(n) and isinstance(m, torch.nn.Linear)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batches = [{"input_ids": torch.tensor(w, dtype=torch.long)[None], "attention_mask": torch.ones(1, len(w), dtype=torch.long)}
               for w in windows]
    # The fixtures ship no tokenizer or processor: the batches are token ids already, so oneshot never
    # calls the processor it insists on when a dataset is given.
    oneshot(model=model, recipe=recipe, dataset=DataLoader(batches, batch_size=None), processor=object(),
            num_calibration_samples=len(batches))
    got, scaled = {}, 0
    for name, m in model.named_modules():
        s = getattr(m, "quantization_scheme", None)
        if s is not None and s.weights is not None:
            a = s.input_activations
            got[name] = ((s.weights.num_bits, a.num_bits if a else None) if bits_only else
                         (ct_desc(s.weights), ct_desc(a) if a else None))
            scaled += hasattr(m, "weight_scale")
    changed = {n.rsplit(".", 1)[0] for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])}
    rts = routers(model)
    saved = saved_weight_scales(model)
    res = {"modifiers": [type(m).__name__ for m in _modifiers(recipe)], "quantized": len(got), "match": got == want,
           "with_weight_scale": scaled, "gptq_changed_exactly_quantized": changed == set(got),
           "lm_head_visual_router_quantized": forbidden(set(got) | changed),
           "saved_weight_scales": len(saved), "saved_weight_scales_match": saved == set(got)}
    if experts:
        res["expert_linears"] = len(experts)
        res["expert_linears_quantized"] = sum(1 for n in got if EXPERT.match(n))
        res["routers"] = len(rts)
        res["routers_untouched"] = not any(r in got or r in changed for r in rts)
    if got != want:
        res["diff"] = diff(got, want)
    if changed != set(got):
        res["changed_diff"] = sorted(changed ^ set(got))
    return res


def saved_weight_scales(model):
    """Saves the quantized model as users do (compressed-tensors checkpoint) and returns the modules
    whose weight_scale it holds."""
    import glob, tempfile
    from safetensors import safe_open

    with tempfile.TemporaryDirectory() as out:
        model.save_pretrained(out, save_compressed=True)
        keys = []
        for f in glob.glob(out + "/*.safetensors"):
            with safe_open(f, "pt") as st:
                keys += list(st.keys())
    return {k.removesuffix(".weight_scale") for k in keys if k.endswith(".weight_scale")}


def _modifiers(recipe):
    from llmcompressor.recipe import Recipe

    return Recipe.create_instance(recipe).modifiers


def load_quant_cfg(path):
    """JSON object keys are strings; ModelOpt's block_sizes wants the integer axis -1. This is the
    one conversion a user makes when loading autoq's (or any) quant_cfg JSON for ModelOpt."""

    def fix(o):
        if isinstance(o, dict):
            return {(int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k): fix(v) for k, v in o.items()}
        return o

    cfg = json.load(open(path))
    for q in cfg["quant_cfg"].values():
        if isinstance(q, dict) and "block_sizes" in q:
            q["block_sizes"] = fix(q["block_sizes"])
    return cfg


FUSED_W = re.compile(r"(.*\.mlp\.experts)\.(gate_up|down)_proj_weight_quantizers\.(\d+)$")
FUSED_A = re.compile(r"(.*\.mlp\.experts)\.(gate_up|down)_proj_input_quantizer$")


def quantized_linears(model, bits_only=True):
    """Enabled ModelOpt quantizers -> {linear: [weight bits, input bits]}, the quantizers that map to
    no linear, and the enabled weight quantizers without a calibrated amax."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    num_experts = {n: m.num_experts for n, m in model.named_modules() if hasattr(m, "gate_up_proj_weight_quantizers")}
    w, a, unexpected, uncalibrated = {}, {}, [], []
    for name, q in model.named_modules():
        if not isinstance(q, TensorQuantizer) or not q.is_enabled:
            continue
        if m := FUSED_W.match(name):
            projs = ["gate_proj", "up_proj"] if m[2] == "gate_up" else ["down_proj"]
            targets, into = [f"{m[1]}.{m[3]}.{p}" for p in projs], w
        elif m := FUSED_A.match(name):
            projs = ["gate_proj", "up_proj"] if m[2] == "gate_up" else ["down_proj"]
            targets, into = [f"{m[1]}.{e}.{p}" for e in range(num_experts[m[1]]) for p in projs], a
        elif name.endswith(".weight_quantizer") and isinstance(model.get_submodule(name[:-17]), torch.nn.Linear):
            targets, into = [name[:-17]], w
        elif name.endswith(".input_quantizer") and isinstance(model.get_submodule(name[:-16]), torch.nn.Linear):
            targets, into = [name[:-16]], a
        else:
            unexpected.append(name)
            continue
        for t in targets:
            into[t] = q.num_bits if bits_only else mo_quantizer_desc(q, into is w)
        mx = q.block_sizes and tuple(q.block_sizes.get("scale_bits") or ()) == (8, 0)  # MX: scales from the block alone
        if into is w and getattr(q, "amax", None) is None and not mx:
            uncalibrated.append(name)
    return {n: (w.get(n), a.get(n)) for n in set(w) | set(a)}, unexpected, uncalibrated


def check_modelopt(d, cls_name, quant_cfg, windows, want, bits_only):
    import modelopt.torch.quantization as mtq

    model = model_class(cls_name).from_pretrained(d, dtype=torch.float32).eval()
    ids = [torch.tensor(w, dtype=torch.long)[None] for w in windows]

    def forward_loop(m):
        for x in ids:
            m(input_ids=x)

    mtq.quantize(model, load_quant_cfg(quant_cfg), forward_loop=forward_loop)
    got, unexpected, uncalibrated = quantized_linears(model, bits_only)
    res = {"quantized": len(got), "match": got == want and not unexpected and not uncalibrated,
           "lm_head_visual_router_quantized": forbidden(set(got) | set(unexpected))}
    fused = [n for n, m in model.named_modules() if hasattr(m, "gate_up_proj_weight_quantizers")]
    if fused:
        res["fused_experts_modules"] = len(fused)
        res["expert_linears_quantized"] = sum(1 for n in got if EXPERT.match(n))
        rts = routers(model)
        res["routers"] = len(rts)
        res["routers_untouched"] = not any(n.startswith(r + ".") for n in unexpected for r in rts)
        # transformers 5's routers (TopKRouter) are no nn.Linear: ModelOpt gives them no quantizer at all
        res["router_quantizers"] = sum(1 for n, _ in model.named_modules() for r in rts if n.startswith(r + ".") and n.endswith("quantizer"))
    if got != want:
        res["diff"] = diff(got, want)
    if unexpected:
        res["unexpected_enabled_quantizers"] = unexpected
    if uncalibrated:
        res["uncalibrated_weight_quantizers"] = uncalibrated
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", default="../shared/models/qwen3-tiny")
    ap.add_argument("--out", default="tests/fixtures/exports_validation.json")
    ap.add_argument("--exports", default="tests/fixtures/exports", help="folder of the exports to apply")
    ap.add_argument("--only", default="", help="comma-separated kinds (default: all)")
    args = ap.parse_args()
    res = {"versions": versions(), "device": "cpu", "applied_with": {
        "llmcompressor": "load_quantizable_moe(cls): cls.from_pretrained; oneshot(model, recipe=YAML, dataset=fixture windows)",
        "modelopt": "cls.from_pretrained; mtq.quantize(model, quant_cfg JSON, forward_loop over fixture windows)"}}
    ok = True
    for kind, d, ids_path, cls_name in KINDS:
        if args.only and kind not in args.only.split(","):
            continue
        d = d or args.tiny
        prefix = f"{args.exports}/{kind}"
        bits_only = kind in BITS_ONLY
        want = intended(prefix + "_recipe.json", bits_only)
        windows = np.load(ids_path).tolist()
        # What was applied, so that a test can tell when the committed exports no longer are these files.
        entry = {"model": d, "intended": len(want), "sha256": {
            os.path.basename(prefix + suffix): hashlib.sha256(open(prefix + suffix, "rb").read()).hexdigest()
            for suffix in ("_recipe.json", "_recipe.yaml", "_quant_cfg.json")}}
        experts = sum(1 for n in want if EXPERT.match(n))
        if experts:
            entry["intended_expert_linears"] = experts
        for tool, fn, path in (("llmcompressor", check_llmcompressor, prefix + "_recipe.yaml"),
                               ("modelopt", check_modelopt, prefix + "_quant_cfg.json")):
            try:
                entry[tool] = fn(d, cls_name, path, windows, want, bits_only)
            except Exception as e:
                entry[tool] = {"error": repr(e)}
            t = entry[tool]
            ok &= bool(t.get("match", False)) and t.get("routers_untouched", True) and \
                t.get("gptq_changed_exactly_quantized", True) and t.get("saved_weight_scales_match", True) and \
                t.get("lm_head_visual_router_quantized") == []
        res[kind] = entry
        print(kind, json.dumps(entry)[:3000], flush=True)
    res["ok"] = bool(ok)
    json.dump(res, open(args.out, "w"), indent=1)
    print("ok" if ok else "MISMATCH")


if __name__ == "__main__":
    main()

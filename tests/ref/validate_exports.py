"""Loads autoq's exports with the real tools and checks which modules they quantize.

Needs torch, transformers, nvidia-modelopt, llmcompressor and compressed-tensors:
    python3 tests/ref/validate_exports.py --tiny ../shared/models/qwen3-tiny --out tests/fixtures/exports_validation.json
For tests/fixtures/exports/{tiny,vl}_*:
- llm-compressor: Recipe.create_instance parses the YAML; the GPTQModifier resolves its config groups
  into a compressed-tensors QuantizationConfig; apply_quantization_config puts it on the real model and
  we read which modules received a quantization scheme (and its bits).
- ModelOpt: mtq.quantize applies the quant_cfg JSON to the real model; we read which modules have an
  enabled weight quantizer (and its bits).
Both sets must equal the recipe's quantized linears, with the recipe's formats; vision-tower and lm_head
modules of the Qwen3-VL model must stay unquantized.
"""
import argparse, importlib, importlib.abc, importlib.machinery, json, os, sys, types

import torch


class _Stub(types.ModuleType):
    """Stands in for heavy optional imports of llmcompressor (datasets, auto_round) that recipe
    parsing never calls."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *a, **k: None, "__call__": lambda self, *a, **k: None})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots):
        self.roots = roots

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = _Stub(spec.name)
        m.__path__ = []
        return m

    def exec_module(self, module):
        pass


def stub_missing(names):
    missing = []
    for n in names:
        try:
            importlib.import_module(n)
        except Exception:
            missing.append(n)
    if missing:
        sys.meta_path.insert(0, _StubFinder(set(missing)))
    return missing


def recipe_sets(path):
    r = json.load(open(path))
    want = {}
    for g in r["groups"]:
        if g["choice"] != "bf16":
            for m in g["members"]:
                want[m] = g["choice"]
    return want


def load(kind, d):
    from transformers import AutoModelForCausalLM, Qwen3VLForConditionalGeneration

    cls = Qwen3VLForConditionalGeneration if kind == "vl" else AutoModelForCausalLM
    return cls.from_pretrained(d, dtype=torch.float32).eval()


def bits_of(fmt):
    return {"w4a8": 4, "w8a8": 8}[fmt]


def check_llmcompressor(kind, d, prefix):
    from llmcompressor.recipe import Recipe
    from compressed_tensors.quantization import apply_quantization_config

    recipe = Recipe.create_instance(prefix + "_recipe.yaml")
    mods = [m for m in recipe.modifiers]
    gptq = [m for m in mods if type(m).__name__ == "GPTQModifier"][0]
    config = gptq.resolve_quantization_config()
    model = load(kind, d)
    apply_quantization_config(model, config)
    got = {}
    for name, m in model.named_modules():
        s = getattr(m, "quantization_scheme", None)
        if s is not None and s.weights is not None:
            got[name] = s.weights.num_bits
    return got, [type(m).__name__ for m in mods]


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


def check_modelopt(kind, d, prefix, ids):
    import modelopt.torch.quantization as mtq

    cfg = load_quant_cfg(prefix + "_quant_cfg.json")
    model = load(kind, d)
    mtq.quantize(model, cfg, forward_loop=lambda m: m(input_ids=ids))
    got = {}
    for name, m in model.named_modules():
        wq = getattr(m, "weight_quantizer", None)
        if wq is not None and wq.is_enabled:
            got[name] = wq.num_bits
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", default="../shared/models/qwen3-tiny")
    ap.add_argument("--out", default="tests/fixtures/exports_validation.json")
    args = ap.parse_args()
    stubbed = stub_missing(["datasets", "auto_round"])
    res = {"stubbed_imports": stubbed}
    ok = True
    for kind, d in [("tiny", args.tiny), ("vl", "tests/fixtures/qwen3-vl-tiny")]:
        prefix = f"tests/fixtures/exports/{kind}"
        want = recipe_sets(prefix + "_recipe.json")
        want_bits = {m: bits_of(f) for m, f in want.items()}
        ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
        entry = {}
        try:
            got, mods = check_llmcompressor(kind, d, prefix)
            entry["llmcompressor"] = {"modifiers": mods, "quantized": len(got), "match": got == want_bits}
            if got != want_bits:
                entry["llmcompressor"]["diff"] = sorted(set(got.items()) ^ set(want_bits.items()))
        except Exception as e:
            entry["llmcompressor"] = {"error": repr(e)}
        try:
            got = check_modelopt(kind, d, prefix, ids)
            entry["modelopt"] = {"quantized": len(got), "match": got == want_bits}
            if got != want_bits:
                entry["modelopt"]["diff"] = sorted(set(got.items()) ^ set(want_bits.items()))
        except Exception as e:
            entry["modelopt"] = {"error": repr(e)}
        entry["intended"] = len(want_bits)
        res[kind] = entry
        ok &= entry["llmcompressor"].get("match", False) and entry["modelopt"].get("match", False)
        print(kind, json.dumps(entry)[:2000])
    res["ok"] = bool(ok)
    json.dump(res, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()

"""llm-compressor's GPTQ on qwen3-tiny: the reference tests/test_gptq.c checks autoq's GPTQ against.

usage: gptq_ref.py MODEL IDS.npy OUT.json [--save DIR] [--pipelines basic,sequential] [--processor DIR]

Runs llm-compressor's oneshot with the GPTQModifier recipe autoq emits for "every linear W4A8"
(int4 per-channel symmetric weights, int8 dynamic per-token inputs, lm_head and a vision tower ignored; GPTQ defaults:
block 128, dampening 0.01, actorder static) on the calibration windows of IDS.npy, the model in
float32 as autoq's CPU engine computes. Writes:
- OUT.json: per pipeline and linear (an expert's output error is null: see linear_inputs) its shape, the sha256 of all its int4 codes (int8 bytes), its output error
  sum over the calibration tokens of ||x W^T - x Wq^T||^2 with x the unquantized model's inputs, and
  the codes of its first ROWS output channels as hex digits of code + 8 (small enough to commit).
Two pipelines: "basic" (every Hessian from the unquantized model, what autoq's scores use) and
"sequential" (layer after layer, quantized layers feeding the next Hessians, what a deployment uses);
each also rerun with llm-compressor's GPTQ in float64 (GPTQ_PRECISION) to record how far its own codes
move with the arithmetic: in the sequential pipeline a handful of flipped codes in one layer change the
next layer's Hessian, so codes beyond layer 0 are not reproducible even by llm-compressor itself.
--save DIR also saves the sequential float32 run's compressed checkpoint (compressed-tensors) there.
Needs torch, transformers, llmcompressor, compressed-tensors (the versions are recorded in the JSON).
"""
import hashlib, json, sys

import numpy as np
import torch

ROWS = 8

model_dir, ids_path, out = sys.argv[1:4]
save = sys.argv[sys.argv.index("--save") + 1] if "--save" in sys.argv else None
# llm-compressor wants a processor beside a dataset even of token ids: --processor names a folder
# with a tokenizer when MODEL has none (the Qwen3-VL fixture)
processor = sys.argv[sys.argv.index("--processor") + 1] if "--processor" in sys.argv else None
pipelines = sys.argv[sys.argv.index("--pipelines") + 1].split(",") if "--pipelines" in sys.argv else ["basic", "sequential"]

import compressed_tensors, llmcompressor, transformers
from datasets import Dataset
from llmcompressor import oneshot
from llmcompressor.modeling.moe.linearize import load_quantizable_moe
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

import llmcompressor.modifiers.gptq.gptq_quantize as gq
import llmcompressor.modifiers.gptq.helpers as gh

ids = np.load(ids_path).astype(np.int64)
recipe = """
quant_stage:
  quant_modifiers:
    GPTQModifier:
      ignore: [lm_head, 're:.*visual.*', 're:.*mlp\\.gate$']
      config_groups:
        group_0:
          targets: ['Linear']
          weights: {num_bits: 4, type: int, symmetric: true, strategy: channel, dynamic: false}
          input_activations: {num_bits: 8, type: int, symmetric: true, strategy: token, dynamic: true}
"""


def load():
    vl = "ForConditionalGeneration" in AutoConfig.from_pretrained(model_dir).architectures[0]  # Qwen3-VL
    cls = AutoModelForImageTextToText if vl else AutoModelForCausalLM
    # mixture of experts: llm-compressor's own loading path, one nn.Linear per expert projection
    with load_quantizable_moe(cls):
        return cls.from_pretrained(model_dir, dtype=torch.float32)


def linear_inputs(model):
    """x^T x over the calibration tokens of every decoder linear's input, unquantized model."""
    xtx, hooks = {}, []
    for name, mod in model.named_modules():
        # experts are left out: calibration sends every token through every expert
        # (moe_calibrate_all_experts), a plain forward only the routed ones
        if isinstance(mod, torch.nn.Linear) and ".layers." in name and ".experts." not in name \
                and not name.endswith("mlp.gate"):

            def hook(m, args, _out, name=name):
                x = args[0].reshape(-1, args[0].shape[-1]).double()
                xtx[name] = xtx.get(name, 0) + x.T @ x

            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        for row in ids:
            model(torch.tensor(row)[None])
    for h in hooks:
        h.remove()
    return xtx


def gptq(pipeline, precision):
    """llm-compressor's GPTQ through one pipeline: name -> (quantized weight, int4 codes)."""
    gq.GPTQ_PRECISION = gh.GPTQ_PRECISION = precision
    model = load()
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": np.ones_like(ids).tolist()})
    oneshot(model=model, dataset=ds, recipe=recipe, num_calibration_samples=len(ids), max_seq_length=ids.shape[1],
            pipeline=pipeline, shuffle_calibration_samples=False,
            processor=AutoTokenizer.from_pretrained(processor) if processor else None)
    out = {}
    for name, mod in model.named_modules():
        if not hasattr(mod, "weight_scale"):
            continue
        w = mod.weight.detach().double()
        scale = mod.weight_scale.detach().double()  # (out, 1)
        codes = torch.round(w / scale).to(torch.int8)
        assert torch.allclose(codes.double() * scale, w, rtol=0, atol=1e-6 * float(scale.max())), name
        out[name] = (w, codes)
    if save and pipeline == "sequential" and precision == torch.float32:
        model.save_pretrained(save, save_compressed=True)
    return out


def output_error(name, w):
    if name not in xtx:
        return None  # an expert (see linear_inputs)
    d = orig[name] - w
    return float(torch.einsum("ij,jk,ik->", d, xtx[name], d))  # sum_t ||x_t (W - Wq)^T||^2


ref = load()
xtx = linear_inputs(ref)
orig = {n: m.weight.detach().double().clone() for n, m in ref.named_modules() if n in xtx}
del ref

result = {"model": model_dir.rstrip("/").split("/")[-1], "ids": ids_path.split("/")[-1], "rows": ROWS,
          "num_samples": int(ids.shape[0]), "seq_len": int(ids.shape[1]),
          "settings": {"block_size": 128, "dampening_frac": 0.01, "actorder": "static", "dtype": "float32",
                       "gptq_precision": "float32", "numerics": "compressed-tensors"},
          "versions": {"llmcompressor": llmcompressor.__version__, "compressed_tensors": compressed_tensors.__version__,
                       "transformers": transformers.__version__, "torch": torch.__version__}}
for pipeline in pipelines:
    res = gptq(pipeline, torch.float32)
    result[pipeline] = [{"name": n, "shape": list(w.shape), "output_error": output_error(n, w),
                         "codes_sha256": hashlib.sha256(c.numpy().tobytes()).hexdigest(),
                         "codes_head": "".join("%x" % (v + 8) for v in c[:ROWS].reshape(-1).tolist())}
                        for n, (w, c) in res.items()]
    # llm-compressor against itself in float64: how far its own codes move with the arithmetic
    res64 = gptq(pipeline, torch.float64)
    eq = sum(int((res[n][1] == res64[n][1]).sum()) for n in res)
    total = sum(res[n][1].numel() for n in res)
    worst = max(abs(output_error(n, res[n][0]) / output_error(n, res64[n][0]) - 1) for n in res if n in xtx)
    result[pipeline + "_float32_vs_float64"] = {"codes_equal": eq / total, "worst_output_error_diff": worst}
json.dump(result, open(out, "w"), indent=1)
print(f"{len(result['basic'])} linears -> {out}: " + json.dumps({k: v for k, v in result.items() if k.endswith("float64")}))

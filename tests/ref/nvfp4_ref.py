"""autoq quantize's NVFP4 checkpoints (nvfp4-pack-quantized) against llm-compressor's own from the same
scheme, on the CPU (README §10).

usage: nvfp4_ref.py MODEL IDS.npy AQ_W AQ_W4A4 WORK_DIR

AQ_W: `autoq quantize MODEL` of a recipe with every linear NVFP4 weight-only; AQ_W4A4: the same with the
`nvfp4` format (W4A4), quantized with --data IDS.npy. llm-compressor 0.14 (QuantizationModifier, schemes
NVFP4A16 and NVFP4, ignore lm_head, calibrated on IDS.npy) writes WORK_DIR/lc-w and WORK_DIR/lc-w4a4. Compared:
tensor names, dtypes and shapes; the share of equal weight_packed bytes and weight_scale (E4M3) bytes; the
largest relative difference of weight_global_scale and input_global_scale; the logits of both checkpoints
in transformers + compressed-tensors (float32). Prints one JSON object; exits 1 when the layouts differ, a
weight_global_scale differs by more than bf16's half step (2^-8: llm-compressor computes it in the bf16 model's
dtype, 2688 x bf16(1 / amax), where autoq keeps fp32), or fewer than 95% of the E4M3 block scales or 90% of the
packed code bytes are equal; 77 when the packages do not import.
"""
import json, os, sys

sys.path = [p for p in sys.path if p not in ("", os.getcwd())]  # autoq's datasets/ would shadow HF datasets
try:
    import numpy as np
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM
    from transformers.utils.quantization_config import CompressedTensorsConfig
except Exception as e:
    print(f"packages missing: {e}")
    sys.exit(77)

model_dir, ids_path, aq_w, aq_w4a4, work = sys.argv[1:6]
ids = np.load(ids_path).astype(np.int64)


def lc(scheme, dest):
    if os.path.exists(os.path.join(dest, "config.json")):
        return
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": np.ones_like(ids).tolist()})
    oneshot(model=model, dataset=ds, recipe=QuantizationModifier(targets="Linear", scheme=scheme, ignore=["lm_head"]),
            num_calibration_samples=len(ids), max_seq_length=ids.shape[1], shuffle_calibration_samples=False)
    model.save_pretrained(dest, save_compressed=True)


def tensors(d):
    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def logits(d):
    m = AutoModelForCausalLM.from_pretrained(d, quantization_config=CompressedTensorsConfig(dequantize=True)).float().eval()
    with torch.no_grad():
        return m(torch.tensor(ids[:1])).logits[0].numpy()


out, bad = {}, 0
for name, scheme, aq in (("w", "NVFP4A16", aq_w), ("w4a4", "NVFP4", aq_w4a4)):
    dest = os.path.join(work, "lc-" + name)
    lc(scheme, dest)
    a, b = tensors(aq), tensors(dest)
    layout = {k: (str(v.dtype), list(v.shape)) for k, v in a.items()} == {k: (str(v.dtype), list(v.shape)) for k, v in b.items()}
    eq = lambda suf: float(np.mean(np.concatenate([(a[k].view(torch.uint8) == b[k].view(torch.uint8)).numpy().ravel()
                                                  for k in a if k.endswith(suf)])))
    rel = lambda suf: max(float(abs(a[k].double() / b[k].double() - 1).max()) for k in a if k.endswith(suf))
    r = {"layout_equal": layout, "weight_packed_equal": eq(".weight_packed"), "weight_scale_equal": eq(".weight_scale"),
         "weight_global_scale_rel": rel(".weight_global_scale")}
    if name == "w4a4":
        r["input_global_scale_rel"] = rel(".input_global_scale")
    r["max_dlogit"] = float(np.abs(logits(aq) - logits(dest)).max())
    bad += not (layout and r["weight_global_scale_rel"] <= 2 ** -8 and r["weight_scale_equal"] >= 0.95
                and r["weight_packed_equal"] >= 0.90)
    out[name] = r
print(json.dumps(out))
sys.exit(1 if bad else 0)

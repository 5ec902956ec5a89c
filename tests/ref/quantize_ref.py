"""autoq quantize's checkpoints against llm-compressor's own, loaded in transformers + compressed-tensors.

usage: quantize_ref.py MODEL IDS.npy WORK_DIR [OUT.json]

1. Saves llm-compressor's checkpoints of qwen3-tiny as a user would make them (the model in its own
   dtype, bf16): WORK_DIR/lc-rtn (QuantizationModifier: round-to-nearest) and WORK_DIR/lc-gptq
   (GPTQModifier, sequential pipeline), both with the recipe autoq emits for "every linear W4A8",
   calibrated on IDS.npy.
2. With OUT.json: loads WORK_DIR/aq-rtn and WORK_DIR/aq-gptq (written beforehand by
   `autoq quantize MODEL --recipe R --data IDS.npy --quantizer rtn|gptq --out ...`), and compares each
   with llm-compressor's: tensor names, dtypes and shapes, the quantization_config, the share of equal
   int4 codes, the largest logit difference and the mean NLL over the windows. Writes OUT.json, with
   llm-compressor's layouts (every tensor's dtype and shape, and for round-to-nearest its bytes' sha256)
   for tests/test_quantize.sh.
"""
import hashlib, json, os, struct, sys

import numpy as np
import torch

model_dir, ids_path, work = sys.argv[1:4]
out = sys.argv[4] if len(sys.argv) > 4 else None

import compressed_tensors, llmcompressor, transformers
from datasets import Dataset
from llmcompressor import oneshot
from safetensors import safe_open
from transformers import AutoModelForCausalLM

ids = np.load(ids_path).astype(np.int64)
scheme = """
      ignore: [lm_head]
      config_groups:
        group_0:
          targets: ['Linear']
          weights: {num_bits: 4, type: int, symmetric: true, strategy: channel, dynamic: false}
          input_activations: {num_bits: 8, type: int, symmetric: true, strategy: token, dynamic: true}
"""


def llmcompressor_checkpoint(modifier, dest):
    if os.path.exists(os.path.join(dest, "config.json")):
        return
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": np.ones_like(ids).tolist()})
    recipe = "quant_stage:\n  quant_modifiers:\n    " + modifier + ":" + scheme
    oneshot(model=model, dataset=ds, recipe=recipe, num_calibration_samples=len(ids), max_seq_length=ids.shape[1],
            pipeline="sequential", shuffle_calibration_samples=False)
    model.save_pretrained(dest, save_compressed=True)


def tensors(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    t = {}
    for f in files:
        with safe_open(os.path.join(d, f), "pt") as s:
            for k in s.keys():
                t[k] = s.get_tensor(k)
    return t


def logits(d):
    model = AutoModelForCausalLM.from_pretrained(d, dtype="auto")
    with torch.no_grad():
        return torch.cat([model(torch.tensor(row)[None]).logits.float() for row in ids])


def nll(lg):
    """mean next-token NLL over the windows"""
    t = torch.tensor(ids)
    return float(torch.nn.functional.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), t[:, 1:].reshape(-1)))


def compare(ours, theirs):
    a, b = tensors(ours), tensors(theirs)
    meta = {k: (str(v.dtype), tuple(v.shape)) for k, v in a.items()}
    meta_ref = {k: (str(v.dtype), tuple(v.shape)) for k, v in b.items()}
    codes = [k for k in b if b[k].dtype == torch.int8]
    same = sum(int((a[k] == b[k]).sum()) for k in codes if k in a and a[k].shape == b[k].shape)
    total = sum(b[k].numel() for k in codes)
    scales = [k for k in b if k.endswith("weight_scale")]
    scale_diff = max(float(((a[k].float() - b[k].float()).abs() / b[k].float().abs()).max()) for k in scales if k in a)
    qa = json.load(open(os.path.join(ours, "config.json")))["quantization_config"]
    qb = json.load(open(os.path.join(theirs, "config.json")))["quantization_config"]
    la, lb = logits(ours), logits(theirs)
    ref = logits(model_dir)
    return {"tensors_equal_names_dtypes_shapes": meta == meta_ref,
            "tensor_differences": sorted(set(meta.items()) ^ set(meta_ref.items()))[:10],
            "quantization_config_equal": qa == qb,
            "codes_equal": same / total, "scale_max_rel_diff": scale_diff,
            "logits_max_abs_diff": float((la - lb).abs().max()),
            "nll": {"unquantized": nll(ref), "autoq": nll(la), "llmcompressor": nll(lb)},
            "logits_max_abs_diff_to_unquantized": {"autoq": float((la - ref).abs().max()),
                                                  "llmcompressor": float((lb - ref).abs().max())}}


def layout(d, with_hash):
    """{tensor: [dtype, shape(, sha256 of its bytes)]} of a one-file checkpoint, read with the stdlib
    as tests/test_quantize.sh reads autoq's; and its quantization_config."""
    with open(os.path.join(d, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    t = {}
    for k, v in sorted(hdr.items()):
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        t[k] = [v["dtype"], v["shape"]] + ([hashlib.sha256(data[a:b]).hexdigest()] if with_hash else [])
    return {"quantization_config": json.load(open(os.path.join(d, "config.json")))["quantization_config"],
            "tensors": t}


llmcompressor_checkpoint("QuantizationModifier", os.path.join(work, "lc-rtn"))
llmcompressor_checkpoint("GPTQModifier", os.path.join(work, "lc-gptq"))
if out:
    res = {"model": model_dir.rstrip("/").split("/")[-1], "ids": ids_path.split("/")[-1],
           "versions": {"llmcompressor": llmcompressor.__version__, "compressed_tensors": compressed_tensors.__version__,
                        "transformers": transformers.__version__, "torch": torch.__version__}}
    for q in ("rtn", "gptq"):
        res[q] = compare(os.path.join(work, "aq-" + q), os.path.join(work, "lc-" + q))
    # what tests/test_quantize.sh checks autoq's own checkpoints against, without PyTorch
    res["llmcompressor_rtn"] = layout(os.path.join(work, "lc-rtn"), True)
    res["llmcompressor_gptq"] = layout(os.path.join(work, "lc-gptq"), False)
    json.dump(res, open(out, "w"), indent=1)
    print(json.dumps({k: v for k, v in res.items() if not k.startswith("llmcompressor_")}, indent=1))

"""autoq quantize's checkpoints against llm-compressor's own, loaded in transformers + compressed-tensors.

usage: quantize_ref.py MODEL IDS.npy WORK_DIR [OUT.json]

1. Saves llm-compressor's checkpoints of qwen3-tiny, calibrated on IDS.npy with the recipe autoq emits
   for "every linear W4A8": WORK_DIR/lc-rtn (QuantizationModifier: round-to-nearest) and GPTQModifier
   checkpoints for both of its pipelines, each with the model loaded as a user loads it (dtype auto:
   bf16) and in float32 (as autoq computes): lc-gptq (sequential, its default), lc-gptq-basic,
   lc-gptq-fp32, lc-gptq-basic-fp32; and MODEL's float32 copy, WORK_DIR/model-fp32 (the same values).
   A folder already holding a config.json is kept.
2. With OUT.json: loads WORK_DIR/aq-rtn, aq-gptq and aq-gptq-basic, written beforehand by
   `autoq quantize MODEL --recipe R --data IDS.npy --quantizer rtn|gptq [--gptq-pipeline basic] --out ...`
   (R every linear W4A8: tests/test_quantize.sh makes it), and where present aq32-gptq and
   aq32-gptq-basic, the same from WORK_DIR/model-fp32, and compares each with llm-compressor's
   of the same pipeline, bf16 and float32: tensor names, dtypes and shapes, the quantization_config,
   the share of equal int4 codes, the largest logit difference (the checkpoints loaded as users load
   them, dtype auto, and both in float32) and the mean NLL over the windows; llm-compressor's bf16
   run against its float32 one (its own noise floor); and, where WORK_DIR/aq-gptq.eval.json,
   aq-gptq-basic.eval.json (and aq32-*.eval.json) hold `autoq eval MODEL --recipe R --data IDS.npy
   --quantizer gptq [--gptq-pipeline basic] --json`, autoq's own KL and NLL of the deployment against
   those of its loaded checkpoint. Writes OUT.json, with llm-compressor's layouts (every tensor's
   dtype and shape, and for round-to-nearest its bytes' sha256) and a 16-bit hash of each code row of
   lc-gptq-basic-fp32 for tests/test_quantize.sh.
"""
import hashlib, json, os, shutil, struct, sys, zlib

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


def llmcompressor_checkpoint(modifier, dest, pipeline="sequential", dtype="auto"):
    if os.path.exists(os.path.join(dest, "config.json")):
        return
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": np.ones_like(ids).tolist()})
    recipe = "quant_stage:\n  quant_modifiers:\n    " + modifier + ":" + scheme
    oneshot(model=model, dataset=ds, recipe=recipe, num_calibration_samples=len(ids), max_seq_length=ids.shape[1],
            pipeline=pipeline, shuffle_calibration_samples=False)
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


_logits = {}


def logits(d, dtype="auto"):
    """the windows' logits (float32) with the checkpoint loaded in dtype: auto (as saved) or float32"""
    if (d, dtype) not in _logits:
        model = AutoModelForCausalLM.from_pretrained(d, dtype=dtype if dtype == "auto" else torch.float32)
        with torch.no_grad():
            _logits[d, dtype] = torch.cat([model(torch.tensor(row)[None]).logits.float() for row in ids])
    return _logits[d, dtype]


def kl(d):
    """sum over windows and positions of KL(unquantized || d), both in float32, as autoq eval sums it"""
    p = torch.log_softmax(logits(model_dir, "float32").double(), -1)
    q = torch.log_softmax(logits(d, "float32").double(), -1)
    return float((p.exp() * (p - q)).sum())


def nll(lg):
    """mean next-token NLL over the windows"""
    t = torch.tensor(ids)
    return float(torch.nn.functional.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), t[:, 1:].reshape(-1)))


def codes_equal(a, b):
    """the share of int4 codes of b's I8 tensors equal in a"""
    codes = [k for k in b if b[k].dtype == torch.int8]
    same = sum(int((a[k] == b[k]).sum()) for k in codes if k in a and a[k].shape == b[k].shape)
    return same / sum(b[k].numel() for k in codes)


def compare(ours, theirs):
    a, b = tensors(ours), tensors(theirs)
    meta = {k: (str(v.dtype), tuple(v.shape)) for k, v in a.items()}
    meta_ref = {k: (str(v.dtype), tuple(v.shape)) for k, v in b.items()}
    scales = [k for k in b if k.endswith("weight_scale")]
    scale_diff = max(float(((a[k].float() - b[k].float()).abs() / b[k].float().abs()).max()) for k in scales if k in a)
    qa = json.load(open(os.path.join(ours, "config.json")))["quantization_config"]
    qb = json.load(open(os.path.join(theirs, "config.json")))["quantization_config"]
    la, lb = logits(ours), logits(theirs)
    ref = logits(model_dir)
    return {"tensors_equal_names_dtypes_shapes": meta == meta_ref,
            "tensor_differences": sorted(set(meta.items()) ^ set(meta_ref.items()))[:10],
            "quantization_config_equal": qa == qb,
            "codes_equal": codes_equal(a, b), "scale_max_rel_diff": scale_diff,
            "logits_max_abs_diff": float((la - lb).abs().max()),
            "logits_max_abs_diff_float32": float((logits(ours, "float32") - logits(theirs, "float32")).abs().max()),
            "nll": {"unquantized": nll(ref), "autoq": nll(la), "llmcompressor": nll(lb)},
            "logits_max_abs_diff_to_unquantized": {"autoq": float((la - ref).abs().max()),
                                                  "llmcompressor": float((lb - ref).abs().max())}}


def safetensors(d):
    """the header and the bytes of a one-file checkpoint, read with the stdlib as tests/test_quantize.sh
    reads autoq's"""
    with open(os.path.join(d, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), f.read()


def layout(d, with_hash):
    """{tensor: [dtype, shape(, sha256 of its bytes)]} of a one-file checkpoint; and its quantization_config."""
    hdr, data = safetensors(d)
    t = {}
    for k, v in sorted(hdr.items()):
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        t[k] = [v["dtype"], v["shape"]] + ([hashlib.sha256(data[a:b]).hexdigest()] if with_hash else [])
    return {"quantization_config": json.load(open(os.path.join(d, "config.json")))["quantization_config"],
            "tensors": t}


def self_consistency(bf16, fp32):
    """llm-compressor's bf16 checkpoint against its float32 one: how far its own result moves with the
    dtype it calibrates in (the noise floor of any comparison with it)"""
    a, b = tensors(bf16), tensors(fp32)
    return {"codes_equal": codes_equal(a, b),
            "logits_max_abs_diff": float((logits(bf16) - logits(fp32)).abs().max()),
            "logits_max_abs_diff_float32": float((logits(bf16, "float32") - logits(fp32, "float32")).abs().max()),
            "nll": {"bf16": nll(logits(bf16)), "float32": nll(logits(fp32))}}


def against_eval(ckpt, ev):
    """autoq eval's KL and NLL of a deployment against its checkpoint's, loaded in float32 as eval runs"""
    la = logits(ckpt, "float32")
    return {"eval_kl": ev["kl"], "checkpoint_kl": kl(ckpt), "eval_nll": ev["nll_quantized"],
            "checkpoint_nll": nll(la), "nll_abs_diff": abs(ev["nll_quantized"] - nll(la)),
            "eval_nll_unquantized": ev["nll_ref"], "nll_unquantized": nll(logits(model_dir, "float32"))}


def row_hashes(d):
    """{I8 tensor: its rows' crc32 & 0xffff as 4 hex digits each} of a one-file checkpoint: small enough
    to commit, and tests/test_quantize.sh counts the rows autoq gets equal with the standard library"""
    hdr, data = safetensors(d)
    out = {}
    for k, v in sorted(hdr.items()):
        if k != "__metadata__" and v["dtype"] == "I8":
            (a, _), cols = v["data_offsets"], v["shape"][1]
            out[k] = "".join("%04x" % (zlib.crc32(data[r:r + cols]) & 0xffff) for r in range(a, v["data_offsets"][1], cols))
    return out


lc = lambda name: os.path.join(work, "lc-" + name)
llmcompressor_checkpoint("QuantizationModifier", lc("rtn"))
for pipe in ("sequential", "basic"):
    tag = "gptq" if pipe == "sequential" else "gptq-basic"
    llmcompressor_checkpoint("GPTQModifier", lc(tag), pipe)
    llmcompressor_checkpoint("GPTQModifier", lc(tag + "-fp32"), pipe, torch.float32)
model32 = os.path.join(work, "model-fp32")
if not os.path.exists(os.path.join(model32, "config.json")):
    AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).save_pretrained(model32)
    shutil.copy(os.path.join(model_dir, "tokenizer.json"), model32)
if out:
    res = {"model": model_dir.rstrip("/").split("/")[-1], "ids": ids_path.split("/")[-1],
           "versions": {"llmcompressor": llmcompressor.__version__, "compressed_tensors": compressed_tensors.__version__,
                        "transformers": transformers.__version__, "torch": torch.__version__}}
    res["rtn"] = compare(os.path.join(work, "aq-rtn"), lc("rtn"))
    # gptq / gptq_basic: against llm-compressor's bf16 run (what users get); *_float32: its float32 one
    for key, tag in (("gptq", "gptq"), ("gptq_basic", "gptq-basic")):
        res[key] = compare(os.path.join(work, "aq-" + tag), lc(tag))
        res[key + "_float32"] = compare(os.path.join(work, "aq-" + tag), lc(tag + "-fp32"))
        pipe = "basic" if key == "gptq_basic" else "sequential"
        res["llmcompressor_bf16_vs_float32_" + pipe] = self_consistency(lc(tag), lc(tag + "-fp32"))
        for aq, suffix in (("aq-", ""), ("aq32-", "_model_float32")):
            ev = os.path.join(work, aq + tag + ".eval.json")
            if os.path.exists(ev):
                res["eval_" + pipe + suffix] = against_eval(os.path.join(work, aq + tag), json.load(open(ev)))
        # autoq on MODEL's float32 copy: the arithmetic of llm-compressor's float32 run, scales included
        if os.path.exists(os.path.join(work, "aq32-" + tag, "config.json")):
            res[key + "_model_float32"] = compare(os.path.join(work, "aq32-" + tag), lc(tag + "-fp32"))
    # what tests/test_quantize.sh checks autoq's own checkpoints against, without PyTorch
    res["llmcompressor_rtn"] = layout(lc("rtn"), True)
    res["llmcompressor_gptq"] = layout(lc("gptq"), False)
    res["llmcompressor_gptq_basic_float32_rows"] = row_hashes(lc("gptq-basic-fp32"))
    json.dump(res, open(out, "w"), indent=1)
    print(json.dumps({k: v for k, v in res.items() if not k.startswith("llmcompressor_")}, indent=1))

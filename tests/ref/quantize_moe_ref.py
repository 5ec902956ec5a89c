"""llm-compressor's round-to-nearest checkpoint of the Qwen3-MoE fixture, for autoq quantize's test.

usage: quantize_moe_ref.py MODEL IDS.npy WORK_DIR OUT.json

Saves WORK_DIR/lc-rtn as a user makes it (QuantizationModifier, every Linear W4A8 as autoq's recipe
exports it, the routers ignored as autoq's MoE exports say, the model in its own dtype, bf16; oneshot
unfuses transformers 5's experts into per-expert linears), then writes OUT.json: its
quantization_config and every tensor's dtype, shape and bytes' sha256 (tests/test_quantize.sh).
"""
import hashlib, json, os, struct, sys

import numpy as np

model_dir, ids_path, work, out = sys.argv[1:5]
import compressed_tensors, llmcompressor, transformers
from datasets import Dataset
from llmcompressor import oneshot
from transformers import AutoModelForCausalLM

dest = os.path.join(work, "lc-rtn")
ids = np.load(ids_path).astype(np.int64)
recipe = """quant_stage:
  quant_modifiers:
    QuantizationModifier:
      ignore: [lm_head, 're:.*mlp\\.gate$']
      config_groups:
        group_0:
          targets: ['Linear']
          weights: {num_bits: 4, type: int, symmetric: true, strategy: channel, dynamic: false}
          input_activations: {num_bits: 8, type: int, symmetric: true, strategy: token, dynamic: true}
"""
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": np.ones_like(ids).tolist()})
oneshot(model=model, dataset=ds, recipe=recipe, num_calibration_samples=len(ids), max_seq_length=ids.shape[1],
        pipeline="sequential", shuffle_calibration_samples=False)
model.save_pretrained(dest, save_compressed=True)

with open(os.path.join(dest, "model.safetensors"), "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    hdr = json.loads(f.read(n))
    data = f.read()
tensors = {k: [v["dtype"], v["shape"], hashlib.sha256(data[v["data_offsets"][0]:v["data_offsets"][1]]).hexdigest()]
           for k, v in sorted(hdr.items()) if k != "__metadata__"}
qc = json.load(open(os.path.join(dest, "config.json")))["quantization_config"]
versions = {"llmcompressor": llmcompressor.__version__, "compressed_tensors": compressed_tensors.__version__,
            "transformers": transformers.__version__}
json.dump({"versions": versions, "llmcompressor_rtn": {"quantization_config": qc, "tensors": tensors}},
          open(out, "w"), indent=1, sort_keys=True)

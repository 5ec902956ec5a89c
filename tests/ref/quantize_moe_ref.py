"""llm-compressor's round-to-nearest checkpoints of the two mixture-of-experts fixtures, for autoq
quantize's test (tests/test_quantize.sh).

usage: quantize_moe_ref.py WORK_DIR OUT.json   (run from the repository root)

For tests/fixtures/qwen3-moe-tiny (experts stored per expert) and qwen3-vl-moe-tiny (experts stored
fused) it saves WORK_DIR/<fixture> as a user makes it: QuantizationModifier, every Linear W4A8 as
autoq's recipe exports it, lm_head, the routers and the vision tower ignored, the model in its own
dtype (bf16); llm-compressor unfuses transformers 5's experts into per-expert linears
(load_quantizable_moe for Qwen3-VL-MoE, whose fixture has no processor: batches of ids go in as a
DataLoader). OUT.json: per fixture its quantization_config and every tensor's dtype, shape and bytes'
sha256.
"""
import hashlib, json, os, struct, sys

import numpy as np
import torch

work, out = sys.argv[1:3]
import compressed_tensors, llmcompressor, transformers
from llmcompressor import oneshot
from llmcompressor.modeling.moe.linearize import load_quantizable_moe
from torch.utils.data import DataLoader

recipe = """quant_stage:
  quant_modifiers:
    QuantizationModifier:
      ignore: [lm_head, 're:.*mlp\\.gate$', 're:.*visual.*']
      config_groups:
        group_0:
          targets: ['Linear']
          weights: {num_bits: 4, type: int, symmetric: true, strategy: channel, dynamic: false}
          input_activations: {num_bits: 8, type: int, symmetric: true, strategy: token, dynamic: true}
"""
fixtures = {"qwen3-moe-tiny": ("qwen3_moe_tiny_ids.npy", transformers.Qwen3MoeForCausalLM),
            "qwen3-vl-moe-tiny": ("qwen3_vl_moe_tiny_ids.npy", transformers.Qwen3VLMoeForConditionalGeneration)}
result = {"versions": {"llmcompressor": llmcompressor.__version__, "compressed_tensors": compressed_tensors.__version__,
                       "transformers": transformers.__version__}}
for name, (ids_file, cls) in fixtures.items():
    ids = np.load(os.path.join("tests/fixtures", ids_file)).astype(np.int64)
    with load_quantizable_moe(cls):
        model = cls.from_pretrained(os.path.join("tests/fixtures", name), dtype="auto")
    batches = [{"input_ids": torch.tensor(w)[None], "attention_mask": torch.ones(1, len(w), dtype=torch.long)} for w in ids]
    oneshot(model=model, recipe=recipe, dataset=DataLoader(batches, batch_size=None), processor=object(),
            num_calibration_samples=len(batches))
    dest = os.path.join(work, name)
    model.save_pretrained(dest, save_compressed=True)
    with open(os.path.join(dest, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    tensors = {k: [v["dtype"], v["shape"], hashlib.sha256(data[v["data_offsets"][0]:v["data_offsets"][1]]).hexdigest()]
               for k, v in sorted(hdr.items()) if k != "__metadata__"}
    qc = json.load(open(os.path.join(dest, "config.json")))["quantization_config"]
    result[name] = {"quantization_config": qc, "tensors": tensors}
json.dump(result, open(out, "w"), indent=1, sort_keys=True)

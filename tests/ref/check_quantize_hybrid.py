"""`autoq quantize` of a hybrid model in transformers 5.17 + compressed-tensors (README §10).

    check_quantize_hybrid.py IDS.npy DIR:EVAL_LOGITS.npy ...

A vision-language checkpoint (text_config) loads as AutoModelForImageTextToText. A mixture-of-experts checkpoint stores its experts per expert, as the source checkpoint and llm-compressor
do; transformers 5.17 fuses per-expert tensors into its experts module only without a quantization config.
With the experts kept bf16 (the recipe's experts groups disabled), each DIR is copied with its bf16 experts
fused as transformers 5 stores them (gate_up_proj [E, 2I, D], down_proj [E, D, I]); every other tensor,
quantized or not, is loaded as written. Then check_quantize_formats.py's check: no missing or unexpected
keys, logits within 1e-3 of EVAL_LOGITS. Exit 0 pass, 1 fail, 77 when the packages do not import.
"""
import json
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_quantize_formats as cqf  # exits 77 itself when the packages are missing

import torch
from safetensors.torch import load_file, save_file


def fuse_experts(src, dst):
    os.makedirs(dst)
    for f in os.listdir(src):
        if f != "model.safetensors":
            shutil.copy(os.path.join(src, f), dst)
    t = load_file(os.path.join(src, "model.safetensors"))
    pat = re.compile(r"^(.*\.mlp\.experts)\.([0-9]+)\.(gate_proj|up_proj|down_proj)\.weight$")
    per = {}
    for k in list(t):
        mt = pat.match(k)
        if mt:
            per.setdefault(mt.group(1), {})[(int(mt.group(2)), mt.group(3))] = t.pop(k)
    for g, d in per.items():
        E = 1 + max(e for e, _ in d)
        t[g + ".gate_up_proj"] = torch.stack([torch.cat([d[(e, "gate_proj")], d[(e, "up_proj")]]) for e in range(E)])
        t[g + ".down_proj"] = torch.stack([d[(e, "down_proj")] for e in range(E)])
    save_file(t, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    return len(per)


def main(argv):
    ids, pairs = argv[0], argv[1:]
    tmp = tempfile.mkdtemp()
    try:
        args = [ids]
        for i, p in enumerate(pairs):
            d, ref = p.rsplit(":", 1)
            if "text_config" in json.load(open(os.path.join(d, "config.json"))):
                # a vision-language checkpoint: its own class keeps the model.language_model.* names that
                # the quantization config's ignore list spells (AutoModelForCausalLM renames them)
                from transformers import AutoModelForImageTextToText

                cqf.AutoModelForCausalLM = AutoModelForImageTextToText
            out = os.path.join(tmp, "m%d" % i)
            n = fuse_experts(d, out)
            print("%s: %d experts groups fused for transformers" % (d, n))
            args.append(out + ":" + ref)
        return cqf.main(args)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

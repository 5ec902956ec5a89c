"""How precisely a W4A8 checkpoint's NLL is defined: the mean next-token NLL of an `int-quantized`
compressed-tensors checkpoint (autoq quantize's or llm-compressor's) computed by transformers in
float32 and in float64, each linear's weight code x scale and its input quantized per token as
compressed-tensors does (scale amax / 127.5, round half to even, clamp to [-128, 127]; checked equal
to compressed-tensors' own forward). A 1e-7 change in an activation that sits on an int8 rounding
edge flips its code, so the two differ by far more than float32's own rounding.

usage: checkpoint_nll.py CHECKPOINT BASE_MODEL IDS.npy   (BASE_MODEL: the unquantized model it came from)
"""
import sys

import numpy as np
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

ck, base, ids_path = sys.argv[1:4]
ids = torch.tensor(np.load(ids_path).astype(np.int64))
f = safe_open(ck + "/model.safetensors", "pt")


def quant_input(mod, args):
    x = args[0]
    s = x.abs().amax(-1, keepdim=True) / 127.5
    return (torch.clamp(torch.round(x / s), -128, 127) * s,)


res = {}
for dt in (torch.float32, torch.float64):
    m = AutoModelForCausalLM.from_pretrained(base, dtype=dt)
    for name, mod in m.named_modules():
        if isinstance(mod, torch.nn.Linear) and name + ".weight_scale" in f.keys():
            w = f.get_tensor(name + ".weight").float() * f.get_tensor(name + ".weight_scale").float()
            with torch.no_grad():
                mod.weight.copy_(w.to(dt))
            mod.register_forward_pre_hook(quant_input)
    with torch.no_grad():
        lg = torch.cat([m(row[None]).logits.double() for row in ids])
    nll = torch.nn.functional.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), ids[:, 1:].reshape(-1))
    res[str(dt).replace("torch.", "")] = float(nll)
res["abs_diff"] = abs(res["float32"] - res["float64"])
print(ck, res)

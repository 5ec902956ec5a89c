"""KV-cache KL scores from Hugging Face transformers (PyTorch, fp32): the hidden reference for autoq's KV-cache
groups (README §6). For each full-attention layer l and KV-cache format (kv_fp8, kv_nvfp4), the model runs with
only layer l's K (after k_norm and RoPE, as the cache stores it) and V fake-quantized where attention reads them,
and the score is sum over windows, positions and vocabulary of P (log P - log Q).

The numerics are ModelOpt's k/v_bmm_quantizer as README §4 states them, with the amax of the tensor of one window
(one layer's K or V over every head and position):
  kv_fp8   c = 448 / amax, x' = e4m3(clamp(x c, -448, 448)) x fp32(1 / c)
  kv_nvfp4 global scale g = amax / 2688, blocks of 16 along head_dim: s = e4m3(min(amax_b / (6 g), 448)) g,
           x' = sign(x) e2m1(|x| / s) s (ties to the even code), zeros where s = 0

    python3 tests/ref/kv_cache_ref.py --out tests/fixtures/kv_cache_ref.json [--tiny ../shared/models/qwen3-tiny]
The attention runs through transformers' own SDPA attention (registered under another name, causal), so the
reference does not depend on autoq's attention code.
"""
import argparse, json, os

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import AttentionInterface, AutoModelForCausalLM

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
MIDS = (E2M1[1:] + E2M1[:-1]) / 2


def e4m3(x):
    return x.clamp(-448, 448).to(torch.float8_e4m3fn).to(torch.float32)


def e2m1(v):  # |v| >= 0 to the nearest E2M1 magnitude, ties to the even code, saturating at 6
    lo = (v.unsqueeze(-1) > MIDS).sum(-1)  # ties go down
    hi = (v.unsqueeze(-1) >= MIDS).sum(-1)  # ties go up
    idx = torch.where((lo != hi) & (lo % 2 == 1), hi, lo)
    return E2M1[idx]


def fq_kv(x, fmt):
    amax = x.abs().max()
    if amax <= 2.0**-24:
        return torch.zeros_like(x)
    if fmt == "kv_fp8":
        c = torch.tensor(448.0) / amax
        return e4m3(x * c) * (torch.tensor(1.0) / c)
    g = amax / 2688.0
    b = x.reshape(*x.shape[:-1], -1, 16)
    s = e4m3(torch.clamp(b.abs().amax(-1, keepdim=True) / (6 * g), max=448.0)) * g
    q = torch.where(s > 0, torch.sign(b) * e2m1(b.abs() / torch.where(s > 0, s, 1.0)) * s, torch.zeros_like(b))
    return q.reshape(x.shape)


STATE = {"layer": -1, "fmt": None}


def kvq_attention(module, query, key, value, attention_mask, **kw):
    # transformers builds no mask for a registered attention: its SDPA path is then causal
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if getattr(module, "layer_idx", None) == STATE["layer"]:
        key, value = fq_kv(key, STATE["fmt"]), fq_kv(value, STATE["fmt"])
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kw)


AttentionInterface.register("autoq_kvq", kvq_attention)


def load(path):
    cfg = json.load(open(os.path.join(path, "config.json")))
    if cfg["model_type"] == "qwen3_vl":
        from transformers import Qwen3VLForConditionalGeneration as C
    else:
        C = AutoModelForCausalLM
    return C.from_pretrained(path, dtype=torch.float32, attn_implementation="autoq_kvq").eval()


def text_layers(model):
    m = model.model
    lm = getattr(m, "language_model", m)
    return len(lm.layers), getattr(m, "language_model", None) is not None


@torch.no_grad()
def kv_scores(path, ids):
    model = load(path)
    L, vl = text_layers(model)
    prefix = "model.language_model." if vl else "model."
    x = torch.tensor(ids, dtype=torch.long)
    STATE["layer"] = -1
    ref = [F.log_softmax(model(input_ids=x[i : i + 1]).logits[0].float(), -1) for i in range(len(x))]
    out = {}
    for fmt in ("kv_fp8", "kv_nvfp4"):
        sc = {}
        for l in range(L):
            STATE["layer"], STATE["fmt"] = l, fmt
            s = 0.0
            for i in range(len(x)):
                q = F.log_softmax(model(input_ids=x[i : i + 1]).logits[0].float(), -1)
                s += float((ref[i].exp() * (ref[i] - q)).sum())
            sc[f"{prefix}layers.{l}.self_attn.kv_cache"] = s
        out[fmt] = sc
    STATE["layer"] = -1
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiny", default="../shared/models/qwen3-tiny")
    args = ap.parse_args()
    fx = "tests/fixtures"
    cases = {
        # qwen3-tiny: the first 2 windows of 64 tokens of its committed ids
        "qwen3-tiny": (args.tiny, np.load(f"{fx}/qwen3_tiny_ids.npy")[:2, :64]),
        "qwen3-vl-tiny": (f"{fx}/qwen3-vl-tiny", np.load(f"{fx}/qwen3_vl_tiny_ids.npy")),
        "qwen3-moe-tiny": (f"{fx}/qwen3-moe-tiny", np.load(f"{fx}/qwen3_moe_tiny_ids.npy")),
    }
    res = {
        "method": "kl",
        "tools": {"torch": torch.__version__, "transformers": transformers.__version__},
        "models": {},
    }
    for name, (path, ids) in cases.items():
        res["models"][name] = {"windows": list(ids.shape), "scores": kv_scores(path, ids)}
        print(name, {f: max(v.values()) for f, v in res["models"][name]["scores"].items()})
    json.dump(res, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()

"""Loads checkpoints written by `autoq quantize` through transformers + compressed-tensors and compares their
logits with `autoq eval --recipe R --logits` of the same recipe (README §10).

    check_quantize_formats.py IDS.npy [--tol T] DIR:EVAL_LOGITS.npy ...

Each DIR must load with no missing or unexpected keys (decompressed: dequantize=True, in its own dtype,
then run in float32 as autoq's CPU engine runs; Qwen3-VL / Qwen3-VL-MoE through AutoModelForImageTextToText,
text only; for Qwen3-VL-MoE the per-expert mapping transformers lacks is registered: per_expert_mapping) and
give logits of the first window of IDS within T (default 1e-3, the issue's bound) of
EVAL_LOGITS.

A checkpoint whose scheme quantizes input activations (int8 or FP8 per token) cannot be held to 1e-3 by
logits: a value on a rounding edge of the 8-bit grid flips a whole step with the GEMMs' last float digits,
so transformers' own float32 and float64 runs of the same checkpoint differ by about as much. For those the
numerics themselves are compared exactly instead: every quantized linear's input, captured in the
transformers run, is quantized by compressed-tensors (forward_quantize) and by README §4's compressed-tensors
formula (int8: s = amax / 127.5, rint, clamp [-128, 127]; FP8: s = amax / 448, E4M3 round-to-nearest-even),
which must agree bit for bit; then the logits must lie within 1.5 x transformers' own float32-vs-float64
spread and the mean NLL within 1e-3 (or 1.5 x that run's own NLL spread, when larger). Prints one line per checkpoint; exits 1 on any failure, 77 when the
packages do not import (the caller SKIPs).
"""
import json
import sys

# On the CPU: flash-linear-attention's Triton kernels (fla-core) need a GPU; where it is installed,
# transformers takes the hybrids' Gated DeltaNet from it unless `import fla` fails, then its own torch path.
sys.modules.setdefault("fla", None)

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    import compressed_tensors  # noqa: F401  (transformers' compressed-tensors quantizer)
    from compressed_tensors.quantization.lifecycle.forward import forward_quantize
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.utils.quantization_config import CompressedTensorsConfig
except Exception as e:  # any import failure: not this machine's packages
    print(f"packages missing: {e}")
    sys.exit(77)


def formula(x, args):
    """README §4, compressed-tensors numerics, per token (the last dimension)."""
    amax = x.abs().amax(-1, keepdim=True)
    if args.type == "float":
        s = amax / 448
        return torch.clamp(x / s, -448, 448).to(torch.float8_e4m3fn).to(x.dtype) * s
    s = amax / 127.5
    return torch.clamp(torch.round(x / s), -128, 127) * s


def per_expert_mapping(cfg):
    """transformers 5.17 merges per-expert tensors into fused experts for qwen3_moe (qwen2_moe's mapping) but
    has no such mapping for qwen3_vl_moe, whose own checkpoints store the experts fused: a checkpoint that
    stores them per expert (llm-compressor's save, and autoq's) needs the same mapping registered."""
    if cfg.get("model_type") != "qwen3_vl_moe":
        return
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
    register_checkpoint_conversion_mapping("qwen3_vl_moe", get_checkpoint_conversion_mapping("qwen2_moe"), overwrite=True)


def nll(logits, ids):
    return F.cross_entropy(torch.as_tensor(logits[:-1]).double(), ids[0, 1:]).item()


def main(argv):
    tol, ids, pairs = 1e-3, None, []
    it = iter(argv)
    for a in it:
        if a == "--tol":
            tol = float(next(it))
        elif ids is None:
            ids = np.load(a)
        else:
            pairs.append(a.rsplit(":", 1))
    x = torch.tensor(ids.reshape(-1, ids.shape[-1])[:1].astype(np.int64))
    bad = 0
    for d, ref in pairs:
        cfg = json.load(open(d + "/config.json"))
        auto = AutoModelForImageTextToText if "vision_config" in cfg else AutoModelForCausalLM
        per_expert_mapping(cfg)
        model, info = auto.from_pretrained(
            d, quantization_config=CompressedTensorsConfig(dequantize=True), output_loading_info=True,
            **({"experts_implementation": "eager"} if "moe" in cfg.get("model_type", "") else {}))  # float64 too
        keys = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys") and v}
        model = model.float().eval()
        qlin = [m for m in model.modules() if getattr(getattr(m, "quantization_scheme", None), "input_activations", None)]
        inputs = {}
        hooks = [m.register_forward_pre_hook(lambda m, a: inputs.setdefault(m, a[0].detach().clone())) for m in qlin]
        with torch.no_grad():
            got = model(input_ids=x).logits[0].double().numpy()
        for h in hooks:
            h.remove()
        want = np.load(ref)
        diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        fmt = cfg["quantization_config"]["format"]
        ok = not keys and diff <= tol
        note = ""
        if qlin and not ok and not keys and got.shape == want.shape:
            qd = max(float((forward_quantize(m, v, "input", m.quantization_scheme.input_activations)
                            - formula(v, m.quantization_scheme.input_activations)).abs().max())
                     for m, v in inputs.items())
            with torch.no_grad():
                f64 = model.double()(input_ids=x).logits[0].double().numpy()
            spread = float(np.abs(f64 - got).max())
            dn, dn_own = abs(nll(got, x) - nll(want, x)), abs(nll(got, x) - nll(f64, x))
            ok = qd == 0.0 and diff <= 1.5 * spread and dn <= max(1e-3, 1.5 * dn_own)
            note = (f"; inputs quantized ({len(inputs)} linears): compressed-tensors vs README §4 max {qd:.3g}, "
                    f"transformers' own float32 vs float64 {spread:.3g} (NLL {dn_own:.2g}), |dNLL| {dn:.2g}")
        bad += not ok
        print(f"{'ok' if ok else 'BAD'} {d}: format {fmt}, max |dlogit| {diff:.3g}{note}"
              f"{', ' + str(keys) if keys else ''}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

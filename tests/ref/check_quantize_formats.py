"""Loads checkpoints written by `autoq quantize` through transformers + compressed-tensors and compares their
logits with `autoq eval --recipe R --logits` of the same recipe (README §10).

    check_quantize_formats.py IDS.npy [--tol T] DIR:EVAL_LOGITS.npy ...

Each DIR must load with no missing or unexpected keys (decompressed: dequantize=True, in its own dtype,
then run in float32 as autoq's CPU engine runs) and give logits of the first window of IDS within T
(default 1e-3, the issue's bound) of EVAL_LOGITS. Prints one line per checkpoint; exits 1 on any failure,
77 when the packages do not import (the caller SKIPs).
"""
import json
import sys

try:
    import numpy as np
    import torch
    import compressed_tensors  # noqa: F401  (transformers' compressed-tensors quantizer)
    from transformers import AutoModelForCausalLM
    from transformers.utils.quantization_config import CompressedTensorsConfig
except Exception as e:  # any import failure: not this machine's packages
    print(f"packages missing: {e}")
    sys.exit(77)


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
        model, info = AutoModelForCausalLM.from_pretrained(
            d, quantization_config=CompressedTensorsConfig(dequantize=True), output_loading_info=True)
        keys = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys") and v}
        model = model.float().eval()
        with torch.no_grad():
            got = model(x).logits[0].float().numpy()
        want = np.load(ref)
        diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        fmt = json.load(open(d + "/config.json"))["quantization_config"]["format"]
        ok = not keys and diff <= tol
        bad += not ok
        print(f"{'ok' if ok else 'BAD'} {d}: format {fmt}, max |dlogit| {diff:.3g}{', ' + str(keys) if keys else ''}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

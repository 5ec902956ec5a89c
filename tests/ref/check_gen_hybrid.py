"""A checkpoint `autoq gen` wrote for a hybrid family loads in transformers as it is: no missing or
unexpected keys, and its float32 logits equal `autoq eval --logits` (the unquantized model's first
window) within a tolerance. Usage: check_gen_hybrid.py MODEL IDS.npy AUTOQ_LOGITS.npy [TOL]
Exit 0 pass, 1 fail, 77 when torch / transformers do not import (the test skips)."""
import sys

# On the CPU: flash-linear-attention's Triton kernels (fla-core) need a GPU; where it is installed,
# transformers takes the hybrids' Gated DeltaNet from it unless `import fla` fails, then its own torch path.
sys.modules.setdefault("fla", None)

try:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM
except Exception as e:  # the test skips, visibly
    print("no torch/transformers: %s" % e)
    sys.exit(77)

model, ids_path, logits_path = sys.argv[1:4]
tol = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-3
m, info = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, output_loading_info=True)
bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
if bad:
    print("loading info: %s" % bad)
    sys.exit(1)
ids = torch.from_numpy(np.load(ids_path)[:1].astype(np.int64))
with torch.no_grad():
    ref = m(ids).logits[0].numpy()
got = np.load(logits_path).reshape(ref.shape)
err = float(np.abs(ref - got).max())
print("%s: %s, max |logit difference| %.3g (tolerance %g)" % (model, type(m).__name__, err, tol))
sys.exit(0 if err <= tol else 1)

"""Per-group scores and chosen recipes from NVIDIA ModelOpt's own auto_quantize on qwen3-tiny.

Needs torch, transformers and nvidia-modelopt (the GPU machine, with wheels carried):
    python3 tests/ref/modelopt_ref.py --model ../shared/models/qwen3-tiny --out tests/fixtures
Uses the 8 x 256 windows in tests/fixtures/qwen3_tiny_ids.npy, batch size 1, the custom W4A8 format of
recipe-mapping.md, method gradient and kl_div, disabled_layers the README §5 default, budgets 4.5 / 4.8 / 6.0.
Writes modelopt_scores.json: for each method, candidate_stats (formats, scores, costs, module names)
and the recipe ModelOpt's search picked at each budget.
"""
import argparse, json, os, time

import numpy as np
import torch
import torch.nn.functional as F

W4A8 = {
    "quant_cfg": {
        "*weight_quantizer": {"num_bits": 4, "axis": 0, "narrow_range": True, "enable": True},
        "*input_quantizer": {"num_bits": 8, "type": "dynamic", "block_sizes": {-1: None},
                             "narrow_range": True, "enable": True},
    },
    "algorithm": "max",
}
DISABLED = ["*lm_head*", "*vpm*", "*resampler*", "*visual*"]


def plain(x):
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, (int, float, str, bool)) or x is None:
        return x
    if torch.is_tensor(x):
        return x.tolist()
    return str(x)


def modelopt_bits(model, budget):
    """ModelOpt counts every quantizable Linear, lm_head included (disabled: 16 bits); autoq's
    default scope counts the candidate linears only. Same bf16/W4A8 split, other denominator."""
    cand = sum(m.weight.numel() for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and "layers." in n)
    head = model.lm_head.weight.numel()
    return (budget * cand + 16.0 * head) / (cand + head)


def run(model_dir, ids, method, budget, dev):
    import modelopt.torch.quantization as mtq
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(dev).eval()
    batches = [torch.tensor(ids[i : i + 1], dtype=torch.long, device=dev) for i in range(ids.shape[0])]

    def forward_step(m, b):
        return m(input_ids=b).logits

    def loss_func(out, b):
        return F.cross_entropy(out[0, :-1].float(), b[0, 1:], reduction="mean")

    mo_budget = modelopt_bits(model, budget)
    t0 = time.time()
    model, state = mtq.auto_quantize(
        model, constraints={"effective_bits": mo_budget}, quantization_formats=[W4A8], data_loader=batches,
        forward_step=forward_step, loss_func=loss_func if method == "gradient" else None,
        disabled_layers=DISABLED, num_calib_steps=len(batches), num_score_steps=len(batches),
        verbose=False, method=method)
    el = time.time() - t0
    return {"seconds": el, "modelopt_effective_bits": mo_budget, "candidate_stats": plain(state.get("candidate_stats", {})),
            "best": plain(state.get("best", {}))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="../shared/models/qwen3-tiny")
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    ids = np.load(os.path.join(args.out, "qwen3_tiny_ids.npy"))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    res = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "budgets": [4.5, 4.8, 6.0]}
    for method in ["gradient", "kl_div"]:
        res[method] = {}
        for b in res["budgets"]:
            r = run(args.model, ids, method, b, dev)
            res[method][str(b)] = r
            print(method, b, "seconds", round(r["seconds"], 2), "score", r["best"].get("score"))
    json.dump(res, open(os.path.join(args.out, "modelopt_scores.json"), "w"), indent=1)


if __name__ == "__main__":
    main()

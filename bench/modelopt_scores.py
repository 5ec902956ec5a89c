"""(c) in bench/gpu_bench.sh: ModelOpt's own auto_quantize scoring on the same checkpoint and data.

usage: modelopt_scores.py MODEL IDS.npy --method kl_div|gradient --batch-size B --out scores.json
Times the whole auto_quantize call (calibration, scoring, search) and reads per-group scores from
its candidate_stats.
"""
import argparse, json, time

import numpy as np
import torch
import torch.nn.functional as F

W4A8 = {"quant_cfg": {"*weight_quantizer": {"num_bits": 4, "axis": 0, "narrow_range": True, "enable": True},
                      "*input_quantizer": {"num_bits": 8, "type": "dynamic", "block_sizes": {-1: None},
                                           "narrow_range": True, "enable": True}},
        "algorithm": "max"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("ids")
    ap.add_argument("--method", default="kl_div")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--out")
    args = ap.parse_args()
    import modelopt.torch.quantization as mtq
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).cuda().eval()
    ids = torch.tensor(np.load(args.ids).astype(np.int64)).cuda()
    batches = [ids[i : i + args.batch_size] for i in range(0, ids.shape[0], args.batch_size)]

    def loss_func(out, b):
        return sum(F.cross_entropy(out[i, :-1].float(), b[i, 1:]) for i in range(b.shape[0]))

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    model, state = mtq.auto_quantize(model, constraints={"effective_bits": 11.0}, quantization_formats=[W4A8],
                                     data_loader=batches, forward_step=lambda m, b: m(input_ids=b).logits,
                                     loss_func=loss_func if args.method == "gradient" else None,
                                     disabled_layers=["*lm_head*"], num_calib_steps=len(batches),
                                     num_score_steps=len(batches), verbose=False, method=args.method)
    torch.cuda.synchronize()
    el = time.time() - t0
    groups = []
    for name, st in state["candidate_stats"].items():
        mods = st["module_names"]
        if not any(".layers." in m for m in mods):
            continue
        f = [i for i, x in enumerate(st["formats"]) if not str(x).startswith("NONE")][0]
        groups.append({"members": mods, "score": float(st["scores"][f])})
    tokens = ids.shape[0] * ids.shape[1]
    res = {"impl": "modelopt", "method": args.method, "seconds": el, "tokens_per_s": tokens / el,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "groups": groups}
    print(f"(c) modelopt {args.method}: {el:.1f} s, {tokens / el:.0f} tokens/s, peak {res['peak_gib']:.1f} GiB")
    if args.out:
        json.dump(res, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()

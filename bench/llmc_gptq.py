"""llm-compressor's own GPTQ, the baseline for `autoq quantize --quantizer gptq` (bench/gptq_bench.sh):
W4A8 as our recipes write it (weights int4 per output channel symmetric static, inputs int8 per token
dynamic symmetric), every decoder linear, lm_head ignored, on the calibration windows of an .npy file
of token ids, time and peak GPU memory measured around oneshot().

usage: llmc_gptq.py MODEL IDS.npy [--num-samples N] [--batch-size B] [--offload cpu|cuda]
                    [--dampening F] [--actorder none|static|group] [--save DIR] [--json OUT.json]

Settings for speed: the model loads onto the GPU in bf16, the sequential pipeline (one decoder layer
at a time, its Hessians from the already quantized layers before it) keeps its activations on the GPU
(--offload cuda, default; llm-compressor's own default is cpu) and calibrates B windows per forward.
"""
import argparse, json, os, time

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("ids")
    ap.add_argument("--num-samples", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--offload", default="cuda")
    ap.add_argument("--dampening", type=float, default=0.01)
    ap.add_argument("--actorder", default=None)
    ap.add_argument("--save")
    ap.add_argument("--json")
    a = ap.parse_args()

    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    from transformers import AutoModelForCausalLM

    ids = np.load(a.ids)[: a.num_samples].astype(np.int64)
    n, T = ids.shape
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": np.ones_like(ids).tolist()})
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16, device_map=dev)
    scheme = {
        "targets": ["Linear"],
        "weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False},
        "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True},
    }
    kw = dict(targets=["Linear"], ignore=["lm_head"], config_groups={"group_0": scheme},
              dampening_frac=a.dampening, block_size=128)
    if a.actorder:
        kw["actorder"] = None if a.actorder == "none" else a.actorder
    recipe = GPTQModifier(**kw)
    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    oneshot(model=model, dataset=ds, recipe=recipe, num_calibration_samples=n, max_seq_length=T,
            batch_size=a.batch_size, shuffle_calibration_samples=False, pipeline="sequential",
            sequential_offload_device=a.offload if dev == "cuda" else "cpu")
    if dev == "cuda":
        torch.cuda.synchronize()
    secs = time.time() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else 0.0
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    out = {"tool": "llmcompressor", "model": a.model, "num_samples": n, "seq_len": T,
           "batch_size": a.batch_size, "offload": a.offload, "dampening": a.dampening,
           "actorder": a.actorder, "seconds": secs, "peak_gib": peak, "weights_gib_after": weights,
           "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu"}
    print(json.dumps(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    if a.save:
        model.save_pretrained(a.save, save_compressed=True)


if __name__ == "__main__":
    main()

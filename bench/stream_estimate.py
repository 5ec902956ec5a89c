#!/usr/bin/env python3
"""The time to score Qwen3-235B-A22B (kl and gradient, N x T) on one GPU from host memory (README
"Streaming"), from measured numbers: the host->GPU bandwidth of the staged copies (GB/s) and the TFLOP/s
that resident runs of the Qwen3-30B-A3B shape reached for kl and for the gradient (what `score` reports
as "TFLOP/s", over the FLOPs counted as scoring/shard_plan.c counts them, mirrored here). The layers
stream once per streamed batch (kl) or twice (gradient); the batch holds the windows whose in-flight
states fit the GPU memory left after two layer slots, lm_head and the engine's buffers; the rest of the
windows' states spill to host memory (not counted: their copies overlap compute).

  python3 bench/stream_estimate.py --bw 25 --kl-tflops 300 --grad-tflops 250 [--gpu-gib 141] [--disk 5]
"""
import argparse
import math

C = dict(D=4096, L=94, H=64, KV=4, hd=128, E=128, K=8, I=1536, V=151936)  # Qwen3-235B-A22B


def layer_flops(c, T):  # per token, one forward pass through a sparse layer (shard_plan.c layer_flops)
    D, hd, H, KV = c["D"], c["hd"], c["H"], c["KV"]
    att = 2 * D * hd * (H + 2 * KV) + 2 * H * hd * D + 2 * 2 * (T / 2) * hd * H
    return att + 2 * D * c["E"] + c["K"] * 3 * 2 * D * c["I"]


def layer_bytes(c):  # bf16 weights of one layer
    D, hd, H, KV = c["D"], c["hd"], c["H"], c["KV"]
    return 2 * (D * hd * (H + 2 * KV) + H * hd * D + 2 * D + 2 * hd + D * c["E"] + c["E"] * 3 * D * c["I"])


def work(c, T, gradient, nf=1):  # FLOPs per token (shard_plan.c plan_work): groups qkv, o, experts per layer
    L, D = c["L"], c["D"]
    lf = layer_flops(c, T)
    head = 2.0 * c["V"] * D
    if gradient:
        qkv = D * c["hd"] * (c["H"] + 2 * c["KV"])
        o = c["H"] * c["hd"] * D
        ex = c["E"] * 3 * D * c["I"]
        groups = (1 + nf) * 2.0 * (qkv + o) + nf * 2.0 * ex * c["K"] / c["E"]
        return L * (3 * lf + groups) + 2 * head
    total = sum((1 + nf * 3 * (l + 1)) * lf for l in range(L))
    return total + (1 + nf * 3 * L) * head


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bw", type=float, required=True, help="host->GPU GB/s of the staged copies")
    p.add_argument("--kl-tflops", type=float, required=True)
    p.add_argument("--grad-tflops", type=float, required=True)
    p.add_argument("--gpu-gib", type=float, default=141.0)
    p.add_argument("--disk", type=float, default=0, help="GB/s from disk when the model exceeds RAM")
    p.add_argument("-n", type=int, default=128)
    p.add_argument("-t", type=int, default=512)
    a = p.parse_args()
    c, n, T = C, a.n, a.t
    lb = layer_bytes(c)
    weights = c["L"] * lb + 2 * 2.0 * c["V"] * c["D"]
    state = 4.0 * T * c["D"]  # one window's state
    print(f"Qwen3-235B-A22B: {weights / 1e9:.0f} GB of bf16 weights, {lb / 1e9:.2f} GB per layer")
    for gradient in (0, 1):
        name = "gradient" if gradient else "kl"
        tf = a.grad_tflops if gradient else a.kl_tflops
        comp = work(c, T, gradient) * n * T / (tf * 1e12)
        fixed = 2 * lb + 2.0 * c["V"] * c["D"] + 8.0 * T * c["V"] + 3 * 2**30  # slots, lm_head, logits, buffers
        per_window = state * (c["L"] + 2 if gradient else 1 + 3 * c["L"])
        fit = max(1, int((a.gpu_gib * 2**30 - fixed) // per_window))
        crossings = (2 if gradient else 1)
        for bw, what in ((a.bw, "page cache"), (a.disk, "disk")):
            if not bw:
                continue
            # the planner's batch: the least time over the run, ceil(n / k) batches of max(copies, compute)
            copy_batch = crossings * c["L"] * lb / (bw * 1e9)
            per_win = comp / n
            k = min(range(1, n + 1), key=lambda k: (math.ceil(n / k) * max(copy_batch, k * per_win), k))
            batches = math.ceil(n / k)
            copies = batches * copy_batch
            t = max(comp, copies) + copy_batch / c["L"]  # the first layer's copy is never hidden
            print(f"{name} {n} x {T} from the {what} ({bw:g} GB/s): compute {comp:.0f} s at {tf:g} TFLOP/s, "
                  f"{batches} streamed batch(es) of {k} windows ({fit} fit the GPU's states; the rest spill), "
                  f"copies {copies:.0f} s -> about {t:.0f} s")
    print(f"host memory: the checkpoint's {weights / 1e9:.0f} GB in the page cache, plus pinned spilled states")


if __name__ == "__main__":
    main()

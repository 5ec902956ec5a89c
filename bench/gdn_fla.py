"""flash-linear-attention's chunk_gated_delta_rule, forward and backward, on one layer of
Qwen3.5-35B-A3B's Gated DeltaNet shape (the reference for bench/gdn_bench.sh): q, k (B, T, Hk, dk),
v (B, T, Hv, dv), log decays g and beta (B, T, Hv), the q / k L2 norm in the kernel. Only the delta
rule (autoq's time also has the conv, SiLU, gates and the gated RMSNorm).
    python3 bench/gdn_fla.py [windows] [T] [samples]"""
import sys

import torch
from fla.ops.gated_delta_rule import chunk_gated_delta_rule


def time_one(B, T, Hk, Hv, dk, dv, dtype, samples):
    dev = "cuda"
    torch.manual_seed(0)
    q = torch.randn(B, T, Hk, dk, device=dev, dtype=dtype, requires_grad=True)
    k = torch.randn(B, T, Hk, dk, device=dev, dtype=dtype, requires_grad=True)
    v = torch.randn(B, T, Hv, dv, device=dev, dtype=dtype, requires_grad=True)
    g = (-torch.rand(B, T, Hv, device=dev, dtype=torch.float32) * 0.5).requires_grad_(True)
    beta = torch.rand(B, T, Hv, device=dev, dtype=dtype).requires_grad_(True)
    do = torch.randn(B, T, Hv, dv, device=dev, dtype=dtype)
    fw, bw = [], []
    for i in range(samples + 2):  # two warm-ups
        e0, e1, e2 = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        e0.record()
        o, _ = chunk_gated_delta_rule(q, k, v, g, beta, use_qk_l2norm_in_kernel=True)
        e1.record()
        try:  # fla 0.6.0 refuses its backward on Hopper with Triton >= 3.4.0, < 3.7.1 (its issue #640)
            if bw is not None:
                o.backward(do)
        except RuntimeError as e:
            print(f"  {str(dtype)[6:]:9s} backward refused: {str(e)[:160]}", flush=True)
            bw = None
        e2.record()
        torch.cuda.synchronize()
        if i >= 2:
            fw.append(e0.elapsed_time(e1))
            if bw is not None:
                bw.append(e1.elapsed_time(e2))
        for t in (q, k, v, g, beta):
            t.grad = None
    return sum(fw) / len(fw), (sum(bw) / len(bw) if bw else float("nan"))


def main():
    B = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    T = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    S = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    import fla

    if not torch.cuda.is_available():
        print("SKIP fla: no CUDA device")
        return
    print(f"fla {getattr(fla, '__version__', '?')} chunk_gated_delta_rule on {torch.cuda.get_device_name()}: "
          f"windows {B}, T {T}, Hk 16, Hv 32, dk 128, dv 128; {S} samples", flush=True)
    for dtype in (torch.bfloat16, torch.float32):
        try:
            f, b = time_one(B, T, 16, 32, 128, 128, dtype, S)
            print(f"  {str(dtype)[6:]:9s} forward {f:8.3f} ms ({f / B:.3f} ms/window), "
                  f"backward {b:8.3f} ms ({b / B:.3f} ms/window)", flush=True)
        except Exception as e:  # fp32 may not be supported by every fla version
            print(f"  {str(dtype)[6:]:9s} failed: {type(e).__name__}: {str(e)[:200]}", flush=True)


if __name__ == "__main__":
    main()

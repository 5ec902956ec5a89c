"""(b) in bench/gpu_bench.sh: per-group W4A8 scores with plain PyTorch + transformers (bf16 model), the
semantics of ModelOpt's auto_quantize (fake quantization on the fly, README §4 numerics), the
way users would write it without autoq: one full forward per group for kl.

usage: torch_scores.py MODEL IDS.npy --method kl|gradient --batch-size B [--dtype bfloat16|float32] --out scores.json

--dtype float32 (TF32 off) gives the reference scores that bf16 rounding does not blur: the accuracy
check of bench/gpu_accuracy.sh.
"""
import argparse, json, time, types

import numpy as np
import torch
import torch.nn.functional as F


def fq(x, bits):
    m = 2 ** (bits - 1) - 1
    amax = x.abs().amax(dim=-1, keepdim=True).float()
    s = amax / m
    q = torch.clamp(torch.round(x.float() / torch.where(amax < 2**-24, 1.0, s)), -m, m)
    return torch.where(amax < 2**-24, 0.0, q * s).to(x.dtype)


def groups_of(model):
    gs = []
    for l, layer in enumerate(model.model.layers):
        p = f"model.layers.{l}."
        a, m = layer.self_attn, layer.mlp
        gs += [(p + "self_attn.qkv", [a.q_proj, a.k_proj, a.v_proj]), (p + "self_attn.o_proj", [a.o_proj]),
               (p + "mlp.gate_up", [m.gate_proj, m.up_proj]), (p + "mlp.down_proj", [m.down_proj])]
    return gs


def patch(mod):
    mod.wq = None

    def fwd(self, x):
        if self.wq is not None:
            return F.linear(fq(x, 8), self.wq)
        return F.linear(x, self.weight)

    mod.forward = types.MethodType(fwd, mod)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("ids")
    ap.add_argument("--method", default="kl")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from transformers import AutoModelForCausalLM

    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype)).cuda().eval()
    load = time.time() - t0
    ids = torch.tensor(np.load(args.ids).astype(np.int64)).cuda()
    gs = groups_of(model)
    for _, ms in gs:
        for m in ms:
            patch(m)
    scores = {n: 0.0 for n, _ in gs}
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    for b0 in range(0, ids.shape[0], args.batch_size):
        x = ids[b0 : b0 + args.batch_size]
        if args.method == "kl":
            with torch.no_grad():
                lp = F.log_softmax(model(input_ids=x).logits.float(), -1)
                p = lp.exp()
                for n, ms in gs:
                    for m in ms:
                        m.wq = fq(m.weight, 4)
                    lq = F.log_softmax(model(input_ids=x).logits.float(), -1)
                    for m in ms:
                        m.wq = None
                    scores[n] += (p * (lp - lq)).sum().item()
        else:
            saved = {}

            def hook(mod, inp, outp):
                outp.retain_grad()
                saved[mod] = (inp[0].detach(), outp)

            hs = [m.register_forward_hook(hook) for _, ms in gs for m in ms]
            for prm in model.parameters():
                prm.requires_grad_(False)
            emb = model.get_input_embeddings()(x).detach().requires_grad_(True)
            logits = model(inputs_embeds=emb).logits.float()
            # per-sample mean next-token CE, summed over the batch (README §6)
            loss = sum(F.cross_entropy(logits[i, :-1], x[i, 1:]) for i in range(x.shape[0]))
            loss.backward()
            for h in hs:
                h.remove()
            with torch.no_grad():
                for n, ms in gs:
                    for m in ms:
                        X, Y = saved[m]
                        dY = F.linear(fq(X, 8), fq(m.weight, 4)).float() - Y.detach().float()
                        scores[n] += ((Y.grad.float() * dY) ** 2).sum().item()
            saved.clear()
    torch.cuda.synchronize()
    el = time.time() - t0
    tokens = ids.shape[0] * ids.shape[1]
    res = {"impl": "pytorch", "dtype": args.dtype, "method": args.method, "seconds": el, "load_seconds": load, "tokens_per_s": tokens / el,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "groups": [{"name": n, "score": s} for n, s in scores.items()]}
    print(f"(b) pytorch {args.dtype} {args.method}: {el:.1f} s, {tokens / el:.0f} tokens/s, peak {res['peak_gib']:.1f} GiB, load {load:.1f} s")
    if args.out:
        json.dump(res, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()

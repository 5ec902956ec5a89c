"""Plain PyTorch + transformers baseline for mixture-of-experts scoring (Qwen3-MoE, e.g. the
Qwen3-30B-A3B shape of `autoq gen --preset 30b-a3b`): per-group W4A8 scores with autoq's semantics
(README §4 numerics, §6 scores), written the way a user would write them without autoq, for
bench/moe_bench.sh. The dense twin is bench/torch_scores.py; the output JSON has its fields, so
bench/compare_scores.py reads both.

usage: torch_moe_scores.py MODEL IDS.npy --method kl|gradient[,...] [--batch-size B]
           [--kl-batch-size B|auto] [--kl-full-forward] [--num-samples N]
           [--kl-num-samples N] [--max-groups G | --group-layers L,L,...] [--extrapolate-windows W]
           [--dtype bfloat16|float32] [--device cuda|cpu] [--loader auto|transformers|direct]
           [--time-limit S] [--out OUT.json]

- The model is transformers' Qwen3MoeForCausalLM: SDPA attention, experts as fused 3-D parameters run
  by transformers' fastest built-in experts backend, grouped_mm (torch.nn.functional.grouped_mm: one
  grouped GEMM for all experts; the hub-kernel backends need downloads), falling back to eager where
  grouped_mm does not take the dtype. --dtype float32 (TF32 off) is the accuracy reference.
- Groups per layer: self_attn.qkv, self_attn.o_proj, and mlp.experts (every expert of a sparse layer:
  weights W4 per output channel, inputs of gate/up and of down A8 per token, the router reading the
  unquantized input), or mlp.gate_up and mlp.down_proj for a dense layer (mlp_only_layers).
- gradient: one forward + backward per batch, gradients with respect to activations only; linear
  groups sum (dL/dY * (Yq - Y))^2 over their linears, the experts group takes Y = the sparse block's
  output before the residual add and Yq = the same block with every expert quantized on the same
  routing. L = per-window mean next-token cross-entropy. --batch-size is the largest tried: on an
  out-of-memory error in the first batch it halves and starts again (the JSON says which one ran).
- kl: per batch one unquantized forward that keeps each decoder layer's input, then per group only
  that group's suffix of layers (from the reference's input to its layer) with only that group
  quantized, the final norm and lm_head (prefix reuse; --kl-full-forward runs a full forward per
  group instead, the old baseline); KL(P||Q) summed over positions and vocabulary in fp32.
  --kl-batch-size auto (default) takes the fastest batch per window, searched as
  bench/torch_scores.py does. --max-groups (or --group-layers) scores a subset of the groups and
  --extrapolate-windows W gives the time all groups over W windows would take (each pass's cost in
  decoder layers: the reference's L + 1, a group of layer l's L - l + 1).
- --method kl,gradient runs both on one loaded model (loading 57 GiB is slow); --out then takes
  '{method}' in its path. --time-limit S starts no batch that would end more than S seconds after
  the start: the JSON then holds the windows done (num_samples) and their time.
"""
import argparse, gc, importlib.util, json, os, resource, time, types

import numpy as np
import torch
import torch.nn.functional as F

from torch_scores import Dev  # now(): seconds, after the GPU's queued work
from torch_scores import auto_batch  # the fastest batch per window, as the dense baseline picks it
from torch_scores import forward_keeping_inputs, suffix_logits  # prefix reuse, as the dense baseline
from torch_scores import patch as patch_linear  # a linear with fake-quantized weights and inputs


def fq(x, bits):
    """README §4: symmetric, narrow range, amax over the last dimension (per output channel for a
    weight, per token for an input); x / s in fp32, rounded half to even; amax < 2^-24 gives 0.
    Written to touch large expert weights few times: x / s promotes to fp32 once, the rest in place."""
    m = 2 ** (bits - 1) - 1
    amax = x.abs().amax(dim=-1, keepdim=True).float()
    tiny = amax < 2**-24
    s = amax / m
    q = torch.div(x, torch.where(tiny, 1.0, s)).round_().clamp_(-m, m).mul_(s)
    return q.masked_fill_(tiny, 0.0).to(x.dtype)


GMM = {"ok": None}


def gmm(x, w, offs):
    """x (S, K) sorted by expert, w (E, N, K), offs (E,) int32 ends -> (S, N) = x @ w[e].T per expert."""
    if GMM["ok"]:
        return F.grouped_mm(x, w.transpose(-2, -1), offs=offs)
    out = x.new_empty(x.shape[0], w.shape[1])
    start = 0
    for e, end in enumerate(offs.tolist()):
        if end > start:
            torch.mm(x[start:end], w[e].T, out=out[start:end])
        start = end
    return out


def grouped_mm_works(device, dtype):
    if not hasattr(F, "grouped_mm"):
        return False
    try:
        x = torch.randn(24, 64, device=device, dtype=dtype)
        w = torch.randn(3, 32, 64, device=device, dtype=dtype)
        offs = torch.tensor([8, 8, 24], device=device, dtype=torch.int32)
        y = F.grouped_mm(x, w.transpose(-2, -1), offs=offs)
        ref = torch.cat([x[:8] @ w[0].T, x[8:] @ w[2].T])
        return bool((y.float() - ref.float()).abs().max() <= 1e-2 * ref.float().abs().max())
    except Exception:
        return False


def experts_quantized(ex, x, idx, w):
    """The experts of one sparse block with every expert's weights (ex.q, quantized once per group
    and batch) and inputs fake-quantized; x (N, D), idx / w (N, K) the router's choice on the
    unquantized x. The same steps as transformers' grouped_mm backend, so Yq - Y is quantization."""
    gu, dn = ex.q
    n, k = idx.shape
    eid, perm = torch.sort(idx.reshape(-1))
    xs = fq(x, 8)[perm // k]  # per-token quantization commutes with the gather
    offs = torch.cumsum(torch.bincount(eid, minlength=gu.shape[0]), 0, dtype=torch.int32)
    g, u = gmm(xs, gu, offs).chunk(2, dim=-1)  # (S, I) each; gate rows first (transformers 5 layout)
    y = gmm(fq(ex.act_fn(g) * u, 8), dn, offs) * w.reshape(-1)[perm, None]
    out = torch.empty_like(y)
    out[perm] = y
    return out.view(n, k, -1).sum(dim=1).to(x.dtype)  # each token's K outputs, as transformers sums them


def patch_experts(ex):
    ex.q = None
    plain = ex.forward  # transformers' dispatch to the configured experts backend

    def fwd(self, x, idx, w):
        return experts_quantized(self, x, idx, w) if self.q is not None else plain(x, idx, w)

    ex.forward = types.MethodType(fwd, ex)


def groups_of(model):
    """(name, linears, sparse block or None) per group, in autoq's order (README §5)."""
    gs = []
    for l, layer in enumerate(model.model.layers):
        p = f"model.layers.{l}."
        a, m = layer.self_attn, layer.mlp
        gs.append((p + "self_attn.qkv", [a.q_proj, a.k_proj, a.v_proj], None))
        gs.append((p + "self_attn.o_proj", [a.o_proj], None))
        if hasattr(m, "experts"):
            gs.append((p + "mlp.experts", [], m))
        else:
            gs.append((p + "mlp.gate_up", [m.gate_proj, m.up_proj], None))
            gs.append((p + "mlp.down_proj", [m.down_proj], None))
    return gs


def set_quant(ms, blk, on):
    for m in ms:
        m.wq = fq(m.weight, 4) if on else None
    if blk is not None:
        ex = blk.experts
        ex.q = (fq(ex.gate_up_proj, 4), fq(ex.down_proj, 4)) if on else None


def layer_of(name):
    return int(name.split(".")[2])


def pick_groups(gs, max_groups, group_layers):
    """All groups, or those of the listed layers, or of evenly spaced layers (first and last
    included) up to max_groups: every kind of group is timed, not only one."""
    if group_layers:
        keep = {int(x) for x in group_layers.split(",")}
        return [g for g in gs if layer_of(g[0]) in keep]
    if not max_groups or max_groups >= len(gs):
        return gs
    nl = layer_of(gs[-1][0]) + 1
    per = max(1, round(len(gs) / nl))
    want = max(1, min(nl, -(-max_groups // per)))
    keep = sorted({round(i * (nl - 1) / max(1, want - 1)) for i in range(want)})
    return [g for g in gs if layer_of(g[0]) in keep][:max_groups]


def load_direct(path, dt, dev, experts_impl):
    """Qwen3MoeForCausalLM built on the device and filled from the safetensors files tensor by tensor,
    with no host copy of the model (from_pretrained goes through host memory unless accelerate is
    installed, and 57 GiB there beside a 57 GiB checkpoint in /dev/shm may not fit). Per-expert
    tensors go where transformers 5's own conversion puts them: gate rows then up rows of
    mlp.experts.gate_up_proj (E, 2I, D), down_proj stacked (E, D, I)."""
    import glob, re

    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(path)
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dt, attn_implementation="sdpa",
                                                 experts_implementation=experts_impl)
    params = dict(model.named_parameters())
    inter = cfg.moe_intermediate_size
    expert = re.compile(r"(.*\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$")
    filled = set()
    with torch.no_grad():
        for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
            with safe_open(f, "pt") as st:
                for k in st.keys():
                    t = st.get_tensor(k)
                    m = expert.match(k)
                    if m:
                        e, kind = int(m.group(2)), m.group(3)
                        if kind == "down":
                            name, dst = m.group(1) + ".down_proj", params[m.group(1) + ".down_proj"][e]
                        else:
                            name = m.group(1) + ".gate_up_proj"
                            dst = params[name][e, :inter] if kind == "gate" else params[name][e, inter:]
                    else:
                        name, dst = k, params[k]
                    dst.copy_(t)
                    filled.add(name)
    if cfg.tie_word_embeddings:
        model.tie_weights()
        filled.add("lm_head.weight")
    missing = set(params) - filled
    if missing:
        raise SystemExit(f"{path}: no tensor for {sorted(missing)[:5]}")
    return model


@torch.no_grad()
def kl_batch(model, x, gs, full_forward=False):
    """This batch's KL per group (floats, in gs order): with prefix reuse (the default) each group
    runs only its suffix of layers from the reference's input to its layer (bench/torch_scores.py's
    forward_keeping_inputs and suffix_logits), so it costs its suffix instead of a full forward;
    full_forward=True runs a whole forward per group (the old baseline)."""
    logits, caps = forward_keeping_inputs(model, x, not full_forward)
    lp = F.log_softmax(logits, -1, dtype=torch.float32)
    del logits
    p = lp.exp()
    out = []
    for n, ms, blk in gs:
        set_quant(ms, blk, True)
        try:
            lg = model(input_ids=x, use_cache=False).logits if full_forward else suffix_logits(model, caps, layer_of(n))
        finally:
            set_quant(ms, blk, False)
        lq = F.log_softmax(lg, -1, dtype=torch.float32)
        del lg
        out.append(lq.neg_().add_(lp).mul_(p).sum())  # = (p * (lp - lq)).sum()
        del lq
    del lp, p
    return torch.stack(out).tolist() if out else []  # one device sync per batch


def run_kl(model, ids, gs, bs, clock, deadline, full_forward):
    """Scores, seconds, and windows done (fewer than asked when the next batch would end past the
    deadline)."""
    scores = {n: 0.0 for n, _, _ in gs}
    t = 0.0
    done = 0
    for b0 in range(0, ids.shape[0], bs):
        if done and time.time() + t / done * bs > deadline:
            break
        x = ids[b0 : b0 + bs]
        t0 = clock.now()
        vals = kl_batch(model, x, gs, full_forward)
        t += clock.now() - t0
        for (n, _, _), v in zip(gs, vals):
            scores[n] += v
        done += x.shape[0]
    return scores, t, done


def kl_cost(gs, nl, full_forward):
    """Passes' cost in units of one decoder layer (+1 for the head each pass runs): the
    extrapolation from a subset of groups to all of them."""
    return sum((nl if full_forward else nl - layer_of(n)) + 1 for n, _, _ in gs)


def run_gradient_batch(model, x, gs, scores):
    saved = {}

    def hook(mod, inp, outp):
        outp.retain_grad()
        saved[mod] = (inp[0].detach(), outp)

    mods = [m for _, ms, _ in gs for m in ms] + [blk for _, _, blk in gs if blk is not None]
    hs = [m.register_forward_hook(hook) for m in mods]
    try:
        emb = model.get_input_embeddings()(x).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb, use_cache=False).logits.float()
        # per-sample mean next-token CE, summed over the batch (README §6)
        loss = sum(F.cross_entropy(logits[i, :-1], x[i, 1:]) for i in range(x.shape[0]))
        del logits
        loss.backward()
    finally:
        for h in hs:
            h.remove()
    with torch.no_grad():
        for n, ms, blk in gs:
            for m in ms:
                X, Y = saved[m]
                dY = F.linear(fq(X, 8), fq(m.weight, 4)).float() - Y.detach().float()
                scores[n] += ((Y.grad.float() * dY) ** 2).sum().item()
            if blk is not None:
                X, Y = saved[blk]
                set_quant([], blk, True)
                dY = blk(X).float() - Y.detach().float()  # the router reads X unquantized: same routing
                set_quant([], blk, False)
                scores[n] += ((Y.grad.float() * dY) ** 2).sum().item()
    saved.clear()


def run_gradient(model, ids, gs, bs, clock, dev, deadline):
    """Scores, seconds, the batch size that ran, those tried, and windows done (fewer than asked
    when the next batch would end past the deadline)."""
    for prm in model.parameters():
        prm.requires_grad_(False)
    tried = []
    while True:
        tried.append(bs)
        scores = {n: 0.0 for n, _, _ in gs}
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = clock.now()
        done = 0
        try:
            for b0 in range(0, ids.shape[0], bs):
                if done and time.time() + (clock.now() - t0) / done * bs > deadline:
                    break
                x = ids[b0 : b0 + bs]
                run_gradient_batch(model, x, gs, scores)
                done += x.shape[0]
            return scores, clock.now() - t0, bs, tried, done
        except torch.OutOfMemoryError:
            if done or bs == 1:
                raise
        # out of the except block, so the failed batch's tensors are free before the retry
        print(f"(b) pytorch gradient: batch {bs} runs out of memory; trying {bs // 2}", flush=True)
        bs //= 2
        gc.collect()
        torch.cuda.empty_cache()


def peak_gib(dev):
    if dev == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # host RSS on the CPU


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("ids")
    ap.add_argument("--method", default="kl", help="kl, gradient, or both as 'gradient,kl'")
    ap.add_argument("--batch-size", type=int, default=4, help="gradient: the largest batch tried")
    ap.add_argument("--kl-batch-size", default="auto",
                    help="kl: windows per batch, or 'auto': the fastest per window (bench/torch_scores.py's search)")
    ap.add_argument("--kl-full-forward", action="store_true",
                    help="kl: a full forward per group (the old baseline) instead of prefix reuse")
    ap.add_argument("--num-samples", type=int, default=0, help="first N windows (0: all)")
    ap.add_argument("--kl-num-samples", type=int, default=0, help="windows for kl (default --num-samples)")
    ap.add_argument("--max-groups", type=int, default=0, help="kl: score this many groups (0: all)")
    ap.add_argument("--group-layers", default="", help="kl: score the groups of these layers only")
    ap.add_argument("--extrapolate-windows", type=int, default=0, help="kl: report the time for all groups x W")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--loader", default="auto", choices=["auto", "transformers", "direct"],
                    help="auto: from_pretrained, or load_direct on a GPU without accelerate")
    ap.add_argument("--time-limit", type=float, default=0,
                    help="seconds from the start: no batch starts that would end later (0: none)")
    ap.add_argument("--out", help="JSON; with several methods its path must hold '{method}'")
    args = ap.parse_args()
    methods = args.method.split(",")
    if any(m not in ("kl", "gradient") for m in methods):
        ap.error("--method takes kl, gradient or both")
    if args.out and len(methods) > 1 and "{method}" not in args.out:
        ap.error("--out needs '{method}' in its path when --method names several")
    t_start = time.time()
    deadline = t_start + args.time_limit if args.time_limit > 0 else float("inf")
    dev, dt = args.device, getattr(torch, args.dtype)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    GMM["ok"] = grouped_mm_works(dev, dt)
    experts_impl = "grouped_mm" if GMM["ok"] else "eager"
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()  # keeps logs small: one bar step per tensor

    clock = Dev(dev)
    t0 = clock.now()
    # from_pretrained, straight onto the GPU where accelerate is installed (device_map needs it);
    # on a GPU without accelerate, load_direct (no host copy of the model).
    loader = args.loader
    if loader == "auto":
        loader = "direct" if dev == "cuda" and importlib.util.find_spec("accelerate") is None else "transformers"
    if loader == "direct":
        model = load_direct(args.model, dt, dev, experts_impl)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dt, attn_implementation="sdpa",
                                                     experts_implementation=experts_impl,
                                                     **({"device_map": dev} if dev == "cuda" else {}))
    model = model.to(dev).eval()
    load = clock.now() - t0
    ids_all = torch.tensor(np.load(args.ids).astype(np.int64), device=dev)
    gs_all = groups_of(model)
    for _, ms, blk in gs_all:
        for m in ms:
            patch_linear(m)
        if blk is not None:
            patch_experts(blk.experts)
    settings = {"torch": torch.__version__, "transformers": transformers.__version__, "device": dev,
                "device_name": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                "attn_implementation": model.config._attn_implementation,
                "experts_implementation": model.config._experts_implementation,
                "quantized_experts": "torch.nn.functional.grouped_mm" if GMM["ok"] else "per-expert torch.mm loop",
                "tf32": False, "dtype": args.dtype, "loader": loader}
    print(f"(b) pytorch: loaded {args.model} in {load:.1f} s: {settings}", flush=True)
    with torch.no_grad():  # warm-up (kernel loading, cuBLAS handles), outside every timing
        model(input_ids=ids_all[: min(args.batch_size, ids_all.shape[0])], use_cache=False)
    for method in methods:
        n = (args.kl_num_samples if method == "kl" and args.kl_num_samples else args.num_samples) or ids_all.shape[0]
        ids = ids_all[:n]
        if dev == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        res = {"impl": "pytorch", "dtype": args.dtype, "method": method, "load_seconds": load, "settings": settings,
               "num_samples": int(ids.shape[0]), "seq_len": int(ids.shape[1])}
        if method == "kl":
            gs = pick_groups(gs_all, args.max_groups, args.group_layers)
            nl = len(model.model.layers)
            auto = None
            if args.kl_batch_size == "auto":  # times the reference + layer 0's groups (the longest suffixes)
                first = [g for g in gs_all if layer_of(g[0]) == 0]
                kbs, rows, why = auto_batch(lambda b: kl_batch(model, ids[:b], first, args.kl_full_forward),
                                            int(ids.shape[0]), clock)
                auto = {"tried": rows, "why": why}
                print(f"(b) pytorch kl: batch size auto: using {kbs} ({why})", flush=True)
            else:
                kbs = int(args.kl_batch_size)
                kl_batch(model, ids[: min(kbs, ids.shape[0])], gs[:1], args.kl_full_forward)  # warm-up
            clock.free_cache()
            clock.reset_peak()
            scores, el, done = run_kl(model, ids, gs, kbs, clock, deadline, args.kl_full_forward)
            w = args.extrapolate_windows or ids.shape[0]
            # in decoder-layer units: the reference forward (nl + head) plus each group's suffix + head
            share = (nl + 1 + kl_cost(gs_all, nl, args.kl_full_forward)) / (nl + 1 + kl_cost(gs, nl, args.kl_full_forward))
            est = el * share * w / max(done, 1)
            res.update({"batch_size": kbs, "batch_size_auto": auto, "prefix_reuse": not args.kl_full_forward,
                        "groups_scored": len(gs), "groups_total": len(gs_all),
                        "extrapolated": {"windows": w, "groups": len(gs_all), "seconds": est,
                                         "tokens_per_s": w * ids.shape[1] / est}})
            note = (f"; all {len(gs_all)} groups x {w} windows extrapolated: {est:.1f} s"
                    if len(gs) < len(gs_all) or w != done else "")
            note += f", batch {kbs}, {'full forward per group' if args.kl_full_forward else 'prefix reuse'}"
        else:
            gs = gs_all
            scores, el, bs, tried, done = run_gradient(model, ids, gs, args.batch_size, clock, dev, deadline)
            res.update({"batch_size": bs, "batch_sizes_tried": tried})
            note = f", batch {bs}"
        if done < ids.shape[0]:
            note += f"; stopped after {done} of {ids.shape[0]} windows (--time-limit)"
        tokens = done * ids.shape[1]
        res.update({"num_samples": done, "num_samples_asked": int(ids.shape[0]), "seconds": el,
                    "tokens_per_s": tokens / el if el > 0 else 0.0, "peak_gib": peak_gib(dev),
                    "groups": [{"name": n_, "score": s} for n_, s in scores.items()]})
        mem = "GPU" if dev == "cuda" else "RSS"
        print(f"(b) pytorch {args.dtype} {method}: {done} x {ids.shape[1]} tokens, {len(gs)} groups in "
              f"{el:.1f} s ({tokens / el:.0f} tokens/s), peak {mem} {res['peak_gib']:.2f} GiB, load {load:.1f} s{note}",
              flush=True)
        if args.out:
            path = args.out.replace("{method}", method)
            with open(path + ".tmp", "w") as f:
                json.dump(res, f, indent=1)
            os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()

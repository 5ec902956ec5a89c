"""(b) in bench/gpu_bench.sh: per-group W4A8 scores with plain PyTorch + transformers, the semantics of
ModelOpt's auto_quantize (fake quantization on the fly, README §4 numerics, §6 scores), written to be
as fast as plain PyTorch reasonably gets, so that autoq is measured against an honest baseline.

usage: torch_scores.py MODEL IDS.npy --method kl|gradient [--batch-size B|auto] [--dtype bfloat16|float32]
           [--device cuda|cpu] [--num-samples N] [--compile] [--kl-full-forward] [--out scores.json]

Settings (all written into the JSON under "settings"):
- transformers' Qwen3ForCausalLM with attn_implementation="sdpa" (causal, no mask tensor: flash or
  memory-efficient kernels on a GPU), the model in --dtype on the device, use_cache=False (no KV cache
  is built), TF32 off for matmuls and cuDNN, float32 matmul precision "highest". bf16 GEMMs keep
  PyTorch's default for reduced-precision reductions (recorded as allow_bf16_reduced_precision_reduction).
- Fake quantization: every linear's W4 weights (per output channel) are computed once, before the
  timed loop, and swapped in for the group being scored (m.wq); A8 inputs are quantized per token in
  the linear's patched forward. --dtype float32 (TF32 off) gives the reference scores that bf16
  rounding does not blur: the accuracy check of bench/gpu_accuracy.sh.
- kl: per batch one unquantized forward keeps the fp32 log-probabilities and the input of every
  decoder layer; the pass of a group of layer l then starts from the cached input of layer l (the
  layers before it see no quantization, so their output is the reference's, bit for bit) and runs
  layers l.., the final norm and lm_head. --kl-full-forward runs the whole model per group instead
  (the previous version of this script). KL(P||Q) = sum P (log P - log Q) in fp32 over all positions.
- gradient: one forward + backward per batch (gradients with respect to activations only: weights do
  not require grad); each linear's (dL/dY * (f_q(X) - Y))^2, summed in fp32, is computed in a hook on
  Y as soon as dL/dY is known, so no gradient is retained and X, Y are released during the backward.
  L = per-window mean next-token cross-entropy, summed over the batch. Scores add up in float64 in
  the same order as before (batch, group, member).
- --batch-size auto: tries 1, 2, 4, ... windows on the first windows (one warm-up call and one timed
  call each, results discarded), stops at the first size that runs out of memory, would not fit by a
  linear extrapolation of the measured peak, or is not 2% faster per window than the best so far,
  and uses the best (kl times the reference pass and layer 0's four group passes, not all groups). The choice, and why, is printed and written into the JSON.
- --compile: torch.compile on every decoder layer (the patched linears are excluded from the graphs,
  so switching the quantized group causes no recompilation) and on the fake-quant and gradient-term
  functions; if compiling fails the run goes on in eager mode and the JSON says so. Inductor's fused
  kernels round differently (float32 on the CPU: scores within 2e-5 (gradient) and 1.3e-4 (kl) of
  eager), so the float32 accuracy reference runs without it.
- Timing covers the scoring loop only: not the load, the quantized-weight preparation (timed apart as
  prepare_seconds), the auto batch search, or the warm-up batch (one untimed batch before the loop,
  so that CUDA/cuBLAS initialisation and compilation are not counted).
"""
import argparse, gc, json, os, time, types

import numpy as np
import torch
import torch.nn.functional as F


def fq(x, bits):
    """README §4: symmetric, narrow range, amax over the last dimension (per output channel for a
    weight, per token for an input); x / s in fp32, rounded half to even; amax < 2^-24 gives 0.
    The same values as x.float() / s, round, clamp, * s, with fewer passes over memory: the inf-norm
    is the exact amax, x / s promotes to fp32 once and the rest runs in place."""
    m = 2 ** (bits - 1) - 1
    amax = torch.linalg.vector_norm(x, float("inf"), dim=-1, keepdim=True).float()
    tiny = amax < 2**-24
    s = amax / m
    q = torch.div(x, torch.where(tiny, 1.0, s)).round_().clamp_(-m, m).mul_(s)
    return q.masked_fill_(tiny, 0.0).to(x.dtype)


def grad_term(xq, wq, y, g):
    """sum over elements of (dL/dY * (f_q(X) - Y))^2 in fp32, f_q(X) = linear(fq(X, 8), fq(W, 4)):
    the same operations as ((g.float() * (F.linear(xq, wq).float() - y.float())) ** 2).sum(), in place."""
    d = F.linear(xq, wq).float()  # a new tensor (for a float32 model .float() returns it unchanged)
    return d.sub_(y).mul_(g).square_().sum()


# Replaced by compiled versions under --compile.
FQ = {"fq": fq, "grad_term": grad_term}


def groups_of(model):
    gs = []
    for l, layer in enumerate(model.model.layers):
        p = f"model.layers.{l}."
        a, m = layer.self_attn, layer.mlp
        gs += [(p + "self_attn.qkv", [a.q_proj, a.k_proj, a.v_proj]), (p + "self_attn.o_proj", [a.o_proj]),
               (p + "mlp.gate_up", [m.gate_proj, m.up_proj]), (p + "mlp.down_proj", [m.down_proj])]
    return gs


def patch(mod, no_compile=False):
    """A linear whose weights and inputs are fake-quantized while mod.wq holds its quantized weights
    (bench/torch_moe_scores.py uses this too), and which hands (module, X, Y) to mod.tap when set
    (the gradient score). no_compile keeps it out of torch.compile's graphs: its Python branches
    would otherwise be guards, and every change of the scored group a recompilation."""
    mod.wq = None
    mod.tap = None

    def fwd(self, x):
        if self.wq is not None:
            return F.linear(FQ["fq"](x, 8), self.wq)
        y = F.linear(x, self.weight)
        if self.tap is not None:
            self.tap(self, x, y)
        return y

    if no_compile:
        fwd = torch.compiler.disable(fwd)
    mod.forward = types.MethodType(fwd, mod)


# --------------------------------------------------------------------------------------------------
# kl


def forward_keeping_inputs(model, x, keep=True):
    """The unquantized logits and, with keep, each decoder layer's input and keyword arguments
    (position embeddings, mask): what prefix reuse starts a group's pass from."""
    layers = model.model.layers
    caps = [None] * len(layers)

    def cap(mod, args, kwargs, l):  # the input of decoder layer l and its keyword arguments
        h = args[0] if args else kwargs["hidden_states"]
        caps[l] = (h, {k: v for k, v in kwargs.items() if k != "hidden_states"})

    hs = [layer.register_forward_pre_hook(lambda mod, a, kw, l=l: cap(mod, a, kw, l), with_kwargs=True)
          for l, layer in enumerate(layers)] if keep else []
    try:
        logits = model(input_ids=x, use_cache=False).logits
    finally:
        for h in hs:
            h.remove()
    return logits, caps


def suffix_logits(model, caps, l):
    """Layers l.. from the reference's input to layer l, then the final norm and lm_head, as
    Qwen3ForCausalLM / Qwen3MoeForCausalLM do (logits_to_keep=0): the layers before l see no quantized
    weight, so their output is the reference's."""
    h, kw = caps[l]
    for layer in model.model.layers[l:]:
        h = layer(h, **kw)
        h = h[0] if isinstance(h, tuple) else h
    return model.lm_head(model.model.norm(h))


def kl_batch(model, x, gs, wq, full_forward=False, layers_only=None):
    """This batch's KL per group (0-dim fp32 tensors, in gs order; groups of layers outside
    layers_only are skipped: the auto batch search times only a few)."""
    logits, caps = forward_keeping_inputs(model, x, not full_forward)
    lp = F.log_softmax(logits, -1, dtype=torch.float32)
    del logits
    p = lp.exp()
    out = []
    for n, ms in gs:
        l = int(n.split(".")[2])
        if layers_only is not None and l not in layers_only:
            continue
        for m in ms:
            m.wq = wq[m]
        try:
            lg = model(input_ids=x, use_cache=False).logits if full_forward else suffix_logits(model, caps, l)
        finally:
            for m in ms:
                m.wq = None
        lq = F.log_softmax(lg, -1, dtype=torch.float32)
        del lg
        out.append(lq.neg_().add_(lp).mul_(p).sum())  # = (p * (lp - lq)).sum(), bit for bit
        del lq
    return out


# --------------------------------------------------------------------------------------------------
# gradient


def gradient_batch(model, x, lins, wq):
    """Each linear's (dL/dY * (f_q(X) - Y))^2 summed (0-dim fp32 tensors, in lins order)."""
    idx = {m: i for i, m in enumerate(lins)}
    parts = [None] * len(lins)
    # id(X) -> [X, fq(X) once computed, linears still to score, X itself]: q/k/v and gate/up share
    # X. The last slot keeps the Python object alive for the whole pass, so that its id is not
    # reused by a later tensor (an input such as down_proj's is otherwise a freed temporary).
    xs = {}

    def tap(mod, X, Y):
        e = xs.setdefault(id(X), [X.detach(), None, 0, X])
        e[2] += 1
        i, Yd = idx[mod], Y.detach()  # Yd: no reference from the hook back to Y's autograd node

        def on_grad(G):
            if e[1] is None:
                e[1] = FQ["fq"](e[0], 8)
            parts[i] = FQ["grad_term"](e[1], wq[mod], Yd, G)
            e[2] -= 1
            if e[2] == 0:
                e[0] = e[1] = None  # e[3] stays until the pass ends (autograd keeps X anyway)

        Y.register_hook(on_grad)

    for m in lins:
        m.tap = tap
    try:
        emb = model.get_input_embeddings()(x).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb, use_cache=False).logits.float()
        # per-sample mean next-token CE, summed over the batch (README §6)
        loss = sum(F.cross_entropy(logits[i, :-1], x[i, 1:]) for i in range(x.shape[0]))
        del logits
        loss.backward()
    finally:
        for m in lins:
            m.tap = None
        xs.clear()
    return parts


# --------------------------------------------------------------------------------------------------
# memory and timing


class Dev:
    def __init__(self, dev):
        self.dev = dev

    def now(self):
        if self.dev == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def reset_peak(self):
        if self.dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            try:  # resets VmHWM (Linux): the peak RSS from here on
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass

    @staticmethod
    def _status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        return 0

    def peak(self):
        """Bytes: torch.cuda.max_memory_allocated, or the peak RSS on the CPU."""
        return torch.cuda.max_memory_allocated() if self.dev == "cuda" else self._status("VmHWM:")

    def current(self):
        return torch.cuda.memory_allocated() if self.dev == "cuda" else self._status("VmRSS:")

    def limit(self):
        """Bytes this process may reach: what it holds plus what is free (90% of it)."""
        if self.dev == "cuda":
            free, _ = torch.cuda.mem_get_info()
            return torch.cuda.memory_reserved() + 0.9 * free
        with open("/proc/meminfo") as f:
            avail = next(int(l.split()[1]) * 1024 for l in f if l.startswith("MemAvailable:"))
        return self.current() + 0.9 * avail

    def free_cache(self):
        gc.collect()
        if self.dev == "cuda":
            torch.cuda.empty_cache()


def is_oom(e):
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "memory" in str(e).lower())


def auto_batch(step, n, dev):
    """Times step(b) (one batch of b windows) for b = 1, 2, 4, ...; returns the fastest b, the
    measurements and the reason the search stopped."""
    cands = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= n]
    if n not in cands and n < 64:
        cands.append(n)
    rows, best, why = [], None, f"tried every size up to {cands[-1]} (of {n} windows)"
    base = dev.current()
    for k, b in enumerate(cands):
        failed = None
        try:
            dev.reset_peak()
            step(b)  # warm-up (allocator, kernels, compilation for this shape): discarded
            t0 = dev.now()
            step(b)
            t = dev.now() - t0
        except Exception as e:  # out of memory: stop here (handled outside the except block)
            if not is_oom(e):
                raise
            failed = type(e).__name__
        if failed:
            dev.free_cache()
            rows.append({"batch": b, "status": "out of memory"})
            why = f"batch {b} ran out of memory"
            break
        peak = dev.peak()
        rows.append({"batch": b, "seconds_per_window": t / b, "peak_gib": peak / 2**30})
        print(f"(b) pytorch: batch size auto: batch {b}: {t / b * 1e3:.1f} ms per window, peak {peak / 2**30:.2f} GiB",
              flush=True)
        if best is None or t / b < 0.98 * best[1]:  # a larger batch must gain 2% to be worth its memory
            best = (b, t / b)
        else:
            why = f"batch {b} was not 2% faster per window than batch {best[0]}"
            break
        if k + 1 < len(cands):
            nb = cands[k + 1]
            pred = base + (peak - base) * nb / b  # activations grow linearly with the batch
            if pred > dev.limit():
                why = f"batch {nb} would need about {pred / 2**30:.1f} GiB, over the {dev.limit() / 2**30:.1f} GiB available"
                break
    if best is None:
        raise SystemExit("(b) pytorch: even batch 1 runs out of memory")
    dev.free_cache()
    return best[0], rows, why


# --------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("ids")
    ap.add_argument("--method", default="kl", choices=["kl", "gradient"])
    ap.add_argument("--batch-size", default="4", help="windows per batch, or 'auto'")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--num-samples", type=int, default=0, help="first N windows (0: all)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the decoder layers and the fake-quant code")
    ap.add_argument("--kl-full-forward", action="store_true", help="kl: a whole forward per group (no cached layer inputs)")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.batch_size != "auto" and not (args.batch_size.isdigit() and int(args.batch_size) > 0):
        ap.error("--batch-size takes a positive integer or 'auto'")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()
    d, dt = args.device, getattr(torch, args.dtype)
    dev = Dev(d)

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dt, attn_implementation="sdpa").to(d).eval()
    load = dev.now() - t0
    for prm in model.parameters():  # gradients with respect to activations only
        prm.requires_grad_(False)
    ids = torch.tensor(np.load(args.ids).astype(np.int64), device=d)
    if args.num_samples:
        ids = ids[: args.num_samples]
    n, seq = ids.shape
    gs = groups_of(model)
    lins = [m for _, ms in gs for m in ms]
    for m in lins:
        patch(m, no_compile=args.compile)

    compiled = "not requested"
    if args.compile:
        # one graph set per batch shape (dynamic=False: static shapes give the best kernels); the
        # auto search and a last partial batch add shapes, hence the higher recompilation limit
        for k in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
            if hasattr(torch._dynamo.config, k):
                setattr(torch._dynamo.config, k, max(64, getattr(torch._dynamo.config, k)))
        for layer in model.model.layers:
            layer.compile(dynamic=False)
        FQ["fq"] = torch.compile(fq, dynamic=False)
        FQ["grad_term"] = torch.compile(grad_term, dynamic=False)
        compiled = "decoder layers, fake quant, gradient term"

    # W4 weights of every linear, once (an extra copy of the linears' weights in memory)
    t0 = dev.now()
    with torch.no_grad():
        wq = {m: fq(m.weight, 4) for m in lins}
    prep = dev.now() - t0

    def step(x, scores=None):
        """One batch; adds into scores (group order, then member order, in float64) when given."""
        if args.method == "kl":
            with torch.no_grad():
                vals = kl_batch(model, x, gs, wq, args.kl_full_forward, None if scores is not None else {0})
        else:
            vals = gradient_batch(model, x, lins, wq)
        vals = torch.stack(vals).tolist() if vals else []  # one device sync per batch
        if scores is not None:
            if args.method == "kl":
                for (nm, _), v in zip(gs, vals):
                    scores[nm] += v
            else:
                i = 0
                for nm, ms in gs:
                    for _ in ms:
                        scores[nm] += vals[i]
                        i += 1

    def run_trial(b):  # the auto search and the warm-up: kl times the reference + layer 0's groups
        step(ids[:b])

    # compile (or any failure to) shows up on the first call
    t0 = dev.now()
    if args.compile:
        try:
            run_trial(1)
        except Exception as e:
            if is_oom(e):
                raise
            compiled = f"failed, eager instead: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            print(f"(b) pytorch: torch.compile {compiled}", flush=True)
            torch._dynamo.reset()
            for layer in model.model.layers:
                layer._compiled_call_impl = None
            FQ.update(fq=fq, grad_term=grad_term)
            for m in lins:
                patch(m)

    auto = None
    if args.batch_size == "auto":
        bs, rows, why = auto_batch(run_trial, n, dev)
        auto = {"tried": rows, "why": why}
        print(f"(b) pytorch: batch size auto: using {bs}, the fastest per window ({why})", flush=True)
    else:
        bs = int(args.batch_size)
        run_trial(min(bs, n))  # warm-up
    if args.compile and n % bs:
        run_trial(n % bs)  # the last, partial batch's shape compiled outside the timing
    tune = dev.now() - t0

    scores = {nm: 0.0 for nm, _ in gs}
    dev.free_cache()
    dev.reset_peak()
    t0 = dev.now()
    for b0 in range(0, n, bs):
        step(ids[b0 : b0 + bs], scores)
    el = dev.now() - t0
    peak = dev.peak() / 2**30

    tokens = n * seq
    settings = {"torch": torch.__version__, "transformers": transformers.__version__, "device": d,
                "device_name": torch.cuda.get_device_name() if d == "cuda" else "cpu",
                "attn_implementation": model.config._attn_implementation, "use_cache": False,
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                "float32_matmul_precision": torch.get_float32_matmul_precision(),
                "allow_bf16_reduced_precision_reduction": torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
                "cpu_threads": torch.get_num_threads(), "compile": compiled,
                "kl_layer_input_reuse": args.method == "kl" and not args.kl_full_forward,
                "quantized_weights": "all linears, once before the loop"}
    res = {"impl": "pytorch", "dtype": args.dtype, "method": args.method, "seconds": el, "load_seconds": load,
           "prepare_seconds": prep, "warmup_and_batch_search_seconds": tune, "tokens_per_s": tokens / el,
           "peak_gib": peak, "peak_kind": "torch.cuda.max_memory_allocated" if d == "cuda" else "peak RSS (VmHWM)",
           "num_samples": n, "seq_len": seq, "batch_size": bs,
           "batch_size_mode": "auto" if auto else "given", "batch_size_auto": auto, "settings": settings,
           "groups": [{"name": nm, "score": s} for nm, s in scores.items()]}
    mem = "GPU" if d == "cuda" else "RSS"
    print(f"(b) pytorch {args.dtype} {args.method}: {el:.2f} s, {tokens / el:.0f} tokens/s, batch {bs}"
          f"{' (auto)' if auto else ''}, peak {mem} {peak:.2f} GiB, load {load:.1f} s, compile: {compiled}; "
          f"{n} x {seq} tokens", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()

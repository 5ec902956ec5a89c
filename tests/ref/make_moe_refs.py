"""Mixture-of-experts reference figures for autoq's tests, from Hugging Face transformers (PyTorch, fp32).

Run where torch + transformers are installed (the GPU machine has both):
    python3 tests/ref/make_moe_refs.py --out tests/fixtures
Writes (all small, committed):
  qwen3-moe-tiny/        a Qwen3MoeForCausalLM checkpoint made here, bf16, as transformers saves it
                         (8 experts, top-2, norm_topk_prob, layer 1 in mlp_only_layers: a dense MLP)
  qwen3-vl-moe-tiny/     a Qwen3VLMoeForConditionalGeneration checkpoint made here, bf16 (fused expert
                         tensors), with a one-block vision tower
  <name>_ids.npy         3 x 64 random ids
  <name>_ref.json        per-sample mean next-token NLL, the logits rows saved, the tensor names and
                         shapes of the checkpoint, and per-group kl / gradient scores (W4A8, ModelOpt
                         numerics) with the experts rule of README §6
  <name>_logits.npy      logits of sample 0 at the rows listed, fp32
"""
import argparse, json, os, types

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open

from make_refs import fq  # README §4 fake quantization (ModelOpt dialect), shared with the dense refs

ROWS = [0, 1, 2, 31, 63]


def init_weights(model):
    # Larger weights than the 0.02 init, so the logits and the routing are not flat.
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif p.dim() >= 2:
                p.normal_(0, 1.0 / p.shape[-1] ** 0.5)


def expert_weights(experts):
    """(gate (E, I, H), up (E, I, H), down (E, H, I)) of a fused or a per-expert experts module."""
    if hasattr(experts, "gate_up_proj"):  # transformers 5: gate_up_proj (E, 2I, H), gate rows first
        gu, down = experts.gate_up_proj, experts.down_proj
        I = gu.shape[1] // 2
        assert down.shape[2] == I, (tuple(gu.shape), tuple(down.shape))
        return gu[:, :I, :], gu[:, I:, :], down
    g = torch.stack([e.gate_proj.weight for e in experts])
    u = torch.stack([e.up_proj.weight for e in experts])
    d = torch.stack([e.down_proj.weight for e in experts])
    return g, u, d


def route(block, x):
    """The block's own router: top-k experts and their weights per token (fp32 softmax)."""
    r = block.gate(x)
    if isinstance(r, tuple):  # transformers 5 routers return (logits, top-k weights, top-k indices)
        return r[1], r[2]
    probs = F.softmax(r, dim=-1, dtype=torch.float)
    top, idx = torch.topk(probs, block.top_k, dim=-1)
    if block.norm_topk_prob:
        top = top / top.sum(dim=-1, keepdim=True)
    return top.to(x.dtype), idx


def sparse_forward(block, x, quant):
    """The sparse block's output from its own weights; quant: every expert's weights and inputs
    fake-quantized (W4A8), the router reading the unquantized input."""
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    top, idx = route(block, x)
    gate, up, down = expert_weights(block.experts)
    if quant:
        gate, up, down = fq(gate, 4), fq(up, 4), fq(down, 4)
    xin = fq(x, 8) if quant else x
    out = torch.zeros_like(x)
    for e in range(gate.shape[0]):
        tok, slot = torch.where(idx == e)
        if tok.numel() == 0:
            continue
        h = F.silu(F.linear(xin[tok], gate[e])) * F.linear(xin[tok], up[e])
        if quant:
            h = fq(h, 8)
        y = F.linear(h, down[e]) * top[tok, slot, None]
        out.index_add_(0, tok, y)
    return out.reshape(shape)


def layers_of(model):
    m = model.model
    if hasattr(m, "language_model"):
        return m.language_model.layers, "model.language_model.layers."
    return m.layers, "model.layers."


def is_sparse(mlp):
    return hasattr(mlp, "experts")


def patch_linear(mod):
    mod.q_on = False
    mod.wq = fq(mod.weight.detach(), 4)

    def fwd(self, x):
        if self.q_on:
            return F.linear(fq(x, 8), self.wq)
        return F.linear(x, self.weight)

    mod.forward = types.MethodType(fwd, mod)


def patch_sparse(block):
    block.q_on = False

    def fwd(self, x):
        return sparse_forward(self, x, self.q_on)

    block.forward = types.MethodType(fwd, block)


def groups_of(model):
    """(name, dense linears, sparse block or None) per group, in autoq's order."""
    layers, p0 = layers_of(model)
    gs = []
    for l, layer in enumerate(layers):
        p = f"{p0}{l}."
        a, m = layer.self_attn, layer.mlp
        gs.append((p + "self_attn.qkv", [a.q_proj, a.k_proj, a.v_proj], None))
        gs.append((p + "self_attn.o_proj", [a.o_proj], None))
        if is_sparse(m):
            gs.append((p + "mlp.experts", [], m))
        else:
            gs.append((p + "mlp.gate_up", [m.gate_proj, m.up_proj], None))
            gs.append((p + "mlp.down_proj", [m.down_proj], None))
    return gs


def set_q(ms, blk, on):
    for m in ms:
        m.q_on = on
    if blk is not None:
        blk.q_on = on


def scores_ref(model, ids):
    gs = groups_of(model)
    for _, ms, blk in gs:
        for m in ms:
            patch_linear(m)
        if blk is not None:
            patch_sparse(blk)
    kl = {n: 0.0 for n, _, _ in gs}
    grad = {n: 0.0 for n, _, _ in gs}
    coverage = {}
    for i in range(ids.shape[0]):
        x = torch.tensor(ids[i : i + 1], dtype=torch.long)
        with torch.no_grad():
            lp = F.log_softmax(model(input_ids=x).logits.float()[0], -1)
            for n, ms, blk in gs:
                set_q(ms, blk, True)
                lq = F.log_softmax(model(input_ids=x).logits.float()[0], -1)
                set_q(ms, blk, False)
                kl[n] += (lp.exp().double() * (lp.double() - lq.double())).sum().item()
        saved = {}

        def hook(mod, inp, outp):
            outp.retain_grad()
            saved[mod] = (inp[0].detach(), outp)

        mods = [m for _, ms, _ in gs for m in ms] + [blk for _, _, blk in gs if blk is not None]
        hs = [m.register_forward_hook(hook) for m in mods]
        logits = model(input_ids=x).logits.float()[0]
        loss = F.cross_entropy(logits[:-1], x[0, 1:], reduction="mean")
        model.zero_grad()
        loss.backward()
        for h in hs:
            h.remove()
        with torch.no_grad():
            for n, ms, blk in gs:
                for m in ms:
                    X, Y = saved[m]
                    dY = F.linear(fq(X, 8), m.wq) - Y.detach()
                    grad[n] += ((Y.grad.double() * dY.double()) ** 2).sum().item()
                if blk is not None:
                    X, Y = saved[blk]
                    dY = sparse_forward(blk, X, True) - Y.detach()
                    grad[n] += ((Y.grad.double() * dY.double()) ** 2).sum().item()
                    _, idx = route(blk, X.reshape(-1, X.shape[-1]))
                    cnt = torch.bincount(idx.reshape(-1), minlength=expert_weights(blk.experts)[0].shape[0])
                    c = coverage.setdefault(n, [0] * cnt.numel())
                    for e in range(cnt.numel()):
                        c[e] += int(cnt[e])
    return kl, grad, coverage


def tensor_table(d):
    names = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(d, f), "pt") as s:
                for k in s.keys():
                    names[k] = list(s.get_slice(k).get_shape())
    return names


def check_sparse(model, ids):
    """sparse_forward(quant=False) must equal transformers' own block: the routing and the expert
    layout read here are the ones autoq must reproduce."""
    saved, hs = {}, []
    layers, _ = layers_of(model)
    for layer in layers:
        if is_sparse(layer.mlp):
            hs.append(layer.mlp.register_forward_hook(lambda mod, i, o: saved.__setitem__(mod, (i[0], o))))
    with torch.no_grad():
        model(input_ids=torch.tensor(ids[:1], dtype=torch.long))
        worst = max((sparse_forward(m, X, False) - Y).abs().max().item() for m, (X, Y) in saved.items())
    for h in hs:
        h.remove()
    print("sparse block re-implementation vs transformers: worst", worst)
    assert worst < 1e-5
    print(next(iter(saved)))


def write_refs(model, d, ids, out, name):
    model.eval()
    check_sparse(model, ids)
    rows = [r for r in ROWS if r < ids.shape[1]]
    nll = []
    with torch.no_grad():
        for i in range(ids.shape[0]):
            x = torch.tensor(ids[i : i + 1], dtype=torch.long)
            logits = model(input_ids=x).logits.float()[0]
            nll.append(F.cross_entropy(logits[:-1].double(), x[0, 1:], reduction="mean").item())
            if i == 0:
                np.save(os.path.join(out, f"{name}_logits.npy"), logits[rows].numpy().astype(np.float32))
    kl, grad, cov = scores_ref(model, ids)
    ref = {"nll": nll, "logit_rows": rows, "num_samples": int(ids.shape[0]), "seq_len": int(ids.shape[1]),
           "format": "w4a8", "kl": kl, "gradient": grad, "expert_tokens": cov, "tensors": tensor_table(d)}
    json.dump(ref, open(os.path.join(out, f"{name}_ref.json"), "w"), indent=1)
    print(name, "nll", nll)


def make_moe(out):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    cfg = Qwen3MoeConfig(vocab_size=512, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
                         mlp_only_layers=[1], rms_norm_eps=1e-6, max_position_embeddings=1024,
                         rope_theta=1e6, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = Qwen3MoeForCausalLM(cfg)
    init_weights(model)
    d = os.path.join(out, "qwen3-moe-tiny")
    model.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
    return d, Qwen3MoeForCausalLM


def make_vl_moe(out):
    from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

    # moe_intermediate 48: gate_up_proj (E, 2I, H) = (8, 96, 64) cannot be read the other way round
    text = dict(vocab_size=512, hidden_size=64, intermediate_size=96, moe_intermediate_size=48,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                num_experts=8, num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[0],
                rms_norm_eps=1e-6, max_position_embeddings=1024,
                rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [6, 5, 5],
                                 "mrope_interleaved": True})
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                  patch_size=8, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                  num_position_embeddings=64, deepstack_visual_indexes=[0])
    cfg = Qwen3VLMoeConfig(text_config=text, vision_config=vision, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = Qwen3VLMoeForConditionalGeneration(cfg)
    init_weights(model)
    d = os.path.join(out, "qwen3-vl-moe-tiny")
    model.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
    return d, Qwen3VLMoeForConditionalGeneration


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(min(8, os.cpu_count()))
    rng = np.random.default_rng(0)
    for make, name in ((make_moe, "qwen3_moe_tiny"), (make_vl_moe, "qwen3_vl_moe_tiny")):
        d, cls = make(args.out)
        model = cls.from_pretrained(d, dtype=torch.float32)
        ids = rng.integers(0, 512, size=(3, 64), dtype=np.int32)
        np.save(os.path.join(args.out, f"{name}_ids.npy"), ids)
        write_refs(model, d, ids, args.out, name)


if __name__ == "__main__":
    main()

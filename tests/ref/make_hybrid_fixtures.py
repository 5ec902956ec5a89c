"""Reference fixtures for the hybrid Qwen families (README §2, §3; issue 26), from transformers 5.17 (fp32, CPU).

Run where torch 2.11 + transformers 5.17 are installed (no flash-linear-attention: transformers then
runs its own torch_chunk_gated_delta_rule):
    python3 tests/ref/make_hybrid_fixtures.py --out tests/fixtures
Writes, deterministically (seeded), all small and committed:
  qwen3_5-tiny/        Qwen3_5ForCausalLM (model_type qwen3_5_text): 4 layers, layer_types given,
                       dense MLPs, partial_rotary_factor 0.25, a few mtp.* tensors
  qwen3_5-moe-tiny/    Qwen3_5MoeForConditionalGeneration (qwen3_5_moe): language weights under
                       model.language_model.*, a one-block vision tower under model.visual.*, fused
                       experts with a shared expert, full_attention_interval 2, mtp.* tensors
  qwen3-next-tiny/     Qwen3NextForCausalLM (qwen3_next): fused in_proj_qkvz / in_proj_ba, layer 1
                       in mlp_only_layers (a dense MLP), the rest experts + shared expert, mtp.* tensors
  <name>_ids.npy       2 x 24 random ids (int32)
  <name>_logits.npy    the logits of every window, float32 [2 * 24, V]
  <name>_ref.json      per-window mean next-token NLL, the checkpoint's tensor names and shapes, and
                       per-group kl and gradient scores (W4A8, ModelOpt numerics, README §6) with autoq's
                       groups (README §5): the experts group scored at the routed sum (routing unchanged)
Weights are stored as bf16 and the reference runs in fp32 on those bf16 values, so autoq reads
exactly the weights the reference used. Norm weights, A_log, dt_bias and the gated norm are
non-default so every path matters.
"""
import argparse, json, os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

import types

import transformers
from transformers import (Qwen3_5ForCausalLM, Qwen3_5MoeForConditionalGeneration, Qwen3NextForCausalLM)
from transformers.models.qwen3_5.configuration_qwen3_5 import Qwen3_5TextConfig
from transformers.models.qwen3_5_moe.configuration_qwen3_5_moe import Qwen3_5MoeConfig
from transformers.models.qwen3_next.configuration_qwen3_next import Qwen3NextConfig

from make_refs import fq  # README §4 fake quantization (ModelOpt dialect): weights per row, inputs per token

N, T, V = 2, 24, 256
MTP = {  # a few multi-token-prediction tensors, as the released checkpoints carry (never loaded by autoq)
    "mtp.fc.weight": (64, 128),
    "mtp.norm.weight": (64,),
    "mtp.layers.0.input_layernorm.weight": (64,),
}

COMMON = dict(vocab_size=V, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
              linear_value_head_dim=8, linear_conv_kernel_dim=4, rms_norm_eps=1e-6,
              max_position_embeddings=128, tie_word_embeddings=False, eos_token_id=1)


def init_weights(model, seed):
    """Random normal weights (std 1/sqrt(fan_in)), non-default norms, A_log, dt_bias, conv."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if n.endswith("A_log"):
                p.copy_(torch.log(torch.empty(p.shape).uniform_(0.5, 4.0, generator=g)))
            elif n.endswith("dt_bias"):
                p.copy_(0.5 * r)
            elif "linear_attn.norm" in n:  # gated RMSNorm: used as w
                p.copy_(1 + 0.2 * r)
            elif "norm" in n and "visual" not in n:  # (1 + w) norms of these families
                p.copy_(0.2 * r)
            elif "conv1d" in n:
                p.copy_(0.4 * r)
            elif p.dim() >= 2:
                p.copy_(r / p.shape[-1] ** 0.5)
            else:
                p.copy_(0.1 * r)
            p.copy_(p.to(torch.bfloat16).to(torch.float32))  # stored bf16: the reference uses these


def run(model, ids):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long), use_cache=False)
    logits = out.logits.float()
    nll = [F.cross_entropy(logits[i, :-1], torch.tensor(ids[i, 1:], dtype=torch.long)).item()
           for i in range(ids.shape[0])]
    return logits, nll


def save(model, out, name, ids, extra_tensors):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
    model.to(torch.float32)
    path = os.path.join(d, "model.safetensors")
    g = torch.Generator().manual_seed(99)
    with safe_open(path, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    for k, shape in extra_tensors.items():
        tensors[k] = (0.1 * torch.randn(shape, generator=g)).to(torch.bfloat16)
    save_file(tensors, path, metadata=meta)
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(d, extra)):
            os.remove(os.path.join(d, extra))
    return {k: list(v.shape) for k, v in sorted(tensors.items())}


def check_reload(cls, d, ids, logits):
    """The saved checkpoint, loaded back by transformers, gives the same logits (format sanity)."""
    m = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    l2, _ = run(m, ids)
    err = (l2 - logits).abs().max().item()
    assert err < 1e-5, f"{d}: reloaded logits differ by {err}"


def patch_linear(mod):
    mod.q_on = False
    mod.wq = fq(mod.weight.detach(), 4)

    def fwd(self, x):
        return F.linear(fq(x, 8), self.wq) if self.q_on else F.linear(x, self.weight)

    mod.forward = types.MethodType(fwd, mod)


def patch_experts(ex):
    """The routed experts (transformers' fused Experts module) with every expert's weights and inputs
    fake-quantized when q_on; the routing comes in from the block, unquantized."""
    ex.q_on = False
    orig = ex.forward

    def fwd(self, x, idx, w):
        if not self.q_on:
            return orig(x, idx, w)
        gu, dn = fq(self.gate_up_proj.detach(), 4), fq(self.down_proj.detach(), 4)
        xq, out = fq(x, 8), torch.zeros_like(x)
        for e in range(gu.shape[0]):
            tok, slot = torch.where(idx == e)
            if tok.numel() == 0:
                continue
            g, u = F.linear(xq[tok], gu[e]).chunk(2, dim=-1)
            h = fq(self.act_fn(g) * u, 8)
            out.index_add_(0, tok, F.linear(h, dn[e]) * w[tok, slot, None])
        return out

    ex.forward = types.MethodType(fwd, ex)


def groups_of(model):
    """(name, dense linears, experts module or None) per group, in autoq's order (README §5)."""
    m = model.model
    layers, p0 = (m.language_model.layers, "model.language_model.layers.") if hasattr(m, "language_model") else (
        m.layers, "model.layers.")
    gs = []
    for l, layer in enumerate(layers):
        p = f"{p0}{l}."
        if hasattr(layer, "linear_attn"):
            a = layer.linear_attn
            if hasattr(a, "in_proj_qkvz"):
                gs += [(p + "linear_attn.in_proj_qkvz", [a.in_proj_qkvz], None),
                       (p + "linear_attn.in_proj_ba", [a.in_proj_ba], None)]
            else:
                gs += [(p + "linear_attn.in_proj_qkvz", [a.in_proj_qkv, a.in_proj_z], None),
                       (p + "linear_attn.in_proj_ba", [a.in_proj_b, a.in_proj_a], None)]
            gs.append((p + "linear_attn.out_proj", [a.out_proj], None))
        else:
            a = layer.self_attn
            gs += [(p + "self_attn.qkv", [a.q_proj, a.k_proj, a.v_proj], None), (p + "self_attn.o_proj", [a.o_proj], None)]
        mlp = layer.mlp
        if hasattr(mlp, "experts"):
            gs.append((p + "mlp.experts", [], mlp.experts))
            sh = mlp.shared_expert
            gs += [(p + "mlp.shared_expert.gate_up", [sh.gate_proj, sh.up_proj], None),
                   (p + "mlp.shared_expert.down_proj", [sh.down_proj], None)]
        else:
            gs += [(p + "mlp.gate_up", [mlp.gate_proj, mlp.up_proj], None), (p + "mlp.down_proj", [mlp.down_proj], None)]
    return gs


def scores_ref(model, ids):
    """kl: sum over windows and positions of KL(P || Q_g); gradient: sum of (dL/dY . dY)^2 over the group's
    linears (experts: Y the routed sum), L the mean next-token cross-entropy (README §6)."""
    gs = groups_of(model)
    for _, ms, ex in gs:
        for m in ms:
            patch_linear(m)
        if ex is not None:
            patch_experts(ex)
    kl = {n: 0.0 for n, _, _ in gs}
    grad = {n: 0.0 for n, _, _ in gs}
    for i in range(ids.shape[0]):
        x = torch.tensor(ids[i:i + 1], dtype=torch.long)
        with torch.no_grad():
            lp = F.log_softmax(model(input_ids=x, use_cache=False).logits.float()[0], -1)
            for n, ms, ex in gs:
                for mod in ms + ([ex] if ex is not None else []):
                    mod.q_on = True
                lq = F.log_softmax(model(input_ids=x, use_cache=False).logits.float()[0], -1)
                for mod in ms + ([ex] if ex is not None else []):
                    mod.q_on = False
                kl[n] += (lp.exp().double() * (lp.double() - lq.double())).sum().item()
        saved = {}

        def hook(mod, inp, outp):
            outp.retain_grad()
            saved[mod] = (tuple(t.detach() for t in inp), outp)

        mods = [m for _, ms, _ in gs for m in ms] + [ex for _, _, ex in gs if ex is not None]
        hs = [m.register_forward_hook(hook) for m in mods]
        logits = model(input_ids=x, use_cache=False).logits.float()[0]
        loss = F.cross_entropy(logits[:-1], x[0, 1:], reduction="mean")
        model.zero_grad()
        loss.backward()
        for h in hs:
            h.remove()
        with torch.no_grad():
            for n, ms, ex in gs:
                for mod in ms + ([ex] if ex is not None else []):
                    inp, Y = saved[mod]
                    mod.q_on = True
                    Yq = mod(*inp)
                    mod.q_on = False
                    grad[n] += ((Y.grad.double() * (Yq - Y.detach()).double()) ** 2).sum().item()
    return kl, grad


def make(out, name, cls, config, seed):
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = cls(config).eval()
    init_weights(model, seed)
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, V, size=(N, T)).astype(np.int32)
    logits, nll = run(model, ids)
    shapes = save(model, out, name, ids, MTP)
    check_reload(cls, os.path.join(out, name), ids, logits)
    stem = name.replace("-", "_")
    np.save(os.path.join(out, f"{stem}_ids.npy"), ids)
    np.save(os.path.join(out, f"{stem}_logits.npy"), logits.reshape(N * T, V).numpy().astype(np.float32))
    kl, grad = scores_ref(model, ids)
    ref = {"nll": nll, "num_samples": N, "seq_len": T, "transformers": transformers.__version__,
           "torch": torch.__version__, "format": "w4a8", "kl": kl, "gradient": grad, "tensors": shapes}
    with open(os.path.join(out, f"{stem}_ref.json"), "w") as f:
        json.dump(ref, f, indent=1)
    print(name, "nll", nll, "params", sum(p.numel() for p in model.parameters()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures")
    a = ap.parse_args()
    torch.set_num_threads(1)

    c = Qwen3_5TextConfig(**COMMON, intermediate_size=96, num_hidden_layers=4,
                          layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"],
                          rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                           "partial_rotary_factor": 0.25, "mrope_section": [1, 1, 0],
                                           "mrope_interleaved": True})
    make(a.out, "qwen3_5-tiny", Qwen3_5ForCausalLM, c, 11)

    text = dict(COMMON, num_hidden_layers=3, full_attention_interval=2, num_experts=4, num_experts_per_tok=2,
                moe_intermediate_size=32, shared_expert_intermediate_size=48,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "partial_rotary_factor": 0.5,
                                 "mrope_section": [2, 1, 1], "mrope_interleaved": True})
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64, num_position_embeddings=16)
    c = Qwen3_5MoeConfig(text_config=text, vision_config=vision, tie_word_embeddings=False)
    make(a.out, "qwen3_5-moe-tiny", Qwen3_5MoeForConditionalGeneration, c, 12)

    c = Qwen3NextConfig(**COMMON, intermediate_size=96, num_hidden_layers=4,
                        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
                        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                        shared_expert_intermediate_size=48, norm_topk_prob=True, mlp_only_layers=[1],
                        decoder_sparse_step=1,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25})
    make(a.out, "qwen3-next-tiny", Qwen3NextForCausalLM, c, 13)


if __name__ == "__main__":
    main()

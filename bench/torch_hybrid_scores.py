"""Plain PyTorch + transformers baseline for the hybrid families (Qwen3.5 / Qwen3.5-MoE / Qwen3-Next, e.g. the
Qwen3.5-35B-A3B shape of `autoq gen --preset qwen3.5-35b-a3b`): per-group W4A8 scores with autoq's semantics
(README §4, §5, §6), for bench/hybrid_bench.sh. It is bench/torch_moe_scores.py (same options, same JSON,
same loader, grouped_mm experts, SDPA, kl with prefix reuse through bench/torch_scores.py's
forward_keeping_inputs, its fastest batch) with the hybrid groups:

- Gated DeltaNet layers: linear_attn.in_proj_qkvz (in_proj_qkv + in_proj_z, or Qwen3-Next's fused
  in_proj_qkvz), linear_attn.in_proj_ba (in_proj_b + in_proj_a, or the fused in_proj_ba), linear_attn.out_proj;
  full attention: self_attn.qkv (q_proj with its gate rows, k_proj, v_proj), self_attn.o_proj;
- a sparse layer: mlp.experts (the routed experts as one block, the shared expert unquantized: Yq - Y is the
  routed sum's change and dL/dY the block output's gradient, README §6), mlp.shared_expert.gate_up and
  mlp.shared_expert.down_proj; a dense layer: mlp.gate_up, mlp.down_proj.

The Gated DeltaNet core is transformers' own: flash-linear-attention's Triton kernels when `fla` imports (on
a GPU; install the fla-core wheel), else transformers' PyTorch reference (the CPU checks). GATED_DELTA=torch
in the environment forces the reference (float32 accuracy runs; and the gradient on Hopper, where fla 0.6.0's
backward refuses the Triton that torch 2.11 brings, < 3.7.1, fla issue #640). The log says which ran.

usage: torch_hybrid_scores.py MODEL IDS.npy [torch_moe_scores.py's options]
"""
import os
import sys

if os.environ.get("GATED_DELTA") == "torch":
    sys.modules["fla"] = None  # transformers resolves its kernels at import: make `import fla` fail first

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_moe_scores as moe  # noqa: E402


def groups_of(model):
    """(name, linears, sparse block or None) per group, in autoq's order (README §5)."""
    gs = []
    for l, layer in enumerate(model.model.layers):
        p = f"model.layers.{l}."
        if hasattr(layer, "linear_attn"):
            a = layer.linear_attn
            if hasattr(a, "in_proj_qkvz"):
                gs.append((p + "linear_attn.in_proj_qkvz", [a.in_proj_qkvz], None))
                gs.append((p + "linear_attn.in_proj_ba", [a.in_proj_ba], None))
            else:
                gs.append((p + "linear_attn.in_proj_qkvz", [a.in_proj_qkv, a.in_proj_z], None))
                gs.append((p + "linear_attn.in_proj_ba", [a.in_proj_b, a.in_proj_a], None))
            gs.append((p + "linear_attn.out_proj", [a.out_proj], None))
        else:
            a = layer.self_attn
            gs.append((p + "self_attn.qkv", [a.q_proj, a.k_proj, a.v_proj], None))
            gs.append((p + "self_attn.o_proj", [a.o_proj], None))
        m = layer.mlp
        if hasattr(m, "experts"):
            gs.append((p + "mlp.experts", [], m))
            sh = m.shared_expert
            gs.append((p + "mlp.shared_expert.gate_up", [sh.gate_proj, sh.up_proj], None))
            gs.append((p + "mlp.shared_expert.down_proj", [sh.down_proj], None))
        else:
            gs.append((p + "mlp.gate_up", [m.gate_proj, m.up_proj], None))
            gs.append((p + "mlp.down_proj", [m.down_proj], None))
    return gs


def suffix_logits(model, caps, l):
    """Layers l.. from the reference's input to layer l, each with its own captured keyword arguments:
    the hybrid models hand linear-attention and full-attention layers different masks."""
    h = caps[l][0]
    for j, layer in enumerate(model.model.layers[l:], start=l):
        h = layer(h, **caps[j][1])
        h = h[0] if isinstance(h, tuple) else h
    return model.lm_head(model.model.norm(h))


def gated_delta_impl():
    try:
        import fla  # noqa: F401

        return "flash-linear-attention (fla " + getattr(fla, "__version__", "?") + ")"
    except Exception:
        why = "GATED_DELTA=torch" if os.environ.get("GATED_DELTA") == "torch" else "fla does not import"
        return f"transformers' PyTorch reference ({why})"


def dense_models_without_experts_backend():
    """torch_moe_scores asks every model for an experts backend; a dense Qwen3.5 has no experts and refuses
    the argument: drop it there."""
    import transformers

    auto = transformers.AutoModelForCausalLM

    def no_experts(cfg):
        cfg = getattr(cfg, "text_config", cfg)
        return not getattr(cfg, "num_experts", 0)

    class Auto:
        @staticmethod
        def from_pretrained(path, **kw):
            if no_experts(transformers.AutoConfig.from_pretrained(path)):
                kw.pop("experts_implementation", None)
            return auto.from_pretrained(path, **kw)

        @staticmethod
        def from_config(cfg, **kw):
            if no_experts(cfg):
                kw.pop("experts_implementation", None)
            return auto.from_config(cfg, **kw)

    transformers.AutoModelForCausalLM = Auto


if __name__ == "__main__":
    dense_models_without_experts_backend()
    moe.groups_of = groups_of
    moe.suffix_logits = suffix_logits
    print(f"(b) pytorch hybrid: gated delta rule by {gated_delta_impl()}", flush=True)
    moe.main()

# A reduced-layer checkpoint of the Qwen3.5-35B-A3B shape (transformers 5.17 Qwen3_5MoeTextConfig defaults:
# hidden 2048, 16 heads x 256 (2 kv), Gated DeltaNet 16 key / 32 value heads x 128, 256 experts top-8 of 512,
# shared expert 512, vocab 248320), random bf16 weights, every 4th layer full attention; for bench/hybrid_shape.sh.
#   python3 bench/make_hybrid_shape.py OUT [LAYERS=4]   (N, T: ids.npy windows; SMALL=1: a tiny CPU check)
import json, os, sys, torch
from safetensors.torch import save_file
out, L = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4
small = os.environ.get("SMALL") == "1"
dev = "cuda" if torch.cuda.is_available() else "cpu"
D, H, KV, hd, Hk, Hv, dk, dv, K, E, top, I, Ish, V = 2048, 16, 2, 256, 16, 32, 128, 128, 4, 256, 8, 512, 512, 248320
if small:  # a CPU check of the layout
    D, H, KV, hd, Hk, Hv, dk, dv, E, top, I, Ish, V = 64, 4, 2, 32, 2, 4, 16, 16, 8, 2, 32, 32, 512
types = ["linear_attention" if (l + 1) % 4 else "full_attention" for l in range(L)]
cfg = {"architectures": ["Qwen3_5MoeForCausalLM"], "model_type": "qwen3_5_moe_text", "vocab_size": V,
       "hidden_size": D, "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": KV,
       "head_dim": hd, "linear_num_key_heads": Hk, "linear_num_value_heads": Hv, "linear_key_head_dim": dk,
       "linear_value_head_dim": dv, "linear_conv_kernel_dim": K, "num_experts": E, "num_experts_per_tok": top,
       "moe_intermediate_size": I, "shared_expert_intermediate_size": Ish, "layer_types": types,
       "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "max_position_embeddings": 32768, "eos_token_id": 1,
       "rope_parameters": {"rope_theta": 1e7, "partial_rotary_factor": 0.25, "rope_type": "default",
                           "mrope_section": [11, 11, 10], "mrope_interleaved": True}}
if small:
    cfg["rope_parameters"]["mrope_section"] = [2, 1, 1]
g = torch.Generator(device=dev).manual_seed(0)
def r(*shape, s=0.02):
    return (torch.randn(*shape, generator=g, device=dev) * s).to(torch.bfloat16).cpu()
t = {"model.embed_tokens.weight": r(V, D), "model.norm.weight": r(D, s=0.1), "lm_head.weight": r(V, D)}
for l in range(L):
    p = f"model.layers.{l}."
    t[p + "input_layernorm.weight"] = r(D, s=0.1)
    t[p + "post_attention_layernorm.weight"] = r(D, s=0.1)
    if types[l] == "linear_attention":
        C = 2 * Hk * dk + Hv * dv
        a = p + "linear_attn."
        t[a + "in_proj_qkv.weight"] = r(C, D)
        t[a + "in_proj_z.weight"] = r(Hv * dv, D)
        t[a + "in_proj_b.weight"] = r(Hv, D)
        t[a + "in_proj_a.weight"] = r(Hv, D)
        t[a + "conv1d.weight"] = r(C, 1, K, s=0.3)
        t[a + "A_log"] = torch.log(torch.rand(Hv, generator=g, device=dev) * 15 + 1).to(torch.bfloat16).cpu()
        t[a + "dt_bias"] = r(Hv, s=0.5)
        t[a + "norm.weight"] = (1 + r(dv, s=0.1).float()).to(torch.bfloat16)
        t[a + "out_proj.weight"] = r(D, Hv * dv)
    else:
        a = p + "self_attn."
        t[a + "q_proj.weight"] = r(2 * H * hd, D)
        t[a + "k_proj.weight"] = r(KV * hd, D)
        t[a + "v_proj.weight"] = r(KV * hd, D)
        t[a + "o_proj.weight"] = r(D, H * hd)
        t[a + "q_norm.weight"] = r(hd, s=0.1)
        t[a + "k_norm.weight"] = r(hd, s=0.1)
    m = p + "mlp."
    t[m + "gate.weight"] = r(E, D)
    t[m + "experts.gate_up_proj"] = r(E, 2 * I, D)
    t[m + "experts.down_proj"] = r(E, D, I)
    t[m + "shared_expert.gate_proj.weight"] = r(Ish, D)
    t[m + "shared_expert.up_proj.weight"] = r(Ish, D)
    t[m + "shared_expert.down_proj.weight"] = r(D, Ish)
    t[m + "shared_expert_gate.weight"] = r(1, D)
os.makedirs(out, exist_ok=True)
save_file(t, os.path.join(out, "model.safetensors"))
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
import numpy as np
n, T = int(os.environ.get("N", 128)), int(os.environ.get("T", 512))
np.save(os.path.join(out, "ids.npy"), np.random.default_rng(0).integers(2, V, size=(n, T)).astype(np.int32))
print("wrote", out, sum(v.numel() for v in t.values()) / 1e9, "B params")

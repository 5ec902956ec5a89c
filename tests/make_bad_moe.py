"""Writes malformed mixture-of-experts checkpoints for tests/test_moe.sh (Python stdlib only).

usage: make_bad_moe.py MOE_DIR VL_MOE_DIR OUT_DIR
MOE_DIR holds per-expert tensors (qwen3_moe), VL_MOE_DIR fused ones (qwen3_vl_moe); each case is a
model folder OUT_DIR/<case>/.
"""
import json, os, struct, sys

moe, vl, out = sys.argv[1], sys.argv[2], sys.argv[3]


def load(d):
    raw = open(os.path.join(d, "model.safetensors"), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :], json.load(open(os.path.join(d, "config.json")))


def model(case, src, hdr_fn=None, cfg_fn=None):
    header, data, cfg = load(src)
    header, cfg = json.loads(json.dumps(header)), json.loads(json.dumps(cfg))
    if hdr_fn:
        hdr_fn(header)
    if cfg_fn:
        cfg_fn(cfg)
    d = os.path.join(out, case)
    os.makedirs(d, exist_ok=True)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    h = json.dumps(header).encode()
    open(os.path.join(d, "model.safetensors"), "wb").write(struct.pack("<Q", len(h)) + h + data)


def text(c):
    return c.get("text_config", c)


# per-expert layout
model("fewer_experts", moe, cfg_fn=lambda c: c.__setitem__("num_local_experts", 6))
model("more_experts", moe, cfg_fn=lambda c: c.__setitem__("num_local_experts", 9))
model("missing_expert", moe, hdr_fn=lambda h: h.pop("model.layers.0.mlp.experts.3.up_proj.weight"))
model("missing_router", moe, hdr_fn=lambda h: h.pop("model.layers.2.mlp.gate.weight"))
model("topk_too_large", moe, cfg_fn=lambda c: c.__setitem__("num_experts_per_tok", 9))
model("mlp_only_out_of_range", moe, cfg_fn=lambda c: c.__setitem__("mlp_only_layers", [1, 5]))
model("mlp_only_not_list", moe, cfg_fn=lambda c: c.__setitem__("mlp_only_layers", "1"))
model("experts_disagree", moe, cfg_fn=lambda c: c.__setitem__("num_experts", 4))
model("no_moe_intermediate", moe, cfg_fn=lambda c: c.pop("moe_intermediate_size"))
model("sparse_step_zero", moe, cfg_fn=lambda c: c.__setitem__("decoder_sparse_step", 0))
# fused layout: same element count, other shape
gu = "model.language_model.layers.1.mlp.experts.gate_up_proj"
model("wrong_gate_up", vl, hdr_fn=lambda h: h[gu].__setitem__("shape", [8, 48, 128]))
model("vl_fewer_experts", vl, cfg_fn=lambda c: text(c).__setitem__("num_local_experts", 4))

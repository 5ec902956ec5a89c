"""Writes deliberately broken copies of compressed-tensors checkpoints for tests/test_check_ckpt.sh
(Python stdlib only): each a folder OUT/<case>/ that `autoq check-checkpoint --target vllm` must flag.

usage: make_bad_ckpt.py DENSE_DIR MOE_DIR OUT
DENSE_DIR: autoq quantize output of a dense model, every linear w8a8 (int-quantized, one config group);
MOE_DIR: the same for a Qwen3-MoE model.
"""
import json, os, shutil, struct, sys

dense, moe, out = sys.argv[1:4]
# the dense model's language-model prefix (Qwen3-VL: model.language_model.)
P = "model.language_model." if "language_model" in open(os.path.join(dense, "model.safetensors"), "rb").read(1 << 16).decode("latin1") else "model."


def load(d):
    raw = open(os.path.join(d, "model.safetensors"), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8 : 8 + n])
    meta = hdr.pop("__metadata__", None)
    data = raw[8 + n :]
    tensors = {k: [v["dtype"], v["shape"], data[v["data_offsets"][0] : v["data_offsets"][1]]] for k, v in hdr.items()}
    return tensors, meta, json.load(open(os.path.join(d, "config.json")))


def save(d, tensors, meta, cfg):
    os.makedirs(d)
    hdr, blobs, off = {}, [], 0
    if meta is not None:
        hdr["__metadata__"] = meta
    for k in sorted(tensors):
        dt, shape, b = tensors[k]
        hdr[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)


def case(name, src, fn):
    tensors, meta, cfg = load(src)
    fn(tensors, cfg["quantization_config"], cfg)
    save(os.path.join(out, name), tensors, meta, cfg)


def group_copy(qc, targets, bits):
    g = json.loads(json.dumps(next(iter(qc["config_groups"].values()))))
    g["targets"], g["weights"]["num_bits"] = targets, bits
    # first, so that it matches before the recipe's own group
    qc["config_groups"] = {"split": g, **qc["config_groups"]}


def scale_shape(t, qc, cfg):
    dt, (o, _), b = t[P + "layers.1.self_attn.o_proj.weight_scale"]
    t[P + "layers.1.self_attn.o_proj.weight_scale"] = [dt, [o, 2], b + b]


def unquantized(t, qc, cfg):
    k = P + "layers.0.self_attn.o_proj"
    _, (o, i), _ = t[k + ".weight"]
    t[k + ".weight"] = ["BF16", [o, i], bytes(2 * o * i)]
    del t[k + ".weight_scale"]


L0 = "re:^" + P.replace(".", r"\.") + r"layers\.0\.self_attn\.q_proj$"
case("fused_split", dense, lambda t, qc, c: group_copy(qc, [L0], 4))
case("missing_scale", dense, lambda t, qc, c: t.pop(P + "layers.1.mlp.down_proj.weight_scale"))
case("scale_shape", dense, scale_shape)
case("status_frozen", dense, lambda t, qc, c: qc.__setitem__("quantization_status", "frozen"))
case("ignored_quantized", dense, lambda t, qc, c: qc["ignore"].append(P + "layers.0.mlp.down_proj"))
case("unquantized_targeted", dense, unquantized)
case("kv_nvfp4", dense, lambda t, qc, c: qc.__setitem__(
    "kv_cache_scheme", {"num_bits": 4, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True}))
case("moe_split", moe, lambda t, qc, c: group_copy(qc, [r"re:^model\.layers\.0\.mlp\.experts\.0\..*$"], 4))
# bad input (exit 2): no quantization_config, a truncated safetensors header
case("no_qc", dense, lambda t, qc, c: c.pop("quantization_config"))
shutil.copytree(dense, os.path.join(out, "truncated"))
with open(os.path.join(out, "truncated", "model.safetensors"), "r+b") as f:
    f.truncate(100)

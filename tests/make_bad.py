"""Writes malformed checkpoints and id files for tests/test_errors.sh (Python stdlib only).

usage: make_bad.py GOOD_MODEL_DIR OUT_DIR
Each case is OUT_DIR/<case>/ (a model folder) or OUT_DIR/<case>.npy.
"""
import json, os, shutil, struct, sys

good, out = sys.argv[1], sys.argv[2]
raw = open(os.path.join(good, "model.safetensors"), "rb").read()
hlen = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8 : 8 + hlen])
data = raw[8 + hlen :]
cfg = json.load(open(os.path.join(good, "config.json")))


def model(case, hdr=None, body=None, blob=None, config=None):
    d = os.path.join(out, case)
    os.makedirs(d, exist_ok=True)
    json.dump(cfg if config is None else config, open(os.path.join(d, "config.json"), "w"))
    if blob is None:
        h = json.dumps(header if hdr is None else hdr).encode()
        blob = struct.pack("<Q", len(h)) + h + (data if body is None else body)
    open(os.path.join(d, "model.safetensors"), "wb").write(blob)


def edited(fn):
    h = json.loads(json.dumps(header))
    fn(h)
    return h


q = "model.language_model.layers.0.self_attn.q_proj.weight"
k = "model.language_model.layers.0.self_attn.k_proj.weight"
model("truncated", blob=raw[:5])
model("header_past_end", blob=struct.pack("<Q", len(raw) * 2) + raw[8:])
model("offset_out_of_range", hdr=edited(lambda h: h[q].__setitem__("data_offsets", [len(data) - 10, len(data) + 65526])))
model("overlap", hdr=edited(lambda h: h[k].__setitem__("data_offsets", [h[q]["data_offsets"][0], h[q]["data_offsets"][0] + 16384])))
model("unknown_dtype", hdr=edited(lambda h: h[q].__setitem__("dtype", "Q7")))
model("wrong_shape", hdr=edited(lambda h: h[q].__setitem__("shape", [128, 256])))
model("missing_tensor", hdr=edited(lambda h: h.pop(q)))
c = json.loads(json.dumps(cfg)); c["text_config"].pop("hidden_size")
model("config_missing_field", config=c)
c = json.loads(json.dumps(cfg)); c["text_config"]["num_hidden_layers"] = "two"
model("config_mistyped_field", config=c)
c = json.loads(json.dumps(cfg)); c["model_type"] = "llama"
model("config_unknown_model_type", config=c)


def npy(case, descr, shape, payload):
    d = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    d = d + " " * (63 - (10 + len(d)) % 64) + "\n"
    open(os.path.join(out, case + ".npy"), "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d.encode() + payload)


npy("id_too_large", "<i4", "(1, 4)", struct.pack("<4i", 1, 2, 512, 3))
npy("empty", "<i4", "(0, 4)", b"")
npy("ragged", "<i8", "(2, 4)", struct.pack("<7q", *range(7)))
npy("float_ids", "<f4", "(1, 4)", struct.pack("<4f", 1, 2, 3, 4))
npy("one_dim", "<i4", "(4,)", struct.pack("<4i", 1, 2, 3, 4))
npy("ok", "<i4", "(2, 8)", struct.pack("<16i", *range(16)))

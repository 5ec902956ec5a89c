"""Rewrites a BF16 safetensors checkpoint as F32 and as F16, and its config with the other RoPE
spelling, for tests/test_errors.sh (Python stdlib only).

usage: make_dtypes.py GOOD_MODEL_DIR OUT_DIR   -> OUT_DIR/f32/, OUT_DIR/f16/, OUT_DIR/rope_theta/
"""
import json, os, shutil, struct, sys

good, out = sys.argv[1], sys.argv[2]
raw = open(os.path.join(good, "model.safetensors"), "rb").read()
hlen = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8 : 8 + hlen])
data = raw[8 + hlen :]


def convert(dtype, fmt, size):
    hdr, chunks, off = {}, [], 0
    for name, t in header.items():
        if name == "__metadata__":
            hdr[name] = t
            continue
        b, e = t["data_offsets"]
        src = data[b:e]
        vals = [struct.unpack("<f", b"\x00\x00" + src[i : i + 2])[0] for i in range(0, len(src), 2)]
        blob = struct.pack("<%d%s" % (len(vals), fmt), *vals)
        hdr[name] = {"dtype": dtype, "shape": t["shape"], "data_offsets": [off, off + len(blob)]}
        chunks.append(blob)
        off += len(blob)
    h = json.dumps(hdr).encode()
    d = os.path.join(out, dtype.lower())
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "model.safetensors"), "wb").write(struct.pack("<Q", len(h)) + h + b"".join(chunks))
    shutil.copy(os.path.join(good, "config.json"), d)


convert("F32", "f", 4)
convert("F16", "e", 2)
d = os.path.join(out, "rope_theta")
os.makedirs(d, exist_ok=True)
shutil.copy(os.path.join(good, "model.safetensors"), d)
cfg = json.load(open(os.path.join(good, "config.json")))
tc = cfg["text_config"]
tc["rope_theta"] = tc["rope_parameters"].pop("rope_theta")
json.dump(cfg, open(os.path.join(d, "config.json"), "w"))

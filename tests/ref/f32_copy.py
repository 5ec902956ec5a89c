"""A float32 copy of a bf16 checkpoint, with the standard library only (so that CI runs it).

    f32_copy.py SRC DST

A bf16 value is the high half of its float32, so the copy holds exactly the checkpoint's values: GPTQ on it
runs the float32 arithmetic of llm-compressor's reference runs. SRC is one model.safetensors or shards named
by model.safetensors.index.json; DST gets one model.safetensors (tensors in shard order, each shard's names
sorted), config.json with dtype float32, and tokenizer.json when SRC has one.
"""
import json, os, shutil, struct, sys


def f32_copy(src, dst):
    index = os.path.join(src, "model.safetensors.index.json")
    if os.path.exists(index):
        files = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    hdr, blobs, off = {}, [], 0
    for fn in files:
        with open(os.path.join(src, fn), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            h = json.loads(f.read(n))
            data = f.read()
        for k, v in sorted(h.items()):
            if k == "__metadata__":
                continue
            a, b = v["data_offsets"]
            assert v["dtype"] == "BF16", k
            out = bytearray(2 * (b - a))
            out[2::4], out[3::4] = data[a:b:2], data[a + 1:b:2]
            hdr[k] = {"dtype": "F32", "shape": v["shape"], "data_offsets": [off, off + len(out)]}
            blobs.append(out)
            off += len(out)
    os.makedirs(dst)
    text = json.dumps(hdr).encode()
    text += b" " * (-len(text) % 8)
    with open(dst + "/model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for b in blobs:
            f.write(b)
    cfg = json.load(open(src + "/config.json"))
    cfg["dtype"] = "float32"
    json.dump(cfg, open(dst + "/config.json", "w"))
    if os.path.exists(src + "/tokenizer.json"):
        shutil.copy(src + "/tokenizer.json", dst)
    return 0


if __name__ == "__main__":
    sys.exit(f32_copy(*sys.argv[1:3]))

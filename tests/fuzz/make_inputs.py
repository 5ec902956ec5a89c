"""Writes small hostile and well-formed inputs (Python stdlib only).

usage: make_inputs.py tokenizer OUT.json      the minimal byte-level BPE tokenizer (fuzz seed, tests)
       make_inputs.py bad GOOD_MODEL_DIR OUT  the cases tests/test_harden_inputs.sh expects to fail
"""
import copy, json, os, struct, sys

QWEN_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_alphabet():
    out, n = [], 0
    for b in range(256):
        printable = 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255
        out.append(chr(b if printable else 256 + n))
        n += 0 if printable else 1
    return out


def min_tokenizer():
    alpha = byte_alphabet()
    vocab = {c: i for i, c in enumerate(alpha)}
    merges = []
    for a, b in [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("Ġ", "w"), ("o", "r"), ("Ġw", "or"),
                 ("l", "d"), ("Ġwor", "ld"), ("Ġ", "t"), ("Ġt", "he"), ("1", "2")]:
        vocab.setdefault(a + b, len(vocab))
        merges.append(a + " " + b)
    added = [{"id": 300 + i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, c in enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])]
    return {"version": "1.0", "added_tokens": added, "normalizer": {"type": "NFC"},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN_RE}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
            "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "byte_fallback": False, "ignore_merges": False, "vocab": vocab, "merges": merges}}


def dump(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, ensure_ascii=False)


def bad(good, out):
    os.makedirs(out, exist_ok=True)
    tok = min_tokenizer()
    dump(os.path.join(out, "tok_ok.json"), tok)

    def tcase(name, fn):
        t = copy.deepcopy(tok)
        fn(t)
        dump(os.path.join(out, name + ".json"), t)

    tcase("tok_neg_id", lambda t: t["added_tokens"][0].__setitem__("id", -5))
    tcase("tok_huge_id", lambda t: t["added_tokens"][1].__setitem__("id", 2**40))
    tcase("tok_long_merge", lambda t: t["model"]["merges"].append("a" * 1500 + " " + "b" * 3000))
    tcase("tok_long_merge_utf8", lambda t: t["model"]["merges"].append("é" * 600 + " x"))
    # Catastrophic backtracking: the match limit is a PCRE2 error, not "no match".
    tcase("tok_backtrack", lambda t: t["pre_tokenizer"]["pretokenizers"][0]["pattern"].__setitem__("Regex", "(a|aa)+$"))
    with open(os.path.join(out, "backtrack.txt"), "w") as f:
        f.write("a" * 5000 + "b")

    raw = open(os.path.join(good, "model.safetensors"), "rb").read()
    hlen = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + hlen])
    data = raw[8 + hlen:]
    cfg = json.load(open(os.path.join(good, "config.json")))

    def model(case, hdr=None, body=None, config=None):
        d = os.path.join(out, case)
        os.makedirs(d, exist_ok=True)
        dump(os.path.join(d, "config.json"), cfg if config is None else config)
        h = json.dumps(header if hdr is None else hdr).encode()
        open(os.path.join(d, "model.safetensors"), "wb").write(struct.pack("<Q", len(h)) + h + (data if body is None else body))

    def ccase(case, **kv):
        c = copy.deepcopy(cfg)
        tc = c.get("text_config", c)
        for k, v in kv.items():
            tc[k] = v
        model(case, config=c)

    ccase("cfg_layers_huge", num_hidden_layers=1000000000)
    ccase("cfg_heads_overflow", num_attention_heads=4096, num_key_value_heads=4096, head_dim=4096)
    ccase("cfg_eps_negative", rms_norm_eps=-1e-6)
    ccase("cfg_eps_zero", rms_norm_eps=0)
    ccase("cfg_eps_underflow", rms_norm_eps=1e-60)
    ccase("cfg_eos_huge", eos_token_id=2**32 + 1)
    ccase("cfg_eos_negative", eos_token_id=[-3])
    ccase("cfg_eos_vocab", eos_token_id=cfg.get("text_config", cfg)["vocab_size"])
    ccase("cfg_head_dim_zero", head_dim=0)
    ccase("cfg_fewer_layers", num_hidden_layers=cfg.get("text_config", cfg)["num_hidden_layers"] - 1)

    q = next(k for k in header if k.endswith("layers.0.self_attn.q_proj.weight"))
    begin = header[q]["data_offsets"][0]
    for case, val in [("st_nan", b"\xc0\x7f"), ("st_inf", b"\x80\xff")]:
        body = bytearray(data)
        body[begin + 2 * 77:begin + 2 * 78] = val
        model(case, body=bytes(body))
    h = copy.deepcopy(header)
    h[q]["shape"] = [2**62, 2**62]
    model("st_shape_overflow", hdr=h)
    # Shard index cases: the good single file renamed as a shard.
    for case, wm in [("idx_empty", {}), ("idx_dotdot", {q: ".."}), ("idx_not_string", {q: 7}),
                     ("idx_wrong_shard", {q: "other.safetensors"})]:
        d = os.path.join(out, case)
        os.makedirs(d, exist_ok=True)
        dump(os.path.join(d, "config.json"), cfg)
        open(os.path.join(d, "model-1.safetensors"), "wb").write(raw)
        open(os.path.join(d, "other.safetensors"), "wb").write(struct.pack("<Q", 2) + b"{}")
        dump(os.path.join(d, "model.safetensors.index.json"), {"metadata": {}, "weight_map": wm})

    def npy(case, header_text, payload, version=1):
        d = header_text + " " * (63 - (10 + len(header_text)) % 64) + "\n"
        lenb = struct.pack("<H", len(d)) if version == 1 else struct.pack("<I", len(d))
        open(os.path.join(out, case + ".npy"), "wb").write(b"\x93NUMPY" + bytes([version, 0]) + lenb + d.encode() + payload)

    ids16 = struct.pack("<16i", *range(16))
    npy("npy_3d", "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2, 4), }", ids16)
    npy("npy_descr_unquoted", "{'descr': <i4, 'fortran_order': False, 'shape': (2, 8), }", ids16)
    npy("npy_descr_bad", "{'descr': '<i4x', 'fortran_order': False, 'shape': (2, 8), }", ids16)
    npy("npy_shape_overflow", "{'descr': '<i8', 'fortran_order': False, 'shape': (99999999999999999999, 8), }", ids16)
    npy("npy_dup_key", "{'descr': '<i4', 'descr': '<i4', 'fortran_order': False, 'shape': (2, 8), }", ids16)
    npy("npy_key_in_value", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 8), 'x': \"'descr': '<i4'\"}", ids16)
    npy("npy_ok", "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 8), }", ids16)
    open(os.path.join(out, "npy_hlen_past_end.npy"), "wb").write(b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + b"{}")


if __name__ == "__main__":
    if sys.argv[1] == "tokenizer":
        dump(sys.argv[2], min_tokenizer())
    else:
        bad(sys.argv[2], sys.argv[3])

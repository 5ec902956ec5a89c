"""autoq's quantize and eval on the hybrid fixtures against llm-compressor's own (stdlib only, so CI runs it).

The references are tests/ref/validate_exports.py --numerics's (llmcompressor 0.14.0.1, compressed-tensors
0.19.0, transformers 5.17.0, torch 2.11.0, CPU), in tests/fixtures/exports/ and exports_validation.json:
    check_hybrid_numerics.py weights-only RECIPE OUT      the recipe with every input quantizer off
    check_hybrid_numerics.py f32 SRC DST                  a float32 copy of a bf16 checkpoint (f32_copy.py)
    check_hybrid_numerics.py rtn KIND DIR                 DIR = autoq quantize KIND_recipe.json (RTN)
    check_hybrid_numerics.py logits KIND W.npy L.npy E.json
        W.npy / L.npy = autoq eval --logits with weights-only RECIPE / with KIND_recipe.json, E.json its --json
    check_hybrid_numerics.py gptq KIND DIR E.json
        DIR = autoq quantize --quantizer gptq KIND_int_recipe.json of the f32 copy, E.json = autoq eval
        --quantizer gptq --json on the bf16 model
Prints one line of numbers; exit 0 when within the tolerances below, 1 otherwise.
"""
import ast, json, re, struct, sys
from array import array

from f32_copy import f32_copy

E = "tests/fixtures/exports"


def safetensors(path):
    """{name: (dtype, shape, bytes)} and the metadata of a one-file checkpoint."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    meta = hdr.pop("__metadata__", {})
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in hdr.items()}, meta


def npy_f32(path):
    with open(path, "rb") as f:
        assert f.read(6) == b"\x93NUMPY", path
        major = f.read(2)[0]
        n = struct.unpack("<H" if major == 1 else "<I", f.read(2 if major == 1 else 4))[0]
        h = ast.literal_eval(f.read(n).decode())
        assert h["descr"] == "<f4" and not h["fortran_order"], h
        a = array("f")
        a.frombytes(f.read())
    return a


def validation(kind):
    return json.load(open("tests/fixtures/exports_validation.json"))[kind]["numerics"]


def weights_only(recipe, out):
    r = json.load(open(recipe))
    for f in r["formats"]:
        f["definition"]["quant_cfg"]["*input_quantizer"] = {"enable": False}
    json.dump(r, open(out, "w"))
    return 0


def qconfig(d):
    c = json.load(open(d + "/config.json"))
    return c.get("quantization_config") or c.get("text_config", {}).get("quantization_config")


def canonical(qc):
    """config groups, their targets and the ignore list as sets (compressed-tensors matches each module
    against all of them: group_N and the order of the names mean nothing)"""
    q = dict(qc, config_groups=sorted(json.dumps(dict(g, targets=sorted(g["targets"])), sort_keys=True)
                                      for g in qc["config_groups"].values()))
    # a vision tower: llm-compressor lists its linears, autoq (which never loads it) names it by one pattern
    q["ignore"] = sorted({"re:^model\\.visual\\..*$" if n.startswith("model.visual.") else n for n in q["ignore"]})
    return q


def rtn(kind, d):
    """Byte for byte: every tensor of llm-compressor's checkpoint but the RMSNorm weights it saves through a
    bf16 round trip of (1 + w) (off by up to 2^-8; autoq copies them as stored), and autoq's mtp.* beyond
    it (transformers drops them); the quantization_config equal up to the order of groups and ignores."""
    ref = json.load(open(f"{E}/{kind}_lc_rtn.json"))
    t, _ = safetensors(d + "/model.safetensors")
    import hashlib

    ours = {k: [v[0], v[1], hashlib.sha256(v[2]).hexdigest()] for k, v in t.items()}
    norm = re.compile(r"(^|\.)(\w*norm)\.weight$")
    bad = [k for k, v in ref["tensors"].items() if ours.get(k) != v and not (norm.search(k) and k in ours and ours[k][:2] == v[:2])]
    norms = sum(1 for k, v in ref["tensors"].items() if ours.get(k) != v) - len(bad)
    extra = sorted(k for k in ours if k not in ref["tensors"])
    quantized = sum(1 for k in ref["tensors"] if k.endswith(".weight_scale"))
    same_qc = canonical(qconfig(d)) == canonical(ref["quantization_config"])
    print(f"{kind}: {len(ref['tensors']) - norms - len(bad)} of {len(ref['tensors'])} tensors byte-equal "
          f"({quantized} quantized linears' codes and scales), {norms} RMSNorm weights llm-compressor changed, "
          f"{len(extra)} mtp tensors autoq keeps; quantization_config {'equal' if same_qc else 'DIFFERS'}"
          + (f"; DIFFER: {bad[:5]}" if bad else ""))
    return 0 if not bad and quantized and same_qc and all(k.startswith("mtp.") for k in extra) else 1


def logits(kind, w_npy, l_npy, e_json):
    """Weights alone: max |dlogit| <= 1e-3 against llm-compressor's checkpoint (measured <= 2.7e-5). With the
    inputs quantized per token the random fixtures are chaotic (a 1e-6 relative change of the input scales
    moves a logit by 0.7; the same checkpoint in float32 and float64 arithmetic moves the MoE fixtures' KL by
    up to 50%, top-k routing flipping): max |dlogit| and llm-compressor's own NLL and KL are printed, and
    eval's NLL must lie within 5e-3 relative and its KL within 5% of README §4's formula applied to the same
    checkpoint in float32 by validate_exports.py (forward pre-hooks on each quantized linear, independent of
    both tools). llm-compressor's in-memory forward equals that formula on the dense fixture; on the MoE ones
    it quantizes the unfused experts' 2-D inputs per tensor (compressed-tensors' token strategy keeps the
    first two dimensions), so its KL differs there."""
    rec = validation(kind)["rtn"]
    w, lw = npy_f32(w_npy), npy_f32(f"{E}/{kind}_lc_rtn_weights_logits.npy")
    l, ll = npy_f32(l_npy), npy_f32(f"{E}/{kind}_lc_rtn_logits.npy")
    dw = max(abs(a - b) for a, b in zip(w, lw))
    dl = max(abs(a - b) for a, b in zip(l, ll))
    e = json.load(open(e_json))
    f = rec["formula"]["float32"]
    rn, rk = abs(e["nll_quantized"] - f["nll"]) / f["nll"], abs(e["kl"] - f["kl"]) / f["kl"]
    print(f"{kind}: max |dlogit| weights only {dw:.2e} (llm-compressor's checkpoint), inputs quantized {dl:.3f}; "
          f"NLL {e['nll_quantized']:.5f} (formula {f['nll']:.5f}, {rn:.1e} relative; llm-compressor "
          f"{rec['nll']['llmcompressor']:.5f}), KL {e['kl']:.4f} (formula {f['kl']:.4f}, {100 * rk:.2f}%; "
          f"llm-compressor {rec['kl']['llmcompressor']:.4f})")
    return 0 if len(w) == len(lw) and len(l) == len(ll) and dw <= 1e-3 and rn <= 5e-3 and rk <= 0.05 else 1


def scales(dtype, b):
    if dtype == "F32":
        a = array("f")
        a.frombytes(b)
        return a
    assert dtype == "BF16", dtype
    a = array("f")
    a.frombytes(bytes(x for i in range(0, len(b), 2) for x in (0, 0, b[i], b[i + 1])))
    return a


def gptq(kind, d, e_json):
    """Float32 (both tools compute in it): the codes of the first layer (the unquantized model's inputs in
    both sequential pipelines) >= 99% equal, all >= 90% (a few flipped codes change the next layers'
    Hessians), scales within 1e-6 relative (both from the weights' min / max). The bf16 deployment's NLL
    within 1% of llm-compressor's bf16 run's (whose Hessians come from bf16 activations: 66-78% equal codes);
    KL is printed (chaotic, as above)."""
    ref, meta = safetensors(f"{E}/{kind}_int_lc_gptq_f32.safetensors")
    ours, _ = safetensors(d + "/model.safetensors")
    by_layer, srel = {}, 0.0
    for k in sorted(ref):
        dt, shape = json.loads(meta[k])
        a, b = ours[k], ref[k][2]
        if a[0] != dt or a[1] != shape:
            print(f"{kind}: {k} is {a[:2]} in autoq's checkpoint, {[dt, shape]} in llm-compressor's")
            return 1
        if k.endswith(".weight"):
            l = re.search(r"layers\.(\d+)\.", k)[1]
            e = by_layer.setdefault(int(l), [0, 0])
            e[0] += sum(x == y for x, y in zip(a[2], b))
            e[1] += len(b)
        else:
            x, y = scales(dt, a[2]), scales(dt, b)
            srel = max([srel] + [abs(p - q) / abs(q) for p, q in zip(x, y) if q])
    same, total = sum(v[0] for v in by_layer.values()), sum(v[1] for v in by_layer.values())
    first = by_layer[min(by_layer)]
    e = json.load(open(e_json))
    rec = validation(kind)["gptq"]
    nll = rec["nll"]["llmcompressor"]
    rn = abs(e["nll_quantized"] - nll) / nll
    print(f"{kind}: float32 GPTQ codes equal {same}/{total} ({100 * same / total:.2f}%; by layer "
          + ", ".join(f"{l}: {100 * v[0] / v[1]:.2f}%" for l, v in sorted(by_layer.items()))
          + f"), scales max relative difference {srel:.1e}; bf16 NLL {e['nll_quantized']:.5f} (llm-compressor "
          f"{nll:.5f}), KL {e['kl']:.4f} (llm-compressor {rec['kl']['llmcompressor']:.4f})")
    return 0 if first[0] >= 0.99 * first[1] and same >= 0.9 * total and srel <= 1e-6 and rn <= 0.01 else 1


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    sys.exit({"weights-only": weights_only, "f32": f32_copy, "rtn": rtn, "logits": logits, "gptq": gptq}[cmd](*args))

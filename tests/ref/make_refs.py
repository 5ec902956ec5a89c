"""Reference figures for autoq's tests, from Hugging Face transformers/tokenizers (PyTorch, fp32).

Run where torch + transformers are installed (the GPU machine has both):
    python3 tests/ref/make_refs.py --shared ../shared --out tests/fixtures
Writes (all small, committed):
  qwen3_tiny_ids.npy          8 x 256 ids: the first windows of calib.txt under qwen3-tiny's tokenizer
  qwen3_tiny_ref.json         per-sample mean next-token NLL
  qwen3_tiny_logits.npy       logits of sample 0 at positions ROWS, fp32 [len(ROWS), V]
  qwen3-vl-tiny/              a Qwen3-VL checkpoint made here (untied lm_head, heads*head_dim != hidden,
                              4 query heads per kv head, rope theta 5e6, tiny vision tower), bf16
  qwen3_vl_tiny_ids.npy, qwen3_vl_tiny_ref.json, qwen3_vl_tiny_logits.npy
  qwen3_tiny_scores_ref.json  per-group KL and gradient scores (README §6) computed with PyTorch
"""
import argparse, json, os, types

import numpy as np
import torch
import torch.nn.functional as F

ROWS = [0, 1, 2, 127, 255]


def nll_and_logits(model, ids):
    out = []
    with torch.no_grad():
        for i in range(ids.shape[0]):
            x = torch.tensor(ids[i : i + 1], dtype=torch.long)
            logits = model(input_ids=x).logits.float()[0]
            nll = F.cross_entropy(logits[:-1].double(), x[0, 1:], reduction="mean").item()
            out.append((nll, logits))
    return out


def write_forward_ref(model, ids, out, name):
    res = nll_and_logits(model, ids)
    rows = [r for r in ROWS if r < ids.shape[1]]
    np.save(os.path.join(out, f"{name}_logits.npy"), res[0][1][rows].numpy().astype(np.float32))
    ref = {"nll": [r[0] for r in res], "logit_rows": rows, "num_samples": int(ids.shape[0]), "seq_len": int(ids.shape[1])}
    json.dump(ref, open(os.path.join(out, f"{name}_ref.json"), "w"), indent=1)
    print(name, "nll", ref["nll"])


def tiny_ids(shared, out):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(shared, "models/qwen3-tiny/tokenizer.json"))
    text = open(os.path.join(shared, "data/calib.txt"), encoding="utf-8").read()[:200000]
    ids = tok.encode(text).ids[: 8 * 256]
    arr = np.array(ids, dtype=np.int32).reshape(8, 256)
    np.save(os.path.join(out, "qwen3_tiny_ids.npy"), arr)
    return arr


def make_vl(out):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(0)
    text = dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                num_attention_heads=8, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6,
                max_position_embeddings=1024,
                rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [6, 5, 5],
                                 "mrope_interleaved": True})
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=128,
                  patch_size=8, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                  num_position_embeddings=64, deepstack_visual_indexes=[0])
    cfg = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False)
    model = Qwen3VLForConditionalGeneration(cfg)
    # Larger weights than the 0.02 init, so the logits are not flat.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 1.0 / p.shape[1] ** 0.5)
            elif "norm" in n:
                p.copy_(1 + 0.2 * torch.randn_like(p))
    d = os.path.join(out, "qwen3-vl-tiny")
    model.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
    return d


# ---- README §4 numerics (ModelOpt dialect), independent of autoq ----
def fq(x, bits, narrow=True):
    m = 2 ** (bits - 1) - 1
    amax = x.abs().amax(dim=-1, keepdim=True)
    s = amax / m
    q = torch.clamp(torch.round(x / torch.where(amax < 2**-24, 1.0, s)), -m if narrow else -m - 1, m)
    return torch.where(amax < 2**-24, torch.zeros_like(x), q * s)


def groups_of(model):
    gs = []
    for l, layer in enumerate(model.model.layers):
        p = f"model.layers.{l}."
        a, m = layer.self_attn, layer.mlp
        gs.append((p + "self_attn.qkv", [a.q_proj, a.k_proj, a.v_proj]))
        gs.append((p + "self_attn.o_proj", [a.o_proj]))
        gs.append((p + "mlp.gate_up", [m.gate_proj, m.up_proj]))
        gs.append((p + "mlp.down_proj", [m.down_proj]))
    return gs


def patch_linear(mod, wbits=4, abits=8):
    mod.q_on = False
    mod.wq = fq(mod.weight.detach(), wbits)

    def fwd(self, x):
        if self.q_on:
            return F.linear(fq(x, abits), self.wq)
        return F.linear(x, self.weight)

    mod.forward = types.MethodType(fwd, mod)


def scores_ref(model, ids):
    gs = groups_of(model)
    for _, ms in gs:
        for m in ms:
            patch_linear(m)
    kl = {n: 0.0 for n, _ in gs}
    grad = {n: 0.0 for n, _ in gs}
    for i in range(ids.shape[0]):
        x = torch.tensor(ids[i : i + 1], dtype=torch.long)
        with torch.no_grad():
            lp = F.log_softmax(model(input_ids=x).logits.float()[0], -1)
            for n, ms in gs:
                for m in ms:
                    m.q_on = True
                lq = F.log_softmax(model(input_ids=x).logits.float()[0], -1)
                for m in ms:
                    m.q_on = False
                kl[n] += (lp.exp().double() * (lp.double() - lq.double())).sum().item()
        # gradient: dL/dY of every linear in the unquantized model, dY from X of the same pass
        saved = {}

        def hook(mod, inp, outp):
            outp.retain_grad()
            saved[mod] = (inp[0].detach(), outp)

        hs = [m.register_forward_hook(hook) for _, ms in gs for m in ms]
        logits = model(input_ids=x).logits.float()[0]
        loss = F.cross_entropy(logits[:-1], x[0, 1:], reduction="mean")
        model.zero_grad()
        loss.backward()
        for h in hs:
            h.remove()
        with torch.no_grad():
            for n, ms in gs:
                for m in ms:
                    X, Y = saved[m]
                    dY = F.linear(fq(X, 8), m.wq) - Y.detach()
                    grad[n] += ((Y.grad.double() * dY.double()) ** 2).sum().item()
        print("sample", i, "done")
    return kl, grad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--skip-scores", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(min(8, os.cpu_count()))
    from transformers import AutoModelForCausalLM, Qwen3VLForConditionalGeneration

    ids = tiny_ids(args.shared, args.out)
    tiny = AutoModelForCausalLM.from_pretrained(os.path.join(args.shared, "models/qwen3-tiny"), dtype=torch.float32)
    tiny.eval()
    write_forward_ref(tiny, ids, args.out, "qwen3_tiny")

    vl_dir = make_vl(args.out)
    vl = Qwen3VLForConditionalGeneration.from_pretrained(vl_dir, dtype=torch.float32).eval()
    rng = np.random.default_rng(0)
    vl_ids = rng.integers(0, 512, size=(3, 64), dtype=np.int32)
    np.save(os.path.join(args.out, "qwen3_vl_tiny_ids.npy"), vl_ids)
    write_forward_ref(vl, vl_ids, args.out, "qwen3_vl_tiny")

    if not args.skip_scores:
        kl, grad = scores_ref(tiny, ids)
        json.dump({"model": "qwen3-tiny", "format": "w4a8", "num_samples": 8, "seq_len": 256,
                   "kl": kl, "gradient": grad}, open(os.path.join(args.out, "qwen3_tiny_scores_ref.json"), "w"), indent=1)


if __name__ == "__main__":
    main()

"""Writes tests/fixtures/gated_delta_ref.json: the Gated DeltaNet core computed by transformers 5.17's own
Qwen3_5GatedDeltaNet module on random inputs, for tests/test_gated_delta.c.

usage: python3 tests/ref/gated_delta_ref.py [OUT.json]      (needs torch and transformers==5.17.0)

The module runs whole, with its in_proj_* linears set to selections (so qkv, z, b, a are exactly the
inputs the C core takes) and out_proj to a selection of the gated norm's output; autograd gives the
activation gradients of sum(dout * out). Three runs per case:
- float64 truth: the module in float64, with the module's `torch.float32` read as float64 and
  Tensor.float() as .double() (its delta rule functions, gates and gated norm cast to float32 otherwise),
  through torch_recurrent_gated_delta_rule;
  forward and backward. The test compares autoq's fp32 with these.
- float32 through torch_chunk_gated_delta_rule (the path transformers takes on a prefill) and float32
  through torch_recurrent_gated_delta_rule: their outputs are stored too, and this script checks
  that both agree with the float64 truth within 1e-4 (max |diff| / max |truth|), and that the float64
  chunked path agrees with the float64 recurrent one within 1e-10.
"""
import json, sys, types

import torch
import transformers
from transformers.models.qwen3_5 import modeling_qwen3_5 as mq
from transformers.models.qwen3_5.configuration_qwen3_5 import Qwen3_5TextConfig

assert transformers.__version__ == "5.17.0", transformers.__version__

# (T, Hk, Hv, dk, dv, K, eps): Hv > Hk in both; the second crosses a 64-token chunk of the chunked path
# (and of autoq's backward checkpoints).
CASES = [(20, 2, 4, 8, 8, 4, 1e-6), (70, 1, 2, 8, 4, 4, 1e-6)]


class Float64AsFloat32(types.ModuleType):
    """torch, except that torch.float32 is torch.float64."""

    def __getattr__(self, name):
        return torch.float64 if name == "float32" else getattr(torch, name)


def make_module(T, Hk, Hv, dk, dv, K, eps, gen):
    C, VD = 2 * Hk * dk + Hv * dv, Hv * dv
    hidden = C + VD + 2 * Hv  # the inputs side by side: qkv | z | b | a
    cfg = Qwen3_5TextConfig(
        hidden_size=hidden, linear_num_key_heads=Hk, linear_num_value_heads=Hv, linear_key_head_dim=dk,
        linear_value_head_dim=dv, linear_conv_kernel_dim=K, rms_norm_eps=eps, num_hidden_layers=1,
        layer_types=["linear_attention"], hidden_act="silu")
    m = mq.Qwen3_5GatedDeltaNet(cfg, 0)
    eye = torch.eye(hidden)
    with torch.no_grad():
        m.in_proj_qkv.weight.copy_(eye[:C])
        m.in_proj_z.weight.copy_(eye[C:C + VD])
        m.in_proj_b.weight.copy_(eye[C + VD:C + VD + Hv])
        m.in_proj_a.weight.copy_(eye[C + VD + Hv:])
        m.out_proj.weight.copy_(eye[:, :VD])
        m.conv1d.weight.copy_(0.5 * torch.randn(C, 1, K, generator=gen))
        m.A_log.copy_(torch.log(torch.empty(Hv).uniform_(0.005, 0.5, generator=gen)))  # slow and fast decays
        m.dt_bias.copy_(0.5 * torch.randn(Hv, generator=gen))
        m.norm.weight.copy_(1 + 0.3 * torch.randn(dv, generator=gen))
    return m


def run(m, x, dout, VD, dtype, recurrent, as_f64):
    """out (T, VD) and d(sum dout*out)/dx for the module in dtype; the delta rule recurrent or chunked."""
    m = m.to(dtype)
    x = x.to(dtype).clone().requires_grad_(True)
    saved = (mq.torch, mq.torch_chunk_gated_delta_rule, torch.Tensor.float)
    if as_f64:
        mq.torch = Float64AsFloat32("torch")
        torch.Tensor.float = torch.Tensor.double  # the gates' a.float(), A_log.float()
    if recurrent:
        rec = mq.torch_recurrent_gated_delta_rule
        mq.torch_chunk_gated_delta_rule = lambda *a, **kw: rec(*a, **{k: v for k, v in kw.items() if k != "chunk_size"})
    try:
        out = m(x[None])[0, :, :VD]
        (out * dout.to(dtype)).sum().backward()
    finally:
        mq.torch, mq.torch_chunk_gated_delta_rule, torch.Tensor.float = saved
    return out.detach().double(), x.grad.double()


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def flat(t, digits):
    return [float(f"{v:.{digits}g}") for v in t.double().flatten().tolist()]


def make_case(T, Hk, Hv, dk, dv, K, eps, seed):
    gen = torch.Generator().manual_seed(seed)
    C, VD = 2 * Hk * dk + Hv * dv, Hv * dv
    m = make_module(T, Hk, Hv, dk, dv, K, eps, gen)
    x = torch.cat([torch.randn(T, C, generator=gen), torch.randn(T, VD, generator=gen),
                   torch.randn(T, Hv, generator=gen), 2 * torch.randn(T, Hv, generator=gen)], 1).float()
    dout = torch.randn(T, VD, generator=gen).float()
    out64, dx64 = run(m, x, dout, VD, torch.float64, True, True)
    outc64, _ = run(m, x, dout, VD, torch.float64, False, True)
    outc32, _ = run(m, x, dout, VD, torch.float32, False, False)
    outr32, _ = run(m, x, dout, VD, torch.float32, True, False)
    assert rel(outc64, out64) < 1e-10, rel(outc64, out64)
    for name, o in (("chunked fp32", outc32), ("recurrent fp32", outr32)):
        print(f"case T {T} Hk {Hk} Hv {Hv}: torch {name} vs float64: {rel(o, out64):.2e}")
        assert rel(o, out64) < 1e-4
    p = {k: v.detach().double() for k, v in m.named_parameters()}
    s = [C, C + VD, C + VD + Hv]
    return {
        "T": T, "Hk": Hk, "Hv": Hv, "dk": dk, "dv": dv, "K": K, "eps": eps,
        "conv_w": flat(p["conv1d.weight"].float(), 9), "A_log": flat(p["A_log"].float(), 9),
        "dt_bias": flat(p["dt_bias"].float(), 9), "norm_w": flat(p["norm.weight"].float(), 9),
        "qkv": flat(x[:, :s[0]], 9), "z": flat(x[:, s[0]:s[1]], 9), "b": flat(x[:, s[1]:s[2]], 9),
        "a": flat(x[:, s[2]:], 9), "dout": flat(dout, 9),
        "out": flat(out64, 10), "dqkv": flat(dx64[:, :s[0]], 10), "dz": flat(dx64[:, s[0]:s[1]], 10),
        "db": flat(dx64[:, s[1]:s[2]], 10), "da": flat(dx64[:, s[2]:], 10),
        "out_chunk_f32": flat(outc32, 9), "out_recurrent_f32": flat(outr32, 9),
    }


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/gated_delta_ref.json"
    torch.manual_seed(0)  # the module's own init draws (A_log), overwritten, but keep the run repeatable
    cases = [make_case(*c, seed=26 + i) for i, c in enumerate(CASES)]
    doc = {"generator": "tests/ref/gated_delta_ref.py", "transformers": transformers.__version__,
           "torch": torch.__version__, "cases": cases}
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

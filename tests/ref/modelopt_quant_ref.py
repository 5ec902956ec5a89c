"""ModelOpt's own quantizers on random bf16-valued tensors, for tests/test_quant.c to compare autoq's CPU
fake quantization against (tests/fixtures/modelopt_quant_ref.json). CPU only:
    python3 tests/ref/modelopt_quant_ref.py --out tests/fixtures/modelopt_quant_ref.json
What runs on the CPU in ModelOpt 0.47 is what is compared:
- fp8 weights: TensorQuantizer(num_bits=(4, 3), axis=0), max-calibrated (its fake_e4m3 eager path);
  fp8 inputs: TensorQuantizer(num_bits=(4, 3), type="dynamic", block_sizes={-1: None}) (amax per token).
- int4 groups of 128 (w4a16, w4a8_fp8 weights): TensorQuantizer(num_bits=4, block_sizes={-1: 128,
  "type": "static"}), max-calibrated.
- nvfp4 and mxfp4: ModelOpt's fake-quant kernels for E2M1 blocks are CUDA / Triton only, so the reference is
  NVFP4QTensor / MXFP4QTensor quantize + dequantize (the export path): the same roundings, except that export
  clamps an NVFP4 block scale at 2^-9 where the fake-quant kernel (and autoq) flush it to zero; the rows here
  keep every block scale far above that. An NVFP4 input is quantized one row at a time (autoq takes each
  token's own amax as the global scale).
Values are stored as float32 bit patterns (exact).
"""
import argparse, importlib.metadata, json, warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")


def bits(t):
    return np.asarray(t, dtype=np.float32).view(np.uint32).ravel().tolist()


def calibrated(q, x):
    q.enable_calib(), q.disable_quant()
    q(x)
    q.load_calib_amax()
    q.disable_calib(), q.enable_quant()
    return q(x)


def main():
    from modelopt.torch.quantization.config import QuantizerAttributeConfig
    from modelopt.torch.quantization.nn import TensorQuantizer
    from modelopt.torch.quantization.qtensor import MXFP4QTensor, NVFP4QTensor

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/modelopt_quant_ref.json")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(1234)
    rows, cols = 2, 256
    # bf16-representable values, rows of different magnitude (2^-3 and 2^5)
    x = (torch.randn(rows, cols, generator=g) * torch.tensor([[0.125], [32.0]])).to(torch.bfloat16).float()

    def q(**cfg):
        return TensorQuantizer(QuantizerAttributeConfig(**cfg))

    nv_w, s, s2 = NVFP4QTensor.quantize(x.clone(), 16)
    nv_w = nv_w.dequantize(dtype=torch.float32, scale=s, double_scale=s2, block_sizes={-1: 16})
    nv_in = []
    for r in range(rows):
        t, s, s2 = NVFP4QTensor.quantize(x[r:r + 1].clone(), 16)
        nv_in.append(t.dequantize(dtype=torch.float32, scale=s, double_scale=s2, block_sizes={-1: 16}))
    mx, s = MXFP4QTensor.quantize(x.clone(), 32)
    mx = mx.dequantize(dtype=torch.float32, scale=s, block_sizes={-1: 32})
    cases = {
        "fp8": (calibrated(q(num_bits=(4, 3), axis=0), x), q(num_bits=(4, 3), type="dynamic", block_sizes={-1: None})(x)),
        "nvfp4": (nv_w, torch.cat(nv_in)),
        "mxfp4": (mx, mx),
        "w4a16": (calibrated(q(num_bits=4, block_sizes={-1: 128, "type": "static"}), x), None),
    }
    out = {"versions": {p: importlib.metadata.version(p) for p in ("torch", "nvidia-modelopt")},
           "rows": rows, "cols": cols, "x": bits(x), "cases": []}
    for name, (w, a) in cases.items():
        out["cases"].append({"format": name, "weight": bits(w.detach()), "input": bits(a.detach()) if a is not None else None})
    json.dump(out, open(args.out, "w"))
    print("wrote", args.out)


if __name__ == "__main__":
    main()

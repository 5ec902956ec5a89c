"""Applies autoq's exports with the real tools, as their users do, and checks which modules they quantize.

Needs torch, torchvision, transformers 5.17, llmcompressor, compressed-tensors and nvidia-modelopt (CPU is enough):
    pip install torch torchvision transformers==5.17.0 llmcompressor compressed-tensors nvidia-modelopt
    python3 tests/ref/validate_exports.py --tiny ../shared/models/qwen3-tiny --out tests/fixtures/exports_validation.json
For tests/fixtures/exports/{tiny,vl,moe,vl_moe}_* (qwen3-tiny, Qwen3-VL, Qwen3-MoE and Qwen3-VL-MoE):
- llm-compressor: the model is loaded inside llmcompressor's load_quantizable_moe (the MoE loading path it
  asks for: transformers 5 keeps a layer's experts as fused 3-D parameters, which it unfuses into per-expert
  Linear modules mlp.experts.N.{gate,up,down}_proj) and oneshot runs the YAML recipe (GPTQ) on the fixture's
  token windows. We read which modules carry a quantization scheme (weight and input bits) and which
  parameters GPTQ changed: exactly the scheme-carrying linears' weights, never a router, lm_head or vision tower.
  save_pretrained(save_compressed=True) must then hold a weight_scale for exactly those linears.
- ModelOpt: mtq.quantize applies the quant_cfg JSON to the model as transformers loads it; ModelOpt wraps
  fused experts itself (_QuantFusedExperts: per-expert weight quantizers gate_up_proj_weight_quantizers.N
  and down_proj_weight_quantizers.N, one input quantizer per projection). Every enabled quantizer is mapped
  to the linears it quantizes (a gate_up quantizer to expert N's gate_proj and up_proj); one that maps to no
  linear (attention bmm, router, embedding) is reported as unexpected.
Both must give exactly the recipe's quantized linears, with the recipe's weight bits and 8-bit inputs.
The recipes of the new formats (tiny_formats, vl_formats, vl_w4a8fp8) are compared finer: each linear's weight
and input numerics as "<int|float><bits>/<granularity>" (channel, token, group<N>, tensor_group<N>), read from
llm-compressor's QuantizationArgs and from ModelOpt's TensorQuantizers (num_bits, block_sizes, axis); an MXFP4
weight quantizer needs no calibrated amax (its scales come from each block).
    python3 tests/ref/validate_exports.py --only tiny_formats,vl_formats,vl_w4a8fp8 --out new.json
writes only those kinds (their entries were merged into tests/fixtures/exports_validation.json).
The hybrid families (issue 26), one kind per process (llm-compressor registers its MoE loading patch once):
    pip install --no-deps llmcompressor==0.14.0.1 nvidia-modelopt==0.47.0 omegaconf pulp scipy torchvision==0.26.0
    for k in qwen3_5 qwen3_5_moe qwen3_next qwen3_5_int qwen3_5_moe_int qwen3_next_int; do
        AQ=build/autoq python3 tests/ref/validate_exports.py --only $k --merge --numerics; done
applies qwen3_5*, qwen3_5_moe*, qwen3_next* (tests/fixtures/exports) as above (also: shared-expert gates
untouched, each recipe group in one format) and, with --numerics, compares llm-compressor's RTN and GPTQ
with autoq quantize / eval (check_numerics), writing the references tests/test_hybrid_exports.sh compares
autoq with (tests/ref/check_hybrid_numerics.py, stdlib only).
"""
import argparse, hashlib, importlib.metadata, json, os, re, sys

# On the CPU: flash-linear-attention's Triton kernels (fla-core) need a GPU; where it is installed,
# transformers takes the hybrids' Gated DeltaNet from it unless `import fla` fails, then its own torch path.
sys.modules.setdefault("fla", None)

import numpy as np
import torch

from quant_desc import mo_desc  # beside this file

KINDS = [  # name, model folder (tiny: --tiny), token windows, transformers class
    ("tiny", None, "tests/fixtures/qwen3_tiny_ids.npy", "AutoModelForCausalLM"),
    ("vl", "tests/fixtures/qwen3-vl-tiny", "tests/fixtures/qwen3_vl_tiny_ids.npy", "Qwen3VLForConditionalGeneration"),
    ("moe", "tests/fixtures/qwen3-moe-tiny", "tests/fixtures/qwen3_moe_tiny_ids.npy", "AutoModelForCausalLM"),
    ("vl_moe", "tests/fixtures/qwen3-vl-moe-tiny", "tests/fixtures/qwen3_vl_moe_tiny_ids.npy",
     "Qwen3VLMoeForConditionalGeneration"),
    # the floating-point and block formats (configs/formats): mixed recipes, every format in one of them
    ("tiny_formats", None, "tests/fixtures/qwen3_tiny_ids.npy", "AutoModelForCausalLM"),
    ("vl_formats", "tests/fixtures/qwen3-vl-tiny", "tests/fixtures/qwen3_vl_tiny_ids.npy", "Qwen3VLForConditionalGeneration"),
    ("vl_w4a8fp8", "tests/fixtures/qwen3-vl-tiny", "tests/fixtures/qwen3_vl_tiny_ids.npy", "Qwen3VLForConditionalGeneration"),
    # the hybrid families (issue 26): Gated DeltaNet + gated attention (+ shared experts), mixed recipes
    ("qwen3_5", "tests/fixtures/qwen3_5-tiny", "tests/fixtures/qwen3_5_tiny_ids.npy", "Qwen3_5ForCausalLM"),
    ("qwen3_5_moe", "tests/fixtures/qwen3_5-moe-tiny", "tests/fixtures/qwen3_5_moe_tiny_ids.npy",
     "Qwen3_5MoeForConditionalGeneration"),
    ("qwen3_next", "tests/fixtures/qwen3-next-tiny", "tests/fixtures/qwen3_next_tiny_ids.npy", "Qwen3NextForCausalLM"),
]
# each hybrid kind's second recipe, <kind>_int (integer formats only, which autoq's GPTQ takes), on the same model
KINDS += [(k + "_int", d, i, c) for k, d, i, c in KINDS[-3:]]
HYBRID = ("qwen3_5", "qwen3_5_moe", "qwen3_next")
AUTOQ = os.environ.get("AQ", "build/autoq")
# The first four were validated when formats were compared by bits alone; their records keep that form.
BITS_ONLY = ("tiny", "vl", "moe", "vl_moe")
EXPERT = re.compile(r"(.*\.mlp\.experts)\.\d+\.(gate|up|down)_proj$")


def versions():
    def version(p):
        try:
            return importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            return None  # torchvision: only the Qwen3-VL processors want it

    return {p: version(p) for p in
            ("torch", "torchvision", "transformers", "llmcompressor", "compressed-tensors", "nvidia-modelopt")}


def intended(path, bits_only):
    """Linear name -> (weight, input) for every linear the recipe quantizes: bits, or descriptions."""
    r = json.load(open(path))
    fm = {}
    for f in r["formats"]:
        q = f["definition"]["quant_cfg"]
        a = q.get("*input_quantizer", {"enable": False})
        a = a if a.get("enable", True) else None
        if bits_only:
            fm[f["name"]] = (f["bits"], a["num_bits"] if a else None)
        else:
            fm[f["name"]] = (mo_desc(q["*weight_quantizer"]), mo_desc(a) if a else None)
    return {m: fm[g["choice"]] for g in r["groups"] if g["choice"] != "bf16" for m in g["members"]}


def ct_desc(args):
    """compressed-tensors QuantizationArgs as the same description."""
    st, ty = getattr(args.strategy, "value", args.strategy), getattr(args.type, "value", args.type)
    return f"{ty}{args.num_bits}/{st}" + (str(args.group_size) if "group" in st else "")


def mo_quantizer_desc(q, weight):
    """A ModelOpt TensorQuantizer as the same description. After a forward, ModelOpt keeps a per-token
    input ({-1: None}) as the axis of the leading dimensions ((0, 1) for [batch, tokens, features])."""
    nb = q.num_bits
    kind = f"int{nb}" if isinstance(nb, int) else {(4, 3): "float8", (2, 1): "float4"}[tuple(nb)]
    bs = q.block_sizes
    if bs and bs.get(-1) is not None:
        gran = ("tensor_group" if tuple(bs.get("scale_bits") or ()) == (4, 3) else "group") + str(bs[-1])
    elif bs:
        gran = "token"
    elif weight:
        gran = "channel" if q.axis in (0, (0,)) else "tensor"
    else:
        ax = q.axis if isinstance(q.axis, tuple) else (q.axis,) if q.axis is not None else ()
        gran = "token" if ax and ax == tuple(range(len(ax))) else "tensor"
    return f"{kind}/{gran}"


def model_class(name):
    import transformers

    return getattr(transformers, name)


def diff(got, want):
    """[linear, bits the tool gave (None: unquantized), bits the recipe wants (None: bf16)] where they differ."""
    return sorted([n, list(got[n]) if n in got else None, list(want[n]) if n in want else None]
                  for n in set(got) | set(want) if got.get(n) != want.get(n))


def routers(model):
    return [n for n, m in model.named_modules() if n.endswith("mlp.gate")]


NEVER = re.compile(r"(^|\.)(lm_head|visual|embed_tokens|conv1d|shared_expert_gate|mtp|A_log|dt_bias)(\.|$)|norm(\.|$)|\.mlp\.gate(\.|$)")


def forbidden(names):
    """Modules no export may quantize: lm_head, the vision tower, routers, and the hybrids' non-candidates
    (shared-expert gates, the Gated DeltaNet's conv1d, A_log, dt_bias and gated norm, norms, embeddings, mtp)."""
    return sorted(n for n in names if NEVER.search(n))


def lc_model(d, cls_name, dtype=torch.float32):
    """The model as llm-compressor loads a mixture of experts: per-expert Linear modules."""
    from llmcompressor.modeling.moe.linearize import load_quantizable_moe

    cls = model_class(cls_name)
    with load_quantizable_moe(cls):
        return cls.from_pretrained(d, dtype=dtype).eval()


def lc_oneshot(model, recipe, windows):
    from torch.utils.data import DataLoader
    from llmcompressor import oneshot

    batches = [{"input_ids": torch.tensor(w, dtype=torch.long)[None], "attention_mask": torch.ones(1, len(w), dtype=torch.long)}
               for w in windows]
    # The fixtures ship no tokenizer or processor: the batches are token ids already, so oneshot never
    # calls the processor it insists on when a dataset is given.
    oneshot(model=model, recipe=recipe, dataset=DataLoader(batches, batch_size=None), processor=object(),
            num_calibration_samples=len(batches))


def check_llmcompressor(d, cls_name, recipe, windows, want, bits_only):
    model = lc_model(d, cls_name)
    experts = [n for n, m in model.named_modules() if EXPERT.match(n) and isinstance(m, torch.nn.Linear)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    lc_oneshot(model, recipe, windows)
    got, scaled = {}, 0
    for name, m in model.named_modules():
        s = getattr(m, "quantization_scheme", None)
        if s is not None and s.weights is not None:
            a = s.input_activations
            got[name] = ((s.weights.num_bits, a.num_bits if a else None) if bits_only else
                         (ct_desc(s.weights), ct_desc(a) if a else None))
            scaled += hasattr(m, "weight_scale")
    changed = {n.rsplit(".", 1)[0] for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])}
    rts = routers(model)
    saved = saved_weight_scales(model)
    res = {"modifiers": [type(m).__name__ for m in _modifiers(recipe)], "quantized": len(got), "match": got == want,
           "with_weight_scale": scaled, "gptq_changed_exactly_quantized": changed == set(got),
           "lm_head_visual_router_quantized": forbidden(set(got) | changed),
           "saved_weight_scales": len(saved), "saved_weight_scales_match": saved == set(got)}
    res["_got"] = got
    if experts:
        res["expert_linears"] = len(experts)
        res["expert_linears_quantized"] = sum(1 for n in got if EXPERT.match(n))
        res["routers"] = len(rts)
        res["routers_untouched"] = not any(r in got or r in changed for r in rts)
    seg = [n for n, _ in model.named_modules() if n.endswith(".shared_expert_gate")]
    if seg:
        res["shared_expert_gates"] = len(seg)
        res["shared_expert_gates_untouched"] = not any(n in got or n in changed for n in seg)
    if got != want:
        res["diff"] = diff(got, want)
    if changed != set(got):
        res["changed_diff"] = sorted(changed ^ set(got))
    return res


def saved_weight_scales(model):
    """Saves the quantized model as users do (compressed-tensors checkpoint) and returns the modules
    whose weight_scale it holds."""
    import glob, tempfile
    from safetensors import safe_open

    with tempfile.TemporaryDirectory() as out:
        model.save_pretrained(out, save_compressed=True)
        keys = []
        for f in glob.glob(out + "/*.safetensors"):
            with safe_open(f, "pt") as st:
                keys += list(st.keys())
    return {k.removesuffix(".weight_scale") for k in keys if k.endswith(".weight_scale")}


def _modifiers(recipe):
    from llmcompressor.recipe import Recipe

    return Recipe.create_instance(recipe).modifiers


def load_quant_cfg(path):
    """JSON object keys are strings; ModelOpt's block_sizes wants the integer axis -1. This is the
    one conversion a user makes when loading autoq's (or any) quant_cfg JSON for ModelOpt."""

    def fix(o):
        if isinstance(o, dict):
            return {(int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k): fix(v) for k, v in o.items()}
        return o

    cfg = json.load(open(path))
    for q in cfg["quant_cfg"].values():
        if isinstance(q, dict) and "block_sizes" in q:
            q["block_sizes"] = fix(q["block_sizes"])
    return cfg


FUSED_W = re.compile(r"(.*\.mlp\.experts)\.(gate_up|down)_proj_weight_quantizers\.(\d+)$")
FUSED_A = re.compile(r"(.*\.mlp\.experts)\.(gate_up|down)_proj_input_quantizer$")


def quantized_linears(model, bits_only=True):
    """Enabled ModelOpt quantizers -> {linear: [weight bits, input bits]}, the quantizers that map to
    no linear, and the enabled weight quantizers without a calibrated amax."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    num_experts = {n: m.num_experts for n, m in model.named_modules() if hasattr(m, "gate_up_proj_weight_quantizers")}
    w, a, unexpected, uncalibrated = {}, {}, [], []
    for name, q in model.named_modules():
        if not isinstance(q, TensorQuantizer) or not q.is_enabled:
            continue
        if m := FUSED_W.match(name):
            projs = ["gate_proj", "up_proj"] if m[2] == "gate_up" else ["down_proj"]
            targets, into = [f"{m[1]}.{m[3]}.{p}" for p in projs], w
        elif m := FUSED_A.match(name):
            projs = ["gate_proj", "up_proj"] if m[2] == "gate_up" else ["down_proj"]
            targets, into = [f"{m[1]}.{e}.{p}" for e in range(num_experts[m[1]]) for p in projs], a
        elif name.endswith(".weight_quantizer") and isinstance(model.get_submodule(name[:-17]), torch.nn.Linear):
            targets, into = [name[:-17]], w
        elif name.endswith(".input_quantizer") and isinstance(model.get_submodule(name[:-16]), torch.nn.Linear):
            targets, into = [name[:-16]], a
        else:
            unexpected.append(name)
            continue
        for t in targets:
            into[t] = q.num_bits if bits_only else mo_quantizer_desc(q, into is w)
        mx = q.block_sizes and tuple(q.block_sizes.get("scale_bits") or ()) == (8, 0)  # MX: scales from the block alone
        if into is w and getattr(q, "amax", None) is None and not mx:
            uncalibrated.append(name)
    return {n: (w.get(n), a.get(n)) for n in set(w) | set(a)}, unexpected, uncalibrated


def check_modelopt(d, cls_name, quant_cfg, windows, want, bits_only):
    import modelopt.torch.quantization as mtq

    model = model_class(cls_name).from_pretrained(d, dtype=torch.float32).eval()
    ids = [torch.tensor(w, dtype=torch.long)[None] for w in windows]

    def forward_loop(m):
        for x in ids:
            m(input_ids=x)

    mtq.quantize(model, load_quant_cfg(quant_cfg), forward_loop=forward_loop)
    got, unexpected, uncalibrated = quantized_linears(model, bits_only)
    res = {"quantized": len(got), "match": got == want and not unexpected and not uncalibrated,
           "lm_head_visual_router_quantized": forbidden(set(got) | set(unexpected)), "_got": got}
    seg = [n for n, m in model.named_modules() if n.endswith(".shared_expert_gate")]
    if seg:
        res["shared_expert_gates"] = len(seg)
        res["shared_expert_gates_untouched"] = not any(n in got or n.startswith(g + ".") for n in unexpected for g in seg) \
            and not any(g in got for g in seg)
    fused = [n for n, m in model.named_modules() if hasattr(m, "gate_up_proj_weight_quantizers")]
    if fused:
        res["fused_experts_modules"] = len(fused)
        res["expert_linears_quantized"] = sum(1 for n in got if EXPERT.match(n))
        rts = routers(model)
        res["routers"] = len(rts)
        res["routers_untouched"] = not any(n.startswith(r + ".") for n in unexpected for r in rts)
        # transformers 5's routers (TopKRouter) are no nn.Linear: ModelOpt gives them no quantizer at all
        res["router_quantizers"] = sum(1 for n, _ in model.named_modules() for r in rts if n.startswith(r + ".") and n.endswith("quantizer"))
    if got != want:
        res["diff"] = diff(got, want)
    if unexpected:
        res["unexpected_enabled_quantizers"] = unexpected
    if uncalibrated:
        res["uncalibrated_weight_quantizers"] = uncalibrated
    return res


# ---- numerics of the hybrid exports (issue 26) ----
def rtn_recipe(yaml_path, out):
    """The same recipe as round-to-nearest: its config groups and ignore list under QuantizationModifier."""
    import yaml

    y = yaml.safe_load(open(yaml_path))
    mods = y["quant_stage"]["quant_modifiers"]
    g = mods.pop("GPTQModifier")
    for k in ("dampening_frac", "actorder", "block_size"):
        g.pop(k, None)
    mods["QuantizationModifier"] = g
    yaml.safe_dump(y, open(out, "w"))
    return out


def window_logits(model, windows):
    with torch.no_grad():
        return torch.cat([model(input_ids=torch.tensor(w, dtype=torch.long)[None]).logits.float() for w in windows])


def nll_kl(lg, ref, windows):
    """mean next-token NLL, and KL(unquantized || quantized) summed over windows and positions (autoq eval's)"""
    ids = torch.tensor(windows, dtype=torch.long)
    V = lg.shape[-1]
    nll = torch.nn.functional.cross_entropy(lg[:, :-1].reshape(-1, V).double(), ids[:, 1:].reshape(-1))
    p, q = torch.log_softmax(ref.double(), -1), torch.log_softmax(lg.double(), -1)
    return float(nll), float((p.exp() * (p - q)).sum())


def raw_safetensors(path):
    """{name: (dtype, shape, bytes)} of a one-file checkpoint, as the tests read autoq's (stdlib)."""
    import struct

    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in hdr.items()
            if k != "__metadata__"}


def dequantized(dtype, shape, codes, scale):
    """A saved weight's codes times its per-row scale, rounded to bf16 as compressed-tensors decompresses it
    into the bf16 model (and as autoq eval deploys it)."""
    c = torch.from_numpy(np.frombuffer(codes, np.int8).astype(np.float32)) if dtype == "I8" else \
        torch.from_numpy(np.frombuffer(codes, np.uint8).copy()).view(torch.float8_e4m3fn).float()
    return (c.reshape(shape) * torch.from_numpy(scale_values(*scale).copy()).reshape(shape[0], -1)).bfloat16().float()


def lc_quantized(d, cls_name, recipe, windows, ref, dtype=torch.bfloat16):
    """llm-compressor's oneshot on the bf16 model as users load it, saved compressed as users save it; then
    its checkpoint run as compressed-tensors runs one, in float32 arithmetic: each quantized linear's saved
    codes x scales in bf16 (compressed in bf16: its own in-memory float32 fake quantization rounds 0.6% of the
    codes differently), its inputs quantized by compressed-tensors' own forward, every other parameter as
    the source checkpoint stores it (llm-compressor 0.14 saves the (1 + w) RMSNorm weights of these
    families through a bf16 round trip of 1 + w: off by up to 2^-8; the saved norms' effect on the logits
    is reported apart). Returns the window logits, those with inputs unquantized, NLL and KL, the
    checkpoint's tensors and quantization_config, and the largest logit change the saved norms make."""
    import copy, tempfile

    model = lc_model(d, cls_name, dtype)
    source = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    lc_oneshot(model, recipe, windows)
    m32 = copy.deepcopy(model).float()
    with tempfile.TemporaryDirectory() as out:
        model.save_pretrained(out, save_compressed=True)
        t = raw_safetensors(out + "/model.safetensors")
        cfg = json.load(open(out + "/config.json"))
        qc = cfg.get("quantization_config") or cfg.get("text_config", {}).get("quantization_config")
    saved_norms, quantized = {}, set()
    with torch.no_grad():
        for n, m in m32.named_modules():
            if getattr(m, "quantization_scheme", None) is not None:
                m.weight.copy_(dequantized(*t[n + ".weight"][:2], t[n + ".weight"][2], t[n + ".weight_scale"][::2]))
                m.quantization_scheme.weights = None  # the weights are the checkpoint's already
                quantized.add(n + ".weight")
        for n, p in m32.named_parameters():
            if n in source and n not in quantized and not torch.equal(p, source[n]):
                saved_norms[n] = p.detach().clone()
                p.copy_(source[n])
    lg = window_logits(m32, windows)
    # the noise floor: the same checkpoint in float64 arithmetic (per-token input rounding and, in MoE
    # layers, top-k routing flip on such differences)
    lg64 = window_logits(copy.deepcopy(m32).double(), windows)
    nll64, kl64 = nll_kl(lg64, ref, windows)
    floor = {"nll": nll64, "kl": kl64, "max_abs_dlogit_first_window": float((lg64[0] - lg[0]).abs().max())}
    with torch.no_grad():
        for n, v in saved_norms.items():
            m32.get_parameter(n).copy_(v)
    norms_effect = float((window_logits(m32, windows) - lg).abs().max())
    with torch.no_grad():
        for n in saved_norms:
            m32.get_parameter(n).copy_(source[n])
    for m in m32.modules():  # the same weights with the inputs left unquantized
        if getattr(m, "quantization_scheme", None) is not None:
            m.quantization_scheme.input_activations = None
    lw = window_logits(m32, windows)
    return lg, lw, nll_kl(lg, ref, windows), t, qc, {"parameters": len(saved_norms), "max_abs": max(
        (float((v - source[n]).abs().max()) for n, v in saved_norms.items()), default=0.0),
        "max_abs_dlogit": norms_effect}, floor


def formula_reference(d, cls_name, t, qc, windows, ref, dtype):
    """README §4's compressed-tensors formula, independent of both tools: the unquantized model (llm-compressor's
    per-expert loading) with each quantized linear's saved codes x scales (bf16) and its input quantized per
    token by forward pre-hooks (int8: amax / 127.5, round half to even, clamp [-128, 127]; FP8: amax / 448,
    E4M3), computed in dtype. Returns NLL and KL."""
    model = lc_model(d, cls_name, torch.float32).to(dtype)
    kinds = {}
    for g in qc["config_groups"].values():
        for p in g["targets"]:
            kinds[p] = g["input_activations"]["type"]

    def pre(ty):
        def hook(mod, inp):
            x = inp[0]
            am = x.abs().amax(-1, keepdim=True)
            if ty == "int":
                sc = am / 127.5
                return (torch.clamp(torch.round(x / sc), -128, 127) * sc,)
            sc = am / 448.0
            return (torch.clamp(x / sc, -448, 448).to(torch.float8_e4m3fn).to(x.dtype) * sc,)
        return hook

    with torch.no_grad():
        for n, m in model.named_modules():
            if n + ".weight_scale" in t:
                m.weight.copy_(dequantized(*t[n + ".weight"][:2], t[n + ".weight"][2], t[n + ".weight_scale"][::2]).to(dtype))
                ty = [v for p, v in kinds.items() if re.match(p[3:] if p.startswith("re:") else re.escape(p) + "$", n)]
                m.register_forward_pre_hook(pre(ty[0]))
    return nll_kl(window_logits(model, windows), ref, windows)


def autoq(*args):
    import subprocess

    return subprocess.run([AUTOQ, *args, "--quiet"], check=True, capture_output=True, text=True).stdout


def code_values(dtype, b):
    """The codes of a quantized weight's bytes: int8 values, or the E4M3 bytes themselves."""
    return list(np.frombuffer(b, np.int8) if dtype == "I8" else np.frombuffer(b, np.uint8))


def scale_values(dtype, b):
    if dtype == "BF16":
        return (np.frombuffer(b, np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(b, {"F32": np.float32, "F16": np.float16}[dtype]).astype(np.float32)


def compare_checkpoints(ours, theirs):
    """autoq's checkpoint tensors against llm-compressor's: byte-equal tensors, codes equal, scales."""
    names = set(ours) | set(theirs)
    res = {"tensors": len(theirs), "names_dtypes_shapes_equal": {k: v[:2] for k, v in ours.items()} ==
           {k: v[:2] for k, v in theirs.items()}, "bytes_equal": sum(1 for k in names if k in ours and k in theirs and ours[k] == theirs[k])}
    codes = [k for k, v in theirs.items() if k.endswith(".weight") and v[0] in ("I8", "F8_E4M3") and k in ours]
    same = total = 0
    for k in codes:
        a, b = np.array(code_values(*ours[k][::2])), np.array(code_values(*theirs[k][::2]))
        same, total = same + int((a == b).sum()), total + a.size
    res["quantized_weights"], res["codes_equal"], res["codes"] = len(codes), same, total
    rel = 0.0
    for k in (k for k in theirs if k.endswith(".weight_scale") and k in ours):
        a, b = scale_values(ours[k][0], ours[k][2]), scale_values(theirs[k][0], theirs[k][2])
        rel = max(rel, float((np.abs(a - b) / np.abs(b)).max()))
    res["scale_max_rel_diff"] = rel
    by_layer = {}
    for k in codes:
        a, b = np.array(code_values(*ours[k][::2])), np.array(code_values(*theirs[k][::2]))
        l = re.search(r"layers\.(\d+)\.", k)
        e = by_layer.setdefault(l[1] if l else "-", [0, 0])
        e[0], e[1] = e[0] + int((a == b).sum()), e[1] + a.size
    res["codes_equal_by_layer"] = {l: round(x / n, 4) for l, (x, n) in sorted(by_layer.items())}
    res["only_autoq"] = sorted(set(ours) - set(theirs))
    res["only_llmcompressor"] = sorted(set(theirs) - set(ours))
    res["differing_bytes"] = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    return res


def config_diff(a, b, path=""):
    """Where two quantization_configs differ: [path, autoq's, llm-compressor's]; config groups compared as
    a set (their names group_N are only their order)."""
    if path == "" and a and b:
        a, b = ({**c, "config_groups": sorted(c["config_groups"].values(), key=lambda g: json.dumps(g, sort_keys=True))}
                for c in (a, b))
        for i, (x, y) in enumerate(zip(a["config_groups"], b["config_groups"])):
            a[f"group{i}"], b[f"group{i}"] = x, y
        del a["config_groups"], b["config_groups"]
    if isinstance(a, dict) and isinstance(b, dict):
        return [x for k in sorted(set(a) | set(b)) for x in config_diff(a.get(k), b.get(k), f"{path}.{k}")]
    return [] if a == b else [[path, a, b]]


def check_numerics(kind, d, cls_name, prefix, ids_path, windows, out_dir):
    """RTN (recipe <kind>) and GPTQ (recipe <kind>_int: integer formats, which autoq's GPTQ takes) with
    llm-compressor against autoq quantize and autoq eval --recipe. Writes the references the tests compare
    autoq with, stdlib only: <kind>_lc_rtn.json (llm-compressor's RTN checkpoint: each tensor's dtype,
    shape and sha256), <kind>_lc_rtn_logits.npy and <kind>_lc_rtn_weights_logits.npy (its first window's
    logits, and with the inputs unquantized), <kind>_int_lc_gptq_f32.safetensors (the quantized weights
    and scales of its GPTQ run in float32)."""
    import tempfile

    # the unquantized model's logits: transformers' own, committed beside the windows (make_hybrid_fixtures.py)
    ref = torch.from_numpy(np.load(ids_path.replace("_ids.npy", "_logits.npy"))).reshape(len(windows), len(windows[0]), -1)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        # round-to-nearest
        lg, lw, (nll, kl), t, qc, norms, floor = lc_quantized(d, cls_name, rtn_recipe(prefix + "_recipe.yaml", tmp + "/rtn.yaml"), windows, ref)
        np.save(f"{out_dir}/{kind}_lc_rtn_logits.npy", lg[0].numpy().astype(np.float32))
        json.dump({"quantization_config": qc, "tensors": {k: [v[0], v[1], hashlib.sha256(v[2]).hexdigest()]
                                                          for k, v in sorted(t.items())}},
                  open(f"{out_dir}/{kind}_lc_rtn.json", "w"), indent=0)
        autoq("quantize", d, "--recipe", prefix + "_recipe.json", "--out", tmp + "/aq")
        ours = raw_safetensors(tmp + "/aq/model.safetensors")
        e = json.loads(autoq("eval", d, "--data", ids_path, "--recipe", prefix + "_recipe.json", "--json",
                             "--logits", tmp + "/aq.npy"))
        al = torch.from_numpy(np.load(tmp + "/aq.npy"))
        # the weights alone: the recipe with every input quantizer off (the per-token input rounding makes
        # these random fixtures chaotic: a 1e-6 relative change of the input scales moves a logit by 0.7)
        r = json.load(open(prefix + "_recipe.json"))
        for f in r["formats"]:
            f["definition"]["quant_cfg"]["*input_quantizer"] = {"enable": False}
        json.dump(r, open(tmp + "/w.json", "w"))
        autoq("eval", d, "--data", ids_path, "--recipe", tmp + "/w.json", "--logits", tmp + "/aw.npy")
        aw = torch.from_numpy(np.load(tmp + "/aw.npy"))
        np.save(f"{out_dir}/{kind}_lc_rtn_weights_logits.npy", lw[0].numpy().astype(np.float32))
        aqc = json.load(open(tmp + "/aq/config.json"))
        aqc = aqc.get("quantization_config") or aqc.get("text_config", {}).get("quantization_config")
        res["rtn"] = dict(compare_checkpoints(ours, t), quantization_config_diff=config_diff(aqc, qc),
                          max_abs_dlogit_first_window=float((al - lg[0]).abs().max()),
                          max_abs_dlogit_first_window_weights_only=float((aw - lw[0]).abs().max()),
                          nll={"llmcompressor": nll, "autoq": e["nll_quantized"], "unquantized": e["nll_ref"]},
                          kl={"llmcompressor": kl, "autoq": e["kl"]}, llmcompressor_saved_norms=norms,
                          llmcompressor_float64=floor,
                          formula={dt: dict(zip(("nll", "kl"), formula_reference(d, cls_name, t, qc, windows, ref, getattr(torch, dt))))
                                   for dt in ("float32", "float64")})
        # GPTQ, both tools' defaults written in the recipe (dampening 0.01, actorder static, block 128),
        # the sequential pipelines, the same calibration windows
        gp = prefix + "_int"
        lg, lw, (nll, kl), t, qc, norms, floor = lc_quantized(d, cls_name, gp + "_recipe.yaml", windows, ref)
        from safetensors.numpy import save_file

        keep = {k: v for k, v in t.items() if k.endswith((".weight_scale",)) or
                (k.endswith(".weight") and v[0] in ("I8", "F8_E4M3"))}
        autoq("quantize", d, "--recipe", gp + "_recipe.json", "--quantizer", "gptq", "--data", ids_path, "--out", tmp + "/gq")
        e = json.loads(autoq("eval", d, "--data", ids_path, "--recipe", gp + "_recipe.json", "--quantizer", "gptq", "--json"))
        ours = {k: v for k, v in raw_safetensors(tmp + "/gq/model.safetensors").items() if k in keep}
        # and in float32 (a float32 copy of the checkpoint; llm-compressor's model loaded in float32): the
        # arithmetic both compute in, so only the Hessian sites and the order of the work differ
        from safetensors.torch import load_file, save_file as save_pt

        os.mkdir(tmp + "/f32")
        cfg = json.load(open(d + "/config.json"))
        cfg["dtype"] = "float32"
        json.dump(cfg, open(tmp + "/f32/config.json", "w"))
        save_pt({k: v.float() for k, v in load_file(d + "/model.safetensors").items()}, tmp + "/f32/model.safetensors",
                metadata={"format": "pt"})
        _, _, (nll32, kl32), t32, _, _, floor32 = lc_quantized(d, cls_name, gp + "_recipe.yaml", windows, ref, torch.float32)
        autoq("quantize", tmp + "/f32", "--recipe", gp + "_recipe.json", "--quantizer", "gptq", "--data", ids_path,
              "--out", tmp + "/gq32")
        keep32 = {k: v for k, v in t32.items() if k in keep}
        # the float32 run's codes and scales, raw bytes under their own names (dtype and shape in the metadata)
        save_file({k: np.frombuffer(v[2], np.uint8).copy() for k, v in sorted(keep32.items())},
                  f"{out_dir}/{kind}_int_lc_gptq_f32.safetensors",
                  metadata={k: json.dumps(v[:2]) for k, v in keep32.items()})
        ours32 = {k: v for k, v in raw_safetensors(tmp + "/gq32/model.safetensors").items() if k in keep}
        e32 = json.loads(autoq("eval", tmp + "/f32", "--data", ids_path, "--recipe", gp + "_recipe.json", "--quantizer", "gptq", "--json"))
        res["gptq_float32"] = dict(compare_checkpoints(ours32, keep32), nll={"llmcompressor": nll32, "autoq": e32["nll_quantized"]},
                                   kl={"llmcompressor": kl32, "autoq": e32["kl"]}, llmcompressor_float64=floor32)
        res["gptq"] = dict(compare_checkpoints(ours, keep), nll={"llmcompressor": nll, "autoq": e["nll_quantized"],
                                                                 "unquantized": e["nll_ref"]},
                           kl={"llmcompressor": kl, "autoq": e["kl"]}, llmcompressor_float64=floor)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", default="../shared/models/qwen3-tiny")
    ap.add_argument("--out", default="tests/fixtures/exports_validation.json")
    ap.add_argument("--exports", default="tests/fixtures/exports", help="folder of the exports to apply")
    ap.add_argument("--only", default="", help="comma-separated kinds (default: all)")
    ap.add_argument("--merge", action="store_true", help="keep --out's other kinds, replace only these")
    ap.add_argument("--numerics", action="store_true",
                    help="hybrid kinds: also RTN and GPTQ numerics against autoq ($AQ, default build/autoq), "
                         "writing their references into --exports")
    args = ap.parse_args()
    res = {"versions": versions(), "device": "cpu", "applied_with": {
        "llmcompressor": "load_quantizable_moe(cls): cls.from_pretrained; oneshot(model, recipe=YAML, dataset=fixture windows)",
        "modelopt": "cls.from_pretrained; mtq.quantize(model, quant_cfg JSON, forward_loop over fixture windows)"}}
    if args.merge and os.path.exists(args.out):
        old = json.load(open(args.out))
        res = dict(old, **{k: v for k, v in res.items() if k != "versions"})
        res.setdefault("versions_by_kind", {})
    ok = True
    for kind, d, ids_path, cls_name in KINDS:
        if args.only and kind not in args.only.split(","):
            continue
        d = d or args.tiny
        prefix = f"{args.exports}/{kind}"
        bits_only = kind in BITS_ONLY
        want = intended(prefix + "_recipe.json", bits_only)
        windows = np.load(ids_path).tolist()
        # What was applied, so that a test can tell when the committed exports no longer are these files.
        entry = {"model": d, "intended": len(want), "sha256": {
            os.path.basename(prefix + suffix): hashlib.sha256(open(prefix + suffix, "rb").read()).hexdigest()
            for suffix in ("_recipe.json", "_recipe.yaml", "_quant_cfg.json")}}
        experts = sum(1 for n in want if EXPERT.match(n))
        if experts:
            entry["intended_expert_linears"] = experts
        groups = [g["members"] for g in json.load(open(prefix + "_recipe.json"))["groups"]]
        # numerics first: ModelOpt's mtq.quantize leaves its wrappers registered on the model's classes
        if args.numerics and kind in HYBRID:
            try:
                entry["numerics"] = check_numerics(kind, d, cls_name, prefix, ids_path, windows, args.exports)
            except Exception as e:
                import traceback

                traceback.print_exc()
                entry["numerics"] = {"error": repr(e)}
        for tool, fn, path in (("llmcompressor", check_llmcompressor, prefix + "_recipe.yaml"),
                               ("modelopt", check_modelopt, prefix + "_quant_cfg.json")):
            try:
                entry[tool] = fn(d, cls_name, path, windows, want, bits_only)
            except Exception as e:
                entry[tool] = {"error": repr(e)}
            t = entry[tool]
            got = t.pop("_got", None)
            if got is not None and kind.split("_int")[0] in HYBRID:
                # a fused group (in_proj_qkvz = in_proj_qkv + in_proj_z, in_proj_ba, q/k/v, gate_up) has one format
                t["groups_one_format"] = all(len({str(got.get(m)) for m in g}) == 1 for g in groups)
            ok &= bool(t.get("match", False)) and t.get("routers_untouched", True) and \
                t.get("gptq_changed_exactly_quantized", True) and t.get("saved_weight_scales_match", True) and \
                t.get("lm_head_visual_router_quantized") == [] and t.get("shared_expert_gates_untouched", True) and \
                t.get("groups_one_format", True)
        res[kind] = entry
        if args.merge:
            res["versions_by_kind"][kind] = versions()
        print(kind, json.dumps(entry)[:3000], flush=True)
    res["ok"] = bool(ok) and (res.get("ok", True) if args.merge else True)
    json.dump(res, open(args.out, "w"), indent=1)
    print("ok" if ok else "MISMATCH")


if __name__ == "__main__":
    main()

"""A quantizer config of autoq's format dialect (ModelOpt's quant_cfg) as a short description,
"<int|float><bits>/<granularity>": shared by check_exports.py (stdlib only) and validate_exports.py."""


def mo_desc(cfg):
    nb = cfg.get("num_bits", 8)
    kind = f"int{nb}" if isinstance(nb, int) else {(4, 3): "float8", (2, 1): "float4"}[tuple(nb)]
    bs = cfg.get("block_sizes")
    if bs and bs.get("-1") is not None:
        gran = ("tensor_group" if bs.get("scale_bits") == [4, 3] else "group") + str(bs["-1"])
    elif bs:
        gran = "token"
    else:
        gran = "channel" if cfg.get("axis") == 0 else "tensor"
    return f"{kind}/{gran}"

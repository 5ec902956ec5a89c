"""Plots from autoq's HDF5 output (h5py + matplotlib).

usage: python3 bench/plot.py OUT.h5 [PREFIX]
Writes PREFIX-sensitivity.png: per-group score by layer, one panel per scored format, bars coloured by
group kind (qkv, o_proj, gate_up, down_proj, a mixture-of-experts layer's experts group, and any other
kind the file holds, e.g. no_grouping's single linears); with /search, the groups kept bf16 (▼) and
each panel's groups that chose its format (●). When the file has /pareto, PREFIX-pareto.png (effective
bits vs predicted and measured KL). Prints what it plotted.
"""
import sys

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

path = sys.argv[1]
prefix = sys.argv[2] if len(sys.argv) > 2 else path.rsplit(".", 1)[0]
f = h5py.File(path, "r")


def text(v):  # autoq writes fixed-length UTF-8 strings; h5py returns them as bytes
    return v.decode() if isinstance(v, bytes) else str(v)


names = [text(n) for n in f["groups/name"][:]]
score = f["groups/score"][:]
if score.ndim == 1:
    score = score[:, None]
formats = text(f.attrs["format"]).split(",")
disabled = f["groups/disabled"][:].astype(bool)
selected = f["search/selected"][:] if "search" in f else None
# search --bootstrap: each score's 95% interval as an error bar, noisy decisions marked x
interval = f["bootstrap/score_interval"][:] if "bootstrap" in f else None
noisy = f["bootstrap/noisy"][:].astype(bool) if "bootstrap" in f else None
known = ["qkv", "o_proj", "gate_up", "down_proj", "experts"]


def kind_of(n):
    for k in known:
        if n.endswith(k):
            return k
    return n.rsplit(".", 1)[-1]


def layer_of(n):
    return int(n.split("layers.")[1].split(".")[0]) if "layers." in n else -1


plotted = [j for j in range(len(names)) if not disabled[j]]
kinds = [k for k in known if any(kind_of(names[j]) == k for j in plotted)]
kinds += sorted({kind_of(names[j]) for j in plotted} - set(known))
cmap = plt.get_cmap("tab10")
colours = {k: cmap(i % 10) for i, k in enumerate(kinds)}
method = text(f.attrs["method"])
nf = score.shape[1]
fig, axes = plt.subplots(nf, 1, figsize=(10, 1.2 + 3.3 * nf), sharex=True, squeeze=False)
width = 0.8 / max(len(kinds), 1)
for fi, ax in enumerate(axes[:, 0]):
    marked = set()
    for i, k in enumerate(kinds):
        idx = [j for j in plotted if kind_of(names[j]) == k]
        x = np.array([layer_of(names[j]) for j in idx]) + (i - (len(kinds) - 1) / 2) * width
        y = score[idx, fi]
        yerr = None
        if interval is not None:
            iv = interval[idx, fi]
            yerr = np.clip(np.stack([y - iv[:, 0], iv[:, 1] - y]), 0, None)
        ax.bar(x, y, width, color=colours[k], label=k if fi == 0 else None, yerr=yerr, capsize=1.5,
               error_kw={"elinewidth": 0.7})
        if noisy is not None and noisy[idx].any():
            nz = noisy[idx]
            ax.scatter(x[nz], y[nz] * 1.4, marker="x", color="red", s=24,
                       label=None if "noisy" in marked else "noisy (bootstrap)")
            marked.add("noisy")
        if selected is None:
            continue
        for what, keep, marker in (("kept bf16", selected[idx] < 0, "v"), ("chose " + formats[fi], selected[idx] == fi, "o")):
            if keep.any():
                ax.scatter(x[keep], y[keep] * 1.15, marker=marker, color="black", s=20,
                           label=None if what in marked else what)
                marked.add(what)
    positive = score[plotted, fi] > 0
    ax.set_yscale("log" if positive.all() else "symlog")
    ax.set_ylabel(f"{method} score, {formats[fi]}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2)
layers = sorted({layer_of(names[j]) for j in plotted})
axes[-1, 0].set_xticks(layers)
axes[-1, 0].set_xlabel("decoder layer")
title = f"{text(f.attrs['model'])}: {method} sensitivity to {', '.join(formats)}"
if selected is not None:
    title += f"; budget {f['search'].attrs['budget']:.2f} bits"
fig.suptitle(title, fontsize=10)
fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))  # room for the title
fig.savefig(prefix + "-sensitivity.png", dpi=110)
print(f"wrote {prefix}-sensitivity.png: {len(plotted)} groups ({', '.join(kinds)}) x {nf} formats ({', '.join(formats)})")
if interval is not None:
    print(f"bootstrap: 95% intervals drawn, {int(noisy.sum())} noisy decision(s) marked")

if "pareto" in f:
    p = f["pareto"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(p["bits"][:], p["score"][:], "o-", label=f"predicted ({method} score sum)")
    if "measured_kl" in p:
        ax2 = ax.twinx() if method != "kl" else ax
        ax2.plot(p["bits"][:], p["measured_kl"][:], "s--", color="tab:red", label="measured KL")
        if ax2 is not ax:
            ax2.set_ylabel("measured KL (sum)")
            ax2.legend(loc="upper center", fontsize=8)
    ax.set_xlabel("effective bits (candidates)")
    ax.set_ylabel("predicted score")
    ax.set_title("Pareto frontier", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(prefix + "-pareto.png", dpi=110)
    print(f"wrote {prefix}-pareto.png: {len(p['bits'])} budgets")

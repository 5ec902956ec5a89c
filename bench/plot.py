"""Plots from autoq's HDF5 output (h5py + matplotlib).

usage: python3 bench/plot.py OUT.h5 [PREFIX]
Writes PREFIX-sensitivity.png (per-group score by layer, coloured by group kind, bf16 choices marked)
and, when the file has /pareto, PREFIX-pareto.png (effective bits vs predicted and measured KL).
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
if score.ndim == 2:
    score = score[:, 0]
disabled = f["groups/disabled"][:].astype(bool)
selected = f["search/selected"][:] if "search" in f else None
kinds = ["qkv", "o_proj", "gate_up", "down_proj"]
colours = dict(zip(kinds, ["tab:blue", "tab:orange", "tab:green", "tab:red"]))


def kind_of(n):
    for k in kinds:
        if n.endswith(k):
            return k
    return n.rsplit(".", 1)[-1]


def layer_of(n):
    return int(n.split("layers.")[1].split(".")[0])


fig, ax = plt.subplots(figsize=(10, 4.5))
width = 0.2
marked = False
for i, k in enumerate(kinds):
    idx = [j for j, n in enumerate(names) if kind_of(n) == k and not disabled[j]]
    if not idx:
        continue
    x = np.array([layer_of(names[j]) for j in idx]) + (i - 1.5) * width
    ax.bar(x, score[idx], width, color=colours[k], label=k)
    if selected is not None:
        keep = [m for m, j in enumerate(idx) if selected[j] < 0]
        if keep:
            ax.scatter(x[keep], score[idx][keep] * 1.15, marker="v", color="black", s=25,
                       label=None if marked else "kept bf16")
            marked = True
ax.set_yscale("log")
ax.set_xlabel("decoder layer")
method = text(f.attrs["method"])
ax.set_ylabel(f"{method} score (log)")
title = f"{text(f.attrs['model'])}: {method} sensitivity to {text(f.attrs['format'])}"
if selected is not None:
    title += f", budget {f['search'].attrs['budget']:.2f} bits (▼ kept bf16)"
ax.set_title(title, fontsize=10)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(prefix + "-sensitivity.png", dpi=110)
print("wrote", prefix + "-sensitivity.png")

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
    print("wrote", prefix + "-pareto.png")

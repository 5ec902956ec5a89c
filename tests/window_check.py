"""Per-window scores of a scores file (README §6, §8): they sum to /groups/score and, given a reference file
(the CPU's, or another GPU run's), equal its per window within TOL relative on every entry at least 1% of its
format's largest.

usage: window_check.py SCORES.h5 [REFERENCE.h5 TOL [WINDOW:TOL,...]]

WINDOW:TOL gives one window its own tolerance (a window whose routing holds a near tie: tests/test_gpu_windows.sh
says why and how it was measured); every other window keeps TOL. The worst difference of each window is printed.

/groups/score is [groups] with one format and [groups, formats] with several, /groups/window_scores always
[groups, formats, windows]: the sums are compared shape to shape (a one-format file's [groups, 1] against
[groups] would broadcast to [groups, groups] and never match)."""
import sys

import h5py
import numpy as np

with h5py.File(sys.argv[1]) as g:
    w, s = g["groups/window_scores"][:], g["groups/score"][:]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in g["groups/name"][:]]
ng, nf, nw = w.shape
s = s.reshape(ng, nf)
sums = w.sum(axis=-1)
bad = ~np.isclose(sums, s, rtol=1e-9, atol=0)
assert not bad.any(), f"windows do not sum to the totals at {np.argwhere(bad)[:4].tolist()}: {sums[bad][:4]} vs {s[bad][:4]}"
print(f"  {ng * nf} totals: the sums of their {nw} windows within 1e-9")
if len(sys.argv) > 2:
    with h5py.File(sys.argv[2]) as c:
        wc = c["groups/window_scores"][:]
    base = float(sys.argv[3])
    tol = np.full(nw, base)
    for item in sys.argv[4].split(",") if len(sys.argv) > 4 else []:
        k, t = item.split(":")
        tol[int(k)] = float(t)
    assert w.shape == wc.shape, (w.shape, wc.shape)
    ok = True
    for f in range(nf):
        big = wc[:, f, :] >= 0.01 * wc[:, f, :].max()
        rel = np.where(big, np.abs(w[:, f, :] - wc[:, f, :]) / np.where(big, wc[:, f, :], 1), 0)
        gi, wi = np.unravel_index(rel.argmax(), rel.shape)
        per = ", ".join(f"{rel[:, k].max():.2e}" + (f" (tolerance {tol[k]:g})" if tol[k] != base else "")
                        for k in range(nw))
        print(f"  format {f}: {big.sum()} window scores compared, worst relative difference {rel.max():.3g} "
              f"({names[gi]}, window {wi}); per window {per}")
        over = rel > tol[None, :]
        for gj, wj in np.argwhere(over):
            print(f"  format {f}: {names[gj]} window {wj}: {w[gj, f, wj]:.6g} against {wc[gj, f, wj]:.6g}, "
                  f"relative difference {rel[gj, wj]:.3g} > {tol[wj]:g}")
        ok = ok and not over.any()
    assert ok, "per-window scores beyond their tolerance (listed above)"

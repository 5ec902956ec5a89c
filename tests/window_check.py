"""Per-window scores of a scores file (README §6, §8): they sum to /groups/score and, given a reference file
(the CPU's), equal its per window within TOL relative on every entry at least 1% of its format's largest.

usage: window_check.py SCORES.h5 [REFERENCE.h5 TOL]

/groups/score is [groups] with one format and [groups, formats] with several, /groups/window_scores always
[groups, formats, windows]: the sums are compared shape to shape (a one-format file's [groups, 1] against
[groups] would broadcast to [groups, groups] and never match)."""
import sys

import h5py
import numpy as np

with h5py.File(sys.argv[1]) as g:
    w, s = g["groups/window_scores"][:], g["groups/score"][:]
ng, nf, nw = w.shape
s = s.reshape(ng, nf)
sums = w.sum(axis=-1)
bad = ~np.isclose(sums, s, rtol=1e-9, atol=0)
assert not bad.any(), f"windows do not sum to the totals at {np.argwhere(bad)[:4].tolist()}: {sums[bad][:4]} vs {s[bad][:4]}"
print(f"  {ng * nf} totals: the sums of their {nw} windows within 1e-9")
if len(sys.argv) > 2:
    with h5py.File(sys.argv[2]) as c:
        wc = c["groups/window_scores"][:]
    tol = float(sys.argv[3])
    assert w.shape == wc.shape, (w.shape, wc.shape)
    for f in range(nf):
        big = wc[:, f, :] >= 0.01 * wc[:, f, :].max()
        rel = np.abs(w[:, f, :] - wc[:, f, :])[big] / wc[:, f, :][big]
        assert rel.max() <= tol, f"format {f}: worst relative difference {rel.max():.3g}"
        print(f"  format {f}: {big.sum()} window scores compared, worst relative difference {rel.max():.2e}")

"""Rank statistics shared by the bench reports (bench/compare_scores.py, bench/moe_report.py)."""


def ranks(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0] * len(xs)
    for k, i in enumerate(order):
        r[i] = k
    return r


def spearman(a, b):
    """Spearman's rank correlation of two equally long lists (1 for fewer than two items)."""
    if len(a) < 2:
        return 1.0
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    d2 = sum((x - y) ** 2 for x, y in zip(ra, rb))
    return 1 - 6 * d2 / (n * (n * n - 1))

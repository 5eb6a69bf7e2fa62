"""Confidence intervals for the centre of paired mode's per-round latency ratios B/A.

Each function takes ``values`` of shape (n,) or (gates, n) (one row per gate, as the calibration
simulation in ``benchmarks/gate_calibration.py`` uses them) and returns ``(low, high)`` of the same
leading shape. ``METHODS`` names them; ``DEFAULT_METHOD`` is what ``edgenas compare models`` uses.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from math import comb
from typing import Any

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000


def _rows(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim not in (1, 2) or v.shape[-1] < 2:
        raise ValueError("an interval needs at least 2 values")
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError("latency ratios must be finite and positive")
    return np.sort(np.atleast_2d(v), axis=1)


def _check(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return (1 - confidence) / 2  # each tail


def _shaped(values, low: np.ndarray, high: np.ndarray):
    if np.ndim(values) == 1:
        return float(low[0]), float(high[0])
    return low, high


@cache
def _binom_half_cdf(n: int) -> tuple[float, ...]:
    """P(B <= k) for B ~ Binomial(n, 1/2), k = 0..n."""
    return tuple(np.cumsum([comb(n, i) for i in range(n + 1)]) / 2.0**n)


@cache
def _signed_rank_cdf(n: int) -> tuple[float, ...]:
    """P(W+ <= w) of the Wilcoxon signed-rank statistic of n untied values, w = 0..n(n+1)/2."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1
    for rank in range(1, n + 1):  # each rank is in the positive set or not
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return tuple(np.cumsum(counts) / 2.0**n)


def _depth(cdf: tuple[float, ...], tail: float) -> int:
    """The largest k with P(X <= k) <= tail (-1 when even P(X <= 0) is larger)."""
    return int(np.searchsorted(np.asarray(cdf), tail, side="right")) - 1


def sign_interval(values, confidence: float = CONFIDENCE):
    """Order statistics x(k+1), x(n-k) of the binomial sign test: covers the median with at least
    ``confidence`` for any continuous distribution (conservative: 96.5 % at n = 15)."""
    x, tail = _rows(values), _check(confidence)
    n = x.shape[1]
    k = _depth(_binom_half_cdf(n), tail)
    if k < 0:
        return _shaped(values, np.zeros(len(x)), np.full(len(x), np.inf))
    return _shaped(values, x[:, k], x[:, n - k - 1])


def hs_interval(values, confidence: float = CONFIDENCE):
    """Hettmansperger-Sheather interval of the median: the sign interval's neighbouring order
    statistics interpolated to the nominal level (``scipy.stats.mstats.median_cihs``)."""
    x, alpha = _rows(values), 2 * _check(confidence)
    n = x.shape[1]
    cdf = np.asarray(_binom_half_cdf(n))

    def inside(k):  # P(k <= B <= n - k)
        return cdf[n - k] - (cdf[k - 1] if k > 0 else 0.0)

    k = int(np.searchsorted(cdf, alpha / 2))  # the smallest k with P(B <= k) >= alpha / 2
    if inside(k) < 1 - alpha:
        k -= 1
    if k < 1:
        return _shaped(values, x[:, 0], x[:, -1])
    gk, gkk = inside(k), cdf[n - k - 1] - cdf[k]
    i = (gk - 1 + alpha) / (gk - gkk)
    lam = (n - k) * i / (k + (n - 2 * k) * i)
    return _shaped(values, lam * x[:, k] + (1 - lam) * x[:, k - 1], lam * x[:, n - k - 1] + (1 - lam) * x[:, n - k])


def wilcoxon_interval(values, confidence: float = CONFIDENCE):
    """The interval of the Wilcoxon signed-rank test on log ratios, back-transformed: Walsh
    averages w(k+1), w(M-k) around the Hodges-Lehmann estimate. Exact (distribution-free) when
    the log ratios are symmetric about their centre, as they are when A and B share one machine's
    noise; the centre is then the median ratio."""
    logs, tail = np.log(_rows(values)), _check(confidence)
    n = logs.shape[1]
    i, j = np.triu_indices(n)
    walsh = np.sort((logs[:, i] + logs[:, j]) / 2, axis=1)  # M = n(n+1)/2 averages of pairs
    k, m = _depth(_signed_rank_cdf(n), tail), walsh.shape[1]
    if k < 0:
        return _shaped(values, np.zeros(len(logs)), np.full(len(logs), np.inf))
    return _shaped(values, np.exp(walsh[:, k]), np.exp(walsh[:, m - k - 1]))


def bootstrap_interval(values, *, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0):
    """Percentile bootstrap of the median (paired mode's method before edgenas 0.1.1): covers
    less than ``confidence`` at 10-30 rounds; kept for ``benchmarks/gate_calibration.py``."""
    x, tail = _rows(values), _check(confidence)
    rng = np.random.default_rng(seed)
    low, high = np.empty(len(x)), np.empty(len(x))
    for r, row in enumerate(x):
        stats = np.median(row[rng.integers(0, row.size, size=(resamples, row.size))], axis=1)
        low[r], high[r] = np.quantile(stats, [tail, 1 - tail])
    return _shaped(values, low, high)


# method -> interval(ratios, confidence=...): (low, high), floats for one row of ratios, arrays for several
METHODS: dict[str, Callable[..., tuple[Any, Any]]] = {
    "wilcoxon": wilcoxon_interval,
    "hs": hs_interval,
    "sign": sign_interval,
    "bootstrap": bootstrap_interval,
}
DEFAULT_METHOD = "wilcoxon"


@cache
def min_rounds(method: str = DEFAULT_METHOD, confidence: float = CONFIDENCE) -> int:
    """The fewest per-round ratios for which ``method`` gives a bounded interval at ``confidence``."""
    for n in range(2, 200):
        low, high = METHODS[method](np.linspace(1.0, 1.1, n), confidence=confidence)
        if np.isfinite(low) and np.isfinite(high) and low > 0:
            return n
    raise ValueError(f"{method} gives no bounded {confidence:.0%} interval below 200 rounds")

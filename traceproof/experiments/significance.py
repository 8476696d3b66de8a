"""The statistics of a comparison (the rules are in :mod:`traceproof.experiments.compare`):
the exact sign test (the exact McNemar test on discordant pass/fail pairs), the seeded paired
bootstrap interval, Holm's correction and the smallest detectable effect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "BOOTSTRAP_SEED",
    "EPSILON",
    "bootstrap_interval",
    "holm",
    "min_discordant",
    "minimal_detectable_effect",
    "sign_test",
]

#: Seed of every bootstrap: a comparison is reproducible.
BOOTSTRAP_SEED = 20261101
#: Differences smaller than this are equal (float noise of means).
EPSILON = 1e-9


def sign_test(differences: Sequence[float]) -> float:
    """Two-sided exact sign test of the non-zero differences (1.0 when there are none): the
    exact McNemar test when they are discordant pass/fail pairs."""
    up = sum(1 for d in differences if d > EPSILON)
    down = sum(1 for d in differences if d < -EPSILON)
    if up + down == 0:
        return 1.0
    from scipy import stats  # imported when used: it costs every CLI command ~1 s and 65 MB

    return float(stats.binomtest(up, up + down, 0.5).pvalue)


def bootstrap_interval(
    differences: Sequence[float],
    *,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile interval of the mean of ``differences``, resampled with replacement."""
    values = np.asarray(differences, dtype=float)
    n = len(values)
    if n == 0:
        raise ValueError("no differences")
    if n == 1 or float(values.max() - values.min()) <= EPSILON:
        return float(values.mean()), float(values.mean())
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)  # bounded memory: chunk x n indices at a time
    means: list[np.ndarray[Any, np.dtype[np.float64]]] = []
    left = resamples
    while left > 0:
        size = min(chunk, left)
        picks = rng.integers(0, n, size=(size, n))
        means.append(values[picks].mean(axis=1))
        left -= size
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(np.concatenate(means), [tail, 100 - tail])
    return float(low), float(high)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def min_discordant(alpha: float) -> int:
    """The fewest non-zero differences, all of one sign, an exact two-sided sign test needs
    to reach ``alpha`` (2·0.5^k ≤ alpha): 6 at 0.05."""
    k = 1
    while 2 * 0.5**k > alpha:
        k += 1
    return k


def minimal_detectable_effect(
    differences: Sequence[float],
    baseline: Sequence[float],
    *,
    binary: bool,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float | None:
    """The smallest mean difference this dataset detects (see the module docstring); None
    when there are too few examples for any significant result."""
    n = len(differences)
    k = min_discordant(alpha)
    if n < k:
        return None
    sigma = float(np.std(differences, ddof=1)) if n > 1 else 0.0
    if sigma <= EPSILON and len(baseline) > 1:
        sigma = math.sqrt(2) * float(np.std(baseline, ddof=1))
    from scipy import stats

    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    effect = z * sigma / math.sqrt(n)
    if binary:
        effect = min(1.0, max(effect, k / n))
    return effect

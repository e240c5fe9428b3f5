"""Confidence intervals: bootstrap over clips (events of one clip are not independent) and Student t over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# two-sided 95% Student t quantiles for 1..30 degrees of freedom (scipy is not a dependency)
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def bootstrap_ci(clip_ids: Sequence[int], correct: Sequence[float], n_resamples: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``correct`` (per event), resampling whole clips with replacement.

    Returns ``(nan, nan)`` for no events. Deterministic for a given ``seed``.
    """
    clip_ids, correct = np.asarray(clip_ids), np.asarray(correct, dtype=np.float64)
    if correct.size == 0:
        return math.nan, math.nan
    clips, inverse = np.unique(clip_ids, return_inverse=True)
    hits = np.bincount(inverse, weights=correct, minlength=len(clips))
    counts = np.bincount(inverse, minlength=len(clips)).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(clips), size=(n_resamples, len(clips)))
    means = hits[draws].sum(1) / counts[draws].sum(1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def t_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """(mean, half-width of the 95% Student t interval) of finite ``values``; half-width 0 for one value."""
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return mean, _T95[min(len(values) - 1, len(_T95)) - 1] * sd / math.sqrt(len(values))

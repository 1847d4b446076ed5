"""Statistics over per-item values: means with bootstrap confidence intervals, percentiles."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
CI_LEVEL = 0.95


def bootstrap_mean_ci(values: Sequence[float], *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES,
                      level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the mean. None for fewer than 2 values (no spread to resample)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def describe(values: Sequence[float], *, seed: int = 0) -> dict[str, float | int | None]:
    """Mean, CI and count of finite values, as strict-JSON-safe numbers (None where undefined)."""
    x = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not x:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    ci = bootstrap_mean_ci(x, seed=seed)
    return {"mean": float(np.mean(x)), "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
            "n": len(x)}


def percentile(values: Sequence[float], q: float) -> float | None:
    x = [float(v) for v in values if v is not None and math.isfinite(v)]
    return float(np.percentile(x, q)) if x else None

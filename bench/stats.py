"""Statistics over per-item values: means with bootstrap confidence intervals, percentiles, a paired
one-sided test for regressions, and all-pairs comparisons with the Holm correction."""

from __future__ import annotations

import math
from typing import Any, Sequence

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


PERMUTATIONS = 10000


def paired_worsening_test(baseline: Sequence[float], candidate: Sequence[float], *, higher_is_better: bool,
                          tolerance: float = 0.0, seed: int = 0, resamples: int = PERMUTATIONS) -> dict[str, Any]:
    """One-sided paired test that `candidate` is worse than `baseline` by more than `tolerance`.

    Per item, d = how much worse the candidate is (in the metric's units, positive = worse) minus
    the tolerance. Under H0 (no worsening beyond the tolerance, d symmetric about 0) every sign of
    d is equally likely, so the p-value is the share of random sign flips (seeded) whose mean
    reaches the observed one: an exact test, whose false-alarm rate is at most the level used.
    Also returned: the means, the mean difference (candidate - baseline) with a paired bootstrap
    95 % CI. Values are paired by position (the caller pairs them by item id)."""
    b = np.asarray(baseline, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    if b.shape != c.shape or b.ndim != 1:
        raise ValueError("baseline and candidate must be paired 1-d sequences of the same length")
    n = b.size
    if n == 0:
        return {"n": 0, "baseline": None, "candidate": None, "difference": None, "ci_low": None, "ci_high": None,
                "p_value": None}
    worse = (b - c) if higher_is_better else (c - b)
    d = worse - tolerance
    p_value = _sign_flip_p(d, seed, resamples, two_sided=False)
    ci = bootstrap_mean_ci(c - b, seed=seed)
    return {"n": int(n), "baseline": float(b.mean()), "candidate": float(c.mean()),
            "difference": float((c - b).mean()), "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
            "p_value": p_value}



def paired_difference_test(a: Sequence[float], b: Sequence[float], *, seed: int = 0,
                           resamples: int = PERMUTATIONS) -> dict[str, Any]:
    """Two-sided paired test of mean(b - a) = 0 by random sign flips (seeded, exact under a
    symmetric null), with a paired bootstrap 95 % CI of the mean difference."""
    x = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if x.size == 0:
        return {"n": 0, "difference": None, "ci_low": None, "ci_high": None, "p_value": None}
    ci = bootstrap_mean_ci(x, seed=seed)
    return {"n": int(x.size), "difference": float(x.mean()), "ci_low": ci[0] if ci else None,
            "ci_high": ci[1] if ci else None, "p_value": _sign_flip_p(x, seed, resamples, two_sided=True)}


def _sign_flip_p(d: np.ndarray, seed: int, resamples: int, *, two_sided: bool) -> float:
    """p-value of mean(d) against random sign flips of d (seeded); (1 + hits) / (1 + resamples)."""
    rng = np.random.default_rng(seed)
    signs = rng.integers(0, 2, size=(resamples, d.size), dtype=np.int8) * 2 - 1
    flipped = (signs * d).mean(axis=1)
    observed = d.mean()
    if two_sided:
        flipped, observed = np.abs(flipped), abs(observed)
    # A small relative slack so that floating-point noise in equal means counts as reaching it.
    reached = np.count_nonzero(flipped >= observed - 1e-12 * max(1.0, abs(observed)))
    return float((1 + reached) / (1 + resamples))


def pairwise_tests(values: dict[str, dict[str, float]], *, seed: int = 0) -> list[dict[str, Any]]:
    """Every pair (a, b) of labels, in the given order, compared on the items both have (at least
    two): paired_difference_test of b - a, with Holm-adjusted p-values over all pairs (p_holm)."""
    from bench.sparse.safety import holm_adjust

    labels = list(values)
    tests = []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            shared = sorted(set(values[a]) & set(values[b]))
            if len(shared) < 2:
                continue
            test = paired_difference_test([values[a][k] for k in shared], [values[b][k] for k in shared], seed=seed)
            tests.append({"a": a, "b": b, **test})
    for test, adjusted in zip(tests, holm_adjust([t["p_value"] for t in tests])):
        test["p_holm"] = adjusted
    return tests

"""Side-by-side timing for the benchmark scripts: interleaved rounds (A, B, C, A, B, C, ...) after
one warm-up call each, reported as medians with their spread. On a shared, noisy machine a
sequential or min-based timing flatters whichever ran in a quiet moment; interleaving exposes
every contender to the same noise, and a ratio of medians (or the median of per-round ratios)
is what the scripts print."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each contender, `rounds` times, in round-robin order."""
    for fn in contenders.values():
        fn()  # warm-up: first calls pay for lazy initialisation
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def spread(values: list[float], digits: int = 3) -> str:
    """'median (IQR low-high, n=N)', or min-max for fewer than 4 values."""
    median = statistics.median(values)
    if len(values) >= 4:
        q = statistics.quantiles(values, n=4)
        return f"{median:.{digits}f} (IQR {q[0]:.{digits}f}-{q[2]:.{digits}f}, n={len(values)})"
    return f"{median:.{digits}f} (range {min(values):.{digits}f}-{max(values):.{digits}f}, n={len(values)})"


def paired_ratios(baseline: list[float], other: list[float]) -> list[float]:
    """Per-round speed-ups baseline/other (both timed in the same round)."""
    return [b / o for b, o in zip(baseline, other)]

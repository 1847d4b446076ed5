"""Analyses for the sparse-attention suite: cost model, isoCost frontier, safe sparsity, scaling laws.

Pure numpy/scipy (matplotlib only inside the plot function). These modules read per-item or
aggregated records and never run a model. Results are plain dicts that serialise to strict JSON:
a value that cannot be computed is None, never NaN.

Modules:
- bench.sparse.costmodel  prefill FLOPs and decode memory transfers (Sparse Frontier, Appendix B)
- bench.sparse.frontier   Pareto frontier of accuracy against cost, table and plot
- bench.sparse.safety     safe sparsity from a paired non-inferiority test with Holm correction
- bench.sparse.scaling    logit-linear sparse scaling law and Chinchilla approach-3 fitter
"""

from __future__ import annotations

import math
from typing import Any

from bench.errors import BenchError


class SparseAnalysisError(BenchError, ValueError):
    """Input to a sparse analysis that cannot be used (missing field, value out of range, ...)."""


def finite_or_none(value: Any) -> float | None:
    """A float for JSON, or None where the value is missing, NaN or infinite."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def require_finite(name: str, value: Any) -> float:
    """`value` as a finite float, or a SparseAnalysisError that names the field."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SparseAnalysisError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise SparseAnalysisError(f"{name} must be finite, got {value!r}")
    return number

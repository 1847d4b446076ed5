"""Sliding window with attention sinks (StreamingLLM, Xiao et al. 2023), as a prefill pattern.

Query i attends the first `sinks` tokens and the `window` most recent tokens (itself included).
The pattern is static, so the window that realises a compression ratio C is solved exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from systems.lm.attention.base import (PrefillMethod, causal_pairs, check_int, closest_budget,
                                       one_budget, unreachable)


def window_sink_pairs(length: int, window: int, sinks: int) -> int:
    """Causal pairs attended: per row i, min(i+1, window) recent keys + sinks left of the window."""
    rows = np.arange(length)
    recent = np.minimum(rows + 1, window)
    sink = np.minimum(sinks, np.maximum(0, rows - window + 1))
    return int((recent + sink).sum())


class SlidingWindowSinks(PrefillMethod):
    name = "streaming"

    def __init__(self, compression: float | None = None, *, window: int | None = None, sinks: int = 4):
        self.compression = one_budget(self.name, compression, {"window": window})
        self.window = None if window is None else check_int(window, "window", self.name, 1)
        self.sinks = check_int(sinks, "sinks", self.name, 0)

    def resolve_window(self, length: int) -> int:
        if self.window is not None:
            return self.window
        target = causal_pairs(length) / self.compression
        lowest = window_sink_pairs(length, 1, self.sinks)
        if lowest > target * 1.0001:
            raise unreachable(self.name, self.compression, causal_pairs(length) / lowest,
                              f"L={length} with {self.sinks} sinks")
        return closest_budget(lambda w: window_sink_pairs(length, w, self.sinks), 1, length, target)

    def pattern(self, q, k):
        window = self.resolve_window(q.shape[2])
        sinks = self.sinks

        def allowed_rows(r0: int, r1: int) -> torch.Tensor:
            rows = torch.arange(r0, r1, device=q.device)[:, None]
            cols = torch.arange(r1, device=q.device)[None, :]
            return ((cols < sinks) | (rows - cols < window))[None, None]

        return allowed_rows, {"window": window, "sinks": sinks}

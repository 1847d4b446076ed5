"""Sliding window with attention sinks (StreamingLLM, Xiao et al. 2023), in both phases.

Prefill: query i attends the first `sinks` tokens and the `window` most recent tokens (itself
included). The pattern is static, so the window that realises a compression ratio C is solved
exactly.
Decode (StreamingLLM's own setting, KV eviction): the cache keeps the first `sinks` prompt tokens
and the most recent prompt tokens up to a capacity of round(prompt_length / C) (or `window` +
sinks); answer tokens are always kept.
"""

from __future__ import annotations

import numpy as np
import torch

from systems.lm.attention.base import (BadBudget, DecodeCache, DecodeMethod, PrefillMethod, causal_pairs,
                                       check_int, check_prompt_kv, closest_budget, one_budget, unreachable)


def window_sink_pairs(length: int, window: int, sinks: int) -> int:
    """Causal pairs attended: per row i, min(i+1, window) recent keys + sinks left of the window."""
    rows = np.arange(length)
    recent = np.minimum(rows + 1, window)
    sink = np.minimum(sinks, np.maximum(0, rows - window + 1))
    return int((recent + sink).sum())


class SlidingWindowSinks(PrefillMethod, DecodeMethod):
    name = "streaming"
    phase = "both"

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

    def new_cache(self, q_prompt: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> DecodeCache:
        """q_prompt is not needed: the kept positions depend on position only."""
        check_prompt_kv(q_prompt, k, v, self.name)
        length = k.shape[2]
        sinks = min(self.sinks, length)
        if self.window is not None:
            recent = min(self.window, length - sinks)
        else:
            recent = round(length / self.compression) - sinks
            if recent < 1:
                raise BadBudget(f"{self.name}: compression C={self.compression:g} keeps "
                                f"{round(length / self.compression)} of {length} prompt tokens, not more than the "
                                f"{sinks} sinks; the valid range here is [1, {length / (sinks + 1):.3g}]")
        keep = torch.zeros(k.shape[0], k.shape[1], length, dtype=torch.bool, device=k.device)
        keep[..., :sinks] = True
        keep[..., length - recent:] = True
        return DecodeCache(k, v, keep, self.name)

"""PowerAttention's static pattern (Chen et al. 2025, arXiv 2503.03588), at block granularity.

Query block m attends key block n <= m when the block distance d = m - n is
  - inside the local window (d < window_blocks; d = 0 is the diagonal block, causal inside), or
  - a power of two (d = 1, 2, 4, 8, ...), or
  - n is a sink block (n < sink_blocks).
The pattern is the same in every layer: stacking layers composes power-of-two hops, so after l
layers a token can reach any token up to ~2^l blocks back, where a sliding window reaches l windows.
The window is the budget knob; the power-of-two links and sinks are always kept, which bounds the
reachable compression at a given length.
"""

from __future__ import annotations

import math

import torch

from systems.lm.attention.base import (PrefillMethod, causal_pairs, check_int, closest_budget,
                                       one_budget, unreachable)
from systems.lm.attention.block_sparse import block_pair_count, block_rows


def power_block_mask(n_blocks: int, window_blocks: int, sink_blocks: int, device=None) -> torch.Tensor:
    m = torch.arange(n_blocks, device=device)[:, None]
    n = torch.arange(n_blocks, device=device)[None, :]
    distance = m - n
    power_of_two = (distance > 0) & ((distance & (distance - 1)) == 0)
    return (distance >= 0) & ((distance < window_blocks) | power_of_two | (n < sink_blocks))


class PowerAttention(PrefillMethod):
    name = "power"

    def __init__(self, compression: float | None = None, *, window_blocks: int | None = None,
                 block: int = 64, sink_blocks: int = 1):
        self.compression = one_budget(self.name, compression, {"window_blocks": window_blocks})
        self.window_blocks = None if window_blocks is None else check_int(window_blocks, "window_blocks", self.name, 1)
        self.block = check_int(block, "block", self.name, 1)
        self.sink_blocks = check_int(sink_blocks, "sink_blocks", self.name, 0)

    def _pairs(self, length: int, window_blocks: int) -> int:
        n_blocks = math.ceil(length / self.block)
        mask = power_block_mask(n_blocks, window_blocks, self.sink_blocks)[None, None]
        return int(block_pair_count(mask, self.block, length)[0, 0])

    def resolve_window(self, length: int) -> int:
        if self.window_blocks is not None:
            return self.window_blocks
        n_blocks = math.ceil(length / self.block)
        target = causal_pairs(length) / self.compression
        lowest = self._pairs(length, 1)
        if lowest > target * 1.0001:
            raise unreachable(self.name, self.compression, causal_pairs(length) / lowest,
                              f"L={length} with block {self.block} (power-of-two links are always kept)")
        return closest_budget(lambda w: self._pairs(length, w), 1, n_blocks, target)

    def pattern(self, q, k):
        length = q.shape[2]
        window = self.resolve_window(length)
        mask = power_block_mask(math.ceil(length / self.block), window, self.sink_blocks, q.device)[None, None]
        budget = {"window_blocks": window, "block": self.block, "sink_blocks": self.sink_blocks}
        return (lambda r0, r1: block_rows(mask, self.block, r0, r1)), budget

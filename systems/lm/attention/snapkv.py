"""SnapKV (Li et al. 2024) and Ada-SnapKV (AdaKV, Feng et al. 2024): prompt KV compression for decode.

The last `window` prompt queries (the observation window) vote for prompt positions: their softmax
attention, summed over the window and averaged over the query heads that share a KV head, then
smoothed by average pooling (kernel 7), ranks positions per KV head. SnapKV keeps the window plus
the top positions up to `capacity` tokens per KV head. Ada-SnapKV keeps the same total
(capacity x KV heads) per layer but lets heads compete for it: each head first gets a floor
(`min_head_fraction` of the capacity), the rest goes to the highest-scoring positions of any head.
Answer tokens generated after the prompt are always kept.

Budget: capacity in tokens, or a compression C, for which capacity = round(prompt_length / C).
Decode sparsity is then measured against each decode query's full KV length, so it falls a little
short of 1 - 1/C by the answer tokens, which are never evicted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from systems.lm.attention.base import (BadBudget, DecodeCache, DecodeMethod, check_fraction,
                                       check_int, check_prompt_kv, one_budget)
from systems.lm.attention.vertical_slash import last_query_attention


def window_votes(q_prompt: torch.Tensor, k: torch.Tensor, window: int, kernel: int) -> torch.Tensor:
    """Pooled observation-window attention per KV head: (B, kv_heads, prompt_length)."""
    batch, kv_heads, length, _ = k.shape
    heads = q_prompt.shape[1]
    # q_prompt may hold only the last queries; pad on the left so positions line up with k.
    if q_prompt.shape[2] < length:
        q_prompt = F.pad(q_prompt, (0, 0, length - q_prompt.shape[2], 0))
    votes = last_query_attention(q_prompt, k, window).sum(2)  # (B, H, L)
    votes = votes.view(batch, kv_heads, heads // kv_heads, length).mean(2)
    return F.avg_pool1d(votes, kernel_size=kernel, stride=1, padding=kernel // 2, count_include_pad=False)


class SnapKV(DecodeMethod):
    name = "snapkv"

    def __init__(self, compression: float | None = None, *, capacity: int | None = None,
                 window: int = 32, kernel: int = 7):
        self.compression = one_budget(self.name, compression, {"capacity": capacity})
        self.window = check_int(window, "window", self.name, 1)
        self.capacity = None if capacity is None else check_int(capacity, "capacity (tokens)", self.name, self.window)
        kernel = check_int(kernel, "kernel", self.name, 1)
        if kernel % 2 == 0:
            raise BadBudget(f"{self.name}: kernel must be odd so pooling keeps positions aligned; got {kernel}")
        self.kernel = kernel

    def resolve_capacity(self, length: int) -> int:
        if self.capacity is not None:
            return min(self.capacity, length)
        capacity = round(length / self.compression)
        window = min(self.window, length)
        if capacity < window:
            raise BadBudget(f"{self.name}: compression C={self.compression:g} keeps {capacity} of {length} prompt "
                            f"tokens, fewer than the {window}-token observation window; the valid range "
                            f"here is [1, {length / window:.3g}]")
        return capacity

    def _checked(self, q_prompt: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
        if q_prompt.dim() != 4 or q_prompt.shape[0] != k.shape[0] or q_prompt.shape[2] > k.shape[2]:
            raise ValueError(f"{self.name}: q_prompt must be (batch, heads, n <= prompt_length, head_dim); "
                             f"got {tuple(q_prompt.shape)} for keys {tuple(k.shape)}")
        check_prompt_kv(q_prompt, k, v, self.name)
        if q_prompt.shape[2] < min(self.window, k.shape[2]):
            raise ValueError(f"{self.name}: needs the last {self.window} prompt queries; got {q_prompt.shape[2]}")
        return k.shape[2]

    def scores(self, q_prompt: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        votes = window_votes(q_prompt, k, self.window, self.kernel)
        votes[..., -self.window:] = float("inf")  # the observation window itself is always kept
        return votes

    def new_cache(self, q_prompt: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> DecodeCache:
        length = self._checked(q_prompt, k, v)
        capacity = self.resolve_capacity(length)
        with torch.no_grad():
            keep = torch.zeros(k.shape[0], k.shape[1], length, dtype=torch.bool, device=k.device)
            keep.scatter_(-1, self.scores(q_prompt, k).topk(capacity, dim=-1).indices, True)
        return DecodeCache(k, v, keep, self.name)


class AdaSnapKV(SnapKV):
    name = "ada-snapkv"

    def __init__(self, compression: float | None = None, *, capacity: int | None = None,
                 window: int = 32, kernel: int = 7, min_head_fraction: float = 0.2):
        super().__init__(compression, capacity=capacity, window=window, kernel=kernel)
        self.min_head_fraction = check_fraction(min_head_fraction, "min_head_fraction", self.name)

    def new_cache(self, q_prompt: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> DecodeCache:
        length = self._checked(q_prompt, k, v)
        capacity = self.resolve_capacity(length)
        batch, kv_heads = k.shape[:2]
        floor = min(capacity, max(min(self.window, length), int(capacity * self.min_head_fraction)))
        with torch.no_grad():
            scores = self.scores(q_prompt, k)
            keep = torch.zeros(batch, kv_heads, length, dtype=torch.bool, device=k.device)
            keep.scatter_(-1, scores.topk(floor, dim=-1).indices, True)
            # The rest of the layer's budget goes to the best remaining positions of any head.
            remaining = (capacity - floor) * kv_heads
            if remaining:
                flat = scores.masked_fill(keep, float("-inf")).view(batch, -1)
                flat_keep = keep.view(batch, -1)
                flat_keep.scatter_(-1, flat.topk(remaining, dim=-1).indices, True)
        return DecodeCache(k, v, keep, self.name)

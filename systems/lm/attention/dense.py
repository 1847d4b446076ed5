"""Dense causal attention: the baseline every sparse method is compared with (sparsity 0)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from systems.lm.attention.base import (DecodeCache, DecodeMethod, PrefillMethod, PrefillResult,
                                       causal_pairs, check_compression, check_prompt_kv, check_qkv, expand_kv)


class Dense(PrefillMethod, DecodeMethod):
    """Full causal attention in both phases. Accepts compression=1 (or nothing) for a uniform API."""

    name = "dense"
    phase = "both"

    def __init__(self, compression: float | None = None):
        if compression is not None and check_compression(compression, self.name) != 1.0:
            raise ValueError(f"dense: compression must be 1 (dense attends every causal pair); "
                             f"got {compression!r}")

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> PrefillResult:
        batch, heads, _, length, _ = check_qkv(q, k, v, self.name)
        with torch.no_grad():
            out = F.scaled_dot_product_attention(q, expand_kv(k, heads), expand_kv(v, heads), is_causal=True)
        attended = torch.full((batch, heads), causal_pairs(length), dtype=torch.long)
        return PrefillResult(out, attended, causal_pairs(length), {})

    def pattern(self, q, k):
        return (lambda r0, r1: torch.ones(1, 1, r1 - r0, r1, dtype=torch.bool, device=q.device)), {}

    def new_cache(self, q_prompt: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> DecodeCache:
        """q_prompt is not needed (any number of the last prompt queries may be passed)."""
        check_prompt_kv(q_prompt, k, v, self.name)
        return DecodeCache(k, v, None, self.name)

"""Quest (Tang et al. 2024): query-aware page selection over the whole KV cache during decode.

The cache is cut into pages of `page_size` (16) tokens; each page keeps the element-wise min and
max of its keys. A decode query q scores a page by the upper bound of q.k over the page,
sum_d max(q_d * min_d, q_d * max_d), and attends only the tokens of its top pages, the page holding
its own position always among them. Selection is per query head and per decode query. Pages wholly
before the query's own page are complete, so their bounds never involve future tokens.

Budget: token_budget (a multiple of page_size; pages = token_budget / page_size, the own page
included, as in Quest), or a compression C: then each decode query at position i (n = i + 1 keys
visible) takes round((n / C - own) / page_size) earlier pages, where `own` is the number of tokens
of its own page it sees, so that it attends about n / C tokens (C = 1 gives dense attention).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from systems.lm.attention.base import (BadBudget, DecodeCache, DecodeMethod, check_int, check_prompt_kv,
                                       expand_kv, one_budget)


class QuestCache(DecodeCache):
    def __init__(self, k, v, page_size: int, pages: int | None, compression: float | None, method: str):
        super().__init__(k, v, None, method)
        self.page_size, self.pages, self.compression = page_size, pages, compression

    def earlier_pages(self, positions: torch.Tensor) -> torch.Tensor:
        """How many pages besides its own each query may take."""
        if self.pages is not None:
            return torch.full_like(positions, self.pages - 1)
        own = positions % self.page_size + 1
        wanted = ((positions + 1) / self.compression - own) / self.page_size
        return wanted.round().long().clamp(min=0)

    def allowed(self, q: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        batch, heads, steps, _ = q.shape
        size, length = self.page_size, self.length
        n_pages = math.ceil(length / size)
        padded = F.pad(expand_kv(self.k, heads), (0, 0, 0, n_pages * size - length))
        paged = padded.view(batch, heads, n_pages, size, -1)
        low, high = paged.amin(3), paged.amax(3)  # (B, H, pages, D)
        qe = q[:, :, :, None, :]
        bound = torch.maximum(qe * low[:, :, None], qe * high[:, :, None]).sum(-1)  # (B, H, T, pages)
        own_page = positions // size
        page_index = torch.arange(n_pages, device=q.device)
        earlier = page_index[None, :] < own_page[:, None]  # (T, pages): complete pages only
        bound = bound.masked_fill(~earlier, float("-inf"))
        wanted = self.earlier_pages(positions)  # (T,)
        picks = min(int(wanted.max()), n_pages)
        chosen = torch.zeros(batch, heads, steps, n_pages, dtype=torch.bool, device=q.device)
        if picks > 0:
            top = bound.topk(picks, dim=-1)
            within = torch.arange(picks, device=q.device)[None, :] < wanted[:, None]  # (T, picks)
            chosen.scatter_(-1, top.indices, (top.values > float("-inf")) & within)
        chosen |= page_index[None, :] == own_page[:, None]
        return chosen.repeat_interleave(size, dim=-1)[..., :length]


class Quest(DecodeMethod):
    name = "quest"

    def __init__(self, compression: float | None = None, *, token_budget: int | None = None, page_size: int = 16):
        self.compression = one_budget(self.name, compression, {"token_budget": token_budget})
        self.page_size = check_int(page_size, "page_size", self.name, 1)
        if token_budget is not None:
            check_int(token_budget, "token_budget (tokens)", self.name, self.page_size)
            if token_budget % self.page_size:
                raise BadBudget(f"{self.name}: token_budget must be a multiple of the page size "
                                f"{self.page_size}; got {token_budget}")
        self.token_budget = token_budget

    def check_reachable(self, length: int) -> None:
        if self.compression is not None and self.compression > 1 and length / self.compression < self.page_size:
            raise BadBudget(f"{self.name}: compression C={self.compression:g} leaves less than one "
                            f"{self.page_size}-token page of a {length}-token prompt; the valid range here "
                            f"is [1, {max(1.0, length / self.page_size):.3g}]")

    def new_cache(self, q_prompt: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> QuestCache:
        check_prompt_kv(q_prompt, k, v, self.name)
        self.check_reachable(k.shape[2])
        pages = None if self.token_budget is None else self.token_budget // self.page_size
        return QuestCache(k, v, self.page_size, pages, self.compression, self.name)

"""Vertical-Slash (MInference, Jiang et al. 2024).

The last `last_q` queries attend densely to estimate the pattern of every head. A key column j
("vertical") that these queries attend strongly is kept for all queries; a diagonal of offset
o = i - j ("slash") that they attend strongly is kept along its whole length. The first `sinks`
columns and the `local` nearest diagonals are always kept (MInference forces them the same way).

Budget: n_vertical and n_slash lines per head, or a compression C, for which n lines of each kind
are chosen so that the exact number of attended pairs (verticals and slashes overlap, and the
overlap is counted once) is closest to L(L+1)/(2C).
"""

from __future__ import annotations

import torch

from systems.lm.attention.base import (PrefillMethod, causal_pairs, check_int, closest_budget,
                                       expand_kv, one_budget, unreachable)


# --------------------------------------------------------------------------- shared with FlexPrefill
def last_query_attention(q: torch.Tensor, k: torch.Tensor, last_q: int) -> torch.Tensor:
    """Softmax attention (B, H, last_q, L) of the last `last_q` queries over all keys, causal."""
    heads, length = q.shape[1], q.shape[2]
    last_q = min(last_q, length)
    scores = (q[:, :, -last_q:] @ expand_kv(k, heads).transpose(-1, -2)) * q.shape[-1] ** -0.5
    positions = torch.arange(length - last_q, length, device=q.device)[:, None]
    future = torch.arange(length, device=q.device)[None, :] > positions
    return torch.softmax(scores.float().masked_fill(future, float("-inf")), dim=-1)


def slash_scores(attention: torch.Tensor) -> torch.Tensor:
    """Sum of attention along each diagonal offset o = i - j: (B, H, rows, L) -> (B, H, L)."""
    batch, heads, rows, length = attention.shape
    positions = torch.arange(length - rows, length, device=attention.device)[:, None]
    offsets = (positions - torch.arange(length, device=attention.device)[None, :]).clamp(min=0)
    # Future keys have zero attention, so clamping their (negative) offsets to 0 adds nothing.
    out = torch.zeros(batch, heads, length, dtype=attention.dtype, device=attention.device)
    return out.scatter_add_(-1, offsets.expand(batch, heads, rows, length).reshape(batch, heads, -1),
                            attention.reshape(batch, heads, -1))


def vs_rows(verticals: torch.Tensor, slashes: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
    """Rows r0..r1-1 over keys 0..r1-1 of a vertical-slash pattern.

    verticals, slashes: (B, H, n) column indices and diagonal offsets; entries >= L are padding.
    """
    batch, heads, _ = verticals.shape
    device = verticals.device
    # Index r1 is a dump slot for out-of-range entries (padding, future keys), dropped at the end.
    columns = torch.zeros(batch, heads, r1 + 1, dtype=torch.bool, device=device)
    columns.scatter_(-1, verticals.clamp(max=r1), True)
    # Slash offsets as a 0/1 line: on[o] for o in 0..r1-1, preceded by r1 zeros (negative offsets).
    # Row i, key j needs on[i - j]; reading line[i + 1 + t] for t = 0..r1-1 gives on[i - j] with
    # j = r1 - 1 - t, so a strided (Toeplitz) view plus a flip builds the rows without indexing.
    line = torch.zeros(batch, heads, 2 * r1 + 1, dtype=torch.bool, device=device)
    line.scatter_(-1, (slashes.clamp(max=r1) + r1).clamp(max=2 * r1), True)
    line[..., 2 * r1] = False  # the dump slot
    rows = r1 - r0
    stride_b, stride_h, _ = line.stride()
    toeplitz = line.as_strided((batch, heads, rows, r1), (stride_b, stride_h, 1, 1), storage_offset=r0 + 1)
    return columns[:, :, None, :r1] | toeplitz.flip(-1)


def vs_pair_count(verticals: torch.Tensor, slashes: torch.Tensor, length: int) -> torch.Tensor:
    """Exact causal pairs per (B, H) of a vertical-slash pattern (padding entries = length).

    Column j covers L - j pairs, offset o covers L - o pairs, and the pair (j + o, j) is covered by
    both when j + o < L, so it is subtracted once.
    """
    v = verticals.sort(dim=-1).values
    s = slashes
    column_pairs = (length - v).clamp(min=0).sum(-1)
    slash_pairs = (length - s).clamp(min=0).sum(-1)
    # For each offset o: how many (real) columns j satisfy j < L - o.
    overlap = torch.searchsorted(v.contiguous(), (length - s).clamp(min=0).contiguous()).sum(-1)
    return column_pairs + slash_pairs - overlap


def top_lines(scores: torch.Tensor, forced: int) -> torch.Tensor:
    """Line indices sorted best first, the first `forced` indices (sinks / local diagonals) first."""
    scores = scores.clone()
    scores[..., :forced] = float("inf")
    return scores.argsort(dim=-1, descending=True, stable=True)


class VerticalSlash(PrefillMethod):
    name = "vertical-slash"

    def __init__(self, compression: float | None = None, *, n_vertical: int | None = None,
                 n_slash: int | None = None, last_q: int = 64, sinks: int = 4, local: int = 64):
        self.compression = one_budget(self.name, compression, {"n_vertical": n_vertical, "n_slash": n_slash})
        self.sinks = check_int(sinks, "sinks", self.name, 0)
        self.local = check_int(local, "local", self.name, 1)
        self.last_q = check_int(last_q, "last_q", self.name, 1)
        self.n_vertical = None if n_vertical is None else check_int(n_vertical, "n_vertical", self.name, self.sinks)
        self.n_slash = None if n_slash is None else check_int(n_slash, "n_slash", self.name, self.local)

    def pattern(self, q, k):
        length = q.shape[2]
        attention = last_query_attention(q, k, self.last_q)
        sinks, local = min(self.sinks, length), min(self.local, length)
        v_order = top_lines(attention.sum(-2), sinks)
        s_order = top_lines(slash_scores(attention), local)

        def pick(n_vertical: int, n_slash: int) -> tuple[torch.Tensor, torch.Tensor]:
            return v_order[..., :min(n_vertical, length)], s_order[..., :min(n_slash, length)]

        if self.compression is None:
            verticals, slashes = pick(self.n_vertical, self.n_slash)
        else:
            target = causal_pairs(length) / self.compression
            smallest = max(sinks, local)

            def pairs(n: int) -> float:
                return float(vs_pair_count(*pick(max(n, sinks), max(n, local)), length).double().mean())

            if pairs(smallest) > target * 1.0001:
                raise unreachable(self.name, self.compression, causal_pairs(length) / pairs(smallest),
                                  f"L={length} with {sinks} sink columns and {local} local diagonals")
            n = closest_budget(pairs, smallest, length, target)
            verticals, slashes = pick(max(n, sinks), max(n, local))
        budget = {"n_vertical": verticals.shape[-1], "n_slash": slashes.shape[-1], "last_q": self.last_q}
        return (lambda r0, r1: vs_rows(verticals, slashes, r0, r1)), budget

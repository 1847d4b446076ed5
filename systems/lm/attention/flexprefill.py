"""FlexPrefill (Lai et al. 2025): per head, a query-aware block pattern or a vertical-slash pattern,
each sized by a coverage threshold gamma.

For every head, the last block of queries estimates two distributions over key blocks: the true
one (their softmax attention summed per key block) and the pooled one (softmax of the mean query
against mean-pooled keys). If the square root of the Jensen-Shannon divergence between them is
below `tau`, pooled scores are trustworthy and the head is query-aware: every query block keeps
the fewest key blocks whose pooled attention covers gamma of its mass (its diagonal block always).
Otherwise the head uses vertical-slash: the fewest columns and the fewest diagonals that each cover
gamma of the estimated attention mass. Line and block counts are clamped to [min_budget,
max_budget] tokens.

Budget: gamma (with min/max budget), or a compression C; then gamma is set per sample by bisection
so that the realised density is closest to 1/C, while each head still takes the fewest
lines/blocks covering gamma of its own mass (heads keep adapting to their own attention).
"""

from __future__ import annotations

import math

import torch

from systems.lm.attention.base import (BadBudget, PrefillMethod, causal_pairs, check_fraction,
                                       check_int, expand_kv, one_budget, unreachable)
from systems.lm.attention.block_sparse import block_pair_weights, block_rows, pooled_blocks
from systems.lm.attention.vertical_slash import (last_query_attention, slash_scores, top_lines,
                                                 vs_pair_count, vs_rows)


def js_distance(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """sqrt of the Jensen-Shannon divergence (natural log) along the last dimension."""
    p, q = p.clamp(min=eps), q.clamp(min=eps)
    mid = (p + q) / 2
    js = 0.5 * (p * (p / mid).log()).sum(-1) + 0.5 * (q * (q / mid).log()).sum(-1)
    return js.clamp(min=0).sqrt()


def cover_count(cumulative: torch.Tensor, gammas: torch.Tensor) -> torch.Tensor:
    """How many of the (best-first) items are needed for their mass to reach gamma of the total,
    for G gammas at once: gammas (G,), cumulative (..., n) -> (G, ...). `cumulative` holds the
    cumulative sums of the items' masses (computed once per call, not per gamma); being sorted,
    the items below a threshold are counted by a binary search."""
    thresholds = cumulative[..., -1:] * gammas.to(cumulative.dtype)  # (..., G)
    counts = torch.searchsorted(cumulative, thresholds).movedim(-1, 0) + 1
    return torch.where(gammas.view(-1, *[1] * (cumulative.dim() - 1)) >= 1.0, cumulative.shape[-1], counts)


# Bisection on gamma stops once the density is within this fraction of 1/C (C realised to 0.5 %):
# closer is below the noise of a per-sample density, and each step re-selects every head.
GAMMA_TOLERANCE = 0.005
# The bisection's next levels are counted in one batch (2^3 - 1 gammas): a step is a dozen small
# tensor operations whose fixed cost dominates, so a batch of 7 costs little more than one.
LEVELS_PER_BATCH = 3


def bisection_points(lo: float, hi: float, levels: int) -> list[float]:
    """Every midpoint the bisection can visit in its next `levels` steps from [lo, hi], computed as
    the bisection computes them (so the floats are the same)."""
    if levels == 0:
        return []
    mid = (lo + hi) / 2
    return [mid] + bisection_points(lo, mid, levels - 1) + bisection_points(mid, hi, levels - 1)


class FlexPrefill(PrefillMethod):
    name = "flexprefill"

    def __init__(self, compression: float | None = None, *, gamma: float | None = None, tau: float = 0.1,
                 block: int = 64, min_budget: int = 128, max_budget: int | None = None,
                 sinks: int = 4, local: int = 64):
        self.compression = one_budget(self.name, compression, {"gamma": gamma})
        self.gamma = None if gamma is None else check_fraction(gamma, "gamma", self.name)
        self.tau = check_fraction(tau, "tau", self.name, 0.0, 1.0)
        self.block = check_int(block, "block", self.name, 1)
        self.min_budget = check_int(min_budget, "min_budget (tokens)", self.name, 1)
        self.max_budget = None if max_budget is None else check_int(
            max_budget, "max_budget (tokens)", self.name, self.min_budget)
        self.sinks = check_int(sinks, "sinks", self.name, 0)
        self.local = check_int(local, "local", self.name, 1)

    # ------------------------------------------------------------------ estimation (once per call)
    def estimate(self, q: torch.Tensor, k: torch.Tensor) -> dict:
        batch, heads, length, dim = q.shape
        block = self.block
        n_blocks = math.ceil(length / block)
        attention = last_query_attention(q, k, block)  # (B, H, rows, L)
        rows = attention.shape[2]
        padded = torch.nn.functional.pad(attention.mean(2), (0, n_blocks * block - length))
        true_blocks = padded.view(batch, heads, n_blocks, block).sum(-1)
        pooled_k = expand_kv(pooled_blocks(k, block), heads).float()
        pooled_last = q[:, :, -rows:].float().mean(2, keepdim=True)
        estimated_blocks = torch.softmax((pooled_last @ pooled_k.transpose(-1, -2)).squeeze(2) * dim ** -0.5, -1)
        query_aware = js_distance(true_blocks, estimated_blocks) < self.tau  # (B, H)

        # What every gamma the bisection tries shares: cumulative masses, ranks, the causal grid, and
        # the pair counts of every prefix of each ranking (so a gamma's density needs no sort). Only
        # the kinds some head uses are ranked: a third of a sweep's layers have heads of one kind.
        est = {"query_aware": query_aware, "rank": torch.arange(length, device=q.device),
               "sinks": min(self.sinks, length), "local": min(self.local, length),
               "length": length, "n_blocks": n_blocks,
               "any_blocks": bool(query_aware.any()), "any_lines": not bool(query_aware.all())}
        if est["any_blocks"]:
            est.update(self._block_candidates(q, pooled_k, n_blocks, length))
        if est["any_lines"]:
            est.update(self._line_candidates(attention, est["sinks"], est["local"], est["rank"]))
        return est

    def _block_candidates(self, q: torch.Tensor, pooled_k: torch.Tensor, n_blocks: int, length: int) -> dict:
        """Query-aware candidates: pooled block attention of every query block, causal, diagonal first."""
        pooled_q = pooled_blocks(q, self.block).float()
        block_scores = (pooled_q @ pooled_k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        causal = torch.ones(n_blocks, n_blocks, dtype=torch.bool, device=q.device).tril()
        block_probs = torch.softmax(block_scores.masked_fill(~causal, float("-inf")), -1)
        ranked = block_probs + torch.eye(n_blocks, device=q.device) * 2.0  # diagonal ranks first
        block_order = ranked.argsort(dim=-1, descending=True, stable=True)
        block_pairs = block_pair_weights(n_blocks, self.block, length, q.device)
        return {"block_order": block_order, "block_cum": block_probs.gather(-1, block_order).cumsum(-1),
                "block_rank": torch.arange(n_blocks, device=q.device), "causal_blocks": causal,
                # pairs of the first n key blocks of each query-block row, by rank
                "block_pairs_cum": block_pairs.expand_as(block_order).gather(-1, block_order).cumsum(-1)}

    @staticmethod
    def _line_candidates(attention: torch.Tensor, sinks: int, local: int, rank: torch.Tensor) -> dict:
        """Vertical-slash candidates, each kind ranked by its estimated attention mass."""
        length = attention.shape[-1]
        columns, diagonals = attention.sum(2), slash_scores(attention)
        v_order, s_order = top_lines(columns, sinks), top_lines(diagonals, local)
        return {"v_order": v_order, "v_cum": columns.gather(-1, v_order).cumsum(-1),
                "s_order": s_order, "s_cum": diagonals.gather(-1, s_order).cumsum(-1),
                # pairs of the first n columns / diagonals, by rank
                "v_pairs_cum": (length - v_order).cumsum(-1), "s_pairs_cum": (length - s_order).cumsum(-1),
                # each column's rank, and the column index below which a diagonal's pairs overlap columns
                "v_rank": torch.empty_like(v_order).scatter_(-1, v_order, rank.expand_as(v_order)),
                "s_last_column": length - 1 - s_order}

    # ------------------------------------------------------------------ selection for a given gamma
    def counts(self, est: dict, gammas: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """Per gamma and head: columns, diagonals and (per query block) key blocks that cover
        gamma, clamped to the budgets; each with a leading dimension of the G gammas (None for a
        kind no head of the layer uses)."""
        length, n_blocks, block = est["length"], est["n_blocks"], self.block
        low_lines = min(self.min_budget, length)
        high_lines = length if self.max_budget is None else min(self.max_budget, length)
        low_blocks = min(math.ceil(self.min_budget / block), n_blocks)
        high_blocks = n_blocks if self.max_budget is None else max(1, min(self.max_budget // block, n_blocks))
        n_v = n_s = n_b = None
        if est["any_lines"]:
            n_v = cover_count(est["v_cum"], gammas).clamp(low_lines, high_lines).clamp(min=est["sinks"])
            n_s = cover_count(est["s_cum"], gammas).clamp(low_lines, high_lines).clamp(min=est["local"])
        if est["any_blocks"]:
            n_b = cover_count(est["block_cum"], gammas).clamp(low_blocks, high_blocks).clamp(min=1)
        return n_v, n_s, n_b

    def select(self, est: dict, gamma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        length, n_blocks = est["length"], est["n_blocks"]
        query_aware = est["query_aware"]
        batch, heads = query_aware.shape
        one_gamma = torch.tensor([gamma], dtype=torch.float64, device=est["rank"].device)
        n_v, n_s, n_b = (None if n is None else n[0] for n in self.counts(est, one_gamma))
        if est["any_lines"]:
            rank = est["rank"]
            # Entries past a head's count, and every line of a query-aware head, become padding (= L).
            vs_head = ~query_aware[..., None]
            widest_v = int((n_v * vs_head[..., 0]).max())  # trim columns that are padding in every head
            widest_s = int((n_s * vs_head[..., 0]).max())
            verticals = torch.where((rank < n_v[..., None]) & vs_head, est["v_order"], length)[..., :widest_v]
            slashes = torch.where((rank < n_s[..., None]) & vs_head, est["s_order"], length)[..., :widest_s]
        else:
            verticals = slashes = torch.empty(batch, heads, 0, dtype=torch.long, device=query_aware.device)
        if est["any_blocks"]:
            keep = (est["block_rank"] < n_b[..., None]) & query_aware[..., None, None]
            block_mask = torch.zeros_like(keep).scatter_(-1, est["block_order"], keep)
            block_mask &= est["causal_blocks"]
        else:
            block_mask = torch.zeros(batch, heads, n_blocks, n_blocks, dtype=torch.bool, device=query_aware.device)
        return verticals, slashes, block_mask

    def pair_counts(self, est: dict, gammas: list[float]) -> torch.Tensor:
        """Causal pairs per (gamma, B, H) that select(est, gamma) attends, from the prefix tables
        alone: what vs_pair_count and block_pair_count give for each selected pattern, without
        building it."""
        n_v, n_s, n_b = self.counts(est, torch.tensor(gammas, dtype=torch.float64, device=est["rank"].device))

        def per_gamma(table: torch.Tensor) -> torch.Tensor:
            return table.expand(len(gammas), *table.shape)

        if est["any_blocks"]:
            blocks = per_gamma(est["block_pairs_cum"]).gather(-1, (n_b - 1)[..., None]).sum((-2, -1))
            if not est["any_lines"]:
                return blocks
        columns = per_gamma(est["v_pairs_cum"]).gather(-1, (n_v - 1)[..., None])[..., 0]
        diagonals = per_gamma(est["s_pairs_cum"]).gather(-1, (n_s - 1)[..., None])[..., 0]
        # Pair (j + o, j) is on a kept column j and a kept diagonal o when j <= L - 1 - o: count, per
        # kept diagonal, the kept columns up to that index (a running count over column indices).
        kept_columns = (est["v_rank"] < n_v[..., None]).cumsum(-1)
        overlap = (kept_columns.gather(-1, per_gamma(est["s_last_column"]))
                   * (est["rank"] < n_s[..., None])).sum(-1)
        lines = columns + diagonals - overlap
        return torch.where(est["query_aware"], blocks, lines) if est["any_blocks"] else lines

    def resolve_gamma(self, est: dict) -> float:
        if self.gamma is not None:
            return self.gamma
        length = est["length"]
        target = 1.0 / self.compression
        densities: dict[float, float] = {}  # gamma -> mean density over the batch's heads

        def count(gammas: list[float]) -> None:
            new = [g for g in gammas if g not in densities]
            if new:
                means = self.pair_counts(est, new).double().mean((1, 2)) / causal_pairs(length)
                densities.update(zip(new, means.tolist()))

        count([0.0, 1.0] + bisection_points(0.0, 1.0, LEVELS_PER_BATCH))
        lowest, highest = densities[0.0], densities[1.0]
        if lowest > target * 1.0001:
            raise unreachable(self.name, self.compression, 1 / lowest,
                              f"L={length} with min_budget {self.min_budget} tokens")
        if highest < target * 0.9999 and self.compression == 1.0:
            raise BadBudget(f"{self.name}: max_budget={self.max_budget} tokens cannot reach C=1 at L={length}")
        best, best_error = 0.0, abs(lowest - target)
        lo, hi = 0.0, 1.0
        for _ in range(20):  # bisection; coverage counts are discrete, so keep the closest seen
            mid = (lo + hi) / 2
            if mid not in densities:
                count(bisection_points(lo, hi, LEVELS_PER_BATCH))
            d = densities[mid]
            if abs(d - target) < best_error:
                best, best_error = mid, abs(d - target)
            if self.compression > 1.0 and best_error <= GAMMA_TOLERANCE * target:
                return best  # (C = 1 must stay exactly dense)
            if d < target:
                lo = mid
            else:
                hi = mid
        if abs(highest - target) < best_error:
            best = 1.0
        return best

    def pattern(self, q, k):
        est = self.estimate(q, k)
        gamma = self.resolve_gamma(est)
        verticals, slashes, block_mask = self.select(est, gamma)

        # Each head's rows come from its own kind only: a vertical-slash head's block rows and a
        # query-aware head's vertical-slash rows would be all False, so the pattern is the same.
        query_aware = est["query_aware"]
        batch, heads = query_aware.shape
        lines_at = (~query_aware).flatten().nonzero().squeeze(1)
        blocks_at = query_aware.flatten().nonzero().squeeze(1)

        def allowed_rows(r0: int, r1: int) -> torch.Tensor:
            if not len(blocks_at):
                return vs_rows(verticals, slashes, r0, r1)
            if not len(lines_at):
                return block_rows(block_mask, self.block, r0, r1)
            rows = torch.empty(batch * heads, r1 - r0, r1, dtype=torch.bool, device=q.device)
            rows[lines_at] = vs_rows(verticals.flatten(0, 1)[None, lines_at], slashes.flatten(0, 1)[None, lines_at],
                                     r0, r1)[0]
            rows[blocks_at] = block_rows(block_mask.flatten(0, 1)[None, blocks_at], self.block, r0, r1)[0]
            return rows.view(batch, heads, r1 - r0, r1)

        budget = {"gamma": gamma, "query_aware_heads": float(est["query_aware"].float().mean()),
                  "min_budget": self.min_budget, "max_budget": self.max_budget}
        return allowed_rows, budget

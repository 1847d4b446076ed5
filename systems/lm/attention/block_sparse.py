"""Block-Sparse top-k (MInference's block-sparse pattern), with a real block-gather kernel.

The sequence is cut into blocks of `block` tokens. Each query block scores every earlier key block
by the dot product of their mean-pooled queries and keys, keeps its top-k, and always keeps its own
(diagonal) block, inside which attention is causal. Selection is per query head.

Two implementations give the same output:
- "gather": for each query block, gather only the selected K/V blocks and attend over them, so the
  work (and wall time) falls with sparsity;
- "mask": the masked dense reference (O(L^2) work whatever the sparsity), used to check "gather".
"""

from __future__ import annotations

import math

import torch

from systems.lm.attention.base import (PrefillMethod, PrefillResult, attend_rows, causal_pairs,
                                       check_int, check_qkv, closest_budget, expand_kv, one_budget,
                                       unreachable)


# --------------------------------------------------------------------------- block-grid helpers
_TRUE_BYTES = 0x0101010101010101  # eight bool True bytes read as one int64


def or_block_rows_(rows: torch.Tensor, block_mask: torch.Tensor, block: int, r0: int, r1: int) -> torch.Tensor:
    """rows |= the token rows r0..r1-1 over keys 0..r1-1 of a (B, H, n_blocks, n_blocks) block
    pattern, in place: each key block's flag is broadcast over its `block` columns."""
    first, last = r0 // block, (r1 - 1) // block  # query (and key) blocks touched
    per_block = block_mask[:, :, first:last + 1, :last + 1].repeat_interleave(block, dim=-2)
    per_block = per_block[:, :, r0 - first * block:r1 - first * block]  # (B, H, r1 - r0, key blocks)
    whole = r1 // block  # key blocks that end inside 0..r1-1
    if whole and block % 8 == 0 and rows.stride(-1) == 1 and all(st % 8 == 0 for st in rows.stride()[:-1]) \
            and rows.storage_offset() % 8 == 0:
        # A key block of 8k bools is k machine words: OR each block's flag as whole words of 0x01 bytes
        # (a bool is one byte holding 0 or 1), 8x fewer elements than byte by byte.
        words = rows[..., :whole * block].view(torch.int64).unflatten(-1, (whole, block // 8))
        words.bitwise_or_(per_block[..., :whole, None].to(torch.int64) * _TRUE_BYTES)
    elif whole:
        rows[..., :whole * block].unflatten(-1, (whole, block)).bitwise_or_(per_block[..., :whole, None])
    if whole * block < r1:  # the last, partial key block
        rows[..., whole * block:].bitwise_or_(per_block[..., whole:whole + 1])
    return rows


def block_rows(block_mask: torch.Tensor, block: int, r0: int, r1: int) -> torch.Tensor:
    """Token rows r0..r1-1 over keys 0..r1-1 of a (B, H, n_blocks, n_blocks) block pattern."""
    rows = torch.zeros(*block_mask.shape[:2], r1 - r0, r1, dtype=torch.bool, device=block_mask.device)
    return or_block_rows_(rows, block_mask, block, r0, r1)


def block_pair_weights(n_blocks: int, block: int, length: int, device: torch.device | None = None) -> torch.Tensor:
    """Causal pairs each (query block, key block) cell covers: full blocks left of the diagonal, a
    triangle on it (only the last block can be short), none above it."""
    rows = torch.full((n_blocks,), block, dtype=torch.long, device=device)
    rows[-1] = length - block * (n_blocks - 1)
    weights = (rows[:, None] * block).expand(n_blocks, n_blocks).tril(-1)
    return weights + torch.diag(rows * (rows + 1) // 2)


def block_pair_count(block_mask: torch.Tensor, block: int, length: int) -> torch.Tensor:
    """Causal pairs attended per (B, H) by a block pattern (blocks above the diagonal ignored)."""
    weights = block_pair_weights(block_mask.shape[-1], block, length, block_mask.device)
    return (block_mask * weights).sum((-2, -1))


def topk_pair_count(length: int, block: int, top_k: int) -> int:
    """Pairs attended by top-k + diagonal: query block m keeps min(k, m) earlier blocks."""
    n_blocks = math.ceil(length / block)
    total = 0
    for m in range(n_blocks):
        rows = min(block, length - m * block)
        total += min(top_k, m) * block * rows + rows * (rows + 1) // 2
    return total


def pooled_blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mean over each block of tokens: (B, H, L, D) -> (B, H, n_blocks, D); a short last block
    is averaged over its real tokens."""
    batch, heads, length, dim = x.shape
    n_blocks = math.ceil(length / block)
    missing = n_blocks * block - length
    padded = torch.nn.functional.pad(x, (0, 0, 0, missing)) if missing else x  # (a pad always copies)
    sums = padded.view(batch, heads, n_blocks, block, dim).sum(3)
    counts = torch.full((n_blocks,), float(block), dtype=x.dtype, device=x.device)
    counts[-1] = length - block * (n_blocks - 1)
    return sums / counts[:, None]


class BlockSparse(PrefillMethod):
    name = "block-sparse"

    def __init__(self, compression: float | None = None, *, top_k: int | None = None, block: int = 64,
                 implementation: str = "gather"):
        self.compression = one_budget(self.name, compression, {"top_k": top_k})
        self.top_k = None if top_k is None else check_int(top_k, "top_k (blocks)", self.name, 0)
        self.block = check_int(block, "block", self.name, 1)
        if implementation not in ("gather", "mask"):
            raise ValueError(f"{self.name}: implementation must be 'gather' or 'mask'; got {implementation!r}")
        self.implementation = implementation

    def resolve_top_k(self, length: int) -> int:
        n_blocks = math.ceil(length / self.block)
        if self.top_k is not None:
            return min(self.top_k, max(n_blocks - 1, 0))
        target = causal_pairs(length) / self.compression
        lowest = topk_pair_count(length, self.block, 0)
        if lowest > target * 1.0001:
            raise unreachable(self.name, self.compression, causal_pairs(length) / lowest,
                              f"L={length} with block {self.block} (the diagonal blocks are always kept)")
        return closest_budget(lambda kk: topk_pair_count(length, self.block, kk), 0,
                              max(n_blocks - 1, 0), target)

    def select(self, q: torch.Tensor, k: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k earlier key blocks per query block: indices (B, H, n_blocks, k) and their validity
        (query block m has only m earlier blocks to choose from)."""
        heads = q.shape[1]
        pooled_q = pooled_blocks(q, self.block)
        pooled_k = expand_kv(pooled_blocks(k, self.block), heads)
        scores = pooled_q @ pooled_k.transpose(-1, -2)
        n_blocks = scores.shape[-1]
        earlier = torch.ones(n_blocks, n_blocks, dtype=torch.bool, device=q.device).tril(-1)
        scores = scores.masked_fill(~earlier, float("-inf"))
        picked = scores.topk(top_k, dim=-1)
        index = picked.indices
        valid = torch.arange(top_k, device=q.device) < torch.arange(n_blocks, device=q.device)[:, None]
        return index, valid.expand_as(index)

    def block_mask(self, q: torch.Tensor, k: torch.Tensor, top_k: int) -> torch.Tensor:
        batch, heads, length, _ = q.shape
        n_blocks = math.ceil(length / self.block)
        mask = torch.eye(n_blocks, dtype=torch.bool, device=q.device).repeat(batch, heads, 1, 1)
        if top_k > 0:
            index, valid = self.select(q, k, top_k)
            mask.scatter_(-1, index, valid)
            mask |= torch.eye(n_blocks, dtype=torch.bool, device=q.device)
        return mask

    def pattern(self, q, k):
        top_k = self.resolve_top_k(q.shape[2])
        mask = self.block_mask(q, k, top_k)
        return (lambda r0, r1: block_rows(mask, self.block, r0, r1)), {"top_k": top_k, "block": self.block}

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> PrefillResult:
        batch, heads, _, length, _ = check_qkv(q, k, v, self.name)
        if self.implementation == "mask":
            return super().__call__(q, k, v)
        top_k = self.resolve_top_k(length)
        with torch.no_grad():
            out = self.gather_attention(q, k, v, top_k)
        attended = torch.full((batch, heads), topk_pair_count(length, self.block, top_k), dtype=torch.long)
        return PrefillResult(out, attended, causal_pairs(length), {"top_k": top_k, "block": self.block})

    def gather_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, top_k: int,
                         chunk_bytes: int = 4 << 20) -> torch.Tensor:
        """Attend each query block over its gathered key blocks only: O(L * k * block) work.

        The unit of work is one query block of one head. Units with m >= top_k all read exactly
        top_k + 1 key blocks and run in batched chunks small enough to stay in cache; the first
        top_k query blocks (fewer earlier blocks to pick from) run per m.
        """
        batch, heads, length, dim = q.shape
        block = self.block
        n_blocks = math.ceil(length / block)
        pad = n_blocks * block - length
        # Padded keys sit after every real query, so the causal mask of the last block hides them.
        # Only a ragged length pays for a padded copy; otherwise the tables below are views.
        qp, kp, vp = ((torch.nn.functional.pad(x, (0, 0, 0, pad)) if pad else x) for x in (q, k, v))
        units = batch * heads * n_blocks  # unit u = (b*H + h) * n_blocks + m
        q_units = qp.reshape(units, block, dim)
        k_table = expand_kv(kp, heads).reshape(units, block, dim)  # same numbering for key blocks
        v_table = expand_kv(vp, heads).reshape(units, block, dim)
        first_of_head = torch.arange(0, units, n_blocks, device=q.device).repeat_interleave(n_blocks)
        diagonal = torch.arange(units, device=q.device)[:, None]
        if top_k > 0:  # table rows: the chosen earlier blocks, then the diagonal block last
            earlier = self.select(q, k, top_k)[0].reshape(units, top_k) + first_of_head[:, None]
            picks = torch.cat([earlier, diagonal], dim=-1)
        else:
            picks = diagonal
        out = torch.empty(units, block, dim, dtype=q.dtype, device=q.device)
        masks: dict[int, torch.Tensor] = {}

        def allowed(used: int) -> torch.Tensor:
            """(block, (used + 1) * block): every gathered earlier block, causal in the diagonal."""
            if used not in masks:
                mask = torch.ones(block, (used + 1) * block, dtype=torch.bool, device=q.device)
                mask[:, -block:] = torch.ones(block, block, dtype=torch.bool, device=q.device).tril()
                masks[used] = mask
            return masks[used]

        def attend(unit_ids: torch.Tensor, used: int) -> None:
            """These units, each reading its first `used` picks and then its diagonal block: the
            picked K/V blocks gathered once into contiguous buffers, then one fused attention
            kernel (scale, mask, softmax and weighted sum) over all of the units together."""
            rows = torch.cat([picks[unit_ids, :used], picks[unit_ids, -1:]], dim=-1).reshape(-1)
            n = unit_ids.numel()
            keys = k_table.index_select(0, rows).view(n, (used + 1) * block, dim)
            values = v_table.index_select(0, rows).view(n, (used + 1) * block, dim)
            # As (n, 1, rows, dim): the 4-D form takes the fused CPU kernel; 3-D inputs fall back
            # to the unfused math path (measured: a third of the time in mask checks and casts).
            result = torch.nn.functional.scaled_dot_product_attention(
                q_units.index_select(0, unit_ids)[:, None], keys[:, None], values[:, None], attn_mask=allowed(used))
            out.index_copy_(0, unit_ids, result[:, 0])

        block_of_unit = torch.arange(units, device=q.device) % n_blocks
        for m in range(min(top_k, n_blocks)):  # query block m has only m earlier blocks
            attend((block_of_unit == m).nonzero().squeeze(1), m)
        tail = (block_of_unit >= top_k).nonzero().squeeze(1)
        per_unit = (top_k + 1) * block * (2 * dim + block) * q.element_size()
        step = max(1, chunk_bytes // per_unit)
        for start in range(0, tail.numel(), step):
            attend(tail[start:start + step], top_k)
        return out.view(batch, heads, n_blocks * block, dim)[:, :, :length]

"""What every sparse attention method shares: budgets, GQA, the masked reference attention, results.

Conventions (the same in every method):
- Tensors are (batch, heads, length, head_dim). Keys/values may have fewer heads (GQA): query head h
  reads KV head h // (n_heads // n_kv_heads), as in Hugging Face's `repeat_kv`.
- Prefill sparsity is measured against the causal triangle: for each sample and query head we count
  the (query, key) pairs with key <= query that the method attends, divide by L(L+1)/2, and average
  that density over heads; sparsity = 1 - mean density. Compression C = 1 / (1 - sparsity).
- Decode sparsity is measured against the full KV length each decode query could attend (all prompt
  and earlier answer tokens plus itself): attended / sum over decode queries of (position + 1),
  per head, averaged over heads.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F

from bench.errors import BenchError

# A compression ratio above this is almost surely a typo (the Sparse Frontier's grid stops at 20).
MAX_COMPRESSION = 1000.0


class BadBudget(BenchError, ValueError):
    """A budget a method cannot realise: the message names the valid range."""


# --------------------------------------------------------------------------- budget helpers
def check_compression(value: Any, method: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not 1.0 <= value <= MAX_COMPRESSION):
        raise BadBudget(f"{method}: the compression ratio C = 1/(1 - sparsity) must be a number in "
                        f"[1, {MAX_COMPRESSION:g}]; got {value!r}")
    return float(value)


def check_int(value: Any, name: str, method: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        upper = "infinity" if high is None else str(high)
        raise BadBudget(f"{method}: {name} must be an integer in [{low}, {upper}]; got {value!r}")
    return value


def check_fraction(value: Any, name: str, method: str, low: float = 0.0, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BadBudget(f"{method}: {name} must be a number in [{low:g}, {high:g}]; got {value!r}")
    return float(value)


def one_budget(method: str, compression: Any, explicit: dict[str, Any]) -> float | None:
    """Exactly one of `compression` or the method's explicit budget must be given."""
    given = {k: v for k, v in explicit.items() if v is not None}
    if compression is not None and given:
        raise BadBudget(f"{method}: give either compression=C or {', '.join(explicit)}, not both")
    if compression is None and len(given) != len(explicit):
        raise BadBudget(f"{method}: give a budget: compression=C (C >= 1) or {' and '.join(explicit)}")
    return None if compression is None else check_compression(compression, method)


def causal_pairs(length: int) -> int:
    return length * (length + 1) // 2


def closest_budget(count: Callable[[int], float], low: int, high: int, target: float) -> int:
    """The integer budget in [low, high] whose pair count is closest to `target`.

    `count` must be non-decreasing in the budget (a larger budget never attends fewer pairs).
    """
    lo, hi = low, high
    while lo < hi:  # smallest budget reaching the target
        mid = (lo + hi) // 2
        if count(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    if lo > low and abs(count(lo - 1) - target) <= abs(count(lo) - target):
        return lo - 1
    return lo


def unreachable(method: str, compression: float, best: float, what: str) -> BadBudget:
    return BadBudget(f"{method}: compression C={compression:g} is out of reach for {what}; the valid "
                     f"range here is [1, {best:.3g}] (the mandatory part of the pattern alone attends "
                     f"{100 / best:.1f}% of the causal pairs)")


# --------------------------------------------------------------------------- tensors
def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, method: str) -> tuple[int, int, int, int, int]:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"{method}: q, k, v must be 4-D (batch, heads, length, head_dim); got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    batch, heads, length, dim = q.shape
    if k.shape != v.shape or k.shape[0] != batch or k.shape[2] != length or k.shape[3] != dim:
        raise ValueError(f"{method}: k and v must be (batch={batch}, kv_heads, length={length}, "
                         f"head_dim={dim}); got k {tuple(k.shape)}, v {tuple(v.shape)}")
    kv_heads = k.shape[1]
    if kv_heads == 0 or heads % kv_heads:
        raise ValueError(f"{method}: the {kv_heads} KV heads must divide the {heads} query heads (GQA)")
    if length == 0:
        raise ValueError(f"{method}: empty sequence")
    if not q.is_floating_point():
        raise ValueError(f"{method}: q, k, v must be floating point; got {q.dtype}")
    return batch, heads, kv_heads, length, dim


def check_prompt_kv(q_prompt: torch.Tensor, k: torch.Tensor, v: torch.Tensor, method: str) -> None:
    """Checks a decode cache's inputs: the prompt's keys/values, with q_prompt giving the query
    heads (it may hold only the last prompt queries, so its length is not checked here)."""
    check_qkv(k.new_empty(k.shape[0], q_prompt.shape[1], k.shape[2], k.shape[3]), k, v, method)


def expand_kv(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, kv_heads, ...) -> (B, heads, ...): query head h reads KV head h // group."""
    group = heads // x.shape[1]
    return x if group == 1 else x.repeat_interleave(group, dim=1)


_MASKED = 1e30  # the additive mask's magnitude: finite in float32 (bf16 too), and exp(-1e30) == 0
_workspace = threading.local()  # per thread (a sweep runs jobs in threads)


def _mask_buffer(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """A float32 tensor of `shape` reused across calls: a fresh multi-MB tensor each call costs
    more in page faults (about 1.7 ms per 4 MB here) than filling it."""
    numel = math.prod(shape)
    buffer = getattr(_workspace, "buffer", None)
    if buffer is None or buffer.numel() < numel or buffer.device != device:
        buffer = _workspace.buffer = torch.empty(numel, dtype=torch.float32, device=device)
    return buffer[:numel].view(shape)


def attend_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                allowed_rows: Callable[[int, int], torch.Tensor], chunk: int | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention restricted to a pattern: the masked reference every prefill method can use.

    `allowed_rows(r0, r1)` returns a bool tensor broadcastable to (B, H, r1 - r0, r1): which keys
    0..r1-1 the queries r0..r1-1 may attend (the causal mask is applied here as well). Queries are
    processed in chunks so memory stays O(chunk * L); key columns that no query of a chunk attends
    are dropped before the matmuls, so local and static patterns cost less than dense. Returns the
    output and the attended (query, key<=query) pair count per (batch, head). The default chunk
    holds about 4M scores per chunk (whole short sequences in one step, 256+ rows at long ones).
    """
    batch, heads, length, _ = q.shape
    if chunk is None:
        chunk = max(256, (1 << 22) // max(1, batch * heads * length))
    keys, values = expand_kv(k, heads), expand_kv(v, heads)
    out = torch.empty_like(q)
    attended = torch.zeros(batch, heads, dtype=torch.long, device=q.device)
    for r0 in range(0, length, chunk):
        r1 = min(length, r0 + chunk)
        rows = torch.arange(r0, r1, device=q.device)[:, None]
        causal = torch.arange(r1, device=q.device)[None, :] <= rows
        # Kept at its own (possibly broadcast) shape: static patterns are one (1, 1, r, r1) mask.
        allowed = (allowed_rows(r0, r1) & causal).contiguous()
        flags = allowed.view(torch.uint8)  # byte reductions are vectorised; bool ones are not (50x here)
        chunk_keys, chunk_values = keys[:, :, :r1], values[:, :, :r1]
        used = flags.reshape(-1, r1).amax(0)  # key columns any sample, head or row attends
        if int(used.sum()) < 0.75 * r1:  # skip columns nobody attends (local/static patterns)
            columns = used.nonzero().squeeze(1)
            chunk_keys, chunk_values = chunk_keys.index_select(2, columns), chunk_values.index_select(2, columns)
            flags = flags.index_select(-1, columns)
        # The pattern as 0/1 floats, converted once from the bytes (bool -> float is 5-20x slower
        # on CPU): its row sums count the attended keys (exact in float32 below 2^24 keys), and it
        # becomes the additive mask in place.
        weights = _mask_buffer(flags.shape, flags.device).copy_(flags)
        per_row = weights.sum(-1).to(torch.long).expand(batch, heads, r1 - r0)
        if int(per_row.min()) == 0:
            raise RuntimeError("sparse pattern left a query with no key to attend (a method bug)")
        # One fused kernel (scale, mask, softmax, weighted sum): 2-3x faster on CPU than the four
        # separate full-size passes, and the same arithmetic as the dense baseline's kernel. The
        # additive mask is (allowed - 1) * huge: 4x cheaper than the kernel's own where(bool, 0,
        # -inf), and a finite 'huge' gives the same zero weights (every row attends at least one
        # key, so its maximum is a real score).
        mask = weights.sub_(1).mul_(_MASKED).to(q.dtype)
        out[:, :, r0:r1] = F.scaled_dot_product_attention(q[:, :, r0:r1], chunk_keys, chunk_values, attn_mask=mask)
        attended += per_row.sum(-1)
    return out, attended


# --------------------------------------------------------------------------- results
@dataclass
class PrefillResult:
    """Attention output plus what the pattern attended.

    attended_pairs[b, h]: (query, key) pairs with key <= query attended by query head h of sample b.
    sparsity[b] = 1 - mean over heads of attended_pairs / (L(L+1)/2)  (the causal-triangle convention).
    """

    output: torch.Tensor
    attended_pairs: torch.Tensor
    causal_pairs: int
    budget: dict[str, Any] = field(default_factory=dict)  # the budget the method resolved to

    @property
    def density(self) -> torch.Tensor:
        return self.attended_pairs.double().mean(dim=1) / self.causal_pairs

    @property
    def sparsity(self) -> torch.Tensor:
        return 1.0 - self.density


@dataclass
class DecodeResult:
    """Output of one decode call (T new queries) and what it attended.

    attended[b, h]: keys attended by query head h, summed over the T queries.
    full[b]: keys those T queries could attend under dense attention (sum of position + 1).
    """

    output: torch.Tensor
    attended: torch.Tensor
    full: int

    @property
    def density(self) -> torch.Tensor:
        return self.attended.double().mean(dim=1) / self.full

    @property
    def sparsity(self) -> torch.Tensor:
        return 1.0 - self.density


# --------------------------------------------------------------------------- base classes
class PrefillMethod:
    """A prefill pattern. Subclasses implement `pattern(q, k) -> (allowed_rows, budget)`."""

    name: ClassVar[str] = ""
    phase: ClassVar[str] = "prefill"

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> PrefillResult:
        check_qkv(q, k, v, self.name)
        with torch.no_grad():
            allowed_rows, budget = self.pattern(q, k)
            out, attended = attend_rows(q, k, v, allowed_rows)
        return PrefillResult(out, attended, causal_pairs(q.shape[2]), budget)

    def pattern(self, q: torch.Tensor, k: torch.Tensor) -> tuple[Callable[[int, int], torch.Tensor], dict]:
        raise NotImplementedError

    def mask(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The full (B, H, L, L) boolean pattern, causal applied. For tests and plots (O(L^2) memory)."""
        check_qkv(q, k, k, self.name)
        batch, heads, length, _ = q.shape
        with torch.no_grad():
            allowed_rows, _ = self.pattern(q, k)
            causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
            return (allowed_rows(0, length) & causal).expand(batch, heads, length, length).clone()


class DecodeCache:
    """A KV cache that decode queries attend through a method's selection.

    Holds the full keys/values (B, kv_heads, n, D) and `prompt_keep` (B, kv_heads, prompt_length),
    which prompt positions survive compression (None: all). Keys appended after the prompt
    (answer tokens) are always kept; subclasses may choose per query instead (`allowed`).
    Running totals over all calls give the per-sample decode sparsity of a whole generation.
    """

    def __init__(self, k: torch.Tensor, v: torch.Tensor, prompt_keep: torch.Tensor | None, method: str):
        self.k, self.v = k, v
        self.prompt_length = k.shape[2]
        self.prompt_keep = prompt_keep
        self.method = method
        self.attended_total = torch.zeros(k.shape[0], 0, dtype=torch.long)  # sized on first call
        self.full_total = 0

    @property
    def length(self) -> int:
        return self.k.shape[2]

    def allowed(self, q: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, H, T, n) bool: keys each new query may attend, before the causal mask."""
        batch, heads, steps, _ = q.shape
        allowed = torch.ones(batch, heads, steps, self.length, dtype=torch.bool, device=q.device)
        if self.prompt_keep is not None:
            allowed[..., :self.prompt_length] = expand_kv(self.prompt_keep, heads)[:, :, None, :]
        return allowed

    def attend(self, q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor) -> DecodeResult:
        """Append the new tokens' keys/values, then attend the T new queries (causal among them)."""
        check_qkv(q, k_new, v_new, self.method)
        if k_new.shape[1] != self.k.shape[1] or k_new.shape[0] != self.k.shape[0]:
            raise ValueError(f"{self.method}: new keys {tuple(k_new.shape)} do not match the cache "
                             f"{tuple(self.k.shape)} in batch or KV heads")
        batch, heads, steps, dim = q.shape
        with torch.no_grad():
            self.k = torch.cat([self.k, k_new], dim=2)
            self.v = torch.cat([self.v, v_new], dim=2)
            positions = torch.arange(self.length - steps, self.length, device=q.device)
            causal = torch.arange(self.length, device=q.device)[None, :] <= positions[:, None]
            allowed = self.allowed(q, positions) & causal
            scores = (q @ expand_kv(self.k, heads).transpose(-1, -2)).float() * dim ** -0.5
            probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
            out = probs.to(self.v.dtype) @ expand_kv(self.v, heads)
            attended = allowed.sum(dim=(-1, -2))
        full = int((positions + 1).sum())
        if self.attended_total.shape[1] != heads:
            self.attended_total = torch.zeros(batch, heads, dtype=torch.long)
        self.attended_total += attended.cpu()
        self.full_total += full
        return DecodeResult(out, attended, full)

    @property
    def sparsity(self) -> torch.Tensor:
        """Per-sample decode sparsity over every call so far (heads averaged)."""
        if self.full_total == 0:
            raise RuntimeError("no decode step has run yet")
        return 1.0 - self.attended_total.double().mean(dim=1) / self.full_total


class DecodeMethod:
    """A decode pattern: `new_cache(q_prompt, k, v)` builds the cache answer tokens attend through."""

    name: ClassVar[str] = ""
    phase: ClassVar[str] = "decode"

    def new_cache(self, q_prompt: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> DecodeCache:
        raise NotImplementedError

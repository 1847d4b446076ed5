"""Cost model for sparse attention: prefill FLOPs and decode memory transfers.

Follows the Sparse Frontier (Nawrot et al., 2025), Appendix B, with rho = 1 - sparsity and
N layers, d model width, d_h head width, h query heads, n_kv KV heads, d_mlp, |V| vocabulary, B batch:

    prefill FLOPs = B * (2 L d + F_attn + F_mlp + 2 L d |V|) + selection overhead
    F_attn = N * (2 L d (2 d + 2 d_h n_kv) + rho * h * P(L) * (4 d_h + 3))
    F_mlp  = N * (6 L d d_mlp + 2 L d_mlp)
    decode memory (elements read per generated token) = Mem_w + B * Mem_kv + selection overhead
    Mem_w  = N (4 d^2 + 3 d d_mlp) + d |V| + d,   Mem_kv = N * 2 L d_h n_kv * rho

The causal-triangle convention (one convention, used everywhere; reports include
CAUSAL_CONVENTION): sparsity is measured against the causal triangle, P(L) = L(L+1)/2 query-key
pairs, and the dense attention term counts that same triangle. So the attention term is exactly
proportional to 1 - sparsity, and dense attention costs half (plus the diagonal) of what the
paper's printed L^2 would give. `attention_core_flops(..., full_square=True)` gives the paper's
printed full-square count for comparison only.

Formulas are used as printed, including two simplifications of the paper: Q and O projections are
counted as d x d (exact when h * d_h = d) and Mem_w counts 4 d^2 attention weights per layer (an
overcount for grouped-query models; the term is the same for every method on a given model, so it
shifts all of a model's decode costs equally). Decode memory is in elements; multiply by bytes
per element (2 for bf16) for bytes. In decode, rho is the fraction of the L cached tokens read
per generated token; the triangle plays no role there.

Selection overheads (what a method spends choosing what to attend to), per layer:
- Vertical-Slash (prefill, paper formula): B h [2 d_h L q + 5 L q + 2 L log2 L + (L/64)(k_v + k_s)].
  We read "2dLq" as the q = last_q final queries (64 by default, as in MInference) scored against
  all L keys (2 d_h FLOPs a pair: d is the head width inside the per-head bracket); 5 L q = scaling,
  softmax and the vertical/diagonal sums over those scores; 2 L log2 L = sorting the vertical and
  the slash scores for top-k; (L/64)(k_v + k_s) = building the index for 64-row blocks.
- FlexPrefill (prefill, derived; Lai et al. 2025, as in systems/lm/attention/flexprefill.py): the
  last block of q = b queries (b = the method's `block`, 64 by default) is scored against all keys
  (2 d_h q L + 5 q L, as above).
  Every head then builds both candidates, since the choice between them is made per head from the
  data: the vertical-slash one (mean, column and diagonal sums 3 q L; sorting both 2 L log2 L;
  coverage cumulative sums 2 L; index (L/64)(k_v + k_s)) and the query-aware one (mean-pooling Q
  and K 2 L d_h; pooled scores of every block pair and of the mean last query 2 d_h n_b (n_b + 1);
  softmax and coverage sums 6 n_b^2; per-row sort n_b^2 log2 n_b), plus the Jensen-Shannon test
  that picks one (15 n_b), n_b = ceil(L / b). The Sparse Frontier's own FlexPrefill had the
  vertical-slash branch only; its cost is this without the query-aware terms. Searching the
  coverage threshold to hit a target compression is budget targeting by the harness, not counted.
- Block-Sparse top-k (prefill, derived, MInference-style): mean-pool Q and K into n_b = ceil(L/b)
  blocks of b = `block` tokens (64 by default; 2 L d_h adds), score every block pair (2 d_h n_b^2,
  the full square as implemented), sort each row for top-k (n_b^2 log2 n_b, the same sort charge
  as above), write the index (n_b k).
- Sliding window with sinks, PowerAttention: 0. Their patterns depend on positions only, so there
  is no data-dependent estimate; the integer index is not floating-point work.
- Quest (decode, paper formula): B n_kv 2 d_h L / p elements per layer and step, the min and max key
  of every page of p = `page_size` tokens, 16 by default (1/p of the dense K+V reads).
- SnapKV, Ada-SnapKV (decode): 0 per generated token. Eviction is decided once, at the end of
  prefill; afterwards each step reads only the kept rho * L entries, already counted in Mem_kv.
  The one-time selection compute is given by snapkv_selection_flops for reports that want it.

Options go by the names the methods use (systems/lm/attention: `block`, `last_q`, `page_size`,
`window`, `kernel`), so the options a sweep ran with are the options it is costed with
(`phase_cost(..., **method_options)`). Options that only change which pairs are kept (sinks,
local diagonals, FlexPrefill's tau and token budgets) are accepted and do not enter the formulas:
their effect is in the realised sparsity the cost is evaluated at.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from bench.sparse import SparseAnalysisError, require_finite

CAUSAL_CONVENTION = (
    "sparsity is measured against the causal triangle of L(L+1)/2 query-key pairs, and dense "
    "prefill attention FLOPs count that same triangle (rho*h*L(L+1)/2*(4*d_head+3) per layer), "
    "so attention cost is exactly proportional to 1 - sparsity; decode memory counts elements "
    "read per generated token, rho = fraction of the cached tokens read"
)

PREFILL_METHODS = ("dense", "vertical_slash", "flexprefill", "block_sparse", "sliding_window",
                   "power_attention")
DECODE_METHODS = ("dense", "snapkv", "ada_snapkv", "quest", "sliding_window")
METHOD_ALIASES = {"power": "power_attention", "streaming": "sliding_window",
                  "streaming_llm": "sliding_window"}  # names used by systems/lm/attention
# Every option of every method, by the method's own name: those that enter its cost formula...
COSTED_OPTIONS = {
    "dense": (), "vertical_slash": ("n_vertical", "n_slash", "last_q"),
    "flexprefill": ("n_vertical", "n_slash", "block"), "block_sparse": ("top_k", "block"),
    "sliding_window": (), "power_attention": (), "snapkv": (), "ada_snapkv": (), "quest": ("page_size",),
}
# ...and those that only change which pairs (or cached tokens) are kept, or set the method's own
# budget: their effect on cost is carried by the realised sparsity.
UNCOSTED_OPTIONS = {
    "dense": (), "vertical_slash": ("sinks", "local"),
    "flexprefill": ("gamma", "tau", "min_budget", "max_budget", "sinks", "local"),
    "block_sparse": ("implementation",), "sliding_window": ("window", "sinks"),
    "power_attention": ("window_blocks", "block", "sink_blocks"),
    "snapkv": ("capacity", "window", "kernel"), "ada_snapkv": ("capacity", "window", "kernel", "min_head_fraction"),
    "quest": ("token_budget",),
}
QUEST_PAGE_SIZE = 16
MINFERENCE_INDEX_BLOCK = 64  # rows per block of the vertical-slash index kernel


# --------------------------------------------------------------------------- model shape
@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a decoder-only transformer that the cost model needs."""

    n_layers: int
    d_model: int
    d_head: int
    n_heads: int
    n_kv_heads: int
    d_mlp: int
    vocab: int
    tie_embeddings: bool = False  # only affects param_count
    qkv_bias: bool = False  # only affects param_count (Qwen2 has it)

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "d_head", "n_heads", "n_kv_heads", "d_mlp", "vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SparseAnalysisError(f"ModelShape.{name} must be a positive integer, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise SparseAnalysisError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> "ModelShape":
        """From a Hugging Face config dict (LlamaConfig / Qwen2Config field names)."""
        required = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
                    "vocab_size")
        missing = [key for key in required if config.get(key) is None]
        if missing:
            raise SparseAnalysisError(f"config lacks {', '.join(missing)}; is it a decoder-only LM config?")
        n_heads = int(config["num_attention_heads"])
        d_model = int(config["hidden_size"])
        head_dim = config.get("head_dim")
        return cls(
            n_layers=int(config["num_hidden_layers"]),
            d_model=d_model,
            d_head=int(head_dim) if head_dim else d_model // n_heads,
            n_heads=n_heads,
            n_kv_heads=int(config.get("num_key_value_heads") or n_heads),
            d_mlp=int(config["intermediate_size"]),
            vocab=int(config["vocab_size"]),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=bool(config.get("attention_bias", False)) or config.get("model_type") == "qwen2",
        )

    def param_count(self) -> int:
        """Parameters of a Llama/Qwen2-style model (RMSNorm, gated MLP, no MLP biases)."""
        q_width = self.n_heads * self.d_head
        kv_width = self.n_kv_heads * self.d_head
        attention = 2 * self.d_model * q_width + 2 * self.d_model * kv_width
        if self.qkv_bias:
            attention += q_width + 2 * kv_width
        per_layer = attention + 3 * self.d_model * self.d_mlp + 2 * self.d_model  # two norms
        embeddings = self.vocab * self.d_model * (1 if self.tie_embeddings else 2)
        return self.n_layers * per_layer + embeddings + self.d_model  # final norm

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- sparsity <-> compression
def compression_from_sparsity(sparsity: float) -> float:
    """C = 1 / (1 - sparsity); sparsity in [0, 1)."""
    value = require_finite("sparsity", sparsity)
    if not 0.0 <= value < 1.0:
        raise SparseAnalysisError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return 1.0 / (1.0 - value)


def sparsity_from_compression(compression: float) -> float:
    """sparsity = 1 - 1/C; compression C >= 1."""
    value = require_finite("compression", compression)
    if value < 1.0:
        raise SparseAnalysisError(f"compression ratio must be >= 1, got {compression!r}")
    return 1.0 - 1.0 / value


def causal_pairs(length: int) -> int:
    """Query-key pairs in the causal triangle of a length-L prefill: L(L+1)/2."""
    return _length(length) * (_length(length) + 1) // 2


def sparsity_from_kept_pairs(kept_pairs: int, length: int) -> float:
    """Realised sparsity of a prefill mask that keeps `kept_pairs` of the causal triangle."""
    total = causal_pairs(length)
    if not 0 <= kept_pairs <= total:
        raise SparseAnalysisError(f"kept_pairs must be in [0, {total}] for L={length}, got {kept_pairs}")
    return 1.0 - kept_pairs / total


# --------------------------------------------------------------------------- prefill
def attention_core_flops(shape: ModelShape, length: int, sparsity: float = 0.0, batch: int = 1,
                         full_square: bool = False) -> float:
    """B N h rho P (4 d_h + 3): QK^T, softmax and AV over the kept pairs.

    P = L(L+1)/2 (our convention). full_square=True gives the paper's printed L^2, for comparison.
    """
    rho = _density(sparsity)
    pairs = _length(length) ** 2 if full_square else causal_pairs(length)
    return float(_batch(batch) * shape.n_layers * shape.n_heads * rho * pairs * (4 * shape.d_head + 3))


def prefill_flops(shape: ModelShape, length: int, sparsity: float = 0.0, method: str = "dense",
                  batch: int = 1, **selection_options: Any) -> dict[str, float]:
    """Prefill FLOPs by component, with `total`. `selection_options` go to the method's overhead."""
    L, B, d = _length(length), _batch(batch), shape.d_model
    parts = {
        "embedding": float(B * 2 * L * d),
        "attention_projections": float(B * shape.n_layers * 2 * L * d
                                       * (2 * d + 2 * shape.d_head * shape.n_kv_heads)),
        "attention_core": attention_core_flops(shape, L, sparsity, B),
        "mlp": float(B * shape.n_layers * (6 * L * d * shape.d_mlp + 2 * L * shape.d_mlp)),
        "lm_head": float(B * 2 * L * d * shape.vocab),
        "selection": prefill_selection_flops(shape, method, L, sparsity, B, **selection_options),
    }
    parts["total"] = sum(parts.values())
    return parts


def prefill_selection_flops(shape: ModelShape, method: str, length: int, sparsity: float = 0.0,
                            batch: int = 1, **options: Any) -> float:
    """Selection overhead of a prefill method (see the module docstring for each derivation)."""
    name = normalise_method(method)
    if name in ("dense", "sliding_window", "power_attention"):
        _reject_options(name, options, ())
        return 0.0
    if name == "vertical_slash":
        _reject_options(name, options, ("n_vertical", "n_slash", "last_q"))
        return vertical_slash_selection_flops(shape, length, sparsity=sparsity, batch=batch, **options)
    if name == "flexprefill":
        _reject_options(name, options, ("n_vertical", "n_slash", "block"))
        return flexprefill_selection_flops(shape, length, sparsity=sparsity, batch=batch, **options)
    if name == "block_sparse":
        _reject_options(name, options, ("top_k", "block"))
        return block_sparse_selection_flops(shape, length, sparsity=sparsity, batch=batch, **options)
    raise SparseAnalysisError(f"unknown prefill method {method!r}; known: {', '.join(PREFILL_METHODS)}")


def vertical_slash_lines(length: int, sparsity: float) -> tuple[int, int]:
    """(k_v, k_s) that keep about rho * L(L+1)/2 pairs, split evenly.

    An approximation for when the realised counts are not known: the chosen lines are mostly
    early columns (sinks) and near-diagonal slashes, each covering about L pairs.
    """
    lines = math.ceil(_density(sparsity) * (_length(length) + 1) / 2)
    return math.ceil(lines / 2), lines // 2


def vertical_slash_selection_flops(shape: ModelShape, length: int, n_vertical: int | None = None,
                                   n_slash: int | None = None, last_q: int = 64,
                                   sparsity: float = 0.0, batch: int = 1) -> float:
    """B N h [2 d_h L q + 5 L q + 2 L log2 L + (L/64)(k_v + k_s)] (paper formula)."""
    L, q = _length(length), _positive_int("last_q", last_q)
    k_v, k_s = _lines(L, sparsity, n_vertical, n_slash)
    per_head = (2 * shape.d_head * L * q + 5 * L * q + 2 * L * math.log2(L)
                + (L / MINFERENCE_INDEX_BLOCK) * (k_v + k_s))
    return float(_batch(batch) * shape.n_layers * shape.n_heads * per_head)


def flexprefill_selection_flops(shape: ModelShape, length: int, n_vertical: int | None = None,
                                n_slash: int | None = None, block: int = 64,
                                sparsity: float = 0.0, batch: int = 1) -> float:
    """Both FlexPrefill candidates for every head, plus the estimate and the JS test (see above)."""
    L, b = _length(length), _positive_int("block", block)
    q, n_b = min(b, L), math.ceil(L / b)
    k_v, k_s = _lines(L, sparsity, n_vertical, n_slash)
    d_h = shape.d_head
    estimate = 2 * d_h * q * L + 5 * q * L
    vertical_slash = 3 * q * L + 2 * L * math.log2(L) + 2 * L + (L / MINFERENCE_INDEX_BLOCK) * (k_v + k_s)
    query_aware = (2 * L * d_h + 2 * d_h * n_b * (n_b + 1) + 6 * n_b ** 2
                   + n_b ** 2 * math.log2(max(n_b, 2)))
    per_head = estimate + vertical_slash + query_aware + 15 * n_b
    return float(_batch(batch) * shape.n_layers * shape.n_heads * per_head)


def block_sparse_selection_flops(shape: ModelShape, length: int, top_k: int | None = None,
                                 block: int = 64, sparsity: float = 0.0, batch: int = 1) -> float:
    """B N h [2 L d_h + 2 d_h n_b^2 + n_b^2 log2 n_b + n_b k], n_b = ceil(L / block).

    Without top_k, k is the block count per row that keeps rho of the causal block triangle.
    """
    L, b = _length(length), _positive_int("block", block)
    n_blocks = math.ceil(L / b)
    k = top_k if top_k is not None else math.ceil(_density(sparsity) * (n_blocks + 1) / 2)
    k = _positive_int("top_k", k)
    per_head = (2 * L * shape.d_head + 2 * shape.d_head * n_blocks ** 2
                + n_blocks ** 2 * math.log2(max(n_blocks, 2)) + n_blocks * k)
    return float(_batch(batch) * shape.n_layers * shape.n_heads * per_head)


def snapkv_selection_flops(shape: ModelShape, length: int, window: int = 32, kernel: int = 7,
                           adaptive: bool = False, batch: int = 1) -> float:
    """One-time FLOPs of SnapKV's eviction at the end of prefill (not a per-step decode cost).

    Per layer: h query heads score the last `window` queries against L keys (2 d_h w L + 5 w L);
    each KV head pools the scores (L * kernel) and sorts them for top-k (L log2 L). Ada-SnapKV
    ranks all KV heads of a layer together: (n_kv L) log2(n_kv L) instead of n_kv L log2 L.
    """
    L, w = _length(length), _positive_int("window", window)
    kernel = _positive_int("kernel", kernel)
    scoring = shape.n_heads * (2 * shape.d_head * w * L + 5 * w * L)
    pooling = shape.n_kv_heads * L * kernel
    pooled = shape.n_kv_heads * L
    sorting = pooled * math.log2(pooled) if adaptive else shape.n_kv_heads * L * math.log2(L)
    return float(_batch(batch) * shape.n_layers * (scoring + pooling + sorting))


# --------------------------------------------------------------------------- decode
def decode_memory(shape: ModelShape, context_length: int, sparsity: float = 0.0,
                  method: str = "dense", batch: int = 1,
                  page_size: int = QUEST_PAGE_SIZE) -> dict[str, float]:
    """Elements read from memory to generate one token with `context_length` cached tokens."""
    L, B, d = _length(context_length), _batch(batch), shape.d_model
    parts = {
        "weights": float(shape.n_layers * (4 * d * d + 3 * d * shape.d_mlp) + d * shape.vocab + d),
        "kv_cache": float(B * shape.n_layers * 2 * L * shape.d_head * shape.n_kv_heads
                          * _density(sparsity)),
        "selection": decode_selection_memory(shape, method, L, B, page_size),
    }
    parts["total"] = sum(parts.values())
    return parts


def decode_selection_memory(shape: ModelShape, method: str, context_length: int, batch: int = 1,
                            page_size: int = QUEST_PAGE_SIZE) -> float:
    """Per-step selection reads: Quest's page min/max keys; 0 for dense and eviction (SnapKV-style,
    or StreamingLLM's sinks + recent window)."""
    name = normalise_method(method)
    if name in ("dense", "snapkv", "ada_snapkv", "sliding_window"):
        return 0.0
    if name == "quest":
        p = _positive_int("page_size", page_size)
        return float(_batch(batch) * shape.n_layers * shape.n_kv_heads * 2 * shape.d_head
                     * _length(context_length) / p)
    raise SparseAnalysisError(f"unknown decode method {method!r}; known: {', '.join(DECODE_METHODS)}")


# --------------------------------------------------------------------------- one number per phase
def phase_cost(shape: ModelShape, phase: str, length: int, compression: float = 1.0,
               method: str = "dense", batch: int = 1, **method_options: Any) -> float:
    """Prefill FLOPs or decode elements per generated token, overheads included.

    `method_options`: the method's options as the method takes them (a sweep's `--method-opt`);
    those that enter the cost are used, the others accepted (see cost_options).
    """
    sparsity = sparsity_from_compression(compression)
    options = cost_options(method, method_options)
    if phase == "prefill":
        return prefill_flops(shape, length, sparsity, method, batch, **options)["total"]
    if phase == "decode":
        return decode_memory(shape, length, sparsity, method, batch, **options)["total"]
    raise SparseAnalysisError(f"phase must be 'prefill' or 'decode', got {phase!r}")


def cost_options(method: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a method's options that enters its cost; an option the method does not have is
    an error that lists the ones it has."""
    name = normalise_method(method)
    if name not in COSTED_OPTIONS:
        known = sorted(set(PREFILL_METHODS) | set(DECODE_METHODS))
        raise SparseAnalysisError(f"unknown method {method!r}; known: {', '.join(known)}")
    known_options = COSTED_OPTIONS[name] + UNCOSTED_OPTIONS[name]
    unknown = sorted(set(options) - set(known_options))
    if unknown:
        raise SparseAnalysisError(f"method {method!r} has no option(s) {unknown}; its options: "
                                  f"{', '.join(sorted(known_options)) or 'none'}")
    return {key: value for key, value in options.items() if key in COSTED_OPTIONS[name]}


def normalise_method(method: str) -> str:
    """'Vertical-Slash' -> 'vertical_slash', 'Ada-SnapKV' -> 'ada_snapkv', 'power' -> 'power_attention'."""
    if not isinstance(method, str) or not method.strip():
        raise SparseAnalysisError(f"method must be a non-empty string, got {method!r}")
    name = method.strip().lower().replace("-", "_").replace(" ", "_")
    return METHOD_ALIASES.get(name, name)


# --------------------------------------------------------------------------- validation helpers
def _density(sparsity: float) -> float:
    value = require_finite("sparsity", sparsity)
    if not 0.0 <= value < 1.0:
        raise SparseAnalysisError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return 1.0 - value


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SparseAnalysisError(f"{name} must be a positive integer, got {value!r}")
    return value


def _length(length: Any) -> int:
    return _positive_int("length", length)


def _batch(batch: Any) -> int:
    return _positive_int("batch", batch)


def _lines(length: int, sparsity: float, n_vertical: int | None, n_slash: int | None) -> tuple[int, int]:
    if n_vertical is None and n_slash is None:
        return vertical_slash_lines(length, sparsity)
    if n_vertical is None or n_slash is None:
        raise SparseAnalysisError("give both n_vertical and n_slash, or neither")
    for name, value in (("n_vertical", n_vertical), ("n_slash", n_slash)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= length:
            raise SparseAnalysisError(f"{name} must be an integer in [0, {length}], got {value!r}")
    return n_vertical, n_slash


def _reject_options(method: str, options: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    extra = sorted(set(options) - set(allowed))
    if extra:
        raise SparseAnalysisError(f"method {method!r} takes no options {extra}")

"""Training-free sparse attention methods in pure PyTorch, one short module each.

Prefill methods (called as `method(q, k, v) -> PrefillResult`, output plus realised sparsity per
sample against the causal triangle):
    dense, vertical-slash, flexprefill, block-sparse, streaming, power
Decode methods (`cache = method.new_cache(q_prompt, k, v)`, then `cache.attend(q, k_new, v_new)
-> DecodeResult` for each step or for a teacher-forced block of answer tokens; sparsity against
the full KV length each decode query could attend):
    dense, snapkv, ada-snapkv, quest, streaming (sinks + recent window kept: StreamingLLM's eviction)

Every method takes a budget: `compression=C` (C = 1/(1 - sparsity), C >= 1) or its own explicit
budget (window, top_k, n_vertical/n_slash, gamma, capacity, token_budget...). A budget the method
cannot realise raises BadBudget (a ValueError) naming the valid range.

This module imports nothing heavy: methods (and torch) load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_METHODS = {
    "dense": ("dense", "Dense", ("prefill", "decode")),
    "vertical-slash": ("vertical_slash", "VerticalSlash", ("prefill",)),
    "flexprefill": ("flexprefill", "FlexPrefill", ("prefill",)),
    "block-sparse": ("block_sparse", "BlockSparse", ("prefill",)),
    "streaming": ("streaming", "SlidingWindowSinks", ("prefill", "decode")),
    "power": ("power", "PowerAttention", ("prefill",)),
    "snapkv": ("snapkv", "SnapKV", ("decode",)),
    "ada-snapkv": ("snapkv", "AdaSnapKV", ("decode",)),
    "quest": ("quest", "Quest", ("decode",)),
}

PREFILL_METHODS = tuple(name for name, (_, _, phases) in _METHODS.items() if "prefill" in phases)
DECODE_METHODS = tuple(name for name, (_, _, phases) in _METHODS.items() if "decode" in phases)


def method_class(name: str) -> type:
    if name not in _METHODS:
        raise ValueError(f"unknown attention method {name!r}; known: {', '.join(_METHODS)}")
    module, cls, _ = _METHODS[name]
    return getattr(import_module(f"systems.lm.attention.{module}"), cls)


def make_method(name: str, phase: str | None = None, **budget: Any):
    """Build a method by name, e.g. make_method("quest", compression=5), checking its phase."""
    if phase is not None:
        if phase not in ("prefill", "decode"):
            raise ValueError(f"phase must be 'prefill' or 'decode'; got {phase!r}")
        if name in _METHODS and phase not in _METHODS[name][2]:
            valid = PREFILL_METHODS if phase == "prefill" else DECODE_METHODS
            raise ValueError(f"{name!r} is not a {phase} method; {phase} methods: {', '.join(valid)}")
    return method_class(name)(**budget)


def phases(name: str) -> tuple[str, ...]:
    method_class(name)  # validates the name
    return _METHODS[name][2]

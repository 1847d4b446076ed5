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


def _int(default: int | None, minimum: int) -> dict[str, Any]:
    return {"type": "int", "min": minimum, "default": default}


def _fraction(default: float) -> dict[str, Any]:
    return {"type": "number", "min": 0.0, "max": 1.0, "default": default}


# What each method's constructor takes besides `compression`, written out here (and checked against
# the constructors by tests) so that callers can validate a method and its options without
# importing torch. "budget": the method's explicit alternative to compression=C (a sweep sets the
# budget through C, so these are not structure options); "options": the structure, with the type,
# range and default the constructor checks and uses.
_OPTIONS: dict[str, dict[str, Any]] = {
    "dense": {"budget": (), "options": {}},
    "vertical-slash": {"budget": ("n_vertical", "n_slash"),
                       "options": {"last_q": _int(64, 1), "sinks": _int(4, 0), "local": _int(64, 1)}},
    "flexprefill": {"budget": ("gamma",),
                    "options": {"tau": _fraction(0.1), "block": _int(64, 1), "min_budget": _int(128, 1),
                                "max_budget": _int(None, 1), "sinks": _int(4, 0), "local": _int(64, 1)}},
    "block-sparse": {"budget": ("top_k",),
                     "options": {"block": _int(64, 1),
                                 "implementation": {"type": "choice", "choices": ("gather", "mask"),
                                                    "default": "gather"}}},
    "streaming": {"budget": ("window",), "options": {"sinks": _int(4, 0)}},
    "power": {"budget": ("window_blocks",), "options": {"block": _int(64, 1), "sink_blocks": _int(1, 0)}},
    "snapkv": {"budget": ("capacity",), "options": {"window": _int(32, 1), "kernel": _int(7, 1)}},
    "ada-snapkv": {"budget": ("capacity",),
                   "options": {"window": _int(32, 1), "kernel": _int(7, 1), "min_head_fraction": _fraction(0.2)}},
    "quest": {"budget": ("token_budget",), "options": {"page_size": _int(16, 1)}},
}


def catalogue() -> dict[str, dict[str, Any]]:
    """Every method as plain data: {name: {"phases", "budget", "options": {option: {"type", "min",
    "max", "choices", "default"}}}}. LM systems hand it to the sweep (`attention_methods()`),
    which checks a grid's methods and options before any model loads."""
    return {name: {"phases": phases, "budget": _OPTIONS[name]["budget"],
                   "options": {key: dict(spec) for key, spec in _OPTIONS[name]["options"].items()}}
            for name, (_, _, phases) in _METHODS.items()}


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

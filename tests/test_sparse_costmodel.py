"""Cost model: hand computations, the triangle convention, monotonicity, real model shapes."""

from __future__ import annotations

import json
import math

import pytest

from bench.sparse import SparseAnalysisError
from bench.sparse.costmodel import (
    CAUSAL_CONVENTION,
    ModelShape,
    attention_core_flops,
    block_sparse_selection_flops,
    causal_pairs,
    compression_from_sparsity,
    decode_memory,
    flexprefill_selection_flops,
    normalise_method,
    phase_cost,
    prefill_flops,
    sparsity_from_compression,
    sparsity_from_kept_pairs,
    vertical_slash_selection_flops,
)

# N=2 layers, d=8, d_h=4, h=2 query heads, n_kv=1, d_mlp=16, |V|=10
TINY = ModelShape(n_layers=2, d_model=8, d_head=4, n_heads=2, n_kv_heads=1, d_mlp=16, vocab=10)

QWEN25_7B_CONFIG = {
    "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
    "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
    "vocab_size": 152064, "tie_word_embeddings": False,
}
SMOLLM2_135M_CONFIG = {
    "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
    "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
    "vocab_size": 49152, "tie_word_embeddings": True, "attention_bias": False,
}


def test_prefill_hand_computation_tiny_model() -> None:
    # L=4, B=1, sparsity 0.5 -> rho = 0.5; causal triangle P = 4*5/2 = 10 pairs
    parts = prefill_flops(TINY, length=4, sparsity=0.5)
    assert parts["embedding"] == 2 * 4 * 8 == 64
    # N * 2Ld * (2d + 2 d_h n_kv) = 2 * 2*4*8 * (16 + 8) = 2 * 64 * 24
    assert parts["attention_projections"] == 3072
    # N * h * rho * P * (4 d_h + 3) = 2 * 2 * 0.5 * 10 * 19
    assert parts["attention_core"] == 380
    # N * (6 L d d_mlp + 2 L d_mlp) = 2 * (6*4*8*16 + 2*4*16) = 2 * (3072 + 128)
    assert parts["mlp"] == 6400
    # 2 L d |V| = 2*4*8*10
    assert parts["lm_head"] == 640
    assert parts["selection"] == 0
    assert parts["total"] == 64 + 3072 + 380 + 6400 + 640 == 10556


def test_full_square_minus_triangle_is_the_strict_upper_triangle() -> None:
    square = attention_core_flops(TINY, 4, sparsity=0.5, full_square=True)
    triangle = attention_core_flops(TINY, 4, sparsity=0.5)
    assert square == 2 * 2 * 0.5 * 16 * 19 == 608
    # difference = N h rho (4 d_h + 3) * L(L-1)/2 = 2*2*0.5*19*6
    assert square - triangle == 228
    for length in (7, 128, 4096):
        diff = attention_core_flops(TINY, length, 0.25, 3, True) - attention_core_flops(TINY, length, 0.25, 3)
        expected = 3 * 2 * 2 * 0.75 * 19 * length * (length - 1) / 2
        assert diff == pytest.approx(expected, rel=1e-12)
    # dense triangle / square -> 1/2 as L grows, exactly (L+1)/(2L)
    ratio = attention_core_flops(TINY, 1000) / attention_core_flops(TINY, 1000, full_square=True)
    assert ratio == pytest.approx(1001 / 2000, rel=1e-12)
    assert "triangle" in CAUSAL_CONVENTION


def test_attention_term_is_exactly_proportional_to_density() -> None:
    dense = attention_core_flops(TINY, 64)
    for compression in (1.43, 2.0, 5.0, 20.0):
        sparse = attention_core_flops(TINY, 64, sparsity_from_compression(compression))
        assert sparse == pytest.approx(dense / compression, rel=1e-12)


def test_decode_hand_computation_and_quest_overhead() -> None:
    parts = decode_memory(TINY, context_length=4, sparsity=0.5)
    # N(4d^2 + 3 d d_mlp) + d|V| + d = 2*(256 + 384) + 80 + 8
    assert parts["weights"] == 1368
    # N * 2 L d_h n_kv * rho = 2 * 2*4*4*1 * 0.5
    assert parts["kv_cache"] == 32
    assert parts["total"] == 1400
    quest = decode_memory(TINY, 4, 0.5, method="quest", page_size=2)
    # B N n_kv 2 d_h L / p = 2 * 1 * 2*4 * 4 / 2
    assert quest["selection"] == 32
    assert quest["total"] == 1432
    # batch multiplies the cache reads, not the weights
    batched = decode_memory(TINY, 4, 0.5, batch=3)
    assert batched["weights"] == 1368 and batched["kv_cache"] == 96
    # SnapKV-style eviction costs nothing per step
    assert decode_memory(TINY, 4, 0.5, method="Ada-SnapKV")["selection"] == 0


def test_vertical_slash_overhead_hand_computation() -> None:
    # per head: 2 d_h L q + 5 L q + 2 L log2 L + (L/64)(k_v + k_s), q=2, k_v=k_s=1, L=4
    per_head = 2 * 4 * 4 * 2 + 5 * 4 * 2 + 2 * 4 * 2 + (4 / 64) * 2
    assert per_head == 120.125
    got = vertical_slash_selection_flops(TINY, 4, n_vertical=1, n_slash=1, last_q=2)
    assert got == 2 * 2 * per_head  # N * h
    total = prefill_flops(TINY, 4, 0.5, "vertical-slash", n_vertical=1, n_slash=1, last_q=2)
    assert total["total"] == 10556 + 480.5


def test_flexprefill_and_block_sparse_overhead_hand_computation() -> None:
    # FlexPrefill, L=8, block b=4 -> q=4 last queries, n_b=2 blocks, k_v=k_s=1, d_h=4, per head:
    estimate = 2 * 4 * 4 * 8 + 5 * 4 * 8  # 2 d_h q L + 5 q L = 416
    vertical_slash = 3 * 4 * 8 + 2 * 8 * 3 + 2 * 8 + (8 / 64) * 2  # 3qL + 2L log2 L + 2L + (L/64)(kv+ks)
    query_aware = 2 * 8 * 4 + 2 * 4 * 2 * 3 + 6 * 4 + 4 * 1  # 2 L d_h + 2 d_h n_b(n_b+1) + 6 n_b^2 + n_b^2 log2 n_b
    js_test = 15 * 2
    assert (estimate, vertical_slash, query_aware) == (416, 160.25, 140)
    got = flexprefill_selection_flops(TINY, 8, n_vertical=1, n_slash=1, block=4)
    assert got == 2 * 2 * (estimate + vertical_slash + query_aware + js_test) == 2985
    # Block-Sparse, L=8, b=4 -> n_b=2, top_k=1: 2 L d_h + 2 d_h n_b^2 + n_b^2 log2 n_b + n_b k
    assert block_sparse_selection_flops(TINY, 8, top_k=1, block=4) == 2 * 2 * (64 + 32 + 4 + 2)
    # static patterns carry no selection cost, under the names systems/ uses too
    for name in ("streaming", "power", "sliding_window", "power_attention"):
        assert prefill_flops(TINY, 8, 0.5, name)["selection"] == 0
    assert normalise_method("Block-Sparse") == "block_sparse"
    assert normalise_method("power") == "power_attention"


@pytest.mark.parametrize("phase,method", [("prefill", "dense"), ("prefill", "vertical_slash"),
                                          ("prefill", "flexprefill"), ("prefill", "block_sparse"),
                                          ("decode", "dense"), ("decode", "quest"),
                                          ("decode", "snapkv")])
def test_cost_falls_with_sparsity(phase: str, method: str) -> None:
    shape = ModelShape.from_hf_config(QWEN25_7B_CONFIG)
    grid = [1.0, 1.43, 1.67, 2, 2.5, 3.33, 5, 7.5, 10, 15, 20]
    costs = [phase_cost(shape, phase, 32768, c, method) for c in grid]
    assert all(later < earlier for earlier, later in zip(costs, costs[1:]))
    # an overhead-carrying method at C=1 costs more than dense
    if method in ("vertical_slash", "quest"):
        assert costs[0] > phase_cost(shape, phase, 32768, 1.0, "dense")


def test_cost_grows_with_length_and_model_size() -> None:
    small = ModelShape.from_hf_config(SMOLLM2_135M_CONFIG)
    big = ModelShape.from_hf_config(QWEN25_7B_CONFIG)
    for phase in ("prefill", "decode"):
        assert phase_cost(big, phase, 4096) > phase_cost(small, phase, 4096)
        assert phase_cost(small, phase, 8192) > phase_cost(small, phase, 4096)


def test_qwen25_7b_shape_and_parameter_count() -> None:
    shape = ModelShape.from_hf_config(QWEN25_7B_CONFIG)
    assert (shape.d_head, shape.n_kv_heads, shape.qkv_bias) == (128, 4, True)
    # 28 layers * 233,057,792 + 2 * 152064*3584 embeddings + 3584 final norm
    assert shape.param_count() == 7_615_616_512
    assert shape.param_count() == pytest.approx(7.6e9, rel=0.01)
    json.dumps(shape.to_dict())


def test_smollm2_135m_parameter_count() -> None:
    shape = ModelShape.from_hf_config(SMOLLM2_135M_CONFIG)
    assert shape.tie_embeddings and not shape.qkv_bias
    assert shape.param_count() == 134_515_008


def test_compression_and_sparsity_round_trip() -> None:
    assert compression_from_sparsity(0.9) == pytest.approx(10.0)
    assert compression_from_sparsity(0.0) == 1.0
    assert sparsity_from_compression(20) == pytest.approx(0.95)
    for c in (1.43, 1.67, 2, 2.5, 3.33, 5, 7.5, 10, 15, 20):
        assert compression_from_sparsity(sparsity_from_compression(c)) == pytest.approx(c, rel=1e-12)
    assert causal_pairs(4) == 10
    assert sparsity_from_kept_pairs(5, 4) == 0.5


@pytest.mark.parametrize("call", [
    lambda: compression_from_sparsity(1.0),
    lambda: compression_from_sparsity(-0.1),
    lambda: sparsity_from_compression(0.5),
    lambda: sparsity_from_compression(math.nan),
    lambda: prefill_flops(TINY, 0),
    lambda: prefill_flops(TINY, 16, method="no_such_method"),
    lambda: prefill_flops(TINY, 16, method="dense", page_size=4),
    lambda: decode_memory(TINY, 16, method="vertical_slash"),
    lambda: vertical_slash_selection_flops(TINY, 16, n_vertical=3),
    lambda: sparsity_from_kept_pairs(11, 4),
    lambda: phase_cost(TINY, "train", 16),
    lambda: ModelShape.from_hf_config({"hidden_size": 8}),
    lambda: ModelShape(2, 8, 4, 3, 2, 16, 10),
])
def test_bad_input_is_a_clear_error(call) -> None:
    with pytest.raises(SparseAnalysisError):
        call()

"""Sparse attention methods: exactness at C=1, causality, realised sparsity, budgets, needles.

All tensors are small (L <= 1024, head_dim 16) so the module runs in a few seconds on CPU.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from systems.lm.attention import DECODE_METHODS, PREFILL_METHODS, make_method  # noqa: E402
from systems.lm.attention.base import BadBudget, causal_pairs, expand_kv  # noqa: E402

B, H, HKV, D = 2, 4, 2, 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: on a shared 2-core machine, intra-op threads only add waiting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

# Small-L settings so every method can reach the compressions tested (defaults target L >= 4k).
PREFILL_OPTIONS = {
    "dense": {},
    "vertical-slash": {"last_q": 32, "local": 8},
    "flexprefill": {"block": 32, "min_budget": 16, "local": 8},
    "block-sparse": {"block": 32},
    "streaming": {},
    "power": {"block": 8},
}
DECODE_OPTIONS = {"dense": {}, "snapkv": {"window": 16}, "ada-snapkv": {"window": 16}, "quest": {}, "streaming": {}}


def qkv(length: int, seed: int = 0, heads: int = H, kv_heads: int = HKV):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, heads, length, D, generator=g), torch.randn(B, kv_heads, length, D, generator=g),
            torch.randn(B, kv_heads, length, D, generator=g))


def dense_reference(q, k, v, offset: int = 0):
    """Plain causal softmax attention of queries at positions offset.. over all keys."""
    heads = q.shape[1]
    scores = (q @ expand_kv(k, heads).transpose(-1, -2)) * q.shape[-1] ** -0.5
    positions = torch.arange(offset, offset + q.shape[2])[:, None]
    future = torch.arange(k.shape[2])[None, :] > positions
    return torch.softmax(scores.masked_fill(future, float("-inf")), -1) @ expand_kv(v, heads)


def prefill(name: str, compression: float, **extra):
    return make_method(name, compression=compression, **{**PREFILL_OPTIONS[name], **extra})


def decode(name: str, compression: float):
    return make_method(name, compression=compression, **DECODE_OPTIONS[name])


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("name", PREFILL_METHODS)
def test_prefill_at_c1_equals_dense_attention(name):
    q, k, v = qkv(200)  # not a multiple of any block size
    result = prefill(name, 1)(q, k, v)
    assert result.output.shape == q.shape
    assert torch.allclose(result.output, dense_reference(q, k, v), atol=1e-5)
    assert torch.all(result.sparsity.abs() < 1e-12)


@pytest.mark.parametrize("name", DECODE_METHODS)
def test_decode_at_c1_equals_dense_attention(name):
    q, k, v = qkv(200)
    qa, ka, va = qkv(6, seed=1)
    cache = decode(name, 1).new_cache(q, k, v)
    result = cache.attend(qa, ka, va)
    expected = dense_reference(qa, torch.cat([k, ka], 2), torch.cat([v, va], 2), offset=200)
    assert torch.allclose(result.output, expected, atol=1e-5)
    assert torch.all(result.sparsity.abs() < 1e-12)


@pytest.mark.parametrize("length", [256, 257, 300])
def test_block_gather_matches_masked_reference(length):
    q, k, v = qkv(length, seed=3)
    for compression in (1.5, 3, 6):
        gather = make_method("block-sparse", compression=compression, block=32)(q, k, v)
        masked = make_method("block-sparse", compression=compression, block=32, implementation="mask")(q, k, v)
        assert gather.budget == masked.budget
        assert torch.allclose(gather.output, masked.output, atol=1e-5)
        assert torch.equal(gather.attended_pairs, masked.attended_pairs)


def test_flexprefill_both_head_kinds_are_exact_at_full_coverage():
    q, k, v = qkv(200, seed=4)
    for tau in (0.0, 1.0):  # 0: every head vertical-slash; 1: every head query-aware
        method = make_method("flexprefill", gamma=1.0, tau=tau, block=32, min_budget=16, local=8)
        result = method(q, k, v)
        assert result.budget["query_aware_heads"] == tau
        assert torch.allclose(result.output, dense_reference(q, k, v), atol=1e-5)


def _token_level_blocks(mask: torch.Tensor, block: int, r0: int, r1: int) -> torch.Tensor:
    """Reference: row i, key j is attended where the mask holds (i // block, j // block)."""
    rows, keys = torch.arange(r0, r1) // block, torch.arange(r1) // block
    return mask[:, :, rows][..., keys]


@pytest.mark.parametrize("length,block", [(512, 8), (100, 16), (65, 64), (7, 8)])
def test_block_pair_count_counts_the_causal_token_pairs_of_a_block_pattern(length, block):
    """The per-cell pair weights (FlexPrefill's bisection uses them directly) count exactly the
    causal token pairs a random block mask covers."""
    import math

    from systems.lm.attention.block_sparse import block_pair_count, block_pair_weights

    n_blocks = math.ceil(length / block)
    generator = torch.Generator().manual_seed(length)
    mask = torch.rand(3, 4, n_blocks, n_blocks, generator=generator) < 0.4
    mask &= torch.ones(n_blocks, n_blocks, dtype=torch.bool).tril()
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    expected = (_token_level_blocks(mask, block, 0, length) & causal).sum((-2, -1))
    assert torch.equal(block_pair_count(mask, block, length), expected)
    weights = block_pair_weights(n_blocks, block, length)
    assert torch.equal((mask * weights).sum((-2, -1)), expected)
    assert int(weights.sum()) == causal_pairs(length)  # the whole triangle


@pytest.mark.parametrize("length,tau", [(200, 0.0), (256, 0.3), (333, 1.0)])
def test_flexprefill_pair_count_equals_the_count_of_the_selected_pattern(length, tau):
    """The bisection's pair count comes from prefix tables; it must be the exact pair count of the
    pattern select() builds for that gamma (vertical-slash heads and query-aware heads alike)."""
    from systems.lm.attention.block_sparse import block_pair_count
    from systems.lm.attention.flexprefill import FlexPrefill
    from systems.lm.attention.vertical_slash import vs_pair_count

    q, k, _ = qkv(length, seed=length)
    method = FlexPrefill(compression=4, tau=tau, block=16, min_budget=16, local=8, max_budget=160)
    est = method.estimate(q, k)
    if tau in (0.0, 1.0):  # all vertical-slash / all query-aware heads
        assert bool(est["query_aware"].all()) == (tau == 1.0) and bool(est["query_aware"].any()) == (tau == 1.0)
    for gamma in (0.0, 0.1, 0.37, 0.5, 0.8, 0.95, 0.999, 1.0):
        verticals, slashes, block_mask = method.select(est, gamma)
        expected = vs_pair_count(verticals, slashes, length) + block_pair_count(block_mask, 16, length)
        assert torch.equal(method.pair_counts(est, [gamma])[0], expected), gamma


@pytest.mark.parametrize("compression", [1.0, 2.0, 3.3, 7.0])
def test_flexprefill_batched_bisection_finds_the_gamma_of_a_step_by_step_bisection(compression):
    """resolve_gamma counts several bisection levels per batch; the gamma it returns must be the
    one a plain step-by-step bisection over single-gamma pair counts returns."""
    from systems.lm.attention.flexprefill import GAMMA_TOLERANCE, FlexPrefill

    for seed, tau in ((1, 0.0), (2, 0.3), (3, 1.0)):
        q, k, _ = qkv(300, seed=seed)
        method = FlexPrefill(compression=compression, tau=tau, block=16, min_budget=16, local=8)
        est = method.estimate(q, k)
        target = 1 / compression

        def density(g: float) -> float:
            return float(method.pair_counts(est, [g]).double().mean()) / causal_pairs(300)

        best, best_error, lo, hi = 0.0, abs(density(0.0) - target), 0.0, 1.0
        for _ in range(20):
            mid = (lo + hi) / 2
            error = abs(density(mid) - target)
            if error < best_error:
                best, best_error = mid, error
            if compression > 1.0 and best_error <= GAMMA_TOLERANCE * target:
                break
            lo, hi = (mid, hi) if density(mid) < target else (lo, mid)
        else:
            if abs(density(1.0) - target) < best_error:
                best = 1.0
        assert method.resolve_gamma(est) == best, (seed, tau)


def test_flexprefill_density_grows_with_gamma_and_respects_min_budget():
    q, k, v = qkv(256, seed=5)
    densities = []
    for gamma in (0.0, 0.5, 0.9):
        for tau in (0.0, 1.0):
            result = make_method("flexprefill", gamma=gamma, tau=tau, block=32, min_budget=64, local=8)(q, k, v)
            densities.append((gamma, tau, float(result.density.mean())))
    for tau in (0.0, 1.0):
        series = [d for g, t, d in densities if t == tau]
        assert series == sorted(series) and series[0] < series[-1]
    # min_budget=64 tokens: at gamma 0 a vertical-slash head keeps >= 64 columns and 64 diagonals.
    mask = make_method("flexprefill", gamma=0.0, tau=0.0, block=32, min_budget=64, local=8).mask(q, k)
    assert int(mask[0, 0, -1].sum()) >= 64


# --------------------------------------------------------------------------- causality
@pytest.mark.parametrize("name", PREFILL_METHODS)
def test_prefill_never_reads_future_values(name):
    q, k, v = qkv(256, seed=6)
    method = prefill(name, 2 if name != "dense" else 1)
    before = method(q, k, v).output
    cut = 150
    v_future = v.clone()
    v_future[:, :, cut + 1:] += 100.0  # patterns depend on q, k only, so they stay the same
    after = method(q, k, v_future).output
    assert torch.allclose(before[:, :, :cut + 1], after[:, :, :cut + 1], atol=1e-5)
    assert not torch.allclose(before[:, :, cut + 1:], after[:, :, cut + 1:], atol=1e-3)


@pytest.mark.parametrize("name", PREFILL_METHODS)
def test_reported_sparsity_matches_the_causal_mask(name):
    q, k, v = qkv(256, seed=7)
    method = prefill(name, 2 if name != "dense" else 1)
    result, mask = method(q, k, v), method.mask(q, k)
    assert not torch.any(mask & ~torch.ones(256, 256, dtype=torch.bool).tril())
    # Per head, attended pairs counted on the triangle; sparsity = 1 - mean density over heads.
    assert torch.equal(result.attended_pairs, mask.sum(dim=(-1, -2)))
    expected = 1 - mask.sum(dim=(-1, -2)).double().mean(1) / causal_pairs(256)
    assert torch.allclose(result.sparsity, expected)


def test_decode_answer_tokens_attend_causally():
    q, k, v = qkv(128, seed=8)
    qa, ka, va = qkv(5, seed=9)
    for name in DECODE_METHODS:
        compression = 1 if name == "dense" else 2
        out = decode(name, compression).new_cache(q, k, v).attend(qa, ka, va).output
        va_later = va.clone()
        va_later[:, :, 3:] -= 50.0
        out2 = decode(name, compression).new_cache(q, k, v).attend(qa, ka, va_later).output
        assert torch.allclose(out[:, :, :3], out2[:, :, :3], atol=1e-5), name


@pytest.mark.parametrize("name", ["snapkv", "ada-snapkv", "quest", "streaming"])
def test_stepwise_generation_matches_one_teacher_forced_block(name):
    q, k, v = qkv(160, seed=10)
    qa, ka, va = qkv(6, seed=11)
    block_cache = decode(name, 4).new_cache(q, k, v)
    block = block_cache.attend(qa, ka, va)
    step_cache = decode(name, 4).new_cache(q, k, v)
    steps = [step_cache.attend(qa[:, :, t:t + 1], ka[:, :, t:t + 1], va[:, :, t:t + 1]).output for t in range(6)]
    assert torch.allclose(torch.cat(steps, 2), block.output, atol=1e-5)
    assert torch.allclose(step_cache.sparsity, block_cache.sparsity)


def test_streaming_decode_keeps_the_sinks_and_the_most_recent_prompt_tokens():
    q, k, v = qkv(100, seed=12)
    cache = make_method("streaming", "decode", compression=4, sinks=4).new_cache(q, k, v)
    kept = cache.prompt_keep[0, 0]
    assert kept.sum() == 25 and kept[:4].all() and kept[-21:].all() and not kept[4:79].any()
    explicit = make_method("streaming", "decode", window=10, sinks=2).new_cache(q, k, v).prompt_keep[0, 0]
    assert explicit.sum() == 12 and explicit[:2].all() and explicit[-10:].all()
    with pytest.raises(BadBudget, match="sinks"):
        make_method("streaming", "decode", compression=30, sinks=4).new_cache(q, k, v)


# --------------------------------------------------------------------------- realised sparsity
# Tolerance on |realised sparsity - (1 - 1/C)|, from each method's budget granularity at L=1024:
# token-level budgets (window, lines, tokens) land within 0.01-0.02; block-level ones (32-token
# blocks: one more block per query block moves density by ~2/n_blocks) within 0.03.
TOLERANCE = {"vertical-slash": 0.02, "flexprefill": 0.03, "block-sparse": 0.03, "streaming": 0.01, "power": 0.03}


@pytest.mark.parametrize("name", [n for n in PREFILL_METHODS if n != "dense"])
@pytest.mark.parametrize("compression", [2.0, 4.0])
def test_prefill_realised_sparsity_is_close_to_requested(name, compression):
    q, k, v = qkv(1024, seed=12)
    extra = {"block": 16} if name == "power" else {}
    result = prefill(name, compression, **extra)(q, k, v)
    assert result.sparsity.shape == (B,)
    assert torch.all((result.sparsity - (1 - 1 / compression)).abs() <= TOLERANCE[name]), result.sparsity


@pytest.mark.parametrize("name", ["snapkv", "ada-snapkv", "quest"])
@pytest.mark.parametrize("compression", [2.0, 5.0])
def test_decode_realised_sparsity_is_close_to_requested(name, compression):
    q, k, v = qkv(512, seed=13)
    qa, ka, va = qkv(4, seed=14)
    result = decode(name, compression).new_cache(q, k, v).attend(qa, ka, va)
    # The 4 answer tokens are never evicted (SnapKV) and pages are 16 tokens (Quest): within 0.02.
    assert torch.all((result.sparsity - (1 - 1 / compression)).abs() <= 0.02), result.sparsity


def test_ada_snapkv_keeps_the_same_total_but_shares_it_unevenly():
    q, k, v = qkv(256, seed=15)
    k[:, 0, 40:60] += 3 * q[:, 0:2, -16:].mean(dim=(1, 2))[:, None, :]  # head 0 has a hot region
    snap = decode("snapkv", 4).new_cache(q, k, v).prompt_keep.sum(-1)
    ada = decode("ada-snapkv", 4).new_cache(q, k, v).prompt_keep.sum(-1)
    assert torch.equal(snap.sum(-1), ada.sum(-1))  # same total per layer
    assert torch.all(snap == 64)
    assert torch.all(ada >= max(16, int(64 * 0.2)))  # the per-head floor
    assert not torch.equal(ada, snap)


# --------------------------------------------------------------------------- budgets
@pytest.mark.parametrize("name", [n for n in PREFILL_METHODS + DECODE_METHODS if n != "dense"])
@pytest.mark.parametrize("bad", [0.5, 0, -2, float("nan"), float("inf"), 5000, "4", True])
def test_compression_outside_range_is_a_clear_error(name, bad):
    with pytest.raises(BadBudget, match=r"\[1, 1000\]"):
        make_method(name, compression=bad)


def test_budget_errors_name_the_problem():
    assert issubclass(BadBudget, ValueError)
    with pytest.raises(BadBudget, match="not both"):
        make_method("streaming", compression=2, window=64)
    with pytest.raises(BadBudget, match="give a budget"):
        make_method("quest")
    with pytest.raises(BadBudget, match=r"window must be an integer in \[1, infinity\]"):
        make_method("streaming", window=0)
    with pytest.raises(BadBudget, match="multiple of the page size"):
        make_method("quest", token_budget=40)
    with pytest.raises(BadBudget, match=r"gamma must be a number in \[0, 1\]"):
        make_method("flexprefill", gamma=1.5)
    with pytest.raises(ValueError, match="dense"):
        make_method("dense", compression=2)
    with pytest.raises(ValueError, match="not a decode method"):
        make_method("block-sparse", phase="decode", compression=2)
    with pytest.raises(ValueError, match="unknown attention method"):
        make_method("bigbird", compression=2)


def test_unreachable_compression_at_this_length_names_the_valid_range():
    q, k, v = qkv(256)
    with pytest.raises(BadBudget, match=r"valid range here is \[1, "):
        make_method("power", compression=20, block=8)(q, k, v)
    with pytest.raises(BadBudget, match=r"valid range here is \[1, 2\]"):
        make_method("snapkv", compression=5, window=128).new_cache(q, k, v)
    with pytest.raises(BadBudget, match=r"valid range here is \[1, 16\]"):
        make_method("quest", compression=20).new_cache(q, k, v)


def test_gqa_shapes_are_checked():
    q, k, v = qkv(64, heads=6, kv_heads=4)
    with pytest.raises(ValueError, match="must divide"):
        make_method("streaming", compression=2)(q, k, v)
    q, k, v = qkv(64, heads=6, kv_heads=3)
    assert make_method("streaming", compression=2)(q, k, v).output.shape == (B, 6, 64, D)


# --------------------------------------------------------------------------- needles
def needle_inputs(length: int, position: int, seed: int = 16):
    """Weak random q/k, one key far back that the last queries match strongly, a marked value."""
    g = torch.Generator().manual_seed(seed)
    q = 0.3 * torch.randn(1, H, length, D, generator=g)
    k = 0.3 * torch.randn(1, HKV, length, D, generator=g)
    v = torch.randn(1, HKV, length, D, generator=g)
    direction = torch.randn(D, generator=g)
    direction = 8.0 * direction / direction.norm()
    k[:, :, position] = direction
    v[:, :, position] = 10.0
    return q, k, v, direction


def test_vertical_slash_keeps_a_far_needle_and_a_sliding_window_loses_it():
    length, position = 1024, 100
    q, k, v, direction = needle_inputs(length, position)
    q[:, :, -1] = direction  # the last query asks for the needle
    for name, keeps in (("vertical-slash", True), ("streaming", False)):
        method = prefill(name, 4)
        assert bool(method.mask(q, k)[0, 0, -1, position]) is keeps, name
        last = method(q, k, v).output[0, :, -1]
        assert bool((last.mean() > 5.0)) is keeps, name  # attention mass sits on the needle value


def test_quest_pages_in_a_far_needle():
    length, position = 1024, 100
    q, k, v, direction = needle_inputs(length, position)
    qa = torch.zeros(1, H, 1, D)
    qa[:, :] = direction
    ka, va = torch.zeros(1, HKV, 1, D), torch.zeros(1, HKV, 1, D)
    cache = decode("quest", 8).new_cache(q, k, v)
    result = cache.attend(qa, ka, va)
    assert float(result.sparsity) > 0.85
    assert result.output.mean() > 5.0


def test_snapkv_keeps_a_needle_its_observation_window_asks_for():
    length, position = 1024, 100
    q, k, v, direction = needle_inputs(length, position)
    q[:, :, -8:] = direction  # queries inside the observation window look at the needle
    qa = direction.expand(1, H, 1, D).clone()
    for name in ("snapkv", "ada-snapkv"):
        cache = decode(name, 8).new_cache(q, k, v)
        assert bool(cache.prompt_keep[:, :, position].all()), name
        out = cache.attend(qa, torch.zeros(1, HKV, 1, D), torch.zeros(1, HKV, 1, D)).output
        assert out.mean() > 5.0, name


def test_registry_import_stays_light():
    code = "import sys, systems.lm.attention as a; assert 'torch' not in sys.modules; print(a.PREFILL_METHODS)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "vertical-slash" in out.stdout


def test_catalogue_declares_every_constructor_option_with_its_default():
    """The torch-free catalogue that `bench sweep` validates against says what the methods take."""
    import inspect

    from systems.lm.attention import catalogue, method_class

    entries = catalogue()
    assert set(entries) == set(PREFILL_METHODS) | set(DECODE_METHODS)
    for name, entry in entries.items():
        assert tuple(entry["phases"]) == phases_of(name)
        params = {p.name: p.default for p in inspect.signature(method_class(name).__init__).parameters.values()
                  if p.name not in ("self", "compression")}
        assert set(params) == set(entry["budget"]) | set(entry["options"]), name
        for option, declared in entry["options"].items():
            assert declared["default"] == params[option], (name, option)
        for option in entry["budget"]:
            assert params[option] is None, (name, option)


def phases_of(name):
    from systems.lm.attention import phases

    return phases(name)


@pytest.mark.parametrize("length,block,r0,r1", [(512, 8, 0, 512), (100, 16, 37, 100), (65, 64, 0, 65), (300, 8, 256, 300),
                                                 (256, 16, 40, 256), (520, 24, 0, 520), (512, 32, 100, 200)])
def test_block_rows_in_place_and_fresh_equal_the_token_level_pattern(length, block, r0, r1):
    """Blocks of 8k keys are ORed as machine words where the rows' layout allows, byte by byte
    otherwise (rows of a length that is not a multiple of 8, a strided view): both must agree with
    the token-level pattern."""
    import math

    from systems.lm.attention.block_sparse import block_rows, or_block_rows_

    n_blocks = math.ceil(length / block)
    generator = torch.Generator().manual_seed(r1)
    mask = torch.rand(2, 3, n_blocks, n_blocks, generator=generator) < 0.3
    rows = torch.rand(2, 3, r1 - r0, r1, generator=generator) < 0.2
    reference = _token_level_blocks(mask, block, r0, r1)
    assert torch.equal(block_rows(mask, block, r0, r1), reference)
    assert torch.equal(or_block_rows_(rows.clone(), mask, block, r0, r1), rows | reference)
    wider = torch.rand(2, 6, r1 - r0, r1, generator=generator) < 0.2
    strided = wider[:, ::2]  # every other head: a view whose head stride is not the rows' size
    before, between = strided.clone(), wider[:, 1::2].clone()
    assert torch.equal(or_block_rows_(strided, mask, block, r0, r1), before | reference)
    assert torch.equal(wider[:, ::2], before | reference)  # written through the view, in place
    assert torch.equal(wider[:, 1::2], between)  # the heads between are untouched

"""Safe sparsity: Tango's test by hand, its calibration, Holm, and the monotone reading."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.stats import norm

from bench.sparse import SparseAnalysisError
from bench.sparse.safety import (
    DEFAULT_MARGIN,
    TEST_NAME,
    holm_adjust,
    paired_counts,
    phase_comparison,
    safe_sparsity,
    safe_sparsity_table,
    smallest_deciding_n,
    tango_noninferiority,
)


def test_tango_hand_case() -> None:
    # n=10, b (sparse only)=2, c (dense only)=1, margin 0.1 -> d0 = -0.1
    # A = 2n = 20; B = -(b+c) + (2n - b + c) d0 = -3 + 19*(-0.1) = -4.9; C = -c d0 (1-d0) = 0.11
    # q = (4.9 + sqrt(4.9^2 - 4*20*0.11)) / 40 = (4.9 + sqrt(15.21)) / 40 = (4.9 + 3.9) / 40 = 0.22
    # Z = (b - c - n d0) / sqrt(n (2q + d0 (1 - d0))) = (2 - 1 + 1) / sqrt(10 * (0.44 - 0.11)) = 2/sqrt(3.3)
    result = tango_noninferiority(2, 1, 10, 0.1)
    assert result["restricted_dense_only_prob"] == pytest.approx(0.22, abs=1e-12)
    assert result["z"] == pytest.approx(2 / math.sqrt(3.3), abs=1e-12)
    assert result["p_value"] == pytest.approx(norm.sf(2 / math.sqrt(3.3)), abs=1e-12)
    assert result["p_value"] == pytest.approx(0.13545, abs=1e-4)
    # observed difference exactly at the margin: b=1, c=2 -> (1-2)/10 = -0.1; q = (5.1 + 2.9)/40 = 0.2
    boundary = tango_noninferiority(1, 2, 10, 0.1)
    assert boundary["restricted_dense_only_prob"] == pytest.approx(0.2, abs=1e-12)
    assert boundary["z"] == pytest.approx(0.0, abs=1e-12) and boundary["p_value"] == pytest.approx(0.5)


@pytest.mark.parametrize("b,c,n,margin", [(2, 1, 10, 0.1), (0, 0, 50, 0.05), (7, 19, 100, 0.1), (3, 0, 5, 0.2)])
def test_restricted_mle_matches_numerical_maximisation(b: int, c: int, n: int, margin: float) -> None:
    d0 = -margin

    def negative_log_likelihood(q: float) -> float:  # cells: sparse-only q+d0, dense-only q, rest
        return -(b * math.log(q + d0) + c * math.log(q) + (n - b - c) * math.log(1 - 2 * q - d0))

    numeric = minimize_scalar(negative_log_likelihood, bounds=(-d0 + 1e-12, (1 - d0) / 2 - 1e-12),
                              method="bounded", options={"xatol": 1e-12}).x
    closed = tango_noninferiority(b, c, n, margin)["restricted_dense_only_prob"]
    assert closed == pytest.approx(numeric, abs=1e-6)


def test_identical_outputs_give_the_closed_form() -> None:
    # b = c = 0: q = margin, Z = sqrt(n margin / (1 - margin))
    result = tango_noninferiority(0, 0, 100, 0.05)
    assert result["z"] == pytest.approx(math.sqrt(100 * 0.05 / 0.95))
    assert result["p_value"] == pytest.approx(0.0109, abs=1e-4)


def test_type_one_error_at_the_margin_is_near_alpha() -> None:
    rng = np.random.default_rng(0)
    n, trials = 200, 4000
    # true difference exactly -margin: P(sparse only) 0.05, P(dense only) 0.10
    cells = rng.multinomial(n, [0.05, 0.10, 0.85], size=trials)
    p = tango_noninferiority(cells[:, 0], cells[:, 1], n, 0.05)["p_value"]
    assert 0.03 < float(np.mean(p <= 0.05)) < 0.07
    # and it has power when the truth is no loss
    cells = rng.multinomial(n, [0.05, 0.05, 0.90], size=trials)
    p = tango_noninferiority(cells[:, 0], cells[:, 1], n, 0.05)["p_value"]
    assert float(np.mean(p <= 0.05)) > 0.6


def test_holm_adjustment() -> None:
    # sorted 0.01, 0.02, 0.04 -> 3*0.01, max(0.03, 2*0.02), max(0.04, 1*0.04)
    assert holm_adjust([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm_adjust([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm_adjust([]) == []


def test_paired_counts_pair_by_id_not_order() -> None:
    dense = {"a": 1, "b": 0, "c": 1, "d": 1}
    sparse = {"d": 0, "c": 1, "b": 1, "a": True}
    counts = paired_counts(dense, sparse)
    assert (counts.both_correct, counts.sparse_only, counts.dense_only, counts.neither) == (2, 1, 1, 0)
    assert counts.acc_dense == 0.75 and counts.acc_sparse == 0.75
    with pytest.raises(SparseAnalysisError, match="different samples"):
        paired_counts(dense, {"a": 1, "b": 1, "c": 1, "x": 1})


# --------------------------------------------------------------------------- end to end
def _records(dense: np.ndarray, sparse_by_c: dict[float, np.ndarray], tasks: list[str],
             method: str = "quest", phase: str = "decode") -> list[dict]:
    """dense[t, i] and sparse_by_c[C][t, i]: correctness of sample i of task t."""
    rows = []
    base = {"model": "m", "phase": phase, "length": 4096}
    for t, task in enumerate(tasks):
        for i in range(dense.shape[1]):
            rows.append({**base, "method": "dense", "task": task, "compression": 1.0,
                         "sample_id": f"{task}-{i}", "correct": int(dense[t, i])})
            for c, sparse in sparse_by_c.items():
                rows.append({**base, "method": method, "task": task, "compression": c,
                             "sample_id": f"{task}-{i}", "correct": int(sparse[t, i])})
    return rows


def _degrade(dense: np.ndarray, drop: float, rng: np.random.Generator) -> np.ndarray:
    return dense * (rng.random(dense.shape) >= drop)


def test_identical_correctness_is_safe_at_every_level() -> None:
    rng = np.random.default_rng(1)
    dense = (rng.random((3, 200)) < 0.7).astype(int)
    report = safe_sparsity(_records(dense, {2.0: dense, 5.0: dense, 10.0: dense}, ["a", "b", "c"]))
    (row,) = report["rows"]
    assert row["safe_compression"] == 10.0
    assert report["test"] == TEST_NAME and report["margin"] == DEFAULT_MARGIN == 0.10
    assert row["decision"] == "decided"
    assert "Holm" in report["correction"]
    json.dumps(report, allow_nan=False)


def test_much_worse_sparse_is_not_safe_and_reading_is_monotone() -> None:
    rng = np.random.default_rng(2)
    dense = (rng.random((3, 200)) < 0.8).astype(int)
    bad = _degrade(dense, 0.4, rng)
    report = safe_sparsity(_records(dense, {2.0: dense, 5.0: bad, 10.0: dense}, ["a", "b", "c"]))
    (row,) = report["rows"]
    levels = {lvl["compression"]: lvl for lvl in row["levels"]}
    assert levels[2.0]["safe"] and not levels[5.0]["safe"] and levels[10.0]["safe"]
    assert all(not t["non_inferior"] for t in levels[5.0]["tasks"])
    # 10x passes on its own, but 5x failed first: the monotone reading stops at 2x
    assert row["safe_compression"] == 2.0 and row["largest_safe_ignoring_order"] == 10.0
    table = safe_sparsity_table(report)
    assert table[0]["safe_compression"] == 2.0 and table[0]["test"] == TEST_NAME


def test_one_bad_task_makes_the_level_unsafe() -> None:
    rng = np.random.default_rng(3)
    dense = (rng.random((3, 200)) < 0.8).astype(int)
    sparse = dense.copy()
    sparse[1] = _degrade(dense[1:2], 0.5, rng)[0]
    (row,) = safe_sparsity(_records(dense, {2.0: sparse}, ["a", "b", "c"]))["rows"]
    flags = {t["task"]: t["non_inferior"] for t in row["levels"][0]["tasks"]}
    assert flags == {"a": True, "b": False, "c": True}
    assert row["safe_compression"] == 1.0


def test_holm_is_stricter_than_the_intersection_union_reading() -> None:
    # identical outputs, n=67 per task: p = 1 - Phi(sqrt(67*0.05/0.95)) ~ 0.030 on each of 3 tasks
    dense = np.ones((3, 67), dtype=int)
    dense[:, :20] = 0
    records = _records(dense, {2.0: dense}, ["a", "b", "c"])
    holm = safe_sparsity(records, margin=0.05)["rows"][0]
    iut = safe_sparsity(records, margin=0.05, correction="none")["rows"][0]
    assert holm["levels"][0]["tasks"][0]["p_value"] == pytest.approx(0.0302, abs=1e-3)
    assert holm["safe_compression"] == 1.0  # Holm: the smallest p must beat 0.05/3
    # ... which no outcome of 67 samples a task could: that is no verdict on the method.
    assert holm["decision"] == "too few samples to decide" and holm["smallest_n"] == 87
    assert iut["safe_compression"] == 2.0 and iut["decision"] == "decided"


def test_smallest_n_at_which_identical_answers_could_be_shown_safe() -> None:
    # Z = sqrt(n m / (1 - m)) >= z_alpha: n >= 1.645^2 * 9 = 24.4 at margin 0.10
    assert smallest_deciding_n(0.10, 0.05) == 25
    assert smallest_deciding_n(0.10, 0.05, tasks=2) == 35  # Holm: alpha / 2
    assert smallest_deciding_n(0.10, 0.05, tasks=3) == 41
    assert smallest_deciding_n(0.10, 0.05, tasks=3, correction="none") == 25
    for n, decided in ((24, "too few samples to decide"), (25, "decided")):
        ones = np.ones((1, n), dtype=int)
        (row,) = safe_sparsity(_records(ones, {2.0: ones}, ["a"]))["rows"]
        assert row["decision"] == decided and row["safe_compression"] == (2.0 if n == 25 else 1.0), n
    # A level that fails on evidence (sparse much worse) is decided, whatever the count needed.
    dense = np.ones((1, 200), dtype=int)
    (row,) = safe_sparsity(_records(dense, {2.0: 0 * dense}, ["a"]))["rows"]
    assert row["decision"] == "decided" and row["safe_compression"] == 1.0
    # Prefill against decode: a phase stopped only by sample counts says so.
    few = np.ones((1, 10), dtype=int)
    table = safe_sparsity_table(safe_sparsity(_records(few, {2.0: few}, ["a"])))
    (row,) = phase_comparison(table)
    assert row["decode"] == 1.0 and row["decode_decision"] == "too few samples to decide"


def test_missing_task_at_a_level_is_not_safe() -> None:
    dense = np.ones((2, 100), dtype=int)
    records = _records(dense, {2.0: dense}, ["a", "b"])
    records = [r for r in records if not (r["method"] != "dense" and r["task"] == "b")]
    (row,) = safe_sparsity(records)["rows"]
    assert row["levels"][0]["missing_tasks"] == ["b"] and row["safe_compression"] == 1.0


def test_dense_rows_without_phase_serve_both_phases() -> None:
    dense = np.ones((1, 100), dtype=int)
    records = [dict(r, phase=None) for r in _records(dense, {}, ["a"])]
    records += [r for r in _records(dense, {3.0: dense}, ["a"], "vertical_slash", "prefill") if r["method"] != "dense"]
    records += [r for r in _records(dense, {3.0: dense}, ["a"], "quest", "decode") if r["method"] != "dense"]
    rows = safe_sparsity(records)["rows"]
    assert {(r["phase"], r["safe_compression"]) for r in rows} == {("prefill", 3.0), ("decode", 3.0)}


def test_prefill_vs_decode_picks_each_phases_best_method() -> None:
    rng = np.random.default_rng(4)
    dense = (rng.random((1, 300)) < 0.8).astype(int)
    bad = _degrade(dense, 0.5, rng)
    records = [dict(r, phase=None) for r in _records(dense, {}, ["a"])]
    for method, phase, by_c in (("vertical_slash", "prefill", {2.0: dense, 5.0: bad}),
                                ("block_sparse", "prefill", {2.0: dense, 5.0: dense}),
                                ("quest", "decode", {2.0: bad, 5.0: bad})):
        records += [r for r in _records(dense, by_c, ["a"], method, phase) if r["method"] != "dense"]
    (row,) = phase_comparison(safe_sparsity_table(safe_sparsity(records)))
    assert (row["prefill"], row["prefill_method"]) == (5.0, "block_sparse")
    assert (row["decode"], row["decode_method"]) == (1.0, None)  # no sparse level safe: C = 1


@pytest.mark.parametrize("mutate,match", [
    (lambda rs: rs + [dict(rs[1])], "appears twice"),
    (lambda rs: [dict(r, correct=0.5) if i == 0 else r for i, r in enumerate(rs)], "0/1"),
    (lambda rs: [r for r in rs if r["method"] == "dense"], "no sparse"),
    (lambda rs: [r for r in rs if r["method"] != "dense"], "no dense baseline"),
    (lambda rs: [{k: v for k, v in r.items() if k != "sample_id"} for r in rs], "lacks sample_id"),
    (lambda rs: [r for r in rs if not (r["method"] != "dense" and r["sample_id"] == "a-0")], "different samples"),
])
def test_bad_records_are_clear_errors(mutate, match) -> None:
    dense = np.ones((1, 20), dtype=int)
    with pytest.raises(SparseAnalysisError, match=match):
        safe_sparsity(mutate(_records(dense, {2.0: dense}, ["a"])))


def test_bad_parameters_are_clear_errors() -> None:
    records = _records(np.ones((1, 5), dtype=int), {2.0: np.ones((1, 5), dtype=int)}, ["a"])
    for kwargs in ({"margin": 0.0}, {"margin": 1.5}, {"alpha": 0}, {"correction": "bonferroni"}):
        with pytest.raises(SparseAnalysisError):
            safe_sparsity(records, **kwargs)

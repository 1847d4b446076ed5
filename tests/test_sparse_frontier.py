"""Pareto frontier on hand-made points, checked against the definition by brute force."""

from __future__ import annotations

import json
import random

import pytest

from bench.sparse import SparseAnalysisError
from bench.sparse.frontier import frontier_points, frontier_table, pareto_indices, plot_frontier


def _record(model: str, params: float, method: str, compression: float, cost: float, accuracy: float,
            phase: str = "prefill", length: int = 16384) -> dict:
    return {"model": model, "params": params, "method": method, "phase": phase, "length": length,
            "compression": compression, "cost": cost, "accuracy": accuracy}


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def test_hand_made_points() -> None:
    costs = [1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 5.0]
    accs = [0.2, 0.5, 0.4, 0.5, 0.9, 0.9, 0.9]
    # 0 cheapest; 1 beats 2 at equal cost; 3 equal acc to 1 but costlier; 4 best; 5, 6 costlier
    assert pareto_indices(costs, accs) == [0, 1, 4]


def test_exact_duplicates_are_both_on_the_frontier() -> None:
    assert pareto_indices([1.0, 1.0, 2.0], [0.5, 0.5, 0.7]) == [0, 1, 2]


def test_matches_brute_force_definition() -> None:
    rng = random.Random(3)
    for _ in range(50):
        n = rng.randint(1, 30)
        points = [(rng.choice([1, 2, 3, 4, 5]) * 1.0, rng.choice([0.1, 0.3, 0.5, 0.7])) for _ in range(n)]
        expected = [i for i, p in enumerate(points) if not any(_dominates(q, p) for q in points)]
        assert pareto_indices([p[0] for p in points], [p[1] for p in points]) == expected


def test_table_is_grouped_by_phase_and_length() -> None:
    records = [
        _record("7b", 7e9, "dense", 1.0, 10.0, 0.60),
        _record("7b", 7e9, "vertical_slash", 5.0, 4.0, 0.55),
        _record("14b", 14e9, "vertical_slash", 10.0, 5.0, 0.70),  # dominates nothing cheaper
        _record("14b", 14e9, "dense", 1.0, 20.0, 0.65),  # dominated by the sparse 14b
        # another length: the same points would be judged separately
        _record("7b", 7e9, "dense", 1.0, 40.0, 0.30, length=32768),
        _record("14b", 14e9, "block_sparse", 10.0, 30.0, 0.20, length=32768),
        _record("7b", 7e9, "quest", 10.0, 3.0, 0.9, phase="decode"),
    ]
    table = frontier_table(records)
    assert len(table) == len(records)
    flags = {(r["phase"], r["length"], r["model"], r["method"]): r["on_frontier"] for r in table}
    assert flags[("prefill", 16384, "7b", "vertical_slash")]
    assert flags[("prefill", 16384, "14b", "vertical_slash")]
    assert not flags[("prefill", 16384, "7b", "dense")]  # 14b sparse: cheaper and better
    assert not flags[("prefill", 16384, "14b", "dense")]
    assert flags[("prefill", 32768, "7b", "dense")] and flags[("prefill", 32768, "14b", "block_sparse")]
    assert flags[("decode", 16384, "7b", "quest")]
    front = frontier_points(records)
    assert [r["cost"] for r in front if r["phase"] == "prefill" and r["length"] == 16384] == [4.0, 5.0]
    json.dumps(table, allow_nan=False)


def test_plot_writes_png_and_svg(tmp_path) -> None:
    records = [_record(f"m{p}", p, m, c, p * 1e3 / c, min(0.95, 0.2 * p ** 0.1 / c ** 0.1), ph, ln)
               for p in (1e6, 4e6, 1.6e7) for m in ("dense", "vertical_slash") for c in (1.0, 2.0, 5.0)
               for ph in ("prefill", "decode") for ln in (1024, 2048)]
    png = plot_frontier(records, tmp_path / "frontier.png", title="test")
    svg = plot_frontier(records, tmp_path / "frontier.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert b"<svg" in svg.read_bytes()[:2000]


@pytest.mark.parametrize("bad", [
    [],
    [{"model": "a", "cost": 1.0}],
    [_record("a", 1e6, "dense", 1.0, 0.0, 0.5)],
    [_record("a", 1e6, "dense", 1.0, 1.0, float("nan"))],
    [_record("a", 1e6, "dense", 0.5, 1.0, 0.5)],
])
def test_bad_records_are_rejected(bad) -> None:
    with pytest.raises(SparseAnalysisError):
        frontier_table(bad)


def test_plot_rejects_unknown_format(tmp_path) -> None:
    with pytest.raises(SparseAnalysisError):
        plot_frontier([_record("a", 1e6, "dense", 1.0, 1.0, 0.5)], tmp_path / "x.jpg")

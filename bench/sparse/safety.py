"""Safe sparsity: the largest compression ratio whose accuracy is non-inferior to dense.

The test. For one (model, method, phase, length, compression, task), every sample is scored
correct (1) or not (0) under dense and under sparse attention, paired by sample id (never by list
order). With b = samples only the sparse run gets right, c = samples only dense gets right, n pairs,
the difference of accuracies is (b - c)/n. We test

    H0: acc_sparse - acc_dense <= -margin    against    H1: acc_sparse - acc_dense > -margin

with Tango's score test for the difference of two paired proportions (Tango 1998, Stat. Med.
17:891-908): Z = (b - c + n margin) / sqrt(n (2 q + d0 (1 - d0))), d0 = -margin, where q is the
maximum-likelihood probability of a dense-only pair under H0 (closed form, a quadratic root). The
one-sided p-value is 1 - Phi(Z). It uses only the discordant pairs' information that matters for
paired binary data, and stays defined when b = c = 0 (identical outputs), unlike a Wald test.

Correction across tasks. For one compression level, the tasks form a family; their p-values are
Holm-adjusted and a level is safe only if every task is non-inferior after adjustment (and no
task that has a dense baseline is missing). Per-task adjusted results are reported too. Requiring
all tasks with Holm is conservative: the intersection-union principle (Berger 1982) would let the
"all tasks" claim use unadjusted p-values; correction="none" gives that variant.

Monotonic reading. Levels are tested in increasing compression; the safe compression is the
largest C such that it and every smaller C tested are safe (a fixed-sequence procedure, which needs
no further adjustment across C). 1.0 means no sparse level was shown safe. The largest safe level
ignoring order is reported beside it, so a non-monotone pattern is visible.

Too few samples to decide. With identical dense and sparse answers (b = c = 0) the statistic is
Z = sqrt(n margin / (1 - margin)), so below n = z_alpha^2 (1 - margin) / margin samples a task
(25 at margin 0.10, alpha 0.05; more after Holm's division of alpha: 35 for two tasks, 41 for three)
no sparse method that merely matches dense could be shown non-inferior. A level that fails for
that reason is not evidence against the method: it is marked undecidable, and a reading that stops
at such a level says 'too few samples to decide', not 'no sparse level was safe'.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy.stats import norm

from bench.sparse import SparseAnalysisError, finite_or_none, require_finite

TEST_NAME = "Tango score test for paired proportions, one-sided non-inferiority (Tango 1998)"
READING = ("safe compression = largest C such that it and every smaller tested C are non-inferior "
           "on all tasks (fixed-sequence); 1.0 = no sparse level shown safe")
UNDECIDABLE = ("a level is undecidable when even identical dense and sparse answers on these sample "
               "counts could not show it non-inferior; a reading that stops there is 'too few samples "
               "to decide' (smallest_n: samples per task needed)")
DENSE_METHOD = "dense"
RECORD_FIELDS = ("model", "method", "phase", "length", "task", "compression", "sample_id", "correct")
DEFAULT_MARGIN = 0.10  # the CLI's --margin default too (bench sweep, bench fit)
TOO_FEW = "too few samples to decide"
DECIDED = "decided"
PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class PairedCounts:
    """The 2x2 table of paired correctness."""

    n: int
    both_correct: int
    sparse_only: int  # sparse right, dense wrong
    dense_only: int  # dense right, sparse wrong
    neither: int

    @property
    def acc_dense(self) -> float:
        return (self.both_correct + self.dense_only) / self.n

    @property
    def acc_sparse(self) -> float:
        return (self.both_correct + self.sparse_only) / self.n


def paired_counts(dense: Mapping[str, Any], sparse: Mapping[str, Any]) -> PairedCounts:
    """Pair two {sample_id: correct} maps; both must hold exactly the same ids."""
    only_dense = sorted(set(dense) - set(sparse))
    only_sparse = sorted(set(sparse) - set(dense))
    if only_dense or only_sparse:
        raise SparseAnalysisError(
            f"dense and sparse runs hold different samples: {len(only_dense)} only in dense "
            f"(e.g. {only_dense[:3]}), {len(only_sparse)} only in sparse (e.g. {only_sparse[:3]})")
    if not dense:
        raise SparseAnalysisError("no paired samples")
    cells = {(1, 1): 0, (0, 1): 0, (1, 0): 0, (0, 0): 0}
    for sample_id, dense_value in dense.items():
        cells[(_binary(sparse[sample_id], sample_id), _binary(dense_value, sample_id))] += 1
    return PairedCounts(n=len(dense), both_correct=cells[(1, 1)], sparse_only=cells[(1, 0)],
                        dense_only=cells[(0, 1)], neither=cells[(0, 0)])


def tango_noninferiority(sparse_only: Any, dense_only: Any, n: Any, margin: float) -> dict[str, Any]:
    """Tango's score test of H0: p_sparse - p_dense <= -margin. Works elementwise on arrays."""
    b, c, n_ = (np.asarray(x, dtype=float) for x in (sparse_only, dense_only, n))
    if np.any(n_ < 1) or np.any(b < 0) or np.any(c < 0) or np.any(b + c > n_):
        raise SparseAnalysisError("need n >= 1 and 0 <= sparse_only + dense_only <= n")
    d0 = -_margin(margin)
    a_coef = 2 * n_
    b_coef = -(b + c) + (2 * n_ - b + c) * d0
    c_coef = -c * d0 * (1 - d0)
    # the root inside the valid range is the larger one; the discriminant is >= 0 in exact arithmetic
    q = (-b_coef + np.sqrt(np.maximum(b_coef ** 2 - 4 * a_coef * c_coef, 0.0))) / (2 * a_coef)
    z = (b - c - n_ * d0) / np.sqrt(n_ * (2 * q + d0 * (1 - d0)))
    p = norm.sf(z)
    if z.ndim == 0:
        return {"z": float(z), "p_value": float(p), "restricted_dense_only_prob": float(q)}
    return {"z": z, "p_value": p, "restricted_dense_only_prob": q}


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as given), capped at 1."""
    p = [require_finite("p-value", value) for value in p_values]
    m = len(p)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p[i])):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def smallest_deciding_n(margin: float = DEFAULT_MARGIN, alpha: float = 0.05, tasks: int = 1,
                        correction: str = "holm") -> int:
    """The fewest samples per task with which identical dense and sparse answers on every one of
    `tasks` tasks would show a level safe (Holm: the smallest p-value must beat alpha / tasks)."""
    margin, alpha = _margin(margin), _alpha(alpha)
    if not isinstance(tasks, int) or tasks < 1:
        raise SparseAnalysisError(f"tasks must be a positive integer, got {tasks!r}")
    level = alpha / tasks if correction == "holm" else alpha
    # Closed form from Z = sqrt(n margin / (1 - margin)), then confirmed with the test itself.
    n = max(1, math.ceil(norm.isf(level) ** 2 * (1 - margin) / margin) - 2)
    while tango_noninferiority(0, 0, n, margin)["p_value"] > level:
        n += 1
    return n


def safe_sparsity(records: Iterable[Mapping[str, Any]], margin: float = DEFAULT_MARGIN, alpha: float = 0.05,
                  correction: str = "holm") -> dict[str, Any]:
    """Safe compression per (model, method, phase, length) from per-sample correctness records.

    Each record: model, method, phase, length, task, compression, sample_id, correct (0/1).
    `compression` is the configuration's nominal (target) ratio, which groups samples into a level;
    a per-sample realised ratio would split them. Dense rows have method 'dense'; they are matched
    on model, length, task and phase (a dense row with phase None serves every phase).
    """
    margin, alpha = _margin(margin), _alpha(alpha)
    if correction not in ("holm", "none"):
        raise SparseAnalysisError(f"correction must be 'holm' or 'none', got {correction!r}")
    dense, sparse = _collect(records)
    rows = []
    for (model, method, phase, length), levels in sorted(sparse.items(), key=_sort_key):
        tasks = _dense_tasks(dense, model, phase, length)
        if not tasks:
            raise SparseAnalysisError(
                f"no dense baseline for model={model!r} phase={phase!r} length={length}")
        tested = [_test_level(c, levels[c], tasks, margin, alpha, correction) for c in sorted(levels)]
        # Shown beside the verdict: when dense gets (almost) nothing right, non-inferiority is vacuous.
        dense_accuracy = sum(sum(by_id.values()) / len(by_id) for by_id in tasks.values()) / len(tasks)
        rows.append({"model": model, "method": method, "phase": phase, "length": length,
                     "tasks": sorted(tasks), "dense_accuracy": dense_accuracy, **_reading(tested),
                     "smallest_n": smallest_deciding_n(margin, alpha, len(tasks), correction),
                     "levels": tested})
    return {"test": TEST_NAME, "margin": margin, "alpha": alpha,
            "correction": "Holm across tasks" if correction == "holm" else "none (intersection-union)",
            "reading": READING, "undecidable": UNDECIDABLE, "rows": rows}


def safe_sparsity_table(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One line per (model, method, phase, length): the safe compression, with test and margin."""
    return [{"model": r["model"], "method": r["method"], "phase": r["phase"], "length": r["length"],
             "dense_accuracy": r["dense_accuracy"], "safe_compression": r["safe_compression"],
             "largest_safe_ignoring_order": r["largest_safe_ignoring_order"],
             "decision": r["decision"], "smallest_n": r["smallest_n"], "min_samples": r["min_samples"],
             "test": report["test"], "margin": report["margin"], "alpha": report["alpha"],
             "correction": report["correction"]} for r in report["rows"]]


def phase_comparison(table: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prefill against decode: per (model, length), each phase's largest safe compression over its
    methods and the method that reaches it (C = 1 where no sparse level was safe). A phase whose
    every method stopped at C = 1 for too few samples has decision 'too few samples to decide'."""
    best: dict[tuple, dict[str, Any]] = {}
    for row in table:
        key = (row["model"], row["length"])
        entry = best.setdefault(key, {"model": row["model"], "length": row["length"],
                                      "prefill": None, "prefill_method": None, "prefill_decision": None,
                                      "decode": None, "decode_method": None, "decode_decision": None})
        safe = row["safe_compression"]
        phase = row["phase"]
        if safe is not None and (entry[phase] is None or safe > entry[phase]):
            entry[phase], entry[f"{phase}_method"] = safe, row["method"] if safe > 1.0 else None
        undecided = safe == 1.0 and row.get("decision") == TOO_FEW
        if entry[f"{phase}_decision"] != DECIDED:
            entry[f"{phase}_decision"] = TOO_FEW if undecided else DECIDED
    for entry in best.values():
        for phase in PHASES:
            if entry[phase] is not None and entry[phase] > 1.0:
                entry[f"{phase}_decision"] = DECIDED
    return [best[k] for k in sorted(best, key=lambda k: (str(k[0]), k[1]))]


# --------------------------------------------------------------------------- internals
def _test_level(compression: float, by_task: Mapping[str, dict[str, Any]],
                dense_by_task: Mapping[str, dict[str, Any]], margin: float, alpha: float,
                correction: str) -> dict[str, Any]:
    present = sorted(task for task in by_task if task in dense_by_task)
    unknown = sorted(set(by_task) - set(dense_by_task))
    if unknown:
        raise SparseAnalysisError(f"tasks {unknown} at compression {compression} have no dense baseline")
    results = []
    for task in present:
        counts = paired_counts(dense_by_task[task], by_task[task])
        test = tango_noninferiority(counts.sparse_only, counts.dense_only, counts.n, margin)
        results.append({"task": task, **asdict(counts), "acc_dense": counts.acc_dense,
                        "acc_sparse": counts.acc_sparse, "diff": counts.acc_sparse - counts.acc_dense,
                        "z": finite_or_none(test["z"]), "p_value": test["p_value"]})
    raw = [r["p_value"] for r in results]
    adjusted = holm_adjust(raw) if correction == "holm" else raw
    for result, p_adj in zip(results, adjusted):
        result["p_adjusted"] = p_adj
        result["non_inferior"] = p_adj <= alpha
    missing = sorted(set(dense_by_task) - set(by_task))
    safe = not missing and all(r["non_inferior"] for r in results)
    # Could these sample counts show the level safe at all? Identical answers on every task are
    # the best case short of sparse beating dense (the test's p-value at b = c = 0).
    best_case = [tango_noninferiority(0, 0, r["n"], margin)["p_value"] for r in results]
    best_adjusted = holm_adjust(best_case) if correction == "holm" else best_case
    decidable = bool(results) and all(p <= alpha for p in best_adjusted)
    return {"compression": compression, "safe": safe, "decidable": decidable, "missing_tasks": missing,
            "tasks": results}


def _reading(levels: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    safe_c, decision = 1.0, DECIDED
    for level in levels:  # increasing compression
        if not level["safe"]:
            if not level["decidable"] and not level["missing_tasks"]:
                decision = TOO_FEW
            break
        safe_c = level["compression"]
    any_order = max([lvl["compression"] for lvl in levels if lvl["safe"]], default=1.0)
    fewest = min((t["n"] for lvl in levels for t in lvl["tasks"]), default=0)
    return {"safe_compression": safe_c, "largest_safe_ignoring_order": any_order, "decision": decision,
            "min_samples": fewest}


def _collect(records: Iterable[Mapping[str, Any]]) -> tuple[dict, dict]:
    dense: dict[tuple, dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
    sparse: dict[tuple, dict[float, dict[str, dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(dict)))
    count = 0
    for index, record in enumerate(records):
        count += 1
        missing = [key for key in RECORD_FIELDS if key not in record]
        if missing:
            raise SparseAnalysisError(f"record {index} lacks {', '.join(missing)}")
        method = str(record["method"]).strip().lower()
        length = int(require_finite(f"record {index} length", record["length"]))
        sample_id, task = str(record["sample_id"]), str(record["task"])
        if method == DENSE_METHOD:
            target = dense[(record["model"], record["phase"], length)][task]
        else:
            compression = require_finite(f"record {index} compression", record["compression"])
            if compression < 1:
                raise SparseAnalysisError(f"record {index}: compression must be >= 1, got {compression}")
            target = sparse[(record["model"], method, record["phase"], length)][compression][task]
        if sample_id in target:
            raise SparseAnalysisError(f"record {index}: sample {sample_id!r} of task {task!r} appears twice "
                                      "in one configuration")
        target[sample_id] = _binary(record["correct"], sample_id)
    if count == 0:
        raise SparseAnalysisError("no records")
    if not sparse:
        raise SparseAnalysisError("no sparse (non-dense) records to test")
    return dense, sparse


def _dense_tasks(dense: Mapping[tuple, Any], model: Any, phase: Any, length: int) -> dict[str, Any]:
    if (model, phase, length) in dense:
        return dense[(model, phase, length)]
    return dense.get((model, None, length), {})


def _binary(value: Any, sample_id: str) -> int:
    if isinstance(value, bool) or value in (0, 1):
        return int(value)
    raise SparseAnalysisError(f"correct must be 0/1 or a bool, got {value!r} for sample {sample_id!r}")


def _margin(margin: float) -> float:
    value = require_finite("margin", margin)
    if not 0.0 < value < 1.0:
        raise SparseAnalysisError(f"non-inferiority margin must be in (0, 1), got {margin!r}")
    return value


def _alpha(alpha: float) -> float:
    value = require_finite("alpha", alpha)
    if not 0.0 < value < 1.0:
        raise SparseAnalysisError(f"alpha must be in (0, 1), got {alpha!r}")
    return value


def _sort_key(item: tuple) -> tuple:
    model, method, phase, length = item[0]
    return (str(model), str(method), str(phase), length)

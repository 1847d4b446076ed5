"""Analyses of a sweep folder: accuracy table, isoCost frontier, safe sparsity, scaling-law fit.

Reads the stored records only (never re-runs a model) and writes analysis/ inside the folder:
    accuracy.json       per (model, task, length, phase, method, compression): accuracy with a
                        bootstrap CI, realised sparsity, failures
    frontier.json/.png  accuracy (mean over tasks) against cost, per phase and length
    safe_sparsity.json  the largest compression that keeps accuracy, per model/method/phase/length
    scaling.json        the logit-linear law per phase, with held-out validation
    report.txt          the same, as tables to read
Conventions: a failed record (a budget the method cannot realise, a crash, a timeout) counts as
wrong (score 0), never skipped. Accuracy is the mean score; `correct` (score == 1) feeds the
paired test. Costs use the realised sparsity, bench.sparse.costmodel's causal-triangle convention,
the method options the sweep ran with (its spec's method_options) and the prompt length the model
processed (the records' n_context_tokens: the task's length plus any BOS; records written before
that field existed are costed at the task's length, and the report says the BOS is not counted).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.jsonio import write_json_atomic
from bench.sparse import SparseAnalysisError
from bench.sparse.costmodel import (CAUSAL_CONVENTION, ModelShape, compression_from_sparsity, cost_options,
                                    phase_cost)
from bench.sparse.safety import DEFAULT_MARGIN, TOO_FEW
from bench.stats import describe

PHASES = ("prefill", "decode")


def _score(r: dict[str, Any]) -> float:
    return 0.0 if r["failure"] else float(r["score"])


def accuracy_table(records: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["model"], r["task"], r["length"], r["phase"], r["method"], float(r["compression"]))].append(r)
    rows = []
    for (model, task, length, phase, method, compression), rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        stats = describe([_score(r) for r in rs], seed=seed)
        sparsities = [r["sparsity"] for r in rs if r["sparsity"] is not None]
        ran = [r for r in rs if not r["failure"]]
        tokens = [r.get("n_context_tokens") for r in ran]
        rows.append({"model": model, "params": rs[0]["params"], "task": task, "length": length, "phase": phase,
                     "method": method, "compression": compression, "n": len(rs),
                     "n_failed": sum(1 for r in rs if r["failure"]),
                     "failures": sorted({r["failure"] for r in rs if r["failure"]}),
                     "accuracy": stats["mean"], "ci_low": stats["ci_low"], "ci_high": stats["ci_high"],
                     "sparsity": float(np.mean(sparsities)) if sparsities else None,
                     # None where a record that ran lacks the count (written before it was kept)
                     "n_context_tokens": (int(round(float(np.mean(tokens))))
                                          if tokens and None not in tokens else None)})
    return rows


def frontier_records(table: list[dict[str, Any]], shapes: dict[str, dict[str, Any]],
                     method_options: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per (phase, length, model, method, compression): accuracy averaged over tasks, and cost.

    The cost takes the method's options as the sweep ran it (`method_options`, from its spec) and
    the prompt length the model processed (n_context_tokens) where the records carry it.
    """
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in table:
        phases = PHASES if row["phase"] == "dense" else (row["phase"],)
        for phase in phases:
            groups[(phase, row["length"], row["model"], row["method"], row["compression"])].append(row)
    out = []
    for (phase, length, model, method, compression), rows in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if model not in shapes:
            raise SparseAnalysisError(f"no shape recorded for model '{model}'")
        shape = ModelShape.from_hf_config(shapes[model])
        realised = [r["sparsity"] for r in rows if r["sparsity"] is not None]
        sparsity = float(np.mean(realised)) if realised else None
        if sparsity is None:
            continue  # every sample failed: nothing ran, so there is no cost to place it at
        cost_c = compression_from_sparsity(min(max(sparsity, 0.0), 1.0 - 1e-9))
        tokens = [r.get("n_context_tokens") for r in rows if r["sparsity"] is not None]
        counted = None not in tokens
        cost_length = int(round(float(np.mean(tokens)))) if counted else int(length)
        options = {} if method == "dense" else (method_options or {}).get(method, {})
        cost = phase_cost(shape, phase, cost_length, cost_c, method, **options)
        out.append({"model": model, "params": rows[0]["params"], "method": method, "phase": phase,
                    "length": length, "compression": compression, "realised_compression": cost_c,
                    "cost": cost, "cost_length": cost_length, "cost_length_from_records": counted,
                    "accuracy": float(np.mean([r["accuracy"] for r in rows])), "tasks": len(rows)})
    return out


def safety_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        out.append({"model": r["model"], "method": r["method"], "length": r["length"], "task": r["task"],
                    "phase": None if r["phase"] == "dense" else r["phase"],
                    "compression": float(r["compression"]), "sample_id": r["sample_id"],
                    "correct": 0 if r["failure"] else int(r["correct"])})
    return out


def scaling_records(table: list[dict[str, Any]], phase: str) -> list[dict[str, Any]]:
    """Counts for the logit law of one phase: its sparse rows and the dense baseline (C = 1)."""
    return [{"task": r["task"], "params": r["params"], "length": r["length"], "compression": r["compression"],
             "n": r["n"], "accuracy": r["accuracy"]}
            for r in table if r["phase"] in (phase, "dense") and r["accuracy"] is not None]


def cost_context(frontier: list[dict[str, Any]]) -> str:
    """One sentence on the prompt length the costs count, for the report."""
    counted = sorted({(r["length"], r["cost_length"]) for r in frontier if r["cost_length_from_records"]})
    uncounted = sorted({r["length"] for r in frontier if not r["cost_length_from_records"]})
    parts = []
    if counted:
        lengths = ", ".join(f"L={length}: {tokens}" for length, tokens in counted)
        parts.append(f"costs count the prompt tokens the model processed, BOS included where the model "
                     f"adds one (n_context_tokens in the records; {lengths})")
    if uncounted:
        parts.append(f"costs at L={', '.join(str(n) for n in uncounted)} count the task's tokens only: "
                     "the BOS token the model also processes is not counted (these records predate "
                     "n_context_tokens)")
    return "; ".join(parts)


def analyse(folder: Path, *, margin: float = DEFAULT_MARGIN, alpha: float = 0.05, correction: str = "holm",
            plots: bool = True) -> dict[str, Any]:
    from bench.jsonio import read_json
    from bench.sparse.frontier import frontier_table, plot_frontier
    from bench.sparse.safety import phase_comparison, safe_sparsity, safe_sparsity_table
    from bench.sparse.scaling import fit_logit_law, validate_logit_law
    from bench.sweep import load_records

    folder = Path(folder)
    spec, records = load_records(folder)
    if not records:
        raise SparseAnalysisError(f"{folder} has no records yet: run the sweep first")
    shapes = {p.stem: read_json(p) for p in (folder / "models").glob("*.json")}
    shapes = {s.get("system_name", k): s for k, s in shapes.items()}
    out_dir = folder / "analysis"
    out_dir.mkdir(exist_ok=True)
    table = accuracy_table(records, seed=spec.get("seed", 0))
    method_options = spec.get("method_options", {})
    frontier = frontier_table(frontier_records(table, shapes, method_options))
    result: dict[str, Any] = {"convention": CAUSAL_CONVENTION, "n_records": len(records),
                              "n_failed": sum(1 for r in records if r["failure"]),
                              "cost_context": cost_context(frontier),
                              "cost_options": {m: cost_options(m, o) for m, o in sorted(method_options.items())},
                              "accuracy": table, "frontier": frontier}
    try:
        result["safety"] = safe_sparsity(safety_records(records), margin=margin, alpha=alpha, correction=correction)
        result["safe_sparsity_table"] = safe_sparsity_table(result["safety"])
        result["safety"]["prefill_vs_decode"] = phase_comparison(result["safe_sparsity_table"])
    except SparseAnalysisError as exc:
        result["safety"] = {"error": str(exc)}
        result["safe_sparsity_table"] = []
    result["scaling"] = {}
    for phase in PHASES:
        recs = scaling_records(table, phase)
        try:
            result["scaling"][phase] = {"fit": fit_logit_law(recs), "validation": validate_logit_law(recs)}
        except SparseAnalysisError as exc:
            result["scaling"][phase] = {"error": str(exc)}
    for name in ("accuracy", "frontier"):
        write_json_atomic(out_dir / f"{name}.json", result[name])
    write_json_atomic(out_dir / "safe_sparsity.json", result["safety"])
    write_json_atomic(out_dir / "scaling.json", result["scaling"])
    from bench.hardware import provenance

    write_json_atomic(out_dir / "provenance.json", provenance())  # which code and machine analysed
    if plots and frontier:
        result["frontier_plot"] = str(plot_frontier(frontier, out_dir / "frontier.png",
                                                    title="Accuracy against cost (mean over tasks)"))
    text = render_report(result)
    (out_dir / "report.txt").write_text(text, encoding="utf-8")
    return result


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return lines


def _f(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _safe_c(compression: float | None, decision: str | None) -> str:
    """The safe C, or why there is none: a reading stopped by sample counts is no verdict."""
    if decision == TOO_FEW:
        return TOO_FEW if compression in (None, 1.0) else f"{compression:.2f}, then {TOO_FEW}"
    return _f(compression, ".2f")


def render_report(result: dict[str, Any]) -> str:
    lines = [f"records: {result['n_records']} ({result['n_failed']} failed, counted as wrong)",
             f"convention: {result['convention']}"]
    if result.get("cost_context"):
        lines.append(f"prompt length: {result['cost_context']}")
    costed = {m: o for m, o in result.get("cost_options", {}).items() if o}
    lines.append("method options in the costs: " + ("; ".join(
        f"{m} " + ", ".join(f"{k}={v}" for k, v in sorted(o.items())) for m, o in costed.items())
        or "the cost model's defaults (the sweep set none that enter a cost)"))
    lines.append("")
    lines.append("isoCost frontier (points on the frontier, accuracy = mean over tasks):")
    rows = [[r["phase"], r["length"], r["model"], r["method"], _f(r["compression"], ".2f"),
             _f(r["realised_compression"], ".2f"), f"{r['cost']:.3e}", _f(r["accuracy"])]
            for r in result["frontier"] if r["on_frontier"]]
    lines += _table(["phase", "length", "model", "method", "C", "C realised", "cost", "accuracy"], rows)
    lines.append("")
    safety = result["safety"]
    if "error" in safety:
        lines.append(f"safe sparsity: not computed ({safety['error']})")
    else:
        lines.append(f"safe sparsity: {safety['test']}; margin {safety['margin']}, alpha {safety['alpha']}, "
                     f"correction {safety['correction']}")
        table = sorted(result["safe_sparsity_table"],
                       key=lambda r: (str(r["model"]), r["length"], r["phase"], r["method"]))
        rows = [[r["model"], r["length"], r["method"], r["phase"], _f(r["dense_accuracy"]), r["min_samples"],
                 _safe_c(r["safe_compression"], r["decision"]), _f(r["largest_safe_ignoring_order"], ".2f")]
                for r in table]
        lines.append("(dense acc: mean over tasks; where it is near 0, 'safe' only says sparse is no worse than nothing)")
        needed = sorted({r["smallest_n"] for r in table})
        lines.append(f"(smallest n per task at which identical dense and sparse answers could be shown safe here: "
                     f"{', '.join(str(n) for n in needed)}; below it a level is '{TOO_FEW}', not a verdict)")
        lines += _table(["model", "length", "method", "phase", "dense acc", "n", "safe C",
                         "largest safe (any order)"], rows)
        lines.append("")
        lines.append("prefill vs decode: largest safe C over each phase's methods (1.00: no sparse level was safe)")
        rows = [[r["model"], r["length"], _safe_c(r["prefill"], r.get("prefill_decision")),
                 r["prefill_method"] or "-", _safe_c(r["decode"], r.get("decode_decision")),
                 r["decode_method"] or "-"] for r in safety["prefill_vs_decode"]]
        lines += _table(["model", "length", "prefill C", "by", "decode C", "by"], rows)
    lines.append("")
    for phase, block in result["scaling"].items():
        if "error" in block:
            lines.append(f"scaling law, {phase}: not fitted ({block['error']})")
            continue
        fit, val = block["fit"], block["validation"]
        coef, errors = fit.get("coefficients", {}), fit.get("standard_errors", {})
        lines.append(f"scaling law, {phase}: {fit.get('form', '')}")
        if not fit.get("converged", True):
            lines.append("  the fit did not converge: its coefficients are where the optimiser stopped, not estimates "
                         "(typically every accuracy at 0 or 1 along an axis); read the standard errors")
        lines.append("  " + ", ".join(f"{k} {_f(v)}" + ("" if v is None else f" ± {_f(errors.get(k))}")
                                      for k, v in coef.items() if not isinstance(v, dict))
                     + " (± one standard error)")
        lines.append(f"  R^2 (logit) {_f(fit.get('r2_logit'))}, R^2 (accuracy) {_f(fit.get('r2_accuracy'))}")
        for fold in val.get("folds", {}).values():
            if fold.get("skipped"):
                lines.append(f"  held out largest {fold['axis']}: skipped ({fold['skipped']})")
                continue
            per = ", ".join(f"{t}: rho {_f(v.get('spearman'), '.2f')} MAE {_f(v.get('mae'))}"
                            for t, v in fold.get("per_task", {}).items())
            warning = "" if fold.get("fit_converged", True) else " (its fit did not converge)"
            lines.append(f"  held out largest {fold['axis']}{warning}: {per}")
    return "\n".join(lines) + "\n"

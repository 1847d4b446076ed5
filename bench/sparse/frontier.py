"""isoCost analysis: the Pareto frontier of accuracy against cost, per phase and length.

A record is one configuration's aggregate: model, params (parameter count), method, phase,
length, compression, cost (prefill FLOPs or decode memory reads, from bench.sparse.costmodel) and
accuracy. A point is on the frontier when no other point of its (phase, length) group dominates
it, where a dominates b if cost_a <= cost_b and accuracy_a >= accuracy_b with at least one strict.
Exact duplicates of a frontier point are on the frontier too (neither dominates the other).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from bench.sparse import SparseAnalysisError, require_finite

RECORD_FIELDS = ("model", "params", "method", "phase", "length", "compression", "cost", "accuracy")
GROUP_FIELDS = ("phase", "length")
PHASE_ORDER = {"prefill": 0, "decode": 1}


def pareto_indices(costs: Sequence[float], accuracies: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points (lower cost and higher accuracy are better)."""
    if len(costs) != len(accuracies):
        raise SparseAnalysisError("costs and accuracies must have the same length")
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -accuracies[i]))
    frontier: list[int] = []
    best_accuracy, best_cost = float("-inf"), float("nan")
    for i in order:
        if accuracies[i] > best_accuracy:
            best_accuracy, best_cost = accuracies[i], costs[i]
            frontier.append(i)
        elif accuracies[i] == best_accuracy and costs[i] == best_cost:
            frontier.append(i)  # an exact duplicate of a frontier point
    return sorted(frontier)


def frontier_table(records: Iterable[Mapping[str, Any]],
                   group_by: Sequence[str] = GROUP_FIELDS) -> list[dict[str, Any]]:
    """Every record with `on_frontier` added, sorted by group, then cost, then accuracy (desc)."""
    rows = [_validated(record, index) for index, record in enumerate(records)]
    if not rows:
        raise SparseAnalysisError("no records to build a frontier from")
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[key] for key in group_by)].append(row)
    table: list[dict[str, Any]] = []
    for key in sorted(groups, key=lambda k: tuple(str(part) for part in k)):
        members = groups[key]
        on = set(pareto_indices([m["cost"] for m in members], [m["accuracy"] for m in members]))
        for i, member in enumerate(members):
            member["on_frontier"] = i in on
        table.extend(sorted(members, key=lambda m: (m["cost"], -m["accuracy"])))
    return table


def frontier_points(records: Iterable[Mapping[str, Any]],
                    group_by: Sequence[str] = GROUP_FIELDS) -> list[dict[str, Any]]:
    """Only the frontier rows of frontier_table."""
    return [row for row in frontier_table(records, group_by) if row["on_frontier"]]


def plot_frontier(records: Iterable[Mapping[str, Any]], path: str | Path, title: str | None = None,
                  cost_labels: Mapping[str, str] | None = None) -> Path:
    """Write the frontier plot (PNG or SVG by suffix): one panel per (phase, length).

    Log-x cost axis; one marker shape per model size, one colour per method; the frontier drawn as
    a staircase through its points.
    """
    out = Path(path)
    if out.suffix.lower() not in (".png", ".svg"):
        raise SparseAnalysisError(f"plot path must end in .png or .svg, got {out.name!r}")
    table = frontier_table(records)
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    phases = sorted({row["phase"] for row in table}, key=lambda p: (PHASE_ORDER.get(p, 9), str(p)))
    lengths = sorted({row["length"] for row in table})
    sizes = sorted({row["params"] for row in table})
    methods = sorted({row["method"] for row in table})
    markers = {size: "osD^vP*Xph<>"[i % 12] for i, size in enumerate(sizes)}
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    labels = cost_labels or {"prefill": "prefill FLOPs", "decode": "decode memory reads (elements/token)"}
    fig, axes = plt.subplots(len(phases), len(lengths), figsize=(4.5 * len(lengths), 3.8 * len(phases)),
                             squeeze=False)
    for (r, phase), (c, length) in ((rp, cl) for rp in enumerate(phases) for cl in enumerate(lengths)):
        ax = axes[r][c]
        rows = [row for row in table if row["phase"] == phase and row["length"] == length]
        if not rows:
            ax.set_axis_off()
            continue
        for row in rows:
            ax.scatter(row["cost"], row["accuracy"], marker=markers[row["params"]],
                       color=colours[row["method"]], s=36, alpha=0.85, edgecolors="none")
        front = [row for row in rows if row["on_frontier"]]
        ax.step([row["cost"] for row in front], [row["accuracy"] for row in front], where="post",
                color="black", linewidth=1.2)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labels at powers of 10 only
        ax.set_title(f"{phase}, L={length}")
        ax.set_xlabel(labels.get(str(phase), "cost"))
        ax.set_ylabel("accuracy")
        ax.grid(True, which="both", alpha=0.3)
    handles = [plt.Line2D([], [], color=colours[m], marker="o", linestyle="", label=m) for m in methods]
    # Size markers hollow and black, so no method's colour (tab10 has a grey) reads as a size.
    handles += [plt.Line2D([], [], color="black", marker=markers[s], markerfacecolor="none", linestyle="",
                           label=f"{_params_label(s)} params") for s in sizes]
    handles.append(plt.Line2D([], [], color="black", label="Pareto frontier"))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight", dpi=120)
    plt.close(fig)
    return out


def _params_label(params: float) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if params >= scale:
            return f"{params / scale:.3g}{suffix}"
    return f"{params:.3g}"


def _validated(record: Mapping[str, Any], index: int) -> dict[str, Any]:
    missing = [key for key in RECORD_FIELDS if key not in record]
    if missing:
        raise SparseAnalysisError(f"record {index} lacks {', '.join(missing)}")
    row = dict(record)
    for key in ("params", "length", "compression", "cost", "accuracy"):
        row[key] = require_finite(f"record {index} {key}", record[key])
    if row["cost"] <= 0 or row["params"] <= 0:
        raise SparseAnalysisError(f"record {index}: cost and params must be positive (log axis)")
    if row["compression"] < 1:
        raise SparseAnalysisError(f"record {index}: compression must be >= 1, got {row['compression']}")
    row["length"] = int(row["length"]) if row["length"] == int(row["length"]) else row["length"]
    return row

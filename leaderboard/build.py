"""`bench leaderboard`: a static leaderboard site built from stored results, and adding runs to it.

  bench leaderboard build [--results DIR ...] [--out SITE/]   (default: leaderboard/results -> site/)
  bench leaderboard add RUN_FOLDER [--results DIR]              (a validated copy, without audio)

A result is a run folder (spec.json, summary.json, generations.jsonl, scores.jsonl; audio is not
needed). Every folder is read through bench.results before anything is shown: a malformed or
tampered folder (a record that is not one, a summary that does not match its records or was
edited) is refused with the reason in the build log and never rendered.

Only what is comparable is ranked together: runs of the same task, task version and items, whose
ranking metric (the task protocol's first) was scored by the same evaluator revision. The largest
such group of a task is its board; runs in any other group are listed below it as set apart, with
what differs.

Ranking: by the mean of the task's first protocol metric (its primary value) with the 95 % CI.
Ties: every pair of entries is compared on the items both have (two-sided paired sign-flip test,
seeded), p-values Holm-corrected over all pairs of the board; walking down the ranking, an entry
joins the current tier while it is not significantly different from the tier's first entry,
otherwise it opens the next tier. Every number links to the page of the run it came from (the
run's own report, built into the site).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bench.errors import BenchError
from reports.html import display_scale as _scale
from reports.html import format_number
from reports.html import escape as _e

RESULTS = Path(__file__).resolve().parent / "results"
ALPHA = 0.05
RECORD_FILES = ("spec.json", "summary.json", "generations.jsonl", "scores.jsonl")


@dataclass
class Entry:
    label: str
    system: str
    run: Any
    mean: float | None = None
    ci: tuple[float | None, float | None] = (None, None)
    tier: int = 0
    values: dict[str, float] = field(default_factory=dict)  # item id -> value
    # The run summary's other metrics: name -> (mean, ci_low, ci_high) of their headline value.
    others: dict[str, tuple[float | None, float | None, float | None]] = field(default_factory=dict)


@dataclass
class Board:
    task: str
    key: tuple
    runs: list[Any]
    metric: str = ""
    value: str = ""
    higher_is_better: bool = False
    entries: list[Entry] = field(default_factory=list)
    undecidable: bool = False  # too few shared items for any pair to differ after the correction
    n_shared: int = 0
    other_metrics: list[str] = field(default_factory=list)  # shown beside the ranking, not ranked


def ranking_metric(run: Any) -> str:
    """The metric a task's board ranks by: the first of the run's metrics (the task's protocol order)."""
    return next((m["name"] for m in run.summary["spec"].get("metrics", [])), "")


def comparability_key(run: Any) -> tuple:
    """Runs rank together when they evaluated the same task version and items, and scored the
    ranking metric with the same evaluator revision (model, normalisation, decoding, code)."""
    spec = run.summary["spec"]
    metric = ranking_metric(run)
    return (spec["task"].get("name"), str(spec["task"].get("version")), spec.get("items_digest"), metric,
            run.summary["evaluators"].get(metric))


def _describe_difference(key: tuple, main: tuple) -> str:
    reasons = []
    if key[1] != main[1]:
        reasons.append(f"task version {key[1]} (the board: {main[1]})")
    if key[2] != main[2]:
        reasons.append("other items (items digest differs)")
    if key[3] != main[3]:
        reasons.append(f"ranked by {key[3]} (the board: {main[3]})")
    elif key[4] != main[4]:
        reasons.append(f"{key[3]} evaluator {key[4]!r} (the board: {main[4]!r})")
    return "; ".join(reasons) or "another comparability group"


def make_boards(runs: list[Any], log: list[str], seed: int = 0) -> tuple[list[Board], list[tuple[Any, str]]]:
    """The board of each task (its largest comparable group, ranked) and the runs set apart."""
    groups: dict[tuple, list[Any]] = {}
    for run in runs:
        groups.setdefault(comparability_key(run), []).append(run)
    by_task: dict[str, list[tuple]] = {}
    for key in groups:
        by_task.setdefault(key[0], []).append(key)
    boards, apart = [], []
    for task, keys in sorted(by_task.items()):
        main = max(keys, key=lambda k: (len(groups[k]), max(r.summary.get("created", "") for r in groups[k])))
        for key in keys:
            if key != main:
                for run in groups[key]:
                    reason = _describe_difference(key, main)
                    apart.append((run, reason))
                    log.append(f"apart    {run.folder.name}: {reason}")
        boards.append(rank(Board(task, main, groups[main]), seed))
    return boards, apart


def rank(board: Board, seed: int = 0) -> Board:
    from bench.results import primary_value
    from bench.stats import describe, pairwise_tests

    metric = ranking_metric(board.runs[0])
    board.metric = metric
    names = [s for run in board.runs for s in run.systems]
    for run in board.runs:
        for system in run.systems:
            block = run.summary["systems"][system]["metrics"].get(metric)
            if not block:
                continue
            board.value = primary_value(block)
            board.higher_is_better = bool(block["higher_is_better"])
            label = system if names.count(system) == 1 else f"{system} ({run.folder.name})"
            entry = Entry(label, system, run, values=run.item_values(system, metric))
            d = describe(list(entry.values.values()), seed=run.summary["spec"].get("seed", 0))
            entry.mean, entry.ci = d["mean"], (d["ci_low"], d["ci_high"])
            for name, other in run.summary["systems"][system]["metrics"].items():
                if name != metric:
                    stats = other.get("values", {}).get(primary_value(other), {})
                    entry.others[name] = (stats.get("mean"), stats.get("ci_low"), stats.get("ci_high"))
                    if name not in board.other_metrics:
                        board.other_metrics.append(name)
            board.entries.append(entry)
    sign = -1.0 if board.higher_is_better else 1.0
    board.entries.sort(key=lambda e: (e.mean is None, sign * (e.mean or 0.0), e.label))
    tests = pairwise_tests({e.label: e.values for e in board.entries}, seed=seed)
    adjusted = {(t["a"], t["b"]): t["p_holm"] for t in tests}
    # With n shared items a two-sided sign-flip test cannot go below p = 2^(1-n); Holm needs the
    # smallest p below alpha / pairs: otherwise no pair can ever be separated, and the page says so.
    n_shared = min((len(set(a.values) & set(b.values)) for i, a in enumerate(board.entries)
                    for b in board.entries[i + 1:]), default=0)
    board.undecidable = bool(tests) and 2.0 ** (1 - n_shared) * len(tests) >= ALPHA
    board.n_shared = n_shared
    tier, head = 0, None
    for entry in board.entries:
        if head is None or adjusted.get((head.label, entry.label), 0.0) < ALPHA:
            tier += 1
            head = entry
        entry.tier = tier
    return board


STYLE = """body{font:15px/1.5 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th:first-child,td:first-child,td.l{text-align:left}th{background:#f3f3f3}.ci{color:#777;font-size:13px}
tr.t0 td{background:#f7fbff}.muted{color:#777}.bad{color:#a00}a{color:#1f4e79}pre{background:#f5f5f5;padding:.6em;overflow:auto}"""


def _page(title: str, body: list[str]) -> str:
    return ("<!doctype html><html lang=en><meta charset=utf-8>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{STYLE}</style>\n" + "\n".join(body) + "\n</html>\n")


def board_page(board: Board) -> str:
    scale = _scale(board.metric)
    unit = " %" if scale == 100 else ""
    direction = "higher is better" if board.higher_is_better else "lower is better"
    first = board.runs[0].summary
    body = [f'<p><a href="index.html">&larr; all tasks</a></p><h1>{_e(board.task)}</h1>',
            f"<p>Ranked by <b>{_e(board.metric)}.{_e(board.value)}</b>{unit} ({direction}), mean over items with the "
            "95 % bootstrap CI. <b>Tier</b>: entries in one tier are not significantly different from the tier's "
            f"first entry (two-sided paired sign-flip tests on shared items, Holm-corrected over all pairs, "
            f"alpha {ALPHA}).</p>",
            f"<p class=muted>Task version {_e(first['spec']['task'].get('version'))}, items digest "
            f"<code>{_e(str(first['spec'].get('items_digest'))[:12])}</code>; {_e(board.metric)} evaluator "
            f"<code>{_e(board.key[4])}</code> (every run ranked here used it).</p>",
            (f"<p class=bad><b>Tiers cannot separate anything here:</b> with {board.n_shared} shared items the "
             f"smallest possible p-value is {2.0 ** (1 - board.n_shared):.4f}, and the correction over "
             f"{len(board.entries) * (len(board.entries) - 1) // 2} pairs needs less than alpha divided by that "
             "count. More items are needed to rank with confidence.</p>" if board.undecidable else ""),
            (f"<p class=muted>Also shown, not ranked: {_e(', '.join(board.other_metrics))}, each the run "
             "summary's mean with its 95 % CI; their evaluator revisions are on each run's page.</p>"
             if board.other_metrics else ""),
            "<table><tr><th>rank</th><th>tier</th><th>system</th><th>" + _e(board.metric) + unit
            + "</th><th>95 % CI</th>"
            + "".join(f"<th>{_e(m)}{' %' if _scale(m) == 100 else ''}</th>" for m in board.other_metrics)
            + "<th>items</th><th>family</th><th>run</th></tr>"]
    for k, e in enumerate(board.entries, 1):
        link = f"runs/{_e(e.run.folder.name)}.html"
        family = next((s.get("family", "") for s in e.run.summary["spec"]["systems"] if s["name"] == e.system), "")
        others = ""
        for m in board.other_metrics:
            mean, low, high = e.others.get(m, (None, None, None))
            ci = "" if low is None or high is None else f" <span class=ci>[{format_number(low, _scale(m), 2)}, {format_number(high, _scale(m), 2)}]</span>"
            others += f"<td>{format_number(mean, _scale(m), 2)}{ci}</td>"
        body.append(f'<tr class="t{(e.tier - 1) % 2}"><td>{k}</td><td>{e.tier}</td><td class=l>{_e(e.label)}</td>'
                    f'<td><a href="{link}">{format_number(e.mean, scale, 2)}</a></td><td class=ci>[{format_number(e.ci[0], scale, 2)}, '
                    f"{format_number(e.ci[1], scale, 2)}]</td>{others}<td>{len(e.values)}</td><td class=l>{_e(family)}</td>"
                    f'<td class=l><a href="{link}">{_e(e.run.folder.name)}</a></td></tr>')
    body.append("</table>")
    return _page(f"{board.task} leaderboard", body)


def index_page(boards: list[Board], apart: list[tuple[Any, str]], log: list[str]) -> str:
    body = ["<h1>speechbench leaderboard</h1>",
            "<p>Each task's board ranks only comparable runs: same task version and items, the ranking metric "
            "scored by the same evaluator revision. Every result file is validated and checked against its records before it is "
            "shown.</p><table><tr><th>task</th><th>entries</th><th>runs</th><th>ranked by</th><th>leader</th></tr>"]
    for b in boards:
        leader = b.entries[0].label if b.entries else "&ndash;"
        body.append(f'<tr><td><a href="{_e(b.task)}.html">{_e(b.task)}</a></td><td>{len(b.entries)}</td>'
                    f"<td>{len(b.runs)}</td><td class=l>{_e(b.metric)}.{_e(b.value)}</td><td class=l>{_e(leader)}</td></tr>")
    body.append("</table>")
    if apart:
        body.append("<h2>Set apart (not comparable with their task's board)</h2><ul>")
        body += [f"<li><code>{_e(run.folder.name)}</code> ({_e(run.task)}): {_e(reason)}</li>" for run, reason in apart]
        body.append("</ul>")
    refused = [line for line in log if line.startswith("REFUSED")]
    body.append(f"<h2>Build log</h2><p>{len(refused)} result folder(s) refused.</p><pre>{_e(chr(10).join(log))}</pre>")
    return _page("speechbench leaderboard", body)


def build(results: Sequence[Path], out: Path, seed: int = 0) -> dict[str, Any]:
    from bench.jsonio import write_text_atomic
    from bench.results import load_runs
    from reports.html import build as run_page

    log: list[str] = []
    runs = load_runs(results, log)
    boards, apart = make_boards(runs, log, seed)
    out.mkdir(parents=True, exist_ok=True)
    for board in boards:
        write_text_atomic(out / f"{board.task}.html", board_page(board))
    for run in runs:
        target = out / "runs" / f"{run.folder.name}.html"
        write_text_atomic(target, run_page([run.folder], target))
    write_text_atomic(out / "index.html", index_page(boards, apart, log))
    write_text_atomic(out / "build-log.txt", "\n".join(log) + "\n")
    return {"boards": len(boards), "runs": len(runs), "refused": sum(x.startswith("REFUSED") for x in log),
            "apart": len(apart)}


def add(run_folder: Path, results: Path) -> Path:
    """Copy a checked run folder into the results (records only; audio stays behind)."""
    from bench.results import load_run

    run = load_run(run_folder)
    target = results / run.folder.name
    if target.exists():
        raise BenchError(f"{target} exists already; remove it first to replace it")
    tmp = results / f".{run.folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in RECORD_FILES:
        shutil.copy2(run.folder / name, tmp / name)
    tmp.rename(target)
    load_run(target)  # the copy reads back
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench leaderboard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="build the static site")
    b.add_argument("--results", type=Path, action="append", help=f"results folder(s) (default: {RESULTS})")
    b.add_argument("--out", type=Path, default=Path("site"), help="output folder (default: site/)")
    b.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("add", help="add a run folder to the results (validated; records only)")
    a.add_argument("run_folder", type=Path)
    a.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.action == "add":
        print(add(args.run_folder, args.results))
        return 0
    stats = build(args.results or [RESULTS], args.out, args.seed)
    print(f"{args.out / 'index.html'}: {stats['boards']} board(s) from {stats['runs']} run(s); "
          f"{stats['refused']} refused, {stats['apart']} set apart (see {args.out / 'build-log.txt'})",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`bench paper-tables`: published numbers beside what this harness measured, row by row.

  bench paper-tables [--out paper-tables.html] [--runs DIR ...] [--sweep-analysis DIR]

The published figures are facts carried over in reports/data/published.csv, each with its source.
Measured values come from stored results only (run folders read through bench.results; the sparse
sweep's committed analysis), never from re-running anything. Each row gets one verdict:

- reproduced (within CI): the published value lies inside our 95 % CI on the same test set;
- differs: by how much, with our CI;
- trend reproduced at small scale / trend differs: for findings and fitted coefficients, which are
  compared by direction (our models and lengths are far smaller than the paper's);
- not reproducible here: with what it needs (the data set, the evaluator weights, the system).

A protocol difference (Whisper base instead of large-v3, resemblyzer instead of WavLM-ECAPA) is
always written on the row. Published systems match runs by name (case, punctuation and a
parenthesised variant ignored; a run's NAME@LABEL variant matches NAME), so `--system-opt`
variants of a command-tts wrapper named after the paper's system are picked up.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bench.errors import BenchError
from reports.html import escape as _e

DATA = Path(__file__).resolve().parent / "data" / "published.csv"
LEADERBOARD = Path(__file__).resolve().parents[1] / "leaderboard" / "results"
SWEEP = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "sparse-sweep-7015713d1718"

# Test set -> (task name, task options that select it, the published protocol's evaluators).
TEST_SETS = {
    "seed-tts-eval test-en": ("seed-tts-eval", {"subset": "test-en"}, {"wer": "whisper-large-v3", "sim": "wavlm-ecapa"}),
    "seed-tts-eval test-zh": ("seed-tts-eval", {"subset": "test-zh"}, {"wer": "paraformer-zh", "sim": "wavlm-ecapa"}),
    "seed-tts-eval test-hard": ("seed-tts-eval", {"subset": "test-hard"}, {"wer": "paraformer-zh", "sim": "wavlm-ecapa"}),
    "LibriSpeech-PC test-clean 4-10s": ("librispeech-pc", {}, {"wer": "whisper-large-v3", "sim": "wavlm-ecapa"}),
}
MIN_DENSE_ACCURACY = 0.05  # below it, non-inferiority to dense says nothing
# Published metric -> (our metric, value, scale, or a performance field).
METRICS = {"WER%": ("wer", "wer", 100.0), "CER%": ("wer", "wer", 100.0), "SIM-o": ("sim", "sim", 1.0),
           "UTMOS": ("utmos", "utmos", 1.0), "RTF": ("performance", "rtf_p50", 1.0),
           "first_frame_ms": ("performance", "first_packet_s_p50", 1000.0)}


def normalise_name(name: str) -> str:
    name = re.sub(r"\(.*?\)", "", name.split("@", 1)[0])
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("_", ""))


@dataclass
class Row:
    published: dict[str, str]
    ours: str
    verdict: str
    protocol: str


def load_published(path: Path = DATA) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row["kind"] in ("number", "coefficient"):
            float(row["value"])  # a data file that does not parse is an error here, not a blank cell
    return rows


def _protocol_difference(run: Any, metric: str, wanted: dict[str, str]) -> str:
    revision = str(run.summary["evaluators"].get(metric, ""))
    expected = wanted.get(metric)
    if not expected:
        return ""
    if metric == "wer":
        used = re.search(r"asr=([^:|]+)", revision)
        used_name = used.group(1) if used else revision
        return "" if used_name == expected else f"ASR {used_name} instead of {expected}"
    if metric == "sim":
        used = re.search(r"backend=([^|;]+)", revision) or re.search(r"^([a-z0-9-]+)", revision)
        used_name = used.group(1) if used else revision
        return "" if expected.replace("-", "") in used_name.replace("-", "").replace("_", "") else \
            f"speaker model {used_name} instead of {expected}"
    return ""


def _matching_runs(runs: list[Any], task: str, options: dict[str, str]) -> list[Any]:
    found = []
    for run in runs:
        spec_task = run.summary["spec"]["task"]
        if spec_task.get("name") != task:
            continue
        have = {k: str(v) for k, v in spec_task.get("options", {}).items()}
        if all(have.get(k, "test-en" if k == "subset" else None) == v for k, v in options.items()):
            found.append(run)
    return found


def _needs(task: str, options: dict[str, str], metric: str, system: str, wanted: dict[str, str]) -> str:
    from bench import registry

    needs = []
    try:
        if not registry.create("task", task, **options).availability().ok:
            needs.append(f"the {task} test set (`bench tasks list` says where to get it)")
    except BenchError as exc:
        needs.append(f"the {task} test set ({exc})")
    if metric in wanted:
        needs.append(f"{wanted[metric]} weights for {metric} (`bench models list`)")
    elif metric == "utmos":
        needs.append("UTMOS weights (`bench models list`)")
    if normalise_name(system) != "groundtruth":
        needs.append(f"{system} itself (code and weights, run through command-tts; a GPU for its speed)")
    return "; ".join(needs)


def tts_row(row: dict[str, str], runs: list[Any]) -> Row:
    metric_map = METRICS.get(row["metric"])
    test_set = TEST_SETS.get(row["test_set"])
    if metric_map is None or test_set is None:
        return Row(row, "&ndash;", "not reproducible here: no task of this harness implements this test set or "
                   "protocol" + (f" ({_e(row['test_set'])})" if test_set is None else ""), "")
    task, options, wanted = test_set
    metric, value_name, scale = metric_map
    for run in _matching_runs(runs, task, options):
        for system in run.systems:
            if normalise_name(system) != normalise_name(row["system"]):
                continue
            entry = run.summary["systems"][system]
            if metric == "performance":
                mean = entry["performance"].get(value_name)
                if mean is None:
                    continue
                return Row(row, f"{scale * mean:.3g} (p50, {_e(run.folder.name)})",
                           "measured on another machine: speed is compared only on the same hardware",
                           f"this machine: {run.summary['environment'].get('cpu')}")
            block = entry["metrics"].get(metric)
            if not block or block["values"].get(value_name, {}).get("mean") is None:
                continue
            d = block["values"][value_name]
            published = float(row["value"])
            lo, hi = (d.get("ci_low"), d.get("ci_high"))
            ours = f"{scale * d['mean']:.3g}" + (f" [{scale * lo:.3g}, {scale * hi:.3g}]" if lo is not None else "")
            if lo is not None and scale * lo <= published <= scale * hi:
                verdict = "reproduced (within CI)"
            else:
                verdict = f"differs by {scale * d['mean'] - published:+.3g}"
            return Row(row, f"{ours} ({_e(run.folder.name)})", verdict, _protocol_difference(run, metric, wanted))
    return Row(row, "&ndash;", "not reproducible here: needs " + _needs(task, options, metric, row["system"], wanted), "")


def _sweep_tables(folder: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The committed sweep analysis: the fitted laws (scaling.json) and, per (model, length), the
    largest safe compression of each phase with its decision (safe_sparsity.json)."""
    from bench.jsonio import read_json

    scaling = read_json(folder / "scaling.json") if (folder / "scaling.json").is_file() else None
    safety = read_json(folder / "safe_sparsity.json") if (folder / "safe_sparsity.json").is_file() else {}
    dense = {(r["model"], r["length"]): r["dense_accuracy"] for r in safety.get("rows", [])}
    return scaling, [{**r, "dense_accuracy": dense.get((r["model"], r["length"]))}
                     for r in safety.get("prefill_vs_decode", [])]


def sparse_row(row: dict[str, str], folder: Path) -> Row:
    scaling, pairs = _sweep_tables(folder)
    scale_note = "our LM family (tiny-llama xs/s/m), 3 RULER NIAH tasks, 256-512 tokens"
    if row["kind"] == "coefficient":
        phase, name = row["metric"].split()
        if not scaling or phase not in scaling:
            return Row(row, "&ndash;", f"not reproducible here: no committed sweep analysis in {folder}", "")
        ours = scaling[phase]["fit"]["coefficients"].get(name)
        se = scaling[phase]["fit"].get("standard_errors", {}).get(name)
        published = float(row["value"])
        same_sign = (ours > 0) == (published > 0)
        text = f"{ours:.3g}" + (f" &plusmn; {se:.2g}" if se is not None else "")
        verdict = ("trend reproduced at small scale (same sign)" if same_sign else "trend differs (opposite sign)") \
            if name != "eps" else "not comparable (an intercept: depends on the models and tasks)"
        return Row(row, text, verdict, scale_note)
    if not pairs:
        return Row(row, "&ndash;", f"not reproducible here: no committed safe_sparsity.json in {folder}", "")
    # Informative: dense gets something right (else every level is vacuously 'safe'), a sparse level
    # was safe in at least one phase, and the test could decide in both.
    informative = [r for r in pairs if (r.get("dense_accuracy") or 0.0) >= MIN_DENSE_ACCURACY
                   and (r["prefill"] > 1 or r["decode"] > 1)
                   and "too few" not in f"{r.get('prefill_decision')}{r.get('decode_decision')}"]
    more = [r for r in informative if r["decode"] > r["prefill"]]
    text = "; ".join(f"{_e(r['model'])} L={_e(r['length'])}: prefill {r['prefill']:g}, decode {r['decode']:g}"
                     for r in pairs)
    if informative and len(more) == len(informative):
        verdict = (f"trend reproduced at small scale: decode tolerates more compression in all {len(more)} "
                   "informative (model, length) pairs")
    elif informative:
        verdict = f"trend partly reproduced: decode > prefill in {len(more)} of {len(informative)} informative pairs"
    else:
        verdict = "not decidable here: no informative (model, length) pair"
    return Row(row, text, verdict, scale_note + f"; a pair is informative when dense accuracy is at least "
               f"{MIN_DENSE_ACCURACY}, a sparse level was safe in a phase and the test could decide")


def rows(runs: list[Any], sweep: Path) -> list[Row]:
    return [tts_row(r, runs) if r["kind"] == "number" else sparse_row(r, sweep) for r in load_published()]


def page(table: list[Row]) -> str:
    style = ("body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}"
             "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:4px 8px;vertical-align:top;"
             "text-align:left}th{background:#f3f3f3}.ok{color:#11631f}.no{color:#777}.diff{color:#a05a00}")
    out = ["<!doctype html><html lang=en><meta charset=utf-8><title>paper tables</title>", f"<style>{style}</style>",
           "<h1>Published numbers beside ours</h1>",
           "<p>Published figures from reports/data/published.csv (a source on each row); ours from stored results "
           "only. A protocol difference is stated on its row.</p>",
           "<table><tr><th>system</th><th>test set</th><th>metric</th><th>published</th><th>source</th>"
           "<th>ours</th><th>verdict</th><th>protocol difference / scale</th></tr>"]
    for r in table:
        p = r.published
        cls = "ok" if r.verdict.startswith(("reproduced", "trend reproduced")) else \
            "no" if r.verdict.startswith("not") else "diff"
        out.append(f"<tr><td>{_e(p['system'])}</td><td>{_e(p['test_set'])}</td><td>{_e(p['metric'])}</td>"
                   f"<td>{_e(p['value'])}{' (' + _e(p['protocol']) + ')' if p['protocol'] else ''}</td>"
                   f"<td>{_e(p['source'])}</td><td>{r.ours}</td><td class={cls}>{r.verdict}</td>"
                   f"<td>{_e(r.protocol)}</td></tr>")
    out.append("</table></html>")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench paper-tables", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("paper-tables.html"))
    parser.add_argument("--runs", type=Path, action="append",
                        help=f"folders of run folders to look in (default: {LEADERBOARD})")
    parser.add_argument("--sweep-analysis", type=Path, default=SWEEP, help="a committed sweep analysis folder")
    args = parser.parse_args(argv)
    from bench.jsonio import write_text_atomic
    from bench.results import load_runs

    log: list[str] = []
    runs = load_runs(args.runs or [LEADERBOARD], log) if (args.runs or LEADERBOARD.is_dir()) else []
    for line in log:
        if line.startswith("REFUSED"):
            print(f"warning: {line}", file=sys.stderr)
    table = rows(runs, args.sweep_analysis)
    write_text_atomic(args.out, page(table))
    counts: dict[str, int] = {}
    for r in table:
        key = r.verdict.split(":")[0].split(" (")[0].split(" by")[0]
        counts[key] = counts.get(key, 0) + 1
    print(f"{args.out}: {len(table)} rows; " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

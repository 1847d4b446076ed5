"""Summaries: per-system aggregates over the stored records of a run, and the console table.

An analysis only reads records; it never re-runs a system. Per metric value: the mean over items
with a bootstrap 95 % CI. Failures are always counted in their own column; a metric with a
`failure_value` (WER: 1.0) also counts them in its mean, as the protocol says. Performance: RTF
p50/p95 after warm-up, first-packet latency for streaming systems, peak RSS of the system process.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any, Iterable

from bench import __version__
from bench.contracts import Metric, MetricOutput
from bench.hardware import fingerprint, peak_rss_mb, source_commit
from bench.results import latest, read_generations, read_scores, records_digest, seal
from bench.spec import SCHEMA_VERSION
from bench.stats import describe, percentile
from bench.worker import WARMUP_WORDS


def _metric_block(metric: Metric, recs: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    # Canonical order (by item id) before resampling: the same per-item values give the same CI,
    # whatever order the records were written in (a warm cache writes them in another order).
    recs = sorted(recs, key=lambda r: r["item_id"])
    failures = [r for r in recs if r["failure"]]
    ok = [r for r in recs if not r["failure"]]
    value_names = sorted({k for r in ok for k in r["values"]}) or ([metric.primary] if metric.primary else [])
    block: dict[str, Any] = {
        "primary": metric.primary, "higher_is_better": metric.higher_is_better,
        "n_items": len(recs), "n_failed": len(failures),
        "failure_reasons": dict(Counter(r["failure"] for r in failures).most_common()),
        "failures_in_mean": metric.failure_value is not None,
        "values": {},
    }
    for name in value_names:
        if metric.failure_value is not None:
            vals = [metric.failure_value if r["failure"] else r["values"][name] for r in recs
                    if r["failure"] or name in r["values"]]
        else:
            vals = [r["values"][name] for r in ok if name in r["values"]]
        block["values"][name] = describe(vals, seed=seed)
    outputs = [MetricOutput(values=r["values"], extra=r.get("extra", {}), failure=r["failure"]) for r in recs]
    block["corpus"] = metric.corpus_aggregates(outputs)
    return block


def _performance(gens: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [g for g in gens if g["status"] == "ok"]
    rtf = [g["rtf"] for g in ok if g.get("rtf") is not None]
    fp = [g["first_packet_s"] for g in ok if g.get("first_packet_s") is not None]
    rss = [g["peak_rss_mb"] for g in gens if g.get("peak_rss_mb") is not None]
    gpu = [g["peak_gpu_mb"] for g in gens if g.get("peak_gpu_mb") is not None]
    threads = sorted({g["threads"] for g in gens if g.get("threads") is not None})
    return {
        "n_items": len(gens), "n_generated": len(ok), "n_failed": len(gens) - len(ok),
        "failure_reasons": dict(Counter(g["reason"] for g in gens if g["status"] != "ok").most_common()),
        "rtf_p50": percentile(rtf, 50), "rtf_p95": percentile(rtf, 95),
        "first_packet_s_p50": percentile(fp, 50), "first_packet_s_p95": percentile(fp, 95),
        "peak_rss_mb": max(rss) if rss else None,
        "peak_gpu_mb": max(gpu) if gpu else None,
        "threads": threads or None,  # torch's threads in the system's process; more than one: a mixed run
        "audio_s_total": sum(g["duration_s"] or 0.0 for g in ok),
    }


def summarize(run: Any, wall_s: float | None = None) -> dict[str, Any]:
    folder = run.folder
    gens_all = read_generations(folder)
    latest_gen = latest(gens_all, "system", "item_id")
    scores = read_scores(folder)
    latest_score = latest(scores, "system", "item_id", "metric")
    item_ids = {it.id for it in run.items}
    tags = {it.id: it.tags for it in run.items}
    groups = run.task.report_groups
    systems: dict[str, Any] = {}
    for system in run.system_names:
        gens = [g for (s, i), g in latest_gen.items() if s == system and i in item_ids]
        entry: dict[str, Any] = {"performance": _performance(gens), "metrics": {}, "groups": {}}
        for metric in run.metrics:
            recs = [r for (s, i, m), r in latest_score.items() if s == system and m == metric.name and i in item_ids]
            entry["metrics"][metric.name] = _metric_block(metric, recs, run.opts.seed)
            for group in groups:
                by_value: dict[str, list[dict[str, Any]]] = defaultdict(list)
                for r in recs:
                    by_value[tags[r["item_id"]].get(group, "")].append(r)
                for value, sub in sorted(by_value.items()):
                    entry["groups"].setdefault(f"{group}={value}", {})[metric.name] = \
                        _metric_block(metric, sub, run.opts.seed)
        entry["complete"] = len(gens) == len(run.items) and all(
            entry["metrics"][m.name]["n_items"] == len(run.items) for m in run.metrics)
        systems[system] = entry
    return seal({
        "schema_version": SCHEMA_VERSION,
        "harness_version": __version__,
        "harness_commit": source_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec_digest": run.spec.digest(),
        "spec": run.spec.to_dict(),
        "evaluators": {m.name: m.evaluator_revision() for m in run.metrics},
        "unavailable_metrics": run.unavailable_metrics,
        "settings": {"timeout_s": run.opts.timeout_s, "batch_size": run.opts.batch_size,
                     "warmup": run.opts.warmup, "cache": run.opts.use_cache,
                     **({"warmup_words": WARMUP_WORDS} if run.opts.warmup else {}),
                     "executor": run.opts.executor.to_json()},
        "environment": fingerprint(),
        "scoring_peak_rss_mb": peak_rss_mb(),
        "wall_s": wall_s,
        **_unmatched(run),
        "systems": systems,
        "records_digest": records_digest(gens_all, scores),
    })


def _unmatched(run: Any) -> dict[str, Any]:
    """For `bench score`: the audio files that matched no item (how many, the first ten names)."""
    names = run.unmatched_audio_files() if hasattr(run, "unmatched_audio_files") else []
    if getattr(run.opts, "audio_dir", None) is None:
        return {}
    return {"unmatched_audio_files": {"count": len(names), "first": names[:10]}}


# ---------------------------------------------------------------------------- console table
def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _cell(metric: str, d: dict[str, Any]) -> str:
    """'2.31% ±0.95' style: mean and half the 95 % CI width (WER in percent)."""
    mean = d.get("mean")
    if mean is None:
        return "-"
    scale, unit = (100.0, "%") if metric == "wer" else (1.0, "")
    text = f"{scale * mean:.2f}{unit}" if unit else f"{mean:.3f}"
    if d.get("ci_low") is not None:
        text += f" ±{scale * (d['ci_high'] - d['ci_low']) / 2:.2f}" if unit else f" ±{(d['ci_high'] - d['ci_low']) / 2:.3f}"
    return text


def _columns(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, value name, header) for each metric's primary value."""
    cols = []
    first = next(iter(summary["systems"].values()), None)
    for m in (m["name"] for m in summary["spec"]["metrics"]):
        block = first["metrics"].get(m) if first else None
        if not block:
            continue
        value_names = list(block["values"])
        v = block["primary"] if block["primary"] in value_names else (value_names[:1] or [m])[0]
        arrow = "^" if block["higher_is_better"] else "v"
        cols.append((m, v, (f"{m}.{v}" if v != m else m) + arrow))
    return cols


def _render(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return lines


def console_table(summary: dict[str, Any]) -> str:
    cols = _columns(summary)
    header = ["system"] + [h for _, _, h in cols] + ["fails", "RTF p50", "RTF p95", "peak MB"]
    rows = []
    for name, entry in summary["systems"].items():
        perf = entry["performance"]
        rows.append([name] + [_cell(m, entry["metrics"][m]["values"].get(v, {})) for m, v, _ in cols]
                    + [f"{perf['n_failed']}/{perf['n_items']}", _fmt(perf["rtf_p50"]), _fmt(perf["rtf_p95"]),
                       _fmt(perf["peak_rss_mb"], ".0f")])
    lines = _render(header, rows)
    group_keys = sorted({g for e in summary["systems"].values() for g in e["groups"]})
    if group_keys:
        lines += ["", "by group:"]
        grows = []
        for name, entry in summary["systems"].items():
            for g in group_keys:
                blocks = entry["groups"].get(g, {})
                grows.append([name, g] + [_cell(m, blocks[m]["values"].get(v, {})) if m in blocks else "-"
                                          for m, v, _ in cols])
        lines += _render(["system", "group"] + [h for _, _, h in cols], grows)
    for m, why in summary.get("unavailable_metrics", {}).items():
        lines.append(f"unavailable: {m}: {why}")
    for name, entry in summary["systems"].items():
        threads = entry["performance"].get("threads") or []
        if len(threads) > 1:
            lines.append(f"warning: {name}'s items were made with {' and '.join(map(str, threads))} torch threads "
                         "(a run resumed under another setting): a model's float sums, so its outputs, depend on "
                         "the count; rerun in a new --out with one OMP_NUM_THREADS for a run that reproduces")
    lines.append("± is half the 95 % bootstrap CI; ^ higher is better, v lower is better")
    return "\n".join(lines)

"""A self-contained HTML page for one run's summary.json: the per-system table with 95 % CIs,
per-group breakdowns, failures by reason, unavailable evaluators, pinned revisions and the machine.
Every value shown is escaped; the run is read through bench.results (records validated, the summary
checked against them) before use."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any


STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}.ci{color:#777;font-size:12px}
.bad{color:#a00}code{background:#f5f5f5;padding:1px 4px}"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cell(metric: str, d: dict[str, Any]) -> str:
    mean = d.get("mean")
    if mean is None:
        return "&ndash;"
    scale = 100.0 if metric == "wer" else 1.0
    text = f"{scale * mean:.2f}{'%' if metric == 'wer' else ''}"
    if d.get("ci_low") is not None:
        text += f' <span class="ci">[{scale * d["ci_low"]:.2f}, {scale * d["ci_high"]:.2f}]</span>'
    return text


def _primary_cell(metric: str, block: dict[str, Any]) -> str:
    values = block.get("values", {})
    primary = block.get("primary") if block.get("primary") in values else next(iter(values), None)
    return _cell(metric, values.get(primary, {})) if primary else "&ndash;"


def build(run_folder: str | Path) -> str:
    """The HTML page for a run folder (or a summary.json path)."""
    from bench.results import load_run

    summary = load_run(run_folder).summary  # records validated, summary checked against them
    metrics = [m["name"] for m in summary["spec"].get("metrics", [])]
    out = [f"<!doctype html><meta charset=utf-8><title>{_e(summary['spec']['task']['name'])} results</title>",
           f"<style>{STYLE}</style>", f"<h1>Task {_e(summary['spec']['task']['name'])}</h1>",
           f"<p>spec <code>{_e(summary.get('spec_digest', '')[:12])}</code>, harness "
           f"{_e(summary.get('harness_version', ''))}, created {_e(summary.get('created', ''))}. "
           "Brackets: 95 % bootstrap CI.</p>"]
    head = "".join(f"<th>{_e(m)}</th>" for m in metrics)
    out.append(f"<table><tr><th>system</th>{head}<th>failed</th><th>RTF p50</th><th>RTF p95</th>"
               "<th>peak RSS MB</th></tr>")
    for name, entry in summary["systems"].items():
        cells = [_primary_cell(m, entry.get("metrics", {}).get(m, {})) for m in metrics]
        perf = entry.get("performance", {})
        fmt = lambda v, spec=".3f": "&ndash;" if v is None else format(v, spec)  # noqa: E731
        out.append(f"<tr><td>{_e(name)}</td>" + "".join(f"<td>{c}</td>" for c in cells)
                   + f"<td>{_e(perf.get('n_failed'))}/{_e(perf.get('n_items'))}</td><td>{fmt(perf.get('rtf_p50'))}"
                   f"</td><td>{fmt(perf.get('rtf_p95'))}</td><td>{fmt(perf.get('peak_rss_mb'), '.0f')}</td></tr>")
    out.append("</table>")
    groups = sorted({g for e in summary["systems"].values() for g in e.get("groups", {})})
    if groups:
        out.append(f"<h2>By group</h2><table><tr><th>system</th><th>group</th>{head}</tr>")
        for name, entry in summary["systems"].items():
            for g in groups:
                blocks = entry.get("groups", {}).get(g, {})
                cells = [_primary_cell(m, blocks.get(m, {})) for m in metrics]
                out.append(f"<tr><td>{_e(name)}</td><td>{_e(g)}</td>" + "".join(f"<td>{c}</td>" for c in cells)
                           + "</tr>")
        out.append("</table>")
    failures = [(name, m, reason, count) for name, entry in summary["systems"].items()
                for m, block in entry.get("metrics", {}).items()
                for reason, count in block.get("failure_reasons", {}).items()]
    if failures:
        out.append("<h2>Failures</h2><table><tr><th>system</th><th>metric</th><th>reason</th><th>items</th></tr>")
        out += [f"<tr><td>{_e(s)}</td><td>{_e(m)}</td><td>{_e(r)}</td><td>{_e(c)}</td></tr>" for s, m, r, c in failures]
        out.append("</table>")
    for m, why in summary.get("unavailable_metrics", {}).items():
        out.append(f'<p class="bad">unavailable: <b>{_e(m)}</b>: {_e(why)}</p>')
    out.append("<h2>Evaluators</h2><ul>")
    out += [f"<li><b>{_e(m)}</b>: <code>{_e(rev)}</code></li>" for m, rev in summary["evaluators"].items()]
    env = summary["environment"]
    out.append(f"</ul><h2>Machine</h2><p>{_e(env.get('cpu'))}, {_e(env.get('cpu_count'))} cores, "
               f"{_e(env.get('ram_gb'))} GB RAM, GPUs: {_e(', '.join(env.get('gpus', [])) or 'none')}; "
               f"Python {_e(env.get('python'))}</p>")
    return "\n".join(out) + "\n"


def write(run_folder: str | Path, out: str | Path | None = None) -> Path:
    from bench.jsonio import write_text_atomic

    target = Path(out) if out else (Path(run_folder) if Path(run_folder).is_dir() else Path(run_folder).parent) / "report.html"
    write_text_atomic(target, build(run_folder))
    return target

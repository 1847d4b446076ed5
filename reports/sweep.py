"""`bench report SWEEP_FOLDER`: a sparse-attention sweep as one self-contained page.

Read from the sweep's stored records and its analysis (analysis/*.json, written by the sweep or
`bench fit`): the isoCost frontier per phase and length (accuracy against cost, frontier points
marked), safe sparsity per model, method, phase and length with the test's decision, prefill
against decode, the scaling-law fit per phase with standard errors, convergence and held-out
errors, and the realised sparsity of each method against the sparsity it was asked for. Nothing is
re-run; everything taken from a file is escaped.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from reports.html import escape as _e
from reports.html import format_number

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1300px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child,td.l{text-align:left}th{background:#f3f3f3}.muted{color:#777}.bad{color:#a00}
.fig{display:inline-block;margin:0 1em 1em 0;vertical-align:top}.fig svg{max-width:100%;height:auto}"""


def is_sweep(path: Path) -> bool:
    return (Path(path) / "records.jsonl").is_file() and (Path(path) / "spec.json").is_file()


def _analysis(folder: Path) -> dict[str, Any]:
    from bench.jsonio import read_json

    out = {}
    for name in ("accuracy", "frontier", "safe_sparsity", "scaling"):
        path = folder / "analysis" / f"{name}.json"
        if not path.is_file():
            raise BenchError(f"{folder} has no analysis/{name}.json: run `bench fit {folder}` first "
                             "(it analyses the stored records; nothing is re-run)")
        out[name] = read_json(path)
    return out


def _frontier_figures(frontier: list[dict[str, Any]]) -> list[str]:
    from reports.figures import _plain, _setup, _svg

    plt, sns = _setup()
    out = []
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for point in frontier:
        groups[(point["phase"], point["length"])].append(point)
    for (phase, length), points in sorted(groups.items()):
        fig, ax = plt.subplots(figsize=(5.6, 3.6))
        methods = sorted({p["method"] for p in points})
        palette = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
        for method in methods:
            mine = [p for p in points if p["method"] == method]
            ax.scatter([p["cost"] for p in mine], [p["accuracy"] for p in mine], s=16, color=palette[method],
                       label=_plain(method), alpha=0.75)
        front = sorted((p for p in points if p.get("on_frontier")), key=lambda p: p["cost"])
        if front:
            ax.plot([p["cost"] for p in front], [p["accuracy"] for p in front], color="#222", lw=1, label="frontier")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # minor labels collide on narrow ranges
        ax.set_xlabel("cost (FLOPs for prefill, elements read for decode)")
        ax.set_ylabel("accuracy (mean over tasks)")
        ax.set_title(_plain(f"{phase}, {length} tokens"), fontsize=10)
        ax.legend(fontsize=7, frameon=False)
        out.append(f'<div class="fig">{_svg(fig)}</div>')
    return out


def _sparsity_figure(records: list[dict[str, Any]]) -> str:
    from reports.figures import _plain, _setup, _svg

    plt, sns = _setup()
    data: dict[str, list] = {"method": [], "asked": [], "realised": []}
    for r in records:
        if r.get("method") in (None, "dense") or r.get("failure") or r.get("sparsity") is None:
            continue
        data["method"].append(_plain(f"{r['method']} ({r['phase']})"))
        data["asked"].append(f"C={r['compression']:g}")
        data["realised"].append(float(r["sparsity"]))
    if not data["method"]:
        return ""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(set(data["method"])) * len(set(data["asked"])) / 2), 3.6))
    order = sorted(set(data["asked"]), key=lambda a: float(a[2:]))
    sns.boxplot(data=data, x="method", y="realised", hue="asked", hue_order=order, ax=ax, fliersize=1, linewidth=0.6)
    ax.set_xlabel("")
    ax.set_ylabel("realised sparsity")
    ax.tick_params(axis="x", rotation=20)
    ax.legend(fontsize=7, frameon=False, title="asked for", title_fontsize=7, ncol=2)
    return f'<div class="fig">{_svg(fig)}</div>'


def _safety_section(safety: dict[str, Any]) -> list[str]:
    out = ["<h2>Safe sparsity</h2>",
           f"<p class=muted>{_e(safety.get('test'))}; margin {_e(safety.get('margin'))}, alpha {_e(safety.get('alpha'))}, "
           f"correction {_e(safety.get('correction'))}. {_e(safety.get('reading', ''))}</p>",
           "<table><tr><th>model</th><th>length</th><th>phase</th><th>method</th><th>dense accuracy</th>"
           "<th>largest safe C</th><th>decision</th><th>samples</th></tr>"]
    for r in sorted(safety.get("rows", []), key=lambda r: (r["model"], r["length"], r["phase"], r["method"])):
        cls = " class=bad" if r.get("decision") not in (None, "decided") else ""
        out.append(f"<tr><td>{_e(r['model'])}</td><td>{_e(r['length'])}</td><td class=l>{_e(r['phase'])}</td>"
                   f"<td class=l>{_e(r['method'])}</td><td>{format_number(r.get('dense_accuracy'))}</td>"
                   f"<td>{r['safe_compression']:g}</td><td{cls}>{_e(r.get('decision', ''))}</td>"
                   f"<td>{_e(r.get('min_samples', ''))}</td></tr>")
    out.append("</table><h3>Prefill against decode</h3><table><tr><th>model</th><th>length</th><th>prefill C</th>"
               "<th>by</th><th>decode C</th><th>by</th></tr>")
    for r in safety.get("prefill_vs_decode", []):
        out.append(f"<tr><td>{_e(r['model'])}</td><td>{_e(r['length'])}</td><td>{r['prefill']:g}</td>"
                   f"<td class=l>{_e(r.get('prefill_method') or '-')}</td><td>{r['decode']:g}</td>"
                   f"<td class=l>{_e(r.get('decode_method') or '-')}</td></tr>")
    out.append("</table>")
    return out


def _scaling_section(scaling: dict[str, Any]) -> list[str]:
    out = ["<h2>Scaling law</h2>"]
    for phase, entry in scaling.items():
        fit = entry.get("fit", {})
        if not fit or "coefficients" not in fit:
            out.append(f"<p class=muted>{_e(phase)}: no fit ({_e(fit.get('skipped', 'not enough points'))})</p>")
            continue
        se = fit.get("standard_errors", {})
        constant = fit.get("constant_axes", {})
        coefficients = ", ".join(
            f"{_e(k)} " + ("&ndash; (axis held constant)" if v is None else f"{v:.3f}"
                           + (f" &plusmn; {se[k]:.3f}" if se.get(k) is not None else ""))
            for k, v in fit["coefficients"].items())
        converged = fit.get("converged", True)
        constants = "; constant: " + ", ".join(f"{_e(k)} = {_e(v)}" for k, v in constant.items()) if constant else ""
        out.append(f"<h3>{_e(phase)}</h3><p><code>{_e(fit.get('form'))}</code> ({_e(fit.get('method'))}): "
                   f"{coefficients}{constants}; R&sup2; (logit) {format_number(fit.get('r2_logit'))}, R&sup2; (accuracy) "
                   f"{format_number(fit.get('r2_accuracy'))}; {_e(fit.get('n_points'))} points"
                   + ("" if converged else ' <b class="bad">did not converge: read the coefficients as unreliable</b>')
                   + "</p>")
        folds = entry.get("validation", {}).get("folds", {})
        if folds:
            out.append("<table><tr><th>held out</th><th>value</th><th>task</th><th>Spearman &rho;</th><th>MAE</th></tr>")
            for name, fold in folds.items():
                if "skipped" in fold:
                    out.append(f"<tr><td class=l>largest {_e(fold['axis'])}</td><td>{_e(fold['held_out_value'])}</td>"
                               f"<td class=l colspan=3>skipped: {_e(fold['skipped'])}</td></tr>")
                    continue
                for task, t in fold.get("per_task", {}).items():
                    out.append(f"<tr><td class=l>largest {_e(fold['axis'])}</td><td>{_e(fold['held_out_value'])}</td>"
                               f"<td class=l>{_e(task)}</td><td>{format_number(t.get('spearman'), digits=2)}</td>"
                               f"<td>{format_number(t.get('mae'))}</td></tr>")
            out.append("</table>")
    return out


def _provenance_section(folder: Path, grid: dict[str, Any]) -> list[str]:
    from bench.jsonio import read_json

    out = ["<h2>Provenance</h2><ul>",
           f"<li>spec: harness {_e(grid.get('harness_version'))}; models "
           + "; ".join(f"{_e(m.get('name'))} <code>{_e(m.get('revision'))}</code>"
                       for m in grid.get("model_identities", []) if isinstance(m, dict)) + "</li>"]
    for label, path in (("sweep run", folder / "provenance.json"), ("analysis", folder / "analysis" / "provenance.json")):
        if not path.is_file():
            out.append(f"<li>{label}: not recorded (written by sweeps and analyses since 2026-11-30)</li>")
            continue
        p = read_json(path)
        env = p.get("environment", {})
        out.append(f"<li>{label}: {_e(p.get('at'))}, harness {_e(p.get('harness_version'))}, commit "
                   f"<code>{_e(p.get('harness_commit') or 'unknown')}</code>; {_e(env.get('cpu'))}, "
                   f"{_e(env.get('cpu_count'))} cores, {_e(env.get('ram_gb'))} GB RAM, GPUs: "
                   f"{_e(', '.join(env.get('gpus', [])) or 'none')}; Python {_e(env.get('python'))}</li>")
    out.append("</ul>")
    return out


def build(folder: Path) -> str:
    from bench.sweep import load_records

    folder = Path(folder)
    spec, records = load_records(folder)
    analysis = _analysis(folder)
    grid = spec.get("spec", spec)
    parts = ["<!doctype html><html lang=en><meta charset=utf-8>",
             f"<title>sweep {_e(folder.name)}</title><style>{STYLE}</style>",
             f"<h1>Sparse-attention sweep <code>{_e(folder.name)}</code></h1>",
             f"<p>{len(records)} records. Models: {_e(', '.join(map(str, grid.get('models', []))))}; tasks: "
             f"{_e(', '.join(map(str, grid.get('tasks', []))))}; lengths: {_e(', '.join(map(str, grid.get('lengths', []))))}; "
             f"compressions: {_e(', '.join(map(str, grid.get('compressions', []))))}; prefill methods: "
             f"{_e(', '.join(grid.get('prefill_methods', [])))}; decode methods: "
             f"{_e(', '.join(grid.get('decode_methods', [])))}; {_e(grid.get('n_samples'))} samples each.</p>",
             "<h2>Accuracy against cost (isoCost frontier)</h2>",
             "<p class=muted>One point per model, method and compression (accuracy: mean over tasks); the line joins "
             "the points no cheaper point beats.</p>"]
    parts += _frontier_figures(analysis["frontier"])
    parts += _safety_section(analysis["safe_sparsity"])
    parts += _scaling_section(analysis["scaling"])
    parts.append("<h2>Realised sparsity</h2><p class=muted>What each method realised, per record, against the "
                 "compression it was asked for (sparsity = 1 - 1/C).</p>")
    parts.append(_sparsity_figure(records))
    parts += _provenance_section(folder, grid)
    parts.append("</html>")
    return "\n".join(parts) + "\n"

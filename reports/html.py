"""`bench report RUN [RUN ...]`: one self-contained HTML page comparing the systems of one or more
runs of the same task. Inline CSS, SVG figures and a little JavaScript; it works from file:// with
no network, and with JavaScript off every table is still there (items in worst-WER-first order).

Sections: the per-system table (95 % CIs, failures by reason, RTF, first packet, memory); which
differences are significant (a two-sided paired sign-flip test on shared item ids, Holm-corrected
per metric); figures (per-item distributions, WER against RTF, per-group bars); the per-item
drill-down (audio players for prompt, reference and each output; the target text beside the ASR
transcript with substitutions, insertions and deletions marked from jiwer's word alignment; each
metric's value; sort and filter); provenance (schema, harness version and commit, evaluators,
machine). Runs are read through bench.results: records validated, summaries checked against them.
Everything taken from a result file is escaped before it is shown.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any, Sequence

from bench.errors import BenchError
from bench.results import primary_value

ALPHA = 0.05

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1300px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}.ci{color:#777;font-size:12px}
.bad{color:#a00}code{background:#f5f5f5;padding:1px 4px}.fig{display:inline-block;margin:0 1em 1em 0}
.fig svg{max-width:100%;height:auto}td.text{text-align:left;max-width:38em}
tbody.item tr.head td{background:#fafafa;border-top:2px solid #999}
.words del{background:#f8d0d0;text-decoration:line-through}.words ins{background:#cfeccf;text-decoration:none}
.words .sub{background:#fde9b6}.muted{color:#777}audio{height:28px;width:220px}
.controls{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd}"""

SCRIPT = """(function(){
var table=document.getElementById('items');if(!table)return;
var bodies=Array.prototype.slice.call(table.tBodies);
var filter=document.getElementById('filter'),order=document.getElementById('order'),only=document.getElementById('only');
function apply(){
 var q=(filter.value||'').toLowerCase(),key=order.value,sys=only.value;
 bodies.sort(function(a,b){
  if(key==='id'){return a.dataset.id<b.dataset.id?-1:a.dataset.id>b.dataset.id?1:0;}
  var x=parseFloat(a.dataset[key]),y=parseFloat(b.dataset[key]);
  if(isNaN(x))x=-Infinity;if(isNaN(y))y=-Infinity;return y-x;});
 bodies.forEach(function(b){
  var show=!q||b.dataset.search.indexOf(q)>=0;b.style.display=show?'':'none';table.appendChild(b);
  Array.prototype.forEach.call(b.querySelectorAll('tr.sys'),function(r){
   r.style.display=(!sys||r.dataset.system===sys)?'':'none';});});}
[filter,order,only].forEach(function(el){el.addEventListener('input',apply);el.addEventListener('change',apply);});
document.getElementById('controls').hidden=false;})();"""


def escape(value: Any) -> str:
    """Any value as text safe inside HTML, attribute values included (every page uses this)."""
    return html.escape(str(value), quote=True)


_e = escape


def _threads(perf: dict[str, Any]) -> str:
    """' (2 threads)' beside a torch system's speed: its timings and outputs depend on the count."""
    threads = perf.get("threads") or []
    if not threads:
        return ""
    return f" <span class=ci>({_e(' and '.join(map(str, threads)))} thread{'s' if threads != [1] else ''})</span>"


def format_number(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
    """A value for a page: scaled, rounded, or a dash when there is none."""
    return "&ndash;" if value is None else f"{scale * value:.{digits}f}"


def display_scale(metric: str) -> float:
    """What a metric's values are multiplied by for display: error rates as percentages."""
    return 100.0 if metric in ("wer", "cer") else 1.0


_scale = display_scale


class Page:
    """The data of one report: runs of one task, their systems (labelled uniquely), per-item values."""

    def __init__(self, runs: list[Any]):
        if not runs:
            raise BenchError("bench report needs at least one run folder")
        first = runs[0].summary["spec"]
        for run in runs[1:]:
            spec = run.summary["spec"]
            if (spec["task"].get("name"), spec["task"].get("version"), spec.get("items_digest")) != \
                    (first["task"].get("name"), first["task"].get("version"), first.get("items_digest")):
                raise BenchError(f"{run.folder} is a run of another task or item set than {runs[0].folder}; "
                                 "one page compares runs of the same task")
        self.runs = runs
        self.task = str(first["task"].get("name"))
        names = [s for run in runs for s in run.systems]
        self.rows: list[tuple[str, Any, str]] = []  # (label, run, system)
        for run in runs:
            for system in run.systems:
                label = system if names.count(system) == 1 else f"{system} ({run.folder.name})"
                self.rows.append((label, run, system))
        self.metrics: list[str] = []
        for run in runs:
            for m in run.summary["spec"].get("metrics", []):
                if m["name"] not in self.metrics:
                    self.metrics.append(m["name"])
        self._scores = {id(run): run.latest_scores() for run in runs}
        self._gens = {id(run): run.latest_generations() for run in runs}
        self._values: dict[tuple[str, str, bool], dict[str, float]] = {}

    def block(self, label: str, metric: str) -> dict[str, Any] | None:
        run, system = self._where(label)
        return run.summary["systems"][system]["metrics"].get(metric)

    def _where(self, label: str) -> tuple[Any, str]:
        for lab, run, system in self.rows:
            if lab == label:
                return run, system
        raise KeyError(label)

    def primary(self, metric: str) -> tuple[str, bool]:
        for label, _, _ in self.rows:
            block = self.block(label, metric)
            if block:
                return primary_value(block), bool(block["higher_is_better"])
        return "", True

    def score(self, label: str, item: str, metric: str) -> dict[str, Any] | None:
        run, system = self._where(label)
        return self._scores[id(run)].get((system, item, metric))

    def generation(self, label: str, item: str) -> dict[str, Any] | None:
        run, system = self._where(label)
        return self._gens[id(run)].get((system, item))

    def values(self, label: str, metric: str, *, with_failures: bool) -> dict[str, float]:
        """Item id -> headline value of one system (bench.results.RunResults.item_values), cached."""
        key = (label, metric, with_failures)
        if key not in self._values:
            run, system = self._where(label)
            self._values[key] = run.item_values(system, metric, with_failures=with_failures)
        return self._values[key]

    def value(self, label: str, item: str, metric: str, *, with_failures: bool) -> float | None:
        return self.values(label, metric, with_failures=with_failures).get(item)

    def items(self) -> list[str]:
        ids = {item for run in self.runs for (_, item) in self._gens[id(run)]}
        return sorted(ids)


# ----------------------------------------------------------------------------------- sections
def _summary_table(page: Page) -> list[str]:
    head = "".join(f"<th>{_e(m)} {'&uarr;' if page.primary(m)[1] else '&darr;'}</th>" for m in page.metrics)
    out = ["<h2>Systems</h2>", "<table><tr><th>system</th>" + head +
           "<th>failed</th><th>RTF p50 / p95</th><th>first packet s</th><th>peak RSS MB</th></tr>"]
    for label, run, system in page.rows:
        entry = run.summary["systems"][system]
        cells = []
        for m in page.metrics:
            block = entry["metrics"].get(m)
            if not block:
                cells.append("<td>&ndash;</td>")
                continue
            key = primary_value(block)
            d = block["values"].get(key, {})
            ci = (f' <span class="ci">[{format_number(d.get("ci_low"), _scale(m), 2)}, {format_number(d.get("ci_high"), _scale(m), 2)}]'
                  "</span>") if d.get("ci_low") is not None else ""
            cells.append(f"<td>{format_number(d.get('mean'), _scale(m), 2)}{'%' if _scale(m) == 100 else ''}{ci}</td>")
        perf = entry["performance"]
        reasons = ", ".join(f"{_e(r)} {_e(n)}" for r, n in perf.get("failure_reasons", {}).items())
        out.append(f"<tr><td>{_e(label)}</td>{''.join(cells)}<td>{_e(perf['n_failed'])}/{_e(perf['n_items'])}"
                   f"{' <span class=ci>(' + reasons + ')</span>' if reasons else ''}</td>"
                   f"<td>{format_number(perf.get('rtf_p50'))} / {format_number(perf.get('rtf_p95'))}{_threads(perf)}</td>"
                   f"<td>{format_number(perf.get('first_packet_s_p50'), digits=2)}</td><td>{format_number(perf.get('peak_rss_mb'), digits=0)}</td></tr>")
    out.append("</table><p class=muted>Brackets: 95 % bootstrap CI of the mean. WER counts a failed item as 1.0; "
               "other metrics leave failed items out of the mean and count them under failed.</p>")
    failures = [(label, m, reason, n) for label, run, system in page.rows
                for m, block in run.summary["systems"][system]["metrics"].items()
                for reason, n in block.get("failure_reasons", {}).items()]
    if failures:
        out.append("<h3>Failures by reason</h3><table><tr><th>system</th><th>metric</th><th>reason</th><th>items</th></tr>")
        out += [f"<tr><td>{_e(s)}</td><td>{_e(m)}</td><td>{_e(r)}</td><td>{_e(n)}</td></tr>" for s, m, r, n in failures]
        out.append("</table>")
    return out


def significance(page: Page, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Per metric: every pair of systems compared on their shared items (two-sided paired
    sign-flip test), p-values Holm-adjusted within the metric."""
    from bench.stats import pairwise_tests

    out: dict[str, list[dict[str, Any]]] = {}
    for metric in page.metrics:
        _, higher = page.primary(metric)
        tests = pairwise_tests({label: page.values(label, metric, with_failures=True) for label, _, _ in page.rows},
                               seed=seed)
        for test in tests:
            test["better"] = test["b"] if (test["difference"] > 0) == higher else test["a"]
            test["significant"] = test["p_holm"] < ALPHA
        out[metric] = tests
    return out


def _significance_section(page: Page) -> list[str]:
    results = significance(page)
    out = ["<h2>Which differences are significant</h2>",
           f"<p class=muted>Two-sided paired sign-flip permutation test (10,000 flips, seed 0) of the mean per-item "
           f"difference on the items both systems have; p-values Holm-corrected over the pairs of each metric; "
           f"significant at {ALPHA}. Failed items enter with the metric's failure value where it has one (WER 1.0), "
           "otherwise they are left out.</p>"]
    for metric, tests in results.items():
        if not tests:
            continue
        scale = _scale(metric)
        out.append(f"<h3>{_e(metric)}</h3><table><tr><th>A</th><th>B</th><th>items</th><th>B &minus; A</th>"
                   "<th>95 % CI</th><th>p (Holm)</th><th>verdict</th></tr>")
        for t in tests:
            verdict = f"<b>{_e(t['better'])}</b> better" if t["significant"] else "<span class=muted>not significant</span>"
            out.append(f"<tr><td>{_e(t['a'])}</td><td>{_e(t['b'])}</td><td>{t['n']}</td>"
                       f"<td>{format_number(t['difference'], scale, 2)}</td><td>[{format_number(t['ci_low'], scale, 2)}, "
                       f"{format_number(t['ci_high'], scale, 2)}]</td><td>{t['p_holm']:.4f}</td><td>{verdict}</td></tr>")
        out.append("</table>")
    return out


def _figures_section(page: Page) -> list[str]:
    from reports import figures

    out = ["<h2>Figures</h2>"]
    for metric in page.metrics:
        values = {label: [v for item in page.items()
                          if (v := page.value(label, item, metric, with_failures=False)) is not None]
                  for label, _, _ in page.rows}
        if any(values.values()):
            out.append(f'<div class="fig"><h3>{_e(metric)}: per item</h3>'
                       f"{figures.distributions(metric, values, _scale(metric))}</div>")
    if "wer" in page.metrics:
        points = {}
        for label, run, system in page.rows:
            block = page.block(label, "wer")
            rtf = run.summary["systems"][system]["performance"].get("rtf_p50")
            if block and rtf is not None:
                d = block["values"].get(primary_value(block), {})
                if d.get("mean") is not None:
                    points[label] = {"x": rtf, "y": 100 * d["mean"],
                                     "low": None if d.get("ci_low") is None else 100 * d["ci_low"],
                                     "high": None if d.get("ci_high") is None else 100 * d["ci_high"]}
        if points:
            out.append('<div class="fig"><h3>WER against real-time factor</h3>'
                       f"{figures.tradeoff(points, 'RTF p50 (lower is faster)', 'WER % (95 % CI)')}</div>")
    for metric in page.metrics:
        groups: dict[str, dict[str, dict[str, Any]]] = {}
        key, _ = page.primary(metric)
        for label, run, system in page.rows:
            for group, blocks in run.summary["systems"][system].get("groups", {}).items():
                if metric in blocks:
                    groups.setdefault(label, {})[group] = blocks[metric]["values"].get(key, {})
        if groups and max(len(g) for g in groups.values()) > 1:
            out.append(f'<div class="fig"><h3>{_e(metric)} by group</h3>'
                       f"{figures.group_bars(metric, groups, _scale(metric))}</div>")
    return out


def _words(extra: dict[str, Any]) -> str:
    """The reference beside the transcript, S/I/D marked from jiwer's alignment."""
    import jiwer

    ref, hyp = str(extra.get("normalized_ref", "")), str(extra.get("normalized_hyp", ""))
    unit = extra.get("unit", "word")
    r = list(ref) if unit == "char" else ref.split()
    h = list(hyp) if unit == "char" else hyp.split()
    join = "" if unit == "char" else " "
    if not r:
        return f'<div class="words">ref: <span class=muted>(empty)</span><br>asr: <ins>{_e(join.join(h))}</ins></div>'
    if not h:
        return f'<div class="words">ref: <del>{_e(join.join(r))}</del><br>asr: <span class=muted>(nothing)</span></div>'
    out = (jiwer.process_characters if unit == "char" else jiwer.process_words)(join.join(r), join.join(h))
    ref_parts, hyp_parts = [], []
    for chunk in out.alignments[0]:
        rs, hs = r[chunk.ref_start_idx:chunk.ref_end_idx], h[chunk.hyp_start_idx:chunk.hyp_end_idx]
        if chunk.type == "equal":
            ref_parts.append(_e(join.join(rs)))
            hyp_parts.append(_e(join.join(hs)))
        elif chunk.type == "substitute":
            ref_parts.append(f'<span class="sub">{_e(join.join(rs))}</span>')
            hyp_parts.append(f'<span class="sub">{_e(join.join(hs))}</span>')
        elif chunk.type == "delete":
            ref_parts.append(f"<del>{_e(join.join(rs))}</del>")
        elif chunk.type == "insert":
            hyp_parts.append(f"<ins>{_e(join.join(hs))}</ins>")
    return f'<div class="words">ref: {join.join(ref_parts)}<br>asr: {join.join(hyp_parts)}</div>'


class AudioLinks:
    """`<audio>` sources: relative links from the page to the files, or embedded (--embed-audio)."""

    def __init__(self, out_file: Path, embed: bool):
        self.base = out_file.resolve().parent
        self.embed = embed

    def player(self, path: Path | None, label: str) -> str:
        if path is None or not Path(path).is_file():
            return f"<span class=muted>{_e(label)}: no file</span>"
        if self.embed:
            src = "data:audio/wav;base64," + base64.b64encode(Path(path).read_bytes()).decode()
        else:
            src = Path(os.path.relpath(Path(path).resolve(), self.base)).as_posix()
        return f'<audio controls preload="none" src="{_e(src)}" title="{_e(label)}"></audio>'


def _task_items(page: Page) -> tuple[dict[str, Any], str]:
    """The task's items (for prompt and reference audio), or a note why they are not shown."""
    from bench import registry

    spec = page.runs[0].summary["spec"]["task"]
    try:
        task = registry.create("task", spec["name"], **spec.get("options", {}))
        return {it.id: it for it in task.items()}, ""
    except Exception as exc:  # a task not on this machine: the page still shows the outputs
        return {}, f"prompt and reference audio are not shown: task '{spec['name']}' cannot be loaded here ({exc})"


def _drilldown_section(page: Page, links: AudioLinks) -> list[str]:
    items, note = _task_items(page)
    labels = [label for label, _, _ in page.rows]
    ordered = page.items()
    worst = {item: max((v for label in labels
                        if (v := page.value(label, item, "wer", with_failures=True)) is not None), default=float("nan"))
             for item in ordered}
    if "wer" in page.metrics:
        ordered = sorted(ordered, key=lambda i: (-(worst[i]) if worst[i] == worst[i] else float("inf"), i))
    # The page opens in worst-WER-first order (the most used view); the first option says so.
    first = sorted(range(len(page.metrics)), key=lambda k: page.metrics[k] != "wer")
    sort_options = "".join(f'<option value="sort{k}">worst {_e(page.metrics[k])} first</option>' for k in first)
    system_options = "".join(f'<option value="{_e(label)}">{_e(label)}</option>' for label in labels)
    out = ["<h2>Items</h2>"]
    if note:
        out.append(f"<p class=muted>{_e(note)}</p>")
    out.append('<div class="controls" id="controls" hidden>filter <input id="filter" placeholder="item id or text"> '
               f'order <select id="order">{sort_options}<option value="id">item id</option></select> '
               f'system <select id="only"><option value="">all</option>{system_options}</select></div>')
    head = "".join(f"<th>{_e(m)}</th>" for m in page.metrics)
    out.append(f'<table id="items"><thead><tr><th>item / system</th><th>audio</th><th>text / transcript</th>{head}'
               "</tr></thead>")
    for item in ordered:
        task_item = items.get(item)
        text = task_item.text if task_item else next(
            (rec.get("extra", {}).get("normalized_ref", "") for label in labels
             if (rec := page.score(label, item, "wer"))), "")
        attrs = ""
        for k, m in enumerate(page.metrics):  # data-sortK: how bad the item's worst system is on metric K
            _, higher = page.primary(m)
            values = [v for label in labels if (v := page.value(label, item, m, with_failures=True)) is not None]
            badness = (-min(values) if higher else max(values)) if values else None
            attrs += f' data-sort{k}="{"" if badness is None else f"{badness:.6g}"}"'
        search = _e(f"{item} {text}".lower())
        out.append(f'<tbody class="item" data-id="{_e(item)}" data-search="{search}"{attrs}>')
        players = ""
        if task_item is not None:
            if task_item.prompt is not None:
                players += "prompt " + links.player(task_item.prompt.audio_path, f"prompt of {item}") + "<br>"
            if task_item.reference_path is not None:
                players += "reference " + links.player(task_item.reference_path, f"reference of {item}")
        out.append(f'<tr class="head"><td><b>{_e(item)}</b></td><td>{players}</td><td class="text">{_e(text)}</td>'
                   + "<td></td>" * len(page.metrics) + "</tr>")
        for label, run, system in page.rows:
            gen = page.generation(label, item)
            if gen is None:
                continue
            if gen["status"] == "ok":
                path = Path(gen["audio"]) if Path(gen["audio"]).is_absolute() else run.folder / gen["audio"]
                audio = links.player(path, f"{label}: {item}")
            else:
                audio = f'<span class="bad">failed: {_e(gen["reason"])}</span>'
            wer = page.score(label, item, "wer")
            words = _words(wer["extra"]) if wer and wer["failure"] is None and "normalized_ref" in wer.get("extra", {}) \
                else ""
            cells = []
            for m in page.metrics:
                rec = page.score(label, item, m)
                if rec is None:
                    cells.append("<td>&ndash;</td>")
                elif rec["failure"] is not None:
                    cells.append(f'<td class="bad">{_e(rec["failure"])}</td>')
                else:
                    key, _ = page.primary(m)
                    v = rec["values"].get(key)
                    cells.append(f"<td>{format_number(v, _scale(m), 2)}</td>")
            out.append(f'<tr class="sys" data-system="{_e(label)}"><td>{_e(label)}</td><td>{audio}</td>'
                       f'<td class="text">{words}</td>{"".join(cells)}</tr>')
        out.append("</tbody>")
    out.append("</table>")
    return out


def _provenance_section(page: Page) -> list[str]:
    out = ["<h2>Provenance</h2>"]
    for run in page.runs:
        s = run.summary
        env = s["environment"]
        flags = " ".join(env.get("cpu_flags", [])) or "instruction sets not recorded"  # they pick int8 kernels
        out.append(f"<h3>run <code>{_e(run.folder.name)}</code></h3><ul>"
                   f"<li>schema {_e(s['schema_version'])}, harness {_e(s.get('harness_version'))}, commit "
                   f"<code>{_e(s.get('harness_commit') or 'unknown')}</code>, created {_e(s.get('created'))}</li>"
                   f"<li>spec <code>{_e(s.get('spec_digest', '')[:12])}</code>, records digest "
                   f"<code>{_e(s.get('records_digest', '')[:12])}</code> (verified)</li>"
                   f"<li>machine: {_e(env.get('cpu'))} ({_e(flags)}), {_e(env.get('cpu_count'))} cores, {_e(env.get('ram_gb'))} GB "
                   f"RAM, GPUs: {_e(', '.join(env.get('gpus', [])) or 'none')}; Python {_e(env.get('python'))}</li>")
        out += [f"<li>evaluator <b>{_e(m)}</b>: <code>{_e(rev)}</code></li>" for m, rev in s["evaluators"].items()]
        out += [f'<li class="bad">unavailable: <b>{_e(m)}</b>: {_e(why)}</li>'
                for m, why in s.get("unavailable_metrics", {}).items()]
        out.append("</ul>")
    return out


def build(paths: Sequence[str | Path], out_file: Path, embed_audio: bool = False) -> str:
    from bench.results import load_run

    page = Page([load_run(p) for p in paths])
    links = AudioLinks(out_file, embed_audio)
    runs = ", ".join(f"<code>{_e(r.folder.name)}</code>" for r in page.runs)
    parts = ["<!doctype html><html lang=en><meta charset=utf-8>",
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_e(page.task)}: {len(page.rows)} systems</title><style>{STYLE}</style>",
             f"<h1>Task {_e(page.task)}</h1><p>Runs: {runs}. {len(page.items())} items, {len(page.rows)} systems.</p>"]
    parts += _summary_table(page)
    parts += _significance_section(page)
    parts += _figures_section(page)
    parts += _drilldown_section(page, links)
    parts += _provenance_section(page)
    parts.append(f"<script>{SCRIPT}</script></html>")
    return "\n".join(parts) + "\n"


def write(paths: str | Path | Sequence[str | Path], out: str | Path | None = None, embed_audio: bool = False) -> Path:
    """Write the page; default file: <run>/report.html for one run, ./report.html for several."""
    from bench.jsonio import write_text_atomic

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    from reports.sweep import is_sweep

    if any(is_sweep(Path(p)) for p in paths):
        from reports.sweep import build as sweep_page

        if len(paths) != 1:
            raise BenchError("a sweep folder is reported on its own page: give one sweep folder")
        target = Path(out) if out else Path(paths[0]) / "analysis" / "report.html"
        write_text_atomic(target, sweep_page(Path(paths[0])))
        return target
    if out:
        target = Path(out)
    elif len(paths) == 1:
        first = Path(paths[0])
        target = (first if first.is_dir() else first.parent) / "report.html"
    else:
        target = Path("report.html")
    write_text_atomic(target, build(paths, target, embed_audio))
    return target

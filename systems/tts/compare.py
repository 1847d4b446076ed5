"""`bench tts-compare`: our three families beside ground truth and the vocoder's ceiling, and the
papers' ablations in miniature, each from one command; tables written for the README.

  bench tts-compare                    families x tasks (tts-seen, tts-unseen, tts-hard, librivox-mini),
                                       beside ground truth, the vocoder's ceiling and flite
  bench tts-compare --ablation flow    NFE {4, 8, 16, 32} x sway {0, -1}, guidance {0, 1, 2} (tts-seen)
  bench tts-compare --ablation nar     decoding steps {4, 8, 16, 25} (tts-seen)
  bench tts-compare --ablation ar      temperature x top-k, with the no_stop rate (tts-hard)
  bench tts-compare --ablation acoustic  the token families' acoustic stage: the flow decoder
                                       (CosyVoice) vs their own finer codebooks (VALL-E NAR, MaskGCT) (tts-seen)
  bench tts-compare --ablation dev     the token families' sampling settings on the development set
                                       (tts-dev): NAR steps, AR temperature x top-k and its stream
                                       window. Defaults are chosen here, never on a test set.

Every number comes from ordinary `bench run` folders (resumable, cached; --out, default runs/).
SIM is reported twice for the zero-shot tasks: to the item's own prompt (same voice), and to the
prompt of an item in another voice (the next item, in id order, whose voice differs): a system
that clones must be closer to its own prompt. Tables go to benchmarks/results/tts/<name>.md and,
with --readme, into README.md between the markers `<!-- tts:<name>:start -->` and `...:end -->`
(one section per task: compare-tts-seen, compare-tts-unseen, compare-tts-hard, compare-librivox-mini).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from bench.errors import BenchError

FAMILIES = ("tiny-ar", "tiny-nar", "tiny-flow")
# flite (kal, one fixed voice) is the non-cloning baseline: its SIM to its own prompt should be no
# higher than to another voice's. The order is `make demo`'s, so librivox-mini's run is the demo's.
SYSTEMS = ("ground-truth", "vocoder-ceiling", *FAMILIES, "flite")
TASKS = ("tts-seen", "tts-unseen", "librivox-mini", "tts-hard")
RESULTS = Path("benchmarks/results/tts")
ABLATIONS = ("flow", "nar", "ar", "acoustic", "dev")


def _nar_steps_rows() -> dict[str, dict[str, Any]]:
    """MaskGCT's decoding-steps rows (the NAR ablation, and part of the development-set grid)."""
    return {f"tiny-nar@steps{steps}": {"steps": steps} for steps in (4, 8, 16, 25)}


def _ar_sampling_rows() -> dict[str, dict[str, Any]]:
    """Temperature x top-k rows (the AR ablation, and part of the development-set grid)."""
    return {f"tiny-ar@temp{round(temperature * 10):02d}-k{top_k}": {"temperature": temperature, "top_k": top_k}
            for temperature in (0.7, 1.0) for top_k in (10, 50)}


def ablation_grid(kind: str) -> tuple[str, list[str], dict[str, dict[str, dict[str, Any]]]]:
    """(task, systems, {system: options}) of an ablation; each variant a NAME@LABEL row."""
    rows: dict[str, dict[str, Any]] = {}
    if kind == "flow":
        for nfe in (4, 8, 16, 32):
            for sway in (0.0, -1.0):
                rows[f"tiny-flow@nfe{nfe}-sway{int(sway)}"] = {"nfe": nfe, "sway": sway, "guidance": 2.0}
        for guidance in (0.0, 1.0):
            rows[f"tiny-flow@nfe16-sway-1-cfg{int(guidance)}"] = {"nfe": 16, "sway": -1.0, "guidance": guidance}
        return "tts-seen", list(rows), rows
    if kind == "nar":
        rows = _nar_steps_rows()
        return "tts-seen", list(rows), rows
    if kind == "ar":
        rows = _ar_sampling_rows()
        return "tts-hard", list(rows), rows
    if kind == "acoustic":
        for family in ("tiny-ar", "tiny-nar"):
            for acoustic in ("decoder", "codebooks"):
                rows[f"{family}@{acoustic}"] = {"acoustic": acoustic}
        return "tts-seen", list(rows), rows
    if kind == "dev":
        rows = {**_nar_steps_rows(), **_ar_sampling_rows(),
                "tiny-ar@temp10-k50-ctx96": {"temperature": 1.0, "top_k": 50, "stream_context": 96}}
        return "tts-dev", list(rows), rows
    raise BenchError(f"unknown ablation {kind!r}: {', '.join(ABLATIONS)}")


def run_task(task: str, systems: Sequence[str], options: dict[str, dict[str, Any]], out: Path,
             metrics: Sequence[str] | None, timeout: float, retry_failed: bool = False) -> Any:
    """A `bench run` of the task's protocol metrics (or `metrics`)."""
    from bench.runner import Run, RunOptions

    opts = RunOptions(out_root=out, metric_names=list(metrics) if metrics else None, system_options=options,
                      timeout_s=timeout, retry_failed=retry_failed)
    run = Run(list(systems), task, opts)
    print(f"{task}: {run.folder}", file=sys.stderr)
    run.execute()
    return run


def other_voice_sim(run: Any, systems: Sequence[str]) -> dict[str, dict[str, Any]]:
    """SIM of each output to the prompt of the next item (id order) in another voice."""
    from bench import registry
    from bench.audio import read_audio, validate
    from bench.contracts import MetricInput
    from bench.errors import BadAudio
    from bench.results import latest, read_generations
    from bench.stats import describe

    items = sorted(run.items, key=lambda it: it.id)
    voices = {it.id: it.tags.get("voice") or it.tags.get("speaker") for it in items}
    partner = {}
    for k, it in enumerate(items):
        for step in range(1, len(items)):
            other = items[(k + step) % len(items)]
            if voices[other.id] != voices[it.id]:
                partner[it.id] = other
                break
    metric = registry.create("metric", "sim")
    metric.load()
    gens = latest(read_generations(run.folder), "system", "item_id")
    out = {}
    for system in systems:
        inputs = []
        for it in items:
            g = gens.get((system, it.id))
            if not g or g["status"] != "ok" or it.id not in partner:
                continue
            try:
                hyp = validate(read_audio(run.folder / g["audio"])).resampled(16000)
            except BadAudio:
                continue
            prompt = read_audio(partner[it.id].prompt.audio_path).resampled(16000)
            inputs.append(MetricInput(item_id=it.id, hypothesis=hyp, prompt=prompt))
        values = [o.values["sim"] for o in metric.score_batch(inputs) if o.failure is None] if inputs else []
        out[system] = describe(values, seed=run.opts.seed)
    return out


def _cell(entry: dict[str, Any] | None, scale: float = 1.0, digits: int = 3) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    mean = entry["mean"] * scale
    if entry.get("ci_low") is None:
        return f"{mean:.{digits}f}"
    half = (entry["ci_high"] - entry["ci_low"]) * scale / 2
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def _value(summary: dict[str, Any], system: str, metric: str) -> dict[str, Any] | None:
    entry = summary["systems"].get(system, {}).get("metrics", {}).get(metric)
    return entry["values"][entry["primary"]] if entry else None


def relation_sims(summary: dict[str, Any], systems: Sequence[str]) -> tuple[dict, dict]:
    """librivox-mini pairs each target with a same-speaker and a cross-speaker prompt: SIM per relation."""
    own, other = {}, {}
    for system in systems:
        groups = summary["systems"].get(system, {}).get("groups", {})
        for key, target in (("prompt_relation=same-speaker", own), ("prompt_relation=cross-speaker", other)):
            entry = groups.get(key, {}).get("sim")
            target[system] = entry["values"]["sim"] if entry else None
    return own, other


def table(summary: dict[str, Any], systems: Sequence[str], cross: dict[str, dict[str, Any]] | None,
          own: dict[str, Any] | None = None) -> str:
    present = [s for s in systems if s in summary["systems"]]
    has_mos = any(_value(summary, s, "distillmos") for s in present)
    has_packet = any(summary["systems"][s]["performance"].get("first_packet_s_p50") is not None for s in present)
    head = ["system", "WER %", "SIM (own prompt)"]
    if cross is not None:
        head.append("SIM (other voice's prompt)")
    head += ["DistillMOS"] * has_mos + ["RTF p50 / p95"] + ["first packet s"] * has_packet + ["failures"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for system in present:
        entry = summary["systems"][system]
        perf = entry["performance"]
        fails = perf["n_failed"]
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(perf["failure_reasons"].items()))
        own_sim = own.get(system) if own is not None else _value(summary, system, "sim")
        row = [f"`{system}`", _cell(_value(summary, system, "wer"), 100, 1), _cell(own_sim)]
        if cross is not None:
            row.append(_cell(cross.get(system)))
        if has_mos:
            row.append(_cell(_value(summary, system, "distillmos"), 1, 2))
        row.append(f"{perf['rtf_p50']:.3f} / {perf['rtf_p95']:.3f}" if perf.get("rtf_p50") is not None else "n/a")
        if has_packet:
            row.append(f"{perf['first_packet_s_p50']:.2f}" if perf.get("first_packet_s_p50") is not None else "-")
        row.append(f"{fails}/{perf['n_items']}" + (f" ({reasons})" if reasons else ""))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_readme_section(readme: Path, name: str, text: str) -> None:
    start, end = f"<!-- tts:{name}:start -->", f"<!-- tts:{name}:end -->"
    content = readme.read_text(encoding="utf-8")
    if start not in content or end not in content:
        raise BenchError(f"{readme} has no markers {start} ... {end} for this table")
    before, rest = content.split(start, 1)
    _, after = rest.split(end, 1)
    from bench.jsonio import write_text_atomic

    write_text_atomic(readme, before + start + "\n" + text.strip() + "\n" + end + after)


def _write_section(name: str, text: str, readme: Path | None) -> None:
    (RESULTS / f"{name}.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    if readme:
        write_readme_section(readme, name, text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench tts-compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ablation", choices=ABLATIONS, help="run one ablation instead of the comparison")
    parser.add_argument("--tasks", default=",".join(TASKS), help="tasks of the comparison")
    parser.add_argument("--metrics", help="comma-separated metrics (default: each task's protocol)")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="run folders")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--retry-failed", action="store_true",
                        help="synthesise again the items that failed (e.g. after fixing a crash), as bench run does")
    parser.add_argument("--readme", type=Path, help="write the tables into this README between its markers")
    args = parser.parse_args(argv)
    from bench.results import load_run

    RESULTS.mkdir(parents=True, exist_ok=True)
    sections: dict[str, str] = {}
    if args.ablation:
        task, systems, options = ablation_grid(args.ablation)
        run = run_task(task, systems, options, args.out, ("wer", "sim"), args.timeout, args.retry_failed)
        summary = load_run(run.folder).summary
        lines = [f"Task `{task}` ({len(run.items)} items), run folder `{run.folder.name}`.", "",
                 table(summary, systems, None)]
        sections[f"ablation-{args.ablation}"] = "\n".join(lines)
    else:
        for task in args.tasks.split(","):
            run = run_task(task, SYSTEMS, {}, args.out, args.metrics.split(",") if args.metrics else None,
                           args.timeout, args.retry_failed)
            summary = load_run(run.folder).summary
            own = None
            if task == "librivox-mini":
                own, cross = relation_sims(summary, SYSTEMS)
            else:
                cross = other_voice_sim(run, SYSTEMS) if task != "tts-hard" else None
                (RESULTS / f"cross-voice-sim-{task}.json").write_text(json.dumps(cross, indent=1))
            text = f"**{task}** ({len(run.items)} items, run `{run.folder.name}`)\n\n{table(summary, SYSTEMS, cross, own)}\n"
            # Each task's table is written as soon as it is done (a long comparison keeps what finished).
            _write_section(f"compare-{task}", text, args.readme)
    for name, text in sections.items():
        _write_section(name, text, args.readme)
    return 0

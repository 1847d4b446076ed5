"""`--wandb`: log a finished run or sweep to Weights & Biases, from its stored results.

A run: its spec (plus harness version and commit, evaluator revisions, machine) as the config; per
system and metric the mean and 95 % CI as summary values; one table row per system and item with
status, failure reason, each metric's value, the ASR transcript and, for TTS, the audio. A sweep:
its spec as the config, the records as a table, the analysis figures (frontier per phase and
length) as images and the safe-sparsity rows as a table.

Everything is read back through bench.results (validated, the summary checked against its records)
after the run finished, so what wandb shows is what the run folder holds. Without a configured API
key wandb runs offline (WANDB_MODE=offline) and says where the files are (`wandb sync` uploads
them later). wandb is an optional dependency: `pip install wandb`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from bench.errors import BenchError, Unavailable

MAX_AUDIO_ROWS = 500  # beyond this, the table links to the run folder instead of carrying audio


def _wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise Unavailable("--wandb needs the wandb package: pip install wandb") from None
    return wandb


def _mode() -> str:
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY") or (Path.home() / ".netrc").is_file() and "api.wandb.ai" in \
            (Path.home() / ".netrc").read_text(errors="replace"):
        return "online"
    return "offline"


def _start(wandb: Any, project: str, name: str, config: dict[str, Any], kind: str, directory: Path) -> Any:
    mode = _mode()
    if mode == "offline":
        print("note: no wandb API key configured: logging offline (upload later with `wandb sync`)", file=sys.stderr)
    return wandb.init(project=project, name=name, config=config, job_type=kind, mode=mode, dir=str(directory),
                      reinit="finish_previous")


def log_run(folder: Path, project: str = "speechbench") -> Path:
    """Log a run folder; returns the wandb run's local directory."""
    from bench.results import load_run

    run = load_run(folder)
    wandb = _wandb()
    s = run.summary
    config = {"spec": s["spec"], "spec_digest": s.get("spec_digest"), "harness_version": s.get("harness_version"),
              "harness_commit": s.get("harness_commit"), "evaluators": s["evaluators"],
              "environment": s["environment"], "records_digest": s.get("records_digest")}
    handle = _start(wandb, project, run.folder.name, config, "run", run.folder)
    metrics = list(s["evaluators"])
    for system, entry in s["systems"].items():
        for metric, block in entry["metrics"].items():
            for value, d in block["values"].items():
                for stat in ("mean", "ci_low", "ci_high"):
                    if d.get(stat) is not None:
                        handle.summary[f"{system}/{metric}.{value}/{stat}"] = d[stat]
            handle.summary[f"{system}/{metric}/n_failed"] = block["n_failed"]
        perf = entry["performance"]
        for key in ("rtf_p50", "rtf_p95", "first_packet_s_p50", "peak_rss_mb"):
            if perf.get(key) is not None:
                handle.summary[f"{system}/{key}"] = perf[key]
    scores = run.latest_scores()
    gens = run.latest_generations()
    with_audio = len(gens) <= MAX_AUDIO_ROWS
    columns = ["system", "item_id", "status", "reason", *metrics, "transcript"] + (["audio"] if with_audio else [])
    table = wandb.Table(columns=columns)
    values = {(system, metric): run.item_values(system, metric, with_failures=False)
              for system in s["systems"] for metric in metrics}  # a failed item's cell stays empty
    for (system, item), gen in sorted(gens.items()):
        row: list[Any] = [system, item, gen["status"], gen.get("reason")]
        row += [values.get((system, metric), {}).get(item) for metric in metrics]
        wer = scores.get((system, item, "wer"))
        row.append((wer or {}).get("extra", {}).get("transcript"))
        if with_audio:
            audio = None
            if gen["status"] == "ok":
                path = Path(gen["audio"]) if Path(gen["audio"]).is_absolute() else run.folder / gen["audio"]
                if path.is_file():
                    audio = wandb.Audio(str(path), caption=f"{system}: {item}")
            row.append(audio)
        table.add_data(*row)
    handle.log({"items": table})
    directory = Path(handle.dir).parent
    handle.finish()
    return directory


def log_sweep(folder: Path, project: str = "speechbench") -> Path:
    """Log a sweep folder (its records and, when analysed, its figures and safe-sparsity rows)."""
    from bench.jsonio import read_json
    from bench.sweep import load_records

    wandb = _wandb()
    spec, records = load_records(folder)
    handle = _start(wandb, project, Path(folder).name, {"spec": spec}, "sweep", Path(folder))
    if records:
        columns = sorted({k for r in records for k, v in r.items() if isinstance(v, (str, int, float, bool))})
        table = wandb.Table(columns=columns)
        for r in records:
            table.add_data(*[r.get(c) for c in columns])
        handle.log({"records": table})
    analysis = Path(folder) / "analysis"
    images = {p.stem: wandb.Image(str(p)) for p in sorted(analysis.glob("*.png"))} if analysis.is_dir() else {}
    if images:
        handle.log(images)
    safe = analysis / "safe_sparsity.json"
    if safe.is_file():
        rows = read_json(safe)
        rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
        if isinstance(rows, list) and rows and isinstance(rows[0], dict):
            columns = sorted({k for r in rows for k, v in r.items() if isinstance(v, (str, int, float, bool))})
            table = wandb.Table(columns=columns)
            for r in rows:
                table.add_data(*[r.get(c) for c in columns])
            handle.log({"safe_sparsity": table})
    handle.summary["n_records"] = len(records)
    directory = Path(handle.dir).parent
    handle.finish()
    return directory


def log(kind: str, folder: Path, project: str) -> None:
    """The CLI's --wandb: log, and never lose a finished run to a logging problem."""
    try:
        where = (log_run if kind == "run" else log_sweep)(folder, project)
        print(f"wandb: logged {folder} ({where})", file=sys.stderr)
    except BenchError:
        raise
    except Exception as exc:  # the results are safe on disk; say what failed and how to retry
        raise BenchError(f"wandb logging failed ({type(exc).__name__}: {exc}); the results in {folder} are "
                         f"complete: run the same command again with --wandb to log them") from exc

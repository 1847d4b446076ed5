"""The results store's one reader: every record read back is validated, every summary is checked
against the records it was computed from. The runner (on resume), `bench report`, and everything
later that reads results (leaderboard, gate, wandb) read through here, so a malformed, tampered
or stale file is refused the same way everywhere, with a message naming file, line and fix.

Records (one JSON object a line, bench.jsonio):
  generations.jsonl  {system, item_id, status: ok|failed, reason, audio, detail, synth_s, duration_s,
                      rtf, first_packet_s, peak_rss_mb[, peak_gpu_mb, threads]}
  scores.jsonl       {system, item_id, metric, values: {name: number}, extra: {...}, failure[, cached]}
A score's values must be finite and inside the range its metric declares (`Metric.value_range`).

A summary carries `records_digest` (of the records it was computed from, independent of their
order in the files) and `checksum` (of its own content). `load_run` recomputes both and checks
the summary's internal consistency: a changed number, a changed or added record, or a summary
from an older schema is refused.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench.errors import BadResultFile, BenchError
from bench.jsonio import canonical, read_json, read_jsonl_numbered

RERUN = ("run the same `bench run` (or `bench score`) command again: it re-summarises from the stored "
         "records without re-running anything")

_NUMBER = (int, float)


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)


def _fail(path: Path, line: int, message: str) -> BadResultFile:
    return BadResultFile(f"{path} line {line}: {message}; the file is corrupt or was edited: restore it, "
                         "or delete the run folder to start over")


def _require(path: Path, line: int, rec: dict[str, Any], key: str, check: Callable[[Any], bool],
             what: str, optional: bool = False) -> None:
    if key not in rec:
        if optional:
            return
        noun = {"generations": "generation", "scores": "score", "records": "sweep"}.get(path.stem, path.stem)
        raise _fail(path, line, f"not a {noun} record (no '{key}'; keys: {', '.join(sorted(rec)) or 'none'})")
    if not check(rec[key]):
        raise _fail(path, line, f"'{key}' must be {what}, got {rec[key]!r:.80}")


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _str_or_none(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _nonneg_or_none(v: Any) -> bool:
    return v is None or (_is_number(v) and v >= 0)


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def read_generations(folder: Path) -> list[dict[str, Any]]:
    """Validated generation records of a run folder, in file order."""
    path = Path(folder) / "generations.jsonl"
    out = []
    for line, rec in read_jsonl_numbered(path):
        _require(path, line, rec, "system", _str, "a string")
        _require(path, line, rec, "item_id", _str, "a string")
        _require(path, line, rec, "status", lambda v: v in ("ok", "failed"), '"ok" or "failed"')
        _require(path, line, rec, "audio", _str_or_none, "a path or null")
        _require(path, line, rec, "reason", _str if rec.get("status") == "failed" else _str_or_none,
                 "a failure reason" if rec.get("status") == "failed" else "null or a string")
        _require(path, line, rec, "detail", _str, "a string", optional=True)
        _require(path, line, rec, "audio_sha256", _str_or_none, "a sha256 or null", optional=True)
        for key in ("synth_s", "duration_s", "rtf", "first_packet_s", "peak_rss_mb", "peak_gpu_mb"):
            _require(path, line, rec, key, _nonneg_or_none, "a finite number >= 0 or null", optional=True)
        _require(path, line, rec, "threads", lambda v: v is None or _positive_int(v), "a thread count >= 1 or null",
                 optional=True)
        if rec["status"] == "ok" and not rec["audio"]:
            raise _fail(path, line, "a generation with status ok names no audio file")
        out.append(rec)
    return out


def metric_classes(names: set[str]) -> dict[str, Any]:
    """Metric classes by name, for their declared value ranges (None for a metric this
    installation does not know: its values are still checked to be finite)."""
    from bench import registry

    found: dict[str, Any] = {}
    for name in names:
        try:
            found[name] = registry.get_class("metric", name)
        except BenchError:
            found[name] = None
    return found


def read_scores(folder: Path) -> list[dict[str, Any]]:
    """Validated score records of a run folder, in file order."""
    path = Path(folder) / "scores.jsonl"
    numbered = read_jsonl_numbered(path)
    classes = metric_classes({r["metric"] for _, r in numbered if isinstance(r.get("metric"), str)})
    out = []
    for line, rec in numbered:
        _require(path, line, rec, "system", _str, "a string")
        _require(path, line, rec, "item_id", _str, "a string")
        _require(path, line, rec, "metric", _str, "a string")
        _require(path, line, rec, "values", lambda v: isinstance(v, dict), "an object")
        _require(path, line, rec, "failure", _str_or_none, "null or a failure reason")
        _require(path, line, rec, "extra", lambda v: isinstance(v, dict), "an object", optional=True)
        _require(path, line, rec, "cached", lambda v: isinstance(v, bool), "true or false", optional=True)
        _require(path, line, rec, "audio_sha256", _str, "a sha256", optional=True)
        if rec["failure"] is None and not rec["values"]:
            raise _fail(path, line, "a score that is not a failure holds no values")
        cls = classes.get(rec["metric"])
        for name, value in rec["values"].items():
            if not _is_number(value):
                raise _fail(path, line, f"{rec['metric']} value '{name}' must be a finite number, got {value!r:.80}")
            if cls is not None:
                low, high = cls.value_range(name)
                if not low <= value <= high:
                    raise _fail(path, line, f"{rec['metric']} value '{name}' = {value} is outside the metric's "
                                            f"range [{low}, {high}]")
        out.append(rec)
    return out


def failure_value(metric: str) -> float | None:
    """The value a failed item counts as in the metric's mean (WER: 1.0), None if it declares none
    or this installation does not know the metric."""
    cls = metric_classes({metric}).get(metric)
    return None if cls is None else cls.failure_value


def primary_value(block: dict[str, Any]) -> str:
    """The name of a summary metric block's headline value."""
    return block.get("primary") or next(iter(block.get("values", {})), "")


def latest(records: list[dict[str, Any]], *key: str) -> dict[tuple, dict[str, Any]]:
    """The last record per key (a retried item's later record supersedes the earlier one)."""
    return {tuple(r[k] for k in key): r for r in records}


def records_digest(generations: list[dict[str, Any]], scores: list[dict[str, Any]]) -> str:
    """sha256 of the records, independent of their order in the files."""
    lines = sorted(f"g{canonical(r)}" for r in generations) + sorted(f"s{canonical(r)}" for r in scores)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def summary_checksum(summary: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in summary.items() if k != "checksum"}).encode()).hexdigest()


def seal(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with its checksum (the last key)."""
    body = {k: v for k, v in summary.items() if k != "checksum"}
    return {**body, "checksum": summary_checksum(body)}


@dataclass
class RunResults:
    """One run folder, read and checked: its summary, spec and validated records."""

    folder: Path
    summary: dict[str, Any]
    generations: list[dict[str, Any]]
    scores: list[dict[str, Any]]

    @property
    def task(self) -> str:
        return str(self.summary["spec"]["task"]["name"])

    @property
    def systems(self) -> list[str]:
        return list(self.summary["systems"])

    def latest_scores(self) -> dict[tuple, dict[str, Any]]:
        return latest(self.scores, "system", "item_id", "metric")

    def latest_generations(self) -> dict[tuple, dict[str, Any]]:
        return latest(self.generations, "system", "item_id")

    def item_values(self, system: str, metric: str, *, with_failures: bool = True) -> dict[str, float]:
        """Item id -> the metric's headline value for one system. A failed item counts with the
        metric's failure value (as in its mean) when with_failures and the metric declares one;
        otherwise it is left out."""
        block = self.summary["systems"].get(system, {}).get("metrics", {}).get(metric)
        if not block:
            return {}
        key = primary_value(block)
        fail = failure_value(metric) if with_failures else None
        out = {}
        for (s, item, m), rec in self.latest_scores().items():
            if s != system or m != metric:
                continue
            if rec["failure"] is None and key in rec["values"]:
                out[item] = float(rec["values"][key])
            elif rec["failure"] is not None and fail is not None:
                out[item] = float(fail)
        return out


def load_run(path: str | Path) -> RunResults:
    """Read a run folder (or its summary.json) and check everything; BadResultFile if anything is off."""
    from bench.spec import SCHEMA_VERSION

    path = Path(path)
    if not path.exists():
        raise BenchError(f"{path} does not exist: give a run folder (runs/<task>-<hash>) or its summary.json")
    folder = path if path.is_dir() else path.parent
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise BenchError(f"{folder} has no summary.json: it is not a run folder, or the run has not "
                         "finished (run the same `bench run` command again to finish it)")
    summary = read_json(summary_path)
    source = str(summary_path)
    if not isinstance(summary, dict):
        raise BadResultFile(f"{source}: a summary must be a JSON object")
    missing = [k for k in ("schema_version", "spec", "systems", "evaluators", "environment") if k not in summary]
    if missing:
        raise BadResultFile(f"{source}: not a run summary (missing {', '.join(missing)})")
    if summary["schema_version"] != SCHEMA_VERSION:
        raise BadResultFile(f"{source}: schema version {summary['schema_version']!r}; this harness reads "
                            f"{SCHEMA_VERSION} -> {RERUN}")
    if summary.get("checksum") != summary_checksum(summary):
        raise BadResultFile(f"{source} was changed after it was written (its checksum does not match its "
                            f"content) -> {RERUN}")
    generations, scores = read_generations(folder), read_scores(folder)
    if summary.get("records_digest") != records_digest(generations, scores):
        raise BadResultFile(f"{source} does not match the records in {folder} (generations.jsonl or "
                            f"scores.jsonl changed since it was written) -> {RERUN}")
    check_consistency(summary, scores, source)
    return RunResults(folder, summary, generations, scores)


def check_consistency(summary: dict[str, Any], scores: list[dict[str, Any]], source: str) -> None:
    """Counts equal the records; each mean inside its own interval; failures add up."""
    if not isinstance(summary["systems"], dict):
        raise BadResultFile(f"{source}: 'systems' must be an object")
    counted: dict[tuple[str, str], set[str]] = {}
    for (system, item, metric) in latest(scores, "system", "item_id", "metric"):
        counted.setdefault((system, metric), set()).add(item)
    for system, entry in summary["systems"].items():
        for metric, block in entry.get("metrics", {}).items():
            where = f"{source}: {system} / {metric}"
            n = len(counted.get((system, metric), ()))
            if block.get("n_items") != n:
                raise BadResultFile(f"{where}: n_items {block.get('n_items')} but {n} score records -> {RERUN}")
            if sum(block.get("failure_reasons", {}).values()) != block.get("n_failed"):
                raise BadResultFile(f"{where}: failure reasons do not add up to n_failed -> {RERUN}")
            _check_blocks(where, block)
        for group, blocks in entry.get("groups", {}).items():
            for metric, block in blocks.items():
                _check_blocks(f"{source}: {system} / {group} / {metric}", block)


def _check_blocks(where: str, block: dict[str, Any]) -> None:
    for name, d in block.get("values", {}).items():
        mean, low, high = d.get("mean"), d.get("ci_low"), d.get("ci_high")
        if mean is not None and low is not None and high is not None and not low - 1e-9 <= mean <= high + 1e-9:
            raise BadResultFile(f"{where}: the mean of '{name}' ({mean}) lies outside its own interval "
                                f"[{low}, {high}] -> {RERUN}")


def load_runs(folders: list[Path], log: list[str]) -> list[RunResults]:
    """Every run folder directly under the given directories, read and checked; each folder's
    outcome goes to `log` ('ok', or 'REFUSED' with the reason: a refused folder is never used)."""
    runs = []
    for root in folders:
        if not Path(root).is_dir():
            raise BenchError(f"results folder {root} does not exist")
        for folder in sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                runs.append(load_run(folder))
                log.append(f"ok       {folder.name}")
            except BenchError as exc:
                log.append(f"REFUSED  {folder.name}: {exc}")
    return runs


def _unit_or_none(v: Any) -> bool:
    return v is None or (_is_number(v) and 0.0 <= v <= 1.0)


def read_sweep_records(folder: Path) -> list[dict[str, Any]]:
    """Validated records of a sweep folder (records.jsonl): each evaluation's model, task, length,
    sample, phase, method and compression, and either a failure or a score and realised sparsity
    in [0, 1]. A torn last line is left to the sweep's own resume, which cuts it."""
    path = Path(folder) / "records.jsonl"
    out = []
    for line, rec in read_jsonl_numbered(path, repair_tail=False):
        for key in ("model", "task", "sample_id", "method"):
            _require(path, line, rec, key, _str, "a string")
        _require(path, line, rec, "length", _positive_int, "a positive integer")
        _require(path, line, rec, "phase", lambda v: v in ("dense", "prefill", "decode"), "dense, prefill or decode")
        _require(path, line, rec, "compression", lambda v: _is_number(v) and v >= 1, "a number >= 1")
        _require(path, line, rec, "failure", _str_or_none, "null or a failure reason")
        if rec["failure"] is None:
            _require(path, line, rec, "score", lambda v: _is_number(v) and 0.0 <= v <= 1.0, "a number in [0, 1]")
        _require(path, line, rec, "sparsity", _unit_or_none, "null or a number in [0, 1]", optional=True)
        _require(path, line, rec, "seconds", _nonneg_or_none, "a finite number >= 0 or null", optional=True)
        out.append(rec)
    return out

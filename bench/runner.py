"""The task runner: generate with each system, score with each metric, summarise.

Layout of a run folder (addressed by the spec hash, see bench.spec):
    spec.json            the frozen spec (written first; a resume checks it matches)
    generations.jsonl    one record per (system, item): audio path, timings, memory, or failure
    scores.jsonl         one record per (system, item, metric): values, or failure reason
    summary.json         aggregates with CIs, failure counts, performance, environment
    audio/<system>/<item_id>.wav
A run killed at any moment resumes from the records: finished items are neither redone nor
duplicated (records are keyed by system+item and system+item+metric).
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import registry
from bench.audio import Audio, validate, write_audio_atomic
from bench.contracts import Metric, Task, TTSItem
from bench.errors import BadAudio, BenchError, SpecMismatch, Unavailable
from bench.evaluators import sha256_file
from bench.executor import ExecutorOptions
from bench.jsonio import JsonlAppender, read_json, write_json_atomic
from bench.results import latest, read_generations, read_scores
from bench.scoring import AudioMemo, ScoreCache, ScoreJob, score_metric
from bench.spec import RunSpec, items_digest
from bench.worker import DEFAULT_TIMEOUT_S, LOAD_TIMEOUT_S, LoadFailed, LoadTimeout, SystemWorker, warmup_item

AUDIO_DIR_SYSTEM_PREFIX = "audio-dir:"
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]")


def safe_filename(item_id: str) -> str:
    """Item ids become file names; anything outside [A-Za-z0-9._-] is replaced (ids stay in records)."""
    name = _SAFE_ID.sub("_", item_id)
    return name if name not in ("", ".", "..") else f"_{name}"


@dataclass
class RunOptions:
    out_root: Path
    seed: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S
    load_timeout_s: float = LOAD_TIMEOUT_S
    batch_size: int = 16
    limit: int | None = None
    use_cache: bool = True
    retry_failed: bool = False
    warmup: bool = True
    progress: bool = True
    metric_names: list[str] | None = None  # None = the task protocol's metrics
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    system_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)
    audio_dir: Path | None = None  # `bench score`: read outputs from here instead of generating
    executor: ExecutorOptions = field(default_factory=ExecutorOptions)  # where the work runs (not in the spec)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, leave=False)


def load_task(name: str, options: dict[str, Any], limit: int | None) -> tuple[Task, list[TTSItem]]:
    task = registry.create("task", name, **options)
    avail = task.availability()
    if not avail.ok:
        raise Unavailable(f"task '{name}' is unavailable: {avail.message()}")
    items = task.items()
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise BenchError(f"task '{name}' has duplicate item ids (e.g. {dupes}); ids must be unique")
    if not items:
        raise BenchError(f"task '{name}' has no items")
    if limit is not None:
        items = items[:limit]
    return task, items


def build_metrics(task: Task, opts: RunOptions) -> tuple[list[Metric], dict[str, str]]:
    """Metrics to run, and the unavailable ones with their reason (protocol metrics only).

    A metric the user asked for by name that cannot run is an error; a protocol metric that cannot
    run is reported as unavailable in the summary and console, never silently dropped."""
    explicit = opts.metric_names is not None
    names = opts.metric_names if explicit else list(task.protocol.metrics)
    metrics, unavailable = [], {}
    for name in names:
        try:
            cls = registry.get_class("metric", name)
        except BenchError as exc:
            if explicit:
                raise
            unavailable[name] = str(exc)  # a broken plug-in: reported like any unavailable metric
            continue
        options = dict(opts.metric_options.get(name, {}))
        if "text" in cls.needs:
            options.setdefault("normalizer", task.protocol.normalizer)
        metric = cls(**options)
        avail = metric.availability()  # a classmethod, or an instance method when options matter
        if not avail.ok:
            if explicit:
                raise Unavailable(f"metric '{name}' is unavailable: {avail.message()}")
            unavailable[name] = avail.message()
            continue
        metrics.append(metric)
    return metrics, unavailable


class Run:
    def __init__(self, systems: list[str], task_name: str, opts: RunOptions):
        self.opts = opts
        self.system_names = systems
        self.system_identities = [self._system_identity(s) for s in systems]  # unknown names fail first
        self.task, self.items = load_task(task_name, opts.task_options, opts.limit)
        self.metrics, self.unavailable_metrics = build_metrics(self.task, opts)
        self.spec = RunSpec(
            task=self.task.identity(), systems=tuple(self.system_identities),
            metrics=tuple(m.identity() for m in self.metrics),
            items_digest=items_digest(self.items), n_items=len(self.items), seed=opts.seed,
        )
        self.folder = Path(opts.out_root) / self.spec.folder_name()

    def system_options(self, name: str) -> dict[str, Any]:
        """The options a system is built with: the user's, plus the run's seed for systems that sample."""
        options = dict(self.opts.system_options.get(name, {}))
        if getattr(registry.get_class("system", name), "takes_seed", False):
            options.setdefault("seed", self.opts.seed)
        return options

    def _system_identity(self, name: str) -> dict[str, Any]:
        if name.startswith(AUDIO_DIR_SYSTEM_PREFIX):
            return {"name": name, "family": "external", "revision": "", "license": "",
                    "options": {"audio_dir": str(Path(self.opts.audio_dir).resolve())}}
        cls = registry.get_class("system", name)
        identity = cls(**self.system_options(name)).identity()
        variant = registry.split_variant(name)[1]
        if variant is not None:  # plain names keep their identity (and existing runs their hash)
            identity["variant"] = variant
        return identity

    # ------------------------------------------------------------------ spec
    def _write_or_check_spec(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        spec_path = self.folder / "spec.json"
        if spec_path.exists():
            old = read_json(spec_path)
            if old.get("digest") != self.spec.digest():
                raise SpecMismatch(f"{self.folder} holds a different run spec; use another --out folder")
        else:
            write_json_atomic(spec_path, {"digest": self.spec.digest(), "spec": self.spec.to_dict()})

    # ------------------------------------------------------------------ generation
    def _generation_records(self) -> dict[tuple[str, str], dict[str, Any]]:
        return latest(read_generations(self.folder), "system", "item_id")  # a retry's record supersedes

    def generate(self) -> None:
        done = self._generation_records()
        with JsonlAppender(self.folder / "generations.jsonl") as out:
            for system in self.system_names:
                todo = [it for it in self.items if (system, it.id) not in done
                        or (self.opts.retry_failed and done[(system, it.id)]["status"] != "ok")]
                if not system.startswith(AUDIO_DIR_SYSTEM_PREFIX):
                    if todo:
                        self._synthesize_all(system, todo, out)
                    continue
                changed = self._changed_audio_files(system, done, todo)  # id -> its file's digest now
                if changed:
                    print(f"note: {len(changed)} file(s) in {self.opts.audio_dir} were added, changed or removed "
                          f"since they were scored: scoring them again ({', '.join(list(changed)[:5])}"
                          f"{' ...' if len(changed) > 5 else ''})", file=sys.stderr)
                    todo += [it for it in self.items if it.id in changed]
                if todo:
                    self._collect_audio_dir(system, todo, out, changed)

    def _audio_path(self, system: str, item: TTSItem) -> Path:
        return self.folder / "audio" / safe_filename(system) / f"{safe_filename(item.id)}.wav"

    def unmatched_audio_files(self) -> list[str]:
        """`bench score`: audio files in --audio-dir that match no item id (reported, never ignored)."""
        root = self.opts.audio_dir
        if root is None:
            return []
        expected = set()
        for item in self.items:
            expected.update(f"{safe_filename(item.id)}{ext}" for ext in AUDIO_EXTENSIONS)
            expected.update(f"{item.id}{ext}" for ext in AUDIO_EXTENSIONS)
        return sorted(p.name for p in Path(root).iterdir()
                      if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and p.name not in expected)

    def _audio_dir_file(self, item: TTSItem) -> Path | None:
        """The file in --audio-dir that holds an item's output (<id>.wav/.flac/...), or None."""
        root = self.opts.audio_dir
        assert root is not None
        # An id that names another folder ('../prompts/x') is looked up only by its safe file
        # name, so no file outside the audio folder is ever read.
        plain = Path(item.id).name == item.id and item.id not in (".", "..")
        found = [root / f"{item.id}{ext}" for ext in AUDIO_EXTENSIONS] if plain else []
        found += [root / f"{safe_filename(item.id)}{ext}" for ext in (".wav", ".flac")]
        return next((p for p in found if p.is_file()), None)

    def _changed_audio_files(self, system: str, done: dict[tuple[str, str], dict[str, Any]],
                             todo: list[TTSItem]) -> dict[str, str | None]:
        """Item ids whose file in --audio-dir is not the one last scored (added, changed, removed),
        with the file's digest now (None: no file): scoring follows the files' contents, not the
        folder's path."""
        queued = {it.id for it in todo}
        changed: dict[str, str | None] = {}
        for item in self.items:
            rec = done.get((system, item.id))
            if rec is None or item.id in queued:
                continue
            path = self._audio_dir_file(item)
            now = sha256_file(path) if path else None
            if now != rec.get("audio_sha256"):
                changed[item.id] = now
        return changed

    def _collect_audio_dir(self, system: str, todo: list[TTSItem], out: JsonlAppender,
                           digests: dict[str, str | None]) -> None:
        """`bench score`: pair files with items by id (<id>.wav/.flac), never by order. `digests`:
        files already hashed (by _changed_audio_files), not read again."""
        root = self.opts.audio_dir
        for item in todo:
            path = self._audio_dir_file(item)
            digest = (digests[item.id] if item.id in digests else sha256_file(path)) if path else None
            rec = {"system": system, "item_id": item.id, "audio": str(path) if path else None,
                   "audio_sha256": digest,
                   "status": "ok" if path else "failed", "reason": None if path else "missing",
                   "detail": "" if path else f"no file named {item.id}.wav (or .flac/.ogg/.mp3) in {root}",
                   "synth_s": None, "duration_s": None, "rtf": None, "first_packet_s": None,
                   "peak_rss_mb": None}
            if path:
                try:
                    from bench.audio import read_audio

                    audio = validate(read_audio(path))
                    rec["duration_s"] = audio.duration
                except BadAudio as exc:
                    rec.update(status="failed", reason=exc.reason, detail=exc.detail)
            out.append(rec)

    def _synthesize_all(self, system: str, todo: list[TTSItem], out: JsonlAppender) -> None:
        options = self.system_options(system)
        avail = registry.create("system", system, **options).availability()
        if not avail.ok:
            # Reported and counted, not crashed on: every item fails with the reason and the fix.
            print(f"warning: system '{system}' is unavailable: {avail.message()}", file=sys.stderr)
            out.extend(self._failed(system, it, "unavailable", avail.message()) for it in todo)
            return
        if self.opts.executor.is_ray:
            self._synthesize_all_on_ray(system, options, todo, out)
            return
        bar = _progress(len(todo), f"generate {system}", self.opts.progress)
        worker = SystemWorker(system, options, timeout_s=self.opts.timeout_s, load_timeout_s=self.opts.load_timeout_s)
        try:
            try:
                worker.start()
            except LoadFailed as exc:
                # A system that cannot load fails every item, each with the reason: nothing is skipped.
                reason = "load_timeout" if isinstance(exc, LoadTimeout) else "load_failed"
                out.extend(self._failed(system, it, reason, str(exc)) for it in todo)
                print(f"error: {exc}", file=sys.stderr)
                return
            if self.opts.warmup:
                # Warm-up: first calls pay for lazy initialisation; RTF is measured after it.
                warm_item = warmup_item(todo[0])
                warm = worker.synthesize(warm_item.text, warm_item.prompt, warm_item)
                if warm.error in ("timeout", "crashed"):
                    worker.start()
            for item in todo:
                out.append(self._synthesize_one(system, worker, item))
                bar.update(1)
        finally:
            worker.stop()
            bar.close()

    def _synthesize_all_on_ray(self, system: str, options: dict[str, Any], todo: list[TTSItem],
                               out: JsonlAppender) -> None:
        """Items as Ray actor calls; records are written here, in the order items finish."""
        from bench.ray_executor import synthesize_all

        bar = _progress(len(todo), f"generate {system} (ray)", self.opts.progress)
        results = synthesize_all(self.opts.executor, system, options, todo, timeout_s=self.opts.timeout_s,
                                 load_timeout_s=self.opts.load_timeout_s, warmup=self.opts.warmup)
        recorded: set[str] = set()
        try:
            for item, res in results:
                out.append(self._synthesis_record(system, item, res))
                recorded.add(item.id)
                bar.update(1)
        except LoadFailed as exc:  # at the start, or a replacement for a lost worker
            reason = "load_timeout" if isinstance(exc, LoadTimeout) else "load_failed"
            out.extend(self._failed(system, it, reason, str(exc)) for it in todo if it.id not in recorded)
            print(f"error: {exc}", file=sys.stderr)
        finally:
            bar.close()

    def _failed(self, system: str, item: TTSItem, reason: str, detail: str) -> dict[str, Any]:
        return {"system": system, "item_id": item.id, "audio": None, "status": "failed", "reason": reason,
                "detail": detail[:2000], "synth_s": None, "duration_s": None, "rtf": None,
                "first_packet_s": None, "peak_rss_mb": None}

    def _synthesize_one(self, system: str, worker: SystemWorker, item: TTSItem) -> dict[str, Any]:
        return self._synthesis_record(system, item, worker.synthesize(item.text, item.prompt, item))

    def _synthesis_record(self, system: str, item: TTSItem, res: Any) -> dict[str, Any]:
        if res.error:
            rec = self._failed(system, item, res.error, res.detail)
            rec["peak_rss_mb"], rec["threads"] = res.peak_rss_mb, res.threads
            return rec
        path = self._audio_path(system, item)
        rec = {"system": system, "item_id": item.id, "audio": str(path.relative_to(self.folder)),
               "status": "ok", "reason": None, "detail": "", "synth_s": res.synth_s,
               "first_packet_s": res.first_packet_s, "peak_rss_mb": res.peak_rss_mb,
               "peak_gpu_mb": res.peak_gpu_mb, "threads": res.threads, "duration_s": None, "rtf": None}
        try:
            if res.sample_rate is None:
                raise BadAudio("empty", "the system returned no audio chunks")
            audio = Audio(res.samples, int(res.sample_rate))
            if audio.samples.size:
                write_audio_atomic(path, audio)  # kept even when invalid, for inspection
            else:
                rec["audio"] = None
            validate(audio)
            rec["duration_s"] = audio.duration
            rec["rtf"] = res.synth_s / audio.duration
        except BadAudio as exc:
            rec.update(status="failed", reason=exc.reason, detail=exc.detail)
        return rec

    # ------------------------------------------------------------------ scoring
    def score(self) -> None:
        gens = self._generation_records()
        # A score stands when it was made from the item's current output (for --audio-dir, the file's
        # content) and, with --retry-failed, when it is not a failure.
        existing = {key for key, rec in latest(read_scores(self.folder), "system", "item_id", "metric").items()
                    if key[:2] in gens and rec.get("audio_sha256") == gens[key[:2]].get("audio_sha256")
                    and not (self.opts.retry_failed and rec["failure"])}
        cache = ScoreCache(enabled=self.opts.use_cache)
        memo = AudioMemo()
        with JsonlAppender(self.folder / "scores.jsonl") as out:
            for metric in self.metrics:
                jobs = []
                for system in self.system_names:
                    for item in self.items:
                        if (system, item.id, metric.name) in existing:
                            continue
                        g = gens.get((system, item.id))
                        if g is None:
                            continue  # generation did not finish (interrupted): scored on resume
                        audio = None
                        if g["status"] == "ok":
                            audio = Path(g["audio"])
                            audio = audio if audio.is_absolute() else self.folder / audio
                        jobs.append(ScoreJob(system, item, audio, None if g["status"] == "ok" else g["reason"],
                                             g.get("audio_sha256")))
                if not jobs:
                    continue
                bar = _progress(len(jobs), f"score {metric.name}", self.opts.progress)
                batches = None
                if self.opts.executor.is_ray:
                    from bench.ray_executor import RayBatches

                    batches = RayBatches(metric, self.opts.executor)
                try:
                    score_metric(metric, jobs, out, cache=cache, memo=memo, batch_size=self.opts.batch_size,
                                 progress=bar.update, batches=batches)
                finally:
                    bar.close()

    # ------------------------------------------------------------------ all
    def execute(self) -> dict[str, Any]:
        from bench.summary import summarize

        self._write_or_check_spec()
        started = time.time()
        self.generate()
        self.score()
        summary = summarize(self, wall_s=time.time() - started)
        write_json_atomic(self.folder / "summary.json", summary)
        return summary

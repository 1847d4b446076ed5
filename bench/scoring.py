"""Scoring: turns generated audio into per-item metric records, in batches, through a cache.

For each metric, every (system, item) without a score record is scored:
  1. a failed generation (missing, silent, NaN, timeout...) becomes a failure record at once;
  2. inputs are read once, validated and resampled to the metric's rate;
  3. the score cache is consulted, keyed by content hashes of the audio and text the metric
     reads plus the metric's identity (evaluator revision and options) - never by path;
  4. the misses are scored in batches with the evaluator loaded once, only if there is a miss.
Records are appended as each batch finishes, so a killed run keeps every finished batch.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from bench.audio import Audio, read_audio, validate
from bench.contracts import Metric, MetricInput, MetricOutput, TTSItem
from bench.errors import BadAudio
from bench.evaluators import bench_home
from bench.jsonio import JsonlAppender, canonical, dumps, read_json, write_json_atomic


class ScoreCache:
    """Content-addressed store of MetricOutputs: <root>/<metric>/<key[:2]>/<key>.json."""

    def __init__(self, root: Path | None = None, enabled: bool = True):
        default = os.environ.get("BENCH_SCORE_CACHE") or bench_home() / "score-cache"
        self.root = Path(root) if root else Path(default)
        self.enabled = enabled

    def _path(self, metric: str, key: str) -> Path:
        return self.root / metric / key[:2] / f"{key}.json"

    def get(self, metric: str, key: str) -> MetricOutput | None:
        if not self.enabled:
            return None
        p = self._path(metric, key)
        if not p.is_file():
            return None
        try:
            d = read_json(p)
            return MetricOutput(values=d["values"], extra=d.get("extra", {}), failure=d.get("failure"))
        except Exception:
            # A damaged cache entry is a miss, not an error: the score is recomputed and rewritten.
            return None

    def put(self, metric: str, key: str, out: MetricOutput) -> None:
        if self.enabled:
            write_json_atomic(self._path(metric, key),
                              {"values": out.values, "extra": out.extra, "failure": out.failure})


@dataclass
class ScoreJob:
    """One (system, item) pair to score; `audio_path` None or `gen_failure` set means it failed."""

    system: str
    item: TTSItem
    audio_path: Path | None
    gen_failure: str | None = None
    audio_sha256: str | None = None  # of the file scored, when the run records it (`bench score`)


class AudioMemo:
    """Reads each audio file once per run (prompts and references repeat across systems)."""

    def __init__(self) -> None:
        self._memo: dict[tuple[str, int], Audio | BadAudio] = {}
        # id -> (the audio, its content hash): each clip is hashed once per run, not once per job
        # and metric. Holding the audio keeps its id from being reused by another object.
        self._hashes: dict[int, tuple[Audio, str]] = {}

    def get(self, path: Path, rate: int) -> Audio:
        key = (str(path), rate)
        if key not in self._memo:
            try:
                self._memo[key] = validate(read_audio(path)).resampled(rate)
            except BadAudio as exc:
                self._memo[key] = exc
        got = self._memo[key]
        if isinstance(got, BadAudio):
            raise got
        return got

    def content_hash(self, audio: Audio | None) -> str | None:
        if audio is None:
            return None
        held = self._hashes.get(id(audio))
        if held is None:
            held = self._hashes[id(audio)] = (audio, audio.content_hash())
        return held[1]


def cache_key(metric: Metric, inp: MetricInput, *, identity: dict[str, Any],
              hash_audio: Callable[[Audio | None], str | None]) -> str:
    """The score cache's key: the metric's identity and the content of every input it reads.
    identity: metric.identity(), computed once per call by the caller (it reads package versions:
    about 1 ms); hash_audio: how to hash a clip (AudioMemo.content_hash, once per clip and run)."""
    material = {
        "metric": identity,
        "hyp": hash_audio(inp.hypothesis),
        "text": inp.text if "text" in metric.needs else None,
        "ref": hash_audio(inp.reference) if "reference" in metric.needs else None,
        "prompt": hash_audio(inp.prompt) if "prompt" in metric.needs else None,
        "language": inp.language,
    }
    return hashlib.sha256(canonical(material).encode()).hexdigest()


def _prepare(metric: Metric, job: ScoreJob, memo: AudioMemo) -> MetricInput | str:
    """The metric's input for a job, or a failure reason string."""
    if job.gen_failure:
        return job.gen_failure
    rate = metric.sample_rate
    try:
        hyp = memo.get(job.audio_path, rate)
    except BadAudio as exc:
        return exc.reason
    item = job.item
    inp = MetricInput(item_id=item.id, hypothesis=hyp, text=item.text, language=item.language)
    if "text" in metric.needs and not (item.text or "").strip():
        return "empty_text"
    if "reference" in metric.needs:
        if item.reference_path is None:
            return "no_reference"
        try:
            inp.reference = memo.get(item.reference_path, rate)
        except BadAudio as exc:
            return f"bad_reference_{exc.reason}"
    if "prompt" in metric.needs:
        if item.prompt is None:
            return "no_prompt"
        try:
            inp.prompt = memo.get(item.prompt.audio_path, rate)
        except BadAudio as exc:
            return f"bad_prompt_{exc.reason}"
    return inp


class LocalBatches:
    """Scores each batch at once, in this process; the evaluator loads at the first batch (only
    when there is a miss). bench.ray_executor.RayBatches is the same interface on Ray actors."""

    def __init__(self, metric: Metric):
        self.metric, self.loaded = metric, False

    def submit(self, tag: Any, inputs: list[MetricInput]) -> list[tuple[Any, Any]]:
        if not self.loaded:
            self.metric.load()
            self.loaded = True
        return [(tag, self.metric.score_batch(inputs))]

    def finish(self) -> list[tuple[Any, Any]]:
        return []

    def close(self) -> None:
        pass


def score_metric(metric: Metric, jobs: list[ScoreJob], out: JsonlAppender, *, cache: ScoreCache,
                 memo: AudioMemo, batch_size: int = 16,
                 progress: Callable[[int], None] | None = None, batches: Any = None) -> dict[str, int]:
    """Scores `jobs` with one metric, appending a record per job to `out`. Returns counters.
    `batches`: where batches are scored (default LocalBatches: here, one at a time)."""
    counts = {"scored": 0, "cached": 0, "failed": 0}
    batches = batches if batches is not None else LocalBatches(metric)
    # Inputs by cache key, pending (not yet sent) and in flight: identical inputs (the same audio
    # and text, e.g. a target that appears with two prompts) are scored once and the result is
    # given to every job that has it.
    pending: dict[str, MetricInput] = {}
    jobs_of: dict[str, list[ScoreJob]] = {}

    def record(job: ScoreJob, res: MetricOutput, cached: bool) -> dict[str, Any]:
        rec = {"system": job.system, "item_id": job.item.id, "metric": metric.name,
               "values": res.values, "extra": res.extra, "failure": res.failure, "cached": cached}
        if job.audio_sha256 is not None:
            rec["audio_sha256"] = job.audio_sha256
        return rec

    def write(finished: list[tuple[Any, Any]]) -> None:
        for keys, results in finished:
            lost = getattr(results, "reason", None)  # the executor lost the batch's worker for good
            if lost is None and len(results) != len(keys):
                raise RuntimeError(f"metric '{metric.name}' returned {len(results)} results for {len(keys)} inputs")
            rows = []
            for i, key in enumerate(keys):
                if lost is None:
                    res = _checked(metric, results[i])
                    cache.put(metric.name, key, res)
                for job in jobs_of.pop(key):
                    if lost is not None:  # never cached: a later run scores it again
                        extra = metric.failure_extra(job.item.text, job.item.language or "en")
                        res = MetricOutput(extra={**extra, "detail": results.detail}, failure=lost)
                    rows.append(record(job, res, False))
                    counts["failed" if res.failure else "scored"] += 1
            out.extend(rows)
            if progress:
                progress(len(rows))

    def flush() -> None:
        if pending:
            keys = list(pending)
            inputs = [pending.pop(k) for k in keys]
            write(batches.submit(keys, inputs))

    identity = metric.identity()  # once: it does not change within a call
    try:
        hits: list[dict[str, Any]] = []
        for job in jobs:
            prepared = _prepare(metric, job, memo)
            if isinstance(prepared, str):
                extra = metric.failure_extra(job.item.text, job.item.language or "en")
                hits.append(record(job, MetricOutput(extra=extra, failure=prepared), False))
                counts["failed"] += 1
                continue
            key = cache_key(metric, prepared, identity=identity, hash_audio=memo.content_hash)
            if key in jobs_of:
                jobs_of[key].append(job)
                continue
            cached = cache.get(metric.name, key)
            if cached is not None:
                hits.append(record(job, cached, True))
                counts["cached"] += 1
                continue
            pending[key] = prepared
            jobs_of[key] = [job]
            if len(pending) >= batch_size:
                flush()
        out.extend(hits)
        if progress and hits:
            progress(len(hits))
        flush()
        write(batches.finish())
    finally:
        batches.close()
    return counts


def _checked(metric: Metric, res: MetricOutput) -> MetricOutput:
    """A value that is NaN/inf is turned into a failure here, so no NaN reaches a result file."""
    import math

    if res.failure:
        return MetricOutput(values={}, extra=res.extra, failure=res.failure)
    bad = [k for k, v in res.values.items() if not isinstance(v, (int, float)) or not math.isfinite(v)]
    if bad:
        return MetricOutput(values={}, extra=res.extra, failure=f"non_finite_{'_'.join(bad)}")
    try:
        dumps(res.extra)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metric '{metric.name}' returned extra data that is not strict JSON: {exc}") from exc
    return MetricOutput(values={k: float(v) for k, v in res.values.items()}, extra=res.extra)

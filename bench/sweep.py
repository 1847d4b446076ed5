"""Sparse-attention sweeps: models x methods x compression ratios x tasks x lengths x phases.

A sweep is a frozen, hashed grid (like a run spec) whose folder holds
    spec.json        the grid and the model identities
    samples/         the generated samples, one JSONL per (model, task, length): what was asked
    records.jsonl    one record per (model, task, length, sample, phase, method, compression), with
                     the prompt's token count as processed (n_context_tokens: length plus any BOS)
    analysis/        written by `analyse`: tables, frontier plot, safe sparsity, scaling-law fit
Each model runs in its own worker process (bench.worker), loaded once; a call that hangs or
crashes costs one record. Records are appended durably, so a killed sweep resumes by key.

Phases: 'prefill' makes the prompt's attention sparse and keeps the answer tokens dense;
'decode' keeps the prompt dense and makes the answer tokens attend through the decode method.
The dense baseline (method 'dense', compression 1) is run once per sample and serves both phases.
A budget a method cannot realise at a length (BadBudget) is a counted failure with its reason.
"""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from bench import __version__, registry
from bench.errors import BenchError, SpecMismatch
from bench.executor import ExecutorOptions
from bench.jsonio import JsonlAppender, canonical, read_json, read_jsonl, write_json_atomic
from bench.worker import CallFailed, SystemWorker

# The Sparse Frontier's grid of compression ratios.
PAPER_COMPRESSIONS = (1.43, 1.67, 2.0, 2.5, 3.33, 5.0, 7.5, 10.0, 15.0, 20.0)
DENSE = "dense"


@dataclass(frozen=True)
class SweepSpec:
    models: tuple[str, ...]
    tasks: tuple[str, ...]
    lengths: tuple[int, ...]
    prefill_methods: tuple[str, ...]
    decode_methods: tuple[str, ...]
    compressions: tuple[float, ...]
    n_samples: int
    seed: int = 0
    mode: str = "teacher-forced"
    # Options of the task generators ({task: {option: value}}) and of the attention methods'
    # structure ({method: {option: value}}, e.g. block size), applied at every compression.
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_identities: tuple[dict[str, Any], ...] = ()
    harness_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def digest(self) -> str:
        return hashlib.sha256(canonical(self.to_dict()).encode()).hexdigest()

    def folder_name(self) -> str:
        return f"sweep-{self.digest()[:12]}"

    def configs(self) -> list[tuple[str, str, float]]:
        """(phase, method, compression) for every sparse configuration, dense baseline first."""
        out = [("dense", DENSE, 1.0)]
        for phase, methods in (("prefill", self.prefill_methods), ("decode", self.decode_methods)):
            out += [(phase, m, c) for m in methods for c in self.compressions]
        return out


def validate_grid(spec: SweepSpec) -> None:
    problems = []
    if not spec.models:
        problems.append("no models")
    if not spec.tasks:
        problems.append("no tasks")
    if not spec.lengths or any(length <= 0 for length in spec.lengths):
        problems.append(f"lengths must be positive token counts, got {list(spec.lengths)}")
    if any(not math.isfinite(c) or c <= 1.0 for c in spec.compressions):
        problems.append(f"compression ratios must be > 1 (C = 1/(1 - sparsity); 1 is the dense baseline, "
                        f"always run), got {list(spec.compressions)}")
    if not spec.compressions:
        problems.append("no compression ratios")
    if not spec.prefill_methods and not spec.decode_methods:
        problems.append("no methods in either phase")
    if DENSE in spec.prefill_methods or DENSE in spec.decode_methods:
        problems.append("'dense' is the baseline and always runs; list only sparse methods")
    if spec.n_samples <= 0:
        problems.append("samples per configuration must be positive")
    stray_tasks = sorted(set(spec.task_options) - set(spec.tasks))
    if stray_tasks:
        problems.append(f"task options for tasks not in the grid: {stray_tasks}")
    stray_methods = sorted(set(spec.method_options) - set(spec.prefill_methods) - set(spec.decode_methods))
    if stray_methods:
        problems.append(f"method options for methods not in the grid: {stray_methods}")
    if any(key == "compression" for opts in spec.method_options.values() for key in opts):
        problems.append("compression is set by the grid (--compressions), not by a method option")
    if spec.mode not in ("teacher-forced", "generate"):
        problems.append(f"mode must be 'teacher-forced' or 'generate', got {spec.mode!r}")
    if problems:
        raise BenchError("bad sweep grid: " + "; ".join(problems))
    validate_methods(spec)


class BadMethod(BenchError):
    """A sweep names an attention method, or a method option, that its models do not have."""


def validate_methods(spec: SweepSpec) -> None:
    """Every method in the phase it is listed for, and every method option by name, type and range,
    against the catalogue each model's class declares (`attention_methods()`): checked before any
    model loads, like model and task names. A model class without a catalogue is not checked."""
    problems: list[str] = []
    for model in spec.models:
        declared = getattr(registry.get_class("system", model), "attention_methods", None)
        if declared is None:
            continue
        for problem in method_problems(spec, declared()):
            if problem not in problems:  # models of one family share a catalogue
                problems.append(problem)
    if problems:
        raise BadMethod("bad sweep methods: " + "; ".join(problems))


def method_problems(spec: SweepSpec, catalogue: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for phase, methods in (("prefill", spec.prefill_methods), ("decode", spec.decode_methods)):
        valid = ", ".join(sorted(m for m, entry in catalogue.items() if phase in entry["phases"] and m != DENSE))
        for method in methods:
            if method == DENSE:
                continue  # reported by validate_grid
            if method not in catalogue:
                problems.append(f"unknown {phase} method '{method}'; {phase} methods: {valid}")
            elif phase not in catalogue[method]["phases"]:
                problems.append(f"'{method}' is a {'/'.join(catalogue[method]['phases'])} method, not a {phase} "
                                f"method; {phase} methods: {valid}")
    for method, options in sorted(spec.method_options.items()):
        if method not in catalogue:
            continue  # an unknown name is reported above (or as an option for a method not in the grid)
        entry = catalogue[method]
        names = ", ".join(sorted(entry["options"])) or "none"
        for key, value in sorted(options.items()):
            if key == "compression":
                continue  # reported by validate_grid
            if key in entry["budget"]:
                problems.append(f"{method}.{key} is the method's own budget; a sweep sets the budget with "
                                f"--compressions (structure options of '{method}': {names})")
            elif key not in entry["options"]:
                problems.append(f"'{method}' has no option '{key}'; its options: {names}")
            else:
                problem = _option_problem(f"{method}.{key}", value, entry["options"][key])
                if problem:
                    problems.append(problem)
    return problems


def _option_problem(name: str, value: Any, declared: dict[str, Any]) -> str | None:
    kind = declared["type"]
    if kind == "choice":
        if value not in declared["choices"]:
            return f"{name} must be one of {', '.join(repr(c) for c in declared['choices'])}, got {value!r}"
        return None
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_number = is_int or (isinstance(value, float) and math.isfinite(value))
    low, high = declared.get("min"), declared.get("max")
    if kind == "int":
        if not is_int or (low is not None and value < low) or (high is not None and value > high):
            bound = f" >= {low}" if high is None else f" in [{low}, {high}]"
            return f"{name} must be an integer{bound}, got {value!r}"
        return None
    if not is_number or (low is not None and value < low) or (high is not None and value > high):
        bound = "" if low is None else (f" >= {low:g}" if high is None else f" in [{low:g}, {high:g}]")
        return f"{name} must be a number{bound}, got {value!r}"
    return None


def record_key(r: dict[str, Any]) -> tuple:
    return (r["model"], r["task"], r["length"], r["sample_id"], r["phase"], r["method"], float(r["compression"]))


@dataclass
class Sweep:
    spec: SweepSpec
    out_root: Path
    timeout_s: float = 900.0
    progress: bool = True
    model_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Models evaluated at once, each in its own worker with cores // jobs math threads. Records
    # do not depend on it (each configuration is scored alone), only wall time does.
    jobs: int = 1
    executor: ExecutorOptions = field(default_factory=ExecutorOptions)  # where evaluations run (not in the spec)

    @property
    def folder(self) -> Path:
        return Path(self.out_root) / self.spec.folder_name()

    def _write_or_check_spec(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "spec.json"
        if path.exists():
            if read_json(path).get("digest") != self.spec.digest():
                raise SpecMismatch(f"{self.folder} holds a different sweep; use another --out folder")
        else:
            write_json_atomic(path, {"digest": self.spec.digest(), "spec": self.spec.to_dict()})

    def run(self) -> Path:
        validate_grid(self.spec)
        self._write_or_check_spec()
        done = frozenset(record_key(r) for r in read_jsonl(self.folder / "records.jsonl"))
        total = len(self.spec.models) * len(self.spec.tasks) * len(self.spec.lengths) * \
            self.spec.n_samples * len(self.spec.configs())
        from tqdm import tqdm

        if not isinstance(self.jobs, int) or self.jobs < 1:
            raise BenchError(f"jobs must be a positive integer; got {self.jobs!r}")
        if self.jobs > 1 and self.executor.is_ray:
            raise BenchError("--jobs is for the local executor; on Ray, --ray-workers sets how many copies of "
                             "each model evaluate at once")
        bar = tqdm(total=total, initial=len(done), desc="sweep", unit="eval", disable=not self.progress,
                   file=sys.stderr, dynamic_ncols=True)
        try:
            # Evaluations take milliseconds: fsync at most once a second (a kill still loses nothing).
            with JsonlAppender(self.folder / "records.jsonl", sync_interval_s=1.0) as out:
                recorder = _Recorder(out, bar)
                if self.jobs == 1:
                    for model in self.spec.models:
                        self._run_model(model, done, recorder)
                else:
                    self._run_parallel(done, recorder)
        finally:
            bar.close()
        from bench.hardware import provenance

        # The spec names what was computed; this says which code and machine computed it (last run).
        write_json_atomic(self.folder / "provenance.json", provenance())
        return self.folder

    def _run_parallel(self, done: frozenset, recorder: "_Recorder") -> None:
        """Models in `jobs` threads, each driving its own worker process."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures = [pool.submit(self._run_model, model, done, recorder) for model in self.spec.models]
            for future in futures:
                future.result()  # re-raises the first model's failure

    def _threads(self) -> int | None:
        import os

        return None if self.jobs == 1 else max(1, (os.cpu_count() or 1) // self.jobs)

    def _run_model(self, model: str, done: frozenset, recorder: "_Recorder") -> None:
        """Every configuration of one model whose key is not in `done` (the records already stored)."""
        if self.executor.is_ray:
            self._run_model_on_ray(model, done, recorder)
            return
        worker = SystemWorker(model, self.model_options.get(model, {}), timeout_s=self.timeout_s,
                              threads=self._threads())
        try:
            worker.start()
        except RuntimeError as exc:
            raise BenchError(f"model '{model}' could not load: {exc}") from exc
        try:
            shape, todo = self._plan(model, worker.call, done)
            for key, sample in todo:
                args, kwargs = self._request(key, sample)
                try:
                    outcome: Any = worker.call("score_sample", *args, **kwargs)
                except CallFailed as exc:
                    outcome = exc
                recorder.append(self._record(key, shape, outcome))
        finally:
            worker.stop()

    def _run_model_on_ray(self, model: str, done: frozenset, recorder: "_Recorder") -> None:
        """The same evaluations as Ray actor calls on several copies of the model; records are
        written here as they finish (their order does not matter: they are keyed)."""
        from bench.ray_executor import SystemPool, WorkerLost
        from bench.worker import LOAD_TIMEOUT_S, LoadFailed

        pool = SystemPool(self.executor, "system", model, self.model_options.get(model, {}),
                          timeout_s=self.timeout_s, load_timeout_s=LOAD_TIMEOUT_S)
        try:
            first = pool.new_actor()
        except LoadFailed as exc:
            raise BenchError(f"model '{model}' could not load: {exc}") from exc

        def call(function: str, *args: Any, **kwargs: Any) -> Any:
            status, value, detail = pool.ray.get(first.call.remote(function, args, kwargs))
            if status != "ok":
                raise CallFailed(value, detail)
            return value

        shape, todo = self._plan(model, call, done)

        def submit(actor: Any, unit: tuple) -> Any:
            args, kwargs = self._request(*unit)
            return actor.call.remote("score_sample", args, kwargs)

        for (key, _), result in pool.map(todo, submit, started=[first]):
            if isinstance(result, WorkerLost):
                outcome: Any = CallFailed(result.reason, result.detail)
            else:
                status, value, detail = result
                outcome = value if status == "ok" else CallFailed(value, detail)
            recorder.append(self._record(key, shape, outcome))

    def _plan(self, model: str, call: Any, done: frozenset) -> tuple[dict[str, Any], list[tuple[tuple, Any]]]:
        """The model's shape and the (key, sample) evaluations not yet in `done`; `call` runs a
        method of the model (in its worker) and raises CallFailed."""
        shape = call("shape").value
        max_context = call("max_context").value
        write_json_atomic(self.folder / "models" / f"{_safe(model)}.json", {**shape, "system_name": model})
        todo = []
        for task in self.spec.tasks:
            for length in self.spec.lengths:
                if length > max_context:
                    raise BenchError(f"length {length} is beyond model '{model}''s context of "
                                     f"{max_context} tokens; drop it from --lengths")
                for sample in self._samples(call, model, task, length):
                    for phase, method, compression in self.spec.configs():
                        key = (model, task, length, sample.id, phase, method, float(compression))
                        if key not in done:
                            todo.append((key, sample))
        return shape, todo

    def _samples(self, call: Any, model: str, task: str, length: int) -> list[Any]:
        """Generated inside the model's process (its tokenizer sets the length); stored for the record."""
        try:
            samples = call("make_samples", task, self.spec.task_options.get(task, {}), length,
                           self.spec.n_samples, self.spec.seed).value
        except CallFailed as exc:
            raise BenchError(f"task '{task}' at {length} tokens for model '{model}': {exc.detail}") from exc
        path = self.folder / "samples" / f"{_safe(model)}__{_safe(task)}__L{length}.jsonl"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            with JsonlAppender(tmp) as out:
                out.extend(s.to_dict() for s in samples)
            tmp.replace(path)
        return samples

    def _request(self, key: tuple, sample: Any) -> tuple[tuple, dict[str, Any]]:
        """The arguments of the model's score_sample call for one evaluation."""
        method, compression = key[5], key[6]
        budget = {} if method == DENSE else {"compression": compression, **self.spec.method_options.get(method, {})}
        return (sample,), {"method": method, "phase": "prefill" if key[4] == "dense" else key[4], "budget": budget,
                           "mode": self.spec.mode}

    def _record(self, key: tuple, shape: dict[str, Any], outcome: Any) -> dict[str, Any]:
        """The record of one evaluation from its CallResult, or the CallFailed it ended in."""
        model, task, length, sample_id, phase, method, compression = key
        record: dict[str, Any] = {"model": model, "params": shape.get("n_params"), "task": task, "length": length,
                                  "sample_id": sample_id, "phase": phase, "method": method,
                                  "compression": compression, "score": None, "correct": None, "sparsity": None,
                                  "prediction": None, "seconds": None, "n_context_tokens": None,
                                  "failure": None, "detail": ""}
        if isinstance(outcome, CallFailed):
            reason = "bad_budget" if outcome.detail.startswith("BadBudget") else outcome.reason
            record.update(failure=reason, detail=outcome.detail[:1000])
            return record
        score = outcome.value
        # n_context_tokens: the prompt as the model processed it (the task's length plus any BOS),
        # which is what the cost model should count.
        record.update(score=float(score.score), correct=int(score.score >= 1.0), sparsity=float(score.sparsity),
                      prediction=score.prediction, seconds=outcome.seconds,
                      n_context_tokens=int(score.n_context_tokens) if score.n_context_tokens else None)
        return record


class _Recorder:
    """Appends a record durably and ticks the progress bar; a lock makes it safe from the threads
    of --jobs."""

    def __init__(self, out: JsonlAppender, bar: Any):
        import threading

        self.out, self.bar = out, bar
        self.lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        with self.lock:
            self.out.append(record)
            self.bar.update(1)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)


def load_records(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    spec_path = Path(folder) / "spec.json"
    if not spec_path.exists():
        raise BenchError(f"{folder} is not a sweep folder (no spec.json)")
    from bench.results import read_sweep_records

    return read_json(spec_path)["spec"], read_sweep_records(Path(folder))


def grid_from_names(models: Iterable[str], **kw: Any) -> SweepSpec:
    """A SweepSpec with model identities resolved through the registry (unknown names fail here)."""
    model_options = kw.pop("model_options", {})
    identities = []
    for m in models:
        cls = registry.get_class("system", m)
        if getattr(cls, "family", "") != "lm":
            raise BenchError(f"'{m}' is not a language model (family '{getattr(cls, 'family', '')}'); "
                             "`bench systems list` marks LMs [lm]")
        identities.append(cls(**model_options.get(m, {})).identity())
    return SweepSpec(models=tuple(models), model_identities=tuple(identities), **kw)

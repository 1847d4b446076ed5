"""The Ray executor: generation items, scoring batches and sweep evaluations as Ray actor calls.

Each system lives in a Ray actor that loads it once and answers item after item; inside the actor
the system still runs in bench.worker's child process, so the per-item timeout, the crash
isolation and the peak-memory reading are exactly the local executor's. Each evaluator (metric)
lives in its own actors, loaded once and fed batch after batch. Results (audio samples, metric
outputs, sweep scores) come back to the driver, which alone appends the records: the run folder
need not be writable from the workers (prompts and references are read by the workers' systems
and by the driver, so they must be at the same path on every node: shared storage).

Faults: a call whose actor dies (killed, out of memory, node lost) is retried on a fresh actor up
to `max_retries` times, then recorded as a failure with reason `worker_lost` and Ray's message.
Finished records are on the driver's disk already, so nothing finished is ever lost.

A system or metric declares what one of its actors needs in its `resources` class attribute
(Ray's num_cpus, num_gpus, memory); Ray places the actors where that is free.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Sequence

from bench.errors import BenchError
from bench.executor import ExecutorOptions

WORKER_LOST = "worker_lost"
_counter = itertools.count()


def ray_module():
    try:
        import ray
    except ImportError:
        raise BenchError("--executor ray needs Ray: pip install -e '.[ray]' (on every node of the cluster)") from None
    return ray


def connect(opts: ExecutorOptions) -> Any:
    """Join the cluster at opts.address, or start a local Ray (this machine's cores) on the spot."""
    ray = ray_module()
    if not ray.is_initialized():
        runtime_env = None
        if opts.address is None:  # a Ray of our own: its workers import what this process imports
            path = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
            runtime_env = {"env_vars": {"PYTHONPATH": path}}
        ray.init(address=opts.address, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING", configure_logging=False, runtime_env=runtime_env)
    return ray


def actor_options(resources: dict[str, float] | None, opts: ExecutorOptions) -> dict[str, Any]:
    """Ray actor options from a plug-in's declared `resources` (num_cpus, num_gpus, memory);
    --ray-cpus-per-worker replaces num_cpus."""
    res = dict(resources or {"num_cpus": 1})
    unknown = sorted(set(res) - {"num_cpus", "num_gpus", "memory"})
    if unknown:
        raise BenchError(f"resources may name num_cpus, num_gpus and memory; got {unknown}")
    res.setdefault("num_cpus", 1)
    if opts.cpus_per_worker is not None:
        res["num_cpus"] = opts.cpus_per_worker
    return res


def pool_size(opts: ExecutorOptions, resources: dict[str, Any], units: int) -> int:
    """Actors to start: --ray-workers, else as many as the cluster's CPUs (or GPUs) hold."""
    if units <= 0:
        return 0
    if opts.workers is not None:
        return min(opts.workers, units)
    ray = ray_module()
    total = ray.cluster_resources()
    fits = [int(total.get("CPU", 1) // max(resources["num_cpus"], 1e-9))]
    if resources.get("num_gpus"):
        fits.append(int(total.get("GPU", 0) // resources["num_gpus"]))
    return max(1, min(min(fits), units))


def _lost_errors() -> tuple[type, ...]:
    from ray import exceptions as rex

    return tuple(getattr(rex, name) for name in ("RayActorError", "WorkerCrashedError", "ObjectLostError",
                                                   "OwnerDiedError", "NodeDiedError") if hasattr(rex, name))


class WorkerLost:
    """What a unit of work ends as when its worker died on every try."""

    def __init__(self, tries: int, error: BaseException):
        import re

        message = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # Ray colours its messages
        self.reason, self.detail = WORKER_LOST, f"the Ray worker died {tries} time(s): {message[:800]}"


class ActorPool:
    """Units of work on at most `capacity` actors, one unit in flight per actor, fed as they come:
    submit() returns the (unit, result) pairs that finished meanwhile, finish() the rest. A unit
    whose actor died goes to a fresh actor up to `max_retries` times, then ends as WorkerLost."""

    def __init__(self, new_actor: Callable[[], Any], capacity: int, call: Callable[[Any, Any], Any],
                 max_retries: int):
        self.ray, self.lost = ray_module(), _lost_errors()
        self.new_actor, self.capacity, self.call, self.max_retries = new_actor, max(1, capacity), call, max_retries
        self.idle: list[Any] = []
        self.running: dict[Any, tuple[Any, Any, int]] = {}  # ObjectRef -> (actor, unit, tries)

    def _launch(self, unit: Any, tries: int) -> None:
        actor = self.idle.pop() if self.idle else self.new_actor()
        self.running[self.call(actor, unit)] = (actor, unit, tries)

    def _collect_one(self) -> list[tuple[Any, Any]]:
        (ref,), _ = self.ray.wait(list(self.running), num_returns=1)
        actor, unit, tries = self.running.pop(ref)
        try:
            result = self.ray.get(ref)
        except self.lost as exc:
            _kill(self.ray, actor)
            if tries < self.max_retries:
                self._launch(unit, tries + 1)
                return []
            return [(unit, WorkerLost(tries + 1, exc))]
        self.idle.append(actor)
        return [(unit, result)]

    def submit(self, unit: Any) -> list[tuple[Any, Any]]:
        done: list[tuple[Any, Any]] = []
        while len(self.running) >= self.capacity:
            done += self._collect_one()
        self._launch(unit, 0)
        return done

    def finish(self) -> list[tuple[Any, Any]]:
        done: list[tuple[Any, Any]] = []
        while self.running:
            done += self._collect_one()
        return done

    def close(self) -> None:
        for actor in self.idle + [a for a, _, _ in self.running.values()]:
            _kill(self.ray, actor)
        self.idle, self.running = [], {}


def map_unordered(new_actor: Callable[[], Any], size: int, units: Iterable[Any],
                  submit: Callable[[Any, Any], Any], max_retries: int) -> Iterator[tuple[Any, Any]]:
    """Runs `submit(actor, unit)` (an ObjectRef) for every unit on `size` actors and yields
    (unit, result) as they finish (ActorPool's retries; WorkerLost for a unit that never ran)."""
    pool = ActorPool(new_actor, size, submit, max_retries)
    try:
        for unit in units:
            yield from pool.submit(unit)
        yield from pool.finish()
    finally:
        pool.close()


def _kill(ray: Any, actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already gone
        pass


def actor_name(kind: str, name: str) -> str:
    """Unique, and findable by prefix (`bench:system:<name>:`), e.g. for a test that kills one."""
    return f"bench:{kind}:{name}:{os.getpid()}:{next(_counter)}"


# --------------------------------------------------------------------------- systems
class SystemHost:
    """A Ray actor's body: one bench.worker.SystemWorker (the system in a child process)."""

    def __init__(self, kind: str, name: str, options: dict[str, Any], timeout_s: float,
                 load_timeout_s: float, threads: int | None):
        from bench.worker import SystemWorker

        self.worker = SystemWorker(name, options, kind=kind, timeout_s=timeout_s, threads=threads,
                                   load_timeout_s=load_timeout_s)

    def start(self, warmup: Any = None) -> tuple[str, str]:
        """('loaded', '') or (load_failed | load_timeout, message); `warmup`: an item synthesised
        once and thrown away, so timings start after lazy initialisation (as locally)."""
        from bench.worker import LoadFailed, LoadTimeout

        try:
            self.worker.start()
        except LoadFailed as exc:
            return ("load_timeout" if isinstance(exc, LoadTimeout) else "load_failed"), str(exc)
        if warmup is not None:
            res = self.synthesize(warmup)
            if res.error in ("timeout", "crashed"):
                self.worker.start()
        return "loaded", ""

    def synthesize(self, item: Any) -> Any:
        return self.worker.synthesize(item.text, item.prompt, item)

    def call(self, function: str, args: tuple, kwargs: dict[str, Any]) -> tuple[str, Any, Any]:
        """('ok', CallResult, None) or ('failed', reason, detail): CallFailed as data."""
        from bench.worker import CallFailed

        try:
            return "ok", self.worker.call(function, *args, **kwargs), None
        except CallFailed as exc:
            return "failed", exc.reason, exc.detail

    def pid(self) -> int:
        return os.getpid()

    def __ray_terminate__(self) -> None:  # graceful exit: stop the child process too
        self.worker.stop()


class SystemPool:
    """Actors of one system: started (loaded) together, replaced when one dies."""

    def __init__(self, opts: ExecutorOptions, kind: str, name: str, options: dict[str, Any], *,
                 timeout_s: float, load_timeout_s: float, warmup: Any = None):
        from bench import registry

        ray = connect(opts)
        self.ray, self.opts = ray, opts
        cls = registry.get_class(kind, name)
        self.resources = actor_options(getattr(cls, "resources", None), opts)
        threads = max(1, int(self.resources["num_cpus"]))
        remote = ray.remote(SystemHost)
        self._make = lambda: remote.options(name=actor_name(kind, name), **self.resources).remote(
            kind, name, options, timeout_s, load_timeout_s, threads)
        self.warmup, self.name = warmup, name

    def new_actor(self) -> Any:
        """A started actor; raises LoadFailed (LoadTimeout for a hang) when the system cannot load."""
        return self.started(1)[0]

    def started(self, size: int) -> list[Any]:
        """`size` actors loading at once (a cluster loads them in parallel); raises LoadFailed
        (LoadTimeout for a hang), with every one of them stopped, when the system cannot load."""
        from bench.worker import LoadFailed, LoadTimeout

        actors = [self._make() for _ in range(size)]
        results = self.ray.get([a.start.remote(self.warmup) for a in actors])
        failed = [(s, m) for s, m in results if s != "loaded"]
        if failed:
            for actor in actors:
                _kill(self.ray, actor)
            status, message = failed[0]
            raise (LoadTimeout if status == "load_timeout" else LoadFailed)(message)
        return actors

    def map(self, units: Sequence[Any], submit: Callable[[Any, Any], Any],
            started: Sequence[Any] = ()) -> Iterator[tuple[Any, Any]]:
        """Runs the units on the pool (`started`: actors already loaded, used first)."""
        size = pool_size(self.opts, self.resources, len(units))
        ready = deque(list(started)[:size])
        for actor in list(started)[size:]:
            _kill(self.ray, actor)
        ready.extend(self.started(size - len(ready)) if size > len(ready) else [])
        first = lambda: ready.popleft() if ready else self.new_actor()  # noqa: E731
        return map_unordered(first, size, units, submit, self.opts.max_retries)


def synthesize_all(opts: ExecutorOptions, system: str, options: dict[str, Any], items: Sequence[Any], *,
                   timeout_s: float, load_timeout_s: float, warmup: bool) -> Iterator[tuple[Any, Any]]:
    """(item, SynthesisResult) as items finish; raises LoadFailed when the system cannot load."""
    from bench.worker import SynthesisResult, warmup_item

    pool = SystemPool(opts, "system", system, options, timeout_s=timeout_s, load_timeout_s=load_timeout_s,
                      warmup=warmup_item(items[0]) if warmup and items else None)
    for item, result in pool.map(items, lambda actor, item: actor.synthesize.remote(item)):
        if isinstance(result, WorkerLost):
            result = SynthesisResult(None, None, None, None, None, result.reason, result.detail)
        yield item, result


# --------------------------------------------------------------------------- metrics
class MetricHost:
    """A Ray actor's body: one metric (evaluator), loaded at its first batch. A metric that fails to
    build raises at that batch, as an error of the run (not as a lost worker to retry)."""

    def __init__(self, cls: type, options: dict[str, Any], threads: int):
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
        self.metric, self.error = None, None
        try:
            self.metric = cls(**options)
        except Exception as exc:  # noqa: BLE001 - raised again by score_batch
            self.error = exc
        self.loaded = False

    def score_batch(self, inputs: list[Any]) -> list[Any]:
        if self.error is not None:
            raise self.error
        if not self.loaded:
            self.metric.load()
            self.loaded = True
        return self.metric.score_batch(inputs)


class RayBatches:
    """Scoring batches of one metric on Ray actors, several in flight (bench.scoring.score_metric
    drives it like the local LocalBatches): submit() returns the batches that finished meanwhile."""

    def __init__(self, metric: Any, opts: ExecutorOptions):
        ray = connect(opts)
        resources = actor_options(getattr(type(metric), "resources", None), opts)
        threads = max(1, int(resources["num_cpus"]))
        remote = ray.remote(MetricHost)
        cls, options = type(metric), dict(metric.options)  # the class travels by reference (module:name)
        make = lambda: remote.options(name=actor_name("metric", metric.name), **resources).remote(  # noqa: E731
            cls, options, threads)
        self.pool = ActorPool(make, pool_size(opts, resources, 1 << 30),
                              lambda actor, unit: actor.score_batch.remote(unit[1]), opts.max_retries)

    def submit(self, tag: Any, inputs: list[Any]) -> list[tuple[Any, Any]]:
        return [(unit[0], result) for unit, result in self.pool.submit((tag, inputs))]

    def finish(self) -> list[tuple[Any, Any]]:
        return [(unit[0], result) for unit, result in self.pool.finish()]

    def close(self) -> None:
        self.pool.close()

"""Runs a system in a child process, so that a system that hangs or crashes costs one item.

The child loads the system once, then answers one request per item. The parent waits with a
timeout; on timeout it kills the child and starts a fresh one (loading again) for the next item.
A crash (segfault, os._exit, MemoryError) is seen as a closed pipe and handled the same way.
Peak memory is read inside the child, so it measures the system, not the evaluators. The child of
a torch system forks from a server that had imported torch (process_context): its peak includes
torch's pages, as it would had it imported torch itself; no other system's figure includes torch.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

# Default per-item limit; a system that needs longer is given --timeout by the user.
DEFAULT_TIMEOUT_S = 300.0
LOAD_TIMEOUT_S = 600.0
# The untimed warm-up synthesises this many words of the first item: first calls pay for lazy
# initialisation (thread pools, allocator, caches), which does not grow with the text, so a short
# text warms a system as well as a whole item does, at a fraction of its cost.
WARMUP_WORDS = 4


@dataclass
class SynthesisResult:
    samples: np.ndarray | None
    sample_rate: int | None
    synth_s: float | None  # wall time of the whole synthesis
    first_packet_s: float | None  # wall time to the first chunk, for streaming systems
    peak_rss_mb: float | None
    error: str | None = None  # failure reason tag: exception, timeout, crashed, bad_output
    detail: str = ""
    peak_gpu_mb: float | None = None  # torch's peak allocated CUDA memory, where the system uses it
    threads: int | None = None  # torch's intra-op threads in the child (None: no torch loaded)


def _torch_threads() -> int | None:
    """torch's intra-op thread count, where the child has torch: the order of its float sums
    depends on it, so a model's output (and a sampled token after it) can change with it."""
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


def warmup_item(item: Any) -> Any:
    """The warm-up request: the first item, cut to its first WARMUP_WORDS words (same prompt)."""
    import dataclasses

    return dataclasses.replace(item, text=" ".join(item.text.split()[:WARMUP_WORDS]) or item.text)


def _peak_gpu_mb() -> float | None:
    import sys

    torch = sys.modules.get("torch")  # only if the system itself imported torch
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def _limit_threads(threads: int | None) -> None:
    """Cap the child's math-library threads before any system imports torch / numpy kernels, so
    several workers share the cores instead of oversubscribing them."""
    if not threads:
        return
    import os

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


# What the fork server imports once, for the workers of systems that run on torch (System.uses_torch).
FORKSERVER_PRELOAD = ("numpy", "torch")


def process_context(kind: str, name: str, threads: int | None) -> Any:
    """How a system's worker process starts. Never a plain fork of the runner (its torch and ONNX
    thread pools would be copied mid-use). A torch system forks from the fork server, which imported
    torch once and never computes, so a worker starts in a fraction of a second instead of importing
    torch again (about 1.5 s here, per system). Everything else, and any worker with a thread cap
    (OpenBLAS reads its cap when numpy is imported), starts a fresh interpreter (spawn)."""
    from bench import registry

    if threads or "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    try:
        uses_torch = bool(getattr(registry.get_class(kind, name), "uses_torch", False))
    except Exception:  # a name that does not resolve fails in the child, with its message, as before
        uses_torch = False
    if not uses_torch:
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    # Read once, when the server starts (with the first torch worker, whose load time includes it).
    ctx.set_forkserver_preload(list(FORKSERVER_PRELOAD))
    return ctx


def _parent_state() -> dict[str, Any]:
    """What a spawned child inherits at its start and a forked-from-server child would not (the
    server's were fixed when it started): the working folder, the environment, the import path."""
    import os

    return {"cwd": os.getcwd(), "environ": dict(os.environ), "path": list(sys.path)}


def _adopt(state: dict[str, Any]) -> None:
    import os

    os.chdir(state["cwd"])
    os.environ.clear()
    os.environ.update(state["environ"])
    sys.path[:] = state["path"]


def _child(conn: Any, kind: str, name: str, options: dict[str, Any], threads: int | None,
           state: dict[str, Any]) -> None:
    import os

    _adopt(state)
    from bench import registry
    from bench.hardware import peak_rss_mb

    # Its own process group: a timeout or a stop kills the system with every process it started
    # (an engine binary, a user's script and whatever that spawned).
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    _limit_threads(threads)
    try:
        system = registry.create(kind, name, **options)
        system.load()
        if threads and "torch" in sys.modules:  # torch may have been imported before the env was set
            sys.modules["torch"].set_num_threads(threads)
        conn.send(("loaded", None))
    except BaseException as exc:  # report the load failure, with its traceback, then stop
        conn.send(("load_failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"))
        return
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        op, payload = request
        if op == "synthesize":
            conn.send(("ok", _synthesize(system, *payload)))
        else:
            conn.send(_call(system, *payload))


def _synthesize(system: Any, text: str, prompt: Any, item: Any) -> SynthesisResult:
    from bench.hardware import peak_rss_mb

    try:
        start = time.perf_counter()
        first = None
        chunks, rate = [], None
        for chunk in system.synthesize_stream(text, prompt, item):
            if first is None:
                first = time.perf_counter() - start
            if rate is not None and chunk.sample_rate != rate:
                raise ValueError(f"chunks changed sample rate {rate} -> {chunk.sample_rate}")
            rate = chunk.sample_rate
            chunks.append(np.asarray(chunk.samples, dtype=np.float32))
        elapsed = time.perf_counter() - start
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return SynthesisResult(samples, rate, elapsed, first if system.streaming else None,
                               peak_rss_mb(), peak_gpu_mb=_peak_gpu_mb(), threads=_torch_threads())
    except Exception as exc:
        return SynthesisResult(None, None, None, None, peak_rss_mb(), failure_reason(exc), f"{type(exc).__name__}: {exc}",
                               threads=_torch_threads())


def describe_exit(proc: Any) -> str:
    """'exit code 3' or 'killed by signal SIGSEGV' for a child that has died (waited for briefly:
    its pipe closes a moment before its exit status is known)."""
    import signal

    proc.join(timeout=5)
    code = proc.exitcode
    if code is None:
        return "exit status unknown: the process is still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def failure_reason(exc: BaseException) -> str:
    """The reason tag a failed synthesis is counted under: the exception's own `reason` attribute
    when it declares one (e.g. an autoregressive model's 'no_stop'), else 'exception'."""
    import re

    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and re.fullmatch(r"[a-z][a-z0-9_]{0,31}", reason) and reason not in _ENGINE_REASONS:
        return reason
    return "exception"


# Tags the engine itself gives; a system may not claim them for its own exceptions.
_ENGINE_REASONS = frozenset({"timeout", "crashed", "missing", "unavailable", "load_failed", "load_timeout"})


def _call(system: Any, method: str, args: tuple, kwargs: dict[str, Any]) -> tuple[str, Any]:
    """Any other method of the system (LM scoring, sample generation): ('ok', CallResult) or
    ('error', 'Type: message'). The exception's type name is kept so callers can tell a budget
    error from a crash of the model."""
    from bench.hardware import peak_rss_mb

    try:
        start = time.perf_counter()
        value = getattr(system, method)(*args, **kwargs)
        return "ok", CallResult(value, time.perf_counter() - start, peak_rss_mb(), _peak_gpu_mb())
    except Exception as exc:
        return "error", f"{type(exc).__name__}: {exc}"


@dataclass
class CallResult:
    value: Any
    seconds: float
    peak_rss_mb: float
    peak_gpu_mb: float | None


class LoadFailed(RuntimeError):
    """A system that could not load (it raised or crashed while loading)."""


class LoadTimeout(LoadFailed):
    """A system that did not finish loading within the load timeout."""


class CallFailed(Exception):
    """A worker call that raised (reason 'exception'), hung ('timeout') or crashed ('crashed')."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def _kill_group(pgid: int | None) -> None:
    import os
    import signal

    if not pgid:
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class SystemWorker:
    """One system in one child process. Use as a context manager."""

    def __init__(self, name: str, options: dict[str, Any] | None = None, *, kind: str = "system",
                 timeout_s: float = DEFAULT_TIMEOUT_S, threads: int | None = None,
                 load_timeout_s: float = LOAD_TIMEOUT_S):
        self.name, self.kind = name, kind
        self.load_timeout_s = load_timeout_s
        self.threads = threads  # math-library threads in the child (None: the libraries' default)
        self.options = dict(options or {})
        self.timeout_s = timeout_s
        self._ctx = process_context(kind, name, threads)
        self._proc: Any = None
        self._conn: Any = None
        self.load_s: float | None = None

    def start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_child, args=(child, self.kind, self.name, self.options, self.threads,
                                                            _parent_state()),
                                       daemon=True, name=f"bench-{self.name}")
        start = time.perf_counter()
        self._proc.start()
        child.close()
        self._conn = parent
        if not self._conn.poll(self.load_timeout_s):
            self._kill()
            raise LoadTimeout(f"system '{self.name}' did not load within {self.load_timeout_s:g} s "
                              "(--load-timeout); its process was killed")
        try:
            status, detail = self._conn.recv()
        except EOFError:
            how = describe_exit(self._proc)
            self.stop()
            raise LoadFailed(f"system '{self.name}' crashed while loading ({how})") from None
        if status != "loaded":
            self.stop()
            raise LoadFailed(f"system '{self.name}' failed to load: {detail}")
        self.load_s = time.perf_counter() - start

    def stop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (OSError, BrokenPipeError):
                pass
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            self._proc.join(timeout=2)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
            _kill_group(self._proc.pid)  # anything the system started and left running
            self._proc = None

    def _request(self, request: tuple) -> tuple[str, Any]:
        """Send one request; ('timeout' | 'crashed', detail) when the child hangs or dies, after
        which the next request starts a fresh child."""
        if self._proc is None:
            self.start()
        try:
            self._conn.send(request)
            if not self._conn.poll(self.timeout_s):
                self._kill()
                return "timeout", f"no result within {self.timeout_s:g} s; the process was killed"
            return self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            how = describe_exit(self._proc) if self._proc is not None else "no process"
            self._kill()
            return "crashed", f"the system process died ({how})"

    def synthesize(self, text: str, prompt: Any, item: Any) -> SynthesisResult:
        status, result = self._request(("synthesize", (text, prompt, item)))
        if status == "ok":
            return result
        return SynthesisResult(None, None, None, None, None, status, result)

    def call(self, function: str, /, *args: Any, **kwargs: Any) -> CallResult:
        """Call `system.<function>(*args, **kwargs)` in the child; raises CallFailed."""
        status, result = self._request(("call", (function, args, kwargs)))
        if status == "ok":
            return result
        raise CallFailed("exception" if status == "error" else status, result)

    def _kill(self) -> None:
        if self._proc is not None:
            _kill_group(self._proc.pid)
            self._proc.kill()
            self._proc.join()
            self._proc = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "SystemWorker":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

"""Where the work of `bench run`, `bench score` and `bench sweep` runs.

`local` (the default): systems in worker processes on this machine, evaluators in this process.
`ray`: the same work as Ray tasks on a Ray cluster (bench.ray_executor; `pip install -e .[ray]`).
Either way the driver alone writes the records, so resume, the score cache, failure counting and
summaries are the same, and a run started with one executor resumes with the other. The executor
is a setting, not part of the spec: it never changes a run's folder or its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.errors import BenchError

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorOptions:
    kind: str = "local"
    # ray: the cluster to join ('auto', 'ray://head:10001'); None starts a local Ray on the spot
    address: str | None = None
    # ray: actors per system or evaluator; None: as many as the cluster's CPUs hold
    workers: int | None = None
    # ray: CPUs (and math threads) per actor, instead of what the system or evaluator declares
    cpus_per_worker: float | None = None
    # ray: a work unit whose worker died is tried again this many times before it counts as failed
    max_retries: int = 2

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise BenchError(f"unknown executor '{self.kind}': use one of {', '.join(EXECUTORS)}")
        if self.workers is not None and self.workers < 1:
            raise BenchError(f"--ray-workers must be at least 1; got {self.workers}")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise BenchError(f"--ray-cpus-per-worker must be above 0; got {self.cpus_per_worker}")
        if self.max_retries < 0:
            raise BenchError(f"max_retries must be >= 0; got {self.max_retries}")
        if self.kind == "local" and (self.address, self.workers, self.cpus_per_worker) != (None, None, None):
            raise BenchError("--ray-address, --ray-workers and --ray-cpus-per-worker need --executor ray")

    @property
    def is_ray(self) -> bool:
        return self.kind == "ray"

    def to_json(self) -> dict[str, Any]:
        if not self.is_ray:
            return {"kind": "local"}
        return {"kind": "ray", "address": self.address, "workers": self.workers,
                "cpus_per_worker": self.cpus_per_worker, "max_retries": self.max_retries}

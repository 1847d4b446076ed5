"""Run specs: a frozen description of what a run computes, hashed to address its output folder.

The hash covers everything that changes numbers: system identities (name, revision, options),
the task (name, version, options, and a digest of its item ids and texts), each metric's identity
(evaluator revision, options), the seed and the harness version. Operational settings that must
not change numbers (batch size, timeouts, progress bars) are recorded in the summary, not hashed.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import __version__
from bench.jsonio import canonical

SCHEMA_VERSION = 2  # 2: summaries carry records_digest and checksum (bench.results)


@dataclass(frozen=True)
class RunSpec:
    task: dict[str, Any]
    systems: tuple[dict[str, Any], ...]
    metrics: tuple[dict[str, Any], ...]
    items_digest: str
    n_items: int
    seed: int = 0
    harness_version: str = __version__
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["systems"] = list(d["systems"])
        d["metrics"] = list(d["metrics"])
        return d

    def digest(self) -> str:
        return hashlib.sha256(canonical(self.to_dict()).encode()).hexdigest()

    def folder_name(self) -> str:
        return f"{self.task['name']}-{self.digest()[:12]}"


def items_digest(items: list[Any]) -> str:
    """Digest of the items' ids, texts, languages and audio paths' names (order-independent)."""
    rows = sorted(
        canonical([it.id, it.text, it.language,
                   it.prompt.text if it.prompt else None,
                   it.prompt.audio_path.name if it.prompt else None,
                   it.reference_path.name if it.reference_path else None])
        for it in items
    )
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()

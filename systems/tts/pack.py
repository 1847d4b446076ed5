"""A corpus' training features in one portable file, for training where the wavs are not.

`bench tts-corpus --pack FILE` writes the training split's cached log-mel (quantised to 8 bits per
band between that band's minimum and maximum, LZMA-compressed: 50.6 MiB for the 2.8-h corpus,
against 560 MB of wavs), the utterance records, the corpus manifest and the durations of an
aligner (`--checkpoints DIR`; default the committed one), as training cached them.
`bench tts-corpus --unpack FILE --out FOLDER` rebuilds a corpus folder from it that `bench train-tts
--corpus FOLDER` reads as it reads the original: the same records and manifest, the caches filled
from the pack. The folder has no wavs (`--check` says so), and its features differ from the
original's by the quantisation (the round-trip error is written into corpus.json); a model trained
from it is not a byte-for-byte rebuild of one trained from the wavs.
"""

from __future__ import annotations

import json
import lzma
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError

PACK_VERSION = "tts-pack-v1"


def _logmel_cache(corpus: Path) -> Path:
    from systems.tts.corpus import load_utterances
    from systems.tts.dataset import logmel_cache_path

    return logmel_cache_path(corpus, load_utterances(corpus, split="train", set_name="train"), "train", "train")


def pack(corpus: Path, out_file: Path, checkpoints: Path | None = None, log=print) -> dict[str, Any]:
    """Pack `corpus` with the aligner durations of the aligner in `checkpoints` (default: the committed)."""
    from bench.jsonio import write_bytes_atomic
    from systems.tts.train import CHECKPOINTS, durations_cache_path

    corpus = Path(corpus)
    cache = _logmel_cache(corpus)
    if not cache.is_file():
        raise BenchError(f"no feature cache at {cache}: train once (bench train-tts) or load the corpus first")
    with np.load(cache) as data:
        ids = sorted(data.files)
        mels = [data[k].astype(np.float32) for k in ids]
    frames = np.concatenate(mels)
    low, high = frames.min(axis=0), frames.max(axis=0)
    scale = np.maximum(high - low, 1e-6) / 255.0
    quantised = np.clip(np.rint((frames - low) / scale), 0, 255).astype(np.uint8)
    error = float(np.sqrt(np.mean((quantised * scale + low - frames) ** 2)))
    log(f"pack: {len(ids)} utterances, {len(frames):,} frames; round-trip rms error {error:.4f} (log-mel units)")
    checkpoints = Path(checkpoints or CHECKPOINTS)
    durations_cache = durations_cache_path(corpus, checkpoints)
    if not durations_cache.is_file():
        raise BenchError(f"no aligner durations cached at {durations_cache}: train a family once with that "
                         f"aligner (bench train-tts --family flow --out {checkpoints})")
    with np.load(durations_cache) as data:
        durations = {durations_cache.name: {k: data[k] for k in data.files}}
    header = {"version": PACK_VERSION, "ids": ids, "lengths": [len(m) for m in mels],
              "low": low.tolist(), "scale": scale.tolist(), "rms_error": round(error, 5),
              "logmel_cache": cache.name,
              "durations": {name: {k: v.tolist() for k, v in d.items()} for name, d in durations.items()},
              "files": {name: (corpus / name).read_text(encoding="utf-8")
                        for name in ("utterances.jsonl", "corpus.json", "MANIFEST.sha256")}}
    blob = json.dumps(header).encode() + b"\n" + quantised.tobytes()
    write_bytes_atomic(out_file, lzma.compress(blob, preset=6))
    log(f"pack: {out_file} ({Path(out_file).stat().st_size / 2**20:.1f} MiB)")
    return header


def unpack(pack_file: Path, out: Path, log=print) -> None:
    from bench.jsonio import write_json_atomic

    try:
        raw = lzma.decompress(Path(pack_file).read_bytes())
        newline = raw.index(b"\n")
        header = json.loads(raw[:newline])
    except (OSError, lzma.LZMAError, ValueError) as err:
        raise BenchError(f"{pack_file} is not a readable {PACK_VERSION} pack ({err}) -> bench tts-corpus --pack FILE") from None
    if not isinstance(header, dict) or header.get("version") != PACK_VERSION:
        raise BenchError(f"{pack_file} is not a {PACK_VERSION} pack")
    quantised = np.frombuffer(raw[newline + 1:], dtype=np.uint8).reshape(-1, len(header["low"]))
    frames = quantised * np.asarray(header["scale"], np.float32) + np.asarray(header["low"], np.float32)
    out = Path(out)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    for name, text in header["files"].items():
        (out / name).write_text(text, encoding="utf-8")
    bounds = np.cumsum([0] + header["lengths"])

    def save(name: str, arrays: dict[str, np.ndarray]) -> None:  # whole or not at all: the trainer trusts caches
        tmp = out / "cache" / f".{name}.tmp.npz"
        np.savez(tmp, **arrays)
        tmp.replace(out / "cache" / name)

    save(header["logmel_cache"],
         {k: frames[a:b].astype(np.float16) for k, a, b in zip(header["ids"], bounds[:-1], bounds[1:])})
    for name, table in header["durations"].items():
        save(name, {k: np.asarray(v, np.int64) for k, v in table.items()})
    info = json.loads(header["files"]["corpus.json"])
    info["unpacked_from"] = {"pack": Path(pack_file).name, "features": "8-bit per band",
                             "rms_error_log_mel": header["rms_error"], "wavs": "absent"}
    write_json_atomic(out / "corpus.json", info)
    log(f"unpack: {len(header['ids'])} utterances -> {out} (features only; no wavs)")

"""The training corpus as arrays: normalised log-mel per utterance, phone ids, durations, tokens.

Features are computed once per corpus and cached beside it (cache/logmel-<revision>.npz, float16),
keyed by utterance id and checked against the corpus' sha256 of each wav, so a changed file is
recomputed, never reused. Durations come from the aligner (systems.tts.aligner) and tokens from the
tokenizer (systems.tts.tokenizer); both are cached the same way, keyed by their checkpoint digests.
"""

from __future__ import annotations

import os
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from bench.errors import BenchError


@dataclass
class Utterance:
    id: str
    voice: str
    text: str
    phones: np.ndarray  # (N,) int64 phone ids
    log_mel: np.ndarray  # (T, N_MELS) float32, not normalised
    flite_durations: np.ndarray | None = None  # (N,) frames per phone from the engine's timings
    durations: np.ndarray | None = None  # (N,) frames per phone from the aligner
    tokens: np.ndarray | None = None  # (T, levels) int64
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(self.log_mel.shape[0])


def timings_to_durations(ends_seconds: Sequence[float], n_frames: int) -> np.ndarray:
    """Phone end times (s) -> frames per phone summing to n_frames, each phone >= 1 frame.

    A frame t covers time t * HOP / SR (centred STFT). Ends beyond the audio (kal16's timings run
    110-122 ms past its wavs) are clipped to the last frame."""
    from systems.tts.features import FRAMES_PER_SECOND

    n = len(ends_seconds)
    if n > n_frames:
        raise BenchError(f"{n} phones cannot fit {n_frames} frames")
    bounds = np.rint(np.asarray(ends_seconds, dtype=np.float64) * FRAMES_PER_SECOND).astype(np.int64)
    bounds[-1] = n_frames
    # Monotone with at least one frame each, and room for the phones after.
    for i in range(n):
        low = (bounds[i - 1] if i else 0) + 1
        high = n_frames - (n - 1 - i)
        bounds[i] = min(max(bounds[i], low), high)
    return np.diff(np.concatenate([[0], bounds])).astype(np.int64)


def _digest(records: Iterable[dict[str, Any]], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for r in records:
        h.update(f"{r['id']}:{r['sha256']};".encode())
    return h.hexdigest()[:16]


def logmel_cache_path(corpus: Path, records: Sequence[dict[str, Any]], split: str, set_name: str) -> Path:
    """Where the features of these records are cached: keyed by the feature revision and the wavs' sha256."""
    from systems.tts.features import FEATURES_REVISION

    return Path(corpus) / "cache" / f"logmel-{FEATURES_REVISION}-{_digest(records, split + set_name)}.npz"


def load_corpus(corpus: Path, *, split: str = "train", set_name: str = "train",
                progress: bool = True, text: str = "phones") -> list[Utterance]:
    """Every utterance of the split with its log-mel (computed once, then read from the cache) and
    its units in the `text` front end (phones: the corpus' own, with Flite's timings where the
    engine printed them; chars, ipa: from the sentence, no timings)."""
    from tqdm import tqdm

    from bench.audio import read_audio
    from systems.tts.corpus import load_utterances
    from systems.tts.features import SAMPLE_RATE, log_mel
    from systems.tts.text import front_end, phone_ids

    corpus = Path(corpus)
    records = load_utterances(corpus, split=split, set_name=set_name)
    if not records:
        raise BenchError(f"the corpus at {corpus} has no {split}/{set_name} utterances -> bench tts-corpus --out {corpus}")
    cache = logmel_cache_path(corpus, records, split, set_name)
    if cache.is_file():
        with np.load(cache) as data:
            mels = {k: data[k].astype(np.float32) for k in data.files}
    else:
        mels = {}
        for r in tqdm(records, desc="log-mel", unit="utt", disable=not progress):
            audio = read_audio(corpus / r["path"])
            if audio.sample_rate != SAMPLE_RATE:
                raise BenchError(f"{r['path']} is at {audio.sample_rate} Hz; the corpus must be {SAMPLE_RATE} Hz")
            mels[r["id"]] = log_mel(audio.samples).T.copy()
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")  # concurrent trainings each write their own
        np.savez(tmp, **{k: v.astype(np.float16) for k, v in mels.items()})
        tmp.replace(cache)
    reader = None if text == "phones" else front_end(text)
    out = []
    for r in records:
        mel = mels[r["id"]]
        ids = phone_ids(r["phones"]) if reader is None else reader.ids(reader.units(r["text"]))
        utt = Utterance(r["id"], r["voice"], r["text"], np.asarray(ids, dtype=np.int64), mel)
        if reader is None and r.get("flite_timings"):
            utt.flite_durations = timings_to_durations(r["flite_timings"], len(mel))
        out.append(utt)
    return out


def expand(values: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """Per-phone values -> per-frame values (each repeated its duration)."""
    return np.repeat(values, durations, axis=0)


def crop_batch(rng: random.Random, utterances: Sequence[Utterance], batch: int, max_frames: int) -> list[tuple[Utterance, int, int]]:
    """`batch` random (utterance, start, end) frame windows of at most max_frames frames."""
    picks = []
    for _ in range(batch):
        utt = utterances[rng.randrange(len(utterances))]
        if utt.frames <= max_frames:
            picks.append((utt, 0, utt.frames))
        else:
            start = rng.randrange(utt.frames - max_frames + 1)
            picks.append((utt, start, start + max_frames))
    return picks


def save_json(path: Path, obj: Any) -> None:
    from bench.jsonio import write_json_atomic

    write_json_atomic(path, obj)


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))

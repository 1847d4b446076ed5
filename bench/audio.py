"""Audio I/O and validation.

Every waveform inside the harness is an `Audio`: mono float32 samples in [-1, 1] and a sample rate.
Reading goes through soundfile; resampling through soxr (torchaudio is not used: see OFFLINE.md).
`validate` turns each kind of unusable audio into a `BadAudio` with a short reason tag, so that
a bad file becomes a counted failure with a clear reason instead of a crash or a silent NaN.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.errors import BadAudio

# Below this RMS (about -80 dBFS) a clip is treated as silence.
SILENCE_RMS = 1e-4
# Outputs shorter than this cannot carry a word; the protocol counts them as failures.
MIN_DURATION_S = 0.1
# Share of samples at full scale above which a clip is reported as clipped.
MAX_CLIPPED_FRACTION = 0.01


@dataclass(frozen=True, eq=False)
class Audio:
    samples: np.ndarray  # shape (n,), float32
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / float(self.sample_rate)

    def content_hash(self) -> str:
        """sha256 of the sample rate and the float32 samples: the key for score caches."""
        h = hashlib.sha256()
        h.update(str(int(self.sample_rate)).encode())
        h.update(np.ascontiguousarray(self.samples, dtype=np.float32).tobytes())
        return h.hexdigest()

    def resampled(self, sample_rate: int) -> "Audio":
        if sample_rate == self.sample_rate:
            return self
        import soxr

        out = soxr.resample(self.samples.astype(np.float32), self.sample_rate, sample_rate, quality="HQ")
        return Audio(np.asarray(out, dtype=np.float32), int(sample_rate))


def to_mono_float(samples: np.ndarray) -> np.ndarray:
    """Any (n,) or (n, channels) array of int or float samples -> (n,) float32 in [-1, 1] scale."""
    x = np.asarray(samples)
    if x.dtype.kind == "i":
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    elif x.dtype.kind == "u":
        info = np.iinfo(x.dtype)
        x = (x.astype(np.float32) - (info.max + 1) / 2) / ((info.max + 1) / 2)
    else:
        x = x.astype(np.float32)
    if x.ndim == 2:
        # Stereo is averaged to mono: the harness scores one channel, and says so in the docs.
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise BadAudio("bad_shape", f"expected a 1-D or 2-D array of samples, got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def read_audio(path: str | os.PathLike) -> Audio:
    """Read a sound file as mono float32. Raises BadAudio when it is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise BadAudio("missing", f"no file at {path}")
    if path.stat().st_size == 0:
        raise BadAudio("empty", f"{path} is an empty file (0 bytes)")
    import soundfile as sf

    try:
        if path.suffix.lower() == ".raw":
            # Headerless 16-bit little-endian mono at 16 kHz (the Sphinx convention).
            data, sr = sf.read(str(path), samplerate=16000, channels=1, subtype="PCM_16",
                               format="RAW", dtype="float32", always_2d=False)
        else:
            data, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise BadAudio("corrupt", f"cannot decode {path}: {exc}") from exc
    return Audio(to_mono_float(data), int(sr))


def validate(audio: Audio, *, min_duration: float = MIN_DURATION_S) -> Audio:
    """Return `audio` if it can be scored, else raise BadAudio with a reason tag.

    Checks, in order: a sane sample rate, non-empty, finite (no NaN/Inf), not too short,
    not silent, and not out of range. Samples slightly beyond [-1, 1] (float outputs of
    vocoders) are a failure too: the evaluators assume [-1, 1] input, and rescaling would
    hide a real defect of the system.
    """
    x = audio.samples
    if not isinstance(audio.sample_rate, (int, np.integer)) or not 1000 <= audio.sample_rate <= 384000:
        raise BadAudio("bad_sample_rate", f"sample rate {audio.sample_rate!r} is not a plausible audio rate")
    if x.ndim != 1:
        raise BadAudio("bad_shape", f"expected mono samples, got shape {x.shape}")
    if x.size == 0:
        raise BadAudio("empty", "the audio has no samples")
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise BadAudio("nan", f"{bad} of {x.size} samples are NaN or infinite")
    if audio.duration < min_duration:
        raise BadAudio("too_short", f"{audio.duration:.3f} s is shorter than the {min_duration} s minimum")
    peak = float(np.max(np.abs(x)))
    if peak > 1.0 + 1e-6:
        raise BadAudio("out_of_range", f"peak amplitude {peak:.3f} is outside [-1, 1]")
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    if rms < SILENCE_RMS:
        raise BadAudio("silent", f"RMS {rms:.2e} is below the silence threshold {SILENCE_RMS:.0e}")
    clipped = float(np.mean(np.abs(x) >= 0.999))
    if clipped > MAX_CLIPPED_FRACTION:
        raise BadAudio("clipped", f"{clipped:.1%} of samples are at full scale")
    return audio


def write_audio_atomic(path: str | os.PathLike, audio: Audio) -> None:
    """Write a 16-bit PCM WAV (or float WAV when out of range) through a temp file and rename."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subtype = "FLOAT" if np.any(np.abs(audio.samples) > 1.0) or not np.all(np.isfinite(audio.samples)) else "PCM_16"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".wav")
    os.close(fd)
    try:
        sf.write(tmp, audio.samples, audio.sample_rate, subtype=subtype, format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""Log-mel features and the weight-free Griffin-Lim vocoder behind a small Vocoder interface.

Features: 16 kHz audio, STFT n_fft 1024 / hop 256 (62.5 frames a second), Hann window, magnitude,
128 HTK-style mel bands 0-8 kHz, natural log of max(mel, 1e-5). Measured on LibriVox speech here:
128 bands through Griffin-Lim keep WER at 1.5 % and speaker cosine 0.986 (80 bands: 3-6 %, 0.95).

Models work on normalised features: (log-mel - mean) / std per band, the statistics of the training
corpus stored with every checkpoint (`FeatureStats`); generated features are clamped to the
training range before vocoding (with guidance, flow outputs have outliers that otherwise make
Griffin-Lim's output near-silent).

A neural vocoder replaces Griffin-Lim by implementing `Vocoder` (log-mel (n_mels, T) -> samples)
and passing it to the systems (option vocoder=module:Class).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 1024
HOP = 256
N_MELS = 128
F_MAX = 8000.0
LOG_FLOOR = 1e-5
FRAMES_PER_SECOND = SAMPLE_RATE / HOP
FEATURES_REVISION = f"logmel-{SAMPLE_RATE}-{N_FFT}-{HOP}-{N_MELS}-htk-v1"


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@functools.lru_cache(maxsize=4)
def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE,
                   f_max: float = F_MAX) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale, peak 1 (no area norm)."""
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(f_max)), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel(samples: np.ndarray) -> np.ndarray:
    """(n,) float32 samples at 16 kHz -> (N_MELS, frames) float32 log-mel; frames = n // HOP + 1."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    spec = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), center=True, return_complex=True).abs()
    mel = torch.from_numpy(mel_filterbank()) @ spec
    return torch.log(mel.clamp_min(LOG_FLOOR)).numpy().astype(np.float32)


@dataclass(frozen=True)
class FeatureStats:
    """Per-band statistics of the training corpus' log-mel frames (stored with each checkpoint)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    low: tuple[float, ...]  # 0.1th percentile per band, after normalisation
    high: tuple[float, ...]  # 99.9th percentile per band, after normalisation

    @classmethod
    def fit(cls, frames: np.ndarray) -> "FeatureStats":
        """frames: (n, N_MELS) log-mel."""
        mean = frames.mean(axis=0)
        std = frames.std(axis=0) + 1e-3
        norm = (frames - mean) / std
        low, high = np.percentile(norm, 0.1, axis=0), np.percentile(norm, 99.9, axis=0)
        return cls(*(tuple(round(float(v), 6) for v in a) for a in (mean, std, low, high)))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FeatureStats":
        return cls(**{k: tuple(float(v) for v in data[k]) for k in ("mean", "std", "low", "high")})

    def normalise(self, log_mel_frames: np.ndarray) -> np.ndarray:
        """(T, N_MELS) log-mel -> normalised."""
        return ((log_mel_frames - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)).astype(np.float32)

    def denormalise(self, normalised: np.ndarray, *, clamp: bool = True) -> np.ndarray:
        """(T, N_MELS) normalised -> log-mel, clamped to the training range first."""
        x = np.asarray(normalised, dtype=np.float32)
        if clamp:
            x = np.clip(x, np.asarray(self.low, np.float32), np.asarray(self.high, np.float32))
        return x * np.asarray(self.std, np.float32) + np.asarray(self.mean, np.float32)


@functools.lru_cache(maxsize=1)
def _mel_pseudo_inverse() -> np.ndarray:
    return np.linalg.pinv(mel_filterbank()).astype(np.float32)


class Vocoder(Protocol):
    """Log-mel (N_MELS, T) in this module's convention -> float32 samples at `sample_rate`."""

    name: str
    revision: str
    sample_rate: int

    def __call__(self, log_mel_spec: np.ndarray) -> np.ndarray: ...


class GriffinLim:
    """Weight-free vocoder: mel -> linear magnitude by non-negative least squares (projected
    pseudo-inverse), then fast Griffin-Lim (momentum 0.99, 32 iterations; 64 were no better)."""

    name = "griffin-lim"
    sample_rate = SAMPLE_RATE

    def __init__(self, iterations: int = 32, momentum: float = 0.99, seed: int = 0):
        self.iterations = int(iterations)
        self.momentum = float(momentum)
        self.seed = int(seed)
        self.revision = f"griffin-lim-{self.iterations}it-m{self.momentum}-seed{self.seed}-{FEATURES_REVISION}"

    def __call__(self, log_mel_spec: np.ndarray) -> np.ndarray:
        import torch

        mel = np.exp(np.asarray(log_mel_spec, dtype=np.float32))
        magnitude = np.maximum(_mel_pseudo_inverse() @ mel, 0.0)
        mag = torch.from_numpy(magnitude.astype(np.float32))
        window = torch.hann_window(N_FFT)
        gen = torch.Generator().manual_seed(self.seed)
        angles = torch.exp(2j * np.pi * torch.rand(mag.shape, generator=gen))
        previous = torch.zeros_like(angles)
        n_samples = (mag.shape[1] - 1) * HOP
        for _ in range(self.iterations):
            audio = torch.istft(mag * angles, N_FFT, HOP, window=window, length=n_samples)
            rebuilt = torch.stft(audio, N_FFT, HOP, window=window, return_complex=True)
            angles = rebuilt - (self.momentum / (1 + self.momentum)) * previous
            previous = rebuilt
            angles = angles / angles.abs().clamp_min(1e-8)
        audio = torch.istft(mag * angles, N_FFT, HOP, window=window, length=n_samples).numpy()
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak > 0.95:  # never hand out-of-range samples to the evaluators
            audio = audio * (0.95 / peak)
        return audio.astype(np.float32)


def load_vocoder(spec: str | None) -> Vocoder:
    """'griffin-lim' (default) or 'module:Class' of a user's vocoder (constructed without arguments)."""
    if not spec or spec == "griffin-lim":
        return GriffinLim()
    import importlib

    from bench.errors import BenchError

    module, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)()
    except (ImportError, AttributeError) as exc:
        raise BenchError(f"vocoder {spec!r} cannot be loaded ({exc}); give module:Class") from None

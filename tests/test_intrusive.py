"""PESQ and STOI (bench.metrics.intrusive): golden values, trimming, failures with reasons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.audio import Audio, read_audio, validate
from bench.contracts import MetricInput
from bench.errors import BenchError
from bench.metrics.intrusive import PESQ, STOI

from tests.speech_data import LIBRIVOX

CLEAN_PATH = LIBRIVOX[1]  # lv0880


@pytest.fixture(scope="module")
def clean() -> Audio:
    return read_audio(CLEAN_PATH)


def with_white_noise(audio: Audio, snr_db: float, seed: int = 1234) -> Audio:
    x = audio.samples
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    noise = np.random.default_rng(seed).standard_normal(len(x)) * rms * 10 ** (-snr_db / 20)
    return validate(Audio((x + noise).astype(np.float32), audio.sample_rate))


@pytest.fixture(scope="module")
def inputs(clean) -> list[MetricInput]:
    return [MetricInput("same", clean, reference=clean),
            MetricInput("snr20", with_white_noise(clean, 20), reference=clean),
            MetricInput("snr0", with_white_noise(clean, 0), reference=clean)]


# metric factory, value key, golden values for (same, snr20, snr0)
GOLDEN = [
    (lambda: PESQ(), "pesq", (4.64389, 1.35980, 1.02198)),
    (lambda: PESQ(mode="nb"), "pesq", (4.54864, 2.57260, 1.33470)),
    (lambda: STOI(), "stoi", (1.0, 0.99168, 0.77846)),
    (lambda: STOI(extended=True), "stoi", (1.0, 0.92613, 0.47336)),
]


@pytest.mark.parametrize("make, key, expected", GOLDEN, ids=["pesq-wb", "pesq-nb", "stoi", "estoi"])
def test_golden_values(inputs, make, key, expected):
    outs = make().score_batch(inputs)
    assert all(o.failure is None for o in outs)
    measured = tuple(o.values[key] for o in outs)
    assert measured == pytest.approx(expected, abs=1e-3)
    assert measured[0] > measured[1] > measured[2]  # more noise, lower score


def test_contracts_and_revisions():
    assert PESQ.needs == STOI.needs == frozenset({"hypothesis", "reference"})
    assert PESQ.primary == "pesq" and STOI.primary == "stoi"
    assert "mode=wb" in PESQ().evaluator_revision() and "mode=nb" in PESQ(mode="nb").evaluator_revision()
    assert STOI().evaluator_revision() != STOI(extended=True).evaluator_revision()
    with pytest.raises(BenchError, match="PESQ mode"):
        PESQ(mode="swb")


def test_lengths_are_trimmed_to_the_shorter(clean):
    first_two_seconds = Audio(clean.samples[:32000].copy(), 16000)
    item = MetricInput("short", first_two_seconds, reference=clean)
    (p,) = PESQ().score_batch([item])
    (s,) = STOI().score_batch([item])
    assert p.values["pesq"] == pytest.approx(4.64389, abs=1e-3)  # identical over the common part
    assert s.values["stoi"] == pytest.approx(1.0, abs=1e-6)
    assert p.extra["trimmed_s"] == pytest.approx((len(clean.samples) - 32000) / 16000, abs=1e-3)


def test_silent_reference_is_a_failure_with_reason(clean):
    silent = Audio(np.zeros_like(clean.samples), 16000)
    for metric in (PESQ(), STOI()):
        (out,) = metric.score_batch([MetricInput("x", clean, reference=silent)])
        assert out.values == {} and out.failure.startswith("bad_reference_silent")


def test_pesq_own_errors_become_failures(clean):
    # PESQ's error for a reference without speech, reached directly (the scorer-level check above
    # catches an all-zero reference first).
    zeros = np.zeros(len(clean.samples))
    out = PESQ()._score_pair(zeros, clean.samples.astype(np.float64))
    assert out.failure == "no_utterances: PESQ: No utterances detected"
    tiny = Audio(clean.samples[8000:11000].copy(), 16000)  # 0.19 s
    (out,) = PESQ().score_batch([MetricInput("tiny", tiny, reference=clean)])
    assert out.failure.startswith("too_short: PESQ")
    (out,) = STOI().score_batch([MetricInput("tiny", tiny, reference=clean)])
    assert out.failure.startswith("too_short: STOI")


def test_missing_reference_and_wrong_rate(clean):
    (out,) = STOI().score_batch([MetricInput("x", clean)])
    assert out.failure.startswith("no_reference")
    at_8k = Audio(clean.samples[::2].copy(), 8000)
    with pytest.raises(ValueError, match="resample to 16000 Hz"):
        PESQ().score_batch([MetricInput("x", at_8k, reference=clean)])

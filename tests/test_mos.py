"""MOS predictors (bench.metrics.mos): golden values on real recordings, noise sensitivity, UTMOS absent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.audio import Audio, read_audio, validate
from bench.contracts import MetricInput
from bench.errors import Unavailable
from bench.metrics.mos import DISTILLMOS_V7, DNSMOS, DNSMOS_ONNX, UTMOS, UTMOS22_STRONG, DistillMOS

from tests.speech_data import CARDS, GOFORWARD, LIBRIVOX

CLEAN = LIBRIVOX[1]  # lv0880
CLIPS = [CLEAN, CARDS[0], GOFORWARD]



def noisy_copy(path: Path, seed: int = 1234) -> Audio:
    """The clip plus white noise of equal power (0 dB SNR), fixed seed; stays within [-1, 1]."""
    x = read_audio(path).samples
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    noise = np.random.default_rng(seed).standard_normal(len(x)) * rms
    return validate(Audio((x + noise).astype(np.float32), 16000))


def golden_inputs() -> list[MetricInput]:
    return [MetricInput(p.stem, read_audio(p)) for p in CLIPS] + [MetricInput("noisy", noisy_copy(CLEAN))]


@pytest.fixture(scope="module")
def bench_home(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("BENCH_HOME", str(tmp_path_factory.mktemp("bench_home")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def dnsmos_outputs(bench_home):
    metric = DNSMOS(threads=1)  # the test machine's cores are shared
    return metric.score_batch(golden_inputs())


@pytest.fixture(scope="module")
def distillmos(bench_home):
    metric = DistillMOS(threads=1)
    metric.load()
    return metric


# --------------------------------------------------------------------------- no model
def test_contracts():
    assert DNSMOS.primary == "ovrl" and DNSMOS.needs == frozenset({"hypothesis"})
    assert DistillMOS.primary == "distillmos" and UTMOS.primary == "utmos"
    for cls, model in ((DNSMOS, DNSMOS_ONNX), (DistillMOS, DISTILLMOS_V7), (UTMOS, UTMOS22_STRONG)):
        assert cls.higher_is_better and cls.sample_rate == 16000 and model in cls.models


def test_import_is_light():
    code = ("import sys, bench.metrics.mos; "
            "print(any(m in sys.modules for m in ('torch', 'onnxruntime', 'distillmos', 'speechmos', 'librosa')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_revisions_pin_weights_without_loading():
    d, m = DNSMOS(), DistillMOS()
    assert "269fbebdb513" in d.evaluator_revision() and "9246480c5856" in d.evaluator_revision()
    assert "b18b3ac60227" in m.evaluator_revision()
    assert not d._loaded and not m._loaded
    # Operational settings do not change numbers, so they stay out of the cache-keying identity.
    assert DistillMOS(batch_size=4, threads=1).identity() == m.identity()


def test_utmos_without_weights_is_unavailable_with_how_to(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_HOME", str(tmp_path))
    monkeypatch.delenv("BENCH_UTMOS_DIR", raising=False)
    availability = UTMOS.availability()
    assert not availability.ok
    message = availability.message()
    assert "UTMOS weights not found" in message
    assert "Blinorot/UTMOS-PyTorch@4f2447e519df" in message and "BENCH_UTMOS_DIR" in message
    with pytest.raises(Unavailable, match="UTMOS weights not found"):
        UTMOS().load()


def test_utmos_rejects_a_wrong_weights_file(monkeypatch, tmp_path):
    (tmp_path / "utmos_state_dict.pt").write_bytes(b"not the UTMOS weights")
    monkeypatch.setenv("BENCH_UTMOS_DIR", str(tmp_path))
    assert "corrupt" in UTMOS.availability().message()
    with pytest.raises(Unavailable, match="corrupt"):
        UTMOS().load()


# --------------------------------------------------------------------------- real models
GOLDEN_DNSMOS = {  # ovrl, sig, bak, p808
    CLIPS[0].stem: (3.01559, 3.56103, 3.55294, 3.30653),
    CLIPS[1].stem: (2.95128, 3.29951, 3.85114, 3.24751),
    CLIPS[2].stem: (3.42804, 3.66671, 4.15008, 3.82832),
    "noisy": (1.54212, 2.61596, 1.63823, 2.22309),
}
GOLDEN_DISTILLMOS = {CLIPS[0].stem: 3.43461, CLIPS[1].stem: 3.81606, CLIPS[2].stem: 3.97368, "noisy": 1.93411}


@pytest.mark.slow
def test_dnsmos_golden_values(dnsmos_outputs):
    for inp, out in zip(golden_inputs(), dnsmos_outputs):
        assert out.failure is None
        measured = tuple(out.values[k] for k in ("ovrl", "sig", "bak", "p808"))
        assert measured == pytest.approx(GOLDEN_DNSMOS[inp.item_id], abs=1e-3), inp.item_id


@pytest.mark.slow
def test_dnsmos_clean_beats_noisy(dnsmos_outputs):
    clean, noisy = dnsmos_outputs[0].values, dnsmos_outputs[3].values
    assert clean["ovrl"] - noisy["ovrl"] > 1.0
    assert clean["bak"] - noisy["bak"] > 1.5  # the background score is what noise hits hardest


@pytest.mark.slow
def test_distillmos_golden_values_and_noise(distillmos):
    outs = distillmos.score_batch(golden_inputs())
    measured = {inp.item_id: out.values["distillmos"] for inp, out in zip(golden_inputs(), outs)}
    assert measured == pytest.approx(GOLDEN_DISTILLMOS, abs=1e-3)
    assert measured[CLEAN.stem] - measured["noisy"] > 1.0


@pytest.mark.slow
def test_distillmos_batching_gives_the_same_numbers(distillmos):
    inputs = [MetricInput(p.stem, read_audio(p)) for p in CLIPS[1:]]  # both shorter than 7.68 s
    one_by_one = [o.values["distillmos"] for o in distillmos.score_batch(inputs)]
    distillmos.batch_size = 2
    try:
        batched = [o.values["distillmos"] for o in distillmos.score_batch(inputs)]
    finally:
        distillmos.batch_size = 1
    assert batched == pytest.approx(one_by_one, abs=1e-5)


@pytest.mark.slow
def test_distillmos_loads_without_torchaudio_and_leaves_no_placeholder(distillmos):
    placeholder = sys.modules.get("torchaudio")
    assert placeholder is None or hasattr(placeholder, "__version__")  # absent, or a real torchaudio
    import distillmos.sqa as sqa

    with pytest.raises(AttributeError, match="torchaudio was not imported"):
        sqa.torchaudio.load  # noqa: B018 - the file-list CLI path is refused with a reason


@pytest.mark.slow
def test_missing_hypothesis_and_wrong_rate(distillmos):
    (out,) = distillmos.score_batch([MetricInput("gone", None)])
    assert out.failure.startswith("missing_hypothesis")
    at_8k = Audio(read_audio(CLIPS[1]).samples[::2].copy(), 8000)
    with pytest.raises(ValueError, match="resample to 16000 Hz"):
        distillmos.score_batch([MetricInput("x", at_8k)])

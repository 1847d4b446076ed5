"""Engine pieces in isolation: strict JSON files, audio validation, specs, registries, stats."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from bench import registry
from bench.audio import Audio, read_audio, validate, write_audio_atomic
from bench.cli import _parse_options
from bench.errors import BadAudio, BadResultFile, BenchError, UnknownName
from bench.jsonio import JsonlAppender, read_json, read_jsonl, write_json_atomic
from bench.spec import RunSpec
from bench.stats import bootstrap_mean_ci, describe, percentile

RATE = 16000


def tone(seconds=1.0, amp=0.3, rate=RATE):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


# ----------------------------------------------------------------------------- jsonio
def test_jsonl_torn_tail_is_dropped_and_cut(tmp_path):
    p = tmp_path / "r.jsonl"
    with JsonlAppender(p) as out:
        out.append({"a": 1})
        out.append({"a": 2})
    with open(p, "ab") as f:
        f.write(b'{"a": 3, "b": ')  # a kill in the middle of a write
    assert read_jsonl(p) == [{"a": 1}, {"a": 2}]
    assert p.read_bytes().endswith(b'{"a":2}\n') or p.read_text().count("\n") == 2
    with JsonlAppender(p) as out:
        out.append({"a": 4})
    assert [r["a"] for r in read_jsonl(p)] == [1, 2, 4]


def test_jsonl_corrupt_middle_line_is_an_error(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(BadResultFile, match="line 2"):
        read_jsonl(p)


def test_strict_json_rejects_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "x.json", {"v": math.nan})
    assert not (tmp_path / "x.json").exists()
    (tmp_path / "y.json").write_text('{"v": NaN}')
    with pytest.raises(BadResultFile):
        read_json(tmp_path / "y.json")


# ----------------------------------------------------------------------------- audio
@pytest.mark.parametrize("samples,reason", [
    (np.zeros(0, np.float32), "empty"),
    (np.zeros(RATE, np.float32), "silent"),
    (tone(0.05), "too_short"),
    (np.where(np.arange(RATE) == 5, np.nan, tone()).astype(np.float32), "nan"),
    (tone() * 4, "out_of_range"),
    (np.clip(tone() * 50, -1, 1), "clipped"),
])
def test_validate_reasons(samples, reason):
    with pytest.raises(BadAudio) as err:
        validate(Audio(samples, RATE))
    assert err.value.reason == reason


def test_validate_rejects_implausible_rate():
    with pytest.raises(BadAudio) as err:
        validate(Audio(tone(), 7))
    assert err.value.reason == "bad_sample_rate"


def test_good_audio_passes_and_hash_is_content_based(tmp_path):
    a = Audio(tone(), RATE)
    assert validate(a) is a
    write_audio_atomic(tmp_path / "a.wav", a)
    write_audio_atomic(tmp_path / "b.wav", a)
    ra, rb = read_audio(tmp_path / "a.wav"), read_audio(tmp_path / "b.wav")
    assert ra.content_hash() == rb.content_hash()  # different paths, same content
    assert ra.content_hash() != Audio(tone(amp=0.2), RATE).content_hash()


def test_read_audio_bad_files(tmp_path):
    with pytest.raises(BadAudio, match="missing"):
        read_audio(tmp_path / "nope.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(BadAudio, match="empty"):
        read_audio(tmp_path / "empty.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFF1234WAVEfmt garbage")
    with pytest.raises(BadAudio, match="corrupt"):
        read_audio(tmp_path / "bad.wav")


def test_stereo_int_and_resample(tmp_path):
    x = tone()
    sf.write(tmp_path / "s.wav", np.stack([x, -x * 0.0 + x], axis=1), RATE, subtype="PCM_16")
    a = read_audio(tmp_path / "s.wav")
    assert a.samples.ndim == 1 and a.samples.dtype == np.float32
    assert np.max(np.abs(a.samples - x)) < 1e-3
    b = a.resampled(8000)
    assert b.sample_rate == 8000 and abs(len(b.samples) - 8000) <= 1


# ----------------------------------------------------------------------------- spec
def _spec(**kw):
    base = dict(task={"name": "t", "version": "1", "options": {}}, systems=({"name": "s"},),
                metrics=({"name": "wer", "revision": "r1"},), items_digest="abc", n_items=3)
    base.update(kw)
    return RunSpec(**base)


def test_spec_digest_is_stable_and_sensitive():
    assert _spec().digest() == _spec().digest()
    assert _spec().digest() != _spec(metrics=({"name": "wer", "revision": "r2"},)).digest()
    assert _spec().digest() != _spec(seed=1).digest()
    assert _spec().folder_name().startswith("t-")


# ----------------------------------------------------------------------------- registry and CLI
def test_registry_suggests_close_names():
    with pytest.raises(UnknownName, match="flite"):
        registry.get_class("system", "flit")
    assert "ground-truth" in registry.names("system")


def test_parse_options():
    assert _parse_options(["wer.model=whisper-tiny.en", "a.b.c=3"], "--x") == \
        {"wer": {"model": "whisper-tiny.en"}, "a.b": {"c": 3}}
    with pytest.raises(BenchError):
        _parse_options(["nodot=1"], "--x")


# ----------------------------------------------------------------------------- stats
def test_bootstrap_ci_is_seeded_and_brackets_mean():
    x = [0.1, 0.2, 0.3, 0.9, 0.5]
    assert bootstrap_mean_ci(x, seed=1) == bootstrap_mean_ci(x, seed=1)
    lo, hi = bootstrap_mean_ci(x, seed=1)
    assert lo < np.mean(x) < hi
    assert bootstrap_mean_ci([1.0]) is None
    d = describe([1.0, float("nan"), 3.0])
    assert d["n"] == 2 and d["mean"] == 2.0
    assert describe([])["mean"] is None
    assert percentile([1, 2, 3, 4], 50) == 2.5


def test_atomic_writes_are_readable_like_ordinary_files(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "shared.json", {"v": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared.json").stat().st_mode) == 0o644
    assert read_json(tmp_path / "shared.json") == {"v": 1}


def _report_peak_rss(queue) -> None:
    from bench.hardware import peak_rss_mb

    queue.put(peak_rss_mb())


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="Linux /proc only")
def test_a_spawned_worker_reports_its_own_peak_memory_not_its_parents():
    """Workers start by fork and exec; the kernel's ru_maxrss keeps the parent's size across the
    exec. The peak we record must be the worker's own."""
    import multiprocessing

    from bench.hardware import peak_rss_mb

    ballast = np.ones(300 * 2**20 // 8)  # 300 MB touched in this process
    assert peak_rss_mb() > 300
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_report_peak_rss, args=(queue,))
    child.start()
    reported = queue.get(timeout=60)
    child.join()
    assert reported < 150, reported
    del ballast

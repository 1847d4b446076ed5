"""The runner end to end with test plug-ins: records, summaries, failures, timeouts, resume, cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.cli import main
from bench.jsonio import read_jsonl
from bench.spec import SCHEMA_VERSION

TONE = "tests.plugins:ToneSystem"
TASK = "tests.plugins:ManifestTask"
DUR = "tests.plugins:DurationMetric"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(REPO)  # so 'tests.plugins' imports in worker processes too


def write_manifest(tmp_path: Path, texts: dict[str, str], **extra) -> Path:
    rows = [{"id": k, "text": v, **extra.get(k, {})} for k, v in texts.items()]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(rows))
    return path


def run_cli(*args: str) -> int:
    return main(["run", "--no-progress", *args])


def only_run_folder(out: Path) -> Path:
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def test_run_writes_records_and_summary(tmp_path, capsys):
    manifest = write_manifest(tmp_path, {"a": "hello", "b": "hello world", "c": "abc"})
    assert run_cli("--systems", TONE, "--task", TASK, "--task-opt", f"manifest={manifest}",
                   "--out", str(tmp_path / "out")) == 0
    folder = only_run_folder(tmp_path / "out")
    gens = read_jsonl(folder / "generations.jsonl")
    assert sorted(g["item_id"] for g in gens) == ["a", "b", "c"]
    assert all(g["status"] == "ok" and g["rtf"] > 0 and g["first_packet_s"] is not None for g in gens)
    scores = read_jsonl(folder / "scores.jsonl")
    secs = {s["item_id"]: s["values"]["seconds"] for s in scores}
    assert secs == pytest.approx({"a": 0.5, "b": 1.1, "c": 0.3}, abs=1e-4)
    summary = json.loads((folder / "summary.json").read_text())
    block = summary["systems"][TONE]["metrics"]["duration"]
    assert block["values"]["seconds"]["mean"] == pytest.approx(0.6333, abs=1e-3)
    assert block["values"]["seconds"]["ci_low"] <= 0.6333 <= block["values"]["seconds"]["ci_high"]
    assert summary["schema_version"] == SCHEMA_VERSION and summary["spec_digest"] in folder.name + summary["spec_digest"]
    assert folder.name.endswith(summary["spec_digest"][:12])
    assert summary["evaluators"] == {"duration": "duration-1"}
    assert summary["environment"]["cpu_count"] >= 1
    assert summary["systems"][TONE]["complete"] is True
    out = capsys.readouterr().out
    assert "duration.seconds" in out and TONE in out


def test_bad_outputs_become_counted_failures(tmp_path):
    texts = {"ok": "fine text", "nan": "NAN here", "silent": "SILENT here", "empty": "EMPTY",
             "clip": "CLIP clip clip", "loud": "LOUD loud", "raise": "RAISE now", "short": "SHORT"}
    manifest = write_manifest(tmp_path, texts)
    assert run_cli("--systems", TONE, "--task", TASK, "--task-opt", f"manifest={manifest}",
                   "--out", str(tmp_path / "out")) == 0
    folder = only_run_folder(tmp_path / "out")
    reasons = {g["item_id"]: g["reason"] for g in read_jsonl(folder / "generations.jsonl")}
    assert reasons == {"ok": None, "nan": "nan", "silent": "silent", "empty": "empty", "clip": "clipped",
                       "loud": "out_of_range", "raise": "exception", "short": "too_short"}
    summary = json.loads((folder / "summary.json").read_text())
    perf = summary["systems"][TONE]["performance"]
    assert perf["n_failed"] == 7 and perf["n_generated"] == 1
    block = summary["systems"][TONE]["metrics"]["duration"]
    assert block["n_failed"] == 7 and block["values"]["seconds"]["n"] == 1
    assert block["failure_reasons"]["nan"] == 1
    # The invalid audio is kept on disk for inspection (NaN survives as float WAV).
    data, _ = sf.read(folder / "audio" / "tests.plugins_ToneSystem" / "nan.wav")
    assert np.isnan(data).any()


def test_hanging_and_crashing_systems_cost_one_item_each(tmp_path):
    manifest = write_manifest(tmp_path, {"1": "before", "2": "HANG", "3": "CRASH", "4": "after"})
    assert run_cli("--systems", TONE, "--task", TASK, "--task-opt", f"manifest={manifest}",
                   "--timeout", "3", "--no-warmup", "--out", str(tmp_path / "out")) == 0
    folder = only_run_folder(tmp_path / "out")
    gens = read_jsonl(folder / "generations.jsonl")
    reasons = {g["item_id"]: g["reason"] for g in gens}
    assert reasons == {"1": None, "2": "timeout", "3": "crashed", "4": None}
    crash = next(g for g in gens if g["item_id"] == "3")
    assert "exit code 3" in crash["detail"], crash["detail"]  # the real status, not 'None'


def test_score_audio_dir_pairs_by_id_and_counts_missing(tmp_path):
    manifest = write_manifest(tmp_path, {"u1": "one", "u2": "two", "u3": "three"})
    audio = tmp_path / "gen"
    audio.mkdir()
    rate = 16000
    for item_id, seconds in (("u3", 0.5), ("u1", 0.25)):  # written out of order; u2 missing
        sf.write(audio / f"{item_id}.wav", 0.1 * np.sin(np.arange(int(seconds * rate)) / 3.0), rate)
    assert main(["score", "--no-progress", "--task", TASK, "--task-opt", f"manifest={manifest}",
                 "--audio-dir", str(audio), "--out", str(tmp_path / "out")]) == 0
    folder = only_run_folder(tmp_path / "out")
    scores = {s["item_id"]: s for s in read_jsonl(folder / "scores.jsonl")}
    assert scores["u1"]["values"]["seconds"] == pytest.approx(0.25)
    assert scores["u3"]["values"]["seconds"] == pytest.approx(0.5)
    assert scores["u2"]["failure"] == "missing"


def test_score_follows_the_files_not_the_folder_path(tmp_path, capsys, monkeypatch):
    """Scoring again after files in --audio-dir were changed, added or removed rescores exactly
    those items; nothing stale survives into the summary."""
    manifest = write_manifest(tmp_path, {"u1": "one", "u2": "two", "u3": "three", "u4": "four"})
    audio = tmp_path / "gen"
    audio.mkdir()
    rate = 16000

    def put(item_id, seconds):
        sf.write(audio / f"{item_id}.wav", 0.1 * np.sin(np.arange(int(seconds * rate)) / 3.0), rate)

    put("u1", 0.25), put("u2", 0.5), put("u3", 0.75)  # u4 missing
    args = ["score", "--no-progress", "--task", TASK, "--task-opt", f"manifest={manifest}", "--metrics", DUR,
            "--audio-dir", str(audio), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    folder = only_run_folder(tmp_path / "out")

    def seconds():
        summary = json.loads((folder / "summary.json").read_text())
        block = summary["systems"]["audio-dir:gen"]["metrics"]["duration"]
        return block["values"]["seconds"]["mean"], block["n_failed"]

    assert seconds() == (pytest.approx(0.5), 1)
    capsys.readouterr()
    put("u1", 1.25)  # changed
    (audio / "u2.wav").unlink()  # removed
    put("u4", 0.5)  # added
    import bench.runner

    hashed = []
    real_sha256 = bench.runner.sha256_file
    monkeypatch.setattr(bench.runner, "sha256_file", lambda path: hashed.append(Path(path).name) or real_sha256(path))
    assert main(args) == 0
    assert "3 file(s)" in capsys.readouterr().err
    assert sorted(hashed) == ["u1.wav", "u3.wav", "u4.wav"]  # each file read once for its digest
    assert seconds() == (pytest.approx((1.25 + 0.75 + 0.5) / 3), 1)
    latest = {}
    for rec in read_jsonl(folder / "scores.jsonl"):
        latest[rec["item_id"]] = rec
    assert latest["u2"]["failure"] == "missing" and latest["u1"]["values"]["seconds"] == pytest.approx(1.25)
    before = (folder / "scores.jsonl").read_text()
    assert main(args) == 0  # nothing changed: nothing is scored again
    assert (folder / "scores.jsonl").read_text() == before


def test_retry_failed_scores_failed_items_again(tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path, {"a": "one", "b": "two"})
    audio = tmp_path / "gen"
    audio.mkdir()
    sf.write(audio / "a.wav", 0.1 * np.sin(np.arange(8000) / 3.0), 16000)
    sf.write(audio / "b.wav", 0.1 * np.sin(np.arange(4000) / 3.0), 16000)
    args = ["score", "--no-progress", "--task", TASK, "--task-opt", f"manifest={manifest}", "--no-cache",
            "--metrics", "tests.plugins:FlakyMetric", "--audio-dir", str(audio), "--out", str(tmp_path / "out")]
    monkeypatch.setenv("FLAKY_FAIL", "b")
    assert main(args) == 0
    folder = only_run_folder(tmp_path / "out")
    assert json.loads((folder / "summary.json").read_text())["systems"]["audio-dir:gen"]["metrics"]["flaky"]["n_failed"] == 1
    monkeypatch.setenv("FLAKY_FAIL", "")
    assert main(args) == 0  # a failure stands on a plain resume
    assert json.loads((folder / "summary.json").read_text())["systems"]["audio-dir:gen"]["metrics"]["flaky"]["n_failed"] == 1
    assert main([*args, "--retry-failed"]) == 0
    assert json.loads((folder / "summary.json").read_text())["systems"]["audio-dir:gen"]["metrics"]["flaky"]["n_failed"] == 0


def test_bad_input_files_in_audio_dir(tmp_path):
    texts = {k: k for k in ("corrupt", "empty", "stereo", "rate8k", "silent", "nan")}
    manifest = write_manifest(tmp_path, texts)
    d = tmp_path / "gen"
    d.mkdir()
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    (d / "empty.wav").write_bytes(b"")
    t = np.arange(16000) / 16000
    tone = (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    sf.write(d / "stereo.wav", np.stack([tone, tone], axis=1), 16000)
    sf.write(d / "rate8k.wav", tone[::2], 8000)
    sf.write(d / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    nan = tone.copy()
    nan[100] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    assert main(["score", "--no-progress", "--task", TASK, "--task-opt", f"manifest={manifest}",
                 "--audio-dir", str(d), "--out", str(tmp_path / "out")]) == 0
    folder = only_run_folder(tmp_path / "out")
    scores = {s["item_id"]: s for s in read_jsonl(folder / "scores.jsonl")}
    assert scores["corrupt"]["failure"] == "corrupt"
    assert scores["empty"]["failure"] == "empty"
    assert scores["silent"]["failure"] == "silent"
    assert scores["nan"]["failure"] == "nan"
    assert scores["stereo"]["values"]["seconds"] == pytest.approx(1.0)  # averaged to mono
    assert scores["rate8k"]["values"]["seconds"] == pytest.approx(1.0)  # resampled, same duration


def test_prompt_metric_and_missing_prompt(tmp_path):
    rate = 16000
    prompt = tmp_path / "prompt.wav"
    sf.write(prompt, 0.1 * np.sin(np.arange(rate) / 5.0), rate)
    bad_prompt = tmp_path / "bad_prompt.wav"
    bad_prompt.write_bytes(b"not audio at all")
    manifest = write_manifest(tmp_path, {"p": "abcde", "q": "abcde", "r": "abcde"},
                              p={"prompt": str(prompt)}, r={"prompt": str(bad_prompt)})
    assert run_cli("--systems", TONE, "--task", TASK, "--task-opt", f"manifest={manifest}",
                   "--metrics", "tests.plugins:PromptLengthRatio", "--out", str(tmp_path / "out")) == 0
    scores = {s["item_id"]: s for s in read_jsonl(only_run_folder(tmp_path / "out") / "scores.jsonl")}
    assert scores["p"]["values"]["ratio"] == pytest.approx(0.5)
    assert scores["q"]["failure"] == "no_prompt"
    assert scores["r"]["failure"] == "bad_prompt_corrupt"


def test_cached_rerun_hits_cache_and_batches(tmp_path, monkeypatch):
    log = tmp_path / "metric.log"
    monkeypatch.setenv("BENCH_TEST_METRIC_LOG", str(log))
    manifest = write_manifest(tmp_path, {str(i): "t" * (i + 3) for i in range(5)})
    args = ["--systems", TONE, "--task", TASK, "--task-opt", f"manifest={manifest}", "--batch-size", "2"]
    assert run_cli(*args, "--out", str(tmp_path / "out1")) == 0
    assert log.read_text().split() == ["2", "2", "1"]  # batches of at most 2
    assert run_cli(*args, "--out", str(tmp_path / "out2")) == 0
    assert log.read_text().split() == ["2", "2", "1"]  # nothing recomputed
    scores = read_jsonl(only_run_folder(tmp_path / "out2") / "scores.jsonl")
    assert all(s["cached"] for s in scores) and len(scores) == 5


def test_same_command_again_is_a_no_op(tmp_path):
    manifest = write_manifest(tmp_path, {"a": "abc", "b": "abcd"})
    args = ["--systems", TONE, "--task", TASK, "--task-opt", f"manifest={manifest}", "--out", str(tmp_path / "o")]
    assert run_cli(*args) == 0
    assert run_cli(*args) == 0
    folder = only_run_folder(tmp_path / "o")
    assert len(read_jsonl(folder / "generations.jsonl")) == 2
    assert len(read_jsonl(folder / "scores.jsonl")) == 2


def test_warm_up_synthesises_the_first_words_of_the_first_item_untimed(tmp_path):
    from bench.worker import WARMUP_WORDS

    texts = {"a": "one two three four five six seven", "b": "eight nine"}
    manifest = write_manifest(tmp_path, texts)
    log = tmp_path / "texts.log"
    assert run_cli("--systems", TONE, "--task", TASK, "--task-opt", f"manifest={manifest}",
                   "--system-opt", f"{TONE}.texts_log={log}", "--out", str(tmp_path / "out")) == 0
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert WARMUP_WORDS == 4 and calls == ["one two three four", texts["a"], texts["b"]]
    folder = only_run_folder(tmp_path / "out")
    assert sorted(g["item_id"] for g in read_jsonl(folder / "generations.jsonl")) == ["a", "b"]
    settings = json.loads((folder / "summary.json").read_text())["settings"]
    assert settings["warmup"] is True and settings["warmup_words"] == WARMUP_WORDS
    # --no-warmup: no untimed call, and nothing recorded about one.
    log.unlink()
    assert run_cli("--systems", TONE, "--task", TASK, "--task-opt", f"manifest={manifest}", "--no-warmup",
                   "--system-opt", f"{TONE}.texts_log={log}", "--out", str(tmp_path / "out2")) == 0
    assert [json.loads(line) for line in log.read_text().splitlines()] == [texts["a"], texts["b"]]
    settings = json.loads((only_run_folder(tmp_path / "out2") / "summary.json").read_text())["settings"]
    assert settings["warmup"] is False and "warmup_words" not in settings


def test_kill_and_resume_loses_and_repeats_nothing(tmp_path):
    n = 12
    manifest = write_manifest(tmp_path, {f"i{k:02d}": "abcdef" for k in range(n)})
    calls = tmp_path / "calls.log"
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench.cli", "run", "--no-progress", "--no-warmup", "--systems", TONE,
           "--task", TASK, "--task-opt", f"manifest={manifest}", "--out", str(out),
           "--system-opt", f"{TONE}.delay=0.25", "--system-opt", f"{TONE}.calls_log={calls}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    gen_file = None
    while time.time() < deadline:
        folders = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
        if folders and (folders[0] / "generations.jsonl").exists():
            gen_file = folders[0] / "generations.jsonl"
            if 3 <= gen_file.read_text().count("\n") < n:
                break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: runner and system worker
    proc.wait()
    assert gen_file is not None
    finished_before = {r["item_id"] for r in read_jsonl(gen_file)}
    assert 3 <= len(finished_before) < n
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gens = read_jsonl(gen_file)
    assert sorted(r["item_id"] for r in gens) == sorted(f"i{k:02d}" for k in range(n))  # no duplicates
    synthesized = calls.read_text().split()
    # Each finished item was synthesized once; at most the one in flight at the kill is repeated.
    assert len(synthesized) <= n + 1
    assert all(synthesized.count(i) == 1 for i in finished_before)
    scores = read_jsonl(gen_file.parent / "scores.jsonl")
    assert sorted(s["item_id"] for s in scores) == sorted(f"i{k:02d}" for k in range(n))
    assert json.loads((gen_file.parent / "summary.json").read_text())["systems"][TONE]["complete"]


def test_unknown_names_give_clear_errors(tmp_path, capsys):
    assert run_cli("--systems", "flyte", "--task", "librivox-mini", "--out", str(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "unknown system 'flyte'" in err and "flite" in err


def test_bench_help_is_fast_and_light():
    code = ("import sys, time; t=time.perf_counter(); import bench.cli as c; "
            "heavy=[m for m in ('torch','numpy','faster_whisper','onnxruntime','resemblyzer') if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_identical_inputs_in_a_batch_are_scored_once(tmp_path, monkeypatch):
    log = tmp_path / "metric.log"
    monkeypatch.setenv("BENCH_TEST_METRIC_LOG", str(log))
    manifest = write_manifest(tmp_path, {"x1": "same text", "x2": "same text", "y": "other"})
    assert run_cli("--systems", TONE, "--task", TASK, "--task-opt", f"manifest={manifest}",
                   "--out", str(tmp_path / "out")) == 0
    assert log.read_text().split() == ["2"]  # three items, two distinct inputs, one call
    scores = {s["item_id"]: s for s in read_jsonl(only_run_folder(tmp_path / "out") / "scores.jsonl")}
    assert scores["x1"]["values"] == scores["x2"]["values"] and len(scores) == 3


def test_system_variants_are_separate_rows_with_their_options(tmp_path):
    manifest = write_manifest(tmp_path, {"a": "hello", "b": "hello world"})
    variant = f"{TONE}@r8k"
    assert run_cli("--systems", f"{TONE},{variant}", "--system-opt", f"{variant}.rate=8000", "--task", TASK,
                   "--task-opt", f"manifest={manifest}", "--metrics", DUR, "--out", str(tmp_path / "out")) == 0
    folder = only_run_folder(tmp_path / "out")
    spec = json.loads((folder / "spec.json").read_text())
    rows = {s.get("variant"): s["options"] for s in spec["spec"]["systems"]}
    assert rows == {None: {}, "r8k": {"rate": 8000}}
    gens = read_jsonl(folder / "generations.jsonl")
    rates = {(g["system"], g["item_id"]): sf.info(folder / g["audio"]).samplerate for g in gens}
    assert rates[(variant, "a")] == 8000 and rates[(TONE, "a")] == 16000
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["systems"]) == {TONE, variant}


def test_system_options_must_name_a_listed_system(tmp_path, capsys):
    manifest = write_manifest(tmp_path, {"a": "hello"})
    assert main(["run", "--no-progress", "--systems", TONE, "--system-opt", f"{TONE}@x.rate=8000", "--task", TASK,
                 "--task-opt", f"manifest={manifest}", "--out", str(tmp_path / "out")]) == 1
    assert "does not list" in capsys.readouterr().err
    with pytest.raises(Exception, match="variant is NAME@LABEL"):
        from bench.registry import split_variant

        split_variant("tiny-flow@bad.label")


def test_run_seed_reaches_systems_that_sample(tmp_path):
    manifest = write_manifest(tmp_path, {"a": "hello"})
    seeded = "tests.plugins:SeededTone"
    common = ["--task", TASK, "--task-opt", f"manifest={manifest}", "--metrics", DUR, "--out", str(tmp_path / "out")]
    assert run_cli("--systems", f"{seeded},{TONE}", "--seed", "7", *common) == 0
    spec = json.loads((only_run_folder(tmp_path / "out") / "spec.json").read_text())["spec"]
    assert [s["options"] for s in spec["systems"]] == [{"seed": 7}, {}]
    # An explicit --system-opt seed wins over the run's seed.
    assert run_cli("--systems", seeded, "--seed", "7", "--system-opt", f"{seeded}.seed=3", *common[:-2],
                   "--out", str(tmp_path / "out2")) == 0
    spec = json.loads((only_run_folder(tmp_path / "out2") / "spec.json").read_text())["spec"]
    assert spec["systems"][0]["options"] == {"seed": 3}


def test_score_never_reads_outside_the_audio_dir(tmp_path):
    manifest = write_manifest(tmp_path, {"../prompts/x": "escape", "ok": "fine"})
    rate = 16000
    tone = 0.1 * np.sin(np.arange(rate) / 3.0)
    (tmp_path / "prompts").mkdir()
    sf.write(tmp_path / "prompts" / "x.wav", tone, rate)  # what the id points at, outside the folder
    audio = tmp_path / "gen"
    audio.mkdir()
    sf.write(audio / "ok.wav", tone, rate)
    assert main(["score", "--no-progress", "--task", TASK, "--task-opt", f"manifest={manifest}",
                 "--audio-dir", str(audio), "--metrics", DUR, "--out", str(tmp_path / "out")]) == 0
    gens = {g["item_id"]: g for g in read_jsonl(only_run_folder(tmp_path / "out") / "generations.jsonl")}
    assert gens["../prompts/x"]["reason"] == "missing" and gens["../prompts/x"]["audio"] is None
    assert gens["ok"]["status"] == "ok"


def test_score_reports_files_that_match_no_item(tmp_path, capsys):
    manifest = write_manifest(tmp_path, {"a": "one"})
    audio = tmp_path / "gen"
    audio.mkdir()
    for name in ("a.wav", "typo_b.wav", "c.flac", "notes.txt"):
        sf.write(audio / name, 0.1 * np.sin(np.arange(8000) / 3.0), 16000, format="WAV") if name.endswith(".wav") \
            else (audio / name).write_bytes(b"x")
    assert main(["score", "--no-progress", "--task", TASK, "--task-opt", f"manifest={manifest}",
                 "--audio-dir", str(audio), "--metrics", DUR, "--out", str(tmp_path / "out")]) == 0
    assert "2 file(s)" in capsys.readouterr().err
    summary = json.loads((only_run_folder(tmp_path / "out") / "summary.json").read_text())
    assert summary["unmatched_audio_files"] == {"count": 2, "first": ["c.flac", "typo_b.wav"]}


def test_summary_does_not_depend_on_record_order(tmp_path):
    from bench.cli import main as cli_main

    manifest = write_manifest(tmp_path, {k: "x" * (3 + i) for i, k in enumerate("abcdefgh")})
    args = ["--systems", TONE, "--task", TASK, "--task-opt", f"manifest={manifest}", "--metrics", DUR,
            "--out", str(tmp_path / "out")]
    assert run_cli(*args) == 0
    folder = only_run_folder(tmp_path / "out")
    # Everything but when and how fast it was summarised must be identical, byte for byte.
    volatile = ("created", "wall_s", "scoring_peak_rss_mb", "checksum")

    def stable(path):
        summary = json.loads(path.read_text())
        return json.dumps({k: v for k, v in summary.items() if k not in volatile}, sort_keys=True)

    first = json.loads((folder / "summary.json").read_text())["systems"]
    first_stable = stable(folder / "summary.json")
    digest_before = json.loads((folder / "summary.json").read_text())["records_digest"]
    lines = (folder / "scores.jsonl").read_text().splitlines()
    (folder / "scores.jsonl").write_text("\n".join(reversed(lines)) + "\n")
    (folder / "summary.json").unlink()
    assert run_cli(*args) == 0  # resumes: nothing to do, summarises the permuted records
    again = json.loads((folder / "summary.json").read_text())
    assert again["systems"] == first
    assert again["records_digest"] == digest_before
    assert stable(folder / "summary.json") == first_stable


def test_scorer_side_failures_keep_the_metrics_failure_detail(tmp_path):
    manifest = write_manifest(tmp_path, {"a": "SILENT here", "b": "fine"})
    assert run_cli("--systems", TONE, "--task", TASK, "--task-opt", f"manifest={manifest}", "--metrics", DUR,
                   "--out", str(tmp_path / "out")) == 0
    scores = {s["item_id"]: s for s in read_jsonl(only_run_folder(tmp_path / "out") / "scores.jsonl")}
    assert scores["a"]["failure"] == "silent" and scores["a"]["extra"] == {"text_chars": 11}


def test_timeout_kills_the_systems_whole_process_tree(tmp_path):
    manifest = write_manifest(tmp_path, {"1": "SPAWN", "2": "after"})
    pid_file = tmp_path / "grandchild.pid"
    assert run_cli("--systems", TONE, "--system-opt", f"{TONE}.pid_file={pid_file}", "--task", TASK,
                   "--task-opt", f"manifest={manifest}", "--metrics", DUR, "--timeout", "3", "--no-warmup",
                   "--out", str(tmp_path / "out")) == 0
    reasons = {g["item_id"]: g["reason"] for g in read_jsonl(only_run_folder(tmp_path / "out") / "generations.jsonl")}
    assert reasons == {"1": "timeout", "2": None}
    status = Path(f"/proc/{int(pid_file.read_text())}/status")
    time.sleep(0.2)
    assert not status.exists() or "\nState:\tZ" in status.read_text(), "the grandchild is still running"


def test_a_system_that_hangs_while_loading_follows_load_timeout(tmp_path):
    manifest = write_manifest(tmp_path, {"1": "one", "2": "two"})
    start = time.time()
    assert run_cli("--systems", TONE, "--system-opt", f"{TONE}.load_hang=true", "--task", TASK,
                   "--task-opt", f"manifest={manifest}", "--metrics", DUR, "--load-timeout", "2",
                   "--out", str(tmp_path / "out")) == 0
    assert time.time() - start < 60
    gens = read_jsonl(only_run_folder(tmp_path / "out") / "generations.jsonl")
    assert {g["reason"] for g in gens} == {"load_timeout"} and len(gens) == 2
    assert "--load-timeout" in gens[0]["detail"]


def test_torch_systems_fork_from_a_server_and_still_see_the_runners_state(tmp_path, monkeypatch):
    """Workers of torch systems fork from a server that imported torch once; they must still see
    the environment, working folder and import path of the runner at their own start (a spawned
    worker would), and other systems start a fresh interpreter without torch (their memory
    figures must not include it)."""
    from bench.worker import SystemWorker

    probes = {}
    for k, mark in enumerate(("first", "second")):  # the second starts after the server exists
        monkeypatch.setenv("BENCH_TEST_MARK", mark)
        folder = tmp_path / f"cwd{k}"
        folder.mkdir()
        monkeypatch.chdir(folder)
        monkeypatch.syspath_prepend(str(REPO))
        for name in ("tests.plugins:TorchProcessProbe", "tests.plugins:ProcessProbe"):
            with SystemWorker(name) as worker:
                probes[(name, k)] = worker.call("where").value
            assert probes[(name, k)]["mark"] == mark and probes[(name, k)]["cwd"] == str(folder)
            assert probes[(name, k)]["path0"] == str(REPO)
    for k in (0, 1):
        assert probes[("tests.plugins:TorchProcessProbe", k)]["torch_loaded_before_load"] is True
        assert probes[("tests.plugins:ProcessProbe", k)]["torch_loaded_before_load"] is False
    # A thread cap must reach the libraries at import, so a capped worker is spawned fresh.
    with SystemWorker("tests.plugins:TorchProcessProbe", threads=1) as worker:
        assert worker.call("where").value["torch_loaded_before_load"] is False


def test_torch_thread_count_is_recorded_and_a_mixed_run_is_flagged(tmp_path):
    """A torch model's float sums, so its audio, depend on its thread count: every generation
    records it (null for a system without torch), the summary lists the counts, and a run whose
    items were made under different counts says so."""
    from bench.errors import BadResultFile
    from bench.results import read_generations
    from bench.summary import _performance, console_table

    manifest = write_manifest(tmp_path, {"a": "hello", "b": "hello world"})
    torch_probe = "tests.plugins:TorchProcessProbe"
    assert run_cli("--systems", f"{torch_probe},{TONE}", "--task", TASK, "--task-opt", f"manifest={manifest}",
                   "--out", str(tmp_path / "out")) == 0
    folder = only_run_folder(tmp_path / "out")
    gens = read_generations(folder)
    threads = {g["system"]: g["threads"] for g in gens}
    assert isinstance(threads[torch_probe], int) and threads[torch_probe] >= 1
    assert threads[TONE] is None
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["systems"][torch_probe]["performance"]["threads"] == [threads[torch_probe]]
    assert summary["systems"][TONE]["performance"]["threads"] is None
    assert "warning" not in console_table(summary)
    mixed = [dict(gens[0], threads=1), dict(gens[0], item_id="b", threads=2)]
    perf = _performance(mixed)
    assert perf["threads"] == [1, 2]
    table = console_table({"spec": {"metrics": []}, "systems": {"x": {"metrics": {}, "groups": {}, "performance": perf}}})
    assert "warning: x's items were made with 1 and 2 torch threads" in table
    lines = (folder / "generations.jsonl").read_text().splitlines()
    (folder / "generations.jsonl").write_text("\n".join([lines[0].replace(f'"threads": {threads[torch_probe]}',
                                                                         '"threads": "two"')] + lines[1:]) + "\n")
    with pytest.raises(BadResultFile, match="a thread count >= 1 or null"):
        read_generations(folder)

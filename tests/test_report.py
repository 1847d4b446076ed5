"""The HTML report: built from real runs, one page for several runs of a task; values, significance,
figures, the per-item drill-down with audio links; everything from a result file escaped; bad
summaries refused."""

from __future__ import annotations

import html
import json

import pytest

from bench.cli import main
from bench.errors import BadResultFile
from reports.html import build
from tests.browser import Elements, needs_chromium, open_page
from tests.test_runner import REPO, TASK, TONE, only_run_folder, write_manifest


@pytest.fixture()
def run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(REPO)
    manifest = write_manifest(tmp_path, {"a": "hello", "b": "NAN", "c": "abc"})
    assert main(["run", "--no-progress", "--systems", TONE, "--task", TASK, "--task-opt", f"manifest={manifest}",
                 "--out", str(tmp_path / "out")]) == 0
    return only_run_folder(tmp_path / "out")


def rename_system(folder, old, new):
    """A result file someone else made, consistent and sealed, with HTML in a system's name (what a
    submitted result can hold): records and summary renamed, digest and checksum recomputed."""
    from bench.results import read_generations, read_scores, records_digest, seal

    for name in ("generations.jsonl", "scores.jsonl"):
        path = folder / name
        recs = [json.loads(line) for line in path.read_text().splitlines()]
        for rec in recs:
            rec["system"] = new if rec["system"] == old else rec["system"]
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["systems"][new] = summary["systems"].pop(old)
    summary["records_digest"] = records_digest(read_generations(folder), read_scores(folder))
    summary_path.write_text(json.dumps(seal(summary)))


def test_report_shows_values_failures_and_escapes(run_folder):
    rename_system(run_folder, TONE, "<script>alert(1)</script>")
    assert main(["report", str(run_folder)]) == 0
    page = (run_folder / "report.html").read_text()
    assert page.count("<script") == 1, "only the page's own script"
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "0.40" in page  # mean duration of the two valid items (0.5 s and 0.3 s)
    assert "nan" in page and "duration-1" in page  # failure reason and evaluator revision


def test_report_rejects_malformed_summaries(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"schema_version": 2}))
    with pytest.raises(BadResultFile, match="missing"):
        build([tmp_path], tmp_path / "r.html")
    (tmp_path / "summary.json").write_text(json.dumps({"schema_version": 99, "spec": {}, "systems": {},
                                                       "evaluators": {}, "environment": {}}))
    with pytest.raises(BadResultFile, match="schema version"):
        build([tmp_path], tmp_path / "r.html")
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(BadResultFile):
        build([tmp_path], tmp_path / "r.html")


def test_report_on_a_missing_folder_or_summary_is_a_clear_error(tmp_path, capsys):
    from bench.cli import main

    assert main(["report", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 1
    assert "has no summary.json" in capsys.readouterr().err


@pytest.fixture()
def two_runs(tmp_path, monkeypatch):
    """Two runs of one task: the tone system, and a shorter variant in a second run; item ids and
    texts carry HTML."""
    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(REPO)
    texts = {f"<b>u{k:02d}</b>": "x" * (4 + k % 5) + ("<img src=x onerror=alert(2)>" if k == 0 else "")
             for k in range(12)}
    manifest = write_manifest(tmp_path, texts)
    common = ["run", "--no-progress", "--task", TASK, "--task-opt", f"manifest={manifest}"]
    assert main([*common, "--systems", TONE, "--out", str(tmp_path / "a")]) == 0
    short = f"{TONE}@short"
    assert main([*common, "--systems", short, "--system-opt", f"{short}.seconds_per_char=0.05",
                 "--out", str(tmp_path / "b")]) == 0
    return only_run_folder(tmp_path / "a"), only_run_folder(tmp_path / "b")


def test_one_page_compares_runs_with_significance_figures_and_items(two_runs, tmp_path):
    a, b = two_runs
    out = tmp_path / "site" / "compare.html"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    page = out.read_text()
    assert "Which differences are significant" in page and "<b>tests.plugins:ToneSystem</b> better" in page
    assert page.count("<svg") >= 1  # the per-item distribution figure, inline
    assert "<img" not in page
    # A task referenced as module:Class is not in the registry: the page says why prompts and
    # references are missing instead of failing.
    assert "prompt and reference audio are not shown" in page
    assert "<b>u00" not in page and "&lt;b&gt;u00&lt;/b&gt;" in page
    # Audio players link to the runs' files, relative to the page, and the files are there.
    import re

    sources = re.findall(r'<audio controls preload="none" src="([^"]+)"', page)
    assert len(sources) == 24
    assert all((out.parent / src.replace("&amp;", "&")).resolve().is_file() for src in sources)
    # Worst first without JavaScript: the drill-down starts with the item whose worst value is worst.
    assert "Provenance" in page and "records digest" in page and "commit" in page
    from bench.hardware import fingerprint

    flags = " ".join(fingerprint()["cpu_flags"]) or "instruction sets not recorded"
    assert f"({flags})" in page  # the CPU's instruction sets, which pick the int8 kernels


def test_embedded_audio_and_different_tasks(two_runs, tmp_path):
    a, b = two_runs
    out = tmp_path / "one.html"
    assert main(["report", str(a), "--out", str(out), "--embed-audio"]) == 0
    assert out.read_text().count('src="data:audio/wav;base64,') == 12
    from bench.errors import BenchError
    from reports.html import build as build_page

    (tmp_path / "o").mkdir()
    other = write_manifest(tmp_path / "o", {"z": "zz"})
    assert main(["run", "--no-progress", "--task", TASK, "--task-opt", f"manifest={other}", "--systems", TONE,
                 "--out", str(tmp_path / "c")]) == 0
    with pytest.raises(BenchError, match="another task or item set"):
        build_page([a, only_run_folder(tmp_path / "c")], tmp_path / "x.html")


def test_transcript_alignment_marks_substitutions_insertions_deletions():
    from reports.html import _words

    text = _words({"normalized_ref": "the <red> boat sailed home", "normalized_hyp": "the blue boat sailed far home now",
                   "unit": "word"})
    assert '<span class="sub">&lt;red&gt;</span>' in text and '<span class="sub">blue</span>' in text
    assert "<ins>far</ins>" in text and "<ins>now</ins>" in text
    assert "<del>" not in text
    gone = _words({"normalized_ref": "one two three", "normalized_hyp": "one three", "unit": "word"})
    assert "<del>two</del>" in gone
    chars = _words({"normalized_ref": "你好吗", "normalized_hyp": "你们好吗", "unit": "char"})
    assert "<ins>们</ins>" in chars


@needs_chromium
def test_the_page_renders_in_chromium_with_everything_inert(two_runs, tmp_path):
    """Opened in headless Chromium: no console errors, its script ran (the controls appear), and the
    HTML carried in system names, item ids and texts stayed text in the DOM."""
    a, b = two_runs
    rename_system(a, TONE, '<script>alert("s")</script><img src=x onerror=alert(1)>')
    out = tmp_path / "page.html"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    dom, console = open_page(out)
    assert console == []
    elements = Elements(dom)
    assert elements.tags.count("script") == 1 and "alert" not in elements.scripts[0]
    assert "img" not in elements.tags
    assert not [a for a in elements.attributes if a[1].startswith("on")]
    assert ("div", "hidden", "") not in [(t, k, v) for t, k, v in elements.attributes if k == "hidden" and t == "div"]
    assert "<script>alert(\"s\")</script>" in html.unescape(dom)  # shown as text


def test_figures_with_active_content_are_refused():
    from reports.figures import _check_inert

    _check_inert('<svg xmlns="http://www.w3.org/2000/svg"><text>&lt;script&gt;onerror=x</text></svg>')
    for bad in ('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
                '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"></svg>',
                '<svg xmlns="http://www.w3.org/2000/svg"><a href="javascript:alert(1)"><text>x</text></a></svg>'):
        with pytest.raises(ValueError):
            _check_inert(bad)


@needs_chromium
def test_a_sweep_folder_is_reported_on_its_own_page(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from systems.lm.data import WordTokenizer
    from systems.lm.model import init_params, save_checkpoint, size_config

    monkeypatch.chdir(REPO)
    tokenizer = WordTokenizer.default()
    config = size_config("xs", tokenizer.vocab_size, 1024)
    save_checkpoint(tmp_path / "xs", init_params(config, seed=3), config, tokenizer)
    assert main(["sweep", "--no-progress", "--models", "tiny-llama-xs", "--model-opt",
                 f"tiny-llama-xs.checkpoint={tmp_path / 'xs'}", "--tasks", "niah-single", "--lengths", "256",
                 "--prefill-methods", "block-sparse", "--decode-methods", "quest", "--samples", "3",
                 "--compressions", "2,4", "--out", str(tmp_path / "sw")]) == 0
    folder = next((tmp_path / "sw").iterdir())
    assert main(["report", str(folder)]) == 0
    page = folder / "analysis" / "report.html"
    dom, console = open_page(page)
    assert console == []
    for heading in ("isoCost frontier", "Safe sparsity", "Prefill against decode", "Scaling law", "Realised sparsity",
                    "Provenance", "sweep run: 20", "analysis: 20", "commit"):
        assert heading in dom
    assert Elements(dom).tags.count("svg") == 3  # the frontier of each phase, the realised sparsity
    assert "too few samples to decide" in dom and "did not converge" in dom  # 3 samples, one model
    import shutil

    shutil.rmtree(folder / "analysis")
    with pytest.raises(Exception, match="bench fit"):
        from reports.sweep import build as sweep_page

        sweep_page(folder)


@needs_chromium
def test_transcripts_and_task_names_from_a_result_file_stay_inert(run_folder, tmp_path):
    """A submitted result can carry anything in its transcripts and its task's name: a WER record
    whose transcript is markup, and a task named with markup, render as text in the DOM."""
    from bench.results import read_generations, read_scores, records_digest, seal

    evil = '<img src=x onerror=alert(3)><script>alert(4)</script>'
    scores = [json.loads(line) for line in (run_folder / "scores.jsonl").read_text().splitlines()]
    for rec in list(scores):
        if rec["metric"] == "duration" and rec["failure"] is None:
            scores.append({"system": rec["system"], "item_id": rec["item_id"], "metric": "wer", "values": {"wer": 1.0},
                           "extra": {"transcript": evil, "normalized_hyp": evil, "normalized_ref": "hello there",
                                     "errors": 2, "ref_words": 2, "unit": "word"}, "failure": None})
    (run_folder / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scores))
    summary = json.loads((run_folder / "summary.json").read_text())
    block = {"primary": "wer", "higher_is_better": False, "n_items": 2, "n_failed": 0, "failure_reasons": {},
             "failures_in_mean": True, "values": {"wer": {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 2}},
             "corpus": {}}
    for entry in summary["systems"].values():
        entry["metrics"]["wer"] = block
    summary["spec"]["task"]["name"] = '<script>alert("task")</script>'
    summary["evaluators"]["wer"] = "wer-test"
    summary["records_digest"] = records_digest(read_generations(run_folder), read_scores(run_folder))
    (run_folder / "summary.json").write_text(json.dumps(seal(summary)))
    out = tmp_path / "page.html"
    assert main(["report", str(run_folder), "--out", str(out)]) == 0
    dom, console = open_page(out)
    assert console == []
    elements = Elements(dom)
    assert "img" not in elements.tags and elements.tags.count("script") == 1
    assert not [a for a in elements.attributes if a[1].startswith("on")]
    # Shown as text: the transcript's words (split into alignment spans) and the task's name.
    assert "onerror=alert(3)><script>alert(4)</script>" in html.unescape(dom)
    assert '<script>alert("task")</script>' in html.unescape(dom)

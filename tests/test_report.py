"""The HTML report: built from a real run's summary, escapes what it shows, rejects bad summaries."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.errors import BadResultFile
from reports.html import build
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
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "0.40" in page  # mean duration of the two valid items (0.5 s and 0.3 s)
    assert "nan" in page and "duration-1" in page  # failure reason and evaluator revision


def test_report_rejects_malformed_summaries(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"schema_version": 2}))
    with pytest.raises(BadResultFile, match="missing"):
        build(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"schema_version": 99, "spec": {}, "systems": {},
                                                       "evaluators": {}, "environment": {}}))
    with pytest.raises(BadResultFile, match="schema version"):
        build(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(BadResultFile):
        build(tmp_path)


def test_report_on_a_missing_folder_or_summary_is_a_clear_error(tmp_path, capsys):
    from bench.cli import main

    assert main(["report", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 1
    assert "has no summary.json" in capsys.readouterr().err

"""The results store's reader (bench.results): every record read back is validated, and a summary
that does not match its records, or was edited, is refused by everything that reads it."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.errors import BadResultFile
from bench.jsonio import canonical, read_jsonl
from bench.results import load_run, read_generations, read_scores, records_digest, seal
from tests.test_runner import REPO, TASK, TONE, only_run_folder, run_cli, write_manifest


@pytest.fixture()
def run_args(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(REPO)
    manifest = write_manifest(tmp_path, {"a": "hello", "b": "hello world", "c": "abc"})
    return ["--systems", TONE, "--task", TASK, "--task-opt", f"manifest={manifest}", "--out", str(tmp_path / "out")]


@pytest.fixture()
def run_folder(tmp_path, run_args):
    assert run_cli(*run_args) == 0
    return only_run_folder(tmp_path / "out")


def _lines(path):
    return path.read_text().splitlines()


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")


def test_a_clean_run_reads_back(run_folder):
    run = load_run(run_folder)
    assert run.systems == [TONE] and len(run.generations) == 3
    assert {k[2] for k in run.latest_scores()} >= {"duration"}


@pytest.mark.parametrize("file,bad,message", [
    ("scores.jsonl", {"foo": 1}, "not a score record"),
    ("generations.jsonl", {"foo": 1}, "not a generation record"),
    ("scores.jsonl", {"system": "s", "item_id": "a", "metric": "wer", "values": {"wer": -0.5}, "failure": None},
     "outside the metric's range"),
    ("scores.jsonl", {"system": "s", "item_id": "a", "metric": "sim", "values": {"sim": 1.5}, "failure": None},
     "outside the metric's range"),
    ("scores.jsonl", {"system": "s", "item_id": "a", "metric": "stoi", "values": {"stoi": 7}, "failure": None},
     "outside the metric's range"),
    ("scores.jsonl", {"system": "s", "item_id": "a", "metric": "distillmos", "values": {"distillmos": 40},
                      "failure": None}, "outside the metric's range"),
    ("scores.jsonl", {"system": "s", "item_id": "a", "metric": "pesq", "values": {"pesq": 4.7}, "failure": None},
     "outside the metric's range"),
    ("scores.jsonl", {"system": "s", "item_id": "a", "metric": "wer", "values": {"wer": "0.1"}, "failure": None},
     "finite number"),
    ("scores.jsonl", {"system": "s", "item_id": "a", "metric": "wer", "values": {}, "failure": None},
     "holds no values"),
    ("generations.jsonl", {"system": "s", "item_id": "a", "status": "done", "audio": None, "reason": None},
     '"ok" or "failed"'),
    ("generations.jsonl", {"system": "s", "item_id": "a", "status": "ok", "audio": "x.wav", "reason": None,
                           "rtf": -1}, "finite number >= 0"),
])
def test_every_record_read_back_is_validated(run_folder, run_args, file, bad, message):
    path = run_folder / file
    lines = _lines(path)
    lines.insert(1, json.dumps(bad))
    _write(path, lines)
    reader = read_scores if file == "scores.jsonl" else read_generations
    with pytest.raises(BadResultFile, match=message) as info:
        reader(run_folder)
    assert f"{file} line 2" in str(info.value)
    # The runner reads through the same reader: resuming is a clear error, not a traceback.
    assert run_cli(*run_args) == 1


def test_an_infinite_value_is_refused(run_folder):
    path = run_folder / "scores.jsonl"
    lines = _lines(path)
    lines[0] = lines[0].replace('"seconds": ', '"seconds": 1e999, "was": ', 1)
    _write(path, lines)
    with pytest.raises(BadResultFile, match="finite number"):
        read_scores(run_folder)


def test_only_an_unterminated_last_line_is_a_torn_write(run_folder):
    path = run_folder / "scores.jsonl"
    complete = path.read_text()
    path.write_text(complete + '{"system": "x", "item_')  # a kill mid-write: dropped and cut
    assert len(read_scores(run_folder)) == complete.count("\n")
    assert path.read_text() == complete
    path.write_text(complete + '{"foo": 1}\n')  # complete but not a record: an error, and kept
    with pytest.raises(BadResultFile, match="line"):
        read_scores(run_folder)
    assert path.read_text().endswith('{"foo": 1}\n')
    path.write_text(complete + "not json\n")
    with pytest.raises(BadResultFile, match="not a JSON object"):
        read_jsonl(path)
    assert path.read_text().endswith("not json\n")


def test_changing_one_number_in_the_summary_is_refused(run_folder, capsys):
    path = run_folder / "summary.json"
    summary = json.loads(path.read_text())
    block = summary["systems"][TONE]["metrics"]["duration"]["values"]["seconds"]
    block["mean"] = round(block["mean"] + 0.001, 6)  # still inside its interval
    path.write_text(json.dumps(summary, indent=2))
    assert main(["report", str(run_folder)]) == 1
    assert "changed after it was written" in capsys.readouterr().err


def test_a_summary_that_does_not_match_its_records_is_refused(run_folder, run_args, capsys):
    path = run_folder / "scores.jsonl"
    lines = _lines(path)
    rec = json.loads(lines[0])
    rec["values"]["seconds"] += 0.25
    lines[0] = json.dumps(rec)
    _write(path, lines)
    assert main(["report", str(run_folder)]) == 1
    assert "does not match the records" in capsys.readouterr().err
    # Re-running the same command re-summarises from the records; then the report builds.
    assert run_cli(*run_args) == 0
    assert main(["report", str(run_folder)]) == 0


def _reseal(folder, edit):
    """A summary re-checksummed after an edit: the consistency checks still catch it."""
    path = folder / "summary.json"
    summary = json.loads(path.read_text())
    edit(summary)
    path.write_text(json.dumps(seal(summary)))


def test_an_inconsistent_summary_is_refused_even_with_a_valid_checksum(run_folder):
    def mean_outside_interval(summary):
        summary["systems"][TONE]["metrics"]["duration"]["values"]["seconds"]["mean"] = 99.0

    _reseal(run_folder, mean_outside_interval)
    with pytest.raises(BadResultFile, match="outside its own interval"):
        load_run(run_folder)

    def wrong_count(summary):
        summary["systems"][TONE]["metrics"]["duration"]["values"]["seconds"]["mean"] = 0.6333333333333333
        summary["systems"][TONE]["metrics"]["duration"]["n_items"] = 4

    _reseal(run_folder, wrong_count)
    with pytest.raises(BadResultFile, match="n_items 4 but 3 score records"):
        load_run(run_folder)


def test_the_records_digest_ignores_record_order(run_folder):
    gens, scores = read_generations(run_folder), read_scores(run_folder)
    assert records_digest(gens, scores) == records_digest(gens[::-1], scores[::-1])
    assert records_digest(gens, scores) != records_digest(gens, scores[:-1])
    assert json.loads((run_folder / "summary.json").read_text())["records_digest"] == records_digest(gens, scores)
    assert canonical(load_run(run_folder).summary)  # strict JSON throughout


def test_sweep_records_are_validated_too(tmp_path):
    from bench.sweep import load_records

    good = {"model": "m", "task": "niah-single", "length": 256, "sample_id": "s0", "phase": "prefill",
            "method": "block-sparse", "compression": 2.0, "score": 1.0, "sparsity": 0.5, "failure": None}
    (tmp_path / "spec.json").write_text(json.dumps({"digest": "x", "spec": {"models": ["m"]}}))
    for bad, message in (({"foo": 1}, "not a sweep record"), ({**good, "score": 1.5}, "'score' must be a number in"),
                         ({**good, "compression": 0.5}, "'compression' must be a number >= 1"),
                         ({**good, "phase": "both"}, "dense, prefill or decode"),
                         ({**good, "sparsity": -0.1}, "'sparsity' must be null or a number in")):
        (tmp_path / "records.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(BadResultFile, match=message) as info:
            load_records(tmp_path)
        assert "records.jsonl line 2" in str(info.value)
    failed = {**good, "score": None, "sparsity": None, "failure": "bad_budget"}
    (tmp_path / "records.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(failed) + "\n")
    assert len(load_records(tmp_path)[1]) == 2


def test_appended_records_reach_the_os_at_once_and_the_disk_on_the_interval(tmp_path, monkeypatch):
    """Every record is readable by another process as soon as it is appended (a kill loses
    nothing); fsync runs on every write by default, and with sync_interval_s at most that often."""
    import bench.jsonio as jsonio

    synced = []
    monkeypatch.setattr(jsonio.os, "fsync", lambda fd: synced.append(fd))
    path = tmp_path / "records.jsonl"
    with jsonio.JsonlAppender(path, sync_interval_s=60.0) as out:
        for i in range(10):
            out.append({"i": i})
            assert [r["i"] for r in read_jsonl(path)] == list(range(i + 1))
        assert synced == []  # within the interval
    assert len(synced) == 1  # at close
    synced.clear()
    with jsonio.JsonlAppender(tmp_path / "each.jsonl") as out:
        out.append({"i": 0})
        out.extend([{"i": 1}, {"i": 2}])
        assert len(synced) == 2

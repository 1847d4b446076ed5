"""The static leaderboard: comparable runs ranked with CIs and tiers, incomparable runs set apart
with the reason, tampered or malformed result folders refused in the build log and never shown;
pages inert in headless Chromium; `add` keeps records only."""

from __future__ import annotations

import json
import shutil

import pytest

from bench.cli import main
from bench.results import seal
from leaderboard.build import build
from tests.browser import Elements, needs_chromium, open_page
from tests.test_report import rename_system
from tests.test_runner import REPO, TASK, TONE, only_run_folder, write_manifest


@pytest.fixture()
def results(tmp_path, monkeypatch):
    """leaderboard results: the tone system, a slightly shorter and a much shorter variant (three
    runs of one task), plus a run of the same task scored by another evaluator revision."""
    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(REPO)
    manifest = write_manifest(tmp_path, {f"u{k:02d}": "x" * (5 + k % 6) for k in range(24)})
    common = ["run", "--no-progress", "--task", TASK, "--task-opt", f"manifest={manifest}",
              "--metrics", "tests.plugins:DurationMetric,tests.plugins:FlakyMetric"]
    folders = {}
    for name, spc in (("base", None), ("close", 0.0999), ("short", 0.05)):
        system = TONE if spc is None else f"{TONE}@{name}"
        extra = [] if spc is None else ["--system-opt", f"{system}.seconds_per_char={spc}"]
        assert main([*common, "--systems", system, *extra, "--out", str(tmp_path / "runs" / name)]) == 0
        folders[name] = only_run_folder(tmp_path / "runs" / name)
    store = tmp_path / "results"
    for name, folder in folders.items():
        assert main(["leaderboard", "add", str(folder), "--results", str(store)]) == 0
    return store, folders


def test_the_board_ranks_comparable_runs_with_tiers(results, tmp_path):
    store, _ = results
    stats = build([store], tmp_path / "site")
    assert stats == {"boards": 1, "runs": 3, "refused": 0, "apart": 0}
    page = (tmp_path / "site" / "manifest.html").read_text()
    rows = page.split("<tr class=")[1:]
    # duration: higher is better; the base and the almost identical variant lead, the short one is last.
    assert "ToneSystem</td>" in rows[0] and "@short" in rows[2]
    tiers = [row.split("<td>")[2].split("</td>")[0] for row in rows]
    assert tiers[-1] != tiers[0]  # clearly worse: its own tier
    # The runs' other metrics stand beside the ranking, each the summary's mean.
    summary = json.loads((next(store.iterdir()) / "summary.json").read_text())
    system, block = next(iter(summary["systems"].items()))
    ranked, *others = block["metrics"]
    header = page.split("<tr>")[1].split("</tr>")[0]
    for name in others:
        assert f"<th>{name}" in header
    own = next(row for row in rows if f">{system}</td>" in row)
    mean = block["metrics"][others[0]]["values"][block["metrics"][others[0]]["primary"]]["mean"]
    scale = 100.0 if others[0] in ("wer", "cer") else 1.0
    assert f"<td>{scale * mean:.2f} <span class=ci>" in own
    # Every number links to its run's page, which exists in the site.
    for link in {part.split('"')[0] for part in page.split('href="runs/')[1:]}:
        assert (tmp_path / "site" / "runs" / link).is_file()
    # No audio was copied: the records only.
    assert all(sorted(p.name for p in f.iterdir()) == ["generations.jsonl", "scores.jsonl", "spec.json", "summary.json"]
               for f in store.iterdir())


def test_tampered_and_incomparable_results_are_refused_or_set_apart(results, tmp_path):
    store, _ = results
    folders = sorted(store.iterdir())
    # One folder edited by hand: refused, never rendered.
    edited = folders[0]
    summary = json.loads((edited / "summary.json").read_text())
    system = next(iter(summary["systems"]))
    summary["systems"][system]["metrics"]["duration"]["values"]["seconds"]["mean"] += 0.01
    (edited / "summary.json").write_text(json.dumps(summary))
    # One scored by another evaluator revision (consistent and sealed): set apart, with the reason.
    other = store / "rescored-elsewhere"
    shutil.copytree(folders[1], other)
    summary = json.loads((other / "summary.json").read_text())
    summary["evaluators"]["duration"] = "duration-2"
    (other / "summary.json").write_text(json.dumps(seal(summary)))
    # A folder that holds no run at all.
    (store / "junk").mkdir()
    (store / "junk" / "summary.json").write_text("{not json")
    stats = build([store], tmp_path / "site")
    assert stats["refused"] == 2 and stats["apart"] == 1
    log = (tmp_path / "site" / "build-log.txt").read_text()
    assert f"REFUSED  {edited.name}: " in log and "changed after it was written" in log
    assert f"apart    {other.name}: duration evaluator 'duration-2'" in log
    board = (tmp_path / "site" / "manifest.html").read_text()
    assert edited.name not in board and other.name not in board
    assert not (tmp_path / "site" / "runs" / f"{edited.name}.html").exists()


@needs_chromium
def test_pages_render_in_chromium_with_names_inert(results, tmp_path):
    store, _ = results
    victim = sorted(store.iterdir())[0]
    name = json.loads((victim / "summary.json").read_text())["systems"]
    rename_system(victim, next(iter(name)), "<img src=x onerror=alert(1)><script>alert(2)</script>")
    build([store], tmp_path / "site")
    for page in ("index.html", "manifest.html", f"runs/{victim.name}.html"):
        dom, console = open_page(tmp_path / "site" / page)
        assert console == [], (page, console)
        elements = Elements(dom)
        assert "img" not in elements.tags and not [a for a in elements.attributes if a[1].startswith("on")]
        assert all("alert" not in s for s in elements.scripts)


def test_a_board_with_too_few_items_says_tiers_cannot_separate(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(REPO)
    manifest = write_manifest(tmp_path, {f"u{k}": "x" * (4 + k) for k in range(5)})
    short = f"{TONE}@short"
    assert main(["run", "--no-progress", "--task", TASK, "--task-opt", f"manifest={manifest}", "--systems",
                 f"{TONE},{short}", "--system-opt", f"{short}.seconds_per_char=0.05", "--out", str(tmp_path / "r")]) == 0
    store = tmp_path / "results"
    assert main(["leaderboard", "add", str(only_run_folder(tmp_path / "r")), "--results", str(store)]) == 0
    build([store], tmp_path / "site")
    page = (tmp_path / "site" / "manifest.html").read_text()
    # 5 items: the smallest two-sided sign-flip p is 2^-4 = 0.0625 > alpha: every entry in tier 1, and said so.
    assert "Tiers cannot separate anything here" in page and "smallest possible p-value is 0.0625" in page

"""`bench gate`: the paired one-sided test (false alarms at most alpha, injected regressions
caught) and the command end to end on real runs (pass, regression, cannot decide; Markdown and
JUnit outputs)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from bench.cli import main
from bench.stats import paired_worsening_test
from tests.test_runner import REPO, TASK, TONE, only_run_folder, run_cli, write_manifest


def _noisy_pair(rng, n):
    """Two runs of one system that differ only by sampling noise: each item has its own true WER
    and each run draws around it."""
    true = rng.uniform(0.0, 0.4, n)
    return (np.clip(true + rng.normal(0, 0.08, n), 0, None), np.clip(true + rng.normal(0, 0.08, n), 0, None))


def test_false_alarm_rate_of_noise_only_pairs_is_at_most_alpha():
    rng = np.random.default_rng(0)
    alpha, trials = 0.05, 600
    alarms = 0
    for k in range(trials):
        base, cand = _noisy_pair(rng, 40)
        test = paired_worsening_test(base, cand, higher_is_better=False, seed=k, resamples=2000)
        alarms += test["p_value"] < alpha
    # The sign-flip test is exact: its expected rate is at most alpha. Allow two binomial SDs.
    assert alarms / trials <= alpha + 2 * np.sqrt(alpha * (1 - alpha) / trials), alarms


def test_a_regression_of_a_few_wer_points_is_caught():
    rng = np.random.default_rng(1)
    base, cand = _noisy_pair(rng, 36)
    test = paired_worsening_test(base, cand + 0.04, higher_is_better=False)  # 4 WER points worse
    assert test["p_value"] < 0.05 and test["difference"] == pytest.approx(np.mean(cand + 0.04 - base))
    # The same shift inside the tolerance is not a regression; an improvement never is.
    assert paired_worsening_test(base, cand + 0.04, higher_is_better=False, tolerance=0.1)["p_value"] > 0.05
    assert paired_worsening_test(base, base - 0.05, higher_is_better=False)["p_value"] > 0.5
    # Direction: for a higher-is-better metric a drop is the regression.
    assert paired_worsening_test(base, base - 0.05, higher_is_better=True)["p_value"] < 0.05


def test_identical_runs_never_regress():
    values = np.linspace(0, 1, 30)
    assert paired_worsening_test(values, values, higher_is_better=False)["p_value"] == 1.0


@pytest.fixture()
def runs(tmp_path, monkeypatch):
    """A baseline run of the tone system, and a candidate run that holds it and a worse variant."""
    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(REPO)
    manifest = write_manifest(tmp_path, {f"u{k:02d}": "x" * (5 + k % 7) for k in range(30)})
    common = ["--task", TASK, "--task-opt", f"manifest={manifest}"]
    assert run_cli("--systems", TONE, *common, "--out", str(tmp_path / "base")) == 0
    worse = f"{TONE}@short"
    assert run_cli("--systems", f"{TONE},{worse}", *common, "--system-opt", f"{worse}.seconds_per_char=0.09",
                   "--out", str(tmp_path / "cand")) == 0
    return only_run_folder(tmp_path / "base"), only_run_folder(tmp_path / "cand"), worse


def test_gate_passes_a_run_against_itself_and_a_same_system(runs, tmp_path, capsys):
    base, cand, _ = runs
    assert main(["gate", "--baseline", str(base), "--candidate", str(base)]) == 0
    assert main(["gate", "--baseline", str(base), "--candidate", str(cand), "--junit", str(tmp_path / "j.xml"),
                 "--markdown", str(tmp_path / "g.md")]) == 0  # the same system in both: identical
    out = capsys.readouterr().out
    assert "gate: pass" in out
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert suite.get("failures") == "0" and int(suite.get("tests")) >= 1
    assert "**pass**" in (tmp_path / "g.md").read_text()


def test_gate_fails_a_worse_system_with_a_readable_reason(runs, tmp_path, capsys):
    base, cand, worse = runs
    code = main(["gate", "--baseline", str(base), "--candidate", str(cand), "--baseline-system", TONE,
                 "--candidate-system", worse, "--junit", str(tmp_path / "j.xml"), "--markdown", str(tmp_path / "g.md")])
    assert code == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "duration.seconds worse by" in out and "p = " in out
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert suite.get("failures") == "1" and suite.find("testcase/failure") is not None
    assert "**regression**" in (tmp_path / "g.md").read_text()
    # A tolerance wider than the drop (0.1 s/char -> 0.09 s/char, at most 0.12 s) lets it pass.
    rules = tmp_path / "gate.toml"
    rules.write_text("[metrics.duration]\ntolerance = 0.2\n")
    assert main(["gate", "--baseline", str(base), "--candidate", str(cand), "--baseline-system", TONE,
                 "--candidate-system", worse, "--rules", str(rules)]) == 0


def test_gate_cannot_decide_on_incomparable_inputs(runs, tmp_path, capsys):
    base, cand, _ = runs
    assert main(["gate", "--baseline", str(base), "--candidate", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # Another task (other items): refused.
    (tmp_path / "o").mkdir()
    other = write_manifest(tmp_path / "o", {"z": "zzz"})
    assert run_cli("--systems", TONE, "--task", TASK, "--task-opt", f"manifest={other}",
                   "--out", str(tmp_path / "other")) == 0
    assert main(["gate", "--baseline", str(base), "--candidate", str(only_run_folder(tmp_path / "other"))]) == 2
    assert "different items" in capsys.readouterr().err
    bad_rules = tmp_path / "bad.toml"
    bad_rules.write_text("[metrics.duration]\ntolerence = 0.2\n")
    assert main(["gate", "--baseline", str(base), "--candidate", str(cand), "--rules", str(bad_rules)]) == 2
    assert "unknown key(s) tolerence" in capsys.readouterr().err


def test_gate_refuses_missing_items_and_other_evaluators(runs, tmp_path, capsys):
    from bench.results import read_generations, read_scores, records_digest, seal

    base, cand, _ = runs
    # The candidate lost items: cannot decide (a consistent, sealed summary, so only the gate objects).
    lines = [json.loads(x) for x in (cand / "scores.jsonl").read_text().splitlines()]
    kept = [r for r in lines if not (r["system"] == TONE and r["item_id"] in ("u00", "u01"))]
    (cand / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    summary = json.loads((cand / "summary.json").read_text())
    summary["systems"][TONE]["metrics"]["duration"]["n_items"] -= 2
    summary["records_digest"] = records_digest(read_generations(cand), read_scores(cand))
    (cand / "summary.json").write_text(json.dumps(seal(summary)))
    assert main(["gate", "--baseline", str(base), "--candidate", str(cand)]) == 2
    assert "2 item(s) scored in the baseline are missing" in capsys.readouterr().err
    # Another evaluator revision: not comparable.
    summary = json.loads((base / "summary.json").read_text())
    summary["evaluators"]["duration"] = "duration-2"
    (base / "summary.json").write_text(json.dumps(seal(summary)))
    assert main(["gate", "--baseline", str(base), "--candidate", str(base)]) == 0  # itself: same revision
    capsys.readouterr()
    assert main(["gate", "--baseline", str(base), "--candidate", str(cand)]) == 2
    assert "evaluator revisions differ" in capsys.readouterr().err


def test_gate_says_when_the_runs_machines_differ_in_what_moves_scores(runs, tmp_path, capsys):
    """Another CPU instruction set or package version is named beside the verdict, which it does not change."""
    from bench.results import seal

    base, cand, _ = runs
    assert main(["gate", "--baseline", str(base), "--candidate", str(cand)]) == 0
    assert "note:" not in capsys.readouterr().out  # the same machine
    summary = json.loads((base / "summary.json").read_text())
    summary["environment"]["cpu_flags"] = ["avx2", "fma", "avx512f", "avx512_vnni"]
    summary["environment"]["packages"]["numpy"] = "0.0-other"
    (base / "summary.json").write_text(json.dumps(seal(summary)))
    assert main(["gate", "--baseline", str(base), "--candidate", str(cand), "--markdown", str(tmp_path / "g.md")]) == 0
    out = capsys.readouterr().out
    assert "note: the runs' CPUs differ in instruction sets (baseline: avx2 fma avx512f avx512_vnni;" in out
    assert "numpy 0.0-other -> " in out and "gate: pass" in out
    assert "> Note: the runs' CPUs differ" in (tmp_path / "g.md").read_text()
    del summary["environment"]["cpu_flags"]  # a run made before the flags were recorded
    (base / "summary.json").write_text(json.dumps(seal(summary)))
    assert main(["gate", "--baseline", str(base), "--candidate", str(cand)]) == 0
    assert "the baseline run does not record its CPU's instruction sets" in capsys.readouterr().out

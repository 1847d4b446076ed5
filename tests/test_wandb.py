"""--wandb logs a finished run and a sweep offline; the offline files, read back, hold the spec,
the summary values, the per-item table with audio, and the sweep's records and figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main
from tests.test_runner import REPO, TASK, TONE, only_run_folder, run_cli, write_manifest
from tests.wandb_files import read_offline_run

pytest.importorskip("wandb")


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # where wandb stages media files
    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(REPO)


def _offline_dirs(root: Path) -> list[Path]:
    return sorted(root.glob("**/wandb/offline-run-*"))


def test_a_run_is_logged_with_config_summary_and_items(tmp_path):
    manifest = write_manifest(tmp_path, {"a": "hello", "b": "NAN", "c": "abc"})
    assert run_cli("--systems", TONE, "--task", TASK, "--task-opt", f"manifest={manifest}",
                   "--out", str(tmp_path / "out"), "--wandb", "--wandb-project", "test") == 0
    folder = only_run_folder(tmp_path / "out")
    [directory] = _offline_dirs(folder)
    logged = read_offline_run(directory)
    summary = json.loads((folder / "summary.json").read_text())
    assert logged["config"]["spec_digest"] == summary["spec_digest"]
    assert logged["config"]["evaluators"] == {"duration": "duration-1"}
    mean = summary["systems"][TONE]["metrics"]["duration"]["values"]["seconds"]["mean"]
    assert logged["summary"][f"{TONE}/duration.seconds/mean"] == pytest.approx(mean)
    assert logged["summary"][f"{TONE}/duration/n_failed"] == 1
    table = logged["tables"]["items"]
    assert table["columns"] == ["system", "item_id", "status", "reason", "duration", "transcript", "audio"]
    rows = {r[1]: r for r in table["data"]}
    assert rows["b"][2:4] == ["failed", "nan"] and rows["b"][-1] is None
    assert rows["a"][4] == pytest.approx(0.5) and rows["a"][-1] == "Audio"
    # The two good items' audio travels with the table (staged by wandb for upload), byte for byte.
    import hashlib

    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    staged = {digest(p) for p in (tmp_path / "wandb-data").rglob("*") if p.is_file()}
    outputs = {digest(folder / g["audio"]) for g in map(json.loads, (folder / "generations.jsonl").read_text().splitlines())
               if g["status"] == "ok"}
    assert len(outputs) == 2 and outputs <= staged


def test_a_sweep_is_logged_with_records_and_figures(tmp_path):
    pytest.importorskip("torch")
    from systems.lm.data import WordTokenizer
    from systems.lm.model import init_params, save_checkpoint, size_config

    tokenizer = WordTokenizer.default()
    ckpt = tmp_path / "xs"
    save_checkpoint(ckpt, init_params(size_config("xs", tokenizer.vocab_size, 1024), seed=3),
                    size_config("xs", tokenizer.vocab_size, 1024), tokenizer)
    assert main(["sweep", "--no-progress", "--models", "tiny-llama-xs", "--model-opt", f"tiny-llama-xs.checkpoint={ckpt}",
                 "--tasks", "niah-single", "--lengths", "256", "--prefill-methods", "block-sparse",
                 "--decode-methods", "quest", "--samples", "2", "--compressions", "2", "--out", str(tmp_path / "sw"),
                 "--wandb"]) == 0
    [directory] = _offline_dirs(tmp_path / "sw")
    logged = read_offline_run(directory)
    assert "spec" in logged["config"] and logged["summary"]["n_records"] == 2 * 3
    assert len(logged["tables"]["records"]["data"]) == 6
    assert any(key.startswith("frontier") for key in logged["history_keys"])

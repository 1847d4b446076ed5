"""The Ray executor on a local 2-CPU Ray cluster started inside the test: the same records and
summaries as the local executor, resume across executors, and a worker killed mid-run."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.executor import ExecutorOptions
from bench.jsonio import read_jsonl
from tests.test_runner import DUR, TASK, TONE, only_run_folder, write_manifest

ray = pytest.importorskip("ray", reason="the ray extra (pip install -e '.[ray]') is part of the test set-up")
REPO = Path(__file__).resolve().parents[1]
# What may differ between two executions of one spec: timings, the machine, when, and how.
VOLATILE = {"created", "wall_s", "settings", "environment", "scoring_peak_rss_mb", "records_digest", "performance",
            "harness_commit", "checksum"}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
             runtime_env={"working_dir": None, "env_vars": {"PYTHONPATH": str(REPO)}})
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(REPO)


def stable(summary: dict) -> dict:
    if isinstance(summary, dict):
        return {k: stable(v) for k, v in summary.items() if k not in VOLATILE}
    return summary


def texts(n: int) -> dict[str, str]:
    return {f"item{i:02d}": "tone " * (1 + i % 4) for i in range(n)}


def run(tmp_path: Path, out: str, *extra: str, n: int = 8, system_opts: tuple = ()) -> Path:
    manifest = write_manifest(tmp_path, {**texts(n), "bad": "SILENT"})
    args = ["run", "--no-progress", "--systems", TONE, "--task", TASK, "--task-opt", f"manifest={manifest}",
            "--metrics", DUR, "--batch-size", "3", "--out", str(tmp_path / out), *extra]
    for opt in system_opts:
        args += ["--system-opt", f"{TONE}.{opt}"]
    assert main(args) == 0
    return only_run_folder(tmp_path / out)


def test_a_run_on_ray_gives_the_local_summary_and_resumes_either_way(cluster, tmp_path):
    local = run(tmp_path, "local")
    on_ray = run(tmp_path, "ray", "--executor", "ray", "--ray-workers", "2", "--no-cache")  # Ray scores all
    assert local.name == on_ray.name  # the executor is not part of the spec
    a = json.loads((local / "summary.json").read_text())
    b = json.loads((on_ray / "summary.json").read_text())
    assert stable(a) == stable(b)
    assert b["settings"]["executor"] == {"kind": "ray", "address": None, "workers": 2, "cpus_per_worker": None,
                                          "max_retries": 2}
    assert a["settings"]["executor"] == {"kind": "local"}
    assert b["systems"][TONE]["metrics"]["duration"]["n_failed"] == 1  # the silent item counts on Ray too
    key = lambda r: (r["item_id"], r.get("metric", ""))  # noqa: E731
    gens = {g["item_id"]: g["status"] for g in read_jsonl(on_ray / "generations.jsonl")}
    assert gens == {g["item_id"]: g["status"] for g in read_jsonl(local / "generations.jsonl")}
    assert sorted(map(key, read_jsonl(on_ray / "scores.jsonl"))) == sorted(map(key, read_jsonl(local / "scores.jsonl")))
    # A run cut short on Ray (only its generations kept) resumes locally, and the other way round.
    (on_ray / "scores.jsonl").unlink()
    run(tmp_path, "ray", "--no-cache")
    assert len(read_jsonl(on_ray / "scores.jsonl")) == 9
    (local / "scores.jsonl").unlink()
    run(tmp_path, "local", "--no-cache", "--executor", "ray")
    assert stable(json.loads((local / "summary.json").read_text())) == stable(a)


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(cluster, tmp_path):
    manifest_items = 8
    done = threading.Event()
    failure: list[BaseException] = []

    def go() -> None:
        try:
            run(tmp_path, "killed", "--executor", "ray", "--ray-workers", "2", "--no-warmup",
                n=manifest_items, system_opts=("delay=0.6",))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            failure.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=go)
    thread.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and not done.is_set():
        names = [n for n in ray.util.list_named_actors() if n.startswith(f"bench:system:{TONE}:")]
        folders = list((tmp_path / "killed").glob("*/generations.jsonl")) if (tmp_path / "killed").exists() else []
        if names and folders and len(read_jsonl(folders[0])) >= 2:
            killed = names[0]
            ray.kill(ray.get_actor(killed), no_restart=True)  # Ray's own kill, mid-item
        time.sleep(0.1)
    thread.join(timeout=300)
    assert not failure, failure
    assert killed is not None, "the run ended before a worker could be killed"
    folder = only_run_folder(tmp_path / "killed")
    gens = read_jsonl(folder / "generations.jsonl")
    ids = [g["item_id"] for g in gens]
    assert sorted(ids) == sorted([*texts(manifest_items), "bad"])  # each item exactly once
    assert {g["item_id"]: g["status"] for g in gens if g["status"] != "ok"} == {"bad": "failed"}
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["systems"][TONE]["complete"] is True


def test_a_system_that_cannot_load_fails_every_item_on_ray_too(cluster, tmp_path):
    folder = run(tmp_path, "noload", "--executor", "ray", "--load-timeout", "2", n=3, system_opts=("load_hang=1",))
    gens = read_jsonl(folder / "generations.jsonl")
    assert len(gens) == 4 and {g["reason"] for g in gens} == {"load_timeout"}


def test_the_per_item_timeout_and_crash_isolation_hold_on_ray(cluster, tmp_path):
    manifest = write_manifest(tmp_path, {"ok1": "fine", "hang": "HANG now", "crash": "CRASH now", "ok2": "fine too"})
    assert main(["run", "--no-progress", "--systems", TONE, "--task", TASK, "--task-opt", f"manifest={manifest}",
                 "--metrics", DUR, "--timeout", "3", "--no-warmup", "--out", str(tmp_path / "out"),
                 "--executor", "ray", "--ray-workers", "1"]) == 0
    gens = {g["item_id"]: g for g in read_jsonl(only_run_folder(tmp_path / "out") / "generations.jsonl")}
    assert {k: g["reason"] for k, g in gens.items()} == {"ok1": None, "ok2": None, "hang": "timeout",
                                                         "crash": "crashed"}


def test_a_sweep_on_ray_writes_the_local_records(cluster, tmp_path):
    pytest.importorskip("torch")
    from systems.lm.data import WordTokenizer
    from systems.lm.model import init_params, save_checkpoint, size_config

    tokenizer = WordTokenizer.default()
    config = size_config("xs", tokenizer.vocab_size, 1024)
    ckpt = tmp_path / "xs"
    save_checkpoint(ckpt, init_params(config, seed=3), config, tokenizer)

    def sweep(out: str, *extra: str) -> list[dict]:
        assert main(["sweep", "--no-progress", "--no-analysis", "--models", "tiny-llama-xs", "--model-opt",
                     f"tiny-llama-xs.checkpoint={ckpt}", "--tasks", "niah-single", "--lengths", "256",
                     "--prefill-methods", "block-sparse", "--decode-methods", "quest", "--samples", "2",
                     "--compressions", "2,400", "--out", str(tmp_path / out), *extra]) == 0
        records = read_jsonl(next((tmp_path / out).iterdir()) / "records.jsonl")
        return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in records),
                      key=lambda r: json.dumps(r, sort_keys=True))

    assert sweep("local") == sweep("ray", "--executor", "ray", "--ray-workers", "2")


def test_executor_options_are_checked():
    with pytest.raises(BenchError, match="need --executor ray"):
        ExecutorOptions(kind="local", workers=2)
    with pytest.raises(BenchError, match="at least 1"):
        ExecutorOptions(kind="ray", workers=0)
    with pytest.raises(BenchError, match="unknown executor"):
        ExecutorOptions(kind="dask")
    with pytest.raises(BenchError, match="need --executor ray"):
        ExecutorOptions(kind="local", cpus_per_worker=2)
    with pytest.raises(BenchError, match="above 0"):
        ExecutorOptions(kind="ray", cpus_per_worker=0)


def test_actor_resources_come_from_the_plugin_unless_the_user_sets_cpus():
    from bench.ray_executor import actor_options

    declared = {"num_cpus": 1, "num_gpus": 1, "memory": 2e9}
    assert actor_options(declared, ExecutorOptions(kind="ray")) == declared
    assert actor_options(None, ExecutorOptions(kind="ray")) == {"num_cpus": 1}
    assert actor_options(declared, ExecutorOptions(kind="ray", cpus_per_worker=4)) == {**declared, "num_cpus": 4}
    with pytest.raises(BenchError, match="num_cpus, num_gpus and memory"):
        actor_options({"cores": 2}, ExecutorOptions(kind="ray"))

"""`bench sweep` and `bench fit` end to end, on small randomly initialised checkpoints of our model
family (accuracy is not the point here: records, sparsity, failures, resume and the analyses are)."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.jsonio import read_jsonl

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    from systems.lm.data import WordTokenizer
    from systems.lm.model import init_params, save_checkpoint, size_config

    tokenizer = WordTokenizer.default()
    config = size_config("xs", tokenizer.vocab_size, 1024)
    folder = tmp_path_factory.mktemp("ckpt") / "xs"
    save_checkpoint(folder, init_params(config, seed=3), config, tokenizer)
    return folder


def sweep_args(ckpt, out, *extra):
    return ["sweep", "--no-progress", "--models", "tiny-llama-xs", "--model-opt",
            f"tiny-llama-xs.checkpoint={ckpt}", "--tasks", "niah-single", "--lengths", "256",
            "--prefill-methods", "block-sparse", "--decode-methods", "quest", "--samples", "3",
            "--out", str(out), *extra]


def test_sweep_records_resume_and_analysis(random_checkpoint, tmp_path, capsys):
    out = tmp_path / "sweeps"
    assert main(sweep_args(random_checkpoint, out, "--compressions", "2,400")) == 0
    folder = next(out.iterdir())
    records = read_jsonl(folder / "records.jsonl")
    # 3 samples x (dense + block-sparse x 2 + quest x 2)
    assert len(records) == 3 * 5
    dense = [r for r in records if r["method"] == "dense"]
    assert len(dense) == 3 and all(r["sparsity"] == 0.0 for r in dense)
    ok = [r for r in records if r["compression"] == 2.0]
    assert all(r["failure"] is None and 0.2 < r["sparsity"] < 0.8 for r in ok), ok
    unreachable = [r for r in records if r["compression"] == 400.0 and r["method"] == "block-sparse"]
    assert unreachable and all(r["failure"] == "bad_budget" for r in unreachable)
    assert (folder / "samples").is_dir() and (folder / "models" / "tiny-llama-xs.json").is_file()
    analysis = folder / "analysis"
    for name in ("accuracy.json", "frontier.json", "safe_sparsity.json", "scaling.json", "report.txt",
                 "frontier.png"):
        assert (analysis / name).is_file(), name
    assert "Tango" in (analysis / "report.txt").read_text()
    # The same command again adds nothing.
    assert main(sweep_args(random_checkpoint, out, "--compressions", "2,400")) == 0
    assert len(read_jsonl(folder / "records.jsonl")) == 15
    # `bench fit` re-analyses from the records alone.
    assert main(["fit", str(folder), "--margin", "0.2"]) == 0
    assert json.loads((analysis / "safe_sparsity.json").read_text())["margin"] == 0.2


def test_sweep_rejects_bad_grids(random_checkpoint, tmp_path):
    with pytest.raises(BenchError, match="beyond model"):
        main_raising(sweep_args(random_checkpoint, tmp_path, "--compressions", "2"), length="4096")
    assert main(sweep_args(random_checkpoint, tmp_path, "--compressions", "0.5")) == 1
    # Non-finite compressions and lengths that are not whole numbers: clear errors before running.
    for bad in ("nan", "inf", "2,nan"):
        with pytest.raises(BenchError, match="finite"):
            main_raising(sweep_args(random_checkpoint, tmp_path, "--compressions", bad), length="256")
    for bad in ("nan", "inf", "2.5"):
        with pytest.raises(BenchError, match="--lengths"):
            main_raising(sweep_args(random_checkpoint, tmp_path, "--compressions", "2"), length=bad)
    assert not any(p.name.startswith("sweep-") and (p / "records.jsonl").exists() and
                   (p / "records.jsonl").stat().st_size for p in tmp_path.iterdir() if p.is_dir()), \
        "a rejected grid must not run"
    assert main(["sweep", "--models", "flite", "--tasks", "niah-single", "--lengths", "256",
                 "--out", str(tmp_path)]) == 1


def main_raising(args, length):
    """Run the sweep command in-process so the BenchError itself can be asserted."""
    from bench.cli import _cmd_sweep, build_parser

    args = [a if a != "256" else length for a in args]
    return _cmd_sweep(build_parser().parse_args(args))


def test_task_and_method_options_reach_the_generators_and_methods(random_checkpoint, tmp_path):
    """--task-opt changes the samples, --method-opt the method's structure; both are in the spec
    (so a different option is a different sweep folder), and --jobs runs models side by side
    without changing a record."""
    base = ["--tasks", "niah-multikey", "--task-opt", "niah-multikey.haystack=noise",
            "--method-opt", "block-sparse.block=16", "--compressions", "4"]
    args = sweep_args(random_checkpoint, tmp_path / "one", *base)  # the later --tasks wins
    assert main(args) == 0
    folder = next((tmp_path / "one").iterdir())
    spec = json.loads((folder / "spec.json").read_text())["spec"]
    assert spec["task_options"] == {"niah-multikey": {"haystack": "noise"}}
    assert spec["method_options"] == {"block-sparse": {"block": 16}}
    samples = read_jsonl(next((folder / "samples").iterdir()))
    assert {s["metadata"]["haystack"] for s in samples} == {"noise"}
    records = read_jsonl(folder / "records.jsonl")
    block16 = [r for r in records if r["method"] == "block-sparse"]
    # With 64-token blocks a 256-token prompt has 4 blocks and cannot reach C=4; with 16 it can.
    assert block16 and all(r["failure"] is None for r in block16), block16
    # Two copies of the model (two names for the same checkpoint) in two jobs: same records.
    two = ["--models", "tiny-llama-xs,tiny-llama", "--model-opt", f"tiny-llama.checkpoint={random_checkpoint}",
           "--jobs", "2"]
    args2 = args[:args.index("--models")] + two + args[args.index("--models") + 2:]
    args2[args2.index(str(tmp_path / "one"))] = str(tmp_path / "two")
    assert main(args2) == 0
    records2 = read_jsonl(next((tmp_path / "two").iterdir()) / "records.jsonl")
    by_model = {m: sorted((r["sample_id"], r["method"], r["compression"], r["score"], r["sparsity"])
                          for r in records2 if r["model"] == m) for m in ("tiny-llama-xs", "tiny-llama")}
    assert by_model["tiny-llama-xs"] == by_model["tiny-llama"] == sorted(
        (r["sample_id"], r["method"], r["compression"], r["score"], r["sparsity"]) for r in records)
    with pytest.raises(BenchError, match="not in the grid"):
        main_raising(sweep_args(random_checkpoint, tmp_path, "--compressions", "2", "--method-opt", "snapkv.window=8"),
                     length="256")


@pytest.mark.parametrize("extra,match", [
    (["--prefill-methods", "nosuch"], r"unknown prefill method 'nosuch'.*prefill methods: block-sparse, "),
    (["--prefill-methods", "snapkv"], r"'snapkv' is a decode method.*prefill methods: .*vertical-slash"),
    (["--decode-methods", "block-sparse"], r"'block-sparse' is a prefill method.*decode methods: .*quest"),
    (["--prefill-methods", "streaming", "--method-opt", "streaming.window=abc"],
     r"streaming\.window.*budget.*--compressions"),
    (["--method-opt", "quest.page_size=abc"], r"quest\.page_size must be an integer >= 1, got 'abc'"),
    (["--method-opt", "quest.page_size=0"], r"quest\.page_size must be an integer >= 1, got 0"),
    (["--method-opt", "block-sparse.blok=8"], r"'block-sparse' has no option 'blok'; its options: block, implementation"),
    (["--method-opt", "block-sparse.implementation=fast"], r"one of 'gather', 'mask'"),
])
def test_unknown_methods_and_options_fail_before_any_model_loads(random_checkpoint, tmp_path, monkeypatch,
                                                                 extra, match):
    """Method names and options are checked like models and tasks: a clear error naming what is
    valid, raised before a worker starts (today a bogus method ran and was reported as 'safe')."""
    from bench import sweep
    from bench.sweep import BadMethod

    def no_worker(*args, **kwargs):
        raise AssertionError("a model was loaded before the grid was checked")

    monkeypatch.setattr(sweep, "SystemWorker", no_worker)
    with pytest.raises(BadMethod, match=match):
        main_raising(sweep_args(random_checkpoint, tmp_path, "--compressions", "2", *extra), length="256")
    assert issubclass(BadMethod, BenchError)
    assert main(sweep_args(random_checkpoint, tmp_path, "--compressions", "2", *extra)) == 1
    assert not any(tmp_path.glob("sweep-*/records.jsonl"))


def test_records_keep_the_tokens_the_model_processed(random_checkpoint, tmp_path):
    """The prompt's token count with its BOS (what the cost model should count) is in every record."""
    assert main(sweep_args(random_checkpoint, tmp_path, "--compressions", "2", "--no-analysis")) == 0
    records = read_jsonl(next(tmp_path.glob("sweep-*")) / "records.jsonl")
    assert {r["n_context_tokens"] for r in records if not r["failure"]} == {257}

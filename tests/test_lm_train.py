"""Training the tiny family: determinism, the loss going down, checkpoints + manifest on disk."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

torch = pytest.importorskip("torch")

from bench.errors import BenchError  # noqa: E402
from systems.lm import train  # noqa: E402
from systems.lm.model import load_checkpoint  # noqa: E402


def micro_recipe(seed: int = 0) -> train.TrainConfig:
    phases = (train.Phase(25, 8, 90, 140, train.WARMUP_MIX), train.Phase(5, 4, 160, 220, train.FULL_MIX))
    return train.TrainConfig(size="xs", phases=phases, seed=seed, warmup=5, eval_lengths=(256,), eval_samples=2)


def test_training_is_deterministic_by_seed_and_lowers_the_loss():
    params_a, config, _, record_a = train.train(micro_recipe(), log=lambda _: None)
    params_b, _, _, record_b = train.train(micro_recipe(), log=lambda _: None)
    for name in params_a:
        assert torch.equal(params_a[name], params_b[name]), name
    assert [h["loss"] for h in record_a["history"]] == [h["loss"] for h in record_b["history"]]
    params_c, _, _, _ = train.train(micro_recipe(seed=1), log=lambda _: None)
    assert not torch.equal(params_a["model.norm.weight"], params_c["model.norm.weight"])
    # 30 steps take the loss (logged at the end of each phase) from ln(vocab) ~ 6.8 (x 1.5 with the prompt term) to well below.
    assert record_a["history"][-1]["loss"] < 0.75 * 1.5 * math.log(config.vocab_size)
    assert set(record_a["heldout_exact_match"]["256"]) == {d.task for d in train.EVAL_MIX}
    assert record_a["phase_steps"] == [25, 5]


def test_main_writes_checkpoints_config_and_a_manifest_that_catches_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "default_recipe", lambda size, seed=0, scale=1.0: dataclasses.replace(
        micro_recipe(seed), size=size))
    out = tmp_path / "ckpt"
    assert train.main(["--sizes", "xs", "--out", str(out)]) == 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "train_log.json"):
        assert (out / "xs" / name).is_file()
    params, config, tokenizer = load_checkpoint(out / "xs")
    assert config.num_hidden_layers == 2 and tokenizer.vocab_size == config.vocab_size
    recipe = json.loads((out / train.TRAIN_CONFIG).read_text())
    assert recipe["recipes"]["xs"]["phases"][0]["steps"] == 25 and "torch" in recipe["environment"]["xs"]
    assert recipe["recipes"]["xs"]["phases"][1]["mix"][1] == {"task": "niah_multikey", "weight": 0.2,
                                                             "options": {"haystack": "noise"}}
    assert train.verify_manifest(out) == []
    assert train.main(["--check", "--out", str(out)]) == 0
    log = out / "xs" / "train_log.json"
    log.write_text(log.read_text() + " ")
    (out / "extra.bin").write_bytes(b"x")
    problems = train.verify_manifest(out)
    assert any("train_log.json: sha256 differs" in p for p in problems)
    assert any("extra.bin: not in the manifest" in p for p in problems)
    assert train.main(["--check", "--out", str(out)]) == 1


def test_bad_arguments():
    with pytest.raises(BenchError, match="unknown size"):
        train.main(["--sizes", "xxl", "--out", "/tmp/unused"])
    with pytest.raises(BenchError, match="scale"):
        train.main(["--scale", "0", "--out", "/tmp/unused"])
    with pytest.raises(BenchError):
        train.default_recipe("xxl")
    recipe = train.default_recipe("s", scale=0.5)
    assert recipe.total_steps == pytest.approx(train.default_recipe("s").total_steps / 2, abs=2)

"""The committed checkpoints of our model family: intact, spanning >= 16x, and doing what they were
trained for (a needle found at sweep lengths, dense), read through the public system names."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from bench import registry  # noqa: E402
from systems.lm import train  # noqa: E402
from systems.lm.model import CHECKPOINT_DIR, SIZES  # noqa: E402


def test_committed_checkpoints_match_their_manifest_and_record_their_training():
    assert train.verify_manifest(CHECKPOINT_DIR) == []
    record = json.loads((CHECKPOINT_DIR / train.TRAIN_CONFIG).read_text())
    assert set(record["results"]) == set(SIZES)
    counts = [record["results"][size]["n_params"] for size in SIZES]
    assert counts == sorted(counts) and counts[-1] / counts[0] >= 16
    for size in SIZES:
        assert record["results"][size]["train_seconds"] > 0
        expected = json.loads(json.dumps(train.default_recipe(size).to_json()))
        assert record["recipes"][size] == expected, f"{size}: the recipe changed since training"


@pytest.mark.parametrize("size", ["m", "l"])
def test_trained_models_find_a_single_needle_at_512_tokens(size):
    system = registry.create("system", f"tiny-llama-{size}")
    assert system.availability().ok
    system.load()
    samples = system.make_samples("niah-single", {}, 512, 8, seed=7)
    scores = [system.score_sample(s, method="dense", phase="prefill", budget={}).score for s in samples]
    # Held-out exact match after training was 1.0 at 512 tokens (train_config.json).
    assert sum(scores) >= 7, scores
    # ... and streaming attention that keeps only 4 sinks + a 16-token window loses the needle.
    lost = [system.score_sample(s, method="streaming", phase="prefill", budget={"window": 16}).score
            for s in samples]
    assert sum(lost) <= 2, lost

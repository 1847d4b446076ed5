"""Our Llama-style model family, its tokenizer, checkpoints, and the pluggable-attention runtime."""

from __future__ import annotations

import dataclasses
import json
import random
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from bench.errors import BenchError  # noqa: E402
from systems.lm import data, model, runtime  # noqa: E402
from systems.lm.model import (CheckpointError, LlamaConfig, SIZES, hidden_states, init_params,  # noqa: E402
                              load_checkpoint, logits, param_count, save_checkpoint, size_config)


@pytest.fixture(scope="module")
def tokenizer():
    return data.WordTokenizer.default()


@pytest.fixture(scope="module")
def small(tokenizer):
    config = dataclasses.replace(size_config("xs", tokenizer.vocab_size), max_position_embeddings=512)
    return init_params(config, seed=3), config


def niah_sample(n_filler: int = 20, value: str = "4921738", key: str = "amber-badger"):
    """A needle-in-a-haystack sample in the tasks' layout (duck-typed like tasks.longctx samples)."""
    filler = ["The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."] * n_filler
    filler.insert(n_filler // 2, f"One of the special magic numbers for {key} is: {value}.")
    return SimpleNamespace(
        id="test/niah", task="niah_single", context=" ".join(filler),
        instruction="A special magic number is hidden within the following text. Make sure to memorize it. "
                    "I will quiz you about the number afterwards.",
        question=f"What is the special magic number for {key} mentioned in the provided text?",
        answer_prefix=f"The special magic number for {key} mentioned in the provided text is",
        answers=(value,), scoring="all_of", target=f" {value}.")


# --------------------------------------------------------------------------- tokenizer
def test_tokenizer_round_trips_any_text_and_counts_tokens(tokenizer):
    text = "The special magic number for amber-badger is: 1234567.\nVAR QXZPL = VAR ABCDE. Café ünïcode ✓"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.count_tokens(text) == len(ids) == tokenizer(text)
    # In-vocabulary words are one token; digits one token each; unknown words fall back to bytes.
    assert len(tokenizer.encode(" special")) == 1
    assert len(tokenizer.encode("1234567")) == 7
    assert len(tokenizer.encode(" QXZPL")) == 6


def test_tokenizer_json_round_trip_and_bad_files(tokenizer):
    again = data.WordTokenizer.from_json(json.loads(json.dumps(tokenizer.to_json())))
    assert again.pieces == tokenizer.pieces and again.sha256() == tokenizer.sha256()
    with pytest.raises(data.TokenizerError):
        data.WordTokenizer.from_json({"kind": "bpe"})
    with pytest.raises(data.TokenizerError):
        data.WordTokenizer(["two words"])
    with pytest.raises(data.TokenizerError):
        tokenizer.decode([tokenizer.vocab_size])


def test_training_stream_is_the_task_generators_at_training_seeds(tokenizer):
    mix = (data.TaskDraw("niah_single", 1.0), data.TaskDraw("niah_multikey", 1.0, (("haystack", "noise"),)))
    first = data.training_batch(random.Random(5), mix, 300, 6, tokenizer)
    assert first == data.training_batch(random.Random(5), mix, 300, 6, tokenizer)
    assert first != data.training_batch(random.Random(6), mix, 300, 6, tokenizer)
    for ids, answer_start in first:
        assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.eos_id
        assert answer_start == 301  # <bos> + exactly 300 prompt tokens
        assert tokenizer.decode(ids[answer_start:]).strip().rstrip(".").isdigit()
    sample = data.training_sample(random.Random(1), mix[1], 300, tokenizer)
    assert sample.seed >= data.TRAIN_SEED_BASE and sample.metadata["haystack"] == "noise"
    # Below a task's minimum the sample is built at the minimum instead of failing.
    short = data.training_sample(random.Random(1), mix[1], 20, tokenizer)
    assert short.n_tokens == data.minimum_length(mix[1], tokenizer) > 20
    with pytest.raises(BenchError, match="unknown"):
        data.check_mix((data.TaskDraw("no-such-task", 1.0),))


# --------------------------------------------------------------------------- the model
def test_family_has_four_sizes_spanning_16x(tokenizer):
    counts = [param_count(size_config(size, tokenizer.vocab_size)) for size in SIZES]
    assert len(counts) >= 4 and counts == sorted(counts)
    assert counts[-1] / counts[0] >= 16
    from bench.sparse.costmodel import ModelShape

    for size in SIZES:
        config = size_config(size, tokenizer.vocab_size)
        shape = ModelShape.from_hf_config(config.to_json())
        assert shape.param_count() == param_count(config)


def test_forward_shapes_and_causality(small):
    params, config = small
    ids = torch.randint(3, config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    h = hidden_states(params, config, ids)
    assert h.shape == (2, 40, config.hidden_size)
    assert logits(params, config, h).shape == (2, 40, config.vocab_size)
    changed = ids.clone()
    changed[:, 25:] = 5
    h2 = hidden_states(params, config, changed)
    torch.testing.assert_close(h2[:, :25], h[:, :25])
    assert not torch.allclose(h2[:, 25:], h[:, 25:])


def test_pluggable_dense_path_equals_sdpa_reference(small):
    params, config = small
    decoder = runtime.FunctionalDecoder(params, config)
    dense = runtime.phase_methods("dense", "prefill", {})
    prompt, answer = list(range(3, 60)), [7, 8, 9, 10]
    result = runtime.teacher_forced_pass(decoder, prompt, answer, *dense, "prefill")
    reference = logits(params, config, hidden_states(params, config, torch.tensor([prompt + answer[:-1]])))
    torch.testing.assert_close(result.logits, reference[0, len(prompt) - 1:], atol=1e-5, rtol=1e-5)
    assert result.per_layer == [0.0] * config.num_hidden_layers


def test_matches_hugging_face_llama(small):
    """Same tensor names and maths as transformers' LlamaForCausalLM (eager attention)."""
    transformers = pytest.importorskip("transformers")
    from systems.lm.hf import _without_torchaudio

    _without_torchaudio()
    params, config = small
    hf_config = transformers.LlamaConfig(**{k: v for k, v in config.to_json().items() if k != "architectures"},
                                         attn_implementation="eager")
    hf_model = transformers.LlamaForCausalLM(hf_config).eval()
    state = dict(params, **{"lm_head.weight": params["model.embed_tokens.weight"]})
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    assert not missing and not unexpected
    ids = torch.randint(3, config.vocab_size, (1, 50), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf_model(ids).logits
    ours = logits(params, config, hidden_states(params, config, ids))
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


def test_checkpoint_round_trip_and_strict_loading(small, tokenizer, tmp_path):
    params, config = small
    folder = save_checkpoint(tmp_path / "ckpt", params, dataclasses.replace(config, vocab_size=tokenizer.vocab_size),
                             tokenizer) if config.vocab_size == tokenizer.vocab_size else None
    assert folder is not None
    loaded, config2, tok2 = load_checkpoint(folder)
    assert config2 == config and tok2.pieces == tokenizer.pieces
    for name, tensor in params.items():  # stored as float16: equal to float16 rounding
        torch.testing.assert_close(loaded[name], tensor.half().float())

    from safetensors.torch import load_file, save_file

    weights = folder / model.WEIGHTS_FILE
    tensors = load_file(str(weights))
    extra = dict(tensors, **{"model.layers.9.mlp.up_proj.weight": torch.zeros(2, 2)})
    save_file(extra, str(weights))
    with pytest.raises(CheckpointError, match="unexpected"):
        load_checkpoint(folder)
    missing = {k: v for k, v in tensors.items() if k != "model.norm.weight"}
    save_file(missing, str(weights))
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(folder)
    wrong = dict(tensors, **{"model.norm.weight": torch.zeros(3, dtype=torch.float16)})
    save_file(wrong, str(weights))
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(folder)
    save_file(tensors, str(weights))
    (folder / model.CONFIG_FILE).write_text(json.dumps({**config.to_json(), "sliding_window": 4}))
    with pytest.raises(CheckpointError, match="sliding_window"):
        load_checkpoint(folder)
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(tmp_path / "nowhere")


def test_config_rejects_bad_shapes():
    with pytest.raises(CheckpointError):
        LlamaConfig(vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                    num_attention_heads=3, num_key_value_heads=2, head_dim=4)
    with pytest.raises(CheckpointError):
        LlamaConfig(vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=0,
                    num_attention_heads=2, num_key_value_heads=2, head_dim=4)


# --------------------------------------------------------------------------- runtime on a random model
def test_sparse_methods_plug_in_and_report_sparsity(small, tokenizer):
    params, config = small
    decoder = runtime.FunctionalDecoder(params, config)
    sample = niah_sample(n_filler=14)
    kwargs = dict(encode=tokenizer.encode, decode=tokenizer.decode, bos=[tokenizer.bos_id],
                  answer_suffix=[tokenizer.eos_id], eos_ids={tokenizer.eos_id}, max_context=512)
    for phase, method, budget in (("prefill", "streaming", {"compression": 3}),
                                  ("prefill", "block-sparse", {"compression": 2}),
                                  ("prefill", "vertical-slash", {"compression": 2}),
                                  ("decode", "quest", {"compression": 4}),
                                  ("decode", "snapkv", {"compression": 3})):
        for mode in runtime.MODES:
            score = runtime.score_sample(decoder, sample, method=method, phase=phase, budget=budget, mode=mode,
                                         **kwargs)
            assert len(score.per_layer) == config.num_hidden_layers
            assert score.sparsity == pytest.approx(sum(score.per_layer) / len(score.per_layer))
            low = 0.4 if phase == "prefill" else 0.2
            assert low < score.sparsity < 1.0, (phase, method, mode, score.sparsity)
            assert score.n_context_tokens > 300 and score.score in (0.0, 1.0)
    dense = runtime.score_sample(decoder, sample, method="dense", phase="prefill", budget={}, **kwargs)
    assert dense.sparsity == 0.0 and dense.answer_logprob < 0


def test_bad_input_is_refused_before_running(small, tokenizer):
    params, config = small
    decoder = runtime.FunctionalDecoder(params, config)
    kwargs = dict(encode=tokenizer.encode, decode=tokenizer.decode, bos=[tokenizer.bos_id],
                  answer_suffix=[tokenizer.eos_id], eos_ids={tokenizer.eos_id}, max_context=512)
    with pytest.raises(runtime.ContextTooLong, match="context is 512"):
        runtime.score_sample(decoder, niah_sample(n_filler=40), method="dense", phase="prefill", budget={}, **kwargs)
    for broken, reason in ((dict(context=""), "context is empty"), (dict(answers=()), "no answers"),
                           (dict(answers=("",)), "answer is empty"), (dict(scoring="fuzzy"), "scoring rule")):
        sample = niah_sample()
        for key, value in broken.items():
            setattr(sample, key, value)
        with pytest.raises(runtime.MalformedSample, match=reason):
            runtime.score_sample(decoder, sample, method="dense", phase="prefill", budget={}, **kwargs)
    from systems.lm.attention.base import BadBudget

    with pytest.raises(BadBudget):
        runtime.score_sample(decoder, niah_sample(), method="quest", phase="decode", budget={"compression": 0.5}, **kwargs)
    with pytest.raises(ValueError, match="not a prefill method"):
        runtime.score_sample(decoder, niah_sample(), method="quest", phase="prefill", budget={"compression": 2}, **kwargs)
    with pytest.raises(ValueError, match="phase"):
        runtime.score_sample(decoder, niah_sample(), method="dense", phase="both", budget={}, **kwargs)
    with pytest.raises(ValueError, match="mode"):
        runtime.score_sample(decoder, niah_sample(), method="dense", phase="prefill", budget={}, mode="beam", **kwargs)


def test_generated_text_is_scored_by_the_task_rules():
    def prepared(answers, rule, **kw):
        return runtime.PreparedSample("p", " x", tuple(answers), rule, **kw)

    score = runtime.score_prediction
    assert score(prepared(("4921738",), "exact"), " The 4921738.\nmore") == 1.0
    assert score(prepared(("4921738",), "exact"), "4921739") == 0.0
    assert score(prepared(("1", "22", "3"), "all_of"), "1, 22 and 333") == pytest.approx(2 / 3)
    assert score(prepared(("ABCDE", "FGHIJ"), "set", item_pattern=r"\b[A-Z]{5}\b"), " ABCDE FGHIJ XYZZY") == \
        pytest.approx(2 / 3)
    assert score(prepared(("ABCDE", "FGHIJ"), "set", item_pattern=r"\b[A-Z]{5}\b", candidates=("ABCDE", "FGHIJ")),
                 " ABCDE FGHIJ XYZZY") == 1.0
    # a sample's own rule wins
    assert score(runtime.PreparedSample("p", " x", ("a",), "exact", scorer=lambda text: 0.25), "a") == 0.25


def test_dense_prompt_cache_gives_the_same_scores(small, tokenizer):
    params, config = small
    decoder = runtime.FunctionalDecoder(params, config)
    cache = runtime.DensePromptCache()
    kwargs = dict(encode=tokenizer.encode, decode=tokenizer.decode, bos=[tokenizer.bos_id],
                  answer_suffix=[tokenizer.eos_id], eos_ids={tokenizer.eos_id}, max_context=512)
    sample = niah_sample(n_filler=14)
    for method, phase, budget in (("dense", "prefill", {}), ("snapkv", "decode", {"compression": 3}),
                                  ("quest", "decode", {"compression": 4}), ("ada-snapkv", "decode", {"compression": 2})):
        for mode in runtime.MODES:
            fresh = runtime.score_sample(decoder, sample, method=method, phase=phase, budget=budget, mode=mode, **kwargs)
            cached = runtime.score_sample(decoder, sample, method=method, phase=phase, budget=budget, mode=mode,
                                          prompt_cache=cache, **kwargs)
            assert (cached.score, cached.prediction, cached.per_layer) == (fresh.score, fresh.prediction, fresh.per_layer)
            if fresh.answer_logprob is not None:
                assert cached.answer_logprob == pytest.approx(fresh.answer_logprob, abs=1e-5)
    assert cache.state is not None and cache.prompt[0] == tokenizer.bos_id

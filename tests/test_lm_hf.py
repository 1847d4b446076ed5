"""Hugging Face adapter: our layer-by-layer path equals HF's own eager forward; options and errors;
SmolLM2-135M (slow): logits check and needle-in-a-haystack at 4K tokens, dense and sparse."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bench.errors import BenchError  # noqa: E402
from systems.lm import hf, runtime  # noqa: E402

hf._without_torchaudio()


def tiny_model(kind: str = "llama", **extra):
    common = dict(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, attn_implementation="eager", **extra)
    torch.manual_seed(0)
    if kind == "llama":
        config = transformers.LlamaConfig(**common)
        return transformers.LlamaForCausalLM(config).eval()
    config = transformers.Qwen2Config(**common)
    model = transformers.Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # HF initialises biases to zero; make them matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("kind, extra", [("llama", {}), ("qwen2", {}),
                                         ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}})])
def test_dense_path_equals_hf_eager_logits(kind, extra):
    model = tiny_model(kind, **extra)
    decoder = hf.HFDecoder(model)
    ids = torch.randint(0, 120, (1, 60), generator=torch.Generator().manual_seed(2)).tolist()[0]
    prompt, answer = ids[:52], ids[52:]
    result = runtime.teacher_forced_pass(decoder, prompt, answer, *runtime.phase_methods("dense", "prefill", {}),
                                         "prefill")
    with torch.no_grad():
        expected = model(torch.tensor([prompt + answer[:-1]])).logits[0, len(prompt) - 1:]
    torch.testing.assert_close(result.logits, expected, atol=1e-4, rtol=1e-4)
    # Greedy generation through the KV cache predicts what a full forward pass predicts.
    generated, _ = runtime.greedy_generate(decoder, prompt, *runtime.phase_methods("dense", "decode", {}), "decode", 5)
    sequence = list(prompt)
    with torch.no_grad():
        for _ in range(5):
            sequence.append(int(model(torch.tensor([sequence])).logits[0, -1].argmax()))
    assert generated == sequence[len(prompt):]


def test_unsupported_architecture_is_refused():
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50)
    with pytest.raises(BenchError, match="not supported"):
        hf.HFDecoder(transformers.GPT2LMHeadModel(config))


@pytest.fixture(scope="module")
def local_folder(tmp_path_factory):
    """A tiny random Llama with a word-level tokenizer, saved as an ordinary model folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders

    folder = tmp_path_factory.mktemp("tiny-hf")
    words = ["<unk>", "<s>", "</s>"] + [str(d) for d in range(10)] + \
        "the grass is green sky blue sun yellow here we go there and back again one of special magic number for " \
        "what mentioned in provided text a hidden within following make sure to memorize it i will quiz you about " \
        "afterwards amber badger".split() + list(".,:?-")
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(True)])
    backend.decoder = decoders.WordPiece()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                                     eos_token="</s>")
    tokenizer.save_pretrained(folder)
    model = tiny_model("llama")
    model.resize_token_embeddings(len(vocab))
    model.save_pretrained(folder)
    return folder


def test_local_folder_system_scores_with_dense_and_sparse_attention(local_folder):
    system = hf.HFCausalLM(model=str(local_folder))
    system.load()
    assert system.max_context() == 256
    shape = system.shape()
    from bench.sparse.costmodel import ModelShape

    assert ModelShape.from_hf_config(shape).n_layers == 2 and shape["n_params"] > 0
    assert system.identity()["revision"].startswith("sha256:")
    filler = " ".join(["the grass is green . the sky is blue ."] * 10)
    sample = type("Sample", (), dict(id="s", prompt=f"{filler} one of the special magic number for amber - badger "
                                     f"is : 4 2 7 . {filler} what is the special magic number for amber - badger ?",
                                     target=" 4 2 7", answers=("427",), scoring="all_of"))()
    assert system.count_tokens(sample.prompt) > 150
    dense = system.score_sample(sample, method="dense", phase="prefill", budget={})
    assert dense.sparsity == 0.0 and dense.answer_logprob < 0 and dense.n_answer_tokens == 3
    for phase, method in (("prefill", "streaming"), ("decode", "quest")):
        for mode in runtime.MODES:
            out = system.score_sample(sample, method=method, phase=phase, budget={"compression": 3}, mode=mode)
            assert len(out.per_layer) == 2 and 0.3 < out.sparsity < 1.0, (phase, method, mode, out.sparsity)
    long = type(sample)()
    long.prompt = sample.prompt * 3
    with pytest.raises(runtime.ContextTooLong):
        system.score_sample(long, method="dense", phase="prefill", budget={})


def test_options_are_checked():
    with pytest.raises(BenchError, match="revision"):
        hf.HFCausalLM(model="Qwen/Qwen2.5-0.5B-Instruct").source()
    with pytest.raises(BenchError, match="does not exist"):
        hf.HFCausalLM(model="/nowhere/model").source()
    with pytest.raises(BenchError, match="no option"):
        hf.HFCausalLM(model="x", temperature=0.7)
    with pytest.raises(BenchError, match="no option"):
        hf.SmolLM2(model="other")
    assert hf.HFCausalLM(model="Qwen/Qwen2.5-0.5B-Instruct", revision="0123456789abcdef0123456789abcdef01234567"
                         ).source() == ("Qwen/Qwen2.5-0.5B-Instruct", "0123456789abcdef0123456789abcdef01234567", None)


# --------------------------------------------------------------------------- SmolLM2-135M (slow)
@pytest.fixture(scope="module")
def smollm2():
    if not hf.SmolLM2.availability().ok:
        pytest.skip(hf.SmolLM2.availability().message())
    system = hf.SmolLM2()
    system.load()
    return system


@pytest.mark.slow
def test_smollm2_dense_path_equals_hf_eager(smollm2):
    ids = smollm2.encode("The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is")
    prompt, answer = ids[:-3], ids[-3:]
    result = runtime.teacher_forced_pass(smollm2.decoder(), prompt, answer,
                                         *runtime.phase_methods("dense", "prefill", {}), "prefill")
    model = smollm2.model
    previous = model.config._attn_implementation
    model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            expected = model(torch.tensor([prompt + answer[:-1]])).logits[0, len(prompt) - 1:]
    finally:
        model.config._attn_implementation = previous
    torch.testing.assert_close(result.logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("BENCH_SKIP_4K") == "1", reason="BENCH_SKIP_4K=1")
def test_smollm2_needle_in_a_haystack_at_4k(smollm2):
    from tasks.longctx import generate

    sample = generate("niah_single", 4096, seed=0, n_samples=1, tokenizer=smollm2.count_tokens)[0]
    assert sample.n_tokens >= 4000
    dense = smollm2.score_sample(sample, method="dense", phase="prefill", budget={})
    assert dense.score == 1.0, dense.prediction
    prefill = smollm2.score_sample(sample, method="streaming", phase="prefill", budget={"compression": 2})
    decode = smollm2.score_sample(sample, method="quest", phase="decode", budget={"compression": 4})
    assert prefill.sparsity == pytest.approx(0.5, abs=0.02)
    assert 0.6 < decode.sparsity < 0.8
    assert len(prefill.per_layer) == len(decode.per_layer) == 30

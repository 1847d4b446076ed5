"""Our TTS families' shared pieces and their wrappers, on tiny random checkpoints (fast): text and
phones, durations, monotonic alignment, the tokenizer, Griffin-Lim, the systems' plumbing and their
behaviour on bad input. The trained checkpoints are tested in test_tts_trained.py."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bench.audio import Audio, read_audio, validate
from bench.contracts import Prompt, TTSItem
from bench.errors import BenchError, Unavailable
from systems.tts import text as tts_text
from systems.tts.aligner import beta_binomial_prior, frame_encoder, monotonic_alignment
from systems.tts.dataset import timings_to_durations
from systems.tts.features import HOP, N_MELS, GriffinLim, log_mel
from systems.tts.system import BadPrompt, TinyAR, TinyFlow, TinyNAR, VocoderCeiling
from systems.tts.tokenizer import ResidualKMeans, SpeechTokenizer, TokenizerConfig
from tests.tts_fixtures import make_tiny_checkpoints

LIBRIVOX = Path(__file__).resolve().parents[1] / "tasks" / "data" / "librivox_mini"
PROMPT_TEXT = "And Mr. John Dashwood had then leisure to consider how much there might be prudently in his power to do for them."
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed (scripts/setup.sh installs it)")


# --------------------------------------------------------------------------- text
def test_sentences_are_deterministic_distinct_and_heldout_is_disjoint():
    a = tts_text.generate_sentences(300, "train")
    assert a == tts_text.generate_sentences(300, "train")
    assert len(set(a)) == 300
    held = tts_text.heldout_sentences(50, a)
    assert not set(held) & set(a)
    words = {w for s in held for w in s.lower().replace(",", " ").replace(".", " ").replace("?", " ").split()}
    assert not words & set(tts_text._NUM), "held-out sentences must not carry number words"


def test_clean_text_drops_what_cannot_be_said():
    assert tts_text.clean_text("Café  naïve\tdéjà vu") == "Cafe naive deja vu"
    assert tts_text.clean_text("?! ...") == ""
    assert tts_text.clean_text("日本語") == ""


@needs_flite
def test_phonemizer_gives_flite_phones_with_pauses():
    ph = tts_text.Phonemizer()
    assert ph.phones("Hello world") == ("pau", "hh", "ax", "l", "ow", "w", "er", "l", "d", "pau")
    with pytest.raises(tts_text.FrontEndError, match="nothing to pronounce"):
        ph.phones("?! ...")
    # A comma pauses; adjacent pauses merge into one.
    assert ph.phones("Yes, no.").count("pau") == 3


def test_character_front_end_reads_letters_and_refuses_digits():
    chars = tts_text.front_end("chars")
    units = chars.units("Hi, Tom's CAT!")
    assert units == ("pau", "h", "i", ",", " ", "t", "o", "m", "'", "s", " ", "c", "a", "t", "!", "pau")
    ids = chars.ids(units)
    assert ids[0] == ids[-1] == tts_text.PHONE_IDS["pau"] and max(ids) < tts_text.vocab_size("chars")
    assert len(set(ids)) == len(set(units))
    assert chars.units("a # b")[1:-1] == ("a", " ", " ", "b")  # symbols outside the set are dropped
    for bad, match in (("?! ...", "nothing to pronounce"), ("Room 12", "digits"), ("# @", "nothing")):
        with pytest.raises(tts_text.FrontEndError, match=match):
            chars.units(bad)
    with pytest.raises(tts_text.FrontEndError, match="not in the chars front end"):
        chars.ids(["pau", "é"])
    with pytest.raises(BenchError, match="front ends: phones, chars, ipa"):
        tts_text.front_end("graphemes")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (scripts/setup.sh installs it)")
def test_ipa_front_end_reads_espeak_clauses_with_pauses():
    ipa = tts_text.front_end("ipa")
    units = ipa.units("The cat, the dog.")
    text = "".join(u if u != "pau" else "|" for u in units)
    assert text == "|ðə kˈæt|ðə dˈɑːɡ|"  # the comma's clause break is a pause; stress and length are units
    assert ipa.ids(units)[0] == tts_text.PHONE_IDS["pau"] and max(ipa.ids(units)) < tts_text.vocab_size("ipa")
    with pytest.raises(tts_text.FrontEndError, match="nothing to pronounce"):
        ipa.units("...")


def test_parse_psdur_and_durations_fit_the_frames():
    pairs = tts_text.parse_psdur("pau:0.164 hh:0.255 ax:0.304 bogus:1 l:0.412")
    assert [p for p, _ in pairs] == ["pau", "hh", "ax", "l"]
    d = timings_to_durations([e for _, e in pairs], 20)
    assert d.sum() == 20 and (d >= 1).all()
    assert d[0] == 10  # 0.164 s * 62.5 frames/s
    # Timings that run past the audio (kal16) are clipped; every phone keeps one frame.
    d = timings_to_durations([0.1, 0.2, 5.0, 6.0], 8)
    assert d.sum() == 8 and (d >= 1).all()
    with pytest.raises(BenchError):
        timings_to_durations([0.1, 0.2, 0.3], 2)


# --------------------------------------------------------------------------- alignment
def _brute_force(log_prob: np.ndarray) -> np.ndarray:
    n, t = log_prob.shape
    best, best_d = -np.inf, None
    for cuts in itertools.combinations(range(1, t), n - 1):
        bounds = (0, *cuts, t)
        d = np.diff(bounds)
        score = sum(log_prob[i, bounds[i]:bounds[i + 1]].sum() for i in range(n))
        if score > best:
            best, best_d = score, d
    return best_d


def test_monotonic_alignment_is_the_best_path():
    rng = np.random.default_rng(1)
    for n, t in ((1, 4), (3, 3), (3, 7), (4, 9)):
        lp = rng.normal(size=(n, t))
        assert monotonic_alignment(lp).tolist() == _brute_force(lp).tolist()
    with pytest.raises(BenchError):
        monotonic_alignment(np.zeros((5, 3)))


def test_beta_binomial_prior_rows_are_distributions():
    prior = beta_binomial_prior(6, 30)
    assert prior.shape == (30, 6)
    np.testing.assert_allclose(np.exp(prior).sum(1), 1.0, atol=1e-5)
    assert np.exp(prior[0]).argmax() == 0 and np.exp(prior[-1]).argmax() == 5


# --------------------------------------------------------------------------- features, tokens
def test_griffin_lim_resynthesis_keeps_the_spectrum():
    audio = read_audio(LIBRIVOX / "wavs" / "lv0870.wav").resampled(16000)
    mel = log_mel(audio.samples[:48000])
    out = GriffinLim()(mel)
    validate(Audio(out, 16000))
    assert abs(len(out) - 48000) <= HOP
    again = log_mel(out)
    corr = np.corrcoef(mel[:, 5:-5].ravel(), again[:, 5:-5].ravel())[0, 1]
    assert corr > 0.95, corr


def test_residual_kmeans_levels_reduce_error_and_round_trip():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 8)).astype(np.float32)
    tok, log = ResidualKMeans.fit(x, TokenizerConfig(levels=3, codes=32, sample_frames=3000, iterations=5), log=lambda _: None)
    mses = [h["residual_mse"] for h in log["history"]]
    assert mses[0] > mses[1] > mses[2]
    codes = tok.encode(x[:100])
    assert codes.shape == (100, 3) and codes.min() >= 0 and codes.max() < 32
    err1 = np.mean((tok.decode(codes, levels=1) - x[:100]) ** 2)
    err3 = np.mean((tok.decode(codes) - x[:100]) ** 2)
    assert err3 < err1
    with pytest.raises(BenchError, match="outside"):
        tok.decode(np.full((2, 3), 99))


def _speech_tokenizer(content: str = "aligner"):
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    utterances = [rng.normal(size=(int(n), N_MELS)).astype(np.float32) for n in rng.integers(40, 90, size=30)]
    config = TokenizerConfig(levels=3, codes=16, sample_frames=5000, iterations=4, content=content)
    encoder = frame_encoder(d=8, d_att=4) if content == "aligner" else None
    tok, log = SpeechTokenizer.fit(utterances, config, encoder, log=lambda _: None)
    return tok, config, utterances, log


def test_speech_tokenizer_level1_is_the_content_code_and_its_mel_centroid_the_mean_frame():
    tok, _, utterances, log = _speech_tokenizer()
    encoder, centroids = tok.content
    codes = [tok.encode(u) for u in utterances]
    first = np.concatenate([c[:, 0] for c in codes])
    embedded = torch.cat([SpeechTokenizer.embed(encoder, u) for u in utterances])
    nearest = torch.cdist(embedded, centroids).argmin(-1).numpy()
    assert (first == nearest).mean() > 0.99  # ties aside, level 1 is the nearest content centroid
    frames = np.concatenate(utterances)
    code = np.bincount(first).argmax()
    np.testing.assert_allclose(tok.decode(np.stack([np.full(2, code)] * 3, 1), levels=1)[0],
                               frames[first == code].mean(0), atol=1e-4)
    errors = [np.mean((np.concatenate([tok.decode(c, levels=k) for c in codes]) - frames) ** 2) for k in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]
    assert [h["level"] for h in log["history"]] == [1, 2, 3]


def test_speech_tokenizer_round_trips_and_refuses_bad_folders(tmp_path):
    tok, config, utterances, _ = _speech_tokenizer()
    tok.save(tmp_path / "t", config, {"content_encoder_from": {"aligner_sha256": "x"}})
    again = SpeechTokenizer.load(tmp_path / "t")
    np.testing.assert_array_equal(again.encode(utterances[0]), tok.encode(utterances[0]))
    mel, mel_config, _, _ = _speech_tokenizer("mel")
    mel.save(tmp_path / "m", mel_config, {})
    np.testing.assert_array_equal(SpeechTokenizer.load(tmp_path / "m").encode(utterances[1]), mel.encode(utterances[1]))
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "t" / "model.safetensors"))
    del state["content_centroids"]
    save_file(state, str(tmp_path / "t" / "model.safetensors"))
    with pytest.raises(BenchError, match="content_centroids"):
        SpeechTokenizer.load(tmp_path / "t")
    with pytest.raises(BenchError, match="frame encoder"):
        SpeechTokenizer.fit(utterances, config, None, log=lambda _: None)


# --------------------------------------------------------------------------- systems (tiny weights)
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_checkpoints(tmp_path_factory.mktemp("tts-ckpt"))


def _prompt(tmp_path: Path | None = None, seconds: float | None = None, silent: bool = False) -> Prompt:
    path = LIBRIVOX / "wavs" / "lv0870.wav"
    if tmp_path is None:
        return Prompt(path, PROMPT_TEXT)
    audio = read_audio(path)
    samples = audio.samples[: int(seconds * audio.sample_rate)] if seconds else audio.samples
    if silent:
        samples = np.zeros_like(samples)
    out = tmp_path / "prompt.wav"
    sf.write(out, samples, audio.sample_rate)
    return Prompt(out, PROMPT_TEXT if not seconds or seconds > 2 else "And")


ITEM = TTSItem(id="x", text="The red boat sailed home.")


@needs_flite
@pytest.mark.parametrize("cls,options", [(TinyFlow, {"nfe": 2}), (TinyNAR, {"steps": 3})])
def test_non_autoregressive_families_generate_the_planned_length(tiny, cls, options):
    system = cls(checkpoints=str(tiny), **options)
    system.load()
    plan = system.plan(ITEM.text, _prompt())
    assert plan["prompt_frames"] <= 3.0 * 62.5 + 1, "prompts are cut to MAX_PROMPT_S"
    audio = system.synthesize(ITEM.text, _prompt(), ITEM)
    assert audio.sample_rate == 16000
    assert abs(len(audio.samples) - (plan["target_frames"] - 1) * HOP) <= HOP
    assert np.isfinite(audio.samples).all() and np.abs(audio.samples).max() <= 1.0
    # Deterministic for a seed.
    again = system.synthesize(ITEM.text, _prompt(), ITEM)
    np.testing.assert_array_equal(audio.samples, again.samples)


@needs_flite
def test_autoregressive_family_streams_or_fails_with_no_stop(tiny):
    system = TinyAR(checkpoints=str(tiny), chunk=16)
    system.load()
    assert system.streaming
    try:
        chunks = list(system.synthesize_stream(ITEM.text, _prompt(), ITEM))
    except BenchError as exc:  # a random model may never emit end-of-speech
        assert getattr(exc, "reason", "") == "no_stop"
    else:
        assert chunks and all(c.sample_rate == 16000 for c in chunks)
    # The length guard: a model forced never to stop fails with reason no_stop.
    with torch.no_grad():
        system.model.ar_head.bias[system.model.eos] = -1e4
    with pytest.raises(BenchError) as info:
        list(system.synthesize_stream(ITEM.text, _prompt(), ITEM))
    from bench.worker import failure_reason

    assert failure_reason(info.value) == "no_stop"


@needs_flite
@pytest.mark.parametrize("acoustic", ["decoder", "codebooks"])
def test_token_families_acoustic_stages(tiny, acoustic):
    """Both acoustic stages give the planned frames for a token sequence; the decoder keeps a
    stream's earlier frames as they were and generates only the new ones."""
    system = TinyAR(checkpoints=str(tiny), acoustic=acoustic, nfe=2)
    system.load()
    assert ("decoder" in system.revision) == (acoustic == "decoder")
    plan = system.plan(ITEM.text, _prompt())
    prompt_tokens = torch.from_numpy(system.tokenizer.encode(plan["prompt_mel"]))
    level1 = [3, 5, 7] * 10 + [1] * (plan["target_frames"] + 5 - 30)  # 5 frames past the plan: END phone
    frames = system._frames(plan, prompt_tokens, level1)
    assert frames.shape == (len(level1), N_MELS) and np.isfinite(frames).all()
    if acoustic == "decoder":
        again = system._frames(plan, prompt_tokens, level1, known=frames[:20])
        np.testing.assert_array_equal(again[:20], frames[:20])
        assert not np.array_equal(again[20:], frames[20:]), "new frames are generated, not copied"
        # A stream's later chunk sees a window of stream_context frames (prompt tail + known frames).
        import systems.tts.flow as flow

        seen = []
        real = flow.sample

        def spy(model, context, *args, **kwargs):
            seen.append(context.shape[0])
            return real(model, context, *args, **kwargs)

        flow.sample = spy
        try:
            windowed = system.decode_level1(plan, prompt_tokens, level1, frames[:20], context_frames=8)
            first = system._frames(plan, prompt_tokens, level1[:16], known=None)  # the first chunk: whole prompt
        finally:
            flow.sample = real
        assert seen == [8 + len(level1) - 20, plan["prompt_frames"] + 16]
        assert windowed.shape == frames.shape and first.shape == (16, N_MELS)
        np.testing.assert_array_equal(windowed[:20], frames[:20])


@needs_flite
def test_bad_inputs_are_clear_failures(tiny, tmp_path):
    system = TinyFlow(checkpoints=str(tiny), nfe=1)
    system.load()
    with pytest.raises(BadPrompt, match="needs a prompt"):
        system.synthesize(ITEM.text, None, ITEM)
    with pytest.raises(BadPrompt, match="at least"):
        system.synthesize(ITEM.text, _prompt(tmp_path, seconds=0.1), ITEM)
    with pytest.raises(BadPrompt, match="silent"):
        system.synthesize(ITEM.text, _prompt(tmp_path, silent=True), ITEM)
    for bad in ("", "?!...", "日本語"):
        with pytest.raises(tts_text.FrontEndError):
            system.synthesize(bad, _prompt(), ITEM)
    # A target beyond MAX_TARGET_S fails before any generation, with reason too_long.
    with pytest.raises(BenchError) as info:
        system.synthesize("The red boat sailed home. " * 60, _prompt(), ITEM)
    assert info.value.reason == "too_long" and "at most 12 s" in str(info.value)
    # A model that stops at once is a counted failure, not a crash in the vocoder.
    with pytest.raises(BenchError) as info:
        system.to_audio(np.zeros((1, N_MELS), np.float32))
    assert info.value.reason == "too_short"
    # Accented text is folded and spoken.
    assert len(system.synthesize("Café naïve.", _prompt(), ITEM).samples) > 0


def test_options_are_checked():
    with pytest.raises(BenchError, match="no option"):
        TinyFlow(steps=3)
    with pytest.raises(BenchError, match="must be in"):
        TinyFlow(nfe=0)
    assert TinyFlow(nfe="8").options["nfe"] == 8
    assert TinyFlow().identity()["options"] == {"guidance": 2.0, "nfe": 16, "seed": 0, "sway": -1.0}
    with pytest.raises(BenchError, match="must be one of decoder, codebooks"):
        TinyAR(acoustic="vocos")
    assert TinyNAR().options["acoustic"] == "decoder" and TinyAR(acoustic="codebooks").options["acoustic"] == "codebooks"


def test_decoder_reads_tokens_not_phones_and_starts_from_the_flow_model(tmp_path):
    """CosyVoice's decoder: the flow network without its text input, plus a token table. It starts
    from the flow model's weights (the text refinement left out, the token table new), its
    prediction does not depend on the phones at all, and it does depend on the tokens."""
    from systems.tts.families import initialise_from
    from systems.tts.flow import FlowConfig, FlowModel
    from systems.tts.modules import save_checkpoint

    torch.manual_seed(1)
    small = {"d": 32, "layers": 1, "heads": 2, "text_blocks": 1}
    flow = FlowModel(FlowConfig(**small)).eval()
    with torch.no_grad():  # adaLN-Zero gates start closed: open them so that the input matters
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(tmp_path / "flow", flow, {"kind": "flow"})
    decoder = FlowModel(FlowConfig(**small, tokens=8, phones=False)).eval()
    info = initialise_from(decoder, tmp_path / "flow", lambda _: None)
    assert info["new_keys"] == ["token_embed.weight"]
    assert info["left_out_keys"] and all(k.startswith("text.") for k in info["left_out_keys"])
    torch.testing.assert_close(decoder.inp.weight, flow.inp.weight)
    x, ctx = torch.randn(1, 20, N_MELS), torch.zeros(1, 20, N_MELS)
    pos, t = torch.rand(1, 20), torch.tensor([0.4])
    tokens = torch.randint(0, 8, (1, 20))
    with torch.no_grad():
        decoder.token_embed.weight.normal_()
        a = decoder(x, ctx, torch.randint(2, 40, (1, 20)), pos, t, tokens=tokens)
        b = decoder(x, ctx, torch.randint(2, 40, (1, 20)), pos, t, tokens=tokens)
        torch.testing.assert_close(a, b)  # phones are not read
        assert not torch.allclose(a, decoder(x, ctx, torch.zeros(1, 20, dtype=torch.long), pos, t,
                                             tokens=(tokens + 1) % 8))
    with pytest.raises(ValueError, match="give it the frames' tokens"):
        decoder(x, ctx, None, pos, t)
    with pytest.raises(ValueError, match="needs tokens"):
        FlowConfig(phones=False)
    # A checkpoint of another shape is refused with the keys that do not fit.
    wide = FlowModel(FlowConfig(**{**small, "d": 64}, tokens=8))
    with pytest.raises(BenchError, match="wrong shapes"):
        initialise_from(wide, tmp_path / "flow", lambda _: None)


def test_chunk_shaped_examples_hide_what_the_stream_has_not_made(monkeypatch):
    """p_stream: an example cut where a stream's chunk ends, its last frames generated from all
    before them. Frames and tokens after the cut cannot change the loss; frames before it can."""
    from systems.tts import flow
    from systems.tts.flow import FlowConfig, FlowModel, chunk_span, training_loss

    rng = np.random.default_rng(0)
    for n in (32, 100, 400):
        for _ in range(200):
            start, end = chunk_span(rng, n)
            assert flow.STREAM_MIN_CONTEXT <= start and 8 <= end - start <= 96 and end <= n
    torch.manual_seed(0)
    model = FlowModel(FlowConfig(d=32, layers=1, heads=2, tokens=16, phones=False, p_stream=1.0, p_drop_all=0.0,
                                 p_drop_context=0.0, p_token_noise=0.0))
    with torch.no_grad():  # adaLN-Zero gates start closed: open them so that the input matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    monkeypatch.setattr(flow, "chunk_span", lambda rng, n: (60, 100))
    base = {"mel": torch.randn(1, 150, N_MELS), "pad_mask": torch.ones(1, 150, dtype=torch.bool),
            "tokens": torch.randint(16, (1, 150, 8)), "frame_phones": torch.zeros(1, 150, dtype=torch.long),
            "position": torch.zeros(1, 150)}

    def loss(batch):
        with torch.no_grad():
            return float(training_loss(model, batch, torch.Generator().manual_seed(0), np.random.default_rng(0)))

    future = {**base, "mel": base["mel"].clone(), "tokens": base["tokens"].clone()}
    future["mel"][:, 100:] = torch.randn(1, 50, N_MELS)
    future["tokens"][:, 100:] = (future["tokens"][:, 100:] + 1) % 16
    assert loss(future) == loss(base)
    past = {**base, "mel": base["mel"].clone()}
    past["mel"][:, 30] += 3.0
    assert loss(past) != loss(base)
    # Off by default, and an old config (no p_stream) reads as before.
    assert FlowConfig().p_stream == 0 and "p_stream" not in FlowConfig(tokens=4, phones=False).to_json()


@needs_flite
def test_tampered_checkpoint_is_refused(tiny, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny, copy)
    config = copy / "flow" / "config.json"
    config.write_text(config.read_text().replace('"layers": 1', '"layers": 2'))
    with pytest.raises(Unavailable, match="does not match"):
        TinyFlow(checkpoints=str(copy)).load()


def test_vocoder_ceiling_resynthesises_the_reference():
    system = VocoderCeiling()
    system.load()
    item = TTSItem(id="r", text="x", reference_path=LIBRIVOX / "wavs" / "lv0870.wav")
    audio = system.synthesize("x", None, item)
    validate(audio)
    with pytest.raises(BenchError, match="no reference"):
        system.synthesize("x", None, TTSItem(id="r", text="x"))


@needs_flite
def test_duration_free_flow_lays_out_phones_then_fillers(tiny, tmp_path):
    from systems.tts.flow import FlowConfig, FlowModel
    from systems.tts.modules import filler_alignment, save_checkpoint
    from systems.tts.text import VOCAB_SIZE
    from systems.tts.train import write_manifest

    filler = FlowConfig().filler_id
    assert filler == VOCAB_SIZE  # one past the phones: the committed duration-free recipe's id
    phones, position = filler_alignment([5, 6, 7], 6, filler)
    assert phones.tolist() == [5, 6, 7, filler, filler, filler] and not position.any()
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny, copy)
    config = FlowConfig(d=32, layers=1, heads=2, text_blocks=1, alignment="filler")
    save_checkpoint(copy / "flow", FlowModel(config), {"kind": "flow", "model": config.to_json()}, half=True)
    write_manifest(copy)
    system = TinyFlow(checkpoints=str(copy), nfe=2)
    system.load()
    assert len(system.synthesize(ITEM.text, _prompt(), ITEM).samples) > 0


@needs_flite
def test_duration_free_nar_reads_phones_as_a_prefix_and_takes_the_prompts_rate(tiny, tmp_path):
    import numpy as np

    from systems.tts.flow import FlowConfig, FlowModel
    from systems.tts.nar import MaskedModel, NARConfig, training_loss
    from systems.tts.modules import save_checkpoint
    from systems.tts.train import write_manifest

    config = NARConfig(d=32, layers=1, heads=2, levels=2, codes=16, text_blocks=1, alignment="prefix")
    torch.manual_seed(0)
    model = MaskedModel(config)
    # Training: each crop's phones are its prefix; the loss is finite and reaches the weights.
    batch = {"tokens": torch.randint(0, 16, (2, 30, 2)), "pad_mask": torch.ones(2, 30, dtype=torch.bool),
             "frame_phones": torch.zeros(2, 30, dtype=torch.long), "position": torch.zeros(2, 30),
             "texts": [(np.array([5, 6, 7]), None), (np.array([8, 9]), None)]}
    batch["pad_mask"][1, 25:] = False
    loss, _ = training_loss(model, batch, torch.Generator().manual_seed(0), np.random.default_rng(0))
    loss.backward()
    assert torch.isfinite(loss) and model.text.embed.weight.grad.abs().sum() > 0
    # The frames' logits depend on the phones (they attend to the prefix), not on frame phones.
    tokens = torch.full((1, 10, 2), model.mask_id)
    with torch.no_grad():
        a = model(tokens, None, None, phones=torch.tensor([[5, 6, 7]]))
        b = model(tokens, None, None, phones=torch.tensor([[9, 10, 11]]))
    assert a.shape == (1, 10, 2, 16) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="phone sequence"):
        model(tokens, None, None)
    # As a system: the length comes from the prompt's frames per phone, through either acoustic
    # stage (the committed decoder reads no phones); a decoder that reads phones is refused.
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny, copy)
    save_checkpoint(copy / "nar", model, {"kind": "nar", "model": config.to_json()}, half=True)
    write_manifest(copy)
    for acoustic in ("codebooks", "decoder"):
        system = TinyNAR(checkpoints=str(copy), acoustic=acoustic, steps=2, nfe=2)
        system.load()
        plan = system.plan(ITEM.text, _prompt())
        target_phones = len(plan["phones"]) - plan["prompt_phones"]
        expected = round(target_phones * plan["prompt_frames"] / plan["prompt_phones"])
        audio = system.synthesize(ITEM.text, _prompt(), ITEM)
        assert abs(len(audio.samples) - (expected - 1) * HOP) <= HOP, acoustic
    decoder = FlowConfig(d=32, layers=1, heads=2, text_blocks=1, tokens=16, phones=True)
    save_checkpoint(copy / "decoder", FlowModel(decoder), {"kind": "decoder", "model": decoder.to_json()}, half=True)
    write_manifest(copy)
    with pytest.raises(BenchError, match="decoder that reads phones"):
        TinyNAR(checkpoints=str(copy)).load()


def test_autoregressive_cached_generation_matches_a_full_forward_pass():
    """Greedy generation with the KV cache must pick, at every frame, the token a full
    teacher-forced pass over the same tokens picks: same phone features (FrameText's convolutions
    see each frame's neighbours either way), same masks, same positions."""
    from systems.tts.ar import ARConfig, ARModel, NoStop, generate_level1
    from systems.tts.modules import frame_alignment

    torch.manual_seed(3)
    model = ARModel(ARConfig(d=32, layers=2, heads=2, nar_layers=1, levels=2, codes=16)).eval()
    with torch.no_grad():
        model.ar_head.bias[model.eos] = -1e4  # never stops: the guard ends it after the planned frames
    phones = torch.tensor([5, 9, 12, 7, 20, 11, 6])
    durations = np.array([3, 4, 2, 5, 3, 4, 3])
    fp, pos = frame_alignment(phones.numpy(), durations)
    phone_index = torch.from_numpy(np.repeat(np.arange(len(phones)), durations))
    p = 9  # the first three phones are the prompt's
    prompt_tokens = torch.randint(0, 16, (p,))
    target_frames = int(durations.sum()) - p
    generated = []
    with pytest.raises(NoStop):
        for token in generate_level1(model, phones, prompt_tokens, torch.from_numpy(fp), torch.from_numpy(pos),
                                     phone_index, temperature=1.0, top_k=1, max_frames=target_frames):
            generated.append(token)
    assert len(generated) == target_frames
    tokens = torch.cat([prompt_tokens, torch.tensor(generated)])
    previous = torch.cat([torch.tensor([model.bos]), tokens[:-1]])[None]
    with torch.no_grad():
        logits = model.ar_forward(phones[None], torch.tensor([len(phones)]), previous, torch.from_numpy(fp)[None],
                                  torch.from_numpy(pos)[None], phone_index[None])
    assert logits[0, p:, :16].argmax(-1).tolist() == generated

"""The TTS families' pipeline end to end on a tiny corpus, as a user runs it: bench tts-corpus,
bench train-tts for every stage (few steps), bench train-tts --check, the systems loading what was
written; and the evaluation tasks' items (held out from training)."""

from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.contracts import TTSItem
from bench.errors import BenchError

pytestmark = pytest.mark.skipif(shutil.which("flite") is None or shutil.which("espeak-ng") is None,
                                reason="needs flite and espeak-ng (scripts/setup.sh installs them)")
VOICES = "flite-slt,flite-rms,espeak-m1"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    assert main(["tts-corpus", "--out", str(out), "--voices", VOICES, "--per-voice", "6", "--jobs", "1"]) == 0
    return out


def test_corpus_is_deterministic_resumable_and_checked(corpus, tmp_path, capsys):
    info = json.loads((corpus / "corpus.json").read_text())
    assert info["utterances"] == 18 and set(info["voices"]) == set(VOICES.split(","))
    assert info["text_source"]["licence"].startswith("Apache-2.0")
    assert set(info["packages"]) == {"numpy", "soxr", "soundfile"}  # what the audio passed through
    records = [json.loads(line) for line in (corpus / "utterances.jsonl").read_text().splitlines()]
    flite = [r for r in records if r["voice"].startswith("flite")]
    assert all(len(r["flite_timings"]) == len(r["phones"]) for r in flite)
    assert main(["tts-corpus", "--out", str(corpus), "--check"]) == 0
    # A rerun resumes: nothing is synthesised again, the records stay as they were.
    before = (corpus / "utterances.jsonl").read_bytes()
    assert main(["tts-corpus", "--out", str(corpus), "--voices", VOICES, "--per-voice", "6", "--jobs", "1"]) == 0
    assert (corpus / "utterances.jsonl").read_bytes() == before
    # The same plan elsewhere gives the same audio.
    again = tmp_path / "again"
    assert main(["tts-corpus", "--out", str(again), "--voices", "flite-slt", "--per-voice", "2", "--jobs", "1"]) == 0
    first = {r["id"]: r["sha256"] for r in records}
    for r in (json.loads(x) for x in (again / "utterances.jsonl").read_text().splitlines()):
        assert first[r["id"]] == r["sha256"]
    # A changed file is caught.
    wav = next((corpus / "wavs" / "flite-slt").glob("*.wav"))
    data = bytearray(wav.read_bytes())
    data[-1] ^= 1
    wav.write_bytes(bytes(data))
    try:
        assert main(["tts-corpus", "--out", str(corpus), "--check"]) == 1
    finally:
        data[-1] ^= 1
        wav.write_bytes(bytes(data))



def test_a_corpus_has_the_same_manifest_whatever_order_its_workers_finished_in(corpus, tmp_path):
    # Parallel workers append records as they finish; the finished corpus must not depend on that.
    shuffled = tmp_path / "shuffled"
    shutil.copytree(corpus, shuffled)
    lines = (shuffled / "utterances.jsonl").read_text().splitlines(keepends=True)
    (shuffled / "utterances.jsonl").write_text("".join(reversed(lines)))
    assert main(["tts-corpus", "--out", str(shuffled), "--voices", VOICES, "--per-voice", "6", "--jobs", "1"]) == 0
    assert (shuffled / "utterances.jsonl").read_bytes() == (corpus / "utterances.jsonl").read_bytes()
    assert (shuffled / "MANIFEST.sha256").read_bytes() == (corpus / "MANIFEST.sha256").read_bytes()
    ids = [json.loads(line)["id"] for line in lines]
    assert ids == sorted(ids)

def test_every_stage_trains_and_the_systems_load_it(corpus, tmp_path):
    ckpt = tmp_path / "ckpt"
    base = ["train-tts", "--corpus", str(corpus), "--out", str(ckpt)]
    assert main(base + ["--family", "aligner", "--steps", "6"]) == 0
    assert main(base + ["--family", "tokenizer", "--steps", "2"]) == 0
    for family in ("flow", "nar", "ar", "decoder"):
        assert main(base + ["--family", family, "--steps", "2"]) == 0
    assert main(["train-tts", "--out", str(ckpt), "--check"]) == 0
    png = tmp_path / "curves.png"
    assert main(["train-tts", "--out", str(ckpt), "--curves", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert main(["train-tts", "--out", str(tmp_path / "empty"), "--curves", str(png)]) == 1  # nothing trained there
    recipes = json.loads((ckpt / "train_config.json").read_text())["recipes"]
    assert set(recipes) == {"aligner", "tokenizer", "flow", "nar", "ar", "decoder"}
    assert recipes["flow"]["recipe"]["steps"] == 2
    # What float sums depend on besides the recipe is written beside it, for a rebuild that differs.
    import torch

    assert all(r["environment"]["torch"] == torch.__version__ and r["environment"]["cpu"] for r in recipes.values())
    # The decoder starts from the flow model it was trained after, and says which.
    from bench.evaluators import sha256_file

    assert recipes["decoder"]["initialised_from"]["sha256"] == sha256_file(ckpt / "flow" / "model.safetensors")
    assert recipes["decoder"]["initialised_from"]["new_keys"] == ["token_embed.weight"]
    assert all(k.startswith("text.") for k in recipes["decoder"]["initialised_from"]["left_out_keys"])
    from systems.tts.system import TinyAR, TinyFlow, TinyNAR
    from tasks.librivox_mini import LibrivoxMini

    item = LibrivoxMini().items()[0]
    TinyAR(checkpoints=str(ckpt)).load()  # (two steps do not teach it to stop: only loading is checked)
    for cls, options in ((TinyFlow, {"nfe": 2}), (TinyNAR, {"steps": 2, "nfe": 2})):  # NAR: through the decoder
        system = cls(checkpoints=str(ckpt), **options)
        system.load()
        audio = system.synthesize("A short test.", item.prompt, item)
        assert audio.samples.size > 0 and np.isfinite(audio.samples).all()
    # A retrain with the same corpus and seed gives the same weights, byte for byte.
    again = tmp_path / "again"
    shutil.copytree(ckpt, again)
    assert main(["train-tts", "--corpus", str(corpus), "--out", str(again), "--family", "flow", "--steps", "2"]) == 0
    assert (again / "flow" / "model.safetensors").read_bytes() == (ckpt / "flow" / "model.safetensors").read_bytes()


def test_a_corpus_packs_to_one_file_and_trains_where_the_wavs_are_not(corpus, tmp_path, capsys):
    """bench tts-corpus --pack / --unpack: the training features (8-bit), records and the aligner's
    durations in one file; the unpacked folder trains as the original does, and says it has no wavs."""
    from systems.tts.corpus import load_utterances
    from systems.tts.dataset import logmel_cache_path

    ckpt = tmp_path / "ckpt"
    base = ["train-tts", "--corpus", str(corpus), "--out", str(ckpt)]
    assert main(base + ["--family", "aligner", "--steps", "4"]) == 0
    # A step caches the features and durations.
    assert main(base + ["--family", "flow", "--steps", "1", "--precision", "fp32"]) == 0
    pack = tmp_path / "corpus.pack"
    assert main(["tts-corpus", "--out", str(corpus), "--pack", str(pack), "--checkpoints", str(ckpt)]) == 0
    unpacked = tmp_path / "unpacked"
    assert main(["tts-corpus", "--out", str(unpacked), "--unpack", str(pack)]) == 0
    records = load_utterances(corpus, split="train", set_name="train")
    assert load_utterances(unpacked, split="train", set_name="train") == records
    with np.load(logmel_cache_path(corpus, records, "train", "train")) as a, \
            np.load(logmel_cache_path(unpacked, records, "train", "train")) as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:  # within half a quantisation step (of the widest band) and float16
            x, y = a[key].astype(np.float32), b[key].astype(np.float32)
            assert x.shape == y.shape and np.abs(x - y).max() < 0.05
    info = json.loads((unpacked / "corpus.json").read_text())
    assert info["unpacked_from"]["wavs"] == "absent" and 0 < info["unpacked_from"]["rms_error_log_mel"] < 0.05
    again = tmp_path / "again"
    again.mkdir()
    shutil.copytree(ckpt / "aligner", again / "aligner")
    assert main(["train-tts", "--corpus", str(unpacked), "--out", str(again), "--family", "flow", "--steps", "1",
                 "--precision", "fp32"]) == 0
    assert (again / "flow" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["tts-corpus", "--out", str(unpacked), "--check"]) == 1  # the wavs are not there, and it says so
    (tmp_path / "bad.pack").write_bytes(lzma.compress(b'{"version": "other"}\n'))
    assert main(["tts-corpus", "--out", str(tmp_path / "x"), "--unpack", str(tmp_path / "bad.pack")]) == 1
    assert "is not a tts-pack-v1 pack" in capsys.readouterr().err
    (tmp_path / "bad.pack").write_bytes(b"not lzma at all")
    assert main(["tts-corpus", "--out", str(tmp_path / "x"), "--unpack", str(tmp_path / "bad.pack")]) == 1
    assert "is not a readable tts-pack-v1 pack" in capsys.readouterr().err
    for bad in (["--batch", "0"], ["--minutes", "0"]):
        with pytest.raises(SystemExit):
            main(base + ["--family", "flow", *bad])
    with pytest.raises(SystemExit):
        main(["tts-corpus", "--out", str(unpacked), "--pack", str(pack), "--unpack", str(pack)])
    capsys.readouterr()
    assert main(base + ["--family", "nar", "--device", "cuda"]) == 1
    assert "only the flow and decoder families train off the CPU" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert main(base + ["--family", "flow", "--device", "cuda"]) == 1
        assert "sees no CUDA device" in capsys.readouterr().err


def test_verify_steps_replays_the_recorded_recipe_and_changes_nothing(corpus, tmp_path, capsys, monkeypatch):
    """bench train-tts --verify-steps N: the recorded recipe's first N steps in a scratch copy, its log
    compared with the recorded one (the whole recipe: the bytes too); a changed log is caught."""
    import systems.tts.families as families

    monkeypatch.setattr(families, "LOG_EVERY", 1)  # a log entry every step, so a prefix has entries to compare
    ckpt = tmp_path / "ckpt"
    base = ["train-tts", "--corpus", str(corpus), "--out", str(ckpt)]
    assert main(base + ["--family", "aligner", "--steps", "4"]) == 0
    # In float32 (fast on any CPU; bf16 is emulated, 25-33x slower, on one without bf16 instructions):
    # the replay follows the recorded precision.
    assert main(base + ["--family", "flow", "--steps", "3", "--precision", "fp32"]) == 0
    assert json.loads((ckpt / "flow" / "train_log.json").read_text())["recipe"]["bf16"] is False
    before = {p: p.read_bytes() for p in ckpt.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(base + ["--family", "flow", "--verify-steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "step 1: loss" in out and "step 2: loss" in out and "step 3" not in out
    assert "flow: reproduced (the log of the first 2 steps)" in out
    assert main(base + ["--family", "flow", "--verify-steps", "3"]) == 0
    assert "model.safetensors: the same bytes" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in ckpt.rglob("*") if p.is_file()} == before  # nothing in --out changed
    log_path = ckpt / "flow" / "train_log.json"
    recorded = json.loads(log_path.read_text())
    recorded["history"][1]["loss"] += 0.001
    log_path.write_text(json.dumps(recorded))
    assert main(base + ["--family", "flow", "--verify-steps", "2"]) == 1
    assert "flow: not reproduced (first difference: 2)" in capsys.readouterr().out
    assert main(base + ["--family", "flow", "--verify-steps", "5"]) == 1
    assert "has entries at steps 1, 2, 3; give one of them" in capsys.readouterr().err
    config = json.loads((ckpt / "train_config.json").read_text())
    config["recipes"]["flow"]["corpus_manifest_sha256"] = "0" * 64
    (ckpt / "train_config.json").write_text(json.dumps(config))
    assert main(base + ["--family", "flow", "--verify-steps", "2"]) == 1
    assert "is not the one flow was trained on" in capsys.readouterr().err
    assert main(base + ["--family", "nar", "--verify-steps", "2"]) == 1
    assert "no trained nar in" in capsys.readouterr().err
    for bad in (["--family", "aligner", "--verify-steps", "1"], ["--family", "flow", "--verify-steps", "1", "--steps", "2"],
                ["--family", "flow", "--verify-steps", "1", "--precision", "fp32"],
                ["--family", "tokenizer", "--precision", "fp32"]):
        with pytest.raises(SystemExit):
            main(base + bad)


@pytest.mark.parametrize("text", ["chars", "ipa"])
def test_a_folder_can_read_characters_or_ipa_instead_of_phones(corpus, tmp_path, text, capsys):
    from systems.tts.modules import read_config
    from systems.tts.system import TinyFlow
    from systems.tts.text import front_end, vocab_size
    from tasks.librivox_mini import LibrivoxMini

    ckpt = tmp_path / text
    base = ["train-tts", "--corpus", str(corpus), "--out", str(ckpt)]
    with pytest.raises(SystemExit):  # the front end is the aligner's to set
        main(base + ["--family", "flow", "--text", text])
    assert "--family aligner" in capsys.readouterr().err
    assert main(base + ["--family", "aligner", "--steps", "6", "--text", text]) == 0
    assert main(base + ["--family", "flow", "--steps", "2", "--precision", "fp32"]) == 0
    assert read_config(ckpt / "aligner")["text"] == text and read_config(ckpt / "duration")["text"] == text
    assert read_config(ckpt / "flow")["model"]["text"] == text
    recipes = json.loads((ckpt / "train_config.json").read_text())["recipes"]
    assert recipes["aligner"]["text"] == text and recipes["flow"]["model"]["text"] == text
    assert "boundary_error_frames_mean" not in json.loads((ckpt / "aligner" / "train_log.json").read_text())["check"]
    from safetensors.torch import load_file

    embed = load_file(str(ckpt / "aligner" / "model.safetensors"))["embed.weight"]
    assert embed.shape[0] == vocab_size(text) != vocab_size("phones")
    item = LibrivoxMini().items()[0]
    system = TinyFlow(checkpoints=str(ckpt), nfe=2)
    system.load()
    assert system.front_end.name == text
    plan = system.plan("A short test.", item.prompt)
    units = front_end(text).units("A short test.")
    assert len(plan["phones"]) == plan["prompt_phones"] + len(units) - 1  # the shared pause counted once
    audio = system.synthesize("A short test.", item.prompt, item)
    assert audio.samples.size > 0 and np.isfinite(audio.samples).all()
    # A family whose front end is not its folder's is refused with what to do.
    shutil.copy(tmp_path / text / "flow" / "config.json", tmp_path / "flow-config.json")
    config = read_config(ckpt / "flow")
    config["model"]["text"] = "phones" if text == "chars" else "chars"
    (ckpt / "flow" / "config.json").write_text(json.dumps(config))
    from systems.tts.train import write_manifest

    write_manifest(ckpt)
    with pytest.raises(BenchError, match="retrain the family"):
        TinyFlow(checkpoints=str(ckpt), nfe=2).load()


def test_missing_corpus_and_checkpoints_say_what_to_run(tmp_path, capsys):
    assert main(["train-tts", "--corpus", str(tmp_path / "none"), "--out", str(tmp_path / "c"), "--family", "aligner"]) == 1
    assert "bench tts-corpus" in capsys.readouterr().err
    assert main(["train-tts", "--out", str(tmp_path / "c2"), "--check"]) == 1
    assert "bench train-tts" in capsys.readouterr().err


def test_eval_tasks_hold_out_their_sentences(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_HOME", str(tmp_path))
    from systems.tts.corpus import training_texts
    from tasks.tts_eval import TTSDev, TTSHard, TTSSeen, TTSUnseen

    train = training_texts()
    seen, unseen, hard, dev = TTSSeen().items(), TTSUnseen().items(), TTSHard().items(), TTSDev().items()
    assert len(seen) == 28 and len(hard) == 20 and len(unseen) >= 8 and len(dev) == 56
    # The development set (where inference settings are chosen) shares no sentence with any test
    # set, prompts included, and lives in its own folder, so the test sets' identity is untouched.
    test_texts = {t for items in (seen, unseen, hard) for it in items for t in (it.text, it.prompt.text)}
    assert not {t for it in dev for t in (it.text, it.prompt.text)} & test_texts
    assert {it.tags["voice"] for it in dev} == {it.tags["voice"] for it in seen}
    assert dev[0].reference_path.parent.parent != seen[0].reference_path.parent.parent
    for items in (seen, unseen, hard, dev):
        assert len({it.id for it in items}) == len(items)
        assert not {it.text for it in items} & train
        assert all(it.prompt.text not in train and it.prompt.text != it.text for it in items)
        assert all(it.tags["voice"] in it.prompt.audio_path.name for it in items)
    heldout_voices = {it.tags["voice"] for it in unseen}
    assert not heldout_voices & {it.tags["voice"] for it in seen}
    # The identity pins the audio: a different rendering would be a different task identity.
    ident = TTSSeen().identity()
    assert len(ident["audio_sha256"]) == 64
    # A modified file is refused with the fix.
    victim = seen[0].reference_path
    victim.write_bytes(victim.read_bytes()[:-2] + b"\x00\x01")
    with pytest.raises(BenchError, match="modified"):
        TTSSeen().items()


@pytest.mark.parametrize("slowdown, warned", [(30.0, True), (1.2, False)])
def test_a_cpu_that_emulates_bf16_is_named_before_a_bf16_recipe_trains(slowdown, warned, monkeypatch):
    import systems.tts.families as families

    class Stop(Exception):
        pass

    def stop(*args):  # no checkpoint folder or corpus is needed: the check comes before them
        raise Stop

    monkeypatch.setattr(families, "bf16_slowdown", lambda: slowdown)
    monkeypatch.setattr("systems.tts.aligner.front_end_of", stop)
    for precision, expected in (("bf16", warned), ("fp32", False)):
        lines = []
        with pytest.raises(Stop):
            families.train_family("flow", Path("unused"), Path("unused"), lines.append, 1, 1, precision=precision)
        assert any("slower than float32" in line and "--precision fp32" in line for line in lines) == expected


def test_bf16_slowdown_measures_a_ratio():
    from systems.tts.families import bf16_slowdown

    ratio = bf16_slowdown(size=64)
    assert 0.01 < ratio < 1000

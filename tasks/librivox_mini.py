"""librivox-mini: the embedded default task (11 real utterances, 3 speakers, shipped in the repo).

Items, built deterministically from tasks/data/librivox_mini/manifest.json. Targets are the five
LibriVox utterances only (TARGET_SPEAKERS): the 'cards' and 'goforward' clips are narrowband
command recordings whose transcripts spell numbers ("ten of clubs") that Whisper writes as digits,
so under the Seed-TTS protocol (no number normalisation) even the real recordings score about 26 %
WER there; they would measure the ASR, not the system. They serve as other-speaker prompts.
  * same-speaker (5 items): each target's prompt is the NEXT utterance of the same speaker (ids
    sorted, wrapping around), i.e. a different sentence of the same voice, as in Seed-TTS-eval's
    cross-sentence prompts.
  * cross-speaker (5 items): each target again, with a prompt from another speaker: the k-th
    target (in id order) takes speaker k mod S of the S other speakers (sorted), and that
    speaker's utterance (k div S) mod n (in id order).
Item ids are "<target>__<prompt>" (e.g. "lv0870__lv0880"); tags carry speaker, prompt_speaker and
prompt_relation, and the summary reports each relation separately (`report_groups`), so the
ground-truth SIM of same-speaker pairs can be read beside that of cross-speaker pairs.

Every file's sha256 is checked against the manifest when the items are built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.contracts import Availability, Prompt, Protocol, Task, TTSItem
from bench.errors import BenchError
from tasks import check_options, options_aware

DATA_DIR = Path(__file__).resolve().parent / "data" / "librivox_mini"
MANIFEST = "manifest.json"
SAME_SPEAKER = "same-speaker"
TARGET_SPEAKERS = ("librivox-ss01",)
CROSS_SPEAKER = "cross-speaker"


@dataclass(frozen=True)
class Utterance:
    id: str
    path: Path
    text: str
    speaker: str
    duration_s: float


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_manifest(data_dir: Path) -> list[Utterance]:
    """The manifest's utterances, each file checked for existence and sha256."""
    manifest_path = data_dir / MANIFEST
    if not manifest_path.is_file():
        raise BenchError(f"librivox-mini: no manifest at {manifest_path}; the repository's "
                         "tasks/data/librivox_mini folder is incomplete (restore it with git checkout)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        entries = manifest["utterances"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"librivox-mini: {manifest_path} is not a valid manifest ({exc})") from None
    utterances, seen = [], set()
    for n, entry in enumerate(entries, 1):
        try:
            uid, rel, text, speaker = entry["id"], entry["file"], entry["text"], entry["speaker"]
            expected, duration = entry["sha256"], float(entry["duration_s"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchError(f"librivox-mini: {manifest_path}, utterance #{n} lacks a field ({exc})") from None
        if uid in seen:
            raise BenchError(f"librivox-mini: {manifest_path} lists utterance id '{uid}' twice")
        seen.add(uid)
        path = data_dir / rel
        if not path.is_file():
            raise BenchError(f"librivox-mini: {path} (utterance '{uid}') is missing; restore it with "
                             f"git checkout -- {path}")
        actual = _sha256(path)
        if actual != expected:
            raise BenchError(f"librivox-mini: {path} (utterance '{uid}') was modified: sha256 {actual} "
                             f"differs from the manifest's {expected}; restore it with git checkout -- {path}")
        utterances.append(Utterance(uid, path, text, speaker, duration))
    if not utterances:
        raise BenchError(f"librivox-mini: {manifest_path} lists no utterances")
    return utterances


def pair_items(utterances: list[Utterance], target_speakers: tuple[str, ...] = TARGET_SPEAKERS) -> list[TTSItem]:
    """Same-speaker and cross-speaker items (see the module docstring); deterministic."""
    ordered = sorted(utterances, key=lambda u: u.id)
    by_speaker: dict[str, list[Utterance]] = {}
    for u in ordered:
        by_speaker.setdefault(u.speaker, []).append(u)

    def item(target: Utterance, prompt: Utterance, relation: str) -> TTSItem:
        return TTSItem(
            id=f"{target.id}__{prompt.id}", text=target.text,
            prompt=Prompt(audio_path=prompt.path, text=prompt.text),
            reference_path=target.path, language="en",
            tags={"speaker": target.speaker, "prompt_speaker": prompt.speaker, "prompt_relation": relation,
                  "target": target.id, "prompt": prompt.id})

    items = []
    for speaker, group in by_speaker.items():
        if speaker not in target_speakers or len(group) < 2:
            continue  # a speaker with one utterance has no other sentence to prompt with
        for i, target in enumerate(group):
            items.append(item(target, group[(i + 1) % len(group)], SAME_SPEAKER))
    for k, target in enumerate(u for u in ordered if u.speaker in target_speakers):
        # Round-robin over the other speakers, then over each one's utterances, so every other
        # speaker prompts some target.
        other_speakers = sorted(sp for sp in by_speaker if sp != target.speaker)
        if other_speakers:
            group = by_speaker[other_speakers[k % len(other_speakers)]]
            items.append(item(target, group[(k // len(other_speakers)) % len(group)], CROSS_SPEAKER))
    return items


class LibrivoxMini(Task):
    name = "librivox-mini"
    version = "2"
    description = ("5 real LibriVox utterances as targets, 11 clips of 3 speakers as prompts, shipped in "
                   "the repo; 5 same-speaker and 5 cross-speaker prompt pairs. A smoke test, not a benchmark")
    protocol = Protocol(
        metrics=("wer", "sim", "dnsmos", "distillmos", "utmos", "pesq", "stoi"),
        normalizer="seedtts", language="en",
        notes="Seed-TTS-style cross-sentence prompts; PESQ/STOI compare with the target's real recording; "
              "results are reported per prompt_relation (same-speaker vs cross-speaker)")
    report_groups = ("prompt_relation",)

    def __init__(self, **options: Any):
        check_options(self.name, options, ["data_dir"])
        super().__init__(**options)
        self.data_dir = Path(options["data_dir"]) if options.get("data_dir") else DATA_DIR

    @options_aware
    def availability(self) -> Availability:
        if not (self.data_dir / MANIFEST).is_file():
            return Availability.no(f"no librivox-mini manifest in {self.data_dir}",
                                   "restore the repository's tasks/data/librivox_mini folder (git checkout)")
        return Availability.yes()

    def utterances(self) -> list[Utterance]:
        return load_manifest(self.data_dir)

    def items(self) -> list[TTSItem]:
        return pair_items(self.utterances())

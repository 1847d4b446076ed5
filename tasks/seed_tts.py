"""seed-tts-eval: the Seed-TTS zero-shot TTS test sets (BytedanceSpeech/seed-tts-eval).

The data is not shipped (download link in that repository's README); point option `root` at the
unpacked `seedtts_testset` folder (or at its parent), or put it at
$BENCH_HOME/data/seedtts_testset. Layout used by the dataset and by F5-TTS's eval scripts:

    seedtts_testset/en/meta.lst        test-en   (Common Voice, 1088 lines)
    seedtts_testset/zh/meta.lst        test-zh   (DiDiSpeech-2)
    seedtts_testset/zh/hardcase.lst    test-hard (hard Chinese sentences)
    .../prompt-wavs/*.wav, .../wavs/*.wav

Each meta line is `utt|prompt_text|prompt_wav|target_text` with an optional fifth field, the
ground-truth recording of the target text. Paths are relative to the meta file's folder. Without
a fifth field the ground truth is `wavs/<utt>.wav` when that file exists (none for hard cases).
English is scored with word error rate; Chinese with character error rate (items carry language
"zh", for which the `wer` metric's default unit=auto counts characters), both after the Seed-TTS
normaliser.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.contracts import Availability, Prompt, Protocol, Task, TTSItem
from bench.errors import BenchError, Unavailable
from tasks import check_options, data_home, line_error, options_aware, resolve_audio

# subset -> (meta file relative to seedtts_testset, language)
SUBSETS = {
    "test-en": ("en/meta.lst", "en"),
    "test-zh": ("zh/meta.lst", "zh"),
    "test-hard": ("zh/hardcase.lst", "zh"),
}
ROOT_ENV = "SEEDTTS_EVAL_ROOT"
HOW_TO_GET = ("download seedtts_testset from the link in https://github.com/BytedanceSpeech/seed-tts-eval "
              "(README, 'Dataset'), unpack it, and pass --task-opt root=<path to seedtts_testset> "
              f"(or set {ROOT_ENV}, or put it at {data_home() / 'seedtts_testset'})")
METRICS = ("wer", "sim", "utmos")


def read_meta_list(meta: Path, language: str = "en", subset: str = "") -> list[TTSItem]:
    """Parse a Seed-TTS meta list into items; any malformed line is an error naming the line."""
    base = meta.parent
    try:
        lines = meta.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark is not part of the first id
    except UnicodeDecodeError as exc:
        raise BenchError(f"{meta} is not UTF-8 text ({exc})") from None
    items: list[TTSItem] = []
    first_line: dict[str, int] = {}
    for line_no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        fields = line.split("|")
        if len(fields) not in (4, 5):
            raise line_error(meta, line_no, f"expected 4 or 5 '|'-separated fields "
                                            f"(utt|prompt_text|prompt_wav|target_text[|ground_truth_wav]), "
                                            f"found {len(fields)}")
        utt, prompt_text, prompt_wav, target_text = (f.strip() for f in fields[:4])
        if not utt:
            raise line_error(meta, line_no, "the utterance id (field 1) is empty")
        if not target_text:
            raise line_error(meta, line_no, f"utterance '{utt}' has an empty target text (field 4)")
        if not prompt_text:
            raise line_error(meta, line_no, f"utterance '{utt}' has an empty prompt text (field 2)")
        if utt in first_line:
            raise line_error(meta, line_no, f"utterance id '{utt}' already appears on line {first_line[utt]}")
        first_line[utt] = line_no
        prompt_path = resolve_audio(base, prompt_wav, meta, line_no, "prompt wav")
        if len(fields) == 5:
            reference = resolve_audio(base, fields[4], meta, line_no, "ground-truth wav")
        else:
            guess = base / "wavs" / f"{utt}.wav"
            reference = guess if guess.is_file() else None
        items.append(TTSItem(id=utt, text=target_text, prompt=Prompt(prompt_path, prompt_text),
                             reference_path=reference, language=language,
                             tags={"subset": subset or meta.stem}))
    if not items:
        raise BenchError(f"{meta} has no items")
    return items


class SeedTTSEval(Task):
    name = "seed-tts-eval"
    version = "1"
    description = "Seed-TTS-eval zero-shot TTS sets: test-en (default), test-zh, test-hard (option subset)"
    protocol = Protocol(metrics=METRICS, normalizer="seedtts", language="en",
                        notes="Seed-TTS-eval: WER with Whisper-large-v3 (en), SIM-o against the prompt")

    def __init__(self, **options: Any):
        check_options(self.name, options, ["root", "subset"])
        super().__init__(**options)
        self.subset = str(options.get("subset", "test-en"))
        if self.subset not in SUBSETS:
            raise BenchError(f"seed-tts-eval: unknown subset '{self.subset}'; valid: {', '.join(SUBSETS)}")
        meta_rel, self.language = SUBSETS[self.subset]
        self.meta_rel = meta_rel
        if self.language == "zh":
            # Chinese is scored by characters: an instance protocol overrides the class default.
            self.protocol = Protocol(
                metrics=METRICS, normalizer="seedtts", language="zh",
                notes="Seed-TTS-eval zh: CER (items are language zh, so the wer metric's default unit=auto "
                      "scores characters, as unit=char; Paraformer-zh upstream); SIM-o against the prompt")
        given = options.get("root") or os.environ.get(ROOT_ENV)
        self.root = Path(given).expanduser() if given else data_home() / "seedtts_testset"

    def meta_path(self) -> tuple[Path, str] | None:
        """The subset's meta list and the layout it was found in: root/en/meta.lst (root is
        seedtts_testset), root/seedtts_testset/en/meta.lst (its parent), or root/meta.lst (root is
        the language folder itself)."""
        name = Path(self.meta_rel).name
        for candidate, layout in ((self.root / self.meta_rel, f"{self.root} is seedtts_testset"),
                                  (self.root / "seedtts_testset" / self.meta_rel, f"{self.root} holds seedtts_testset"),
                                  (self.root / name, f"{self.root} holds {name} directly")):
            if candidate.is_file():
                return candidate, layout
        return None

    @options_aware
    def availability(self) -> Availability:
        if self.meta_path() is None:
            return Availability.no(f"no {self.meta_rel} (or {Path(self.meta_rel).name}) under {self.root}", HOW_TO_GET)
        return Availability.yes()

    def items(self) -> list[TTSItem]:
        found = self.meta_path()
        if found is None:
            raise Unavailable(f"seed-tts-eval: no {self.meta_rel} (or {Path(self.meta_rel).name}) under {self.root} "
                              f"-> {HOW_TO_GET}")
        meta, layout = found
        import sys

        print(f"seed-tts-eval: reading {meta} ({layout})", file=sys.stderr)
        return read_meta_list(meta, self.language, self.subset)

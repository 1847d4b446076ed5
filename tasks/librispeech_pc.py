"""librispeech-pc: LibriSpeech-PC test-clean, 4-10 s cross-sentence list, as used by F5-TTS.

Two things are needed, neither shipped:
  * the list `librispeech_pc_test_clean_cross_sentence.lst` (F5-TTS repository, data/ folder),
    one pair a line, six tab-separated fields:
        prompt_id  prompt_duration  prompt_text  target_id  target_duration  target_text
    (the text is LibriSpeech-PC's punctuated, cased transcript);
  * LibriSpeech test-clean (https://www.openslr.org/12), read from
        <root>/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac
    where root is the test-clean folder (or a folder holding LibriSpeech/test-clean).
Options: `list` and `root`; defaults $BENCH_HOME/data/librispeech_pc_test_clean_cross_sentence.lst and
$BENCH_HOME/data/LibriSpeech/test-clean (env LIBRISPEECH_PC_LIST, LIBRISPEECH_TEST_CLEAN override).
Item id = the target utterance id; its recording is the reference, the prompt is another
utterance of the same speaker.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from bench.contracts import Availability, Prompt, Protocol, Task, TTSItem
from bench.errors import BenchError, Unavailable
from tasks import check_options, data_home, line_error, options_aware

LIST_NAME = "librispeech_pc_test_clean_cross_sentence.lst"
LIST_ENV, ROOT_ENV = "LIBRISPEECH_PC_LIST", "LIBRISPEECH_TEST_CLEAN"
LIST_HOW = (f"get {LIST_NAME} from the data/ folder of https://github.com/SWivid/F5-TTS and pass "
            f"--task-opt list=<file> (or set {LIST_ENV}, or put it at {data_home() / LIST_NAME})")
ROOT_HOW = ("download test-clean.tar.gz from https://www.openslr.org/12, unpack it and pass "
            f"--task-opt root=<.../LibriSpeech/test-clean> (or set {ROOT_ENV}, or unpack it under "
            f"{data_home()})")
_UTT_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def flac_path(root: Path, utt_id: str) -> Path:
    speaker, chapter, _ = utt_id.split("-")
    return root / speaker / chapter / f"{utt_id}.flac"


def read_cross_sentence_list(list_path: Path, root: Path) -> list[TTSItem]:
    """Parse the F5-TTS LibriSpeech-PC list; errors name the file and line."""
    try:
        lines = list_path.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark is not part of the first id
    except UnicodeDecodeError as exc:
        raise BenchError(f"{list_path} is not UTF-8 text ({exc})") from None
    items: list[TTSItem] = []
    first_line: dict[str, int] = {}
    for line_no, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        fields = raw.rstrip("\r\n").split("\t")
        if len(fields) != 6:
            raise line_error(list_path, line_no, "expected 6 tab-separated fields (prompt_id, prompt_duration, "
                                                 f"prompt_text, target_id, target_duration, target_text), "
                                                 f"found {len(fields)}")
        prompt_id, prompt_dur, prompt_text, target_id, target_dur, target_text = (f.strip() for f in fields)
        for what, uid in (("prompt", prompt_id), ("target", target_id)):
            if not _UTT_ID.match(uid):
                raise line_error(list_path, line_no, f"the {what} id '{uid}' is not a LibriSpeech id "
                                                     "(<speaker>-<chapter>-<utterance>)")
        for what, dur in (("prompt", prompt_dur), ("target", target_dur)):
            try:
                float(dur)
            except ValueError:
                raise line_error(list_path, line_no, f"the {what} duration '{dur}' is not a number") from None
        if not target_text or not prompt_text:
            raise line_error(list_path, line_no, "a text field is empty")
        if target_id in first_line:
            raise line_error(list_path, line_no, f"target id '{target_id}' already appears on line "
                                                 f"{first_line[target_id]}")
        first_line[target_id] = line_no
        paths = {}
        for what, uid in (("prompt", prompt_id), ("target", target_id)):
            paths[what] = flac_path(root, uid)
            if not paths[what].is_file():
                raise line_error(list_path, line_no, f"the {what} recording {paths[what]} does not exist "
                                                     f"(is root={root} the LibriSpeech test-clean folder?)")
        speaker = target_id.split("-")[0]
        items.append(TTSItem(
            id=target_id, text=target_text, prompt=Prompt(paths["prompt"], prompt_text),
            reference_path=paths["target"], language="en",
            tags={"speaker": speaker, "prompt_relation": "same-speaker" if prompt_id.split("-")[0] == speaker
                  else "cross-speaker"}))
    if not items:
        raise BenchError(f"{list_path} has no items")
    return items


class LibriSpeechPC(Task):
    name = "librispeech-pc"
    version = "1"
    description = "LibriSpeech-PC test-clean 4-10 s cross-sentence pairs (F5-TTS list) over LibriSpeech test-clean"
    protocol = Protocol(metrics=("wer", "sim", "utmos"), normalizer="seedtts", language="en",
                        notes="F5-TTS protocol: WER (Whisper-large-v3 upstream) and SIM-o against the prompt")

    def __init__(self, **options: Any):
        check_options(self.name, options, ["list", "root"])
        super().__init__(**options)
        given_list = options.get("list") or os.environ.get(LIST_ENV)
        self.list_path = Path(given_list).expanduser() if given_list else data_home() / LIST_NAME
        given_root = options.get("root") or os.environ.get(ROOT_ENV)
        self.root = Path(given_root).expanduser() if given_root else data_home() / "LibriSpeech" / "test-clean"

    def test_clean_dir(self) -> Path | None:
        for candidate in (self.root, self.root / "test-clean", self.root / "LibriSpeech" / "test-clean"):
            if candidate.is_dir() and any(p.name.isdigit() for p in candidate.iterdir() if p.is_dir()):
                return candidate
        return None

    @options_aware
    def availability(self) -> Availability:
        if not self.list_path.is_file():
            return Availability.no(f"no pair list at {self.list_path}", LIST_HOW)
        if self.test_clean_dir() is None:
            return Availability.no(f"no LibriSpeech test-clean speaker folders under {self.root}", ROOT_HOW)
        return Availability.yes()

    def items(self) -> list[TTSItem]:
        avail = self.availability()
        if not avail.ok:
            raise Unavailable(f"librispeech-pc: {avail.message()}")
        root = self.test_clean_dir()
        assert root is not None
        return read_cross_sentence_list(self.list_path, root)

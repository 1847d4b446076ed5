"""Zero-shot TTS tasks on the offline voices (the test sets of our own TTS families).

  tts-seen    held-out sentences in the training voices (prompt: another held-out sentence of the
              same voice; reference: the target sentence in that voice)
  tts-unseen  held-out voices no model trains on (Festival ked, eSpeak NG m3, Piper joe where the
              optional piper extra is installed), prompt and target from the same unseen voice
  tts-hard    robustness texts (tongue twisters, repeated words and phrases: the kind Seed-TTS
              test-hard and RALL-E use) in the training voices
  tts-dev     the development set: more held-out sentences in the training voices, from a stream
              of their own (neither trained on nor tested on). Inference settings are chosen here
              (`bench tts-compare --ablation dev`), so that no test item tunes anything.

Sentences come from systems.tts.text's held-out stream (the dev set: its dev stream, minus the test
sentences too), minus every training sentence, so no evaluated text was trained on. The audio is
made on first use by the corpus' own code (systems.tts.corpus.synthesize_chunk) into
$BENCH_HOME/data/tts-eval-<version> (tts-dev-<version> for the dev set; or the data_dir option) and
is deterministic for a given engine version; the sha256 of every file goes into the task's
identity, so runs made from different audio never share a spec hash.
Each item is also tagged with its voice and prompt relation, and results are grouped by voice.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from bench.contracts import Availability, Prompt, Protocol, Task, TTSItem
from bench.errors import BenchError
from tasks import check_options, data_home, options_aware

EVAL_VERSION = "1"
TARGETS_PER_VOICE = 4
PROMPTS_PER_VOICE = 4
DEV_TARGETS_PER_VOICE = 8  # twice the test's: the settings chosen here should not follow one item's luck
HARD_REPETITIVE = 8


def _plan() -> dict[str, list[dict[str, str]]]:
    """Every utterance each task needs: {task: [{id, voice, text, role}]} (deterministic)."""
    from systems.tts.corpus import VOICES, training_texts
    from systems.tts.text import TONGUE_TWISTERS, heldout_sentences, repetitive_sentences

    train_voices = [v.name for v in VOICES if v.split == "train"]
    heldout_voices = [v.name for v in VOICES if v.split == "heldout"]
    per_voice = TARGETS_PER_VOICE + PROMPTS_PER_VOICE
    pool = heldout_sentences(per_voice * (len(train_voices) + len(heldout_voices)) + len(train_voices),
                             training_texts())
    plan: dict[str, list[dict[str, str]]] = {"tts-seen": [], "tts-unseen": [], "tts-hard": []}
    cursor = 0
    for voice in train_voices + heldout_voices:
        task = "tts-seen" if voice in train_voices else "tts-unseen"
        for j in range(TARGETS_PER_VOICE):  # one prompt per target here (PROMPTS_PER_VOICE == TARGETS_PER_VOICE)
            plan[task].append({"id": f"{voice}-t{j}", "voice": voice, "text": pool[cursor + j], "role": "target"})
            plan[task].append({"id": f"{voice}-p{j}", "voice": voice, "text": pool[cursor + TARGETS_PER_VOICE + j],
                               "role": "prompt"})
        cursor += per_voice
    hard = list(TONGUE_TWISTERS) + repetitive_sentences(HARD_REPETITIVE)
    for k, text in enumerate(hard):
        voice = train_voices[k % len(train_voices)]
        plan["tts-hard"].append({"id": f"{voice}-h{k:02d}", "voice": voice, "text": text, "role": "target"})
    return plan


def _dev_plan() -> dict[str, list[dict[str, str]]]:
    """The development set's utterances: its own sentence stream, minus training and test sentences."""
    from systems.tts.corpus import VOICES, training_texts
    from systems.tts.text import DEV_SEED, heldout_sentences

    test_texts = {e["text"] for entries in _plan().values() for e in entries}
    train_voices = [v.name for v in VOICES if v.split == "train"]
    per_voice = DEV_TARGETS_PER_VOICE + PROMPTS_PER_VOICE
    pool = heldout_sentences(per_voice * len(train_voices), training_texts() | test_texts, seed=DEV_SEED)
    entries = []
    for k, voice in enumerate(train_voices):
        texts = pool[k * per_voice:(k + 1) * per_voice]
        entries += [{"id": f"{voice}-t{j}", "voice": voice, "text": texts[j], "role": "target"}
                    for j in range(DEV_TARGETS_PER_VOICE)]
        entries += [{"id": f"{voice}-p{j}", "voice": voice, "text": texts[DEV_TARGETS_PER_VOICE + j], "role": "prompt"}
                    for j in range(PROMPTS_PER_VOICE)]
    return {"tts-dev": entries}


def build_eval_set(folder: Path, plan: dict[str, list[dict[str, str]]]) -> dict[str, Any]:
    """Synthesise every planned utterance into folder (atomically: a temp folder, then renamed)."""
    from systems.tts.corpus import VOICE_BY_NAME, synthesize_chunk

    unique: dict[str, dict[str, str]] = {}
    for entries in plan.values():
        for e in entries:
            unique[e["id"]] = e
    # Hard items reuse the seen prompts of their voice: make those too.
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tts-eval-", dir=folder.parent))
    try:
        records, skipped = {}, {}
        by_voice: dict[str, list[tuple[str, str]]] = {}
        for e in unique.values():
            by_voice.setdefault(e["voice"], []).append((e["id"], e["text"]))
        for voice_name, items in sorted(by_voice.items()):
            voice = VOICE_BY_NAME[voice_name]
            ok, why = voice.available()
            if not ok:
                skipped[voice_name] = why
                continue
            for r in synthesize_chunk(voice, items, str(tmp / "wavs")):
                records[r["id"]] = {"file": f"wavs/{r['id']}.wav", "text": r["text"], "voice": voice_name,
                                    "sha256": r["sha256"], "seconds": r["seconds"]}
        manifest = {"version": EVAL_VERSION, "plan": plan, "utterances": records, "skipped_voices": skipped}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


class TTSEvalTask(Task):
    version = EVAL_VERSION
    protocol = Protocol(metrics=("wer", "sim", "distillmos", "pesq", "stoi"), normalizer="seedtts", language="en",
                        notes="zero-shot: prompt and target from the same voice; PESQ/STOI against the voice's own "
                              "rendering of the target (a sanity check for vocoder ceilings, not a cloning measure)")
    report_groups = ("voice",)
    subset: ClassVar[str] = ""
    folder_stem: ClassVar[str] = "tts-eval"  # the test sets share one folder; the dev set has its own

    def __init__(self, **options: Any):
        check_options(self.name, options, ["data_dir"])
        super().__init__(**options)
        self.data_dir = (Path(options["data_dir"]) if options.get("data_dir")
                         else data_home() / f"{self.folder_stem}-v{EVAL_VERSION}")
        self._manifest: dict[str, Any] | None = None

    def plan(self) -> dict[str, list[dict[str, str]]]:
        return _plan()

    @options_aware
    def availability(self) -> Availability:
        import shutil as _shutil

        if (self.data_dir / "manifest.json").is_file():
            return Availability.yes()
        if not _shutil.which("flite"):
            return Availability.no("the evaluation audio is made with the offline engines and flite is missing",
                                   "sudo apt-get install flite festival festvox-kdlpc16k festvox-us-slt-hts espeak-ng")
        return Availability.yes()

    def manifest(self) -> dict[str, Any]:
        if self._manifest is None:
            path = self.data_dir / "manifest.json"
            plan = self.plan()
            if not path.is_file():
                build_eval_set(self.data_dir, plan)
            manifest = json.loads(path.read_text(encoding="utf-8"))
            if manifest.get("plan") != plan:
                # The generator changed since this folder was built: rebuild rather than mix.
                manifest = build_eval_set(self.data_dir, plan)
            for uid, rec in manifest["utterances"].items():
                path = self.data_dir / rec["file"]
                if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != rec["sha256"]:
                    raise BenchError(f"task '{self.name}': {path} is missing or was modified -> delete "
                                     f"{self.data_dir} and it is rebuilt on the next run")
            self._manifest = manifest
        return self._manifest

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        records = self.manifest()["utterances"]
        digest = hashlib.sha256("".join(f"{k}:{records[k]['sha256']};" for k in sorted(records)).encode()).hexdigest()
        return {**ident, "audio_sha256": digest, "skipped_voices": sorted(self.manifest()["skipped_voices"])}

    def items(self) -> list[TTSItem]:
        manifest = self.manifest()
        records = manifest["utterances"]
        skipped = manifest["skipped_voices"]
        items = []
        for entry in manifest["plan"][self.subset]:
            if entry["role"] != "target" or entry["voice"] in skipped:
                continue
            target = records[entry["id"]]
            number = entry["id"].rsplit("-", 1)[1]
            prompt_id = f"{entry['voice']}-p{int(number[1:]) % PROMPTS_PER_VOICE}"
            prompt = records[prompt_id]
            items.append(TTSItem(
                id=entry["id"], text=target["text"],
                prompt=Prompt(audio_path=self.data_dir / prompt["file"], text=prompt["text"]),
                reference_path=self.data_dir / target["file"], language="en",
                tags={"voice": entry["voice"], "prompt_relation": "same-voice", "subset": self.subset,
                      "prompt": prompt_id}))
        if not items:
            raise BenchError(f"task '{self.name}' has no items: every voice was skipped ({skipped})")
        return items


class TTSSeen(TTSEvalTask):
    name = "tts-seen"
    subset = "tts-seen"
    description = "held-out sentences in the 7 training voices of our TTS corpus (28 items, same-voice prompts)"


class TTSUnseen(TTSEvalTask):
    name = "tts-unseen"
    subset = "tts-unseen"
    description = "held-out voices (Festival ked, eSpeak m3, Piper joe if installed): 4 items each, same-voice prompts"


class TTSHard(TTSEvalTask):
    name = "tts-hard"
    subset = "tts-hard"
    description = "tongue twisters and repetitive texts in the training voices (20 items): robustness, no_stop rate"


class TTSDev(TTSEvalTask):
    name = "tts-dev"
    subset = "tts-dev"
    folder_stem = "tts-dev"
    description = ("development set: held-out sentences in the 7 training voices (56 items), where inference "
                   "settings are chosen; never reported as a test result")

    def plan(self) -> dict[str, list[dict[str, str]]]:
        return _dev_plan()

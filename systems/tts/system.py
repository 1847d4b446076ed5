"""Our three TTS families as registered systems: tiny-ar, tiny-nar, tiny-flow.

Each clones the prompt's voice (zero-shot): the prompt's phones are aligned to its audio by the
aligner (MAS), the target's durations come from the duration predictor at the prompt's speaking
rate, the family generates the target's frames after the prompt's, and the vocoder (Griffin-Lim
unless option vocoder=module:Class) turns them into 16 kHz audio.

Documented behaviour on bad input (each a counted failure with a clear message, never a crash of
the run): no prompt; a prompt shorter than 0.3 s, silent, or with fewer frames than its phones;
text with nothing pronounceable (empty, only punctuation; characters outside ASCII are dropped
after accent folding). A prompt longer than MAX_PROMPT_S is cut to its last whole phones within
MAX_PROMPT_S (the models were trained on 4-5 s crops); a target longer than MAX_TARGET_S fails
with reason `too_long`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from bench.audio import Audio, read_audio
from bench.contracts import Availability, Prompt, TTSItem, TTSSystem, binary_available, module_available
from bench.errors import BenchError, Unavailable
from bench.evaluators import sha256_file

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
MAX_PROMPT_S = 3.0
MAX_TARGET_S = 12.0
MIN_PROMPT_S = 0.3
FADE = 512  # samples of crossfade between streamed passes


class TooLong(BenchError):
    reason = "too_long"


def check_target_length(frames: int, basis: str = "") -> None:
    """A target longer than MAX_TARGET_S is a counted failure (`too_long`), whatever set its length."""
    from systems.tts.features import FRAMES_PER_SECOND

    if frames > MAX_TARGET_S * FRAMES_PER_SECOND:
        raise TooLong(f"the text would take {frames / FRAMES_PER_SECOND:.1f} s{basis}; this model generates at most "
                      f"{MAX_TARGET_S:g} s per call")


class BadPrompt(BenchError):
    reason = "bad_prompt"


class TooShort(BenchError):
    reason = "too_short"


def _parse(name: str, key: str, value: Any, kind: type | tuple, low: float | None = None, high: float | None = None):
    if isinstance(kind, tuple):  # a choice among names
        if value not in kind:
            raise BenchError(f"system '{name}': option {key}={value!r} must be one of {', '.join(kind)}")
        return value
    try:
        parsed = kind(value)
    except (TypeError, ValueError):
        raise BenchError(f"system '{name}': option {key}={value!r} is not a {kind.__name__}") from None
    if (low is not None and parsed < low) or (high is not None and parsed > high):
        raise BenchError(f"system '{name}': option {key}={value!r} must be in [{low}, {high}]")
    return parsed


class OurTTS(TTSSystem):
    """Shared loading and prompt handling; subclasses generate normalised frames."""

    takes_seed = True
    uses_torch = True

    family_dir: ClassVar[str] = ""
    # Part of the revision, so that cached outputs of older inference code are never reused: set
    # (or bumped) whenever a change to a family's inference changes its outputs for the same weights.
    inference_revision: ClassVar[str] = ""
    license = "Apache-2.0 (weights trained here on a synthetic corpus)"
    clones_voice = True
    # option -> (type, low, high, default); a tuple of names as the type is a choice (low, high None)
    option_spec: ClassVar[dict[str, tuple]] = {}

    def __init__(self, **options: Any):
        allowed = {"seed", "checkpoints", "vocoder", *self.option_spec}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise BenchError(f"system '{self.name}' has no option(s) {', '.join(unknown)}; "
                             f"valid options: {', '.join(sorted(allowed))}")
        resolved: dict[str, Any] = {}
        for key, (kind, low, high, default) in self.option_spec.items():
            resolved[key] = _parse(self.name, key, options.get(key, default), kind, low, high)
        resolved["seed"] = _parse(self.name, "seed", options.get("seed", 0), int, 0, None)
        if "checkpoints" in options:
            resolved["checkpoints"] = str(options["checkpoints"])
        if options.get("vocoder"):
            resolved["vocoder"] = str(options["vocoder"])
        super().__init__(**resolved)
        self.folder = Path(resolved.get("checkpoints", CHECKPOINTS))

    @classmethod
    def availability(cls) -> Availability:
        for module, pip in (("torch", "torch"), ("safetensors", "safetensors")):
            avail = module_available(module, pip)
            if not avail.ok:
                return avail
        avail = binary_available("flite", "flite")
        if not avail.ok:
            return Availability.no("the phone front end needs flite: " + avail.reason, avail.how_to_fix)
        weights = CHECKPOINTS / cls.family_dir / "model.safetensors"
        if not weights.is_file():
            return Availability.no(f"no trained checkpoint at {weights}",
                                   f"bench tts-corpus && bench train-tts --family {cls.family_dir}")
        return Availability.yes()

    @property
    def revision(self) -> str:  # type: ignore[override]
        return self._revision()

    def _revision(self) -> str:
        """sha256 prefixes of every weight file this system reads (manifest-checked at load)."""
        parts = []
        for sub in self.needed_folders():
            path = self.folder / sub / "model.safetensors"
            parts.append(f"{sub}:{sha256_file(path)[:12]}" if path.is_file() else f"{sub}:missing")
        if self.inference_revision:
            parts.append(f"inference:{self.inference_revision}")
        return ",".join(parts)

    def needed_folders(self) -> tuple[str, ...]:
        return ("aligner", "duration", self.family_dir)

    def load(self) -> None:
        import torch

        from systems.tts.aligner import DurationPredictor, front_end_of, load_aligner
        from systems.tts.features import FeatureStats, load_vocoder
        from systems.tts.modules import load_weights_strict, read_config
        from systems.tts.text import front_end, vocab_size

        for sub in self.needed_folders():
            if not (self.folder / sub / "model.safetensors").is_file():
                raise Unavailable(f"system '{self.name}': no checkpoint at {self.folder / sub} -> "
                                  f"bench train-tts --family {sub if sub != 'duration' else 'aligner'}")
        _check_manifest(self.folder, self.needed_folders())
        torch.manual_seed(0)
        self.stats = FeatureStats.from_json(json.loads((self.folder / "aligner" / "feature_stats.json").read_text()))
        # The aligner's config names the folder's text front end; the family must read the same.
        text = front_end_of(self.folder)
        self.config = read_config(self.folder / self.family_dir)
        family_text = self.config.get("model", {}).get("text", "phones")
        if family_text != text:
            raise Unavailable(f"system '{self.name}': {self.folder / self.family_dir} reads {family_text} but the "
                              f"folder's aligner reads {text} -> retrain the family in that folder")
        self.aligner = load_aligner(self.folder)
        self.durations = DurationPredictor(vocab=vocab_size(text))
        load_weights_strict(self.durations, self.folder / "duration" / "model.safetensors")
        self.front_end = front_end(text)
        self.vocoder = load_vocoder(self.options.get("vocoder"))
        self.load_family()

    def load_family(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared steps
    def plan(self, text: str, prompt: Prompt | None) -> dict[str, Any]:
        """Prompt features and alignment, target phones and durations, frame-level conditioning."""
        from systems.tts.aligner import align, log_rate
        from systems.tts.features import FRAMES_PER_SECOND, log_mel
        from systems.tts.modules import frame_alignment

        if prompt is None:
            raise BadPrompt(f"system '{self.name}' clones a voice and needs a prompt (reference audio and its text)")
        audio = read_audio(prompt.audio_path).resampled(16000)
        if audio.duration < MIN_PROMPT_S:
            raise BadPrompt(f"the prompt is {audio.duration:.2f} s long; at least {MIN_PROMPT_S} s are needed")
        if float(np.sqrt(np.mean(np.square(audio.samples, dtype=np.float64)))) < 1e-4:
            raise BadPrompt("the prompt is silent")
        prompt_phones = list(self.front_end.units(prompt.text))
        target_phones = list(self.front_end.units(text))
        if target_phones and target_phones[0] == "pau" and prompt_phones[-1] == "pau":
            target_phones = target_phones[1:]
        mel = self.stats.normalise(log_mel(audio.samples).T)
        p_ids = self.front_end.ids(prompt_phones)
        if len(p_ids) > mel.shape[0]:
            raise BadPrompt(f"the prompt's text has {len(p_ids)} phones but its audio only {mel.shape[0]} frames: "
                            "they do not match")
        p_dur = align(self.aligner, p_ids, mel)
        max_prompt = int(MAX_PROMPT_S * FRAMES_PER_SECOND)
        if mel.shape[0] > max_prompt:  # keep the last whole phones within MAX_PROMPT_S
            ends = np.cumsum(p_dur)
            excess = mel.shape[0] - max_prompt
            # The first phone that starts at or after `excess` frames, keeping at least one phone.
            first = min(int(np.searchsorted(ends, excess, side="left")) + 1, len(p_ids) - 1)
            cut = int(ends[first - 1])
            mel, p_ids, p_dur = mel[cut:], p_ids[first:], p_dur[first:]
        t_ids = self.front_end.ids(target_phones)
        t_dur = self.durations.predict(t_ids, log_rate(int(p_dur.sum()), len(p_ids)))
        check_target_length(int(t_dur.sum()))
        phones = np.asarray(p_ids + t_ids, dtype=np.int64)
        durations = np.concatenate([p_dur, t_dur])
        frame_phones, position = frame_alignment(phones, durations)
        phone_index = np.repeat(np.arange(len(phones)), durations)
        return {"prompt_mel": mel, "prompt_frames": int(mel.shape[0]), "target_frames": int(t_dur.sum()),
                "prompt_phones": len(p_ids),
                "phones": phones, "durations": durations, "frame_phones": frame_phones, "position": position,
                "phone_index": phone_index}

    def to_audio(self, normalised_frames: np.ndarray) -> Audio:
        from systems.tts.features import HOP, N_FFT

        if len(normalised_frames) * HOP < N_FFT:  # fewer frames than one STFT window spans
            raise TooShort(f"the model generated only {len(normalised_frames)} frame(s) "
                           f"({len(normalised_frames) * HOP / 16000:.3f} s): too short to vocode")
        log_mel_frames = self.stats.denormalise(normalised_frames, clamp=True)
        return Audio(self.vocoder(log_mel_frames.T), self.vocoder.sample_rate)

    def synthesize(self, text: str, prompt: Prompt | None, item: TTSItem) -> Audio:
        import torch

        with torch.inference_mode():
            plan = self.plan(text, prompt)
            frames = self.generate(plan)
        return self.to_audio(frames)

    def generate(self, plan: dict[str, Any]) -> np.ndarray:
        """The target's normalised frames (target_frames, N_MELS)."""
        raise NotImplementedError


def _check_manifest(folder: Path, subfolders: tuple[str, ...]) -> None:
    """Every file of the needed checkpoint folders must match MANIFEST.sha256."""
    manifest = folder / "MANIFEST.sha256"
    if not manifest.is_file():
        raise Unavailable(f"no MANIFEST.sha256 in {folder}: the checkpoints cannot be verified")
    expected = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        digest, _, rel = line.partition("  ")
        expected[rel] = digest
    for sub in subfolders:
        for path in sorted((folder / sub).glob("*")):
            rel = path.relative_to(folder).as_posix()
            if path.is_file() and rel.endswith((".safetensors", ".json")) and expected.get(rel) != sha256_file(path):
                raise Unavailable(f"checkpoint file {path} does not match {manifest} -> restore it "
                                  "(git checkout) or retrain with bench train-tts")


# --------------------------------------------------------------------------- families
class TinyFlow(OurTTS):
    name = "tiny-flow"
    family = "flow"
    family_dir = "flow"
    description = ("our flow-matching TTS (Voicebox/F5 style DiT, frame-aligned phones); options nfe, sway, "
                   "guidance, seed, vocoder")
    option_spec = {"nfe": (int, 1, 256, 16), "sway": (float, -1.0, 1.0, -1.0), "guidance": (float, 0.0, 10.0, 2.0)}

    def load_family(self) -> None:
        from systems.tts.flow import FlowConfig, FlowModel
        from systems.tts.modules import load_weights_strict

        self.model = FlowModel(FlowConfig(**self.config["model"]))
        load_weights_strict(self.model, self.folder / "flow" / "model.safetensors")
        self.model.eval()

    def generate(self, plan: dict[str, Any]) -> np.ndarray:
        import torch

        from systems.tts.flow import sample

        p, n = plan["prompt_frames"], plan["target_frames"]
        if self.model.config.alignment == "filler":  # duration-free: phones then fillers (E2/F5)
            from systems.tts.modules import filler_alignment

            plan = {**plan}
            plan["frame_phones"], plan["position"] = filler_alignment(plan["phones"], p + n,
                                                                      self.model.config.filler_id)
        context = np.zeros((p + n, plan["prompt_mel"].shape[1]), np.float32)
        context[:p] = plan["prompt_mel"]
        generate = torch.zeros(p + n, dtype=torch.bool)
        generate[p:] = True
        out = sample(self.model, torch.from_numpy(context), torch.from_numpy(plan["frame_phones"]),
                     torch.from_numpy(plan["position"]), generate, nfe=self.options["nfe"],
                     sway=self.options["sway"], guidance=self.options["guidance"], seed=self.options["seed"])
        return out[p:].numpy()


ACOUSTIC_OPTIONS = {"acoustic": (("decoder", "codebooks"), None, None, "decoder"), "nfe": (int, 1, 256, 16)}


class TokenFamily(OurTTS):
    """A family that generates speech tokens. Its acoustic stage turns them into features:
    `acoustic=decoder` (default; CosyVoice's flow-matching decoder from the level-1 tokens and the
    prompt's features, never the phones; `nfe` Euler steps with sway sampling and guidance 2) or
    `acoustic=codebooks` (the family's own finer residual levels: VALL-E's NAR stage for tiny-ar,
    MaskGCT-style joint prediction for tiny-nar)."""

    def needed_folders(self) -> tuple[str, ...]:
        folders = ("aligner", "duration", "tokenizer", self.family_dir)
        return folders + ("decoder",) if self.options["acoustic"] == "decoder" else folders

    def load_tokenizer(self) -> None:
        from systems.tts.tokenizer import SpeechTokenizer

        self.tokenizer = SpeechTokenizer.load(self.folder / "tokenizer")
        if self.options["acoustic"] == "decoder":
            from systems.tts.flow import FlowConfig, FlowModel
            from systems.tts.modules import load_weights_strict, read_config

            config = FlowConfig(**read_config(self.folder / "decoder")["model"])
            if config.tokens != self.tokenizer.codes:
                raise BenchError(f"the decoder reads {config.tokens} token codes but the tokenizer has {self.tokenizer.codes}")
            self.decoder = FlowModel(config)
            load_weights_strict(self.decoder, self.folder / "decoder" / "model.safetensors")
            self.decoder.eval()

    def decode_level1(self, plan: dict[str, Any], prompt_tokens, level1, known: np.ndarray | None = None,
                      context_frames: int = 0) -> np.ndarray:
        """The decoder's target frames for level-1 tokens `level1` (after the prompt's). `known`:
        target frames already final (a stream's earlier chunks), kept as context and not generated
        again. context_frames > 0: the decoder sees only that many frames of context before the new
        ones (prompt and known frames together), so a stream's chunks cost the same however far in
        they are. The frame phones are passed for a decoder configured to read them (the committed
        one does not); beyond the planned frames they are the END phone."""
        import torch

        from systems.tts.flow import sample

        p, n = plan["prompt_frames"], len(level1)
        frame_phones, position = frames_conditioning(plan, p + n)
        context = np.zeros((p + n, plan["prompt_mel"].shape[1]), np.float32)
        context[:p] = plan["prompt_mel"]
        fixed = p
        if known is not None and len(known):
            context[p:p + len(known)] = known
            fixed += len(known)
        generate = torch.zeros(p + n, dtype=torch.bool)
        generate[fixed:] = True
        tokens = torch.cat([torch.as_tensor(prompt_tokens)[:, 0], torch.as_tensor(level1, dtype=torch.long)])
        start = max(0, fixed - context_frames) if context_frames > 0 else 0
        out = sample(self.decoder, torch.from_numpy(context[start:]), torch.from_numpy(frame_phones[start:]),
                     torch.from_numpy(position[start:]), generate[start:], nfe=self.options["nfe"], sway=-1.0,
                     guidance=2.0, seed=self.options["seed"], tokens=tokens[start:]).numpy()
        context[start:] = out  # the window's context frames come back as they went in
        return context[p:]


def frames_conditioning(plan: dict[str, Any], total: int) -> tuple[np.ndarray, np.ndarray]:
    """The plan's frame phones and positions for `total` frames: cut, or extended with the END
    phone where a model generated more frames than the durations planned."""
    from systems.tts.text import END_ID

    fp = np.asarray(plan["frame_phones"][:total]).copy()
    pos = np.asarray(plan["position"][:total], dtype=np.float32).copy()
    if len(fp) < total:
        fp = np.concatenate([fp, np.full(total - len(fp), END_ID)])
        pos = np.concatenate([pos, np.zeros(total - len(pos), np.float32)])
    return fp, pos


class TinyNAR(TokenFamily):
    name = "tiny-nar"
    family = "nar"
    family_dir = "nar"
    description = ("our masked generative TTS (MaskGCT style, residual k-means tokens, frame-aligned phones); "
                   "options steps, temperature, top_k, acoustic, nfe, seed, vocoder")
    # Default steps: the lowest WER on the development set (bench tts-compare --ablation dev), never a test set.
    option_spec = {"steps": (int, 1, 100, 25), "temperature": (float, 0.0, 5.0, 1.0), "top_k": (int, 0, 4096, 50),
                   **ACOUSTIC_OPTIONS}

    def load_family(self) -> None:
        from systems.tts.modules import load_weights_strict
        from systems.tts.nar import MaskedModel, NARConfig

        self.load_tokenizer()
        self.model = MaskedModel(NARConfig(**self.config["model"]))
        # The prefix form's frames carry no phones; a decoder that reads phones would get none.
        if self.model.config.alignment == "prefix" and self.options["acoustic"] == "decoder" \
                and self.decoder.config.phones:
            raise BenchError("this NAR checkpoint is the duration-free (prefix) form: its frames have no phone "
                             "alignment for a decoder that reads phones -> run it with acoustic=codebooks, "
                             "or with a decoder trained without phones")
        load_weights_strict(self.model, self.folder / "nar" / "model.safetensors")
        self.model.eval()

    def generate(self, plan: dict[str, Any]) -> np.ndarray:
        import torch

        from systems.tts.nar import generate

        prompt_tokens = torch.from_numpy(self.tokenizer.encode(plan["prompt_mel"]))
        options = {"steps": self.options["steps"], "temperature": self.options["temperature"],
                   "top_k": self.options["top_k"], "seed": self.options["seed"]}
        p = plan["prompt_frames"]
        if self.model.config.alignment == "prefix":
            # MaskGCT's total length: the target's phones at the prompt's frames per phone.
            target_phones = len(plan["phones"]) - plan["prompt_phones"]
            frames = max(1, round(target_phones * p / plan["prompt_phones"]))
            check_target_length(frames, " at the prompt's rate")
            tokens = generate(self.model, prompt_tokens, None, None, phones=torch.from_numpy(plan["phones"]),
                              total=p + frames, **options)
        else:
            tokens = generate(self.model, prompt_tokens, torch.from_numpy(plan["frame_phones"]),
                              torch.from_numpy(plan["position"]), **options)
        target = tokens[p:]
        if self.options["acoustic"] == "decoder":
            return self.decode_level1(plan, prompt_tokens, target[:, 0])
        return self.tokenizer.decode(target.numpy())


class TinyAR(TokenFamily):
    name = "tiny-ar"
    family = "ar"
    family_dir = "ar"
    inference_revision = "2"  # 2: phone features over the whole planned sequence (1 ran them frame by frame)
    streaming = True
    description = ("our autoregressive codec-LM TTS (VALL-E with RALL-E's duration guidance, KV cache, streaming); "
                   "options temperature, top_k, top_p, chunk, stream_context, acoustic, nfe, seed, vocoder")
    # Default temperature and top-k: the lowest WER on the development set (bench tts-compare --ablation dev).
    option_spec = {"temperature": (float, 0.01, 5.0, 0.7), "top_k": (int, 0, 4096, 10), "top_p": (float, 0.0, 1.0, 0.0),
                   "chunk": (int, 8, 1000, 48), "stream_context": (int, 0, 10000, 0), **ACOUSTIC_OPTIONS}

    def load_family(self) -> None:
        from systems.tts.ar import ARConfig, ARModel
        from systems.tts.modules import load_weights_strict

        self.load_tokenizer()
        self.model = ARModel(ARConfig(**self.config["model"]))
        load_weights_strict(self.model, self.folder / "ar" / "model.safetensors")
        self.model.eval()

    def _frames(self, plan: dict[str, Any], prompt_tokens, level1: list[int], known: np.ndarray | None = None) -> np.ndarray:
        import torch

        from systems.tts.ar import fill_levels

        if self.options["acoustic"] == "decoder":
            # The first chunk sees the whole prompt (it sets the voice); later ones a window.
            window = self.options["stream_context"] if known is not None and len(known) else 0
            return self.decode_level1(plan, prompt_tokens, level1, known, window)
        p = plan["prompt_frames"]
        fp, pos = frames_conditioning(plan, p + len(level1))
        all_level1 = torch.cat([prompt_tokens[:, 0], torch.tensor(level1, dtype=torch.long)])
        tokens = fill_levels(self.model, all_level1, prompt_tokens, torch.from_numpy(fp), torch.from_numpy(pos))
        return self.tokenizer.decode(tokens[p:].numpy())

    def _stream_tokens(self, plan: dict[str, Any], prompt_tokens) -> Iterator[int]:
        import torch

        from systems.tts.ar import generate_level1

        guard = max(2 * plan["target_frames"], plan["target_frames"] + 100)
        return generate_level1(self.model, torch.from_numpy(plan["phones"]), prompt_tokens[:, 0],
                               torch.from_numpy(plan["frame_phones"]), torch.from_numpy(plan["position"]),
                               torch.from_numpy(plan["phone_index"]), temperature=self.options["temperature"],
                               top_k=self.options["top_k"], top_p=self.options["top_p"], seed=self.options["seed"],
                               max_frames=guard)

    def generate(self, plan: dict[str, Any]) -> np.ndarray:
        import torch

        prompt_tokens = torch.from_numpy(self.tokenizer.encode(plan["prompt_mel"]))
        level1 = list(self._stream_tokens(plan, prompt_tokens))
        if not level1:
            raise BenchError("the model emitted end-of-speech before any frame")
        return self._frames(plan, prompt_tokens, level1)

    def synthesize_stream(self, text: str, prompt: Prompt | None, item: TTSItem) -> Iterator[Audio]:
        """Audio every `chunk` frames: the acoustic stage and the vocoder run on everything
        generated so far and the new part is handed out (Griffin-Lim is not causal, so each chunk
        is vocoded with the frames before it as context). The decoder keeps the frames of earlier
        chunks as context and generates only the new ones (CosyVoice's chunked decoding), seeing
        the last `stream_context` frames of prompt and earlier chunks (0: all of them); the
        codebook stage re-predicts them all."""
        import torch

        from systems.tts.features import HOP

        with torch.inference_mode():
            plan = self.plan(text, prompt)
            prompt_tokens = torch.from_numpy(self.tokenizer.encode(plan["prompt_mel"]))
            level1: list[int] = []
            emitted = 0  # samples handed out so far
            held = np.zeros(0, np.float32)  # the previous pass's samples after `emitted`
            chunk = self.options["chunk"]
            frames: np.ndarray | None = None  # target frames decoded so far

            def piece(audio: Audio, end: int) -> Audio:
                # Each pass re-vocodes everything, so passes differ slightly at the seam: crossfade
                # the new pass into the previous pass's held-back tail over FADE samples.
                out = audio.samples[emitted:end].copy()
                fade = min(FADE, len(held), len(out))
                if fade:
                    w = np.linspace(0.0, 1.0, fade, dtype=np.float32)
                    out[:fade] = held[:fade] * (1 - w) + out[:fade] * w
                return Audio(out, audio.sample_rate)

            for token in self._stream_tokens(plan, prompt_tokens):
                level1.append(token)
                if len(level1) % chunk == 0:
                    frames = self._frames(plan, prompt_tokens, level1, frames)
                    audio = self.to_audio(frames)
                    # Keep back the last frames: Griffin-Lim's edge is not final until more arrive.
                    ready = max(0, len(audio.samples) - 4 * HOP)
                    if ready > emitted:
                        yield piece(audio, ready)
                        held = audio.samples[ready:].copy()
                        emitted = ready
            if not level1:
                raise BenchError("the model emitted end-of-speech before any frame")
            audio = self.to_audio(self._frames(plan, prompt_tokens, level1, frames))
            if len(audio.samples) > emitted:
                yield piece(audio, len(audio.samples))


class VocoderCeiling(TTSSystem):
    """The item's reference recording through our features and vocoder: log-mel (128 bands) and
    Griffin-Lim. What our families could reach at best with a perfect model of the features."""

    name = "vocoder-ceiling"
    family = "reference"
    license = "that of the task's recordings"
    description = "reference recording -> log-mel -> Griffin-Lim: the ceiling of our TTS families"
    clones_voice = True
    uses_torch = True

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - {"vocoder"})
        if unknown:
            raise BenchError(f"system 'vocoder-ceiling' has no option(s) {', '.join(unknown)}; valid options: vocoder")
        super().__init__(**options)

    @property
    def revision(self) -> str:  # type: ignore[override]
        from systems.tts.features import load_vocoder

        return load_vocoder(self.options.get("vocoder")).revision

    def load(self) -> None:
        from systems.tts.features import load_vocoder

        self.vocoder = load_vocoder(self.options.get("vocoder"))

    def synthesize(self, text: str, prompt: Prompt | None, item: TTSItem) -> Audio:
        from systems.tts.features import SAMPLE_RATE, log_mel

        if item.reference_path is None:
            raise BenchError(f"item '{item.id}' has no reference recording to resynthesise")
        audio = read_audio(item.reference_path).resampled(SAMPLE_RATE)
        return Audio(self.vocoder(log_mel(audio.samples)), SAMPLE_RATE)

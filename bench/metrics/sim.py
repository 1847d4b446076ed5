"""Speaker similarity (SIM-o): cosine between speaker embeddings of the output and the prompt.

SIM-o compares the generated speech (`hypothesis`) with the original prompt recording (`prompt`),
both at 16 kHz. The value is a cosine in [-1, 1]; higher means the voice was reproduced better.
Failed items (no voiced audio left after the backend's trimming, for example) are excluded from
the mean and counted in the failures column (`failure_value = None`).

Backends (option `backend`) embed speakers with different models, so their numbers are NOT
comparable with each other; the backend is part of `evaluator_revision`:

- "resemblyzer" (default, runs offline): the GE2E LSTM encoder that ships inside the resemblyzer
  package. Each clip is preprocessed the resemblyzer way (volume raised to -30 dBFS when quieter,
  silences longer than ~0.2 s cut with WebRTC VAD mode 3), split into 1.6 s partials at 1.3 per
  second, and the L2-normed mean of the partial embeddings is the clip embedding. Partials of all
  clips in a batch go through the LSTM together, which gives the same numbers as resemblyzer's
  one-clip-at-a-time `embed_utterance`. Measured on the pocketsphinx test recordings: same reader
  0.75-0.93, different speakers 0.48-0.72, a narrower spread than WavLM-ECAPA's.
- "wavlm-ecapa": the Seed-TTS-eval SIM model, WavLM-Large features (s3prl's WavLM code) weighted
  per layer into an ECAPA-TDNN trained for speaker verification (UniSpeech's
  `wavlm_large_finetune.pth`). No package ships these weights: they are loaded from local files
  (see `WAVLM_LARGE` and `WAVLM_ECAPA_FINETUNE` below for where to get them). The ECAPA-TDNN head
  is written here with UniSpeech's parameter names so its checkpoint loads with every key checked.
- "ecapa-speechbrain": speechbrain's ECAPA-TDNN trained on VoxCeleb (speechbrain/spkrec-ecapa-
  voxceleb at a pinned revision). speechbrain imports torchaudio, which does not import with the
  CPU-only torch used on machines without a GPU; the backend then reports itself unavailable.
"""

from __future__ import annotations

import hashlib
import warnings
from contextlib import contextmanager
from importlib import metadata
from typing import Any, Sequence

import numpy as np

from bench.contracts import Availability, Metric, MetricInput, MetricOutput, module_available
from bench.errors import BenchError, Unavailable
from bench.evaluators import EvaluatorModel, WeightFile

SAMPLE_RATE = 16000

# --------------------------------------------------------------------------- evaluator weights
RESEMBLYZER_GE2E = EvaluatorModel(
    name="resemblyzer-ge2e",
    description="Resemblyzer GE2E speaker encoder (3-layer LSTM, 256-d embeddings)",
    license="Apache-2.0",
    files=(WeightFile("pretrained.pt",
                      sha256="39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
                      size=17090379, parts=(("resemblyzer", "pretrained.pt"),)),),
    offline_packages=("resemblyzer",),
    notes="pretrained.pt as shipped in resemblyzer 0.1.4 (GitHub resemble-ai/Resemblyzer); no hub copy",
)

WAVLM_LARGE = EvaluatorModel(
    name="wavlm-large-s3prl",
    description="WavLM-Large self-supervised speech model in s3prl's converted format (SIM feature extractor)",
    license="MIT",
    files=(WeightFile("wavlm_large.pt"),),
    hub_id="s3prl/converted_ckpts",
    hub_revision=None,  # not pinned: no copy reachable from the machine this was written on
    env_var="BENCH_WAVLM_LARGE_DIR",
    notes="the file s3prl's `wavlm_large` entry downloads; its sha256 is not pinned yet: pin it "
          "(WeightFile.sha256) after the first verified download",
)

WAVLM_ECAPA_FINETUNE = EvaluatorModel(
    name="wavlm-ecapa-sv",
    description="UniSpeech ECAPA-TDNN on WavLM-Large, fine-tuned for speaker verification (Seed-TTS SIM)",
    license="MIT",
    files=(WeightFile("wavlm_large_finetune.pth"),),
    env_var="BENCH_WAVLM_ECAPA_DIR",
    notes="Published by microsoft/UniSpeech (downstreams/speaker_verification README, Google Drive id "
          "1-aE1NfzpRCLxA4GUxX9ITI3F9LlbtEGP); mirrored as speaker_similarity/wavlm_large_finetune.pth "
          "in the k2-fsa/TTS_eval_models hub repo. sha256 not pinned yet.",
)

# Revision and sha256 values from a public pinned-download script; verified when installed.
SPEECHBRAIN_ECAPA = EvaluatorModel(
    name="speechbrain-ecapa-voxceleb",
    description="speechbrain ECAPA-TDNN speaker encoder trained on VoxCeleb 1+2 (192-d embeddings)",
    license="Apache-2.0",
    files=(
        WeightFile("hyperparams.yaml", sha256="6f78854fa04ba59e761437b76a2575d3aba5e5016de3e9b69f0c9a5077fb1a41"),
        WeightFile("embedding_model.ckpt", sha256="0575cb64845e6b9a10db9bcb74d5ac32b326b8dc90352671d345e2ee3d0126a2"),
        WeightFile("mean_var_norm_emb.ckpt", sha256="cd70225b05b37be64fc5a95e24395d804231d43f74b2e1e5a513db7b69b34c33"),
        WeightFile("classifier.ckpt", sha256="fd9e3634fe68bd0a427c95e354c0c677374f62b3f434e45b78599950d860d535"),
        WeightFile("label_encoder.txt", sha256="e13c3a167bb4112685670ee896d20e2b565af16b3a4ceeaa8689fa4d22adb8b9"),
    ),
    hub_id="speechbrain/spkrec-ecapa-voxceleb",
    hub_revision="0f99f2d0ebe89ac095bcc5903c4dd8f72b367286",
    env_var="BENCH_SPEECHBRAIN_ECAPA_DIR",
)


@contextmanager
def torch_threads(n: int | None):
    """Run a block with torch's intra-op thread count set to `n` (None: leave it), then restore it.

    Measured here: on a 2-core machine shared with other work, 2 torch threads made resemblyzer
    per-clip embedding 10-20x slower than 1 thread (threads spin while waiting for a core).
    """
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _package_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def _weights_tag(model: EvaluatorModel) -> str:
    """Pinned sha256 prefixes of a model's files, or 'unpinned' where a file has none."""
    return ",".join((wf.sha256 or "unpinned")[:12] for wf in model.files)


def _merge(*checks: Availability) -> Availability:
    """One Availability listing every problem, so a user fixes them all in one go."""
    missing = [c for c in checks if not c.ok]
    if not missing:
        return Availability.yes()
    return Availability.no("; ".join(c.reason for c in missing),
                           "; ".join(c.how_to_fix for c in missing if c.how_to_fix))


def _weights_available(model: EvaluatorModel) -> Availability:
    state, detail = model.check(full=False)  # availability is asked often: hash once per file version
    if state == "ok" or (state == "missing" and model.offline_available()):
        return Availability.yes()
    return Availability.no(f"evaluator model '{model.name}' is {state} ({detail})", model.how_to_get())


# --------------------------------------------------------------------------- backends
class _Embedder:
    """One speaker-embedding backend: L2-normalised embeddings, or a failure reason per clip."""

    name = ""
    models: tuple[EvaluatorModel, ...] = ()

    def availability(self) -> Availability:
        raise NotImplementedError

    def revision(self) -> str:
        raise NotImplementedError

    def load(self) -> None:
        raise NotImplementedError

    def embed(self, clips: list[np.ndarray]) -> list[np.ndarray | str]:
        raise NotImplementedError


class _ResemblyzerEmbedder(_Embedder):
    name = "resemblyzer"
    models = (RESEMBLYZER_GE2E,)
    # resemblyzer's own defaults for embed_utterance: 1.3 partials a second, and a last partial is
    # kept when at least 75 % of it is real audio.
    PARTIALS_PER_SECOND = 1.3
    MIN_COVERAGE = 0.75
    TRAINING_ONLY_KEYS = frozenset({"similarity_weight", "similarity_bias"})  # GE2E loss parameters

    def __init__(self, max_partials_per_forward: int = 256):
        self.max_partials_per_forward = max_partials_per_forward
        self.encoder = None

    def availability(self) -> Availability:
        return _merge(module_available("resemblyzer"), module_available("webrtcvad", "webrtcvad-wheels"),
                      module_available("librosa"), module_available("torch"),
                      _weights_available(RESEMBLYZER_GE2E))

    def revision(self) -> str:
        return (f"resemblyzer=={_package_version('resemblyzer')};weights={_weights_tag(RESEMBLYZER_GE2E)};"
                "pre=volume-to--30dBFS-increase-only+webrtcvad3-trim(30ms,avg8,max-silence6);"
                f"partials=1.6s@{self.PARTIALS_PER_SECOND}/s,coverage{self.MIN_COVERAGE};mean-of-partials")

    def load(self) -> None:
        availability = self.availability()
        if not availability.ok:
            raise Unavailable(f"SIM backend 'resemblyzer' is unavailable: {availability.message()}")
        import torch

        weights = RESEMBLYZER_GE2E.locate() / "pretrained.pt"  # sha256-verified
        with warnings.catch_warnings():
            # webrtcvad imports pkg_resources and resemblyzer a deprecated scipy path: noise only.
            warnings.simplefilter("ignore", category=UserWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            from resemblyzer import VoiceEncoder

            encoder = VoiceEncoder(device="cpu", verbose=False, weights_fpath=weights)
        # VoiceEncoder loads with strict=False (its checkpoint carries GE2E loss parameters). Load
        # again strictly, less exactly those, so a wrong or partial file fails here.
        state = torch.load(weights, map_location="cpu", weights_only=True)["model_state"]
        encoder.load_state_dict({k: v for k, v in state.items() if k not in self.TRAINING_ONLY_KEYS},
                                strict=True)
        encoder.eval()
        self.encoder = encoder
        # librosa's first mel spectrogram takes seconds (lazy imports, JIT); pay it here, not in
        # the first scored batch, so batch timings are representative.
        self.partial_mels(np.zeros(SAMPLE_RATE, dtype=np.float32))

    def preprocess(self, clip: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            from resemblyzer import preprocess_wav
        # source_sr=None: the clip is already at resemblyzer's 16 kHz, so no resampling happens.
        return preprocess_wav(clip.astype(np.float32), source_sr=None)

    def partial_mels(self, wav: np.ndarray) -> np.ndarray:
        """(n_partials, 160, 40) mel windows, exactly as resemblyzer's embed_utterance cuts them."""
        from resemblyzer import wav_to_mel_spectrogram

        wav_slices, mel_slices = self.encoder.compute_partial_slices(
            len(wav), self.PARTIALS_PER_SECOND, self.MIN_COVERAGE)
        if wav_slices[-1].stop >= len(wav):
            wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)), "constant")
        mel = wav_to_mel_spectrogram(wav)
        return np.stack([mel[s] for s in mel_slices])

    def embed(self, clips: list[np.ndarray]) -> list[np.ndarray | str]:
        import torch

        results: list[np.ndarray | str] = [""] * len(clips)
        owners: list[int] = []  # clip index of each partial
        partials: list[np.ndarray] = []
        for i, clip in enumerate(clips):
            wav = self.preprocess(clip)
            if wav.size == 0:
                results[i] = "no_speech: voice activity detection left no audio to embed"
                continue
            mels = self.partial_mels(wav)
            partials.extend(mels)
            owners.extend([i] * len(mels))
        if not partials:
            return results
        batch = np.stack(partials).astype(np.float32)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(batch), self.max_partials_per_forward):
                chunk = torch.from_numpy(batch[start:start + self.max_partials_per_forward])
                chunks.append(self.encoder(chunk).numpy())
        partial_embeds = np.concatenate(chunks).astype(np.float64)
        owner_array = np.asarray(owners)
        for i in set(owners):
            mean = partial_embeds[owner_array == i].mean(axis=0)
            results[i] = mean / np.linalg.norm(mean)
        return results

    def embed_one_by_one(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """resemblyzer's own per-clip path (embed_utterance): the reference the batched path matches."""
        return [np.asarray(self.encoder.embed_utterance(self.preprocess(c)), dtype=np.float64) for c in clips]


def _ecapa_tdnn_class():
    """The ECAPA-TDNN head of UniSpeech's speaker-verification model, built on a WavLM upstream.

    Attribute names follow UniSpeech's downstreams/speaker_verification/models/ecapa_tdnn.py
    (ECAPA_TDNN_SMALL: 512 channels, 1536-d pooling input, 256-d embedding) because the checkpoint's
    keys are those names; the code is written here so that no torchaudio import is needed.
    Defined inside a function so that importing this module does not import torch.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Conv1dReluBn(nn.Module):
        def __init__(self, cin: int, cout: int, kernel_size: int = 1, padding: int = 0, dilation: int = 1):
            super().__init__()
            self.conv = nn.Conv1d(cin, cout, kernel_size, 1, padding, dilation, bias=True)
            self.bn = nn.BatchNorm1d(cout)

        def forward(self, x):
            return self.bn(F.relu(self.conv(x)))

    class Res2Conv1dReluBn(nn.Module):
        """Res2Net block: channel groups processed in a cascade, the last group passed through."""

        def __init__(self, channels: int, kernel_size: int, padding: int, dilation: int, scale: int):
            super().__init__()
            self.width = channels // scale
            self.n_convs = scale - 1
            self.convs = nn.ModuleList(nn.Conv1d(self.width, self.width, kernel_size, 1, padding, dilation)
                                       for _ in range(self.n_convs))
            self.bns = nn.ModuleList(nn.BatchNorm1d(self.width) for _ in range(self.n_convs))

        def forward(self, x):
            groups = torch.split(x, self.width, dim=1)
            outputs, running = [], None
            for i in range(self.n_convs):
                running = groups[i] if i == 0 else running + groups[i]
                running = self.bns[i](F.relu(self.convs[i](running)))
                outputs.append(running)
            outputs.append(groups[self.n_convs])
            return torch.cat(outputs, dim=1)

    class SEConnect(nn.Module):
        def __init__(self, channels: int, bottleneck: int = 128):
            super().__init__()
            self.linear1 = nn.Linear(channels, bottleneck)
            self.linear2 = nn.Linear(bottleneck, channels)

        def forward(self, x):
            gate = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2)))))
            return x * gate.unsqueeze(2)

    class SERes2Block(nn.Module):
        def __init__(self, channels: int, padding: int, dilation: int):
            super().__init__()
            self.Conv1dReluBn1 = Conv1dReluBn(channels, channels)
            self.Res2Conv1dReluBn = Res2Conv1dReluBn(channels, 3, padding, dilation, scale=8)
            self.Conv1dReluBn2 = Conv1dReluBn(channels, channels)
            self.SE_Connect = SEConnect(channels, 128)

        def forward(self, x):
            return x + self.SE_Connect(self.Conv1dReluBn2(self.Res2Conv1dReluBn(self.Conv1dReluBn1(x))))

    class AttentiveStatsPool(nn.Module):
        def __init__(self, dim: int, attention_channels: int = 128):
            super().__init__()
            self.linear1 = nn.Conv1d(dim, attention_channels, kernel_size=1)
            self.linear2 = nn.Conv1d(attention_channels, dim, kernel_size=1)

        def forward(self, x):
            alpha = torch.softmax(self.linear2(torch.tanh(self.linear1(x))), dim=2)
            mean = torch.sum(alpha * x, dim=2)
            var = torch.sum(alpha * x * x, dim=2) - mean * mean
            return torch.cat([mean, torch.sqrt(var.clamp(min=1e-9))], dim=1)

    class WavLMECAPATDNN(nn.Module):
        def __init__(self, upstream: nn.Module, feat_dim: int = 1024, channels: int = 512, emb_dim: int = 256):
            super().__init__()
            self.feature_extract = upstream
            for p in self.feature_extract.parameters():
                p.requires_grad = False
            n_layers = self._count_hidden_states()
            self.feature_weight = nn.Parameter(torch.zeros(n_layers))
            self.instance_norm = nn.InstanceNorm1d(feat_dim)
            self.layer1 = Conv1dReluBn(feat_dim, channels, kernel_size=5, padding=2)
            self.layer2 = SERes2Block(channels, padding=2, dilation=2)
            self.layer3 = SERes2Block(channels, padding=3, dilation=3)
            self.layer4 = SERes2Block(channels, padding=4, dilation=4)
            self.conv = nn.Conv1d(channels * 3, 1536, kernel_size=1)
            self.pooling = AttentiveStatsPool(1536, attention_channels=128)
            self.bn = nn.BatchNorm1d(1536 * 2)
            self.linear = nn.Linear(1536 * 2, emb_dim)

        @torch.no_grad()
        def _count_hidden_states(self) -> int:
            self.feature_extract.eval()
            return len(self.feature_extract([torch.zeros(SAMPLE_RATE)])["hidden_states"])

        def forward(self, wavs: list) -> "torch.Tensor":
            with torch.no_grad():
                layers = torch.stack(self.feature_extract(wavs)["hidden_states"], dim=0)  # (L, B, T, D)
            weights = F.softmax(self.feature_weight, dim=-1).view(-1, 1, 1, 1)
            x = (weights * layers).sum(dim=0).transpose(1, 2) + 1e-6  # (B, D, T)
            x = self.instance_norm(x)
            out1 = self.layer1(x)
            out2 = self.layer2(out1)
            out3 = self.layer3(out2)
            out4 = self.layer4(out3)
            x = F.relu(self.conv(torch.cat([out2, out3, out4], dim=1)))
            return self.linear(self.bn(self.pooling(x)))

    return WavLMECAPATDNN


class _WavLMECAPAEmbedder(_Embedder):
    name = "wavlm-ecapa"
    models = (WAVLM_LARGE, WAVLM_ECAPA_FINETUNE)
    # Checkpoint entries that belong to the fine-tuning loss (AAM-softmax), not to the embedder.
    TRAINING_ONLY_PREFIXES = ("loss_calculator.",)

    def __init__(self):
        self.model = None

    def availability(self) -> Availability:
        s3prl = module_available("s3prl")
        if not s3prl.ok:
            # s3prl declares torchaudio as a dependency but its WavLM upstream does not import it.
            s3prl = Availability.no("Python package 's3prl' (WavLM upstream code) is not installed",
                                    "pip install --no-deps s3prl==0.4.18")
        return _merge(module_available("torch"), s3prl, _weights_available(WAVLM_LARGE),
                      _weights_available(WAVLM_ECAPA_FINETUNE))

    def revision(self) -> str:
        return (f"wavlm-large={_weights_tag(WAVLM_LARGE)};ecapa={_weights_tag(WAVLM_ECAPA_FINETUNE)};"
                f"s3prl=={_package_version('s3prl')};unispeech-ecapa-tdnn-small;per-clip")

    def load(self) -> None:
        availability = self.availability()
        if not availability.ok:
            raise Unavailable(f"SIM backend 'wavlm-ecapa' is unavailable: {availability.message()}")
        import torch
        from s3prl.upstream.wavlm.expert import UpstreamExpert

        upstream = UpstreamExpert(str(WAVLM_LARGE.locate() / "wavlm_large.pt"))
        for layer in upstream.model.encoder.layers:
            if hasattr(layer.self_attn, "fp32_attention"):  # as UniSpeech's verification code does
                layer.self_attn.fp32_attention = False
        model = _ecapa_tdnn_class()(upstream)
        checkpoint_path = WAVLM_ECAPA_FINETUNE.locate() / "wavlm_large_finetune.pth"
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise BenchError(f"{checkpoint_path} does not hold a state dict under 'model'")
        result = model.load_state_dict(state, strict=False)
        unexpected = [k for k in result.unexpected_keys if not k.startswith(self.TRAINING_ONLY_PREFIXES)]
        # Keys of the WavLM upstream may be absent from the fine-tuned checkpoint (it was frozen
        # during fine-tuning), in which case wavlm_large.pt provides them; the head must be complete.
        missing_head = [k for k in result.missing_keys if not k.startswith("feature_extract.")]
        if missing_head or unexpected:
            raise BenchError(f"{checkpoint_path} does not match the ECAPA-TDNN head: missing "
                             f"{missing_head[:8]} unexpected {unexpected[:8]}; refusing to score with a "
                             "partly initialised model")
        model.eval()
        self.model = model

    def embed(self, clips: list[np.ndarray]) -> list[np.ndarray | str]:
        import torch

        out: list[np.ndarray | str] = []
        with torch.inference_mode():
            # One clip per forward: instance norm and pooling see exactly that clip, as in Seed-TTS-eval.
            for clip in clips:
                emb = self.model([torch.from_numpy(clip.astype(np.float32))])[0].double().numpy()
                out.append(emb / np.linalg.norm(emb))
        return out


class _SpeechBrainECAPAEmbedder(_Embedder):
    name = "ecapa-speechbrain"
    models = (SPEECHBRAIN_ECAPA,)

    def __init__(self):
        self.classifier = None

    def availability(self) -> Availability:
        speechbrain = module_available("speechbrain")
        if not speechbrain.ok:
            speechbrain = Availability.no(
                "Python package 'speechbrain' is not installed (it also needs a torchaudio that imports "
                "with the installed torch; the PyPI torchaudio is CUDA-linked and fails with CPU-only torch)",
                "pip install speechbrain torchaudio (matching your torch build)")
        return _merge(speechbrain, _weights_available(SPEECHBRAIN_ECAPA))

    def revision(self) -> str:
        return (f"speechbrain=={_package_version('speechbrain')};{SPEECHBRAIN_ECAPA.hub_id}@"
                f"{(SPEECHBRAIN_ECAPA.hub_revision or '')[:12]};weights={_weights_tag(SPEECHBRAIN_ECAPA)};per-clip")

    def load(self) -> None:
        availability = self.availability()
        if not availability.ok:
            raise Unavailable(f"SIM backend 'ecapa-speechbrain' is unavailable: {availability.message()}")
        try:
            try:
                from speechbrain.inference.speaker import EncoderClassifier
            except ImportError:  # speechbrain < 1.0
                from speechbrain.pretrained import EncoderClassifier
        except (ImportError, OSError) as exc:
            raise Unavailable(f"speechbrain does not import ({type(exc).__name__}: {exc}); usually torchaudio "
                              "does not match the installed torch (PyPI torchaudio is CUDA-linked)",
                              ) from exc
        folder = SPEECHBRAIN_ECAPA.locate()
        self.classifier = EncoderClassifier.from_hparams(source=str(folder), savedir=str(folder),
                                                         run_opts={"device": "cpu"})

    def embed(self, clips: list[np.ndarray]) -> list[np.ndarray | str]:
        import torch

        out: list[np.ndarray | str] = []
        with torch.inference_mode():
            # Per clip: padding a batch changes the filterbank edges and the pooling statistics.
            for clip in clips:
                emb = self.classifier.encode_batch(torch.from_numpy(clip.astype(np.float32))[None])
                emb = emb.reshape(-1).double().numpy()
                out.append(emb / np.linalg.norm(emb))
        return out


BACKENDS: dict[str, type[_Embedder]] = {
    "resemblyzer": _ResemblyzerEmbedder,
    "wavlm-ecapa": _WavLMECAPAEmbedder,
    "ecapa-speechbrain": _SpeechBrainECAPAEmbedder,
}
DEFAULT_BACKEND = "resemblyzer"


# --------------------------------------------------------------------------- the metric
class SpeakerSim(Metric):
    name = "sim"
    description = "SIM-o: cosine similarity of speaker embeddings, generated speech vs. prompt (16 kHz)"
    needs = frozenset({"hypothesis", "prompt"})
    higher_is_better = True
    primary = "sim"
    failure_value = None
    default_range = (-1.0, 1.0)  # a cosine
    sample_rate = SAMPLE_RATE
    models = (RESEMBLYZER_GE2E, WAVLM_LARGE, WAVLM_ECAPA_FINETUNE, SPEECHBRAIN_ECAPA)

    def __init__(self, backend: str = DEFAULT_BACKEND, torch_threads: int | None = None, **options: Any):
        """backend: see the module docstring. torch_threads: torch intra-op threads while this metric
        runs (None leaves torch's setting; 1 is much faster on a busy machine, see `torch_threads`)."""
        if backend not in BACKENDS:
            raise BenchError(f"unknown SIM backend '{backend}'; choose one of {', '.join(BACKENDS)}")
        # torch_threads is operational (numbers do not depend on it): kept out of options, which
        # key the score cache and the run spec.
        super().__init__(backend=backend, **options)
        self.backend_name = backend
        self.torch_threads = torch_threads
        self.embedder = BACKENDS[backend]()
        self._loaded = False

    @classmethod
    def availability(cls) -> Availability:
        """Availability of the default backend (the class cannot see options); see backend_availability."""
        return BACKENDS[DEFAULT_BACKEND]().availability()

    def backend_availability(self) -> Availability:
        return self.embedder.availability()

    def evaluator_revision(self) -> str:
        return f"sim-v1:{self.backend_name}:{self.embedder.revision()}"

    def load(self) -> None:
        if not self._loaded:
            with torch_threads(self.torch_threads):
                self.embedder.load()
            self._loaded = True

    def embed(self, clips: Sequence[np.ndarray]) -> list[np.ndarray | str]:
        """L2-normalised speaker embeddings of 16 kHz clips (float64), or a failure reason per clip."""
        self.load()
        with torch_threads(self.torch_threads):
            return self.embedder.embed([np.asarray(c, dtype=np.float32) for c in clips])

    def score_batch(self, inputs: Sequence[MetricInput]) -> list[MetricOutput]:
        self.load()
        # A prompt shared by many items (Seed-TTS-style test sets reuse them) is embedded once.
        unique: dict[str, np.ndarray] = {}
        keys: list[tuple[str | None, str | None]] = []
        for inp in inputs:
            pair = []
            for role in ("hypothesis", "prompt"):
                audio = getattr(inp, role)
                if audio is None:
                    pair.append(None)
                    continue
                if audio.sample_rate != self.sample_rate:
                    raise ValueError(f"item {inp.item_id}: {role} is at {audio.sample_rate} Hz; the scorer must "
                                     f"resample to {self.sample_rate} Hz before calling score_batch")
                key = hashlib.sha256(np.ascontiguousarray(audio.samples, dtype=np.float32).tobytes()).hexdigest()
                unique.setdefault(key, audio.samples)
                pair.append(key)
            keys.append((pair[0], pair[1]))
        order = list(unique)
        embeddings = dict(zip(order, self.embed([unique[k] for k in order]))) if order else {}

        outputs = []
        for hyp_key, prompt_key in keys:
            if hyp_key is None or prompt_key is None:
                missing = "hypothesis" if hyp_key is None else "prompt"
                outputs.append(MetricOutput(failure=f"no_{missing}: SIM needs both the output and the prompt"))
                continue
            hyp, prompt = embeddings[hyp_key], embeddings[prompt_key]
            if isinstance(hyp, str) or isinstance(prompt, str):
                role, reason = ("hypothesis", hyp) if isinstance(hyp, str) else ("prompt", prompt)
                tag, _, detail = reason.partition(": ")
                outputs.append(MetricOutput(failure=f"{tag}: {role}: {detail}"))
                continue
            cosine = float(np.clip(np.dot(hyp, prompt), -1.0, 1.0))
            outputs.append(MetricOutput(values={"sim": cosine}))
        return outputs

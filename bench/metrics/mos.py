"""Non-intrusive MOS predictors: DNSMOS, DistillMOS and UTMOS (each reads only the hypothesis).

All take 16 kHz mono audio in [-1, 1] (the scorer validates and resamples before `score_batch`),
score 1..5, higher is better. They predict different listening tests, so their numbers are not
interchangeable; a missing predictor is reported as unavailable, never replaced by another one.

- DNSMOS (Microsoft DNS Challenge; ONNX files shipped in the `speechmos` package): P.835 signal
  (SIG), background (BAK) and overall (OVRL) quality, and P.808 overall MOS. Clips shorter than
  9.01 s are repeated to that length, longer ones scored in 9.01 s windows every second and
  averaged, as in Microsoft's dnsmos_local.py. Primary value: "ovrl".
- DistillMOS (`distillmos` package, 17 MB weights inside it): a small CNN-transformer distilled
  from an XLS-R MOS predictor. Clips are zero-padded to 7.68 s; longer ones are averaged over
  7.68 s crops. Value: "distillmos".
- UTMOS (UTMOS22 strong learner, VoiceMOS 2022): no package ships its weights. It runs through the
  `utmos-pytorch` package (a fairseq-free port validated against the original) with the converted
  state dict from the hub repo Blinorot/UTMOS-PyTorch at a pinned revision, or from a local folder
  named by BENCH_UTMOS_DIR. Value: "utmos".
"""

from __future__ import annotations

import importlib
import math
import sys
import types
import warnings
from contextlib import nullcontext
from typing import Any, Sequence

import numpy as np

from bench.contracts import Availability, Metric, MetricInput, MetricOutput, module_available
from bench.errors import BenchError, Unavailable
from bench.evaluators import EvaluatorModel, WeightFile
from bench.metrics.sim import _merge, _package_version, _weights_available, _weights_tag, torch_threads

SAMPLE_RATE = 16000

# --------------------------------------------------------------------------- evaluator weights
DNSMOS_ONNX = EvaluatorModel(
    name="dnsmos",
    description="DNSMOS P.835 (SIG/BAK/OVRL) and P.808 ONNX models from the Microsoft DNS Challenge",
    license="see microsoft/DNS-Challenge (DNSMOS); the speechmos package declares no licence",
    files=(
        WeightFile("sig_bak_ovr.onnx", sha256="269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd",
                   size=1157965, parts=(("speechmos", "dnsmos_models/sig_bak_ovr.onnx"),)),
        WeightFile("model_v8.onnx", sha256="9246480c58567bc6affd4200938e77eef49468c8bc7ed3776d109c07456f6e91",
                   size=224860, parts=(("speechmos", "dnsmos_models/model_v8.onnx"),)),
    ),
    offline_packages=("speechmos",),
    notes="the non-personalised P.835 model and the P.808 model as shipped in speechmos 0.0.1.1",
)

DISTILLMOS_V7 = EvaluatorModel(
    name="distillmos",
    description="DistillMOS variant 7 (ConvTransformerSQAModel), distilled from XLS-R SQA",
    license="MIT",
    files=(WeightFile("distill_mos_v7.pt", sha256="b18b3ac60227267cfb91e5d00ce22cc7b73716fd92f269484da1446e27031a40",
                      size=16907522, parts=(("distillmos", "weights/distill_mos_v7.pt"),)),),
    offline_packages=("distillmos",),
    notes="weights as shipped in distillmos 0.9.1 (GitHub microsoft/Distill-MOS)",
)

# Revision and sha256 from a public pinned-download script; EvaluatorModel verifies on install.
UTMOS22_STRONG = EvaluatorModel(
    name="utmos22-strong",
    description="UTMOS22 strong learner (wav2vec 2.0 base + BLSTM), converted state dict for utmos-pytorch",
    license="MIT",
    files=(WeightFile("utmos_state_dict.pt",
                      sha256="21b98001a7d5164d562a40d76aff80ae996deeabe4473c3a6786d1c591c2cc47"),),
    hub_id="Blinorot/UTMOS-PyTorch",
    hub_revision="4f2447e519df3b88567b45583d3500006729502b",
    env_var="BENCH_UTMOS_DIR",
    notes="converted from sarulab-speech/UTMOS22's strong-learner checkpoint; no package ships it",
)


def _nonfinite_failure(values: dict[str, float]) -> MetricOutput | None:
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        return MetricOutput(failure=f"nonfinite_score: the model returned NaN/inf for {', '.join(bad)}")
    return None


class _MOSMetric(Metric):
    """Shared plumbing: 16 kHz check, load-once, torch/onnx thread setting."""

    needs = frozenset({"hypothesis"})
    higher_is_better = True
    failure_value = None
    # The 1-5 MOS scale with a point of margin either way: the predictors are unbounded regressions
    # that stray a little outside it (DNSMOS SIG 0.46 measured here); further out is corruption.
    default_range = (0.0, 6.0)
    sample_rate = SAMPLE_RATE

    def __init__(self, threads: int | None = None, **options: Any):
        """threads: intra-op threads of the model runtime while scoring (None: the runtime default).
        On a busy 2-core machine 1 thread was several times faster than the default."""
        super().__init__(**options)  # threads is operational: kept out of the options that key caches
        self.threads = threads
        self._loaded = False

    def load(self) -> None:
        if not self._loaded:
            availability = self.availability()
            if not availability.ok:
                raise Unavailable(f"metric '{self.name}' is unavailable: {availability.message()}")
            with torch_threads(self.threads) if self._uses_torch else nullcontext():
                self._load()
            self._loaded = True

    _uses_torch = True

    def _load(self) -> None:
        raise NotImplementedError

    def _hypotheses(self, inputs: Sequence[MetricInput]) -> list[np.ndarray | None]:
        clips = []
        for inp in inputs:
            audio = inp.hypothesis
            if audio is not None and audio.sample_rate != self.sample_rate:
                raise ValueError(f"item {inp.item_id}: hypothesis is at {audio.sample_rate} Hz; the scorer must "
                                 f"resample to {self.sample_rate} Hz before calling score_batch")
            clips.append(None if audio is None else np.ascontiguousarray(audio.samples, dtype=np.float32))
        return clips

    def score_batch(self, inputs: Sequence[MetricInput]) -> list[MetricOutput]:
        self.load()
        clips = self._hypotheses(inputs)
        present = [c for c in clips if c is not None]
        with torch_threads(self.threads) if self._uses_torch else nullcontext():
            scored = iter(self._score_clips(present) if present else [])
        outputs = []
        for clip in clips:
            if clip is None:
                outputs.append(MetricOutput(failure="missing_hypothesis: no audio to score"))
                continue
            values = next(scored)
            outputs.append(_nonfinite_failure(values) or MetricOutput(values=values))
        return outputs

    def _score_clips(self, clips: list[np.ndarray]) -> list[dict[str, float]]:
        raise NotImplementedError


# --------------------------------------------------------------------------- DNSMOS
class DNSMOS(_MOSMetric):
    name = "dnsmos"
    description = "DNSMOS P.835 OVRL/SIG/BAK and P.808 MOS (Microsoft, ONNX), non-intrusive"
    primary = "ovrl"
    models = (DNSMOS_ONNX,)
    _uses_torch = False

    @classmethod
    def availability(cls) -> Availability:
        return _merge(module_available("speechmos"), module_available("onnxruntime"),
                      module_available("librosa"), _weights_available(DNSMOS_ONNX))

    def evaluator_revision(self) -> str:
        return (f"dnsmos-v1:speechmos=={_package_version('speechmos')};onnx={_weights_tag(DNSMOS_ONNX)};"
                "p835-nonpersonalised+p808;window9.01s-hop1s-mean;short-clips-repeated")

    def _load(self) -> None:
        import onnxruntime as ort

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=DeprecationWarning)
            from speechmos.dnsmos import DNSMOS as SpeechmosDNSMOS
        folder = DNSMOS_ONNX.locate()  # sha256-verified copies of the package's ONNX files
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
            options.inter_op_num_threads = 1
        # speechmos's own constructor opens sessions with default options; build ours instead and
        # keep its scoring code (windowing, mel features, polynomial calibration).
        scorer = SpeechmosDNSMOS.__new__(SpeechmosDNSMOS)
        scorer.primary_model_path = str(folder / "sig_bak_ovr.onnx")
        scorer.onnx_sess = ort.InferenceSession(scorer.primary_model_path, options,
                                                providers=["CPUExecutionProvider"])
        scorer.p808_onnx_sess = ort.InferenceSession(str(folder / "model_v8.onnx"), options,
                                                     providers=["CPUExecutionProvider"])
        self.scorer = scorer
        # librosa's first mel spectrogram costs seconds of lazy setup: pay it at load time.
        scorer.audio_melspec(np.zeros(SAMPLE_RATE, dtype=np.float32))

    def _score_clips(self, clips: list[np.ndarray]) -> list[dict[str, float]]:
        # The P.835 model takes a batch dimension, but clips have different window counts and
        # DNSMOS is cheap next to the other evaluators: one clip at a time, as the reference does.
        out = []
        for clip in clips:
            r = self.scorer(clip, SAMPLE_RATE, False)
            out.append({"ovrl": float(r["ovrl_mos"]), "sig": float(r["sig_mos"]),
                        "bak": float(r["bak_mos"]), "p808": float(r["p808_mos"])})
        return out


# --------------------------------------------------------------------------- DistillMOS
def _import_distillmos_sqa():
    """Import distillmos.sqa without importing torchaudio.

    distillmos.sqa does `import torchaudio` at the top but uses it only in its file-list CLI
    (torchaudio.load / Resample), which this harness never calls: audio arrives as arrays. The PyPI
    torchaudio is CUDA-linked and fails to import with CPU-only torch (an OSError after ~5 s), so
    the module is imported with a placeholder standing in for torchaudio, which is removed again
    right after. Touching distillmos.sqa.torchaudio afterwards raises an AttributeError that says why.
    """
    if "distillmos.sqa" in sys.modules:
        return sys.modules["distillmos.sqa"]
    placeholder = types.ModuleType("torchaudio")

    def _refuse(name: str):
        raise AttributeError(f"torchaudio.{name}: torchaudio was not imported for distillmos (bench feeds it "
                             "arrays); use bench.audio for file I/O and resampling")

    placeholder.__getattr__ = _refuse  # type: ignore[attr-defined]
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "torchaudio" or k.startswith("torchaudio.")}
    sys.modules["torchaudio"] = placeholder
    try:
        return importlib.import_module("distillmos.sqa")
    finally:
        if sys.modules.get("torchaudio") is placeholder:
            del sys.modules["torchaudio"]
        sys.modules.update(saved)


class DistillMOS(_MOSMetric):
    name = "distillmos"
    description = "DistillMOS (Microsoft): speech quality MOS from a distilled CNN-transformer, non-intrusive"
    primary = "distillmos"
    models = (DISTILLMOS_V7,)

    def __init__(self, threads: int | None = None, batch_size: int = 1, **options: Any):
        """batch_size: clips of at most 7.68 s scored per forward. Zero-padding them to 7.68 s is what
        the model does to a single clip anyway, so batching gives the same numbers (measured: within
        5e-7). Batching did not speed up CPU inference here; it may on a GPU."""
        if batch_size < 1:
            raise BenchError(f"DistillMOS batch_size must be >= 1, got {batch_size}")
        super().__init__(threads=threads, **options)  # batch_size does not change numbers: not an option
        self.batch_size = batch_size

    @classmethod
    def availability(cls) -> Availability:
        return _merge(module_available("distillmos"), module_available("xls_r_sqa", "xls-r-sqa"),
                      module_available("torch"), _weights_available(DISTILLMOS_V7))

    def evaluator_revision(self) -> str:
        return (f"distillmos-v1:distillmos=={_package_version('distillmos')};weights={_weights_tag(DISTILLMOS_V7)};"
                "pad-to-7.68s,longer:mean-of-crops-hop<=1s;peak-normalised-by-model")

    def _load(self) -> None:
        import torch

        sqa = _import_distillmos_sqa()
        weights = DISTILLMOS_V7.locate() / "distill_mos_v7.pt"
        model = sqa.ConvTransformerSQAModel(load_weights=False)
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(checkpoint["model"], strict=True)
        model.eval()
        self.model = model
        self.segment_samples = int(sqa.SEQ_LEN)

    def _score_clips(self, clips: list[np.ndarray]) -> list[dict[str, float]]:
        import torch
        import torch.nn.functional as F

        scores: list[float | None] = [None] * len(clips)
        with torch.inference_mode():
            short = [i for i, c in enumerate(clips) if len(c) <= self.segment_samples]
            if self.batch_size > 1:
                for start in range(0, len(short), self.batch_size):
                    idx = short[start:start + self.batch_size]
                    batch = torch.stack([F.pad(torch.from_numpy(clips[i]), (0, self.segment_samples - len(clips[i])))
                                         for i in idx])
                    for i, s in zip(idx, self.model(batch).reshape(-1).tolist()):
                        scores[i] = float(s)
            for i, clip in enumerate(clips):
                if scores[i] is None:
                    scores[i] = float(self.model(torch.from_numpy(clip)[None]).reshape(-1)[0])
        return [{"distillmos": s} for s in scores]


# --------------------------------------------------------------------------- UTMOS
class UTMOS(_MOSMetric):
    name = "utmos"
    description = "UTMOS22 strong learner (VoiceMOS 2022) naturalness MOS, non-intrusive"
    primary = "utmos"
    models = (UTMOS22_STRONG,)

    @classmethod
    def availability(cls) -> Availability:
        package = module_available("utmos_pytorch", "utmos-pytorch")
        weights = _weights_available(UTMOS22_STRONG)
        if not weights.ok:
            weights = Availability.no(f"UTMOS weights not found: {weights.reason}",
                                      f"{weights.how_to_fix} (no pip package carries them; never replaced by "
                                      "another MOS predictor)")
        return _merge(package, module_available("torch"), weights)

    def evaluator_revision(self) -> str:
        return (f"utmos-v1:utmos-pytorch=={_package_version('utmos-pytorch')};{UTMOS22_STRONG.hub_id}@"
                f"{(UTMOS22_STRONG.hub_revision or '')[:12]};weights={_weights_tag(UTMOS22_STRONG)};"
                "domain0-judge288;per-clip")

    def _load(self) -> None:
        import torch
        from utmos_pytorch.utmos_torch import UTMOSModel, UTMOSScoreTorch

        weights = UTMOS22_STRONG.locate() / "utmos_state_dict.pt"  # raises Unavailable with how-to
        state = torch.load(weights, map_location="cpu", weights_only=True)
        with torch.device("meta"):  # the key list without allocating 95M parameters
            expected = set(UTMOSModel().state_dict())
        missing = sorted(expected - set(state))
        if missing:
            raise BenchError(f"{weights} lacks {len(missing)} UTMOS parameters (e.g. {missing[:5]}); "
                             "refusing to score with a partly initialised model")
        del state
        # utmos-pytorch loads non-strictly; every parameter was checked present above.
        self.scorer = UTMOSScoreTorch(ckpt_path=str(weights), device="cpu")
        self.scorer.eval()

    def _score_clips(self, clips: list[np.ndarray]) -> list[dict[str, float]]:
        import torch

        # Batch size 1: the port's authors (like the original's) note padding shifts the scores.
        with torch.inference_mode():
            return [{"utmos": float(self.scorer.score(torch.from_numpy(c))[0])} for c in clips]

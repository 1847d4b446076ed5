"""Intrusive quality metrics: PESQ and STOI compare the output with the item's reference recording.

When these are meaningful: PESQ and STOI assume the output is a degraded copy of the reference,
sample for sample (codec resynthesis, vocoder copy-synthesis, enhancement, packet-loss
concealment). Speech generated from text is not time-aligned with a human recording of the same
text: different durations, pauses and prosody make both scores low whatever the quality, so do not
use them to rank TTS systems; use them for reconstruction tasks.

Alignment: none beyond trimming. When the two signals differ in length, both are cut to the
shorter one (from the start); `extra["trimmed_s"]` records how much was cut. PESQ estimates and
compensates small delays itself; STOI does not.

Failures (per item, with a reason): no reference for the item, an unusable reference (silent,
NaN, too short), and PESQ's own errors ("No utterances detected", buffer shorter than 0.25 s).
STOI fails when too few speech frames remain after its silence removal.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

from bench.audio import validate
from bench.contracts import Availability, Metric, MetricInput, MetricOutput, module_available
from bench.errors import BadAudio, BenchError, Unavailable
from bench.metrics.sim import _package_version

SAMPLE_RATE = 16000


class _IntrusiveMetric(Metric):
    needs = frozenset({"hypothesis", "reference"})
    higher_is_better = True
    failure_value = None
    sample_rate = SAMPLE_RATE

    def _pairs(self, inputs: Sequence[MetricInput]) -> list[tuple[np.ndarray, np.ndarray, float] | MetricOutput]:
        """(reference, hypothesis, seconds trimmed) per item, or the item's failure."""
        out: list[tuple[np.ndarray, np.ndarray, float] | MetricOutput] = []
        for inp in inputs:
            for role in ("hypothesis", "reference"):
                audio = getattr(inp, role)
                if audio is not None and audio.sample_rate != self.sample_rate:
                    raise ValueError(f"item {inp.item_id}: {role} is at {audio.sample_rate} Hz; the scorer must "
                                     f"resample to {self.sample_rate} Hz before calling score_batch")
            if inp.hypothesis is None:
                out.append(MetricOutput(failure="missing_hypothesis: no audio to score"))
                continue
            if inp.reference is None:
                out.append(MetricOutput(failure=f"no_reference: item has no reference recording; "
                                                f"{self.name} compares the output with one"))
                continue
            try:
                validate(inp.reference)
            except BadAudio as exc:  # a silent or broken reference makes the comparison meaningless
                out.append(MetricOutput(failure=f"bad_reference_{exc.reason}: {exc.detail}"))
                continue
            ref = np.asarray(inp.reference.samples, dtype=np.float64)
            hyp = np.asarray(inp.hypothesis.samples, dtype=np.float64)
            n = min(len(ref), len(hyp))
            trimmed = (max(len(ref), len(hyp)) - n) / self.sample_rate
            out.append((ref[:n], hyp[:n], trimmed))
        return out

    def score_batch(self, inputs: Sequence[MetricInput]) -> list[MetricOutput]:
        self.load()
        outputs = []
        for pair in self._pairs(inputs):
            if isinstance(pair, MetricOutput):
                outputs.append(pair)
                continue
            ref, hyp, trimmed = pair
            result = self._score_pair(ref, hyp)
            if result.failure is None:
                bad = [k for k, v in result.values.items() if not math.isfinite(v)]
                if bad:
                    result = MetricOutput(failure=f"nonfinite_score: {', '.join(bad)} came out NaN/inf")
            result.extra["trimmed_s"] = round(trimmed, 4)
            outputs.append(result)
        return outputs

    def _score_pair(self, ref: np.ndarray, hyp: np.ndarray) -> MetricOutput:
        raise NotImplementedError


class PESQ(_IntrusiveMetric):
    name = "pesq"
    description = "PESQ (ITU-T P.862, P.862.2 wideband by default) of the output against the reference"
    primary = "pesq"
    default_range = (-0.5, 4.65)  # P.862 MOS-LQO; the wideband maximum is 4.6439
    MODES = ("wb", "nb")

    def __init__(self, mode: str = "wb", **options: Any):
        """mode: "wb" (P.862.2 wideband, MOS-LQO about 1.04-4.64) or "nb" (P.862 narrowband, up to ~4.55)."""
        if mode not in self.MODES:
            raise BenchError(f"PESQ mode must be one of {self.MODES}, got '{mode}'")
        super().__init__(mode=mode, **options)
        self.mode = mode

    @classmethod
    def availability(cls) -> Availability:
        return module_available("pesq")

    def evaluator_revision(self) -> str:
        return f"pesq-v1:pesq=={_package_version('pesq')};mode={self.mode};fs=16000;trim-to-shorter"

    def load(self) -> None:
        availability = self.availability()
        if not availability.ok:
            raise Unavailable(f"metric 'pesq' is unavailable: {availability.message()}")

    def _score_pair(self, ref: np.ndarray, hyp: np.ndarray) -> MetricOutput:
        import pesq

        try:
            score = pesq.pesq(SAMPLE_RATE, ref, hyp, self.mode)
        except pesq.NoUtterancesError as exc:
            return MetricOutput(failure=f"no_utterances: PESQ: {_message(exc)}")
        except pesq.BufferTooShortError as exc:
            return MetricOutput(failure=f"too_short: PESQ: {_message(exc)}")
        except pesq.PesqError as exc:
            return MetricOutput(failure=f"pesq_error: {type(exc).__name__}: {_message(exc)}")
        return MetricOutput(values={"pesq": float(score)}, extra={"mode": self.mode})


class STOI(_IntrusiveMetric):
    name = "stoi"
    description = "STOI intelligibility (0-1; extended=True gives ESTOI) of the output against the reference"
    primary = "stoi"
    # A mean of correlations: about 0-1 for speech, slightly negative for garbage (-0.016 measured).
    default_range = (-1.0, 1.0)

    def __init__(self, extended: bool = False, **options: Any):
        """extended: ESTOI (Jensen & Taal 2016), better for fluctuating noise; the value key stays "stoi"."""
        super().__init__(**({"extended": True} if extended else {}), **options)
        self.extended = bool(extended)

    @classmethod
    def availability(cls) -> Availability:
        return module_available("pystoi")

    def evaluator_revision(self) -> str:
        kind = "estoi" if self.extended else "stoi"
        return f"stoi-v1:pystoi=={_package_version('pystoi')};{kind};fs=16000(pystoi resamples to 10k);trim-to-shorter"

    def load(self) -> None:
        availability = self.availability()
        if not availability.ok:
            raise Unavailable(f"metric 'stoi' is unavailable: {availability.message()}")

    def _score_pair(self, ref: np.ndarray, hyp: np.ndarray) -> MetricOutput:
        from pystoi import stoi

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            score = stoi(ref, hyp, SAMPLE_RATE, extended=self.extended)
        # pystoi warns and returns 1e-5 when silence removal leaves fewer than 30 frames (~0.4 s).
        for w in caught:
            if "Not enough STFT frames" in str(w.message):
                return MetricOutput(failure="too_short: STOI: fewer than 30 speech frames (~0.4 s) remain after "
                                            "removing the reference's silent frames")
        return MetricOutput(values={"stoi": float(score)}, extra={"extended": self.extended})


def _message(exc: Exception) -> str:
    """pesq's errors carry bytes messages (b'No utterances detected'): make them text."""
    arg = exc.args[0] if exc.args else ""
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)

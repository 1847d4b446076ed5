"""Plug-ins used by the runner tests, referenced as 'tests.plugins:Name'.

They exercise the harness's mechanics (timeouts, crashes, bad outputs, resume) with real,
deterministic computations: a tone generator, not a speech model; a duration metric, not a score
pretending to be a speech-quality measure.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.audio import Audio
from bench.contracts import Metric, MetricInput, MetricOutput, Prompt, Protocol, Task, TTSItem, TTSSystem


class ToneSystem(TTSSystem):
    """A 220 Hz tone, 0.1 s per character of text. Text markers trigger failure modes."""

    family = "classic"
    revision = "tone-1"
    license = "Apache-2.0"
    streaming = True

    def load(self) -> None:
        self.rate = int(self.options.get("rate", 16000))
        self.delay = float(self.options.get("delay", 0.0))
        self.calls_log = self.options.get("calls_log")
        self.texts_log = self.options.get("texts_log")
        if self.options.get("load_hang"):
            time.sleep(3600)

    def synthesize_stream(self, text, prompt, item):
        if self.calls_log:
            with open(self.calls_log, "a") as f:
                f.write(item.id + "\n")
        if self.texts_log:
            with open(self.texts_log, "a") as f:
                f.write(json.dumps(text) + "\n")
        time.sleep(self.delay)
        if "SPAWN" in text:  # a grandchild that would outlive a careless kill
            import subprocess

            child = subprocess.Popen(["sleep", "600"])
            with open(self.options["pid_file"], "w") as f:
                f.write(str(child.pid))
            time.sleep(3600)
        if "HANG" in text:
            time.sleep(3600)
        if "CRASH" in text:
            os._exit(3)
        if "RAISE" in text:
            raise RuntimeError("the system refused this text")
        n = int(float(self.options.get("seconds_per_char", 0.1)) * len(text) * self.rate)
        t = np.arange(n) / self.rate
        x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        if "NAN" in text:
            x[n // 2] = np.nan
        if "SILENT" in text:
            x[:] = 0
        if "EMPTY" in text:
            x = x[:0]
        if "CLIP" in text:
            x = np.clip(x * 100, -1, 1)
        if "SHORT" in text:
            x = x[: int(0.05 * self.rate)]
        if "LOUD" in text:
            x = x * 5
        half = len(x) // 2
        yield Audio(x[:half], self.rate)
        yield Audio(x[half:], self.rate)


class SeededTone(ToneSystem):
    """A system that samples: the run's --seed reaches it as option `seed`."""

    takes_seed = True


class DurationMetric(Metric):
    """Duration of the hypothesis audio in seconds (a real, exactly checkable measurement)."""

    name = "duration"
    needs = frozenset({"hypothesis"})
    primary = "seconds"
    higher_is_better = True

    def evaluator_revision(self) -> str:
        return "duration-1"

    def failure_extra(self, text, language):
        return {"text_chars": len(text or "")}

    def score_batch(self, inputs: Sequence[MetricInput]) -> list[MetricOutput]:
        log = os.environ.get("BENCH_TEST_METRIC_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{len(inputs)}\n")
        return [MetricOutput(values={"seconds": inp.hypothesis.duration}) for inp in inputs]


class FlakyMetric(Metric):
    """Fails the items named in $FLAKY_FAIL (an evaluator that crashed on them), scores the rest."""

    name = "flaky"
    needs = frozenset({"hypothesis"})
    primary = "seconds"

    def evaluator_revision(self) -> str:
        return "flaky-1"

    def score_batch(self, inputs: Sequence[MetricInput]) -> list[MetricOutput]:
        failing = set(filter(None, os.environ.get("FLAKY_FAIL", "").split(",")))
        return [MetricOutput(failure="evaluator_crashed") if inp.item_id in failing
                else MetricOutput(values={"seconds": inp.hypothesis.duration}) for inp in inputs]


class PromptLengthRatio(Metric):
    """Hypothesis duration / prompt duration: exercises the 'prompt' input path."""

    name = "prompt-ratio"
    needs = frozenset({"hypothesis", "prompt"})
    primary = "ratio"

    def evaluator_revision(self) -> str:
        return "prompt-ratio-1"

    def score_batch(self, inputs):
        return [MetricOutput(values={"ratio": i.hypothesis.duration / i.prompt.duration}) for i in inputs]


class ManifestTask(Task):
    """Items from a JSON manifest: [{"id", "text", "prompt": path|null, "reference": path|null}]."""

    name = "manifest"
    protocol = Protocol(metrics=("tests.plugins:DurationMetric",), normalizer="seedtts")
    report_groups = ("group",)

    def items(self):
        rows = json.loads(Path(self.options["manifest"]).read_text())
        out = []
        for r in rows:
            prompt = Prompt(Path(r["prompt"]), "prompt text") if r.get("prompt") else None
            ref = Path(r["reference"]) if r.get("reference") else None
            out.append(TTSItem(id=r["id"], text=r["text"], prompt=prompt, reference_path=ref,
                               tags={"group": r.get("group", "a")}))
        return out


class ProcessProbe(ToneSystem):
    """Reports the worker process it runs in (working folder, one environment variable, which
    heavy modules were already imported): the worker start methods must give every system the
    runner's state at the worker's start."""

    def where(self) -> dict:
        import sys

        return {"cwd": os.getcwd(), "mark": os.environ.get("BENCH_TEST_MARK"),
                "torch_loaded_before_load": self.torch_at_load, "path0": sys.path[0]}

    def load(self) -> None:
        import sys

        self.torch_at_load = "torch" in sys.modules
        super().load()


class TorchProcessProbe(ProcessProbe):
    uses_torch = True

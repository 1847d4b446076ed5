"""The contracts between the engine and its plug-ins: System, Task, Metric.

Plug-ins subclass these and register through entry points (bench.registry). Every component can
say whether it runs on this machine (`availability()`) without loading anything heavy, so that
`bench systems list` is fast and a missing component is reported, not crashed on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence
from typing import Protocol as TypingProtocol

from bench.audio import Audio


# --------------------------------------------------------------------------- availability
@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""  # why not, when not ok
    how_to_fix: str = ""  # the command or step that makes it available

    @classmethod
    def yes(cls) -> "Availability":
        return cls(True)

    @classmethod
    def no(cls, reason: str, how_to_fix: str = "") -> "Availability":
        return cls(False, reason, how_to_fix)

    def message(self) -> str:
        if self.ok:
            return "available"
        return f"{self.reason}" + (f" -> {self.how_to_fix}" if self.how_to_fix else "")


def module_available(module: str, pip_name: str | None = None) -> Availability:
    """Whether `module` can be imported, without importing it."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return Availability.yes()
    return Availability.no(f"Python package '{pip_name or module}' is not installed",
                           f"pip install {pip_name or module}")


def binary_available(binary: str, debian_package: str) -> Availability:
    import shutil

    if shutil.which(binary):
        return Availability.yes()
    return Availability.no(f"'{binary}' is not on PATH", f"sudo apt-get install {debian_package}")


# --------------------------------------------------------------------------- items
@dataclass(frozen=True)
class Prompt:
    """Reference speech for voice cloning: the audio and what it says."""

    audio_path: Path
    text: str


@dataclass(frozen=True)
class TTSItem:
    """One test case. `id` is stable across runs and is the only key results are paired by."""

    id: str
    text: str
    prompt: Prompt | None = None
    reference_path: Path | None = None  # ground-truth recording of `text`, where there is one
    language: str = "en"
    tags: dict[str, str] = field(default_factory=dict)  # e.g. speaker, prompt relation, subset


# --------------------------------------------------------------------------- systems
class System:
    """A wrapped system. Subclasses set the class attributes and implement load/synthesize."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""  # ar | nar | flow | classic | reference | lm
    revision: ClassVar[str] = ""  # pinned code/weights revision
    license: ClassVar[str] = ""
    description: ClassVar[str] = ""
    streaming: ClassVar[bool] = False  # True when synthesize_stream yields audio incrementally
    clones_voice: ClassVar[bool] = False  # False for single-voice systems: low SIM is expected
    # True for systems that sample: the run's --seed reaches them as option `seed` (unless the user
    # gives one with --system-opt), so it is recorded in the spec with the system's other options.
    takes_seed: ClassVar[bool] = False
    # What one copy needs on a Ray cluster (--executor ray): Ray's num_cpus, num_gpus, memory (bytes).
    resources: ClassVar[dict[str, float]] = {"num_cpus": 1}
    # True for systems that run on PyTorch: their worker processes fork from a server that imported
    # torch once (seconds per process saved); others start a fresh interpreter, so their memory
    # figures never include a library they do not use.
    uses_torch: ClassVar[bool] = False

    def __init__(self, **options: Any):
        self.options = options

    @classmethod
    def availability(cls) -> Availability:
        return Availability.yes()

    def load(self) -> None:
        """Load weights/voices once. Called before the first synthesize, never inside a loop."""

    def identity(self) -> dict[str, Any]:
        """What pins this system's output: recorded in the run spec."""
        return {"name": self.name, "family": self.family, "revision": self.revision,
                "license": self.license, "options": dict(sorted(self.options.items()))}


class TTSSystem(System):
    def synthesize(self, text: str, prompt: Prompt | None, item: TTSItem) -> Audio:
        raise NotImplementedError

    def synthesize_stream(self, text: str, prompt: Prompt | None, item: TTSItem) -> Iterator[Audio]:
        """Yield audio chunks as they are ready. The default yields the whole utterance once."""
        yield self.synthesize(text, prompt, item)


# --------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class Protocol:
    """How a task is scored: which metrics, which text normalisation, which ASR language."""

    metrics: tuple[str, ...]
    normalizer: str = "seedtts"
    language: str = "en"
    notes: str = ""


class Task:
    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    protocol: ClassVar[Protocol] = Protocol(metrics=())
    # Item tags whose values the summary breaks results down by (e.g. "prompt_relation").
    report_groups: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any):
        self.options = options

    @classmethod
    def availability(cls) -> Availability:
        return Availability.yes()

    def items(self) -> list[TTSItem]:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version,
                "options": {k: str(v) for k, v in sorted(self.options.items())}}


# --------------------------------------------------------------------------- metrics
@dataclass
class MetricInput:
    """What a metric may read for one item. Audio is loaded and validated by the scorer."""

    item_id: str
    hypothesis: Audio | None  # the system's output
    text: str | None = None
    reference: Audio | None = None
    prompt: Audio | None = None
    language: str = "en"


@dataclass
class MetricOutput:
    """Per-item result of one metric: named values, or a failure with its reason.

    `values` holds floats (NaN never appears: a value that cannot be computed is a failure).
    `extra` holds non-numeric detail kept in the records (e.g. the ASR transcript).
    """

    values: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None


class Metric:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset({"hypothesis"})  # hypothesis, text, reference, prompt
    higher_is_better: ClassVar[bool] = True
    # The headline value among `values`; aggregates and CIs are computed for every value.
    primary: ClassVar[str] = ""
    # Value a failed item counts as in the mean, or None when failures are excluded from the mean
    # (they are always counted in the `failures` column either way). WER counts failures as 1.0.
    failure_value: ClassVar[float | None] = None
    sample_rate: ClassVar[int] = 16000  # inputs are resampled to this rate before score_batch
    # Evaluator weights this metric may use (bench.evaluators.EvaluatorModel); listed by `bench models`.
    models: ClassVar[tuple] = ()
    # The closed interval every value lies in; a stored value outside it is a corrupt or tampered
    # record (bench.results refuses it). `value_ranges` overrides it per value name.
    default_range: ClassVar[tuple[float, float]] = (float("-inf"), float("inf"))
    value_ranges: ClassVar[dict[str, tuple[float, float]]] = {}
    # What one copy of the evaluator needs on a Ray cluster (--executor ray), as for systems.
    resources: ClassVar[dict[str, float]] = {"num_cpus": 1}

    def __init__(self, **options: Any):
        self.options = options

    @classmethod
    def value_range(cls, value_name: str) -> tuple[float, float]:
        return cls.value_ranges.get(value_name, cls.default_range)

    @classmethod
    def availability(cls) -> Availability:
        return Availability.yes()

    def evaluator_revision(self) -> str:
        """A string that changes whenever this metric's numbers could change (model, code, config).

        It keys the score cache and is recorded in every summary. Must not load the model.
        """
        raise NotImplementedError

    def load(self) -> None:
        """Load the evaluator model once; raise Unavailable with a fix if its weights are absent."""

    def score_batch(self, inputs: Sequence[MetricInput]) -> list[MetricOutput]:
        raise NotImplementedError

    def corpus_aggregates(self, outputs: Sequence[MetricOutput]) -> dict[str, float]:
        """Aggregates beyond per-value means (e.g. corpus WER). Default: none."""
        return {}

    def failure_extra(self, text: str | None, language: str) -> dict[str, Any]:
        """Detail kept with an item that failed before this metric saw it (missing or bad audio),
        so corpus aggregates can count it (WER: the reference's word count). Must not load models."""
        return {}

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "revision": self.evaluator_revision(),
                "options": {k: str(v) for k, v in sorted(self.options.items())}}


# --------------------------------------------------------------------------- language models
class LongContextSample(TypingProtocol):
    """What the engine needs of a long-context sample (tasks.longctx.LongContextSample is the
    implementation): a stable id, the prompt, the gold continuation for teacher forcing, and a
    scoring rule applied by `score(prediction) -> float in [0, 1]`."""

    id: str
    task: str
    prompt: str
    target: str
    answers: tuple[str, ...]
    scoring: str

    def score(self, prediction: str) -> float: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class LMScore:
    """What an LM system returns for one sample under one attention method and budget.

    `score` is in [0, 1] (1 = correct). `sparsity` is the realised sparsity of the phase that was
    made sparse (prefill: against the causal triangle; decode: against the KV length each decode
    query could attend), averaged over layers and heads; `per_layer` keeps the detail."""

    score: float
    sparsity: float
    prediction: str | None = None
    n_context_tokens: int = 0
    n_answer_tokens: int = 0
    seconds: float | None = None
    per_layer: list[float] = field(default_factory=list)
    answer_logprob: float | None = None  # teacher-forced mode: sum of the answer tokens' log-probs


class LMSystem(System):
    """A causal LM whose attention can be replaced by a sparse method in one phase.

    `score_sample(sample, method, phase, budget, mode)`: mode 'teacher-forced' runs one forward pass
    in which the answer tokens attend through the decode-phase pattern (fast on CPU) and scores the
    greedy argmax of every answer position; 'generate' decodes greedily up to the answer length
    plus a margin. Method names and budgets are those of systems.lm.attention."""

    family = "lm"

    def max_context(self) -> int:
        raise NotImplementedError

    def shape(self) -> dict[str, Any]:
        """HF-config-style shape (n_layers, d_model, n_heads, n_kv_heads, d_head, d_mlp, vocab) and
        parameter count, for the cost model."""
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError

    def score_sample(self, sample: LongContextSample, *, method: str, phase: str,
                     budget: dict[str, Any], mode: str = "teacher-forced") -> LMScore:
        raise NotImplementedError

    def make_samples(self, task: str, task_options: dict[str, Any], length_tokens: int, n: int,
                     seed: int) -> list[LongContextSample]:
        """Samples of a registered LM task at `length_tokens` of this model's tokenizer."""
        from bench import registry

        lm_task = registry.create("task", task, **task_options)
        if not isinstance(lm_task, LMTask):
            raise TypeError(f"task '{task}' is not a long-context LM task")
        return lm_task.samples(length_tokens, n, seed, count_tokens=self.count_tokens)


class LMTask(Task):
    """Generates long-context samples, deterministic by seed, at a requested token length."""

    def samples(self, length_tokens: int, n: int, seed: int,
                count_tokens: Any = None) -> list[LongContextSample]:
        raise NotImplementedError

    def score(self, sample: LongContextSample, prediction: str) -> float:
        raise NotImplementedError

    def items(self) -> list[TTSItem]:
        from bench.errors import BenchError

        raise BenchError(f"task '{self.name}' is a long-context LM task: use `bench sweep`, not `bench run`")

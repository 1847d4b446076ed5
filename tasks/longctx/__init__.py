"""Long-context tasks generated offline: deterministic by seed, controllable in length (tokens).

Generators (see `TASKS`): RULER-style needle-in-a-haystack (single, multi-key, multi-value,
multi-query), variable tracking and common-words extraction (tasks.longctx.ruler), and story
tasks in natural language: retrieval, multi-hop and filtering (tasks.longctx.stories).

    from tasks.longctx import generate
    samples = generate("niah_single", n_tokens=4096, seed=0, n_samples=10,
                       tokenizer=lambda s: tok(s, add_special_tokens=False)["input_ids"])

Length: `n_tokens` is the length of `sample.prompt` (instruction, context, question and answer
prefix; the answer is extra). With a tokenizer (any callable text -> token ids) the prompt is
filled to exactly n_tokens when the tokenizer allows it (never more; `length_exact` says whether it
hit); without one, tokens are estimated as ceil(characters / chars_per_token).

Each sample has a stable id "task/L<n_tokens>/s<seed>/i<index>" and one scoring rule:
- "exact":  1 if the prediction's first line, normalised (lower case, surrounding punctuation and a
            leading article dropped, spaces collapsed), equals a normalised gold answer, else 0.
- "all_of": the fraction of gold answers found in the prediction as whole words (case-insensitive):
            RULER's string_match_all, with word boundaries so "123" does not match "41234".
- "set":    Jaccard overlap |P & G| / |P | G| between the gold set G and the set P of items in the
            prediction matching `item_pattern` (restricted to `candidates` when given, so filler
            words in an answer do not count). 1 only for exactly the gold set.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Callable, Iterable, Sequence

from bench.errors import BenchError

SCORING_RULES = ("exact", "all_of", "set")


class MalformedSample(BenchError, ValueError):
    """A long-context sample that is missing a part or contradicts itself."""


class LengthTooShort(BenchError, ValueError):
    """The requested length cannot hold the task's fixed parts; `minimum` is the least length that
    can, when the generator knows it (else None)."""

    def __init__(self, message: str, minimum: int | None = None):
        super().__init__(message)
        self.minimum = minimum


# --------------------------------------------------------------------------- the sample
@dataclass(frozen=True)
class LongContextSample:
    id: str
    task: str
    target_tokens: int
    seed: int
    index: int
    instruction: str  # before the context
    context: str
    question: str  # after the context
    answer_prefix: str  # the prompt ends with it; the model continues with the answer
    answers: tuple[str, ...]  # gold answers (alternatives for "exact", all required otherwise)
    scoring: str
    target: str  # canonical continuation after answer_prefix, for teacher-forced scoring
    n_tokens: int  # measured length of `prompt`
    length_exact: bool  # a real tokenizer counted n_tokens and it equals target_tokens
    item_pattern: str = ""  # "set" scoring: regex of one answer item
    candidates: tuple[str, ...] = ()  # "set" scoring: the items that count (empty: any match)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        expected_id = sample_id(self.task, self.target_tokens, self.seed, self.index)
        if self.id != expected_id:
            problems.append(f"id {self.id!r} should be {expected_id!r}")
        for name in ("task", "context", "question", "target"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{name} is empty or not text")
        for name in ("instruction", "answer_prefix"):
            if not isinstance(getattr(self, name), str):
                problems.append(f"{name} is not text")
        if (not isinstance(self.answers, tuple) or not self.answers
                or not all(isinstance(a, str) and a.strip() for a in self.answers)):
            problems.append(f"answers must be a non-empty tuple of non-empty strings; got {self.answers!r}")
        if self.scoring not in SCORING_RULES:
            problems.append(f"scoring {self.scoring!r} is not one of {', '.join(SCORING_RULES)}")
        for name in ("target_tokens", "n_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                problems.append(f"{name} must be a positive integer; got {value!r}")
        if self.scoring == "set" and not problems:
            try:
                pattern = re.compile(self.item_pattern)
            except re.error as exc:
                pattern = None
                problems.append(f"item_pattern {self.item_pattern!r} is not a regex: {exc}")
            if not self.item_pattern:
                problems.append("'set' scoring needs an item_pattern")
            elif pattern is not None:
                bad = [a for a in self.answers if not pattern.fullmatch(a)]
                if bad:
                    problems.append(f"gold answers {bad} do not match item_pattern {self.item_pattern!r}")
            if self.candidates and not set(self.answers) <= set(self.candidates):
                problems.append("some gold answers are not among the candidates")
        if problems:
            raise MalformedSample(f"malformed long-context sample {self.id!r}: " + "; ".join(problems))

    @property
    def prompt(self) -> str:
        return format_prompt(self.instruction, self.context, self.question, self.answer_prefix)

    def score(self, prediction: str) -> float:
        return score(self, prediction)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["answers"], record["candidates"] = list(self.answers), list(self.candidates)
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "LongContextSample":
        """Rebuild a sample from `to_dict` output (e.g. a JSONL line); errors name what is wrong."""
        if not isinstance(record, dict):
            raise MalformedSample(f"a long-context sample must be a JSON object; got {type(record).__name__}")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing, unknown = sorted(required - set(record)), sorted(set(record) - names)
        if missing or unknown:
            raise MalformedSample(f"long-context sample {record.get('id', '?')!r}: "
                                  + "; ".join(filter(None, [missing and f"missing fields {missing}",
                                                            unknown and f"unknown fields {unknown}"])))
        values = dict(record)
        for name in ("answers", "candidates"):
            if name in values:
                if not isinstance(values[name], (list, tuple)):
                    raise MalformedSample(f"long-context sample {record.get('id', '?')!r}: {name} must be a list")
                values[name] = tuple(values[name])
        return cls(**values)


def sample_id(task: str, n_tokens: int, seed: int, index: int) -> str:
    return f"{task}/L{n_tokens}/s{seed}/i{index}"


def format_prompt(instruction: str, context: str, question: str, answer_prefix: str) -> str:
    head = f"{instruction}\n\n" if instruction else ""
    return f"{head}{context}\n\n{question}\n{answer_prefix}"


# --------------------------------------------------------------------------- scoring
_ARTICLE = re.compile(r"^(the|a|an)\s+")


def normalize(text: str) -> str:
    text = re.sub(r"\s+", " ", text.lower()).strip()
    text = text.strip(" .,;:!?\"'`()[]{}")
    return _ARTICLE.sub("", text).strip()


def score(sample: LongContextSample, prediction: str) -> float:
    """Score one prediction (the model's continuation after the answer prefix) in [0, 1]."""
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be text; got {type(prediction).__name__}")
    if sample.scoring == "exact":
        first_line = prediction.strip().split("\n", 1)[0]
        return float(normalize(first_line) in {normalize(a) for a in sample.answers})
    if sample.scoring == "all_of":
        found = [re.search(rf"(?<!\w){re.escape(a.lower())}(?!\w)", prediction.lower()) is not None
                 for a in sample.answers]
        return sum(found) / len(found)
    items = set(re.findall(sample.item_pattern, prediction))
    if sample.candidates:
        items &= set(sample.candidates)
    gold = set(sample.answers)
    return len(items & gold) / len(items | gold)


# --------------------------------------------------------------------------- length control
class TokenCounter:
    """Counts prompt tokens with a tokenizer callable (text -> ids, or -> an int) or estimates them."""

    def __init__(self, tokenizer: Callable[[str], Any] | None = None, chars_per_token: float = 4.0):
        if tokenizer is not None and not callable(tokenizer):
            raise TypeError("tokenizer must be a callable text -> token ids (e.g. "
                            "lambda s: tok(s, add_special_tokens=False)['input_ids'])")
        if not (isinstance(chars_per_token, (int, float)) and chars_per_token > 0):
            raise ValueError(f"chars_per_token must be a positive number; got {chars_per_token!r}")
        self.tokenizer, self.chars_per_token = tokenizer, float(chars_per_token)

    @property
    def exact(self) -> bool:
        return self.tokenizer is not None

    def __call__(self, text: str) -> int:
        if self.tokenizer is None:
            return math.ceil(len(text) / self.chars_per_token)
        out = self.tokenizer(text)
        return out if isinstance(out, int) else len(out)


# Short strings tried last to fill the final one or two tokens exactly.
_FINAL_PADS = (" .", ".", " a", ",", " ")


def fit_to_length(build: Callable[[int, str], str], target: int, counter: TokenCounter, task: str,
                  pad_words: Iterable[str]) -> tuple[int, str, int]:
    """Fill a prompt to `target` tokens.

    `build(n, pad)` returns the prompt with n filler units and the text `pad` appended to the
    filler; it must grow (almost) monotonically with n. Finds the largest n that fits, then appends
    pad words (then short pads) while they fit, stopping at exactly `target` when possible.
    Returns (n, pad, tokens).
    """
    base = counter(build(0, ""))
    if base > target:
        raise LengthTooShort(f"{task}: the instruction, question and required facts alone take {base} "
                             f"tokens; ask for n_tokens >= {base} (got {target})", minimum=base)
    high = 1
    while counter(build(high, "")) <= target:
        high *= 2
    low = high // 2  # fits (or is 0)
    while high - low > 1:
        mid = (low + high) // 2
        if counter(build(mid, "")) <= target:
            low = mid
        else:
            high = mid
    while low > 0 and counter(build(low, "")) > target:  # guard against a non-monotone step
        low -= 1
    n, pad = low, ""
    tokens = counter(build(n, pad))
    for word in pad_words:
        if tokens == target:
            break
        trial = f"{pad} {word}" if pad else word
        count = counter(build(n, trial))
        if count <= target:
            pad, tokens = trial, count
            continue
        for short in _FINAL_PADS:  # one word too many: try to fill the last token(s) exactly
            count = counter(build(n, pad + short))
            if count <= target:
                pad, tokens = pad + short, count
                if tokens == target:
                    break
        break
    return n, pad, tokens


def sample_rng(task: str, n_tokens: int, seed: int, index: int, stream: str = "") -> random.Random:
    """A generator seeded by the sample's identity (str seeds are hashed stably by `random`)."""
    return random.Random(f"{task}|{n_tokens}|{seed}|{index}|{stream}")


# --------------------------------------------------------------------------- registry
TASKS: dict[str, tuple[str, str]] = {
    "niah_single": ("ruler", "niah_single"),
    "niah_multikey": ("ruler", "niah_multikey"),
    "niah_multivalue": ("ruler", "niah_multivalue"),
    "niah_multiquery": ("ruler", "niah_multiquery"),
    "vt": ("ruler", "variable_tracking"),
    "cwe": ("ruler", "common_words"),
    "story_retrieval": ("stories", "story_retrieval"),
    "story_multihop": ("stories", "story_multihop"),
    "story_filtering": ("stories", "story_filtering"),
}


def generate(task: str, n_tokens: int, seed: int = 0, n_samples: int = 1,
             tokenizer: Callable[[str], Any] | None = None, chars_per_token: float = 4.0,
             **options: Any) -> list[LongContextSample]:
    """Generate `n_samples` samples of `task` at `n_tokens` prompt tokens, deterministic by seed."""
    if task not in TASKS:
        raise ValueError(f"unknown long-context task {task!r}; known: {', '.join(TASKS)}")
    for name, value in (("n_tokens", n_tokens), ("n_samples", n_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    module, function = TASKS[task]
    make = getattr(__import__(f"tasks.longctx.{module}", fromlist=[function]), function)
    counter = TokenCounter(tokenizer, chars_per_token)
    return [make(task=task, n_tokens=n_tokens, seed=seed, index=i, counter=counter, **options)
            for i in range(n_samples)]


def finish(task: str, n_tokens: int, seed: int, index: int, counter: TokenCounter, *, instruction: str,
           context: str, question: str, answer_prefix: str, answers: Sequence[str], scoring: str,
           target: str, tokens: int, item_pattern: str = "", candidates: Sequence[str] = (),
           metadata: dict[str, Any] | None = None) -> LongContextSample:
    """Assemble a sample (generators' common last step); validation happens in the dataclass."""
    return LongContextSample(
        id=sample_id(task, n_tokens, seed, index), task=task, target_tokens=n_tokens, seed=seed, index=index,
        instruction=instruction, context=context, question=question, answer_prefix=answer_prefix,
        answers=tuple(answers), scoring=scoring, target=target, n_tokens=tokens,
        length_exact=counter.exact and tokens == n_tokens, item_pattern=item_pattern,
        candidates=tuple(candidates), metadata=dict(metadata or {}))

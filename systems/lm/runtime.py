"""Run a decoder's layers with a pluggable attention method per phase, and score long-context samples.

A `Decoder` exposes the pieces of a Llama-style forward pass (embed; per layer: attention inputs
q/k/v with RoPE applied, then the output projection + MLP given the attention output; final logits).
Both our functional model (`FunctionalDecoder`) and the Hugging Face adapter (systems.lm.hf)
implement it, so one runtime drives both, and attention is always computed here, by a method of
systems.lm.attention:

- the prompt (instruction + context + question + answer prefix) goes through a prefill method:
  the method under test when phase == "prefill", dense otherwise;
- answer tokens attend through a decode cache built from the prompt's q/k/v: the method under
  test when phase == "decode", dense otherwise. As in real serving (and the Sparse Frontier), the
  first answer token is predicted by the prompt's last position, i.e. by the prefill pass.

Two scoring modes (`score_sample`):
- "teacher-forced": one forward pass over prompt + answer; score 1 when the argmax at every answer
  position is the gold token (exact match of the whole target), plus the target's summed log-prob.
- "generate": prefill, then greedy decoding token by token through the decode cache, up to the
  target length plus a margin (or an end token); the text is scored by the sample's rule
  (exact / all_of / set, tasks.longctx.score).
Realised sparsity is reported for the phase under test only: per layer (mean over heads), and their
mean. Prefill sparsity is against the causal triangle of the prompt; decode sparsity against the
keys each decode query could attend (see systems.lm.attention.base).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch

from bench.contracts import LMScore
from bench.errors import BenchError
from tasks.longctx import SCORING_RULES

PHASES = ("prefill", "decode")
MODES = ("teacher-forced", "generate")
GENERATION_MARGIN = 8  # extra tokens greedy decoding may produce beyond the target length


class MalformedSample(BenchError, ValueError):
    """A sample the runtime cannot score: empty context, no answers, unknown scoring rule..."""


class ContextTooLong(BenchError, ValueError):
    """Prompt + answer do not fit the model's context window."""


# --------------------------------------------------------------------------- decoders
class Decoder:
    """The pieces of a Llama-style forward pass. Shapes: h (1, T, d); q (1, H, T, D); k, v (1, KV, T, D)."""

    n_layers: int

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def positions(self, positions: torch.Tensor) -> Any:
        """Whatever attention_inputs needs to encode these positions (e.g. RoPE cos/sin)."""
        raise NotImplementedError

    def attention_inputs(self, layer: int, h: torch.Tensor, pos: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def attention_output(self, layer: int, h: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Final norm + output head."""
        raise NotImplementedError


class FunctionalDecoder(Decoder):
    """systems.lm.model's functional Llama."""

    def __init__(self, params: dict, config):
        self.params, self.config = params, config
        self.n_layers = config.num_hidden_layers

    def embed(self, ids):
        from systems.lm.model import embed
        return embed(self.params, ids)

    def positions(self, positions):
        from systems.lm.model import rope_tables
        return rope_tables(self.config, positions)

    def attention_inputs(self, layer, h, pos):
        from systems.lm.model import attention_inputs
        cos, sin = pos
        return attention_inputs(self.params, self.config, layer, h, cos, sin)

    def attention_output(self, layer, h, attn):
        from systems.lm.model import attention_output
        return attention_output(self.params, self.config, layer, h, attn)

    def logits(self, h):
        from systems.lm.model import final_norm, logits
        return logits(self.params, self.config, final_norm(self.params, self.config, h))


# --------------------------------------------------------------------------- samples
@dataclass(frozen=True)
class PreparedSample:
    prompt: str
    target: str
    answers: tuple[str, ...]
    scoring: str
    item_pattern: str = ""
    candidates: tuple[str, ...] = ()
    scorer: Callable[[str], float] | None = None  # the sample's own score(prediction), when it has one


def _field(sample: Any, name: str, default: Any = None) -> Any:
    """A sample attribute, else the same key in its meta/metadata dict."""
    value = getattr(sample, name, None)
    if value is not None:
        return value
    for extras in ("meta", "metadata"):
        bag = getattr(sample, extras, None)
        if isinstance(bag, dict) and bag.get(name) is not None:
            return bag[name]
    return default


def prepare_sample(sample: Any) -> PreparedSample:
    """Prompt text, target text and scoring of a long-context sample, validated.

    Takes the engine's sample (bench.contracts.LongContextSample: tasks.longctx samples carry
    `prompt`, `target`, `answers`, `scoring` and `score()`); a sample without `prompt` is built
    from context / question (+ optional instruction, answer_prefix), laid out as the tasks do:
    instruction, blank line, context, blank line, question, newline, answer prefix. Without a
    `target`, the target is a space and the answer(s)."""
    sid = getattr(sample, "id", "?")
    prompt, context = _field(sample, "prompt"), _field(sample, "context")
    answers, scoring = _field(sample, "answers"), _field(sample, "scoring", "exact")
    problems = []
    if context is not None and (not isinstance(context, str) or not context.strip()):
        problems.append("the context is empty")
    if prompt is None and context is None:
        problems.append("it has neither a prompt nor a context")
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        problems.append("the prompt is empty")
    if isinstance(answers, str) or not isinstance(answers, (list, tuple)) or not answers:
        problems.append("it has no answers")
    elif not all(isinstance(a, str) and a.strip() for a in answers):
        problems.append(f"an answer is empty or not text: {list(answers)!r}")
    if scoring not in SCORING_RULES:
        problems.append(f"scoring rule {scoring!r} is not one of {', '.join(SCORING_RULES)}")
    if problems:
        raise MalformedSample(f"sample {sid!r} cannot be scored: " + "; ".join(problems))
    answers = tuple(answers)
    if prompt is None:
        instruction = _field(sample, "instruction", "")
        question = _field(sample, "question", "")
        head = f"{instruction}\n\n" if instruction else ""
        prompt = f"{head}{context}\n\n{question}\n{_field(sample, 'answer_prefix', 'Answer:')}"
    target = _field(sample, "target") or " " + (answers[0] if scoring == "exact" else ", ".join(answers))
    if not isinstance(target, str) or not target.strip():
        raise MalformedSample(f"sample {sid!r}: the target continuation is empty")
    own = getattr(sample, "score", None)
    return PreparedSample(prompt, target, answers, scoring, _field(sample, "item_pattern", "") or "",
                          tuple(_field(sample, "candidates", ()) or ()), own if callable(own) else None)


# --------------------------------------------------------------------------- scoring rules
def score_prediction(prepared: PreparedSample, prediction: str) -> float:
    """Generated text scored by the sample's own score() when it has one, else by the long-context
    tasks' rules (tasks.longctx.score: exact / all_of / set), so every path scores alike."""
    if prepared.scorer is not None:
        return float(prepared.scorer(prediction))
    from tasks.longctx import score

    return float(score(prepared, prediction))


# --------------------------------------------------------------------------- methods per phase
def phase_methods(method: str, phase: str, budget: dict[str, Any]):
    """(prefill method, decode method): the one under test from `method`/`budget`, dense for the other."""
    from systems.lm.attention import make_method

    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}; got {phase!r}")
    if not isinstance(budget, dict):
        raise ValueError(f"budget must be a dict of the method's budget options; got {budget!r}")
    tested = make_method(method, phase, **budget)
    dense = make_method("dense")
    return (tested, dense) if phase == "prefill" else (dense, tested)


def _sparsity(value: torch.Tensor) -> float:
    return float(value.reshape(-1)[0])


# --------------------------------------------------------------------------- the passes
@dataclass
class PromptState:
    """What the answer tokens need from the prompt: each layer's q, k, v, the hidden state of the
    last prompt position (it predicts the first answer token), and the prefill sparsity per layer."""

    layers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    last_hidden: torch.Tensor  # (1, 1, d)
    sparsity: list[float]

    @property
    def length(self) -> int:
        return self.layers[0][1].shape[2]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.layers for t in layer)


@torch.no_grad()
def prompt_pass(decoder: Decoder, prompt_ids: Sequence[int], prefill) -> PromptState:
    """The prompt through every layer, attention by `prefill` (a PrefillMethod)."""
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
    pos = decoder.positions(torch.arange(ids.shape[1]))
    h = decoder.embed(ids)
    layers, sparsity = [], []
    for layer in range(decoder.n_layers):
        q, k, v = decoder.attention_inputs(layer, h, pos)
        result = prefill(q, k, v)
        sparsity.append(_sparsity(result.sparsity))
        layers.append((q, k, v))
        h = decoder.attention_output(layer, h, result.output.to(h.dtype))
    return PromptState(layers, h[:, -1:], sparsity)


@torch.no_grad()
def answer_pass(decoder: Decoder, state: PromptState, answer_ids: Sequence[int], decode) -> tuple[torch.Tensor, list[float]]:
    """Teacher-forced answer tokens: logits (T, vocab) predicting answer_ids, and the decode
    sparsity per layer of the T - 1 answer positions that attend (the first answer token is
    predicted by the prompt's last position)."""
    first = decoder.logits(state.last_hidden)[0]
    if len(answer_ids) < 2:
        return first.float(), []
    n_prompt = state.length
    ids = torch.tensor([list(answer_ids[:-1])], dtype=torch.long)
    pos = decoder.positions(torch.arange(n_prompt, n_prompt + ids.shape[1]))
    h = decoder.embed(ids)
    sparsity = []
    for layer, (q_prompt, k_prompt, v_prompt) in enumerate(state.layers):
        q, k, v = decoder.attention_inputs(layer, h, pos)
        step = decode.new_cache(q_prompt, k_prompt, v_prompt).attend(q, k, v)
        sparsity.append(_sparsity(step.sparsity))
        h = decoder.attention_output(layer, h, step.output.to(h.dtype))
    return torch.cat([first, decoder.logits(h)[0]]).float(), sparsity


@dataclass
class PassResult:
    logits: torch.Tensor  # (T_answer, vocab): the predictions of the answer tokens
    per_layer: list[float]  # realised sparsity of the phase under test, per layer


def teacher_forced_pass(decoder: Decoder, prompt_ids: Sequence[int], answer_ids: Sequence[int],
                        prefill, decode, phase: str, state: PromptState | None = None) -> PassResult:
    """One teacher-forced pass: prompt through `prefill`, answer positions through a `decode` cache
    of the prompt's keys/values (causal, so the prompt never sees the answer: computing the two
    parts one after the other is the same forward pass). `state`: a prompt pass to reuse."""
    if phase == "decode" and len(answer_ids) < 2:
        raise MalformedSample("the answer is a single token, so no answer token attends in the decode phase: "
                              "a decode method would change nothing; score this sample in the prefill phase")
    state = state or prompt_pass(decoder, prompt_ids, prefill)
    logits, decode_sparsity = answer_pass(decoder, state, answer_ids, decode)
    return PassResult(logits, state.sparsity if phase == "prefill" else decode_sparsity)


@torch.no_grad()
def greedy_generate(decoder: Decoder, prompt_ids: Sequence[int], prefill, decode, phase: str,
                    max_new_tokens: int, stop_ids: Iterable[int] = (),
                    state: PromptState | None = None) -> tuple[list[int], list[float]]:
    """Prefill, then greedy decoding one token at a time through each layer's decode cache."""
    stop = set(stop_ids)
    state = state or prompt_pass(decoder, prompt_ids, prefill)
    caches = [decode.new_cache(q, k, v) for q, k, v in state.layers]
    token = int(decoder.logits(state.last_hidden)[0, -1].argmax())
    generated = [token]
    while len(generated) < max_new_tokens and token not in stop:
        h = decoder.embed(torch.tensor([[token]]))
        pos = decoder.positions(torch.tensor([state.length + len(generated) - 1]))
        for layer in range(decoder.n_layers):
            q, k, v = decoder.attention_inputs(layer, h, pos)
            h = decoder.attention_output(layer, h, caches[layer].attend(q, k, v).output.to(h.dtype))
        token = int(decoder.logits(h[:, -1:])[0, -1].argmax())
        generated.append(token)
    if phase == "prefill":
        return generated, state.sparsity
    if len(generated) < 2:
        # The first token comes from the prefill pass; no decode step ran, nothing was sparse.
        return generated, [0.0] * decoder.n_layers
    return generated, [_sparsity(cache.sparsity) for cache in caches]


class DensePromptCache:
    """Keeps the last dense prompt pass, so scoring one sample under many decode methods (and the
    dense baseline) runs the prompt once: sweeps visit one sample's configurations in a row.
    Only dense prompt passes are kept (a sparse prefill differs per method and budget)."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = max_bytes
        self.decoder: Decoder | None = None
        self.prompt: tuple[int, ...] | None = None
        self.state: PromptState | None = None

    def get(self, decoder: Decoder, prompt_ids: Sequence[int], dense) -> PromptState:
        prompt = tuple(prompt_ids)
        if self.state is not None and self.decoder is decoder and self.prompt == prompt:
            return self.state
        state = prompt_pass(decoder, prompt, dense)
        keep = state.nbytes() <= self.max_bytes
        self.decoder, self.prompt, self.state = (decoder, prompt, state) if keep else (None, None, None)
        return state


def score_sample(decoder: Decoder, sample: Any, *, encode: Callable[[str], list[int]],
                 decode: Callable[[list[int]], str], bos: Sequence[int], answer_suffix: Sequence[int],
                 eos_ids: Iterable[int], max_context: int, method: str, phase: str,
                 budget: dict[str, Any], mode: str = "teacher-forced",
                 prompt_cache: DensePromptCache | None = None) -> LMScore:
    """Score one sample under `method` (with `budget`) in `phase`; see the module docstring.

    `bos` is prepended to the prompt; `answer_suffix` (e.g. <eos> for models trained to stop) is
    appended to the teacher-forced target; `eos_ids` stop greedy generation.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    prepared = prepare_sample(sample)
    prefill_method, decode_method = phase_methods(method, phase, budget)
    prompt_ids = list(bos) + encode(prepared.prompt)
    target_ids = encode(prepared.target)
    answer_ids = target_ids + list(answer_suffix)
    needed = len(prompt_ids) + len(answer_ids) + (GENERATION_MARGIN if mode == "generate" else 0)
    if needed > max_context:
        raise ContextTooLong(f"sample {getattr(sample, 'id', '?')!r} needs {needed} tokens (prompt "
                             f"{len(prompt_ids)}, answer {len(answer_ids)}"
                             f"{', margin %d' % GENERATION_MARGIN if mode == 'generate' else ''}) but the model's "
                             f"context is {max_context}; ask for shorter samples")
    started = time.perf_counter()
    state = None
    if prompt_cache is not None and getattr(prefill_method, "name", "") == "dense":
        state = prompt_cache.get(decoder, prompt_ids, prefill_method)
    if mode == "teacher-forced":
        result = teacher_forced_pass(decoder, prompt_ids, answer_ids, prefill_method, decode_method, phase, state)
        logprobs = torch.log_softmax(result.logits, dim=-1)
        gold = torch.tensor(answer_ids)
        predicted = result.logits.argmax(-1)
        score = float(bool((predicted == gold).all()))
        answer_logprob = float(logprobs.gather(1, gold[:, None]).sum())
        prediction = decode(predicted.tolist())
        per_layer = result.per_layer
    else:
        generated, per_layer = greedy_generate(decoder, prompt_ids, prefill_method, decode_method, phase,
                                               len(answer_ids) + GENERATION_MARGIN, eos_ids, state)
        prediction = decode(generated)
        score = score_prediction(prepared, prediction)
        answer_logprob = None
    seconds = time.perf_counter() - started
    sparsity = sum(per_layer) / len(per_layer) if per_layer else 0.0
    if not math.isfinite(sparsity):
        raise RuntimeError(f"non-finite realised sparsity {per_layer}")
    return LMScore(score=score, sparsity=sparsity, prediction=prediction, n_context_tokens=len(prompt_ids),
                   n_answer_tokens=len(answer_ids), seconds=seconds, per_layer=per_layer,
                   answer_logprob=answer_logprob)

"""The tiny models' tokenizer and their training stream (offline, seeded).

Tokenizer (`WordTokenizer`): small-word-level with byte fallback, so any text encodes losslessly.
Text is cut into pieces by one regex: a run of ASCII letters with at most one leading space
(" grass", "The"), a single digit, or any other single character. A piece found in the vocabulary
is one token; any other piece is spelled as its UTF-8 bytes (256 byte tokens). So numbers are
digit by digit with a space token before them (" 1234567" -> " " 1 2 3 4 5 6 7), and names the
vocabulary lacks are spelled in bytes (" QXZPL" -> " " Q X Z P L).
Vocabulary = 3 special tokens (<pad>, <bos>, <eos>) + 256 bytes + the word pieces occurring at
least 10 times in a fixed set of samples of every long-context task (`build_vocabulary`). Digits
stay single (digit pairs gave 210 token types to learn to copy instead of 11, and slowed learning
in trial runs). The vocabulary is stored with every checkpoint (tokenizer.json), so a later change
of the task generators never changes a trained model's tokenizer. The tokenizer object is a
callable text -> token count, as the task generators take it.

Training stream (`training_batch`): samples of the long-context tasks themselves
(tasks.longctx.generate, one code path for training and evaluation), at seeds from
TRAIN_SEED_BASE up, followed by the target and <eos>. Sweeps and tests use seeds below
TRAIN_SEED_BASE, and a sample's text is a function of (task, length, seed, index), so no evaluated
sample is ever a training sample. The models are specialists for these formats, not general LMs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from dataclasses import dataclass
from typing import Any, Sequence

from bench.errors import BenchError

PIECE = re.compile(r" ?[A-Za-z]+|\d|.", re.DOTALL)
WORD_PIECE = re.compile(r" ?[A-Za-z]+")
VOCAB_PIECE = WORD_PIECE
SPECIALS = ("<pad>", "<bos>", "<eos>")
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
BYTE_OFFSET = len(SPECIALS)
# Training samples use seeds >= this; evaluation seeds stay below it (see the module docstring).
TRAIN_SEED_BASE = 1_000_000

# --------------------------------------------------------------------------- tokenizer
class TokenizerError(BenchError, ValueError):
    """A tokenizer file that is malformed or ids outside the vocabulary."""


class WordTokenizer:
    """Word pieces from a fixed vocabulary, UTF-8 bytes for everything else (see module docstring)."""

    kind = "words-bytes-v1"

    def __init__(self, pieces: Sequence[str]):
        pieces = list(pieces)
        bad = [p for p in pieces if not isinstance(p, str) or not VOCAB_PIECE.fullmatch(p)]
        if bad or len(set(pieces)) != len(pieces):
            raise TokenizerError(f"vocabulary pieces must be distinct ASCII words with at most one leading "
                                 f"space; got {bad[:5] or 'duplicates'}")
        self.pieces = tuple(pieces)
        self.piece_ids = {piece: BYTE_OFFSET + 256 + i for i, piece in enumerate(pieces)}
        self.vocab_size = BYTE_OFFSET + 256 + len(pieces)
        self.pad_id, self.bos_id, self.eos_id = PAD_ID, BOS_ID, EOS_ID

    @classmethod
    def default(cls) -> "WordTokenizer":
        """The training tokenizer: word pieces that occur >= 10 times in a fixed generated corpus."""
        return cls(build_vocabulary())

    # ------------------------------------------------------------------ encode / decode
    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be str; got {type(text).__name__}")
        ids: list[int] = []
        get = self.piece_ids.get
        for piece in PIECE.findall(text):
            token = get(piece)
            if token is not None:
                ids.append(token)
                continue
            ids.extend(BYTE_OFFSET + b for b in piece.encode("utf-8"))
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    __call__ = count_tokens  # so the tokenizer itself can be handed to the task generators

    def decode(self, ids: Sequence[int], *, stop_at_eos: bool = True) -> str:
        out: list[str] = []
        pending = bytearray()
        first_piece = BYTE_OFFSET + 256
        for token in ids:
            token = int(token)
            if not 0 <= token < self.vocab_size:
                raise TokenizerError(f"token id {token} is outside the vocabulary (size {self.vocab_size})")
            if token == self.eos_id and stop_at_eos:
                break
            if token < BYTE_OFFSET:
                continue  # <pad>, <bos> carry no text
            if token < first_piece:
                pending.append(token - BYTE_OFFSET)
                continue
            if pending:
                out.append(pending.decode("utf-8", errors="replace"))
                pending.clear()
            out.append(self.pieces[token - first_piece])
        if pending:
            out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "specials": list(SPECIALS), "n_bytes": 256, "pieces": list(self.pieces)}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "WordTokenizer":
        if not isinstance(record, dict) or record.get("kind") != cls.kind:
            raise TokenizerError(f"tokenizer file is not a {cls.kind} tokenizer: kind={record.get('kind')!r}"
                                 if isinstance(record, dict) else "tokenizer file must hold a JSON object")
        if record.get("specials") != list(SPECIALS) or record.get("n_bytes") != 256:
            raise TokenizerError("tokenizer file has unexpected special tokens or byte count")
        pieces = record.get("pieces")
        if not isinstance(pieces, list):
            raise TokenizerError("tokenizer file: 'pieces' must be a list of strings")
        return cls(pieces)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- training stream
@dataclass(frozen=True)
class TaskDraw:
    """One entry of a training mix: a long-context task (tasks.longctx name) with its options,
    drawn with probability proportional to `weight`."""

    task: str
    weight: float
    options: tuple[tuple[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "weight": self.weight, "options": dict(self.options)}


def check_mix(mix: Sequence[TaskDraw]) -> None:
    from tasks.longctx import TASKS

    unknown = sorted({d.task for d in mix} - set(TASKS))
    if not mix or unknown or any(d.weight < 0 for d in mix) or sum(d.weight for d in mix) <= 0:
        raise BenchError(f"a training mix must weigh known tasks ({', '.join(TASKS)}) with non-negative "
                         f"weights; got {[d.to_json() for d in mix]}" + (f" (unknown: {unknown})" if unknown else ""))


def training_sample(rng: random.Random, draw: TaskDraw, n_tokens: int, tok: "WordTokenizer"):
    """One sample of `draw.task` at `n_tokens` (raised to the task's minimum), at a fresh training seed."""
    from tasks.longctx import LengthTooShort, generate

    seed = rng.randrange(TRAIN_SEED_BASE, 2 ** 62)
    try:
        return generate(draw.task, n_tokens, seed=seed, tokenizer=tok, **dict(draw.options))[0]
    except LengthTooShort:
        return generate(draw.task, minimum_length(draw, tok), seed=seed, tokenizer=tok, **dict(draw.options))[0]


_MINIMUM: dict[tuple, int] = {}


def minimum_length(draw: TaskDraw, tok: "WordTokenizer") -> int:
    """The shortest prompt the task's fixed parts allow (instruction, needles, question), plus room
    for a few haystack units."""
    from tasks.longctx import LengthTooShort, generate

    key = (draw.task, draw.options, tok.sha256())
    if key not in _MINIMUM:
        try:
            generate(draw.task, 1, seed=0, tokenizer=tok, **dict(draw.options))
            _MINIMUM[key] = 1
        except LengthTooShort as exc:
            if exc.minimum is None:
                raise BenchError(f"training mix: {exc}; raise the phase's min_tokens") from None
            _MINIMUM[key] = exc.minimum + 16
    return _MINIMUM[key]


def encode_sample(sample: Any, tok: "WordTokenizer") -> tuple[list[int], int]:
    """Token ids <bos> prompt target <eos>, and the index where the target starts."""
    prompt = [tok.bos_id] + tok.encode(sample.prompt)
    return prompt + tok.encode(sample.target) + [tok.eos_id], len(prompt)


def training_batch(rng: random.Random, mix: Sequence[TaskDraw], n_tokens: int, batch: int,
                   tok: "WordTokenizer") -> list[tuple[list[int], int]]:
    """`batch` encoded samples drawn from `mix` at about `n_tokens` prompt tokens each."""
    weights = [d.weight for d in mix]
    return [encode_sample(training_sample(rng, rng.choices(mix, weights)[0], n_tokens, tok), tok)
            for _ in range(batch)]


def _count_pieces(text: str) -> int:
    """Tokens as if every piece were in the vocabulary (sizes the vocabulary corpus)."""
    return len(PIECE.findall(text))


@functools.lru_cache(maxsize=4)
def build_vocabulary(n_per_task: int = 40, min_count: int = 10, n_tokens: int = 512) -> tuple[str, ...]:
    """Word pieces occurring at least `min_count` times in `n_per_task` samples of every
    long-context task (fixed seeds). Random names and values (5-letter variables, pseudo-words,
    hex) stay below the threshold and are spelled in bytes."""
    from tasks.longctx import TASKS, generate

    counts: dict[str, int] = {}
    for task in sorted(TASKS):
        for sample in generate(task, n_tokens, seed=0, n_samples=n_per_task, tokenizer=_count_pieces):
            for piece in PIECE.findall(sample.prompt + sample.target):
                if WORD_PIECE.fullmatch(piece):
                    counts[piece] = counts.get(piece, 0) + 1
    return tuple(sorted(piece for piece, count in counts.items() if count >= min_count))

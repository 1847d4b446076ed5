"""RULER-style synthetic tasks (Hsieh et al. 2024), generated offline.

- Needle in a haystack: needles "One of the special magic numbers for <key> is: <value>." hidden at
  random depths of a haystack; the question asks for the values of one or more keys.
  niah_single (1 key, 1 value), niah_multikey (4 keys, 1 asked), niah_multivalue (1 key,
  4 values), niah_multiquery (4 keys, all asked). Haystacks: "noise" (RULER's repeated "The grass
  is green..."), "prose" (procedural sentences, standing in for RULER's essays, which are not
  shipped offline), "needles" (distractor needles with other keys). Scoring: all_of.
- Variable tracking (vt): chains "VAR ABCDE = 12345", "VAR FGHIJ = VAR ABCDE", ... (num_hops links)
  scattered in noise, in order; the question asks for every variable holding the first chain's
  value. Extra chains (num_chains > 1) are distractors. Scoring: set (over the sample's variables).
- Common words extraction (cwe): a numbered list where num_common words appear common_freq times
  and every other word rare_freq times; the question asks for the num_common most frequent words.
  Words are pronounceable pseudo-words (no word list ships offline). Scoring: set (over the list's
  words). Exact-length padding appends a few extra occurrences of rare words (at most one each,
  so they stay rarer than the common words).
"""

from __future__ import annotations

import uuid
from typing import Iterator

from tasks.longctx import (LengthTooShort, TokenCounter, finish, fit_to_length, format_prompt,
                           sample_rng)

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

KEY_ADJECTIVES = ("amber", "brisk", "calm", "dusty", "eager", "faint", "gentle", "hollow", "icy", "jolly",
                  "keen", "lucky", "mellow", "narrow", "odd", "pale", "quiet", "rapid", "silent", "tidy",
                  "upper", "vivid", "wild", "young", "zesty", "bold", "crisp", "dim", "fierce", "grand")
KEY_NOUNS = ("anchor", "badger", "candle", "dragon", "engine", "falcon", "garden", "harbor", "island",
             "jacket", "kettle", "ladder", "meadow", "needle", "orchard", "pepper", "quarry", "river",
             "saddle", "tunnel", "umbrella", "valley", "walnut", "yarrow", "zephyr", "beacon", "cellar",
             "desert", "ember", "forest")

PROSE_SUBJECTS = ("The old miller", "A young sailor", "The village council", "Her neighbour", "The baker",
                  "A travelling merchant", "The schoolteacher", "My grandfather", "The night watchman",
                  "A quiet student", "The harbour master", "The gardener", "An elderly poet", "The carpenter",
                  "A curious child", "The innkeeper", "The blacksmith", "A weary pilgrim", "The clerk",
                  "The fisherman")
PROSE_VERBS = ("repaired", "painted", "carried", "counted", "forgot", "described", "cleaned", "measured",
               "borrowed", "sketched", "polished", "mended", "visited", "admired", "questioned", "sold",
               "noticed", "wrapped", "followed", "remembered")
PROSE_OBJECTS = ("the wooden gate", "a basket of apples", "the broken clock", "an old map", "the stone bridge",
                 "a pair of boots", "the chapel roof", "a letter from abroad", "the garden wall", "a copper kettle",
                 "the long table", "a box of candles", "the fishing nets", "a faded painting", "the iron stove",
                 "a bundle of wool", "the town records", "a silver spoon", "the narrow stairs", "a jar of honey")
PROSE_TAILS = ("before the rain came", "on a quiet morning", "while the bells rang", "after the market closed",
               "in the late afternoon", "without saying a word", "as the tide turned", "during the long winter",
               "with great patience", "for the third time that week", "under the grey sky",
               "by the light of a lamp", "at the edge of town", "as everyone watched", "in a hurry",
               "with some reluctance", "near the old mill", "on the first day of spring", "to nobody's surprise",
               "once the snow had melted")


# --------------------------------------------------------------------------- fillers
class Filler:
    """A prefix-stable stream of haystack units: the first n units never depend on how many are asked."""

    def __init__(self, kind: str, rng, avoid_keys: set[str] = frozenset(), value_type: str = "numbers"):
        if kind not in ("noise", "prose", "needles"):
            raise ValueError(f"haystack must be 'noise', 'prose' or 'needles'; got {kind!r}")
        self.kind, self.rng, self.avoid, self.value_type = kind, rng, set(avoid_keys), value_type
        self.units: list[str] = []

    def _next(self) -> str:
        if self.kind == "noise":
            return NOISE
        if self.kind == "prose":
            r = self.rng
            return f"{r.choice(PROSE_SUBJECTS)} {r.choice(PROSE_VERBS)} {r.choice(PROSE_OBJECTS)} {r.choice(PROSE_TAILS)}."
        key = make_key(self.rng)
        while key in self.avoid:
            key = make_key(self.rng)
        return needle_sentence(key, make_value(self.rng, self.value_type), self.value_type)

    def take(self, n: int) -> list[str]:
        while len(self.units) < n:
            self.units.append(self._next())
        return self.units[:n]

    @property
    def separator(self) -> str:
        return "\n" if self.kind == "needles" else " "


def pad_words(filler: Filler, rng) -> Iterator[str]:
    """Words to fill the last few tokens: noise for needle haystacks (no half needles), else the
    haystack's own kind of sentences."""
    source = Filler("noise" if filler.kind == "needles" else filler.kind, rng)
    for i in range(64):
        yield from source.take(i + 1)[i].split()


def insert_at_depths(units: list[str], inserts: list[tuple[float, str]]) -> list[str]:
    """Put each (depth in [0, 1], text) between units at position round(depth * len(units)); texts
    at the same position keep the order of their depths (then the given order), so the text order
    is always the depth order."""
    n = len(units)
    out, placed = [], sorted(((round(d * n), d, i, text) for i, (d, text) in enumerate(inserts)))
    cursor = 0
    for position, _, _, text in placed:
        out.extend(units[cursor:position])
        cursor = max(cursor, position)
        out.append(text)
    out.extend(units[cursor:])
    return out


# --------------------------------------------------------------------------- needles
def make_key(rng) -> str:
    return f"{rng.choice(KEY_ADJECTIVES)}-{rng.choice(KEY_NOUNS)}"


def make_value(rng, value_type: str) -> str:
    if value_type == "numbers":
        return str(rng.randint(1_000_000, 9_999_999))
    if value_type == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if value_type == "words":
        return make_key(rng)
    raise ValueError(f"value_type must be 'numbers', 'uuids' or 'words'; got {value_type!r}")


def needle_sentence(key: str, value: str, value_type: str) -> str:
    return f"One of the special magic {value_type} for {key} is: {value}."


def _niah(task: str, n_tokens: int, seed: int, index: int, counter: TokenCounter, *, num_keys: int,
          num_values: int, num_queries: int, haystack: str, value_type: str) -> object:
    for name, value in (("num_keys", num_keys), ("num_values", num_values), ("num_queries", num_queries)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{task}: {name} must be a positive integer; got {value!r}")
    if num_queries > num_keys:
        raise ValueError(f"{task}: num_queries ({num_queries}) cannot exceed num_keys ({num_keys})")
    if num_keys > 100:
        raise ValueError(f"{task}: at most 100 keys (got {num_keys})")
    make_value(sample_rng(task, 0, 0, 0), value_type)  # validates value_type early
    rng = sample_rng(task, n_tokens, seed, index)
    keys: list[str] = []
    while len(keys) < num_keys:
        key = make_key(rng)
        if key not in keys:
            keys.append(key)
    values: dict[str, list[str]] = {}
    used: set[str] = set(keys)
    for key in keys:
        values[key] = []
        while len(values[key]) < num_values:
            value = make_value(rng, value_type)
            if value not in used:
                used.add(value)
                values[key].append(value)
    depths = {(k, v): rng.random() for k in keys for v in values[k]}
    needles = [(depths[k, v], needle_sentence(k, v, value_type)) for k in keys for v in values[k]]
    queried = rng.sample(keys, num_queries)
    # Each key's values in the order they appear in the text: the canonical target must be
    # predictable from the prompt, or teacher-forced exact match would score the order, not recall.
    answers = [v for k in queried for v in sorted(values[k], key=lambda value: depths[k, value])]

    plural = len(answers) > 1
    noun = value_type if plural else value_type[:-1]
    asked = queried[0] if num_queries == 1 else ", ".join(queried[:-1]) + " and " + queried[-1]
    instruction = (f"{'Some' if plural else 'A'} special magic {noun} {'are' if plural else 'is'} hidden within "
                   f"the following text. Make sure to memorize {'them' if plural else 'it'}. I will quiz you "
                   f"about the {noun} afterwards.")
    question = (f"What {'are all the' if plural else 'is the'} special magic {noun} for {asked} mentioned "
                f"in the provided text?")
    answer_prefix = f"The special magic {noun} for {asked} mentioned in the provided text {'are' if plural else 'is'}"

    filler = Filler(haystack, sample_rng(task, n_tokens, seed, index, "haystack"), used, value_type)

    def context(n: int, pad: str) -> str:
        units = insert_at_depths(filler.take(n), needles)
        return filler.separator.join(units + ([pad] if pad else []))

    n, pad, tokens = fit_to_length(lambda n, pad: format_prompt(instruction, context(n, pad), question, answer_prefix),
                                   n_tokens, counter, task, pad_words(filler, sample_rng(task, n_tokens, seed, index, "pad")))
    return finish(task, n_tokens, seed, index, counter, instruction=instruction, context=context(n, pad),
                  question=question, answer_prefix=answer_prefix, answers=answers, scoring="all_of",
                  target=" " + ", ".join(answers) + ".", tokens=tokens,
                  metadata={"keys": keys, "queried": queried, "values": values, "haystack": haystack,
                            "depths": [round(d, 4) for d, _ in needles], "haystack_units": n})


def niah_single(task, n_tokens, seed, index, counter, *, haystack="noise", value_type="numbers"):
    return _niah(task, n_tokens, seed, index, counter, num_keys=1, num_values=1, num_queries=1,
                 haystack=haystack, value_type=value_type)


def niah_multikey(task, n_tokens, seed, index, counter, *, num_keys=4, haystack="prose", value_type="numbers"):
    return _niah(task, n_tokens, seed, index, counter, num_keys=num_keys, num_values=1, num_queries=1,
                 haystack=haystack, value_type=value_type)


def niah_multivalue(task, n_tokens, seed, index, counter, *, num_values=4, haystack="prose", value_type="numbers"):
    return _niah(task, n_tokens, seed, index, counter, num_keys=1, num_values=num_values, num_queries=1,
                 haystack=haystack, value_type=value_type)


def niah_multiquery(task, n_tokens, seed, index, counter, *, num_keys=4, haystack="prose", value_type="numbers"):
    return _niah(task, n_tokens, seed, index, counter, num_keys=num_keys, num_values=1, num_queries=num_keys,
                 haystack=haystack, value_type=value_type)


# --------------------------------------------------------------------------- variable tracking
def variable_tracking(task, n_tokens, seed, index, counter, *, num_chains: int = 1, num_hops: int = 4):
    for name, value in (("num_chains", num_chains), ("num_hops", num_hops)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{task}: {name} must be a positive integer; got {value!r}")
    rng = sample_rng(task, n_tokens, seed, index)
    names: list[str] = []
    while len(names) < num_chains * (num_hops + 1):
        name = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))
        if name not in names:
            names.append(name)
    chain_values = rng.sample(range(10_000, 100_000), num_chains)
    statements: list[tuple[float, str]] = []
    chains = []
    for c in range(num_chains):
        chain = names[c * (num_hops + 1):(c + 1) * (num_hops + 1)]
        chains.append(chain)
        depths = sorted(rng.random() for _ in chain)  # sorted: each link comes after the one it copies
        texts = [f"VAR {chain[0]} = {chain_values[c]}."] + [f"VAR {chain[i + 1]} = VAR {chain[i]}."
                                                            for i in range(num_hops)]
        statements += list(zip(depths, texts))
    value = chain_values[0]
    instruction = "Memorize and track the chain(s) of variable assignment hidden in the following text."
    question = f"Question: Find all variables that are assigned the value {value} in the text above."
    answer_prefix = (f"Answer: According to the chain(s) of variable assignment in the text above, "
                     f"{num_hops + 1} variables are assigned the value {value}, they are:")

    def context(n: int, pad: str) -> str:
        return " ".join(insert_at_depths([NOISE] * n, statements) + ([pad] if pad else []))

    noise_words = (w for _ in range(64) for w in NOISE.split())
    n, pad, tokens = fit_to_length(lambda n, pad: format_prompt(instruction, context(n, pad), question, answer_prefix),
                                   n_tokens, counter, task, noise_words)
    return finish(task, n_tokens, seed, index, counter, instruction=instruction, context=context(n, pad),
                  question=question, answer_prefix=answer_prefix, answers=chains[0], scoring="set",
                  target=" " + " ".join(chains[0]), tokens=tokens, item_pattern=r"\b[A-Z]{5}\b",
                  candidates=names, metadata={"value": value, "chains": chains, "chain_values": chain_values,
                                              "noise_units": n})


# --------------------------------------------------------------------------- common words
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"


def pseudo_word(rng) -> str:
    syllables = rng.choice((2, 2, 3))
    return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(syllables)) + rng.choice(("", "n", "r", "l"))


class WordStream:
    """Distinct pseudo-words, prefix-stable."""

    def __init__(self, rng):
        self.rng, self.words, self.seen = rng, [], set()

    def take(self, n: int) -> list[str]:
        while len(self.words) < n:
            word = pseudo_word(self.rng)
            if word not in self.seen:
                self.seen.add(word)
                self.words.append(word)
        return self.words[:n]


def common_words(task, n_tokens, seed, index, counter, *, num_common: int = 10, common_freq: int | None = None,
                 rare_freq: int = 3):
    for name, value in (("num_common", num_common), ("rare_freq", rare_freq)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{task}: {name} must be a positive integer; got {value!r}")
    if common_freq is not None and (not isinstance(common_freq, int) or common_freq < rare_freq + 2):
        raise ValueError(f"{task}: common_freq must be an integer >= rare_freq + 2 = {rare_freq + 2} (so padding "
                         f"cannot tie a rare word with a common one); got {common_freq!r}")
    words = WordStream(sample_rng(task, n_tokens, seed, index, "words"))
    common = words.take(num_common)
    instruction = ("Below is a numbered list of words. In these words, some appear more often than others. "
                   "Memorize the ones that appear most often.")
    question = f"Question: What are the {num_common} most common words in the above list?"
    answer_prefix = f"Answer: The top {num_common} words that appear most often in the list are:"

    def listing(n: int, pad: str, freq: int) -> str:
        rare = words.take(num_common + n)[num_common:]
        entries = common * freq + rare * rare_freq
        sample_rng(task, n_tokens, seed, index, f"order{n}").shuffle(entries)
        entries += pad.split()  # padding: extra occurrences of distinct rare words, appended
        return "\n".join(f"{i + 1}. {w}" for i, w in enumerate(entries))

    def build(n: int, pad: str, freq: int) -> str:
        return format_prompt(instruction, listing(n, pad, freq), question, answer_prefix)

    if common_freq is None:  # the most repetitions (<= 30) for which common words use <= 40% of the length
        common_freq = rare_freq + 2
        for freq in range(30, rare_freq + 1, -1):
            if counter(build(0, "", freq)) <= 0.4 * n_tokens:
                common_freq = freq
                break
    if counter(build(0, "", common_freq)) > n_tokens:
        raise LengthTooShort(f"{task}: {num_common} common words x {common_freq} take more than n_tokens="
                             f"{n_tokens}; lower num_common/common_freq/rare_freq or ask for more tokens")

    # Fit the number of rare words, then pad with one extra occurrence of some of them (never a
    # short non-word pad: the list must stay a list), so the length may end a token or two short.
    n, _, _ = fit_to_length(lambda n, pad: build(n, pad, common_freq), n_tokens, counter, task, iter(()))
    pad, tokens = "", counter(build(n, "", common_freq))
    for word in words.take(num_common + n)[num_common:]:
        trial = f"{pad} {word}".strip()
        count = counter(build(n, trial, common_freq))
        if count > n_tokens:
            break
        pad, tokens = trial, count
        if tokens == n_tokens:
            break
    entries = listing(n, pad, common_freq)
    return finish(task, n_tokens, seed, index, counter, instruction=instruction, context=entries,
                  question=question, answer_prefix=answer_prefix, answers=common, scoring="set",
                  target=" " + ", ".join(common) + ".", tokens=tokens, item_pattern=r"\b[a-z]+\b",
                  candidates=words.take(num_common + n), metadata={"common_freq": common_freq, "rare_freq": rare_freq,
                                                                   "rare_words": n, "padding_words": len(pad.split())})

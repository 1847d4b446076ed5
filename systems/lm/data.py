"""The tiny models' tokenizer and their synthetic long-context training data (offline, seeded).

Tokenizer (`WordTokenizer`): small-word-level with byte fallback, so any text encodes losslessly.
Text is cut into pieces by one regex: a run of ASCII letters with at most one leading space
(" grass", "The"), a single digit, or any other single character. A piece found in the vocabulary
is one token; any other piece is spelled as its UTF-8 bytes (256 byte tokens). So numbers are
digit by digit with a space token before them (" 1234567" -> " " 1 2 3 4 5 6 7), and names the
vocabulary lacks are spelled in bytes (" QXZPL" -> " " Q X Z P L).
Vocabulary = 3 special tokens (<pad>, <bos>, <eos>) + 256 bytes + the word pieces occurring at
least 10 times in a fixed generated corpus (`build_vocabulary`). Digits stay single: in trial runs
with digit pairs (" 12" 34 56 7: 210 token types to learn to copy instead of 11) a 0.2M model had
not begun retrieving single-needle numbers after 400-600 steps, while with single digits it did
after ~400 (indicative only: one seed each). The vocabulary is
stored with every checkpoint (tokenizer.json), so a later change of the generators never changes
a trained model's tokenizer. `count_tokens(text)` is the number of tokens of `text` without
<bos>/<eos>; the tokenizer object itself is that callable, for the task generators.

Training data: prompts in the formats of RULER-style tasks (needle in a haystack with one or
several keys, values and queries, over noise / prose / distractor-needle haystacks; variable
tracking; story retrieval), followed by the answer and <eos>. The templates follow the long-context
task generators (tasks/longctx) on purpose, and the word pools overlap theirs: the models are
specialists for those formats, not general LMs. Values (numbers, names, chain variables) are
fresh random draws every example. Examples come in parts (the haystack units) so training can
insert position gaps between them (`stretched_positions`). Everything is drawn from
random.Random(seed), so a batch stream is a pure function of its seed.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from bench.errors import BenchError

PIECE = re.compile(r" ?[A-Za-z]+|\d|.", re.DOTALL)
WORD_PIECE = re.compile(r" ?[A-Za-z]+")
VOCAB_PIECE = WORD_PIECE
SPECIALS = ("<pad>", "<bos>", "<eos>")
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
BYTE_OFFSET = len(SPECIALS)

# --------------------------------------------------------------------------- word pools
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

KEY_ADJECTIVES = (
    "amber", "brisk", "calm", "dusty", "eager", "faint", "gentle", "hollow", "icy", "jolly", "keen", "lucky",
    "mellow", "narrow", "odd", "pale", "quiet", "rapid", "silent", "tidy", "upper", "vivid", "wild", "young",
    "zesty", "bold", "crisp", "dim", "fierce", "grand", "bright", "cold", "dark", "early", "fancy", "golden",
    "happy", "idle", "lazy", "merry", "noble", "plain", "proud", "rough", "sharp", "shy", "sleepy", "small",
    "smooth", "soft", "sour", "steady", "strange", "sweet", "swift", "tall", "tiny", "warm", "wise", "wooden")
KEY_NOUNS = (
    "anchor", "badger", "candle", "dragon", "engine", "falcon", "garden", "harbor", "island", "jacket", "kettle",
    "ladder", "meadow", "needle", "orchard", "pepper", "quarry", "river", "saddle", "tunnel", "umbrella",
    "valley", "walnut", "yarrow", "zephyr", "beacon", "cellar", "desert", "ember", "forest", "apple", "arrow",
    "basket", "bottle", "bridge", "button", "castle", "cloud", "copper", "coral", "feather", "flower", "fox",
    "glacier", "hammer", "lantern", "lemon", "marble", "mirror", "moon", "otter", "owl", "pebble", "pillow",
    "rabbit", "rocket", "shadow", "spider", "thunder", "tiger")
PROSE_SUBJECTS = ("The old miller", "A young sailor", "The village council", "Her neighbour", "The baker",
                  "A travelling merchant", "The schoolteacher", "My grandfather", "The night watchman",
                  "A quiet student", "The harbour master", "The gardener", "An elderly poet", "The carpenter",
                  "A curious child", "The innkeeper", "The blacksmith", "A weary pilgrim", "The clerk",
                  "The fisherman", "My sister", "The doctor", "A tired farmer", "The painter")
PROSE_VERBS = ("repaired", "painted", "carried", "counted", "forgot", "described", "cleaned", "measured",
               "borrowed", "sketched", "polished", "mended", "visited", "admired", "questioned", "sold",
               "noticed", "wrapped", "followed", "remembered", "found", "lost", "opened", "closed")
PROSE_OBJECTS = ("the wooden gate", "a basket of apples", "the broken clock", "an old map", "the stone bridge",
                 "a pair of boots", "the chapel roof", "a letter from abroad", "the garden wall", "a copper kettle",
                 "the long table", "a box of candles", "the fishing nets", "a faded painting", "the iron stove",
                 "a bundle of wool", "the town records", "a silver spoon", "the narrow stairs", "a jar of honey",
                 "the green door", "a heavy book")
PROSE_TAILS = ("before the rain came", "on a quiet morning", "while the bells rang", "after the market closed",
               "in the late afternoon", "without saying a word", "as the tide turned", "during the long winter",
               "with great patience", "for the third time that week", "under the grey sky",
               "by the light of a lamp", "at the edge of town", "as everyone watched", "in a hurry",
               "with some reluctance", "near the old mill", "on the first day of spring", "to nobody's surprise",
               "once the snow had melted", "late at night", "in the early evening")
PROTAGONISTS = ("Arion", "Mira", "Tobias", "Selene", "Corin", "Liora", "Edric", "Nessa", "Bram", "Ysolde",
                "Fenn", "Talia", "Oswin", "Rhea", "Dorian", "Ilse", "Anna", "Otto", "Lena", "Hugo")
STORY_PLACES = ("the old lighthouse", "the river market", "the salt mines", "the northern pass", "the abbey ruins",
                "the harbour town", "the willow ford", "the copper hills", "the border fort", "the sunken library",
                "the fishing village", "the high moor", "the amber forest", "the stone circle", "the royal gardens",
                "the windmill farm", "the quarry camp", "the misty lake", "the crossroads inn", "the glass tower",
                "the desert well", "the pine valley", "the silver bridge", "the old observatory", "the east gate",
                "the island monastery", "the frozen waterfall", "the spice bazaar", "the hunting lodge",
                "the clock square", "the marsh village", "the cliff caves", "the orchard estate", "the shipyard")
STORY_PEOPLE = ("Oona", "Garrick", "Pell", "Marisol", "Hugo", "Wren", "Anselm", "Kestra", "Lucan", "Imelda",
                "Rowan", "Saskia", "Quill", "Thea", "Juniper", "Cassius", "Delphine", "Ezra", "Fiora", "Gideon",
                "Hester", "Ivo", "Konrad", "Lark", "Magnus", "Nell", "Orrin", "Petra", "Rufus", "Sable")
STORY_ROLES = ("weaver", "blacksmith", "fisherman", "baker", "ferryman", "herbalist", "monk", "trader",
               "shepherd", "innkeeper", "carpenter", "potter", "scribe", "miller", "gardener", "soldier", "singer")
ITEM_ADJECTIVES = ("blue", "crimson", "golden", "green", "silver", "black", "white", "amber", "violet", "rusty",
                   "tiny", "heavy", "ancient", "polished", "carved", "painted", "cracked", "plain", "ornate")
ITEM_MATERIALS = ("copper", "oak", "glass", "leather", "iron", "bone", "silk", "clay", "brass", "stone", "wool")
ITEM_NOUNS = ("lantern", "compass", "flute", "dagger", "goblet", "mirror", "key", "box", "bell", "bracelet",
              "spoon", "whistle", "kettle", "comb", "locket", "pipe", "medallion", "hourglass", "inkwell")
STORY_FILLERS = ("The road to {place} was longer than {P} had expected.", "A cold wind blew across {place} all day.",
                 "{P} stopped to watch the clouds drift over the hills.", "The people of {place} were busy.",
                 "Somewhere nearby, a dog barked at the passing carts.", "{P} drank some water and rested.",
                 "The smell of bread and smoke hung in the air.", "Children were playing near the well.",
                 "{P} wrote a few lines in a small travel journal.", "A light rain began to fall and then stopped.",
                 "{P} thought about home for a moment.", "The evening bells rang somewhere in the distance.")

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


# --------------------------------------------------------------------------- training examples
@dataclass(frozen=True)
class Example:
    """One training example: the prompt, cut into parts, and its answer (the text after the prompt).

    The prompt is "".join(parts); each part after the first starts with its separator, so parts
    tokenize exactly as the whole prompt does, and a cut between parts is where position gaps may go
    (see `stretched_positions`)."""

    kind: str
    parts: tuple[str, ...]
    target: str

    @property
    def prompt(self) -> str:
        return "".join(self.parts)


def _assemble(kind: str, instruction: str, units: list[str], sep: str, question: str, answer_prefix: str,
              target: str) -> Example:
    """Parts of format_prompt(instruction, sep.join(units), question, answer_prefix)."""
    head = f"{instruction}\n\n" if instruction else ""
    parts = [head + units[0]] + [sep + unit for unit in units[1:]] + [f"\n\n{question}\n{answer_prefix}"]
    return Example(kind, tuple(parts), target)


def _fill(units: Iterator[str], budget: int, tok: WordTokenizer) -> list[str]:
    """Take units until their token count reaches `budget` (each counted alone, plus a separator)."""
    out, used = [], 0
    for unit in units:
        cost = tok.count_tokens(unit) + 1
        if used + cost > budget:
            break
        out.append(unit)
        used += cost
    return out


def _insert(units: list[str], inserts: list[tuple[float, str]]) -> list[str]:
    """Put each (depth in [0, 1], text) between units at round(depth * len(units)), in order."""
    n = len(units)
    placed = sorted((round(d * n), i, text) for i, (d, text) in enumerate(inserts))
    out, cursor = [], 0
    for position, _, text in placed:
        out.extend(units[cursor:position])
        cursor = max(cursor, position)
        out.append(text)
    return out + units[cursor:]


def _key(rng: random.Random) -> str:
    if rng.random() < 0.1:  # some keys outside the vocabulary, spelled in bytes
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 7))) + "-" + \
            rng.choice(KEY_NOUNS)
    return f"{rng.choice(KEY_ADJECTIVES)}-{rng.choice(KEY_NOUNS)}"


def _value(rng: random.Random, value_type: str) -> str:
    if value_type == "numbers":
        return str(rng.randint(1_000_000, 9_999_999))
    if value_type == "words":
        return _key(rng)
    return "-".join("".join(rng.choice("0123456789abcdef") for _ in range(n)) for n in (8, 4, 4, 4, 12))


def _noise_units(rng: random.Random) -> Iterator[str]:
    while True:
        yield NOISE


def _prose_units(rng: random.Random) -> Iterator[str]:
    while True:
        yield (f"{rng.choice(PROSE_SUBJECTS)} {rng.choice(PROSE_VERBS)} {rng.choice(PROSE_OBJECTS)} "
               f"{rng.choice(PROSE_TAILS)}.")


def niah(rng: random.Random, n_tokens: int, tok: WordTokenizer,
         shapes: Sequence[str] = ("single", "single", "multikey", "multivalue", "multiquery"),
         value_weights: Sequence[float] = (0.8, 0.1, 0.1),
         haystacks: Sequence[str] | None = None) -> Example:
    """RULER needle in a haystack: 1-4 keys, 1-4 values per key, one or all keys asked; values are
    7-digit numbers, words or UUIDs in proportion `value_weights`."""
    shape = rng.choice(shapes)
    num_keys = 1 if shape in ("single", "multivalue") else rng.randint(2, 4)
    num_values = rng.randint(2, 4) if shape == "multivalue" else 1
    num_queries = num_keys if shape == "multiquery" else 1
    value_type = rng.choices(("numbers", "words", "uuids"), value_weights)[0]
    if haystacks is None:
        haystacks = ("noise", "prose", "needles") if shape != "single" else ("noise", "noise", "prose")
    haystack = rng.choice(haystacks)
    keys: list[str] = []
    while len(keys) < num_keys:
        key = _key(rng)
        if key not in keys:
            keys.append(key)
    used = set(keys)
    values: dict[str, list[str]] = {}
    for key in keys:
        values[key] = []
        while len(values[key]) < num_values:
            value = _value(rng, value_type)
            if value not in used:
                used.add(value)
                values[key].append(value)
    needles = [(rng.random(), f"One of the special magic {value_type} for {k} is: {v}.") for k in keys for v in values[k]]
    queried = rng.sample(keys, num_queries)
    answers = [v for k in queried for v in values[k]]
    plural = len(answers) > 1
    noun = value_type if plural else value_type[:-1]
    asked = queried[0] if num_queries == 1 else ", ".join(queried[:-1]) + " and " + queried[-1]
    instruction = (f"{'Some' if plural else 'A'} special magic {noun} {'are' if plural else 'is'} hidden within "
                   f"the following text. Make sure to memorize {'them' if plural else 'it'}. I will quiz you "
                   f"about the {noun} afterwards.")
    question = (f"What {'are all the' if plural else 'is the'} special magic {noun} for {asked} mentioned "
                f"in the provided text?")
    answer_prefix = f"The special magic {noun} for {asked} mentioned in the provided text {'are' if plural else 'is'}"
    fixed = tok.count_tokens(format_prompt(instruction, "", question, answer_prefix)) + \
        sum(tok.count_tokens(text) + 1 for _, text in needles)
    if haystack == "needles":
        def distractors() -> Iterator[str]:
            while True:
                key = _key(rng)
                if key not in used:
                    yield f"One of the special magic {value_type} for {key} is: {_value(rng, value_type)}."
        units, sep = _fill(distractors(), n_tokens - fixed, tok), "\n"
    else:
        source = _noise_units(rng) if haystack == "noise" else _prose_units(rng)
        units, sep = _fill(source, n_tokens - fixed, tok), " "
    return _assemble("niah_" + shape, instruction, _insert(units, needles), sep, question, answer_prefix,
                     " " + ", ".join(answers) + ".")


def variable_tracking(rng: random.Random, n_tokens: int, tok: WordTokenizer) -> Example:
    """RULER variable tracking: chains VAR X = 12345, VAR Y = VAR X, ... in noise; 1-2 chains."""
    num_chains, num_hops = rng.choice((1, 1, 2)), rng.randint(1, 4)
    names: list[str] = []
    while len(names) < num_chains * (num_hops + 1):
        name = "".join(rng.choice(string.ascii_uppercase) for _ in range(5))
        if name not in names:
            names.append(name)
    chain_values = rng.sample(range(10_000, 100_000), num_chains)
    statements = []
    chains = []
    for c in range(num_chains):
        chain = names[c * (num_hops + 1):(c + 1) * (num_hops + 1)]
        chains.append(chain)
        depths = sorted(rng.random() for _ in chain)
        texts = [f"VAR {chain[0]} = {chain_values[c]}."] + [f"VAR {chain[i + 1]} = VAR {chain[i]}." for i in range(num_hops)]
        statements += list(zip(depths, texts))
    value = chain_values[0]
    instruction = "Memorize and track the chain(s) of variable assignment hidden in the following text."
    question = f"Question: Find all variables that are assigned the value {value} in the text above."
    answer_prefix = (f"Answer: According to the chain(s) of variable assignment in the text above, "
                     f"{num_hops + 1} variables are assigned the value {value}, they are:")
    fixed = tok.count_tokens(format_prompt(instruction, "", question, answer_prefix)) + \
        sum(tok.count_tokens(text) + 1 for _, text in statements)
    units = _fill(_noise_units(rng), n_tokens - fixed, tok)
    return _assemble("vt", instruction, _insert(units, statements), " ", question, answer_prefix,
                     " " + " ".join(chains[0]))


STORY_INSTRUCTION = ("Read the following story carefully. It follows one traveller through numbered chapters. "
                     "Afterwards you will answer a question about it.")


def story_retrieval(rng: random.Random, n_tokens: int, tok: WordTokenizer) -> Example:
    """Chapters of a journey (place, person met, item bought); a question about one chapter."""
    p = rng.choice(PROTAGONISTS)
    budget = n_tokens - tok.count_tokens(format_prompt(STORY_INSTRUCTION, "", "", "Answer:")) - 20
    chapters: list[tuple[str, str, str | None]] = []
    texts: list[str] = []
    used_items: set[str] = set()
    used = 0
    while True:
        number = len(chapters) + 1
        place, person, role = rng.choice(STORY_PLACES), rng.choice(STORY_PEOPLE), rng.choice(STORY_ROLES)
        item = None
        if rng.random() < 0.75:
            item = f"{rng.choice(ITEM_ADJECTIVES)} {rng.choice(ITEM_MATERIALS)} {rng.choice(ITEM_NOUNS)}"
            if item in used_items:
                item = None
            else:
                used_items.add(item)
        fill = [f.format(P=p, place=place) for f in rng.sample(STORY_FILLERS, 2)]
        parts = [f"{p} travelled to {place}.", fill[0],
                 f"At {place}, {p} met {person}, {'an' if role[0] in 'aeiou' else 'a'} {role}."]
        if item:
            parts.append(f"{p} bought a {item} from {person}.")
        parts.append(fill[1])
        text = f"Chapter {number}\n" + " ".join(parts)
        cost = tok.count_tokens(text) + 2
        if used + cost > budget and chapters:
            break
        chapters.append((place, person, item))
        texts.append(text)
        used += cost
    index = rng.randrange(len(chapters))
    place, person, item = chapters[index]
    kind = rng.choice(("place", "person", "item") if item else ("place", "person"))
    if kind == "item":
        question, answer = f"In Chapter {index + 1}, which item did {p} buy?", item
    elif kind == "person":
        question, answer = f"In Chapter {index + 1}, whom did {p} meet? Give the name.", person
    else:
        question, answer = f"In Chapter {index + 1}, which place did {p} travel to?", place
    return _assemble("story_retrieval", STORY_INSTRUCTION, texts, "\n\n", question, "Answer:", " " + answer)


def niah_single(rng: random.Random, n_tokens: int, tok: WordTokenizer) -> Example:
    """One needle with a number: the easiest retrieval, where training starts."""
    return niah(rng, n_tokens, tok, shapes=("single",), value_weights=(1.0, 0.0, 0.0))


def niah_noise(rng: random.Random, n_tokens: int, tok: WordTokenizer) -> Example:
    """One needle with a number in the repeated-noise haystack: where training starts."""
    return niah(rng, n_tokens, tok, shapes=("single",), value_weights=(1.0, 0.0, 0.0), haystacks=("noise",))


GENERATORS = {"niah_noise": niah_noise, "niah_single": niah_single, "niah": niah, "vt": variable_tracking, "story_retrieval": story_retrieval}


def format_prompt(instruction: str, context: str, question: str, answer_prefix: str) -> str:
    head = f"{instruction}\n\n" if instruction else ""
    return f"{head}{context}\n\n{question}\n{answer_prefix}"


@dataclass(frozen=True)
class DataConfig:
    """What a training stream draws: the task mix and the range of real prompt lengths (tokens)."""

    mix: dict[str, float] = field(default_factory=lambda: {"niah": 0.6, "vt": 0.25, "story_retrieval": 0.15})
    min_tokens: int = 96
    max_tokens: int = 768

    def __post_init__(self) -> None:
        unknown = sorted(set(self.mix) - set(GENERATORS))
        if unknown or not self.mix or any(w < 0 for w in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise ValueError(f"data mix must weigh known generators ({', '.join(GENERATORS)}) with "
                             f"non-negative weights; got {self.mix}")
        if not 32 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"need 32 <= min_tokens <= max_tokens; got {self.min_tokens}, {self.max_tokens}")


def make_example(rng: random.Random, n_tokens: int, tok: WordTokenizer, config: DataConfig) -> Example:
    names = sorted(config.mix)
    name = rng.choices(names, [config.mix[n] for n in names])[0]
    return GENERATORS[name](rng, n_tokens, tok)


def encode_example(example: Example, tok: WordTokenizer) -> tuple[list[int], int, list[int]]:
    """Token ids <bos> prompt answer <eos>, where the answer starts, and the token indices where a
    prompt part begins (gap points for `stretched_positions`)."""
    ids = [tok.bos_id]
    cuts = []
    for i, part in enumerate(example.parts):
        if i:
            cuts.append(len(ids))
        ids.extend(tok.encode(part))
    answer_start = len(ids)
    return ids + tok.encode(example.target) + [tok.eos_id], answer_start, cuts


def stretched_positions(rng: random.Random, length: int, cuts: Sequence[int], virtual_length: int) -> list[int]:
    """Position ids 0..length-1, with extra gaps at the cut points so the last position is about
    virtual_length - 1.

    Why: retrieval learned on short sequences does not carry to longer ones with RoPE (measured: a
    model trained at <= 140 tokens scores 0 at 512), and training at 2k tokens costs ~10x more
    per example. Gapped positions show the model every query-needle distance up to the virtual
    length at the cost of the short sequence, while every part keeps consecutive positions inside.
    """
    extra = virtual_length - length
    if extra <= 0 or not cuts:
        return list(range(length))
    # Split `extra` at random among the cut points (sorted uniform draws = a flat Dirichlet).
    marks = sorted(rng.randint(0, extra) for _ in range(len(cuts) - 1))
    gaps = [b - a for a, b in zip([0] + marks, marks + [extra])]
    positions, offset, next_cut = [], 0, 0
    for index in range(length):
        while next_cut < len(cuts) and cuts[next_cut] == index:
            offset += gaps[next_cut]
            next_cut += 1
        positions.append(index + offset)
    return positions


class _PieceCounter:
    """Counts tokens as if every piece were in the vocabulary (for sizing the vocabulary corpus)."""

    @staticmethod
    def count_tokens(text: str) -> int:
        return len(PIECE.findall(text))


def build_vocabulary(n_examples: int = 2000, min_count: int = 10, seed: int = 0, n_tokens: int = 256) -> list[str]:
    """Word pieces occurring at least `min_count` times in `n_examples` generated examples (fixed seed).

    Random names and values (5-letter variables, hex, rare keys) stay below the threshold and are
    spelled in bytes, as are words the generators never use."""
    counts: dict[str, int] = {}
    rng = random.Random(f"vocabulary|{seed}")
    config = DataConfig()
    for _ in range(n_examples):
        example = make_example(rng, n_tokens, _PieceCounter(), config)
        for piece in PIECE.findall(example.prompt + example.target):
            if WORD_PIECE.fullmatch(piece):
                counts[piece] = counts.get(piece, 0) + 1
    return sorted(piece for piece, count in counts.items() if count >= min_count)

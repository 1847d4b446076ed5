"""Text for our TTS models: the sentence generator that makes the corpus, and the phone front end.

Sentences (`generate_sentences`): English sentences from a small grammar and a hand-written
vocabulary of common words (this file's own text, Apache-2.0 like the project), deterministic by
(seed, index). Train and evaluation sentences come from disjoint seed streams, and the evaluation
sets drop any sentence that the training stream produced (`heldout_sentences`).

Phones (`Phonemizer`): CMU Flite's letter-to-sound rules and lexicon (the CMU dictionary) give the
phone string of any English text (`flite -ps`, no audio written). Flite's US voices speak in the
same 'radio' phone set, so `flite -psdur` gives the exact phone timings of its own voices, which
seed and check the aligner (systems.tts.aligner). Punctuation that makes flite pause becomes `pau`.
Text goes to flite through a file, never a shell or argv, so no text can become an option.

Front ends (`front_end(name)`, the aligner's checkpoint records which one a model folder uses):
`phones` (Flite's phones, the committed models), `chars` (the letters themselves, E2/F5's choice),
`ipa` (eSpeak NG's IPA characters, with stress and length marks as symbols). Each gives units
with `pau` at both ends; ids are 0 padding, 1 end of speech, then the front end's symbols.
"""

from __future__ import annotations

import functools
import random
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from bench.errors import BenchError

# The radio phone set of Flite's US English voices (cmu_us_*), plus the pause.
PHONES = ("pau", "aa", "ae", "ah", "ao", "aw", "ax", "axr", "ay", "b", "ch", "d", "dh", "eh", "el", "em",
          "en", "er", "ey", "f", "g", "hh", "ih", "ix", "iy", "jh", "k", "l", "m", "n", "ng", "ow", "oy", "p",
          "r", "s", "sh", "t", "th", "uh", "uw", "v", "w", "y", "z", "zh")
# Token ids: 0 padding, 1 'end of speech' (frames after the last phone), then the phones.
PAD_ID, END_ID = 0, 1
PHONE_IDS = {p: i + 2 for i, p in enumerate(PHONES)}
VOCAB_SIZE = len(PHONES) + 2
TEXT_TOOL_TIMEOUT_S = 30.0


class FrontEndError(BenchError):
    """Text the front end cannot turn into phones (empty, nothing pronounceable)."""


# --------------------------------------------------------------------------- phones
class Phonemizer:
    """Text -> phones with Flite's lexicon and letter-to-sound rules (cached per text)."""

    name = "phones"
    revision = "flite-radio-phones-v1"
    symbols = PHONES

    def __init__(self, binary: str | None = None):
        self.binary = binary or shutil.which("flite")
        if self.binary is None:
            raise BenchError("the phone front end needs CMU Flite -> sudo apt-get install flite")

    @functools.lru_cache(maxsize=4096)
    def phones(self, text: str) -> tuple[str, ...]:
        """Phone names, with `pau` at the start, the end and where punctuation pauses."""
        cleaned = clean_text(text)
        if not cleaned:
            raise FrontEndError(f"text {text!r} has nothing to pronounce (no letters or digits)")
        with tempfile.TemporaryDirectory(prefix="bench-g2p-") as tmp:
            path = Path(tmp) / "text.txt"
            path.write_text(cleaned + "\n", encoding="utf-8")
            stdout = run_text_tool([self.binary, "-ps", "-f", str(path), "-o", "none"], text)
        phones = tuple(p for p in stdout.split() if p in PHONE_IDS)
        if not any(p != "pau" for p in phones):
            raise FrontEndError(f"text {text!r} gave no phones")
        return merge_pauses(phones)

    def units(self, text: str) -> tuple[str, ...]:
        return self.phones(text)

    def ids(self, units: Iterable[str]) -> list[int]:
        return phone_ids(units)


# Characters: lower-case letters, the apostrophe, the space between words and the punctuation that
# changes prosody. Digits are refused (the corpus spells numbers, so their embeddings are untrained).
CHARS = ("pau", " ", "'", ",", ".", "?", "!", ";", ":", "-") + tuple("abcdefghijklmnopqrstuvwxyz")
# eSpeak NG's en-us IPA output over the corpus, the evaluation sentences and the hard set (45
# characters), plus symbols other English words may need; a clause break (a new output line) is `pau`.
IPA = ("pau", " ", "ˈ", "ˌ", "ː", "ᵻ", "a", "b", "d", "e", "f", "h", "i", "j", "k", "l", "m", "n", "o", "p",
       "s", "t", "u", "v", "w", "z", "æ", "ð", "ŋ", "ɐ", "ɑ", "ɔ", "ə", "ɚ", "ɛ", "ɜ", "ɡ", "ɪ", "ɹ", "ɾ",
       "ʃ", "ʊ", "ʌ", "ʒ", "θ", "ɒ", "ʔ", "x", "r", "ɬ", "ç")


class Characters:
    """Text -> its characters (lower case), `pau` at both ends (E2/F5-TTS read characters)."""

    name = "chars"
    revision = "chars-v1"
    symbols = CHARS

    def units(self, text: str) -> tuple[str, ...]:
        cleaned = clean_text(text).lower()
        if not cleaned:
            raise FrontEndError(f"text {text!r} has nothing to pronounce (no letters or digits)")
        if re.search(r"[0-9]", cleaned):
            raise FrontEndError(f"the character front end does not read digits ({text[:60]!r}): write numbers as words")
        kept = [c for c in cleaned if c in _CHAR_IDS]  # other ASCII symbols (#, @, ...) are dropped
        if not any(c.isalpha() for c in kept):
            raise FrontEndError(f"text {text!r} has no letters")
        return ("pau", *kept, "pau")

    def ids(self, units: Iterable[str]) -> list[int]:
        return _symbol_ids(units, _CHAR_IDS, self.name)


class IPAPhonemizer:
    """Text -> eSpeak NG's IPA (en-us), one unit per character; clause breaks are `pau`."""

    name = "ipa"
    revision = "espeak-ng-ipa-en-us-v1"
    symbols = IPA

    def __init__(self, binary: str | None = None):
        self.binary = binary or shutil.which("espeak-ng")
        if self.binary is None:
            raise BenchError("the IPA front end needs eSpeak NG -> sudo apt-get install espeak-ng")

    @functools.lru_cache(maxsize=4096)
    def units(self, text: str) -> tuple[str, ...]:
        cleaned = clean_text(text)
        if not cleaned:
            raise FrontEndError(f"text {text!r} has nothing to pronounce (no letters or digits)")
        # text on stdin, never argv: no text can become an option
        stdout = run_text_tool([self.binary, "-q", "--ipa", "-v", "en-us"], text, stdin=cleaned)
        clauses = [line.strip() for line in stdout.splitlines() if line.strip()]
        if not clauses:
            raise FrontEndError(f"text {text!r} gave no IPA")
        units: list[str] = ["pau"]
        for clause in clauses:
            unknown = sorted(set(clause) - set(_IPA_IDS))
            if unknown:
                raise FrontEndError(f"eSpeak NG wrote IPA symbol(s) {' '.join(unknown)} for {text[:60]!r}, "
                                    "which this front end has no embedding for")
            units.extend(clause)
            units.append("pau")
        return tuple(units)

    def ids(self, units: Iterable[str]) -> list[int]:
        return _symbol_ids(units, _IPA_IDS, self.name)


_CHAR_IDS = {c: i + 2 for i, c in enumerate(CHARS)}
_IPA_IDS = {c: i + 2 for i, c in enumerate(IPA)}
FRONT_ENDS = {"phones": PHONES, "chars": CHARS, "ipa": IPA}


def _symbol_ids(units: Iterable[str], table: dict[str, int], name: str) -> list[int]:
    try:
        return [table[u] for u in units]
    except KeyError as exc:
        raise FrontEndError(f"unit {exc.args[0]!r} is not in the {name} front end") from None


def vocab_size(front_end_name: str = "phones") -> int:
    """Embedding rows a model needs for this front end: padding, end of speech, its symbols."""
    if front_end_name not in FRONT_ENDS:
        raise BenchError(f"unknown text front end {front_end_name!r}; front ends: {', '.join(FRONT_ENDS)}")
    return len(FRONT_ENDS[front_end_name]) + 2


def front_end(name: str = "phones"):
    """The front end by name (phones, chars, ipa): units(text) -> symbols, ids(units) -> ids."""
    vocab_size(name)  # validates the name
    return {"phones": Phonemizer, "chars": Characters, "ipa": IPAPhonemizer}[name]()


def run_text_tool(argv: list[str], text: str, stdin: str | None = None) -> str:
    """A front end's tool (flite, espeak-ng) on one text -> its stdout; FrontEndError when it
    fails or takes longer than TEXT_TOOL_TIMEOUT_S."""
    tool = Path(argv[0]).name
    try:
        proc = subprocess.run(argv, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace", timeout=TEXT_TOOL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise FrontEndError(f"{tool} took over {TEXT_TOOL_TIMEOUT_S:g} s on {text[:60]!r}") from None
    if proc.returncode != 0:
        raise FrontEndError(f"{tool} failed ({proc.returncode}) on {text[:60]!r}: {proc.stderr.strip()[-300:]}")
    return proc.stdout


def clean_text(text: str) -> str:
    """What the front end reads: printable ASCII after NFKD (accents dropped), whitespace collapsed.
    Characters outside that are dropped (documented behaviour); empty means nothing to say."""
    import unicodedata

    if not isinstance(text, str):
        raise FrontEndError(f"text must be a string, got {type(text).__name__}")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    ascii_text = re.sub(r"[^\x20-\x7e]", " ", ascii_text)
    ascii_text = re.sub(r"\s+", " ", ascii_text).strip()
    return ascii_text if re.search(r"[A-Za-z0-9]", ascii_text) else ""


def merge_pauses(phones: Sequence[str]) -> tuple[str, ...]:
    """Adjacent pauses as one (flite prints `pau pau` between sentences)."""
    out: list[str] = []
    for p in phones:
        if p == "pau" and out and out[-1] == "pau":
            continue
        out.append(p)
    return tuple(out)


def phone_ids(phones: Iterable[str]) -> list[int]:
    try:
        return [PHONE_IDS[p] for p in phones]
    except KeyError as exc:
        raise FrontEndError(f"unknown phone {exc.args[0]!r}; the phone set is {', '.join(PHONES)}") from None


def parse_psdur(output: str) -> list[tuple[str, float]]:
    """`flite -psdur` output ('pau:0.164 hh:0.255 ...': each phone with its end time) -> pairs."""
    pairs = []
    for token in output.split():
        name, _, end = token.partition(":")
        if name in PHONE_IDS and end:
            pairs.append((name, float(end)))
    return pairs


# --------------------------------------------------------------------------- sentences
_NAMES = ("Anna", "Ben", "Clara", "David", "Ella", "Frank", "Grace", "Henry", "Iris", "Jack", "Kate", "Leo",
          "Maria", "Nick", "Olivia", "Paul", "Rosa", "Sam", "Tom", "Vera")
_ADJ = ("old", "young", "small", "large", "quiet", "busy", "bright", "dark", "cold", "warm", "heavy", "empty",
        "green", "red", "blue", "yellow", "wooden", "broken", "clean", "narrow", "happy", "tired", "strange",
        "famous", "gentle", "sharp", "simple", "early", "lucky", "careful")
_NOUN = ("man", "woman", "child", "teacher", "farmer", "doctor", "driver", "dog", "cat", "horse", "bird",
         "house", "garden", "river", "window", "table", "letter", "book", "train", "boat", "street", "market",
         "village", "mountain", "kitchen", "bridge", "school", "picture", "basket", "candle", "bottle",
         "coat", "door", "road", "forest", "station", "island", "lamp", "box", "song")
_PLACE = ("the market", "the station", "the old bridge", "the village", "the river bank", "the kitchen",
          "the garden", "the harbour", "the top of the hill", "the small farm", "the library", "the city",
          "the north road", "the school yard", "the forest path")
_VERB_T = ("carried", "painted", "found", "opened", "cleaned", "watched", "moved", "sold", "bought", "fixed",
           "closed", "filled", "lifted", "followed", "counted", "washed", "pushed", "built", "saw", "heard")
_VERB_I = ("waited", "smiled", "walked home", "slept", "worked late", "laughed", "stopped", "listened",
           "sang quietly", "ran away", "stayed inside", "looked around", "turned back", "sat down")
_TIME = ("in the morning", "after dinner", "before noon", "on Monday", "last winter", "every evening",
         "at midnight", "during the storm", "on a sunny day", "the next week", "two days later", "at dawn")
_ADV = ("slowly", "quickly", "carefully", "quietly", "gladly", "again", "together", "alone", "at once")
_NUM = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "twenty")
_CONJ = ("because", "while", "although", "when", "after", "before")


def _np(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.15:
        return rng.choice(_NAMES)
    if roll < 0.3:
        return f"{rng.choice(_NUM)} {rng.choice(_ADJ)} {rng.choice(_NOUN)}s"
    det = rng.choice(("the", "the", "a", "my", "her", "his", "our", "that"))
    noun = rng.choice(_NOUN)
    if rng.random() < 0.6:
        noun = f"{rng.choice(_ADJ)} {noun}"
    if det == "a" and noun[0] in "aeiou":
        det = "an"
    return f"{det} {noun}"


def _clause(rng: random.Random) -> str:
    subject = _np(rng)
    if rng.random() < 0.6:
        clause = f"{subject} {rng.choice(_VERB_T)} {_np(rng)}"
    else:
        clause = f"{subject} {rng.choice(_VERB_I)}"
    if rng.random() < 0.35:
        clause += f" {rng.choice(_ADV)}"
    return clause


def sentence(rng: random.Random) -> str:
    """One sentence from the grammar (questions, statements, two-clause sentences)."""
    roll = rng.random()
    if roll < 0.35:
        text = f"{_clause(rng)} {rng.choice(_TIME)}."
    elif roll < 0.55:
        text = f"{_clause(rng)} near {rng.choice(_PLACE)}."
    elif roll < 0.75:
        text = f"{_clause(rng)} {rng.choice(_CONJ)} {_clause(rng)}."
    elif roll < 0.87:
        text = f"Did {_np(rng)} see {_np(rng)} at {rng.choice(_PLACE)}?"
    else:
        text = f"{rng.choice(_TIME).capitalize()}, {_clause(rng)}."
    return text[0].upper() + text[1:]


def generate_sentences(n: int, seed: str) -> list[str]:
    """`n` distinct sentences, deterministic by `seed` (a string: random.Random hashes it stably)."""
    rng = random.Random(f"tts-sentences:{seed}")
    seen: set[str] = set()
    out: list[str] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise BenchError(f"the grammar cannot make {n} distinct sentences")
        text = sentence(rng)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


TRAIN_SEED = "train"
HELDOUT_SEED = "heldout"
DEV_SEED = "dev"  # the development set's own stream: inference settings are chosen on it, never on a test set


def heldout_sentences(n: int, exclude: Iterable[str], seed: str = HELDOUT_SEED) -> list[str]:
    """Evaluation sentences: a separate stream, minus anything in `exclude` (the training texts)
    and minus sentences with number words: the Seed-TTS protocol does not normalise numbers and
    Whisper writes them as digits, which would score the ASR's formatting, not the speech."""
    excluded = set(exclude)
    numbers = set(_NUM)
    pool = generate_sentences(n * 3 + 50, seed)
    out = [s for s in pool if s not in excluded and not numbers & set(re.findall(r"[a-z]+", s.lower()))][:n]
    if len(out) < n:
        raise BenchError(f"only {len(out)} held-out sentences left after excluding training texts")
    return out


# Robustness texts (the kind Seed-TTS test-hard and RALL-E use): traditional tongue twisters (public
# domain) and repetitive sentences that tempt an autoregressive model to loop.
TONGUE_TWISTERS = (
    "Peter Piper picked a peck of pickled peppers.",
    "She sells sea shells by the sea shore.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
    "Red lorry, yellow lorry, red lorry, yellow lorry.",
    "Betty Botter bought some butter, but she said the butter is bitter.",
    "Fuzzy Wuzzy was a bear. Fuzzy Wuzzy had no hair.",
    "A proper copper coffee pot.",
    "Six slippery snails slid slowly seaward.",
    "Unique New York, unique New York, you know you need unique New York.",
    "Toy boat, toy boat, toy boat, toy boat.",
    "Round the rugged rock the ragged rascal ran.",
    "Eleven benevolent elephants.",
)


def repetitive_sentences(n: int, seed: str = "hard") -> list[str]:
    """Sentences that repeat a word or a phrase several times."""
    rng = random.Random(f"tts-repetitive:{seed}")
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.4:
            word = rng.choice(_NOUN)
            out.append(f"The {word}, the {word}, the {word}, the {word} and the {word} again.")
        elif kind < 0.7:
            verb = rng.choice(("waited", "walked", "talked", "painted", "counted", "listened"))
            out.append(f"They {verb} and {verb} and {verb} and {verb} all day.")
        else:
            phrase = f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}"
            out.append(f"A {phrase}, a {phrase}, a {phrase}, and one more {phrase}.")
    return out

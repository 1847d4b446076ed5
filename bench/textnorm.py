"""Text normalisers applied to the reference text and the ASR transcript before WER/CER.

A task's protocol names its normaliser (`Protocol.normalizer`); the WER metric looks it up here.
Each normaliser has a version string that goes into the metric's evaluator revision, so a change
to a normaliser changes the revision and invalidates cached scores instead of silently mixing them.

Normalisers
-----------
"seedtts" (version 1): the Seed-TTS-eval protocol (BytedanceSpeech/seed-tts-eval, run_wer.py),
    reproduced character for character:
      1. delete every character of Python's `string.punctuation` except the ASCII apostrophe ',
         and every character of `zhon.hanzi.punctuation` (zhon 2.1.1: fullwidth/CJK punctuation,
         the en and em dashes, the curly quotes ‘ ’ ‛ “ ” „ ‟, the ellipsis …, the middle dot ·,
         the ideographic space U+3000). Deleted, not replaced by a space: "well-known" becomes
         "wellknown" and the curly apostrophe in "don’t" is dropped ("dont"), exactly as upstream;
      2. lowercase (upstream lowercases English only; for "zh" text the case is kept, as upstream);
      3. split on whitespace and join with single spaces (upstream: one replace of double spaces,
         then jiwer's default transform strips and collapses space runs).
    No number normalisation: "21" and "twenty one" are different words.
    Known difference: upstream splits words on the ASCII space only, so a lone tab or newline
    between two words glues them into one; here any Unicode whitespace separates words.

"whisper-en" (version 1): a more forgiving English normaliser in the style of Whisper's
    English text normaliser (written from its description, not a copy). In order:
      1. Unicode NFKC; the curly/modifier apostrophes ’ ‘ ʼ ′ ` ´ become the ASCII ';
      2. lowercase; diacritics removed (NFKD, combining marks dropped: "café" -> "cafe");
      3. annotations in square or angle brackets are deleted ("[laughter]", "<unk>");
         parentheses are kept, since a TTS system reads their content aloud;
      4. thousands separators inside numbers are removed ("1,000" -> "1000"); a period between
         two digits is kept ("3.5"); every other period is a word break;
      5. contractions are expanded with a fixed table: won't -> will not, can't -> can not,
         shan't -> shall not, let's -> let us, ma'am -> madam, then the suffixes n't -> " not",
         're -> " are", 's -> " is", 'd -> " would", 'll -> " will", 've -> " have", 'm -> " am"
         (applied to both sides alike, so "john's" -> "john is" on both and still matches);
      6. the titles mr, mrs, ms, dr, prof, st, jr, sr become mister, missus, miss, doctor,
         professor, saint, junior, senior;
      7. the fillers hmm, mm, mhm, mmm, uh, um are deleted;
      8. every character that is not a letter, a digit, or a decimal point between digits becomes
         a space (hyphens and slashes separate words: "well-known" -> "well known");
      9. whitespace is collapsed.
    Number words are NOT converted: "21" and "twenty one" stay different, as in "seedtts".
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from typing import Callable

from bench.errors import UnknownName

# zhon 2.1.1 `zhon.hanzi.punctuation` (non-stops + stops), which seed-tts-eval deletes together with
# `string.punctuation`. Spelled out as code points so the set is pinned and needs no zhon install.
_ZHON_PUNCTUATION = (
    "\uFF02\uFF03\uFF04\uFF05\uFF06\uFF07\uFF08\uFF09\uFF0A\uFF0B\uFF0C\uFF0D"
    "\uFF0F\uFF1A\uFF1B\uFF1C\uFF1D\uFF1E\uFF20\uFF3B\uFF3C\uFF3D\uFF3E\uFF3F"
    "\uFF40\uFF5B\uFF5C\uFF5D\uFF5E\uFF5F\uFF60"
    "\uFF62\uFF63\uFF64"
    "\u3000\u3001\u3003"
    "\u3008\u3009\u300A\u300B\u300C\u300D\u300E\u300F\u3010\u3011"
    "\u3014\u3015\u3016\u3017\u3018\u3019\u301A\u301B\u301C\u301D\u301E\u301F"
    "\u3030"
    "\u303E\u303F"
    "\u2013\u2014"
    "\u2018\u2019\u201B\u201C\u201D\u201E\u201F"
    "\u2026\u2027"
    "\uFE4F"
    "\uFE51\uFE54"
    "\u00B7"
    "\uFF0E\uFF01\uFF1F\uFF61\u3002"
)
SEEDTTS_DELETED = frozenset(string.punctuation.replace("'", "") + _ZHON_PUNCTUATION)
_SEEDTTS_TABLE = {ord(c): None for c in SEEDTTS_DELETED}

# Languages whose reference text upstream does not lowercase (seed-tts-eval lowercases "en" only and
# handles "zh" without lowercasing; other languages we treat like English).
_CASE_KEPT_LANGUAGES = frozenset({"zh"})


def seedtts(text: str, language: str = "en") -> str:
    text = text.translate(_SEEDTTS_TABLE)
    if language not in _CASE_KEPT_LANGUAGES:
        text = text.lower()
    return " ".join(text.split())


_APOSTROPHES = str.maketrans({c: "'" for c in "\u2019\u2018\u02BC\u2032`\u00B4"})
_ANNOTATION = re.compile(r"\[[^\]]*\]|<[^>]*>")
_DIGIT_GROUP_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")
_WHOLE_WORD_CONTRACTIONS = [
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"\bcan't\b"), "can not"),
    (re.compile(r"\bshan't\b"), "shall not"),
    (re.compile(r"\blet's\b"), "let us"),
    (re.compile(r"\bma'am\b"), "madam"),
]
_SUFFIX_CONTRACTIONS = [
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"(?<=\w)'re\b"), " are"),
    (re.compile(r"(?<=\w)'s\b"), " is"),
    (re.compile(r"(?<=\w)'d\b"), " would"),
    (re.compile(r"(?<=\w)'ll\b"), " will"),
    (re.compile(r"(?<=\w)'ve\b"), " have"),
    (re.compile(r"(?<=\w)'m\b"), " am"),
]
_TITLES = {"mr": "mister", "mrs": "missus", "ms": "miss", "dr": "doctor", "prof": "professor",
           "st": "saint", "jr": "junior", "sr": "senior"}
_FILLERS = frozenset({"hmm", "mm", "mhm", "mmm", "uh", "um"})
# Anything but a letter/digit (\w minus underscore), or a period between two digits, breaks words.
_NON_WORD = re.compile(r"(?:(?!(?<=\d)\.(?=\d))[^\w]|_)+")


def whisper_en(text: str, language: str = "en") -> str:
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = _ANNOTATION.sub(" ", text)
    text = _DIGIT_GROUP_COMMA.sub("", text)
    for pattern, replacement in _WHOLE_WORD_CONTRACTIONS + _SUFFIX_CONTRACTIONS:
        text = pattern.sub(replacement, text)
    words = _NON_WORD.sub(" ", text).split()
    return " ".join(_TITLES.get(w, w) for w in words if w not in _FILLERS)


@dataclass(frozen=True)
class Normalizer:
    name: str
    version: str
    description: str
    function: Callable[[str, str], str]

    @property
    def revision(self) -> str:
        """Name and version, as recorded in a metric's evaluator revision."""
        return f"{self.name}-v{self.version}"

    def __call__(self, text: str, language: str = "en") -> str:
        return self.function(text, language)


NORMALIZERS: dict[str, Normalizer] = {
    n.name: n for n in (
        Normalizer("seedtts", "1", "Seed-TTS-eval: delete punctuation except the ASCII apostrophe, "
                   "lowercase, collapse whitespace; no number normalisation", seedtts),
        Normalizer("whisper-en", "1", "Whisper-style English: unify apostrophes, drop diacritics and "
                   "[annotations], expand contractions and titles, drop fillers, punctuation to "
                   "spaces; no number-word conversion", whisper_en),
    )
}


def get_normalizer(name: str) -> Normalizer:
    try:
        return NORMALIZERS[name]
    except KeyError:
        raise UnknownName(f"unknown text normaliser '{name}'; valid ones: "
                          f"{', '.join(sorted(NORMALIZERS))}") from None


def normalize(text: str, name: str, language: str = "en") -> str:
    """Normalise `text` with the normaliser called `name` (see the module docstring)."""
    return get_normalizer(name)(text, language)

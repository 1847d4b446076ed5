"""Text normalisers: golden cases for the Seed-TTS-eval protocol and the whisper-en alternative."""

from __future__ import annotations

import string

import pytest

from bench.errors import UnknownName
from bench.textnorm import NORMALIZERS, SEEDTTS_DELETED, get_normalizer, normalize


# --------------------------------------------------------------------------- seedtts
@pytest.mark.parametrize("text, expected", [
    ("Hello, World!", "hello world"),
    # ASCII apostrophes survive; every other ASCII punctuation mark is deleted, not spaced.
    ("It's John's dog.", "it's john's dog"),
    ("A well-known, so-called fact", "a wellknown socalled fact"),
    ("e.g. U.S.A.", "eg usa"),
    ("(quoted) [square] {curly} <angle>", "quoted square curly angle"),
    # No number normalisation: digits stay digits, a decimal point is deleted like any period.
    ("I have 21 apples and 3.5 pears, 1,000 in all", "i have 21 apples and 35 pears 1000 in all"),
    ("twenty one", "twenty one"),
    # Unicode quotes and dashes are in zhon's punctuation: deleted, the curly apostrophe too.
    ("Don\u2019t \u201cquote\u201d me \u2014 ok\u2026", "dont quote me ok"),
    ("\u2018single\u2019", "single"),
    # Whitespace: runs collapse, ends are stripped, tabs and newlines separate words.
    ("  lots   of\tspace \n here  ", "lots of space here"),
    ("word - word", "word word"),
    ("", ""),
    ("?!...", ""),
])
def test_seedtts_english(text, expected):
    assert normalize(text, "seedtts") == expected


def test_seedtts_chinese_deletes_cjk_punctuation_and_keeps_case():
    assert normalize("我们，今天？很好。《书》「引号」AI", "seedtts", language="zh") == "我们今天很好书引号AI"
    # English text lowercases; the ideographic space U+3000 is punctuation to zhon: deleted, not a break.
    assert normalize("我们，AI\u3000Test", "seedtts") == "我们aitest"


def test_seedtts_deleted_set_matches_upstream_definition():
    # string.punctuation minus the apostrophe, plus zhon.hanzi.punctuation (2.1.1).
    assert set(string.punctuation) - {"'"} <= SEEDTTS_DELETED
    assert "'" not in SEEDTTS_DELETED
    for ch in "\u2019\u2018\u201c\u201d\u2013\u2014\u2026\u00b7\u3002\uff0c\uff01\uff1f\u3001\u300a\u300b\uff0e":
        assert ch in SEEDTTS_DELETED, hex(ord(ch))
    # Letters, digits and ordinary spaces are never deleted.
    assert not (set(string.ascii_letters + string.digits + " ") & SEEDTTS_DELETED)
    assert len(SEEDTTS_DELETED) == 31 + 82  # checked equal to zhon 2.1.1 hanzi.punctuation


# --------------------------------------------------------------------------- whisper-en
@pytest.mark.parametrize("text, expected", [
    ("Hello, World!", "hello world"),
    ("A well-known, so-called fact", "a well known so called fact"),
    ("I won't, can't, shan't; let's go", "i will not can not shall not let us go"),
    ("They're here, she's gone, I'd say we'll see; I've, I'm", "they are here she is gone i would say we "
     "will see i have i am"),
    ("Don\u2019t isn\u2019t", "do not is not"),  # curly apostrophes are unified first
    ("Mr. Smith and Mrs. Jones met Dr. Who", "mister smith and missus jones met doctor who"),
    ("1,000,000 people, 3.5 percent, 21 apples", "1000000 people 3.5 percent 21 apples"),
    ("twenty one", "twenty one"),  # number words are not converted
    ("End of sentence. 12. Next", "end of sentence 12 next"),
    ("um, I uh think [laughter] so <unk>", "i think so"),
    ("(aside) text", "aside text"),  # parentheses are read aloud by TTS: kept
    ("Caf\u00e9 na\u00efve r\u00e9sum\u00e9", "cafe naive resume"),
    ("snake_case", "snake case"),
    ("  lots   of\tspace  ", "lots of space"),
    ("", ""),
])
def test_whisper_en(text, expected):
    assert normalize(text, "whisper-en") == expected


def test_whisper_en_makes_common_asr_variants_agree():
    ref = "and mister john dashwood thought the boy ill disposed"
    hyp = "And Mr. John Dashwood thought the boy ill-disposed."
    assert normalize(ref, "whisper-en") == normalize(hyp, "whisper-en")
    # ...where the Seed-TTS protocol counts three errors (mr, the joined hyphen word).
    assert normalize(ref, "seedtts") != normalize(hyp, "seedtts")


# --------------------------------------------------------------------------- registry
def test_every_normalizer_has_a_version_and_revision():
    assert set(NORMALIZERS) == {"seedtts", "whisper-en"}
    for name, norm in NORMALIZERS.items():
        assert norm.name == name and norm.version and norm.description
        assert norm.revision == f"{name}-v{norm.version}"
    assert get_normalizer("seedtts") is NORMALIZERS["seedtts"]


def test_unknown_normalizer_lists_the_valid_ones():
    with pytest.raises(UnknownName) as exc:
        normalize("x", "nope")
    assert "nope" in str(exc.value) and "seedtts" in str(exc.value) and "whisper-en" in str(exc.value)

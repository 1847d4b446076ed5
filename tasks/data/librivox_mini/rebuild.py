"""Rebuild this folder (wavs/ and manifest.json) from Debian's pocketsphinx-testdata package.

    python tasks/data/librivox_mini/rebuild.py [--source /usr/share/pocketsphinx/test/data]

The shipped files are the output of this script; it exists so anyone can check where every
sample came from. It copies the audio (already 16 kHz 16-bit mono in the package, except the
headerless goforward.raw, which is wrapped in a WAV header), checks each transcript against the
package's own transcript files, and writes the manifest with durations and sha256 sums.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = Path("/usr/share/pocketsphinx/test/data")
SAMPLE_RATE = 16000

LIBRIVOX_SPEAKER = "librivox-ss01"
CARDS_SPEAKER = "cards"
GOFORWARD_SPEAKER = "goforward"

# (id, source file relative to the package data folder, transcript file, key in that file or
#  None, text given to systems, speaker)
# `text` is the package transcript with case and punctuation restored, word for word, so that the
# text describes the recording (it is also the prompt text when the clip is a prompt); the one
# exception is a spoken restart, listed in DISFLUENCIES and kept in the manifest.
UTTERANCES = [
    ("lv0870", "librivox/sense_and_sensibility_01_austen_64kb-0870.wav", "librivox/transcription",
     "sense_and_sensibility_01_austen_64kb-0870",
     "And Mr. John Dashwood had then leisure to consider how much there might be prudently "
     "in his power to do for them.", LIBRIVOX_SPEAKER),
    ("lv0880", "librivox/sense_and_sensibility_01_austen_64kb-0880.wav", "librivox/transcription",
     "sense_and_sensibility_01_austen_64kb-0880",
     "He was not an ill-disposed young man.", LIBRIVOX_SPEAKER),
    ("lv0890", "librivox/sense_and_sensibility_01_austen_64kb-0890.wav", "librivox/transcription",
     "sense_and_sensibility_01_austen_64kb-0890",
     "Unless to be rather cold-hearted and rather selfish is to be ill-disposed.", LIBRIVOX_SPEAKER),
    # The reader restarts after "a more" (the package transcript reads "a more a amiable"). The
    # text is the sentence as written; the restart is recorded in the manifest (disfluency).
    ("lv0920", "librivox/sense_and_sensibility_01_austen_64kb-0920.wav", "librivox/transcription",
     "sense_and_sensibility_01_austen_64kb-0920",
     "Had he married a more amiable woman, he might have been made still more respectable "
     "than he was.", LIBRIVOX_SPEAKER),
    ("lv0930", "librivox/sense_and_sensibility_01_austen_64kb-0930.wav", "librivox/transcription",
     "sense_and_sensibility_01_austen_64kb-0930",
     "He might even have been made amiable himself.", LIBRIVOX_SPEAKER),
    ("cards001", "cards/001.wav", "cards/cards.transcription", "001", "Ten of clubs.", CARDS_SPEAKER),
    ("cards002", "cards/002.wav", "cards/cards.transcription", "002", "Four, queen of clubs.",
     CARDS_SPEAKER),
    ("cards003", "cards/003.wav", "cards/cards.transcription", "003", "Seven of clubs.", CARDS_SPEAKER),
    ("cards004", "cards/004.wav", "cards/cards.transcription", "004", "Five, five.", CARDS_SPEAKER),
    ("cards005", "cards/005.wav", "cards/cards.transcription", "005",
     "Eight of spades, four of clubs, seven of hearts.", CARDS_SPEAKER),
    # goforward has no transcript file; its transcript is the sentence the package's grammar
    # (goforward.gram, public <move>) and pocketsphinx's own tests expect for this clip.
    ("goforward", "goforward.raw", None, None, "Go forward ten meters.", GOFORWARD_SPEAKER),
]

# id -> the word the reader repeats (spoken, in the package transcript, absent from the text).
DISFLUENCIES = {"lv0920": "a"}

SOURCES = {
    LIBRIVOX_SPEAKER: "LibriVox recording of Jane Austen, Sense and Sensibility, chapter 1 "
                      "(public domain), as cut into utterances by CMU for pocketsphinx's tests",
    CARDS_SPEAKER: "CMU Sphinx test recordings of playing-card names (pocketsphinx test/data/cards)",
    GOFORWARD_SPEAKER: "CMU Sphinx 'turtle' demo recording (pocketsphinx test/data/goforward.raw)",
}
LICENCES = {
    LIBRIVOX_SPEAKER: "public domain (LibriVox); packaged by CMU under BSD-2-Clause",
    CARDS_SPEAKER: "BSD-2-Clause (Carnegie Mellon University)",
    GOFORWARD_SPEAKER: "BSD-2-Clause (Carnegie Mellon University)",
}


def words(text: str) -> list[str]:
    """Lowercase words, 'Mr.' spelt out and hyphens split, to compare a text with a Sphinx transcript."""
    return re.sub(r"[^a-z' ]", " ", text.lower().replace("mr.", "mister").replace("-", " ")).split()


def transcript_matches(text: str, transcript: str, repeated_word: str | None = None) -> bool:
    """The text says the transcript's words, less at most one documented repeated word."""
    spoken = words(transcript)
    if repeated_word is not None:
        for i in range(1, len(spoken)):
            if spoken[i] == repeated_word and words(text) == spoken[:i] + spoken[i + 1:]:
                return True
        return False
    return words(text) == spoken


def _package_transcripts(path: Path) -> dict[str, str]:
    """Sphinx transcription files: '<s> words </s> (key)' per line."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\s*<s>(.*)</s>\s*\((\S+)\)\s*$", line)
        if m:
            out[m.group(2)] = " ".join(m.group(1).split())
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = ap.parse_args()
    wav_dir = HERE / "wavs"
    wav_dir.mkdir(exist_ok=True)
    entries = []
    for uid, rel, transcript_file, key, text, speaker in UTTERANCES:
        src = args.source / rel
        if src.suffix == ".raw":
            samples = np.fromfile(src, dtype="<i2")
            transcript = "go forward ten meters"
        else:
            info = sf.info(str(src))
            if (info.samplerate, info.channels, info.subtype) != (SAMPLE_RATE, 1, "PCM_16"):
                raise SystemExit(f"{src}: expected 16 kHz mono PCM_16, got {info}")
            samples, _ = sf.read(str(src), dtype="int16")
            transcript = _package_transcripts(args.source / transcript_file)[key]
        if not transcript_matches(text, transcript, DISFLUENCIES.get(uid)):
            raise SystemExit(f"{uid}: text {text!r} does not match the package transcript {transcript!r}")
        out = wav_dir / f"{uid}.wav"
        sf.write(str(out), samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        entries.append({
            "id": uid, "file": f"wavs/{uid}.wav", "text": text, "package_transcript": transcript,
            "speaker": speaker, "source": f"pocketsphinx-testdata:{rel}",
            **({"disfluency": f"the reader repeats '{DISFLUENCIES[uid]}' (restart); the text omits it"}
               if uid in DISFLUENCIES else {}),
            "licence": LICENCES[speaker], "num_samples": int(len(samples)),
            "duration_s": round(len(samples) / SAMPLE_RATE, 4), "sha256": sha256(out),
        })
    manifest = {
        "name": "librivox-mini", "format_version": 1, "sample_rate": SAMPLE_RATE,
        "speakers": {s: {"source": SOURCES[s], "licence": LICENCES[s]} for s in SOURCES},
        "utterances": entries,
    }
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(entries)} utterances, {sum(e['duration_s'] for e in entries):.1f} s")


if __name__ == "__main__":
    main()

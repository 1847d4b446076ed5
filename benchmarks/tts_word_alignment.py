"""How well a checkpoint folder's aligner places word boundaries, whatever its text front end:
word-end times from the aligner (monotonic alignment search) against Flite's own phone timings on
Flite corpus utterances. Words are found in Flite's phones by phonemising each word alone
(utterances whose phones do not split that way are left out, and counted); in characters and IPA
they are the runs of units between spaces, pauses and punctuation. Every word but the last is
compared (the last one ends where the audio does).

Usage: python benchmarks/tts_word_alignment.py FOLDER [FOLDER ...] [--utterances 80] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SEPARATORS = {" ", "pau", ",", ".", "?", "!", ";", ":", "-"}


def word_ends_in_units(units, ends: np.ndarray) -> list[int]:
    """End frame of each run of units between separators (characters, IPA)."""
    out, last = [], None
    for i, unit in enumerate(units):
        if unit in SEPARATORS:
            if last is not None:
                out.append(int(ends[last]))
            last = None
        else:
            last = i
    if last is not None:
        out.append(int(ends[last]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="checkpoint folders (bench train-tts --out)")
    parser.add_argument("--corpus", type=Path, default=Path("data/tts-corpus"))
    parser.add_argument("--utterances", type=int, default=80, help="Flite utterances drawn (seeded)")
    parser.add_argument("--json", action="store_true", help="print the measurements as one JSON object")
    args = parser.parse_args(argv)

    import torch

    from systems.tts.aligner import align, front_end_of, load_aligner
    from systems.tts.dataset import load_corpus
    from systems.tts.text import PHONE_IDS, Phonemizer, front_end
    from systems.tts.train import load_stats

    torch.set_num_threads(1)
    phonemizer = Phonemizer()
    pause = PHONE_IDS["pau"]

    def word_phone_counts(text: str) -> list[int]:
        return [sum(p != "pau" for p in phonemizer.phones(w)) for w in re.findall(r"[A-Za-z']+", text)]

    flite = [u for u in load_corpus(args.corpus, progress=False) if u.flite_durations is not None]
    sample = random.Random("word-alignment").sample(flite, min(args.utterances, len(flite)))
    truth: dict[str, np.ndarray] = {}  # utterance id -> word ends (frames) from Flite's timings
    for u in sample:
        counts = word_phone_counts(u.text)
        spoken = [i for i, p in enumerate(u.phones) if p != pause]
        if sum(counts) == len(spoken):
            ends = np.cumsum(u.flite_durations)
            truth[u.id] = ends[[spoken[i] for i in np.cumsum(counts) - 1]]
    rows = []
    for folder in args.folders:
        text = front_end_of(folder)
        reader = front_end(text)
        stats, aligner = load_stats(folder), load_aligner(folder)
        errors, skipped = [], 0
        for u in sample:
            if u.id not in truth:
                continue
            units = None if text == "phones" else reader.units(u.text)
            ids = list(u.phones) if units is None else reader.ids(units)
            ends = np.cumsum(align(aligner, ids, stats.normalise(u.log_mel)))
            if units is None:
                spoken = [i for i, p in enumerate(ids) if p != pause]
                found = [int(ends[spoken[i]]) for i in np.cumsum(word_phone_counts(u.text)) - 1]
            else:
                found = word_ends_in_units(units, ends)
            if len(found) != len(truth[u.id]):
                skipped += 1  # the front end split the words differently (IPA can merge them)
                continue
            errors.append(np.abs(np.asarray(found[:-1]) - truth[u.id][:-1]))
        flat = np.concatenate(errors) if errors else np.zeros(0)
        rows.append({"folder": str(folder), "text": text, "utterances": len(errors), "skipped": skipped,
                     "word_ends": int(flat.size),
                     "mean_error_frames": round(float(flat.mean()), 3) if flat.size else None,
                     "mean_error_ms": round(float(flat.mean()) * 16, 1) if flat.size else None,
                     "within_2_frames": round(float(np.mean(flat <= 2)), 4) if flat.size else None,
                     "within_5_frames": round(float(np.mean(flat <= 5)), 4) if flat.size else None})
    result = {"drawn": len(sample), "split_into_words": len(truth), "rows": rows}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{len(truth)} of {len(sample)} Flite utterances split into words; word ends against Flite's timings")
    for r in rows:
        print(f"  {r['folder']} ({r['text']}): {r['utterances']} utterances ({r['skipped']} split differently), "
              f"{r['word_ends']} word ends: mean error {r['mean_error_frames']} frames ({r['mean_error_ms']} ms), "
              f"within 2 frames {100 * (r['within_2_frames'] or 0):.1f} %, within 5 {100 * (r['within_5_frames'] or 0):.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())

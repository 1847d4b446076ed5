"""Real speech for the golden-value tests: the repository's own copies (tasks/data/librivox_mini),
byte-identical to Debian's pocketsphinx-testdata files (tests/test_tasks.py checks that where the
package is installed), so the metric tests never depend on a package being present."""

from __future__ import annotations

import json
from pathlib import Path

WAVS = Path(__file__).resolve().parents[1] / "tasks" / "data" / "librivox_mini" / "wavs"
LIBRIVOX_IDS = ("0870", "0880", "0890", "0920", "0930")
LIBRIVOX = [WAVS / f"lv{n}.wav" for n in LIBRIVOX_IDS]  # one LibriVox reader
CARDS = [WAVS / f"cards00{n}.wav" for n in (1, 2, 3, 4, 5)]  # the CMU 'cards' speaker
GOFORWARD = WAVS / "goforward.wav"  # the CMU 'goforward' speaker


def package_transcripts() -> dict[str, str]:
    """LibriVox clip id (e.g. '0870') -> the package's own transcript (lowercase, as recorded)."""
    manifest = json.loads((WAVS.parent / "manifest.json").read_text())
    return {u["id"][2:]: u["package_transcript"] for u in manifest["utterances"] if u["id"].startswith("lv")}

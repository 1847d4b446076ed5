"""Festival's real-time factor: one text2wave process per item (how the `festival` system ran
before) against the long-lived Festival process it uses now, measured side by side, interleaved
(A, B, A, B ... per sentence), medians with their spread. Both paths give the same samples; the
script checks that too.

Usage: python benchmarks/festival_rtf.py [--sentences 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import spread  # noqa: E402


def sentences(n: int) -> list[str]:
    from systems.tts.text import heldout_sentences

    return heldout_sentences(n, ())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print the measurements as one JSON object")
    args = parser.parse_args(argv)

    from bench.audio import read_audio
    from bench.contracts import TTSItem
    from systems.classic import Festival

    if not shutil.which("text2wave") or not Festival.availability().ok:
        print("festival is not installed -> sudo apt-get install festival festvox-kallpc16k", file=sys.stderr)
        return 1
    system = Festival()
    system.load()  # starts the long-lived process (its start-up is paid here, once)
    per_process, in_process, identical = [], [], 0
    texts = sentences(args.sentences)
    with tempfile.TemporaryDirectory() as tmp:
        for k, text in enumerate(texts):
            text_file, wav = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
            text_file.write_text(text + "\n", encoding="utf-8")
            start = time.perf_counter()
            subprocess.run(["text2wave", "-eval", "(voice_kal_diphone)", "-o", str(wav), str(text_file)],
                           check=True, stdin=subprocess.DEVNULL, capture_output=True)
            before = time.perf_counter() - start
            reference = read_audio(wav)
            start = time.perf_counter()
            audio = system.synthesize(text, None, TTSItem(id=f"s{k}", text=text))
            after = time.perf_counter() - start
            per_process.append(before / reference.duration)
            in_process.append(after / audio.duration)
            identical += int(audio.sample_rate == reference.sample_rate
                             and audio.samples.shape == reference.samples.shape
                             and bool((audio.samples == reference.samples).all()))
    system.close()
    ratios = [a / b for a, b in zip(per_process, in_process)]
    result = {"sentences": len(texts), "rtf_text2wave_per_item": statistics.median(per_process),
              "rtf_long_lived_process": statistics.median(in_process), "speedup_median": statistics.median(ratios),
              "identical_samples": identical}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"RTF, text2wave per item:       {spread(per_process)}")
    print(f"RTF, one long-lived festival:  {spread(in_process)}")
    print(f"speed-up per sentence (paired): {spread(ratios)}")
    print(f"identical samples: {identical}/{len(texts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""tiny-ar's streaming cost: the decoder seeing everything before each chunk (stream_context=0, the
default) against a window of the last --context frames (prompt tail and earlier chunks), side by side per
item, interleaved (A, B, A, B ...), medians with their spread: real-time factor of the whole
stream, first-packet latency, and the non-streaming call for reference. Same seed, so both
streams sample the same level-1 tokens; only the decoder's context differs.

Usage: python benchmarks/ar_stream.py [--items 8] [--context 96] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import spread  # noqa: E402


def _stream(system, item) -> tuple[float, float, float]:
    """(seconds in all, seconds to the first packet, seconds of audio)."""
    start = time.perf_counter()
    first, samples = None, 0
    for piece in system.synthesize_stream(item.text, item.prompt, item):
        if first is None:
            first = time.perf_counter() - start
        samples += len(piece.samples)
    return time.perf_counter() - start, first or 0.0, samples / 16000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=8, help="tts-seen items (each timed once per contender)")
    parser.add_argument("--context", type=int, default=96, help="the windowed contender's stream_context (frames)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the runner's default is 1)")
    parser.add_argument("--json", action="store_true", help="print the measurements as one JSON object")
    args = parser.parse_args(argv)

    import torch

    from systems.tts.system import TinyAR
    from tasks.tts_eval import TTSSeen

    torch.set_num_threads(args.threads)
    contenders = {"full": TinyAR(stream_context=0), "window": TinyAR(stream_context=args.context)}
    for system in contenders.values():
        system.load()
    items = TTSSeen().items()[: args.items]
    _stream(contenders["full"], items[0])  # warm-up
    _stream(contenders["window"], items[0])
    rows: dict[str, dict[str, list[float]]] = {n: {"rtf": [], "first_s": []} for n in (*contenders, "offline")}
    for item in items:  # interleaved per item: full, window, offline
        for name, system in contenders.items():
            seconds, first, audio_s = _stream(system, item)
            rows[name]["rtf"].append(seconds / audio_s)
            rows[name]["first_s"].append(first)
        start = time.perf_counter()
        audio = contenders["window"].synthesize(item.text, item.prompt, item)
        rows["offline"]["rtf"].append((time.perf_counter() - start) / audio.duration)
    ratios = [f / w for f, w in zip(rows["full"]["rtf"], rows["window"]["rtf"])]
    result = {"items": len(items), "context_frames": args.context, "threads": args.threads,
              "chunk_frames": contenders["window"].options["chunk"],
              "rtf": {n: statistics.median(r["rtf"]) for n, r in rows.items()},
              "first_packet_s": {n: statistics.median(rows[n]["first_s"]) for n in contenders},
              "full_over_window_rtf": statistics.median(ratios), "raw": rows}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"tiny-ar streaming, {len(items)} tts-seen items, chunk {result['chunk_frames']} frames, "
          f"{args.threads} thread(s); medians (IQR)")
    for name in rows:
        first = f"   first packet {spread(rows[name]['first_s'], 2)} s" if name in contenders else ""
        print(f"  {name:8s} RTF {spread(rows[name]['rtf'], 2)}{first}")
    print(f"  full / window, per item: {spread(ratios, 2)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""WER scoring against a plain faster-whisper loop: CPU time and peak memory, side by side.

Both score the same unique clips (the reference recordings of tts-seen and tts-unseen: 40) with
the same Whisper model, compute type and threads, in separate processes run alternately
(harness, anchor, harness, anchor, ...) so that each pays the same noise and reports its own peak
resident memory:
  harness  the `wer` metric's score_batch over all clips (its CPU default: one window at a time,
           the padding's log-mel not transformed)
  anchor   a per-file loop of faster-whisper's own WhisperModel.transcribe on each clip zero-padded
           to 30 s (the protocol), greedy, no timestamps, no VAD, English forced
Printed: medians and spread of the scoring CPU time (process time of all threads, model load
excluded), the harness/anchor ratio per round, and peak RSS; the transcripts of the two agree.
Goals (issue 9): CPU time <= 1.0x the anchor, memory <= anchor + 50 MB.

Usage: python benchmarks/wer_cost.py [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import spread  # noqa: E402


def clips() -> list:
    from bench.audio import read_audio
    from bench.registry import create

    paths = []
    for task in ("tts-seen", "tts-unseen"):
        paths += [it.reference_path for it in create("task", task).items() if it.reference_path]
    unique = sorted(set(paths))
    return [read_audio(p).resampled(16000).samples for p in unique]


def child(role: str) -> None:
    """Load, then score every clip; print one JSON line: cpu and wall seconds, peak RSS, transcripts."""
    import numpy as np

    from bench.metrics.wer import WER, WINDOW_SECONDS

    audio = clips()
    metric = WER()
    if role == "harness":
        metric.load()
        from bench.audio import Audio
        from bench.contracts import MetricInput

        inputs = [MetricInput(item_id=str(k), hypothesis=Audio(a, 16000), text="x") for k, a in enumerate(audio)]
        cpu, wall = time.process_time(), time.perf_counter()
        transcripts = [o.extra["transcript"] for o in metric.score_batch(inputs)]
    else:
        from faster_whisper import WhisperModel

        folder = metric.model_spec.locate()  # the same weights, verified
        model = WhisperModel(str(folder), device="cpu", compute_type=metric.compute_type,
                             cpu_threads=metric.cpu_threads, local_files_only=True)
        from threadpoolctl import threadpool_limits

        window = WINDOW_SECONDS * 16000
        cpu, wall = time.process_time(), time.perf_counter()
        transcripts = []
        # The harness computes the log-mel on one BLAS thread (wer-v3: the rounding, and so the
        # transcripts, change with the thread count); the loop does too, to compare the same numerics.
        with threadpool_limits(limits=1, user_api="blas"):
            for a in audio:
                padded = np.zeros(max(window, len(a)), dtype=np.float32)
                padded[:len(a)] = a
                segments, _ = model.transcribe(padded, language="en", beam_size=1, temperature=0.0,
                                               without_timestamps=True, condition_on_previous_text=False,
                                               vad_filter=False)
                transcripts.append("".join(s.text for s in segments).strip())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"role": role, "cpu_s": cpu, "wall_s": wall, "peak_rss_mb": rss_mb, "clips": len(audio),
                      "transcripts": transcripts}))


def run(role: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", role], check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=("harness", "anchor"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    results: dict[str, list[dict]] = {"harness": [], "anchor": []}
    for _ in range(args.rounds):
        for role in ("harness", "anchor"):
            results[role].append(run(role))
    cpu = {r: [x["cpu_s"] for x in v] for r, v in results.items()}
    rss = {r: [x["peak_rss_mb"] for x in v] for r, v in results.items()}
    ratios = [h / a for h, a in zip(cpu["harness"], cpu["anchor"])]
    agree = sum(h == a for h, a in zip(results["harness"][0]["transcripts"], results["anchor"][0]["transcripts"]))
    summary = {"clips": results["harness"][0]["clips"], "rounds": args.rounds,
               "cpu_s": {r: statistics.median(v) for r, v in cpu.items()},
               "cpu_ratio_rounds": [round(r, 3) for r in ratios], "cpu_ratio": statistics.median(ratios),
               "peak_rss_mb": {r: statistics.median(v) for r, v in rss.items()},
               "rss_difference_mb": statistics.median(rss["harness"]) - statistics.median(rss["anchor"]),
               "transcripts_identical": agree, "goals": {"cpu_ratio": 1.0, "rss_difference_mb": 50}}
    if args.json:
        print(json.dumps(summary))
        return 0
    n = summary["clips"]
    print(f"WER scoring of {n} unique clips, whisper-base, CPU; {args.rounds} interleaved rounds")
    for role in ("harness", "anchor"):
        print(f"  {role:8s} CPU {spread(cpu[role], 1)} s   peak RSS {spread(rss[role], 0)} MB")
    print(f"  harness / anchor CPU time: {spread(ratios, 3)} (goal <= 1.0)")
    print(f"  peak memory difference: {summary['rss_difference_mb']:+.0f} MB (goal <= +50 MB)")
    print(f"  identical transcripts: {agree}/{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

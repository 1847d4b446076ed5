"""Scoring speed, measured side by side in one run (this machine is noisy: read the ratios).

1. A cached re-run against the first run: the same `bench run` command in a fresh output folder,
   first with an empty score cache, then with the cache the first run filled. Whole processes,
   interleaved (cold, warm, cold, warm, ...); medians with their spread and the per-round ratio.
   Goal: re-run >= 20x faster.
2. Batched scoring against a per-file loop that reloads nothing: every evaluator loaded once, then
   the task's items scored one call per file, in batches, and through the harness's scoring path,
   interleaved per round; medians with spread.   Goal: >= 2x faster.

Usage: python benchmarks/scoring_speed.py [--task librivox-mini] [--systems ground-truth,flite] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import paired_ratios, spread  # noqa: E402


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def cached_rerun(task: str, systems: str, repeats: int, quiet: bool) -> dict:
    bench = str(Path(sys.executable).with_name("bench"))
    cold, warm = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeats):
            env = {**os.environ, "BENCH_SCORE_CACHE": f"{tmp}/cache{k}"}
            base = [bench, "run", "--systems", systems, "--task", task, "--no-progress"]
            cold.append(timed(base + ["--out", f"{tmp}/cold{k}"], env))
            warm.append(timed(base + ["--out", f"{tmp}/warm{k}"], env))
    ratios = paired_ratios(cold, warm)
    result = {"cold_s": cold, "warm_s": warm, "speedup_rounds": ratios, "speedup": statistics.median(ratios), "goal": 20}
    if not quiet:
        print(f"cached re-run: first run {spread(cold, 2)} s, re-run {spread(warm, 2)} s; "
              f"speed-up per round {spread(ratios, 1)}x (goal >= 20x)")
    return result


def batched_vs_loop(task_name: str, repeats: int, batch_size: int, quiet: bool) -> dict:
    """Per-file loop vs (a) the metric's own batches and (b) the harness's scoring path (batches,
    identical inputs scored once), every evaluator loaded once before timing, score cache off."""
    from bench.jsonio import JsonlAppender
    from bench.runner import RunOptions, build_metrics, load_task
    from bench.scoring import AudioMemo, ScoreCache, ScoreJob, _prepare, score_metric

    task, items = load_task(task_name, {}, None)
    metrics, unavailable = build_metrics(task, RunOptions(out_root=Path(".")))
    memo = AudioMemo()
    # Hypotheses: the task's own reference recordings (the ground-truth system's output).
    jobs = [ScoreJob("ground-truth", it, it.reference_path) for it in items if it.reference_path]
    log = (lambda *a, **k: None) if quiet else print
    log(f"batched vs per-file: {len(jobs)} items, metrics {[m.name for m in metrics]}"
        + (f" (unavailable: {sorted(unavailable)})" if unavailable else ""))
    totals = {"loop": 0.0, "batched": 0.0, "harness": 0.0}
    per_metric: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for metric in metrics:
            inputs = [p for p in (_prepare(metric, j, memo) for j in jobs) if not isinstance(p, str)]
            metric.load()
            metric.score_batch(inputs[:1])  # warm-up: first-call initialisation is not scoring
            times: dict[str, list[float]] = {k: [] for k in totals}
            for rep in range(repeats):
                start = time.perf_counter()
                for inp in inputs:
                    metric.score_batch([inp])
                times["loop"].append(time.perf_counter() - start)
                start = time.perf_counter()
                for i in range(0, len(inputs), batch_size):
                    metric.score_batch(inputs[i:i + batch_size])
                times["batched"].append(time.perf_counter() - start)
                start = time.perf_counter()
                with JsonlAppender(Path(tmp) / f"{metric.name}-{rep}.jsonl") as out:
                    score_metric(metric, jobs, out, cache=ScoreCache(enabled=False), memo=memo,
                                 batch_size=batch_size)
                times["harness"].append(time.perf_counter() - start)
            med = {k: statistics.median(v) for k, v in times.items()}
            for k in totals:
                totals[k] += med[k]
            per_metric[metric.name] = {**{f"{k}_s": v for k, v in times.items()},
                                       "batched_speedup_rounds": paired_ratios(times["loop"], times["batched"]),
                                       "harness_speedup_rounds": paired_ratios(times["loop"], times["harness"])}
            log(f"  {metric.name:12s} per-file {spread(times['loop'], 2)} s  batched {spread(times['batched'], 2)} s "
                f"({med['loop'] / med['batched']:5.2f}x)  harness {spread(times['harness'], 2)} s "
                f"({med['loop'] / med['harness']:5.2f}x)")
    log(f"  {'all':12s} per-file {totals['loop']:7.2f} s  batched {totals['batched']:7.2f} s "
        f"({totals['loop'] / totals['batched']:5.2f}x)  harness {totals['harness']:7.2f} s "
        f"({totals['loop'] / totals['harness']:5.2f}x)   goal >= 2x")
    log("  batched: the metric's own batches; harness: bench's scoring path, which also scores identical\n"
          "  inputs once (here each target recording appears with two prompts). On CPU, Whisper's cost is\n"
          "  a fixed 30-s window per clip, so batching WER gains little; a GPU gains more.")
    return {"items": len(jobs), "metrics": per_metric, "median_totals_s": totals,
            "batched_speedup": totals["loop"] / totals["batched"], "harness_speedup": totals["loop"] / totals["harness"],
            "goal": 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="librivox-mini")
    ap.add_argument("--systems", default="ground-truth,flite")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--only", choices=["rerun", "batch"], help="run one of the two measurements")
    ap.add_argument("--json", action="store_true", help="print the measurements as one JSON object")
    args = ap.parse_args()
    result: dict = {"task": args.task, "repeats": args.repeats}
    if args.only != "batch":
        result["cached_rerun"] = cached_rerun(args.task, args.systems, args.repeats, args.json)
    if args.only != "rerun":
        result["batched_vs_loop"] = batched_vs_loop(args.task, args.repeats, args.batch_size, args.json)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()

"""The Ray executor against the local one on this machine, side by side in one run.

A scoring job (default: WER, the heaviest evaluator, on every generated clip of a finished run
folder, 60 clips for `make demo`'s librivox-mini run) is scored from scratch (no score cache) by
the local executor, by Ray with 1 worker holding both CPUs (`--ray-cpus-per-worker 2`: the same
math threads as the local evaluator, so the difference is Ray's own cost), by Ray with 1 worker of
1 CPU and by Ray with 2 workers of 1 CPU, interleaved per round (local, ray-1x2, ray-1, ray-2,
local, ...). Each job includes what a user waits for: loading the evaluator (in each Ray actor)
and scoring; the Ray cluster itself is started once before timing, as a cluster is long-lived.
Printed: medians with spread, Ray's overhead on one machine (ray-1x2 / local - 1; goal under
15 %) and throughput in clips per second with 1 and 2 workers.
The scores of every job are compared with the first local job's: the largest difference is printed
(the last bits can differ where an evaluator's math library splits work by thread count: a Ray
actor has its declared CPUs' threads, the local executor all cores').

Usage: python benchmarks/ray_overhead.py [--run-folder runs/librivox-mini-HASH] [--metric wer]
                                         [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import paired_ratios, spread  # noqa: E402


def score_job(source: Path, metric: str, executor, out_root: Path) -> tuple[float, dict]:
    """Seconds to score the source run's generations with `metric`, and the values per item."""
    from bench.jsonio import read_json, read_jsonl
    from bench.runner import Run, RunOptions

    spec = read_json(source / "spec.json")["spec"]
    systems = [s.get("name") if not s.get("variant") else f"{s['name']}@{s['variant']}" for s in spec["systems"]]
    opts = RunOptions(out_root=out_root, metric_names=[metric], use_cache=False, progress=False, executor=executor)
    run = Run(systems, spec["task"]["name"], opts)
    run._write_or_check_spec()
    shutil.copy(source / "generations.jsonl", run.folder / "generations.jsonl")
    shutil.copytree(source / "audio", run.folder / "audio")
    start = time.perf_counter()
    run.score()
    seconds = time.perf_counter() - start
    values = {(r["system"], r["item_id"]): r["values"] for r in read_jsonl(run.folder / "scores.jsonl")}
    return seconds, values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-folder", type=Path, help="a finished run with its audio (default: the runs/librivox-mini-* "
                                                        "folder with the most clips, e.g. from `make demo`)")
    parser.add_argument("--metric", default="wer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import ray

    from bench.executor import ExecutorOptions
    from bench.jsonio import read_jsonl

    if args.run_folder is None:
        found = [f for f in (ROOT / "runs").glob("librivox-mini-*") if (f / "audio").is_dir()]
        if not found:
            raise SystemExit("no run folder with audio in runs/: run `make demo` first, or give --run-folder")
        args.run_folder = max(found, key=lambda f: sum(1 for _ in (f / "audio").rglob("*.wav")))
    clips = sum(1 for g in read_jsonl(args.run_folder / "generations.jsonl") if g["status"] == "ok")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    contenders = {"local": ExecutorOptions(), "ray-1x2": ExecutorOptions(kind="ray", workers=1, cpus_per_worker=2),
                  "ray-1": ExecutorOptions(kind="ray", workers=1), "ray-2": ExecutorOptions(kind="ray", workers=2)}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    reference = None
    largest = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            for name, executor in contenders.items():
                seconds, values = score_job(args.run_folder, args.metric, executor, Path(tmp) / f"{name}-{k}")
                times[name].append(seconds)
                reference = reference if reference is not None else values
                if set(values) != set(reference):
                    raise SystemExit(f"{name} scored other items than local: {sorted(set(values) ^ set(reference))[:5]}")
                largest = max([largest] + [abs(v - reference[key].get(name_, float("nan")))
                                           for key, vals in values.items() for name_, v in vals.items()])
    ray.shutdown()
    overhead = [r - 1 for r in paired_ratios(times["ray-1x2"], times["local"])]
    one_cpu = [r - 1 for r in paired_ratios(times["ray-1"], times["local"])]
    result = {"metric": args.metric, "clips": clips, "rounds": args.rounds, "seconds": times,
              "overhead_rounds": overhead, "overhead": statistics.median(overhead), "goal_overhead": 0.15,
              "ray1_one_cpu_slowdown": statistics.median(one_cpu),
              "clips_per_s": {name: clips / statistics.median(t) for name, t in times.items()},
              "ray2_speedup_over_ray1": statistics.median(paired_ratios(times["ray-1"], times["ray-2"])),
              "largest_score_difference": largest}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"scoring {clips} clips with {args.metric} from {args.run_folder.name}, no score cache, "
          f"{args.rounds} interleaved rounds")
    for name in contenders:
        print(f"  {name:7s} {spread(times[name], 2)} s   {result['clips_per_s'][name]:.2f} clips/s")
    print(f"Ray's overhead, 1 worker with the local executor's 2 CPUs: {spread([100 * o for o in overhead], 1)} % "
          f"(goal < 15 %)")
    print(f"1 worker of 1 CPU against local (2 CPUs): {spread([100 * o for o in one_cpu], 1)} % slower")
    print(f"2 Ray workers against 1: {result['ray2_speedup_over_ray1']:.2f}x; largest score difference from "
          f"local: {largest:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

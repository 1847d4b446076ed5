"""Throughput of the harness beside the raw cost of the models and evaluators it drives.

1. `bench run` on the embedded task (the systems of `make demo`, `--limit` items, fresh score
   cache), as a whole process, against a plain in-process script doing the same work: load each
   system once and synthesise every item, load each metric once and score each distinct output
   in batches (the harness scores an input it has seen once, too).
   Interleaved (harness, harness with --no-warmup, plain, ...). Printed: items per minute of each
   and the harness's overhead, harness / plain - 1 (goal under 5 %).
2. `bench score` per metric: seconds of audio scored per second through the harness's scoring path
   (every job of the ground truth) against the metric's own batches over the distinct inputs,
   which is all the harness scores (evaluator loaded once for both; both read the audio files in
   each round).
3. A sweep (tiny-llama-m at 512 tokens, three prefill methods, 4 and 16 samples, interleaved):
   evaluations per minute once started (the marginal wall time per evaluation) against a plain
   loop over the same evaluations in a fresh process (and the forward pass alone, the records' `seconds`);
   the fixed cost of a sweep (process start, model load, samples) apart.

Usage: python benchmarks/throughput.py [--limit 4] [--rounds 3] [--only run|score|sweep] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import paired_ratios, spread  # noqa: E402

DEMO_SYSTEMS = "ground-truth,vocoder-ceiling,tiny-ar,tiny-nar,tiny-flow,flite"
TASK = "librivox-mini"


def bench_run(out: Path, limit: int, cache: Path, warmup: bool = True) -> float:
    cmd = [str(Path(sys.executable).with_name("bench")), "run", "--systems", DEMO_SYSTEMS, "--task", TASK,
           "--limit", str(limit), "--out", str(out), "--no-progress", *([] if warmup else ["--no-warmup"])]
    start = time.perf_counter()
    subprocess.run(cmd, env={**os.environ, "BENCH_SCORE_CACHE": str(cache)}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def plain_script(limit: int) -> float:
    """The same generation and scoring without the harness: a fresh process, as a user's script.
    Like the harness, it scores each distinct input of a metric once: on librivox-mini each target
    sentence comes with two prompts, so the outputs of ground-truth, vocoder-ceiling and flite
    (which ignore the prompt) repeat, and a metric that reads no prompt would score them twice."""
    code = f"""
import hashlib, sys, time
sys.path.insert(0, {str(ROOT)!r})
from bench import registry
from bench.audio import Audio
from bench.contracts import MetricInput
from bench.runner import RunOptions, build_metrics, load_task
task, items = load_task({TASK!r}, {{}}, {limit})
metrics, _ = build_metrics(task, RunOptions(out_root='.'))
outputs = []
for name in {DEMO_SYSTEMS!r}.split(','):
    system = registry.create('system', name, **({{'seed': 0}} if getattr(registry.get_class('system', name), 'takes_seed', False) else {{}}))
    system.load()
    for item in items:
        chunks = list(system.synthesize_stream(item.text, item.prompt, item))
        audio = Audio(__import__('numpy').concatenate([c.samples for c in chunks]), chunks[0].sample_rate)
        outputs.append((item, audio))
for metric in metrics:
    metric.load()
    inputs, seen = [], set()
    for item, audio in outputs:
        key = (hashlib.sha256(audio.samples.tobytes()).hexdigest(), item.text, item.language,
               item.reference_path if 'reference' in metric.needs else None,
               item.prompt.audio_path if 'prompt' in metric.needs and item.prompt else None)
        if key in seen:
            continue
        seen.add(key)
        inp = MetricInput(item_id=item.id, hypothesis=audio.resampled(metric.sample_rate), text=item.text,
                          language=item.language)
        if 'reference' in metric.needs and item.reference_path:
            from bench.audio import read_audio
            inp.reference = read_audio(item.reference_path).resampled(metric.sample_rate)
        if 'prompt' in metric.needs and item.prompt:
            from bench.audio import read_audio
            inp.prompt = read_audio(item.prompt.audio_path).resampled(metric.sample_rate)
        inputs.append(inp)
    for i in range(0, len(inputs), 16):
        metric.score_batch(inputs[i:i + 16])
"""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_vs_plain(limit: int, rounds: int, quiet: bool) -> dict:
    n_items = limit * len(DEMO_SYSTEMS.split(","))
    harness, cold, plain = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(rounds):
            harness.append(bench_run(Path(tmp) / f"out{k}", limit, Path(tmp) / f"cache{k}"))
            cold.append(bench_run(Path(tmp) / f"cold{k}", limit, Path(tmp) / f"coldcache{k}", warmup=False))
            plain.append(plain_script(limit))
    overhead = [r - 1 for r in paired_ratios(harness, plain)]
    overhead_cold = [r - 1 for r in paired_ratios(cold, plain)]
    # The default run synthesises one untimed warm-up item per system (so RTF leaves out first-call
    # costs); the plain script does not, so --no-warmup is the like-for-like comparison.
    result = {"items": n_items, "harness_s": harness, "harness_no_warmup_s": cold, "plain_s": plain,
              "harness_items_per_min": 60 * n_items / statistics.median(harness),
              "harness_no_warmup_items_per_min": 60 * n_items / statistics.median(cold),
              "plain_items_per_min": 60 * n_items / statistics.median(plain),
              "overhead_rounds": overhead, "overhead": statistics.median(overhead),
              "overhead_no_warmup_rounds": overhead_cold, "overhead_no_warmup": statistics.median(overhead_cold),
              "goal": 0.05}
    if not quiet:
        print(f"bench run, {TASK} x {limit} items x {len(DEMO_SYSTEMS.split(','))} systems ({n_items} items): "
              f"harness {spread(harness, 1)} s = {result['harness_items_per_min']:.1f} items/min; "
              f"with --no-warmup {spread(cold, 1)} s; plain script {spread(plain, 1)} s = "
              f"{result['plain_items_per_min']:.1f} items/min; overhead {spread([100 * o for o in overhead], 1)} %, "
              f"without the warm-up {spread([100 * o for o in overhead_cold], 1)} % (goal < 5 %)")
    return result


MIN_MEASURE_S = 1.5  # a measurement shorter than this is repeated: 0.2-s timings are all noise


def score_per_metric(rounds: int, quiet: bool) -> dict:
    from bench.jsonio import JsonlAppender
    from bench.runner import RunOptions, build_metrics, load_task
    from bench.scoring import AudioMemo, ScoreCache, ScoreJob, _prepare, cache_key, score_metric

    task, items = load_task(TASK, {}, None)
    metrics, _ = build_metrics(task, RunOptions(out_root=Path(".")))
    jobs = [ScoreJob("ground-truth", it, it.reference_path) for it in items if it.reference_path]
    out: dict = {}

    def read_inputs(metric, jobs):  # what a plain script does first: read (and resample) each file
        memo = AudioMemo()
        return [p for p in (_prepare(metric, j, memo) for j in jobs) if not isinstance(p, str)]

    def distinct_jobs(metric):
        """One job per distinct input, as the harness scores them: each target recording appears
        with two prompts, the same input for a metric that reads no prompt and two for SIM."""
        memo, identity, first = AudioMemo(), metric.identity(), {}
        for job in jobs:
            prepared = _prepare(metric, job, memo)
            if not isinstance(prepared, str):
                first.setdefault(cache_key(metric, prepared, identity=identity, hash_audio=memo.content_hash), job)
        return list(first.values())

    with tempfile.TemporaryDirectory() as tmp:
        for metric in metrics:
            unique = distinct_jobs(metric)
            inputs = read_inputs(metric, unique)
            audio_s = sum(inp.hypothesis.duration for inp in inputs)
            metric.load()
            metric.score_batch(inputs[:1])

            def raw_once():
                inputs = read_inputs(metric, unique)
                for i in range(0, len(inputs), 16):
                    metric.score_batch(inputs[i:i + 16])

            def harness_once(tag):
                # A fresh memo, as a new `bench score` has (files read and clips hashed once per run).
                with JsonlAppender(Path(tmp) / f"{metric.name}-{tag}.jsonl") as sink:
                    score_metric(metric, jobs, sink, cache=ScoreCache(enabled=False), memo=AudioMemo(), batch_size=16)

            start = time.perf_counter()
            raw_once()
            repeat = max(1, math.ceil(MIN_MEASURE_S / (time.perf_counter() - start)))
            raw, harness = [], []
            for k in range(rounds):  # interleaved: raw, harness, raw, harness ...
                start = time.perf_counter()
                for _ in range(repeat):
                    raw_once()
                raw.append((time.perf_counter() - start) / repeat)
                start = time.perf_counter()
                for r in range(repeat):
                    harness_once(f"{k}-{r}")
                harness.append((time.perf_counter() - start) / repeat)
            overhead = [r - 1 for r in paired_ratios(harness, raw)]
            out[metric.name] = {"audio_s": audio_s, "distinct_inputs": len(unique), "repeat": repeat,
                                "raw_s": raw, "harness_s": harness,
                                "audio_s_per_s": audio_s / statistics.median(harness),
                                "raw_audio_s_per_s": audio_s / statistics.median(raw),
                                "overhead": statistics.median(overhead)}
            if not quiet:
                print(f"bench score {metric.name:11s} {out[metric.name]['audio_s_per_s']:7.1f} s of audio per s "
                      f"(raw {out[metric.name]['raw_audio_s_per_s']:7.1f}); overhead "
                      f"{spread([100 * o for o in overhead], 1)} %")
    return out


SWEEP_MODEL = "tiny-llama-m"
SWEEP_GRID = ["--tasks", "niah-single", "--lengths", "512", "--prefill-methods", "vertical-slash,block-sparse,streaming",
              "--decode-methods", "", "--compressions", "2,5", "--method-opt", "vertical-slash.local=4",
              "--method-opt", "vertical-slash.last_q=32", "--method-opt", "block-sparse.block=8"]


def _sweep(samples: int) -> tuple[float, list[dict]]:
    from bench.jsonio import read_jsonl

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(Path(sys.executable).with_name("bench")), "sweep", "--models", SWEEP_MODEL, *SWEEP_GRID,
               "--samples", str(samples), "--out", tmp, "--no-analysis", "--no-progress"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start, read_jsonl(next(Path(tmp).glob("*/records.jsonl")))


PLAIN_SWEEP = """
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, {root!r})
from bench import registry
from bench.cli import build_parser, sweep_spec
from bench.sweep import Sweep
from bench.worker import CallResult

system = registry.create("system", {model!r})
system.load()


def loop(samples):
    with tempfile.TemporaryDirectory() as tmp:
        # The spec `bench sweep` builds from the same arguments as the sweep's command line.
        args = build_parser().parse_args(["sweep", "--models", {model!r}, *{grid!r}, "--samples", str(samples),
                                          "--out", tmp])
        sweep = Sweep(sweep_spec(args), Path(tmp), progress=False)
        for sub in ("", "samples", "models"):
            (sweep.folder / sub).mkdir(parents=True, exist_ok=True)

        def call(function, *args, **kwargs):
            return CallResult(getattr(system, function)(*args, **kwargs), 0.0, 0.0, None)

        _, todo = sweep._plan({model!r}, call, frozenset())
        start = time.perf_counter()
        for key, sample in todo:
            args, kwargs = sweep._request(key, sample)
            system.score_sample(*args, **kwargs)
        return time.perf_counter() - start, len(todo)


loop(1)  # first-call costs, as the sweep's worker pays them before its first record
print(json.dumps(loop({samples})))
"""


def _plain_sweep(samples: int) -> tuple[float, int]:
    """The same evaluations as a plain script runs them, in a fresh process as the sweep's worker
    is: the model loaded once, each configuration's score_sample called in a loop (no worker, no
    records). Wall time of the loop, and the number of evaluations."""
    code = PLAIN_SWEEP.format(root=str(ROOT), model=SWEEP_MODEL, grid=SWEEP_GRID, samples=samples)
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    wall, count = json.loads(done.stdout.strip().splitlines()[-1])
    return wall, count


def sweep_throughput(rounds: int, quiet: bool) -> dict:
    """Two sweep sizes, interleaved with a plain loop (in a fresh process) over the larger one's
    evaluations: the sweep's fixed cost (start, model load) is the difference's intercept, and its
    per-evaluation cost is the marginal wall time per evaluation, against the plain loop's wall time
    per evaluation (tokenising, the forward pass, the answer) and the model's own time (the
    records' `seconds`, the forward pass timed inside the worker)."""
    small, large = 4, 16
    walls: dict[int, list[float]] = {small: [], large: []}
    model_per_eval, plain_per_eval = [], []
    n = {}
    for _ in range(rounds):
        for samples in (small, large):
            wall, records = _sweep(samples)
            walls[samples].append(wall)
            n[samples] = len(records)
            model_per_eval.append(sum(r["seconds"] or 0.0 for r in records) / len(records))
        wall, count = _plain_sweep(large)
        plain_per_eval.append(wall / count)
    marginal = [(b - a) / (n[large] - n[small]) for a, b in zip(walls[small], walls[large])]
    model, plain = statistics.median(model_per_eval), statistics.median(plain_per_eval)
    fixed = statistics.median(walls[small]) - n[small] * statistics.median(marginal)
    overhead = [m / p - 1 for m, p in zip(marginal, plain_per_eval)]  # round by round
    result = {"evaluations": n, "wall_s": {str(k): v for k, v in walls.items()},
              "marginal_s_per_eval": marginal, "plain_s_per_eval": plain_per_eval, "model_s_per_eval": model,
              "fixed_s": fixed, "evaluations_per_min": 60 / statistics.median(marginal),
              "plain_evaluations_per_min": 60 / plain, "overhead_rounds": overhead,
              "overhead_per_eval": statistics.median(overhead),
              "overhead_vs_forward_pass": statistics.median(marginal) / model - 1, "goal": 0.05}
    if not quiet:
        print(f"bench sweep: {result['evaluations_per_min']:.0f} evaluations/min once started (marginal "
              f"{spread([1000 * m for m in marginal], 1)} ms per evaluation); a plain loop "
              f"{spread([1000 * p for p in plain_per_eval], 1)} ms; overhead {spread([100 * o for o in overhead], 1)} % "
              f"(against the forward pass alone, {1000 * model:.1f} ms: "
              f"{100 * result['overhead_vs_forward_pass']:.0f} %); fixed cost per sweep {fixed:.1f} s "
              f"(process start, model load, samples)")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("run", "score", "sweep"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result: dict = {}
    if args.only in (None, "run"):
        result["run"] = run_vs_plain(args.limit, args.rounds, args.json)
    if args.only in (None, "score"):
        result["score"] = score_per_metric(args.rounds, args.json)
    if args.only in (None, "sweep"):
        result["sweep"] = sweep_throughput(args.rounds, args.json)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a sweep's prefill methods cost against the dense prompt pass, measured side by side.

For each prefill method of the committed sweep (with the sweep's own structure options) at each
compression, one prompt pass of `--length` tokens through `--model` (every layer: q/k/v, the
method's pattern search, the masked attention, the MLP) is timed against the dense pass,
interleaved (dense, method, dense, method, ...), as a ratio of medians with the per-round spread.
The split says where a method's time goes: the pattern search (`pattern(q, k)`, timed on the same
layers' q and k) against the rest of the pass.   Goal (issue 9): every configuration <= 3x dense.

Usage: python benchmarks/prefill_method_cost.py [--model tiny-llama-m] [--length 512] [--rounds 7]
       [--compressions 2,5,12] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import interleaved, paired_ratios, spread  # noqa: E402

SWEEP_SPEC = Path(__file__).resolve().parent / "results" / "sparse-sweep-7015713d1718" / "spec.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-llama-m")
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--compressions", default="2,5,12")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the measurements as one JSON object")
    args = parser.parse_args(argv)

    import torch

    from bench.registry import create
    from systems.lm.attention import PREFILL_METHODS, make_method
    from systems.lm.runtime import prompt_pass

    torch.set_num_threads(args.threads)
    spec = json.loads(SWEEP_SPEC.read_text())["spec"]
    model = create("system", args.model)
    model.load()
    decoder = model.decoder()
    ids = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, 200, (args.length,), generator=ids).tolist()
    dense = make_method("dense")
    state = prompt_pass(decoder, prompt, dense)  # every layer's q and k, for timing the search alone

    rows = []
    for name in [m for m in spec["prefill_methods"] if m in PREFILL_METHODS]:
        options = spec["method_options"].get(name, {})
        for compression in [float(c) for c in args.compressions.split(",")]:
            method = make_method(name, "prefill", compression=compression, **options)

            def search() -> None:
                for q, k, _ in state.layers:
                    method.pattern(q, k)

            times = interleaved({"dense": lambda: prompt_pass(decoder, prompt, dense),
                                 "method": lambda: prompt_pass(decoder, prompt, method),
                                 "search": search}, args.rounds)
            ratios = paired_ratios(times["method"], times["dense"])  # method / dense per round
            row = {"method": name, "compression": compression, "options": options,
                   "dense_s": statistics.median(times["dense"]), "method_s": statistics.median(times["method"]),
                   "search_s": statistics.median(times["search"]),
                   "cost_vs_dense": statistics.median(times["method"]) / statistics.median(times["dense"]),
                   "cost_vs_dense_rounds": [round(r, 3) for r in ratios]}
            row["search_share"] = row["search_s"] / row["method_s"]
            rows.append(row)
            if not args.json:
                print(f"{name:15s} C={compression:<5g} {row['cost_vs_dense']:5.2f}x dense "
                      f"(per round {spread(ratios, 2)}); pattern search {100 * row['search_share']:.0f}% "
                      f"of the method's pass; dense {spread(times['dense'])} s")
    worst = max(r["cost_vs_dense"] for r in rows)
    result = {"model": args.model, "length": args.length, "rounds": args.rounds, "threads": args.threads,
              "rows": rows, "worst_cost_vs_dense": worst, "goal": 3.0}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"worst configuration: {worst:.2f}x the dense prompt pass (goal <= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

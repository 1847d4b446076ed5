"""Wall time of Block-Sparse top-k (block-gather kernel) against dense causal attention.

Measured side by side in one run, interleaved (dense, C=2, C=4, ..., dense, C=2, ...), on the same
random q/k/v: torch SDPA with is_causal=True (the dense baseline) and
BlockSparse(implementation="gather") at several compression ratios. The speed-up is the median of
the per-round ratios dense / block-sparse, with its spread; the ideal speed-up is the FLOPs ratio
of the attention itself: causal pairs / attended pairs (selection overhead, the pooled block
scores, is not in it).

    python benchmarks/sparse_prefill_speed.py                 # L=8192, 8 heads, d=64
    python benchmarks/sparse_prefill_speed.py --length 4096 --check
    python benchmarks/sparse_prefill_speed.py --json          # one JSON object
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import interleaved, paired_ratios, spread  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--compressions", type=float, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (each times every contender once)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for both methods (default 1: on a shared machine, "
                             "multi-threaded small ops wait on descheduled threads and the timings mean little)")
    parser.add_argument("--check", action="store_true",
                        help="also compare the gather output with the masked reference (slow: O(L^2))")
    parser.add_argument("--json", action="store_true", help="print the measurements as one JSON object")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from systems.lm.attention.base import expand_kv
    from systems.lm.attention.block_sparse import BlockSparse

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    q = torch.randn(1, args.heads, args.length, args.head_dim)
    k = torch.randn(1, args.kv_heads, args.length, args.head_dim)
    v = torch.randn(1, args.kv_heads, args.length, args.head_dim)

    def dense() -> None:
        F.scaled_dot_product_attention(q, expand_kv(k, args.heads), expand_kv(v, args.heads), is_causal=True)

    methods = {c: BlockSparse(c, block=args.block) for c in args.compressions}
    results = {c: m(q, k, v) for c, m in methods.items()}
    contenders = {"dense": dense, **{f"C={c:g}": (lambda m=m: m(q, k, v)) for c, m in methods.items()}}
    times = interleaved(contenders, args.rounds)
    rows = []
    for c in args.compressions:
        sparsity = float(results[c].sparsity[0])
        ratios = paired_ratios(times["dense"], times[f"C={c:g}"])
        ideal = 1 / (1 - sparsity)
        rows.append({"compression": c, "sparsity": sparsity, "ideal": ideal, "speedup": statistics.median(ratios),
                     "percent_of_ideal": 100 * statistics.median(ratios) / ideal, "top_k": results[c].budget["top_k"],
                     "ratios": ratios, "seconds": times[f"C={c:g}"]})
    if args.json:
        print(json.dumps({"length": args.length, "heads": args.heads, "head_dim": args.head_dim, "block": args.block,
                          "threads": args.threads, "rounds": args.rounds, "dense_seconds": times["dense"],
                          "levels": [{k: r[k] for k in ("compression", "sparsity", "ideal", "speedup",
                                                         "percent_of_ideal")} for r in rows]}))
        return
    print(f"# block-gather Block-Sparse vs dense SDPA (causal), float32, batch 1, L={args.length}, "
          f"heads={args.heads}, kv_heads={args.kv_heads}, d={args.head_dim}, block={args.block}")
    print(f"# {args.rounds} interleaved rounds; speed-up = median of per-round dense/block-sparse ratios; "
          "ideal = causal pairs / attended pairs")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"dense (SDPA): seconds {spread(times['dense'])}")
    for r in rows:
        print(f"block-sparse C={r['compression']:g} (top_k {r['top_k']}, sparsity {r['sparsity']:.3f}): seconds "
              f"{spread(r['seconds'])}; speed-up {spread(r['ratios'], 2)}, ideal {r['ideal']:.2f}, "
              f"{r['percent_of_ideal']:.0f} % of ideal")
        if args.check:
            reference = BlockSparse(r["compression"], block=args.block, implementation="mask")(q, k, v).output
            output = methods[r["compression"]](q, k, v).output
            print(f"    max |gather - masked reference| = {(output - reference).abs().max().item():.2e}")


if __name__ == "__main__":
    main()

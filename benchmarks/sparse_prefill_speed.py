"""Wall time of Block-Sparse top-k (block-gather kernel) against dense causal attention.

Measured side by side in one run, on the same random q/k/v: torch SDPA with is_causal=True (the
dense baseline) and BlockSparse(implementation="gather") at several compression ratios. The ideal
speed-up is the FLOPs ratio of the attention itself: causal pairs / attended pairs (selection
overhead, the pooled block scores, is not in it). Times are the minimum and the median of
--repeats runs after one warm-up run (the minimum is the least disturbed by other processes).

    python benchmarks/sparse_prefill_speed.py                 # L=8192, 8 heads, d=64
    python benchmarks/sparse_prefill_speed.py --length 4096 --check
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time


def timed(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--compressions", type=float, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for both methods (default 1: on a shared machine, "
                             "multi-threaded small ops wait on descheduled threads and the timings mean little)")
    parser.add_argument("--check", action="store_true",
                        help="also compare the gather output with the masked reference (slow: O(L^2))")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from systems.lm.attention.base import expand_kv
    from systems.lm.attention.block_sparse import BlockSparse

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = (1, args.heads, args.length, args.head_dim)
    q = torch.randn(shape)
    k = torch.randn(1, args.kv_heads, args.length, args.head_dim)
    v = torch.randn(1, args.kv_heads, args.length, args.head_dim)
    print(f"# block-gather Block-Sparse vs dense SDPA (causal), float32, batch 1, L={args.length}, "
          f"heads={args.heads}, kv_heads={args.kv_heads}, d={args.head_dim}, block={args.block}")
    print(f"# speed-up = dense min time / block-sparse min time; ideal = causal pairs / attended pairs")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")

    def dense() -> None:
        F.scaled_dot_product_attention(q, expand_kv(k, args.heads), expand_kv(v, args.heads), is_causal=True)

    dense_time, dense_median = timed(dense, args.repeats)
    print(f"{'method':<14}{'C asked':>8}{'top_k':>7}{'sparsity':>10}{'min s':>8}{'median s':>10}"
          f"{'speed-up':>10}{'ideal':>8}")
    print(f"{'dense (SDPA)':<14}{1:>8}{'-':>7}{0:>10.3f}{dense_time:>8.3f}{dense_median:>10.3f}{1:>10.2f}{1:>8.2f}")
    for compression in args.compressions:
        method = BlockSparse(compression, block=args.block)
        result = method(q, k, v)
        sparsity = float(result.sparsity[0])
        elapsed, median = timed(lambda: method(q, k, v), args.repeats)
        print(f"{'block-sparse':<14}{compression:>8g}{result.budget['top_k']:>7}{sparsity:>10.3f}"
              f"{elapsed:>8.3f}{median:>10.3f}{dense_time / elapsed:>10.2f}{1 / (1 - sparsity):>8.2f}")
        if args.check:
            reference = BlockSparse(compression, block=args.block, implementation="mask")(q, k, v).output
            print(f"    max |gather - masked reference| = {(result.output - reference).abs().max().item():.2e}")


if __name__ == "__main__":
    main()

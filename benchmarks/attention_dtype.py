"""Would a bfloat16 KV cache speed up toy-large's decode at large batch? Times one layer's decode
attention (one new token per row over a cache of `--span` slots) in float32 and in bfloat16, with
SDPA as the native engine calls it and as plain matmul-softmax-matmul, side by side in one run.

    python attention_dtype.py [--rows 64] [--span 430] [--threads 1]

Ends with one JSON line: bfloat16 time over float32 time for each form (above 1: bfloat16 is slower).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

HEADS, HEAD_DIM = 3, 32  # toy-large's attention


def best_ms(work, rounds: int = 5, calls: int = 100) -> float:
    for _ in range(10):
        work()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            work()
        times.append((time.perf_counter() - started) / calls * 1e3)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--span", type=int, default=430, help="cached slots attended (toy-large's long rows: ~430)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    capacity = 2 * args.span  # the engine attends a view of a larger cache
    figures = {}
    for dtype in (torch.float32, torch.bfloat16):
        keys = torch.randn(args.rows, HEADS, capacity, HEAD_DIM, dtype=dtype)[:, :, : args.span]
        values = torch.randn(args.rows, HEADS, capacity, HEAD_DIM, dtype=dtype)[:, :, : args.span]
        query = torch.randn(args.rows, HEADS, 1, HEAD_DIM, dtype=dtype)
        mask = torch.zeros(args.rows, 1, 1, args.span, dtype=dtype)
        name = str(dtype).removeprefix("torch.")
        figures[f"sdpa_{name}_ms"] = best_ms(
            lambda q=query, k=keys, v=values, m=mask: F.scaled_dot_product_attention(q, k, v, attn_mask=m))
        figures[f"matmul_{name}_ms"] = best_ms(
            lambda q=query, k=keys, v=values, m=mask: torch.softmax(q @ k.transpose(-1, -2) + m, -1) @ v)
    ratios = {form: round(figures[f"{form}_bfloat16_ms"] / figures[f"{form}_float32_ms"], 3)
              for form in ("sdpa", "matmul")}
    for name, value in figures.items():
        print(f"{name}: {value:.3f}")
    print(json.dumps({"rows": args.rows, "span": args.span, "threads": args.threads,
                      **{f"{form}_bfloat16_over_float32": r for form, r in ratios.items()}}))


if __name__ == "__main__":
    main()

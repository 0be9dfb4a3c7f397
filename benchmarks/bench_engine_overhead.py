"""A native forward's fixed CPU cost on the shipped toy models (batch 1, one thread).

Each step feeds `width` tokens to a ~200-token sequence through `LocalRunner.score`, then rolls them
back, so every step sees the same length. Prints the median milliseconds per step: the whole
`score` call and the engine's forward alone. Ends with one JSON line of the ratios that bound
what a small model can save at batch 1: a large forward over a small one, and a 9-token
verification forward over a 1-token one.

With `--rows`, also the cost of a decode step per row at several batch sizes (one token a row
over `--cached` cached tokens): what continuous batching can save on this machine by holding
more rows in one forward.

    python benchmarks/bench_engine_overhead.py [--repeats 300] [--rows 1,8,16,32,64]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch

from relaykit.decoding.sequence import Sequence
from relaykit.models.loading import load_model
from relaykit.runtime.local_runner import LocalRunner

CHECKPOINTS = Path(__file__).resolve().parents[1] / "src" / "relaykit" / "toyworld" / "checkpoints"
CASES = [("toy-small", 1), ("toy-large", 1), ("toy-large", 2), ("toy-large", 9)]


def measure(runner: LocalRunner, width: int, repeats: int, blocks: int = 5) -> tuple[float, float]:
    """Median ms per step over `blocks` blocks: (score call, engine forward)."""
    rng = random.Random(0)
    sequence = Sequence([rng.randrange(3, 182) for _ in range(200)])
    runner.score([sequence], 1)
    length = len(sequence)
    totals, forwards = [], []
    for _ in range(blocks):
        seconds_before = runner.usage.seconds
        started = time.perf_counter()
        for _ in range(repeats):
            sequence.extend([rng.randrange(3, 182) for _ in range(width)], "small")
            runner.score([sequence], width)
            sequence.truncate(length)
        totals.append((time.perf_counter() - started) / repeats * 1e3)
        forwards.append((runner.usage.seconds - seconds_before) / repeats * 1e3)
    runner.release(sequence)
    return statistics.median(totals), statistics.median(forwards)


def per_row(model, rows: int, cached: int, repeats: int = 30) -> float:
    """Median microseconds per row of a decode step of `rows` rows over `cached` tokens each."""
    rng = random.Random(0)
    runner = LocalRunner(model, "large")
    sequences = [Sequence([rng.randrange(3, 182) for _ in range(cached)]) for _ in range(rows)]
    runner.score(sequences, 1)
    steps = []
    for _ in range(repeats):
        for sequence in sequences:
            sequence.append(rng.randrange(3, 182), "large")
        started = time.perf_counter()
        runner.score(sequences, 1)
        steps.append(time.perf_counter() - started)
        for sequence in sequences:
            sequence.truncate(cached)
    return statistics.median(steps) / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--rows", default="", help="batch sizes for the per-row decode cost (comma-separated)")
    parser.add_argument("--cached", type=int, default=300, help="cached tokens a row for --rows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = {name: load_model(str(CHECKPOINTS / name), name=name) for name in dict(CASES)}
    print(f"{'model':<10} {'width':>5} {'score ms':>9} {'forward ms':>11}")
    ms = {}
    for name, width in CASES:
        total, forward = measure(LocalRunner(models[name], "large"), width, args.repeats)
        ms[f"{name}/{width}"] = total
        print(f"{name:<10} {width:>5} {total:>9.3f} {forward:>11.3f}")
    figures = {"benchmark": "engine_overhead", "score_ms": {k: round(v, 3) for k, v in ms.items()},
               "large_over_small": round(ms["toy-large/1"] / ms["toy-small/1"], 2),
               "width9_over_width1": round(ms["toy-large/9"] / ms["toy-large/1"], 2)}
    if args.rows:
        sizes = [int(r) for r in args.rows.split(",")]
        for name in ("toy-small", "toy-large"):
            us = {rows: per_row(models[name], rows, args.cached) for rows in sizes}
            print(f"{name} decode, us a row at {', '.join(f'{r} rows: {v:.0f}' for r, v in us.items())}")
            figures[f"{name}_us_per_row"] = {r: round(v) for r, v in us.items()}
            figures[f"{name}_fewest_over_most_rows"] = round(us[sizes[0]] / us[sizes[-1]], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""A native forward's fixed CPU cost on the shipped toy models (batch 1, one thread).

Each step feeds `width` tokens to a ~200-token sequence through `Runner.score`, then rolls them
back, so every step sees the same length. Prints the median milliseconds per step: the whole
`score` call and the engine's forward alone. Ends with one JSON line of the ratios that bound
what a small model can save at batch 1: a large forward over a small one, and a 9-token
verification forward over a 1-token one.

    python benchmarks/bench_engine_overhead.py [--repeats 300]
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
from relaykit.models.runner import Runner

CHECKPOINTS = Path(__file__).resolve().parents[1] / "src" / "relaykit" / "toyworld" / "checkpoints"
CASES = [("toy-small", 1), ("toy-large", 1), ("toy-large", 2), ("toy-large", 9)]


def measure(runner: Runner, width: int, repeats: int, blocks: int = 5) -> tuple[float, float]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = {name: load_model(str(CHECKPOINTS / name), name=name) for name in dict(CASES)}
    print(f"{'model':<10} {'width':>5} {'score ms':>9} {'forward ms':>11}")
    ms = {}
    for name, width in CASES:
        total, forward = measure(Runner(models[name], "large"), width, args.repeats)
        ms[f"{name}/{width}"] = total
        print(f"{name:<10} {width:>5} {total:>9.3f} {forward:>11.3f}")
    print(json.dumps({"benchmark": "engine_overhead", "score_ms": {k: round(v, 3) for k, v in ms.items()},
                      "large_over_small": round(ms["toy-large/1"] / ms["toy-small/1"], 2),
                      "width9_over_width1": round(ms["toy-large/9"] / ms["toy-large/1"], 2)}))


if __name__ == "__main__":
    main()

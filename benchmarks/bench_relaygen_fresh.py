"""Benchmark: RelayGen on problems it has never seen, against the large model alone and
speculative decoding, with its ablations; one `relaykit eval` run per fresh toy seed, pooled.

Each seed's run has every strategy on the same `toy:fresh:SEED` problems at batch 1 (per-request
latency, as the RelayGen paper reports), one thread, strategies taking turns problem by problem.
Pooled accuracy counts every problem of every seed; the pooled speed-up is the large model's
summed wall time over the strategy's. RelayGen runs with the shipped pair's calibration (cues and
check threshold) unless a variant says otherwise; `check=inf` is the paper's plain hand-off.
Ends with one JSON line: per strategy, accuracy minus the large model's, speed-up, the large
model's token share, the check's cuts per problem and each model's forwards per problem (what
the speed-up would follow on a pair whose small model is cheaper than this one's).

`--pair worded` runs instead on the worded world (`toy:worded:fresh:SEED`, where each restatement's
joint is a free choice) with the shipped pair fine-tuned on it (`train_worded`, 3 minutes): a pair
whose models may disagree and both be right. It is calibrated on `toy:worded:calibration` as a user
would (`relaykit calibrate`: cues and check threshold), and once more with the paper's margin
statistic (`--statistic margin`) for comparison; all is written to `--out`/pair once.

    python benchmarks/bench_relaygen_fresh.py --seeds 11,12,13 --limit 140 [--reuse]
    python benchmarks/bench_relaygen_fresh.py --pair worded --seeds 14,15,16 --limit 140
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from relaykit.cli import main as relaykit
from relaykit.toyworld import TOY_LARGE, TOY_SMALL
from relaykit.train.toy.pair import train_worded

# the cues calibration selects from the paper's candidates alone (relaykit calibrate --no-discover)
PAPER_CUES = "Again|Again,|Wait|Wait,|Also|Also,|Alternatively|Alternatively,|So|Hence|Hence,|Therefore|Therefore,"
STRATEGIES = [
    "relaygen",  # defaults: calibrated cues and check, a cue may fire at once
    f"relaygen[cues={PAPER_CUES}]",
    "relaygen[check=inf]",  # the paper's plain hand-off
    "relaygen[check=inf min_large_tokens=5]",  # the public code's wait, the default before the segment check
    "relaygen[cues=all]",
    "relaygen[cues=all check=inf]",
    "relaygen[cues=none]",  # answer hand-off only
    "relaygen[cues=none check=inf]",
    "speculative",
    "speculative[k=16 draft_confidence=0.4]",
    "speculative[k=32 max_k=32 draft_confidence=0.8]",
    "speculative[k=64 max_k=64 draft_confidence=0.8]",
    "speculative[k=128 max_k=128 draft_confidence=0.8]",  # the best on toy:test (dev); longer drafts gain less
    "speculative[k=128 max_k=128 draft_confidence=0.9]",  # as good on toy:dev since the decode step got cheaper
    "relaygen[speculative=8 draft_confidence=0.4]",
    "relaygen[speculative=32 draft_confidence=0.8]",  # drafts at cues wait for the next check
    "relaygen[speculative=64 draft_confidence=0.9]",
    "relaygen[speculative=32 draft_confidence=0.8 max_unchecked=1]",  # ... only when nothing else waits
    "relaygen[speculative=32 draft_confidence=0.8 check=inf]",
]
# On the worded pair (RelayGen reads the pair's own calibration: cues and check threshold)
WORDED_STRATEGIES = [
    "relaygen[cues={cues}]",
    "relaygen[cues={margin_cues}]",  # cues selected by the paper's statistic
    "relaygen[cues={cues} check=inf]",
    "speculative[k=16 draft_confidence=0.4]",
    "speculative[k=32 max_k=32 draft_confidence=0.6]",
    "speculative[k=64 max_k=64 draft_confidence=0.9]",
    "speculative[k=128 max_k=128 draft_confidence=0.8]",  # the best of these on toy:worded:dev (40 problems)
    "relaygen[speculative=32 draft_confidence=0.8 cues={cues}]",
    "relaygen[speculative=32 draft_confidence=0.8 cues={cues} check=inf]",
]


def worded_pair(folder: Path) -> list[str]:
    """The worded pair in `folder` (fine-tuned and calibrated there the first time, see above):
    `relaykit` model flags."""
    if not (folder / "toy-small" / "config.json").is_file():
        torch.set_num_threads(2)
        train_worded(str(folder), TOY_LARGE, TOY_SMALL)
    flags = ["--large", str(folder / "toy-large"), "--small", str(folder / "toy-small")]
    for name, statistic in (("cues.json", []), ("cues-margin.json", ["--statistic", "margin"])):
        if not (folder / name).is_file():
            code = relaykit(["calibrate", "cues", *flags, *statistic, "--dataset", "toy:worded:calibration",
                             "--limit", "100", "--threads", "1", "--out", str(folder / name)])
            if code:
                raise SystemExit(f"relaykit calibrate failed with exit code {code}")
    return flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", required=True, help="comma-separated fresh seeds (never used before)")
    parser.add_argument("--limit", type=int, default=140, help="problems per seed")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--out", default="runs/bench-relaygen-fresh")
    parser.add_argument("--reuse", action="store_true", help="pool the seeds' results.json already in --out")
    parser.add_argument("--pair", choices=("shipped", "worded"), default="shipped",
                        help="worded: the worded world and a pair fine-tuned on it (see above)")
    args = parser.parse_args()
    strategies, dataset, flags = STRATEGIES, "toy:fresh:{}", []
    if args.pair == "worded":
        pair = Path(args.out) / "pair"
        flags = worded_pair(pair)
        strategies = [s.format(cues=pair / "cues.json", margin_cues=pair / "cues-margin.json")
                      for s in WORDED_STRATEGIES]
        dataset = "toy:worded:fresh:{}"
    pooled: dict[str, dict] = {}
    for seed in args.seeds.split(","):
        out = Path(args.out) / f"seed-{seed}"
        if not args.reuse:
            code = relaykit(["eval", "--strategy", ",".join(strategies), "--dataset", dataset.format(seed), *flags,
                             "--limit", str(args.limit), "--batch-size", "1", "--threads", args.threads,
                             "--out", str(out)])
            if code:
                raise SystemExit(f"relaykit eval on seed {seed} failed with exit code {code}")
        for name, entry in json.loads((out / "results.json").read_text())["strategies"].items():
            total = pooled.setdefault(name, {"correct": 0, "problems": 0, "wall": 0.0, "tokens": 0,
                                             "large_tokens": 0, "cuts": 0, "large_forwards": 0, "small_forwards": 0})
            total["problems"] += len(entry["problems"])
            total["correct"] += sum(p["correct"] for p in entry["problems"])
            total["wall"] += entry["wall_seconds"]
            total["tokens"] += sum(p["tokens"] for p in entry["problems"])
            total["large_tokens"] += sum(p["tokens_by"].get("large", 0) for p in entry["problems"])
            total["cuts"] += sum(e["reason"] == "check" for p in entry["problems"] for e in p["events"])
            for role in ("large", "small"):
                total[f"{role}_forwards"] += sum(p["usage"].get(role, {}).get("forward_calls", 0)
                                                 for p in entry["problems"])
    large = pooled["large"]
    figures = {
        name: {
            "accuracy": round(t["correct"] / t["problems"], 4),
            "accuracy_minus_large": round((t["correct"] - large["correct"]) / t["problems"], 4),
            "speedup": round(large["wall"] / t["wall"], 3),
            "large_token_share": round(t["large_tokens"] / max(t["tokens"], 1), 3),
            "cuts_per_problem": round(t["cuts"] / t["problems"], 3),
            "large_forwards_per_problem": round(t["large_forwards"] / t["problems"], 2),
            "small_forwards_per_problem": round(t["small_forwards"] / t["problems"], 2),
        }
        for name, t in pooled.items()
    }
    print(f"\npooled over seeds {args.seeds} ({large['problems']} problems)")
    print(f"{'strategy':<58}{'acc':>7}{'vs large':>9}{'speed-up':>9}{'large %':>8}{'cuts/pb':>8}{'fwd L/S':>12}")
    for name, f in figures.items():
        print(f"{name:<58}{f['accuracy']:>7.1%}{f['accuracy_minus_large'] * 100:>+8.1f}p{f['speedup']:>8.2f}x"
              f"{f['large_token_share']:>8.1%}{f['cuts_per_problem']:>8.2f}"
              f"{f['large_forwards_per_problem']:>6.1f}/{f['small_forwards_per_problem']:<5.0f}")
    # the fastest of each family within a point of the large model's accuracy (the bar)
    best = {}
    for family in ("speculative", "relaygen[speculative="):
        held = [n for n, f in figures.items() if n.startswith(family) and f["accuracy_minus_large"] >= -0.01]
        best[family] = max(held, key=lambda n: figures[n]["speedup"]) if held else None
    relaygen = next(n for n in figures if n.startswith("relaygen"))  # the defaults (the pair's calibration)
    summary = {"relaygen_speedup": figures[relaygen]["speedup"], "best_speculative": best["speculative"],
               "best_relaygen_speculative": best["relaygen[speculative="]}
    if all(best.values()):
        summary["relaygen_speculative_over_speculative"] = round(
            figures[best["relaygen[speculative="]]["speedup"] / figures[best["speculative"]]["speedup"], 3)
    print(json.dumps({"benchmark": "relaygen_fresh", "pair": args.pair, "seeds": args.seeds,
                      "problems": large["problems"], **summary, "strategies": figures}))


if __name__ == "__main__":
    main()

"""Benchmark: suffix decoding (SuffixDecoding's drafter: the sequence, its siblings and recent
outputs) and drafting fitted to the load, on toy problems never seen before. Each part is one
`relaykit eval` run (strategies taking turns chunk by chunk in one process, so ratios are side by
side), one thread:

- `consistency`: `self-consistency` with 16 samples at temperature 1.0, without and with the suffix
  drafter, one question at a time (16 rows), on `toy:fresh:SEED` for each seed: wall-time ratio and
  accuracy, pooled over the seeds.
- `batch1`: `large`, `lookup` (the pair's tuned k) and `suffix`, greedy, batch 1: speed-ups, the
  suffix drafter over lookup, and whether every text equals the large model's.
- `load`: `large`, `speculative` and `suffix`, each with drafting fitted to the load (the default)
  and with fixed drafting (`fit_load=false`), greedy, at batch 1, 8 and 32: speed-ups.
- `relaygen`: `relaygen` and `relaygen[suffix=true]` (the pair's tuned speculative turns), and the
  same without the small model's speculative turns, batch 1: speed-ups and accuracy.

    python benchmarks/bench_suffix.py --seeds 8201,8202 [--limit 100] [--only consistency,batch1,load,relaygen]

Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from relaykit.cli import main as relaykit

CONSISTENCY = ("self-consistency[inner=large n=16 stop=fixed]", "self-consistency[inner=suffix n=16 stop=fixed]")
LOAD = ("speculative", "speculative[fit_load=false]", "suffix", "suffix[fit_load=false]")
RELAYGEN = ("relaygen", "relaygen[suffix=true]", "relaygen[speculative=0]", "relaygen[speculative=0 suffix=true]")


def run_eval(strategies: list[str], dataset: str, limit: int, out: Path, *flags: str) -> dict:
    code = relaykit(["eval", "--strategy", ",".join(strategies), "--dataset", dataset, "--limit", str(limit),
                     "--out", str(out), "--threads", "1", *flags])
    if code:
        raise SystemExit(f"relaykit eval on {dataset} failed with exit code {code}")
    return json.loads((out / "results.json").read_text())["strategies"]


def drafts(entry: dict) -> dict | None:
    """The large model's acceptance: mean accepted per check and acceptance rate."""
    accepted = entry.get("acceptance", {}).get("large")
    return None if accepted is None else {"mean_accepted": round(accepted["mean_accepted"], 2),
                                          "acceptance_rate": round(accepted["acceptance_rate"] or 0, 3)}


def consistency(seeds: list[int], limit: int, out: Path) -> dict:
    runs = {seed: run_eval(["large", *CONSISTENCY], f"toy:fresh:{seed}", limit, out / f"consistency-{seed}",
                           "--batch-size", "1", "--temperature", "1.0", "--seed", "1") for seed in seeds}
    without, with_suffix = CONSISTENCY
    walls = {name: sum(run[name]["wall_seconds"] for run in runs.values()) for name in CONSISTENCY}
    right = {name: sum(run[name]["accuracy"] * limit for run in runs.values()) for name in CONSISTENCY}
    return {"per_seed": {seed: {"speedup": round(run[without]["wall_seconds"] / run[with_suffix]["wall_seconds"], 3),
                                "accuracy": [round(run[name]["accuracy"], 4) for name in CONSISTENCY],
                                "drafts": drafts(run[with_suffix])} for seed, run in runs.items()},
            "pooled_speedup": round(walls[without] / walls[with_suffix], 3),
            "pooled_accuracy": [round(right[name] / (limit * len(seeds)), 4) for name in CONSISTENCY],
            "problems": limit * len(seeds)}


def batch1(seed: int, limit: int, out: Path) -> dict:
    run = run_eval(["large", "lookup", "suffix"], f"toy:fresh:{seed}", limit, out / "batch1", "--batch-size", "1")
    same = all(a["text"] == b["text"] == c["text"] for a, b, c in
               zip(run["large"]["problems"], run["lookup"]["problems"], run["suffix"]["problems"]))
    return {"speedup": {name: round(e["speedup_vs_large"], 3) for name, e in run.items()},
            "suffix_over_lookup": round(run["lookup"]["wall_seconds"] / run["suffix"]["wall_seconds"], 3),
            "same_text": same, "drafts": {name: drafts(run[name]) for name in ("lookup", "suffix")},
            "forwards_per_problem": {name: round(sum(p["usage"]["large"]["forward_calls"] for p in e["problems"])
                                                 / limit, 1) for name, e in run.items()}}


def load(seed: int, limit: int, out: Path) -> dict:
    figures = {}
    for batch in (1, 8, 32):
        run = run_eval(["large", *LOAD], f"toy:fresh:{seed}", limit, out / f"load-{batch}", "--batch-size", str(batch))
        figures[batch] = {name: round(run[name]["speedup_vs_large"], 3) for name in LOAD}
    return figures


def relaygen(seed: int, limit: int, out: Path) -> dict:
    run = run_eval(["large", *RELAYGEN], f"toy:fresh:{seed}", limit, out / "relaygen", "--batch-size", "1")
    return {name: {"speedup": round(run[name]["speedup_vs_large"], 3), "accuracy": round(run[name]["accuracy"], 4),
                   "large_share": round(run[name]["large_token_share"], 4), "drafts": drafts(run[name])}
            for name in RELAYGEN}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", required=True, help="two fresh toy seeds, comma-separated (the first for the "
                        "single-seed parts)")
    parser.add_argument("--limit", type=int, default=100, help="problems per seed for consistency (default 100)")
    parser.add_argument("--other-limit", type=int, default=150, help="problems for the other parts (default 150)")
    parser.add_argument("--only", default="consistency,batch1,load,relaygen")
    parser.add_argument("--out", default="runs/bench-suffix")
    args = parser.parse_args()
    seeds, out, parts = [int(s) for s in args.seeds.split(",")], Path(args.out), args.only.split(",")
    figures: dict = {}
    if "consistency" in parts:
        figures["consistency"] = consistency(seeds, args.limit, out)
    if "batch1" in parts:
        figures["batch1"] = batch1(seeds[0], args.other_limit, out)
    if "load" in parts:
        figures["load"] = load(seeds[0], args.other_limit, out)
    if "relaygen" in parts:
        figures["relaygen"] = relaygen(seeds[0], args.other_limit, out)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

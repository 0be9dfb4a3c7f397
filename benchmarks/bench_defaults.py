"""Benchmark: what a new user gets from bare strategy names, on toy problems never seen before.

Each check is one `relaykit eval` run with no options but the ones named below, the large model
alone beside the strategies in the same run, on a fresh toy seed (pass seeds never used before):

- `adaptive` on `toy:mixed:fresh:SEED` (200 problems, batch 8): accuracy minus the large model's,
  FLOPs and wall time against it;
- `speculative` and `relaygen` on `toy:fresh:SEED` (150 problems, batch 1): speed-ups;
- `large` on `toy:long:fresh:SEED` (20 problems) with no `--max-new-tokens`: the dataset's budget;
- `early-exit[inner=large]` on `toy:long:fresh:SEED` (40 problems): accuracy and tokens cut;
- `--pair worded`: instead, `relaykit calibrate settings` on the worded pair (the shipped pair
  fine-tuned on the worded world by `benchmarks/bench_relaygen_fresh.py --pair worded`, reused from
  its folder), then the tuned settings against the strategies' global defaults (`--settings none`)
  on `toy:worded:fresh:SEED`, batch 1.

    python benchmarks/bench_defaults.py --seed 71 [--only speculative,adaptive,long,early-exit]
    python benchmarks/bench_defaults.py --pair worded --seed 72 [--pair-folder runs/bench-relaygen-fresh/pair]

Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from relaykit.cli import main as relaykit

CHECKS = {  # name -> (strategies, dataset, problems, extra flags)
    "adaptive": ("large,adaptive", "toy:mixed:fresh:{}", 200, ["--batch-size", "8"]),
    "speculative": ("large,speculative,relaygen", "toy:fresh:{}", 150, ["--batch-size", "1"]),
    "long": ("large", "toy:long:fresh:{}", 20, []),
    "early-exit": ("large,early-exit[inner=large]", "toy:long:fresh:{}", 40, []),
}
TUNED = ("speculative", "relaygen", "lookup")  # the worded pair has no difficulty model or prober of its own


def run_eval(strategies: str, dataset: str, limit: int, out: Path, flags: list[str]) -> dict:
    code = relaykit(["eval", "--strategy", strategies, "--dataset", dataset, "--limit", str(limit), "--out", str(out),
                     *flags])
    if code:
        raise SystemExit(f"relaykit eval {strategies} on {dataset} failed with exit code {code}")
    return json.loads((out / "results.json").read_text())["strategies"]


def figures(entries: dict) -> dict:
    """Per strategy: accuracy, its difference from the large model's, speed-up, FLOPs and tokens
    against the large model alone, and the share of answers cut by the budget."""
    large = entries["large"]
    return {name: {"accuracy": round(e["accuracy"], 4),
                   "accuracy_minus_large": round(e["accuracy"] - large["accuracy"], 4),
                   "speedup": round(e["speedup_vs_large"], 3), "flops_vs_large": round(e["flops"] / large["flops"], 3),
                   "tokens_vs_large": round(e["tokens"] / large["tokens"], 3), "length_stops": e["length_stops"],
                   "settings": e["settings"]}
            for name, e in entries.items()}


def worded(seed: int, folder: Path, out: Path) -> dict:
    """Calibrate the worded pair's settings, then tuned against the defaults on fresh problems."""
    from bench_relaygen_fresh import worded_pair

    pair = [*worded_pair(folder), "--cues", str(folder / "cues.json")]  # fine-tuned and its cues calibrated once
    settings = out / "worded-settings.json"
    if not settings.is_file():
        code = relaykit(["calibrate", "settings", *pair, "--dataset", "toy:worded:calibration", "--out", str(settings),
                         "--strategies", "speculative,relaygen,lookup"])
        if code:
            raise SystemExit(f"relaykit calibrate settings failed with exit code {code}")
    names = ",".join(TUNED)
    dataset = f"toy:worded:fresh:{seed}"
    tuned = figures(run_eval(names, dataset, 150, out / "worded-tuned",
                             [*pair, "--settings", str(settings), "--batch-size", "1"]))
    default = figures(run_eval(names, dataset, 150, out / "worded-defaults",
                               [*pair, "--settings", "none", "--batch-size", "1"]))
    return {"tuned": tuned, "defaults": default,
            "tuned_over_defaults": {name: round(tuned[name]["speedup"] / default[name]["speedup"], 3)
                                    for name in TUNED}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, required=True, help="a fresh toy seed never used before")
    parser.add_argument("--only", default=",".join(CHECKS), help=f"checks to run (default all: {', '.join(CHECKS)})")
    parser.add_argument("--pair", choices=("shipped", "worded"), default="shipped")
    parser.add_argument("--pair-folder", default="runs/bench-relaygen-fresh/pair",
                        help="worded: the fine-tuned pair's folder")
    parser.add_argument("--out", default="runs/bench-defaults")
    args = parser.parse_args()
    out = Path(args.out) / f"seed-{args.seed}"
    if args.pair == "worded":
        report = {"worded": worded(args.seed, Path(args.pair_folder), out)}
    else:
        report = {}
        for name in args.only.split(","):
            strategies, dataset, limit, flags = CHECKS[name]
            report[name] = figures(run_eval(strategies, dataset.format(args.seed), limit, out / name, flags))
    print(json.dumps({"seed": args.seed, **report}))


if __name__ == "__main__":
    main()

"""`relaykit eval`: several strategies measured on the same problems of a dataset."""

from __future__ import annotations

import argparse

from .. import api
from .common import add_evaluation_options, run_evaluation


def add_parser(commands) -> None:
    from ..strategies.base import load_all

    parser = commands.add_parser(
        "eval",
        help="measure strategies on a dataset (accuracy, large-token share, FLOPs, time, speed-up)",
        description="Run several strategies on the same problems in one process. Writes "
        "DIR/results.json, DIR/results.md, DIR/plot.png and DIR/trajectories.html. The large-only "
        "baseline is always included, since speed-ups are measured against it.",
    )
    parser.add_argument("--strategy", default="small,large,speculative",
                        help="comma-separated strategy names; NAME[option=value ...] runs a strategy with its own "
                        "options beside others, e.g. 'relaygen,relaygen[cues=all],relaygen[cues=none]'; a sweep "
                        "'best-of-n[n=1..64]' runs n = 1, 2, 4, ... 64 and reports them as one accuracy-vs-cost curve")
    parser.add_argument("--dataset", default="toy:test",
                        help="toy:SPLIT, toy:fresh:SEED, either after toy:long:, toy:domains: or toy:mixed:, "
                        "or a JSONL path (GSM8K, MATH-500, AIME formats)")
    parser.add_argument("--limit", type=int, default=None, help="first N problems")
    parser.add_argument("--out", default="relaykit-eval", help="output folder (default ./relaykit-eval)")
    add_evaluation_options(parser, load_all())
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    run_evaluation(args, api.split_variants(args.strategy))
    return 0

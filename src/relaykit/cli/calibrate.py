"""`relaykit calibrate [cues|adaptive|settings]`: RelayGen's cues and check, the adaptive strategy's thresholds,
or every strategy's speed settings, for a large/small pair."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from .. import api
from ..errors import RelaykitError
from .common import add_model_options, load_models_from_args


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "calibrate",
        help="select RelayGen switch cues and the segment check's threshold for a large/small pair "
        "(or, with `adaptive`, the thresholds of the adaptive strategy)",
        description="relaykit calibrate [cues]: the large model writes traces on the dataset; the small model reads "
        "them and its top-1 token is scored by how likely the large model finds it next to its own top one "
        "(--statistic agreement; the paper's is the small model's top-1 minus top-2 probability, --statistic margin), "
        "and the mean score after each candidate cue is compared with the mean elsewhere. "
        "Cues whose delta is above the threshold (with enough occurrences) are selected. Then "
        "RelayGen runs on the same problems under each candidate check threshold (0, 1, 2, 4, 8 logits) "
        "and, of those that lose no problem against threshold 0, the one leaving the large model the fewest "
        "tokens (the strictest on a tie) is written beside the cues. relaykit calibrate adaptive: on the dev split, "
        "the small model's samples, the escalation strategy and the small model alone run on every problem; the "
        "cheapest answer/more-samples thresholds whose accuracy is within --tolerance of the escalation alone are "
        "written to adaptive.json (adaptive[calibration=FILE]); with --signal difficulty, the threshold on the "
        "difficulty model's probability instead. relaykit calibrate settings: the speed settings of speculative, "
        "relaygen, lookup, adaptive and early-exit for the pair; each strategy runs its candidate settings beside the "
        "large model alone on the same problems, and the fastest by wall time that keeps the large model's accuracy "
        "(--tolerance) is written beside the large model (relaykit-settings.json), where a bare strategy name finds "
        "it; every candidate's speed-up and FLOPs are written too. On the toy world adaptive is calibrated on "
        "toy:mixed:calibration and early-exit on toy:long:calibration (--workload NAME=DATASET for others). "
        "About 7 minutes for the shipped pair on 2 cores.",
    )
    parser.add_argument("what", nargs="?", choices=("cues", "adaptive", "settings"), default="cues",
                        help="cues (default): RelayGen's cues and check; adaptive: the adaptive strategy's "
                        "thresholds; settings: every strategy's speed settings for the pair")
    parser.add_argument("--dataset", help="dataset spec (default toy:calibration; adaptive: toy:dev)")
    parser.add_argument("--limit", type=int, help="problems to run (default 100; settings: 40 per workload; on the "
                        "toy world adaptive 300 and early-exit 100, batched by 8)")
    parser.add_argument("--out", help="output JSON (default cues.json, with a PNG plot beside it; adaptive: "
                        "adaptive.json; settings: relaykit-settings.json beside the large model)")
    parser.add_argument("--strategies", help="settings: the strategies to tune, comma-separated (default: "
                        "speculative,relaygen,lookup,adaptive,early-exit)")
    parser.add_argument("--cues", help="settings: the cues.json relaygen runs with (default: the shipped pair's, "
                        "else every candidate cue; relaykit calibrate cues writes one)")
    parser.add_argument("--workload", action="append", default=[], metavar="NAME=DATASET",
                        help="settings: calibrate strategy NAME on DATASET instead of --dataset (repeatable)")
    parser.add_argument("--escalate", default="relaygen",
                        help="adaptive: the strategy a problem escalates to (default relaygen)")
    parser.add_argument("--signal", default="samples", choices=("samples", "difficulty"),
                        help="adaptive: the signal calibrated (default samples; difficulty needs --difficulty PATH)")
    parser.add_argument("--samples", type=int, default=4,
                        help="adaptive: the small model's first samples, k (default 4)")
    parser.add_argument("--more", type=int, default=4,
                        help="adaptive: samples drawn next in the middle band (default 4)")
    parser.add_argument("--tolerance", type=float,
                        help="adaptive: accuracy it may lose against the escalation alone (default 0.005); settings: "
                        "against the large model alone (default: 0.01 for adaptive, 0 for the others)")
    parser.add_argument("--budget", type=float,
                        help="adaptive: instead, the most accurate thresholds whose FLOPs are at most this share of "
                        "the escalation's (e.g. 0.5)")
    parser.add_argument("--candidates", help="'|'-separated cues or a file of cues (default: the built-in list)")
    parser.add_argument("--discover", action=argparse.BooleanOptionalAction, default=True,
                        help="also try the words that open sentences in the traces at least --min-occurrences times "
                        "(default: yes; not with --candidates)")
    parser.add_argument("--statistic", choices=("margin", "agreement"),
                        help="what scores a cue's segments: agreement (default; ours), how likely the large model "
                        "finds the small model's top token next to its own, which a free choice of wording does not "
                        "lower; margin (the paper's; the default when the large model is an endpoint), the small "
                        "model's top-1 minus top-2 probability")
    parser.add_argument("--threshold", type=float, default=0.0, help="minimum delta of the statistic (default 0)")
    parser.add_argument("--min-occurrences", type=int, default=5)
    parser.add_argument("--batch-size", type=int,
                        help="problems per batch (default 8; settings: 1, the latency of one request)")
    parser.add_argument("--max-new-tokens", type=int, help="default: the dataset's budget")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                        help="also calibrate the segment check's threshold (default: yes)")
    add_model_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.what == "adaptive":
        return run_adaptive(args)
    if args.what == "settings":
        return run_settings(args)
    return run_cues(args)


def run_cues(args: argparse.Namespace) -> int:
    from ..calibrate import run_calibrate_command, summary
    from ..evals.datasets import load_dataset
    from ..text import load_cues

    dataset = args.dataset or "toy:calibration"
    problems = load_dataset(dataset, args.limit or 100)
    models = load_models_from_args(args, ("large", "small"))
    result, paths = run_calibrate_command(
        models,
        problems,
        args.out or "cues.json",
        cues=load_cues(args.candidates) if args.candidates else None,
        threshold=args.threshold,
        min_occurrences=args.min_occurrences,
        max_new_tokens=args.max_new_tokens or api.token_budget(dataset),
        batch_size=args.batch_size or 8,
        check=args.check,
        discover=args.discover,
        statistic=args.statistic,
    )
    print(summary(result))
    print(f"wrote {paths['json']} and {paths['plot']}")
    return 0


def run_adaptive(args: argparse.Namespace) -> int:
    from ..calibrate.adaptive import calibrate_adaptive
    from ..evals.datasets import load_dataset
    from ..strategies.adaptive import Adaptive, AdaptiveConfig

    config = AdaptiveConfig(signal=args.signal, k=args.samples, more=args.more, escalate=args.escalate)
    dataset = args.dataset or "toy:dev"
    problems = load_dataset(dataset, args.limit or 100)
    models = load_models_from_args(args, Adaptive.roles_of(config))
    if args.budget is not None and args.budget <= 0:
        raise RelaykitError(f"--budget must be > 0, got {args.budget}")
    tolerance = 0.005 if args.tolerance is None else args.tolerance
    result = calibrate_adaptive(models, problems, config, tolerance, args.max_new_tokens or api.token_budget(dataset),
                                args.batch_size or 8, args.budget)
    out = Path(args.out or "adaptive.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


def run_settings(args: argparse.Namespace) -> int:
    import time

    from ..calibrate.settings import SettingsCalibration, calibrate_settings
    from ..strategies.base import get_strategy, load_all
    from ..tuned import settings_path, write_tuned

    calibration = SettingsCalibration()
    changes = {key: getattr(args, key) for key in ("limit", "batch_size", "tolerance")
               if getattr(args, key) is not None}
    if args.strategies:
        changes["strategies"] = tuple(name.strip() for name in args.strategies.split(",") if name.strip())
        for name in changes["strategies"]:
            if not get_strategy(name).tunes:
                tuned = ", ".join(other for other, cls in sorted(load_all().items()) if cls.tunes)
                raise RelaykitError(f"{name} has no settings to tune; these do: {tuned}")
    if args.dataset:
        changes["dataset"] = args.dataset
    workloads = {}
    for item in args.workload:
        name, sep, dataset = item.partition("=")
        if not sep or not dataset:
            raise RelaykitError(f"--workload takes NAME=DATASET, got {item!r}")
        workloads[name.strip()] = dataset.strip()
    fixed = {"relaygen": {"cues": args.cues}} if args.cues else {}
    calibration = dataclasses.replace(calibration, **changes, workloads=workloads, fixed=fixed)
    if any(value is not None and value < 1 for value in (calibration.limit, calibration.batch_size)):
        raise RelaykitError("--limit and --batch-size must be >= 1")
    roles = ("large", "small", *(role for role in ("difficulty", "prober") if getattr(args, role) or
                                 (args.large is None and args.small is None)))
    models = load_models_from_args(args, roles)
    out = args.out or settings_path(models["large"].source)
    if out is None:
        raise RelaykitError("the large model is not a local file or folder: "
                            "give --out FILE (and --settings FILE to use it)")
    started = time.perf_counter()
    chosen = calibrate_settings(models, calibration, progress=lambda line: print(line, flush=True))
    path = write_tuned(out, models["large"].source, models["small"].source, chosen)
    print(f"wrote {path} ({time.perf_counter() - started:.0f} s)")
    return 0

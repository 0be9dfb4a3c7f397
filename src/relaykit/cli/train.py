"""`relaykit train WHAT`: the toy pair, RelayLLM's small model, the small model's fine-tunings (verifier, prober,
difficulty model) and FusionRoute's experts and router."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import api
from ..errors import RelaykitError
from ..options import add_dataclass_options, config_from_args
from ..train.difficulty import DifficultyTrainConfig
from ..train.fusionroute import FusionRouteTrainConfig
from ..train.prober import ProberTrainConfig
from ..train.relayllm import RelayLLMTrainConfig
from ..train.verifier import VerifierTrainConfig
from .common import add_model_options, load_models_from_args, set_threads


def add_training(what, name: str, run, help: str, description: str) -> argparse.ArgumentParser:
    """A `relaykit train NAME` parser with the options every trainer has (--out, --seed)."""
    parser = what.add_parser(name, help=help, description=description)
    parser.add_argument("--out", default=f"relaykit-{name}", help=f"output folder (default ./relaykit-{name})")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)
    return parser


def add_fine_tuning(what, name: str, run, config: type, help: str, description: str) -> None:
    """A `relaykit train NAME` parser for a fine-tuning of the small model (`fine_tune_small`)."""
    parser = add_training(what, name, run, help, description)
    add_dataclass_options(parser.add_argument_group("training options"), config, skip=("seed",))
    add_model_options(parser)


def add_parser(commands) -> None:
    train = commands.add_parser("train", help="train models (the toy pair, RelayLLM's small model, a step verifier, "
                                "FusionRoute's experts and router)",
                                description="Train models.")
    what = train.add_subparsers(dest="what", required=True, metavar="WHAT")
    toy = add_training(
        what, "toy", run_toy,
        help="train toy-small and toy-large from scratch (about 65 minutes on 2 CPU cores)",
        description="Train the toy pair from a seed and measure it (accuracies, parameter and speed ratios, "
        "hard-token share). toy-small trains in two stages: 3,000 steps, then 2,000 on the round level of "
        "toy:mixed (its easy level). toy-large trains in two stages: 2,200 steps, then 300 in which its long rows "
        "are seen with part of the context hidden, so KV compression does not break it. Training is deterministic: "
        "a rerun on the same thread count and PyTorch build gives the same weights bit for bit. The shipped "
        "toy-small and toy-large's first stage were made just before training became deterministic; their "
        "second stages were run from them with --refine-small and --refine-large.",
    )
    toy.add_argument("--measure", type=int, default=200, help="test problems to measure on (0 = skip)")
    toy.add_argument("--refine-large", metavar="DIR",
                     help="run only toy-large's second stage (training with hidden context) from this checkpoint")
    toy.add_argument("--refine-small", metavar="DIR", help="run only toy-small's second stage (training on the "
                     "round level of toy:mixed) from this checkpoint")
    relayllm = add_training(
        what, "relayllm", run_relayllm,
        help="train a small model to call the large one with <call>N</call> (RelayLLM: warm-up SFT, then GRPO)",
        description="Warm-up SFT on toy training problems with <call>N</call> inserted where the small model's "
        "top-1 departs from the reference and the departure would change the answer (the large model, continuing "
        "after the small model's token, answers wrong); two rounds, the second with the model the first left; the "
        "large model's tokens carry no loss. Then GRPO whose rollouts are real relayllm generations calling the "
        "large model (8 per question at temperature 1.0, KL 0.01, RelayLLM's reward per question). Writes the "
        "small model, train_log.jsonl and report.json to --out. On 2 CPU cores with the shipped pair: 18 minutes "
        "of warm-up (15 of them the large model's continuations), about 3 seconds a GRPO step. The shipped "
        "toy-small-relay is the warm-up alone (--grpo-steps 0): GRPO lowered its accuracy on the toy "
        "(benchmarks/RESULTS.md).",
    )
    add_dataclass_options(relayllm.add_argument_group("training options"), RelayLLMTrainConfig, skip=("seed",))
    add_model_options(relayllm)
    add_fine_tuning(
        what, "verifier", run_verifier, VerifierTrainConfig,
        help="train a step verifier (a process reward model) for search and reranking",
        description="Fine-tune the small model (--small, default toy-small) to predict + or - at the end of each "
        "reasoning step: toy training solutions and copies with one number changed, every step from the change on "
        "labelled -. Used by best-of-n[rerank=verifier|weighted], beam-search[scorer=verifier] and "
        "dvts[scorer=verifier]. About 2 minutes on 2 CPU cores.",
    )
    add_fine_tuning(
        what, "prober", run_prober, ProberTrainConfig,
        help="train an answer prober for early exit",
        description="Fine-tune the small model (--small, default toy-small) to write the final answer after a toy "
        "thinking cut at any sentence and closed with '</think>The answer is': it copies the answer once the "
        "thinking holds it, and is unsure before. Used by early-exit[probe_model=prober]. "
        "About 2 minutes on 2 CPU cores.",
    )
    add_fine_tuning(
        what, "difficulty", run_difficulty, DifficultyTrainConfig,
        help="train a difficulty model for adaptive[signal=difficulty]",
        description="Label toy:mixed training problems with the small model's greedy answers (--small, default "
        "toy-small), then fine-tune that small model with a routing head that reads a question and predicts whether "
        "its answer will be right. Goes with that small model only. About 2 minutes on 2 CPU cores.",
    )
    fusionroute = add_training(
        what, "fusionroute", run_fusionroute,
        help="train FusionRoute's domain experts and router (SFT with a routing loss, then CDPO)",
        description="On the toy domain-expert world (toy:domains): fine-tune one expert per operation (add, sub) "
        "from --base (default toy-large, which never saw either), then a router from --router-base (default "
        "toy-small, 16x smaller) by SFT on every domain (LM loss on the fused distribution + a routing loss on "
        "tokens where the experts disagree), then CDPO on pairs of right and wrong solutions it samples, experts "
        "frozen. Also the ablation router without the routing loss and the query-level routing baseline's prompt "
        "classifier. Writes expert-add, expert-sub, router-sft, router, router-no-routing-loss(-sft), "
        "query-classifier.safetensors, train_log.jsonl and report.json to --out. Deterministic for a seed and "
        "thread count.",
    )
    fusionroute.add_argument("--base", help="the experts' base model (default: the shipped toy-large)")
    fusionroute.add_argument("--router-base", help="the router's base model (default: the shipped toy-small)")
    add_dataclass_options(fusionroute.add_argument_group("training options"), FusionRouteTrainConfig,
                          skip=("seed",))
    fusionroute.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    fusionroute.add_argument("--resume", action="store_true",
                             help="keep the stages whose output already exists in --out")


def print_report(report: dict, written: str) -> None:
    """A trainer's report without its config, then what was written where."""
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2))
    print(written)


def run_toy(args: argparse.Namespace) -> int:
    import logging

    from ..train.toy.pair import train_toy

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.refine_large and args.refine_small:
        raise RelaykitError("give --refine-large or --refine-small, not both")
    for flag, folder in (("--refine-large", args.refine_large), ("--refine-small", args.refine_small)):
        if folder and not Path(folder, "config.json").is_file():
            raise RelaykitError(f"{flag} {folder}: not a checkpoint folder (no config.json)")
    report = train_toy(args.out, seed=args.seed, measure_n=args.measure, refine_large=args.refine_large,
                       refine_small=args.refine_small)
    written = "toy-large" if args.refine_large else "toy-small" if args.refine_small else "toy-small and toy-large"
    print_report(report, f"{written} written to {args.out}")
    return 0


def run_relayllm(args: argparse.Namespace) -> int:
    import logging

    from ..train.relayllm import train_relayllm

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = config_from_args(RelayLLMTrainConfig, args, seed=args.seed)
    models = load_models_from_args(args, ("large", "small"))
    report = train_relayllm(models["large"], models["small"], args.out, cfg)
    print_report(report, f"small model written to {args.out}")
    return 0


def run_prober(args: argparse.Namespace) -> int:
    from ..train.prober import train_prober

    return fine_tune_small(args, ProberTrainConfig, train_prober, "prober")


def run_verifier(args: argparse.Namespace) -> int:
    from ..train.verifier import train_verifier

    return fine_tune_small(args, VerifierTrainConfig, train_verifier, "verifier")


def run_difficulty(args: argparse.Namespace) -> int:
    from ..train.difficulty import train_difficulty

    return fine_tune_small(args, DifficultyTrainConfig, train_difficulty, "difficulty model")


def fine_tune_small(args: argparse.Namespace, config_class, trainer, what: str) -> int:
    """`relaykit train verifier|prober|difficulty`: `trainer` fine-tunes the small model."""
    cfg = config_from_args(config_class, args, seed=args.seed)
    if cfg.train.steps < 1:
        raise RelaykitError(f"--steps must be >= 1, got {cfg.train.steps}")
    base = load_models_from_args(args, ("small",))["small"]
    report = trainer(base, args.out, cfg)
    print_report(report, f"{what} written to {args.out}")
    return 0


def run_fusionroute(args: argparse.Namespace) -> int:
    from ..train.fusionroute import train_fusionroute

    cfg = config_from_args(FusionRouteTrainConfig, args, seed=args.seed)
    for flag in ("expert_steps", "router_steps", "cdpo_epochs"):
        if getattr(cfg, flag) < 1:
            raise RelaykitError(f"--{flag.replace('_', '-')} must be >= 1")
    base, router_base = (args.base or api.default_model("large")), (args.router_base or api.default_model("small"))
    for flag, folder in (("--base", base), ("--router-base", router_base)):
        if folder is None or not Path(folder, "config.json").is_file():
            raise RelaykitError(f"{flag} {folder}: not a checkpoint folder (no config.json)")
    set_threads(args)
    report = train_fusionroute(args.out, cfg, base, router_base, resume=args.resume)
    print_report(report, f"experts, routers and the query classifier written to {args.out}")
    return 0

"""The relaykit command line: generate (and, as they land, eval, demo, calibrate, train, serve)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .errors import RelaykitError

CHECKPOINTS = Path(__file__).parent / "toyworld" / "checkpoints"
COLOURS = {"large": "bold magenta", "small": "cyan", "prompt": "dim"}


def default_model(role: str) -> str | None:
    """The shipped toy checkpoint for a role, when present."""
    folder = CHECKPOINTS / f"toy-{role}"
    return str(folder) if (folder / "config.json").is_file() else None


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument("--large", help="large model: checkpoint folder, .gguf file, hub id or an OpenAI-compatible "
                       "endpoint URL#MODEL, e.g. http://localhost:8000/v1#Qwen/Qwen3-32B (default: the shipped toy-large)")
    group.add_argument("--small", help="small model, same forms (default: the shipped toy-small)")
    group.add_argument("--tokenizer", help="for endpoint models: the served model's tokenizer (default: the MODEL part of the URL)")
    group.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16, float16")
    group.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    group.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own Python code to run")
    group.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) weights; safetensors only by default")
    group.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")


def add_kv_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("KV cache (every model's runner; Llama-family models)")
    group.add_argument("--kv", default="full", choices=["full", "rpc", "h2o", "streaming"],
                       help="full (default); rpc: Reasoning Path Compression; h2o: heavy hitters + recent; "
                       "streaming: attention sinks + recent")
    group.add_argument("--kv-interval", type=int, help="rpc: compress every P generated tokens (default 4096); "
                       "h2o/streaming: evict once this far over budget (default 32)")
    group.add_argument("--kv-window", type=int, help="rpc: selector window R (default 32); h2o: recent tokens kept (default 512)")
    group.add_argument("--kv-ratio", type=float, help="rpc: compression ratio c (default 4)")
    group.add_argument("--kv-budget", type=int, help="h2o/streaming: slots kept per row (default 1024)")
    group.add_argument("--kv-sinks", type=int, help="streaming: attention-sink tokens (default 4)")


def kv_policy_from_args(args: argparse.Namespace):
    from .models.kv import make_policy

    names = {"kv_interval": "interval", "kv_window": "window", "kv_ratio": "ratio", "kv_budget": "budget", "kv_sinks": "sinks"}
    options = {option: getattr(args, flag) for flag, option in names.items() if getattr(args, flag) is not None}
    return make_policy(args.kv, **options)


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling and stopping")
    group.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    group.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    group.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    group.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    group.add_argument("--max-new-tokens", type=int, default=256)
    group.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")
    group.add_argument("--stop-token-id", action="append", type=int, default=[], metavar="ID", help="stop token id (repeatable; eos always stops)")
    group.add_argument("--raw", action="store_true", help="do not apply the tokenizer's chat template")
    group.add_argument("--system", help="system message for the chat template")


def load_models(args: argparse.Namespace, roles: tuple[str, ...]) -> dict:
    import torch

    from .models.loading import load_model
    from .models.remote import is_remote, load_remote

    if args.threads < 0:
        raise RelaykitError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    models = {}
    for role in roles:
        spec = getattr(args, role, None) or default_model(role)
        if spec is None:
            raise RelaykitError(f"no {role} model given (--{role} PATH) and no shipped toy-{role} checkpoint found")
        if is_remote(spec):
            models[role] = load_remote(spec, args.tokenizer, name=role)
            continue
        models[role] = load_model(
            spec,
            name=role,
            dtype=args.dtype,
            device=args.device,
            trust_remote_code=args.trust_remote_code,
            allow_pickle=args.allow_pickle,
        )
    return models


def strategy_class(name: str, args: argparse.Namespace):
    """The strategy class for `name`: its HTTP implementation when a model is an endpoint URL."""
    from .models.remote import is_remote
    from .strategies.base import get_strategy
    from .strategies.remote import remote_strategy

    if any(is_remote(getattr(args, role, None)) for role in ("large", "small")):
        get_strategy(name)  # an unknown name gets the usual message
        return remote_strategy(name)
    return get_strategy(name)


def sampling_from_args(args):
    from .decoding.sampler import SamplingConfig
    from .decoding.stopping import StopConfig

    if args.max_new_tokens < 1:
        raise RelaykitError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    stop = StopConfig(max_new_tokens=args.max_new_tokens, stop_strings=args.stop, stop_token_ids=args.stop_token_id)
    return sampling, stop


def cmd_generate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from .decoding.prompt import encode_prompt
    from .options import config_from_args

    cls = strategy_class(args.strategy, args)
    config = config_from_args(cls, args)
    sampling, stop = sampling_from_args(args)
    models = load_models(args, cls.roles)
    strategy = cls(models, config, sampling, stop, kv_policy_from_args(args))
    tokenizer = strategy.tokenizer
    prompts = [encode_prompt(tokenizer, p, raw=args.raw, system=args.system) for p in args.prompt]
    results = strategy.generate(prompts) if cls.batched else [r for p in prompts for r in strategy.generate([p])]
    if args.json:
        for result in results:
            print(json.dumps(result.to_dict()))
        return 0
    console = Console()
    for prompt, result in zip(args.prompt, results):
        text = Text()
        for segment, writer in result.segments(tokenizer):
            text.append(segment, style=COLOURS.get(writer, "green"))
        console.rule(prompt[:60])
        console.print(text)
        legend = "  ".join(f"[{COLOURS.get(r, 'green')}]{r}[/]" for r in cls.roles)
        console.print(f"[dim]written by:[/] {legend}   [dim]finish: {result.finish_reason}, {result.seconds:.2f} s[/]")
        table = Table("model", "prefill tokens", "decode tokens", "tokens written", "forward calls", "seconds", "FLOPs")
        for role, usage in result.usage.items():
            table.add_row(
                role,
                str(usage["prefill_tokens"]),
                str(usage["decode_tokens"]),
                str(result.tokens_by(role)),
                str(usage["forward_calls"]),
                f"{usage['seconds']:.3f}",
                f"{usage['flops']:.3g}",
            )
        console.print(table)
    return 0


def build_strategies(names: list[str], args: argparse.Namespace) -> dict:
    """Strategy objects for `names` (the large-only baseline added when missing), sharing models."""
    from .options import config_from_args, config_from_dict

    variants = dict(parse_variant(name) for name in names)  # label -> (strategy name, its own options)
    variants.setdefault("large", ("large", {}))
    variants = {"large": variants.pop("large"), **variants}
    classes = {label: strategy_class(name, args) for label, (name, _) in variants.items()}
    given = {k[4:] for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    owners = {f for cls in classes.values() for f in cls.Config.__dataclass_fields__}
    if given - owners:
        flags = ", ".join("--" + f.replace("_", "-") for f in sorted(given - owners))
        raise RelaykitError(f"no chosen strategy has the option(s) {flags}")
    roles = tuple(dict.fromkeys(role for cls in classes.values() for role in cls.roles))
    models = load_models(args, roles)
    sampling, stop = sampling_from_args(args)
    policy = kv_policy_from_args(args)
    strategies = {}
    for label, cls in classes.items():
        options = dict(vars(config_from_args(cls, args, strict=False)), **variants[label][1])
        strategies[label] = cls(models, config_from_dict(cls, options), sampling, stop, policy)
    return strategies


def parse_variant(text: str) -> tuple[str, tuple[str, dict]]:
    """`relaygen[cues=none speculative=4]` -> (that label, ("relaygen", {"cues": "none",
    "speculative": 4})): one strategy run with its own options, next to others."""
    from .options import options_from_text

    match = re.fullmatch(r"([\w-]+)(?:\[(.*)\])?", text.strip())
    if not match:
        raise RelaykitError(f"bad strategy {text!r}; write NAME or NAME[option=value option=value]")
    name, body = match.group(1), match.group(2)
    options = options_from_text(strategy_class(name, argparse.Namespace()), body) if body is not None else {}
    return text.strip(), (name, options)


def run_evaluation(args: argparse.Namespace, dataset: str, limit: int | None, out: str):
    from rich.console import Console

    from .evals.datasets import load_dataset
    from .evals.harness import EvalSettings, evaluate
    from .evals.report import rich_table, write_report

    names = [n.strip() for n in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", args.strategy) if n.strip()]
    problems = load_dataset(dataset, limit)
    if args.batch_size < 1:
        raise RelaykitError(f"--batch-size must be >= 1, got {args.batch_size}")
    strategies = build_strategies(names, args)
    settings = EvalSettings(batch_size=args.batch_size, raw=args.raw)
    results = evaluate(strategies, problems, dataset, settings)
    paths = write_report(results, out)
    console = Console()
    console.print(rich_table(results))
    console.print(f"[dim]wrote {', '.join(str(p) for p in paths.values())}[/]")
    return results, paths, console


def cmd_eval(args: argparse.Namespace) -> int:
    run_evaluation(args, args.dataset, args.limit, args.out)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .evals.report import rich_trajectory
    from .strategies.base import STRATEGIES

    rest = [name for name in STRATEGIES if name not in ("single", "large", "small")]
    args.strategy = ",".join(["large", "small", *rest])
    for role in ("large", "small"):
        if getattr(args, role) is None and default_model(role) is None:
            raise RelaykitError(f"the shipped toy-{role} checkpoint is missing; reinstall relaykit or pass --{role}")
    if args.opt_cues is None and args.large is None and args.small is None:
        args.opt_cues = str(CHECKPOINTS / "cues.json")  # the shipped pair's calibrated switch cues
    results, paths, console = run_evaluation(args, args.dataset, args.limit, args.out)
    shown = next(
        (name for name, entry in results["strategies"].items() if name not in ("small", "large")), "large"
    )
    problem = results["strategies"][shown]["problems"][0]
    console.rule(f"{shown} on problem {problem['id']} (cyan: small model, magenta: large model)")
    console.print(rich_trajectory(problem["segments"]))
    verdict = "correct" if problem["correct"] else f"wrong (reference {problem['reference']})"
    console.print(f"[dim]answer: {problem['prediction']} - {verdict}[/]")
    console.print(f"\nplot: {paths['plot']}\ncoloured trajectories: {paths['html']}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import run_calibrate_command, summary
    from .evals.datasets import load_dataset
    from .text import load_cues

    problems = load_dataset(args.dataset, args.limit)
    models = load_models(args, ("large", "small"))
    result, paths = run_calibrate_command(
        models,
        problems,
        args.out,
        cues=load_cues(args.candidates) if args.candidates else None,
        threshold=args.threshold,
        min_occurrences=args.min_occurrences,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    print(summary(result))
    print(f"wrote {paths['json']} and {paths['plot']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import logging

    from .toyworld.train import train_toy

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.refine_large and not Path(args.refine_large, "config.json").is_file():
        raise RelaykitError(f"--refine-large {args.refine_large}: not a checkpoint folder (no config.json)")
    report = train_toy(args.out, seed=args.seed, measure_n=args.measure, refine_large=args.refine_large)
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2))
    written = "toy-large" if args.refine_large else "toy-small and toy-large"
    print(f"{written} written to {args.out}")
    return 0


def add_evaluation_options(parser: argparse.ArgumentParser, strategies: dict) -> None:
    """What `eval` and `demo` share: batching, models, sampling, KV policy, strategy options."""
    from .options import add_strategy_options

    parser.add_argument("--batch-size", type=int, default=8, help="problems per batch for batched strategies")
    add_model_options(parser)
    add_sampling_options(parser)
    add_kv_options(parser)
    parser.set_defaults(max_new_tokens=512)
    add_strategy_options(parser, strategies)


def build_parser() -> argparse.ArgumentParser:
    from .options import add_strategy_options
    from .strategies.base import STRATEGIES, load_all

    load_all()
    parser = argparse.ArgumentParser(
        prog="relaykit",
        description="Let LLMs of different sizes share one generation. Models are Hugging Face "
        "checkpoint folders, .gguf files or hub ids; with none named, the shipped toy pair is used.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser(
        "generate",
        help="generate text for one or more prompts",
        description="Generate with a strategy; prints the text coloured by the model that wrote each "
        "token and a usage table (or JSON with --json). Several prompts run as one batch.",
    )
    generate.add_argument("prompt", nargs="+", help="prompt text (several prompts run batched)")
    generate.add_argument("--strategy", default="single", help=f"one of: {', '.join(sorted(STRATEGIES))} (default single)")
    generate.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    add_model_options(generate)
    add_sampling_options(generate)
    add_kv_options(generate)
    add_strategy_options(generate, STRATEGIES)
    generate.set_defaults(run=cmd_generate)

    evaluate = commands.add_parser(
        "eval",
        help="measure strategies on a dataset (accuracy, large-token share, FLOPs, time, speed-up)",
        description="Run several strategies on the same problems in one process. Writes "
        "DIR/results.json, DIR/results.md, DIR/plot.png and DIR/trajectories.html. The large-only "
        "baseline is always included, since speed-ups are measured against it.",
    )
    evaluate.add_argument("--strategy", default="small,large,speculative",
                          help="comma-separated strategy names; NAME[option=value ...] runs a strategy with its own "
                          "options beside others, e.g. 'relaygen,relaygen[cues=all],relaygen[cues=none]'")
    evaluate.add_argument("--dataset", default="toy:test", help="toy:SPLIT, toy:long:SPLIT, toy:fresh:SEED or a JSONL path (GSM8K, MATH-500, AIME formats)")
    evaluate.add_argument("--limit", type=int, default=None, help="first N problems")
    evaluate.add_argument("--out", default="relaykit-eval", help="output folder (default ./relaykit-eval)")
    add_evaluation_options(evaluate, STRATEGIES)
    evaluate.set_defaults(run=cmd_eval)

    demo = commands.add_parser(
        "demo",
        help="run every strategy on the shipped toy pair and show the comparison",
        description="Runs every registered strategy on a slice of the toy test split with the shipped "
        "toy-small / toy-large pair; prints the comparison table and one trajectory coloured by "
        "writing model; writes the plot and an HTML view of the trajectories.",
    )
    demo.add_argument("--limit", type=int, default=32, help="toy test problems (default 32)")
    demo.add_argument("--out", default="relaykit-demo", help="output folder (default ./relaykit-demo)")
    demo.add_argument("--dataset", default="toy:test", help=argparse.SUPPRESS)
    add_evaluation_options(demo, STRATEGIES)
    demo.set_defaults(run=cmd_demo)

    calibrate = commands.add_parser(
        "calibrate",
        help="select RelayGen switch cues for a large/small pair",
        description="The large model writes traces on the dataset; the small model reads them and its "
        "top-1 minus top-2 probability margin is compared after each candidate cue and elsewhere. "
        "Cues whose margin delta is above the threshold (with enough occurrences) are selected.",
    )
    calibrate.add_argument("--dataset", default="toy:calibration", help="dataset spec (default toy:calibration)")
    calibrate.add_argument("--limit", type=int, default=100, help="problems to trace (default 100)")
    calibrate.add_argument("--out", default="cues.json", help="output JSON (a PNG plot is written beside it)")
    calibrate.add_argument("--candidates", help="'|'-separated cues or a file of cues (default: the built-in list)")
    calibrate.add_argument("--threshold", type=float, default=0.0, help="minimum margin delta (default 0)")
    calibrate.add_argument("--min-occurrences", type=int, default=5)
    calibrate.add_argument("--batch-size", type=int, default=8)
    calibrate.add_argument("--max-new-tokens", type=int, default=512)
    add_model_options(calibrate)
    calibrate.set_defaults(run=cmd_calibrate)

    train = commands.add_parser("train", help="train models (the toy pair)", description="Train models.")
    what = train.add_subparsers(dest="what", required=True, metavar="WHAT")
    toy = what.add_parser(
        "toy",
        help="train toy-small and toy-large from scratch (about 61 minutes on 2 CPU cores)",
        description="Train the toy pair from a seed and measure it (accuracies, parameter and speed ratios, "
        "hard-token share). toy-large trains in two stages: 2,200 steps, then 300 in which its long rows are "
        "seen with part of the context hidden, so KV compression does not break it. Training is deterministic: "
        "a rerun on the same thread count and PyTorch build gives the same weights bit for bit. The shipped "
        "toy-small and toy-large's first stage were made just before training became deterministic; toy-large's "
        "second stage was run from it with --refine-large.",
    )
    toy.add_argument("--out", default="relaykit-toy", help="output folder (default ./relaykit-toy)")
    toy.add_argument("--seed", type=int, default=0)
    toy.add_argument("--measure", type=int, default=200, help="test problems to measure on (0 = skip)")
    toy.add_argument("--refine-large", metavar="DIR",
                     help="run only toy-large's second stage (training with hidden context) from this checkpoint")
    toy.set_defaults(run=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except RelaykitError as error:
        print(f"relaykit: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("relaykit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

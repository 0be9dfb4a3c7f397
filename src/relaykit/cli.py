"""The relaykit command line: argument parsing and printing; the work is done by `relaykit.api`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from . import api
from .errors import RelaykitError
from .options import add_strategy_options, options_from_args, options_text, variant_text

COLOURS = {"large": "bold magenta", "small": "cyan", "prompt": "dim"}
SHORT_DTYPES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}  # the usage table's engine column
TUNED_NOTE = ("A strategy named without the options it tunes runs the settings relaykit calibrate settings measured "
              "for the pair (the shipped pair ships them); naming any of those options runs its defaults with yours.")


def tuned_note() -> str:
    """TUNED_NOTE and the shipped pair's tuned settings, for --help."""
    tuned = api.tuned_settings(None, None)
    if tuned is None:
        return TUNED_NOTE
    chosen = ", ".join(variant_text(name, entry["options"]) for name, entry in tuned.strategies.items() if "options" in entry)
    return f"{TUNED_NOTE} The shipped pair's: {chosen}."
CUES_NOTE = ("With the shipped toy pair (the default models), --cues defaults to the pair's calibrated cues and "
             "--check to the threshold calibrated with them (--check inf: no check).")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument("--large", help="large model: checkpoint folder, .gguf file, hub id or an OpenAI-compatible "
                       "endpoint URL#MODEL, e.g. http://localhost:8000/v1#Qwen/Qwen3-32B (default: the shipped toy-large)")
    group.add_argument("--small", help="small model, same forms (default: the shipped toy-small)")
    group.add_argument("--verifier", help="step verifier for search and reranking (default: the shipped toy-verifier)")
    group.add_argument("--prober", help="answer prober for early-exit[probe_model=prober] (default: the shipped toy-prober)")
    group.add_argument("--router", help="FusionRoute router: a checkpoint with a routing head (default: the shipped toy router)")
    group.add_argument("--difficulty", help="difficulty model for adaptive[signal=difficulty] (default: the shipped toy-difficulty; "
                       "relaykit train difficulty writes one)")
    group.add_argument("--expert", action="append", default=[], metavar="NAME=PATH",
                       help="a domain expert for fusionroute and its baselines (repeatable; default: the shipped toy experts)")
    group.add_argument("--base", help="the model the experts were fine-tuned from, for merged[method=task-arithmetic] "
                       "(default: the shipped toy-large)")
    group.add_argument("--tokenizer", help="for endpoint models: the served model's tokenizer (default: the MODEL part of the URL)")
    group.add_argument("--dtype", default="auto", help="auto (default): bfloat16 on a GPU; on a CPU, bfloat16 for models of 20M+ parameters "
                       "where this processor measures bfloat16 fast, else float32; or float32, bfloat16, float16, "
                       "int8 (weight-only, native engine, bfloat16 activations)")
    group.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    group.add_argument("--engine", default="auto", choices=["auto", "native", "hf", "llamacpp"],
                       help="auto (default): llama.cpp for .gguf files when llama-cpp-python is installed "
                       "(pip install 'relaykit[llamacpp]'), relaykit's native engine for Llama-family models, "
                       "else the model's own forward (hf)")
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
    names = {"kv_interval": "interval", "kv_window": "window", "kv_ratio": "ratio", "kv_budget": "budget", "kv_sinks": "sinks"}
    options = {option: getattr(args, flag) for flag, option in names.items() if getattr(args, flag) is not None}
    return api.kv_policy(args.kv, **options)


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling and stopping")
    group.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    group.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    group.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    group.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    group.add_argument("--max-new-tokens", type=int, default=256,
                       help="new tokens at most (generate: 256; eval and demo: the dataset's own budget, which fits its "
                       "solutions: toy 512, toy:long 2048, JSONL files 4096)")
    group.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")
    group.add_argument("--stop-token-id", action="append", type=int, default=[], metavar="ID", help="stop token id (repeatable; eos always stops)")
    group.add_argument("--raw", action="store_true", help="do not apply the tokenizer's chat template")
    group.add_argument("--system", help="system message for the chat template")


def experts_from_args(args: argparse.Namespace) -> dict[str, str] | None:
    """--expert NAME=PATH flags as name -> spec (None when there are none)."""
    experts = {}
    for item in getattr(args, "expert", None) or []:
        name, sep, spec = item.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise RelaykitError(f"--expert takes NAME=PATH, got {item!r}")
        if name.strip() in experts:
            raise RelaykitError(f"--expert {name.strip()} is given twice")
        experts[name.strip()] = spec.strip()
    return experts or None


def load_models_from_args(args: argparse.Namespace, roles: tuple[str, ...]) -> dict:
    from .strategies.base import EXPERTS

    experts = experts_from_args(args)
    named = [role for role in roles if role.startswith("expert:") and role != EXPERTS]
    specs = {role: experts if role == EXPERTS else getattr(args, role, None) for role in roles if role not in named}
    if named and EXPERTS not in specs:  # expert[name=NAME] alone: that expert, or all given ones
        specs[EXPERTS] = experts or {role.split(":", 1)[1]: None for role in named}
    return api.load_models(
        specs,
        tokenizer=args.tokenizer,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
        threads=args.threads,
        engine=args.engine,
    )


def sampling_from_args(args: argparse.Namespace):
    return api.sampling_and_stop(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        stop_strings=args.stop,
        stop_token_ids=args.stop_token_id,
    )


def strategies_from_args(args: argparse.Namespace, names: list[str], add_baseline: bool = True) -> dict:
    """The strategy variants `names` with the models, sampling, KV policy and options of the flags,
    and the pair's tuned settings for the variants that name none of their tuned options."""
    options = options_from_args(args)
    tuned = api.tuned_settings(args.large, args.small, args.settings)
    roles = api.required_roles(names, options, add_baseline, tuned)  # mistakes show before models load
    sampling, stop = sampling_from_args(args)
    policy = kv_policy_from_args(args)
    models = load_models_from_args(args, roles)
    return api.build_strategies(names, models, options, sampling, stop, policy, add_baseline, tuned)


def cmd_generate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from .decoding.prompt import encode_prompt

    strategy = next(iter(strategies_from_args(args, [args.strategy], add_baseline=False).values()))
    tokenizer = strategy.tokenizer
    prompts = [encode_prompt(tokenizer, p, raw=args.raw, system=args.system) for p in args.prompt]
    results = strategy.generate(prompts)
    if args.json:
        models = {role: model.describe() for role, model in strategy.models.items()}
        for result in results:
            print(json.dumps({**result.to_dict(), "models": models, "settings": dataclasses.asdict(strategy.settings)}))
        return 0
    console = Console()
    for prompt, result in zip(args.prompt, results):
        text = Text()
        for segment, writer in result.segments(tokenizer):
            text.append(segment, style=COLOURS.get(writer, "green"))
        console.rule(prompt[:60])
        console.print(text)
        legend = "  ".join(f"[{COLOURS.get(r, 'green')}]{r}[/]" for r in strategy.roles)
        console.print(f"[dim]written by:[/] {legend}   [dim]finish: {result.finish_reason}, {result.seconds:.2f} s[/]")
        if strategy.settings.source.startswith("tuned"):
            console.print(f"settings: {options_text(strategy.settings.options)} ({strategy.settings.source})", style="dim",
                          markup=False, highlight=False)
        table = Table("model", "engine", "prefill tokens", "decode tokens", "tokens written", "forward calls", "seconds")
        table.add_column("FLOPs", no_wrap=True)
        for role, usage in result.usage.items():
            about = strategy.models[role].describe() if role in strategy.models else {}
            table.add_row(
                role,
                " ".join(SHORT_DTYPES.get(str(about[k]), str(about[k])) for k in ("engine", "dtype") if about.get(k)),
                str(usage["prefill_tokens"]),
                str(usage["decode_tokens"]),
                str(result.tokens_by(role)),
                str(usage["forward_calls"]),
                f"{usage['seconds']:.3f}",
                f"{usage['flops']:.3g}",
            )
        console.print(table)
    return 0


def run_evaluation(args: argparse.Namespace, names: list[str]):
    """Evaluate the strategy variants `names` (and the large baseline); print the table."""
    from rich.console import Console

    from .evals.report import rich_group_tables, rich_table, settings_lines

    if args.max_new_tokens is None:
        args.max_new_tokens = api.token_budget(args.dataset)
    strategies = strategies_from_args(args, names)
    results, paths = api.evaluate_strategies(strategies, args.dataset, args.limit, args.batch_size, args.raw, args.out)
    console = Console()
    console.print(rich_table(results))
    for table in rich_group_tables(results):
        console.print(table)
    for line in settings_lines(results):
        console.print(line, markup=False, highlight=False)
    console.print(f"[dim]wrote {', '.join(str(p) for p in paths.values())}[/]")
    return results, paths, console


def cmd_eval(args: argparse.Namespace) -> int:
    run_evaluation(args, api.split_variants(args.strategy))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .evals.report import rich_trajectory
    from .strategies.base import STRATEGIES

    rest = [name for name, cls in STRATEGIES.items() if name not in ("single", "large", "small") and cls.in_demo]
    results, paths, console = run_evaluation(args, ["large", "small", *rest])
    both = {"small", "large"}  # show a trajectory that both models wrote, when there is one
    shown = next(
        (name for name, entry in results["strategies"].items()
         if both <= {writer for _, writer in entry["problems"][0]["segments"]}), "large"
    )
    problem = results["strategies"][shown]["problems"][0]
    console.rule(f"{shown} on {problem['id']} (cyan: small model, magenta: large model)")
    console.print(rich_trajectory(problem["segments"]))
    verdict = "correct" if problem["correct"] else f"wrong (reference {problem['reference']})"
    console.print(f"[dim]answer: {problem['prediction']} - {verdict}[/]")
    console.print(f"\nplot: {paths['plot']}\ncoloured trajectories: {paths['html']}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import run_calibrate_command, summary
    from .evals.datasets import load_dataset
    from .text import load_cues

    if args.what == "adaptive":
        return calibrate_adaptive_command(args)
    if args.what == "settings":
        return calibrate_settings_command(args)
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


def calibrate_adaptive_command(args: argparse.Namespace) -> int:
    from .calibrate.adaptive import calibrate_adaptive
    from .evals.datasets import load_dataset
    from .strategies.adaptive import Adaptive, AdaptiveConfig

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


def calibrate_settings_command(args: argparse.Namespace) -> int:
    import time

    from .calibrate.settings import SettingsCalibration, calibrate_settings
    from .strategies.base import get_strategy, load_all
    from .tuned import settings_path, write_tuned

    calibration = SettingsCalibration()
    changes = {key: getattr(args, key) for key in ("limit", "batch_size", "tolerance") if getattr(args, key) is not None}
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
        raise RelaykitError("the large model is not a local file or folder: give --out FILE (and --settings FILE to use it)")
    started = time.perf_counter()
    chosen = calibrate_settings(models, calibration, progress=lambda line: print(line, flush=True))
    path = write_tuned(out, models["large"].source, models["small"].source, chosen)
    print(f"wrote {path} ({time.perf_counter() - started:.0f} s)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import logging

    from .toyworld.train import train_toy

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.refine_large and args.refine_small:
        raise RelaykitError("give --refine-large or --refine-small, not both")
    for flag, folder in (("--refine-large", args.refine_large), ("--refine-small", args.refine_small)):
        if folder and not Path(folder, "config.json").is_file():
            raise RelaykitError(f"{flag} {folder}: not a checkpoint folder (no config.json)")
    report = train_toy(args.out, seed=args.seed, measure_n=args.measure, refine_large=args.refine_large,
                       refine_small=args.refine_small)
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2))
    written = "toy-large" if args.refine_large else "toy-small" if args.refine_small else "toy-small and toy-large"
    print(f"{written} written to {args.out}")
    return 0


def cmd_train_relayllm(args: argparse.Namespace) -> int:
    import dataclasses
    import logging

    from .train.relayllm import RelayLLMTrainConfig, train_relayllm

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for flag in ("sft_steps", "grpo_steps", "warmup_problems", "prompts_per_step"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            raise RelaykitError(f"--{flag.replace('_', '-')} must be >= 0")
    cfg = RelayLLMTrainConfig(seed=args.seed, calls=not args.no_calls)
    changes = {}
    if args.warmup_problems is not None:
        changes["warmup_problems"] = args.warmup_problems
    if args.prompts_per_step is not None:
        changes["prompts_per_step"] = args.prompts_per_step
    if args.sft_steps is not None:
        changes["sft"] = dataclasses.replace(cfg.sft, steps=args.sft_steps)
    if args.grpo_steps is not None:
        changes["grpo"] = dataclasses.replace(cfg.grpo, steps=args.grpo_steps)
    cfg = dataclasses.replace(cfg, **changes)
    models = load_models_from_args(args, ("large", "small"))
    report = train_relayllm(models["large"], models["small"], args.out, cfg)
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2))
    print(f"small model written to {args.out}")
    return 0


def cmd_train_prober(args: argparse.Namespace) -> int:
    from .train.prober import ProberTrainConfig, train_prober

    return fine_tune_small(args, ProberTrainConfig, train_prober, "prober")


def cmd_train_verifier(args: argparse.Namespace) -> int:
    from .train.verifier import VerifierTrainConfig, train_verifier

    return fine_tune_small(args, VerifierTrainConfig, train_verifier, "verifier")


def cmd_train_difficulty(args: argparse.Namespace) -> int:
    from .train.difficulty import DifficultyTrainConfig, train_difficulty

    return fine_tune_small(args, DifficultyTrainConfig, train_difficulty, "difficulty model")


def fine_tune_small(args: argparse.Namespace, config_class, trainer, what: str) -> int:
    """`relaykit train verifier|prober|difficulty`: `trainer` fine-tunes the small model for --steps steps."""
    import dataclasses

    if args.steps is not None and args.steps < 1:
        raise RelaykitError(f"--steps must be >= 1, got {args.steps}")
    cfg = config_class(seed=args.seed)
    if args.steps is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=args.steps))
    base = load_models_from_args(args, ("small",))["small"]
    report = trainer(base, args.out, cfg)
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2))
    print(f"{what} written to {args.out}")
    return 0


def cmd_train_fusionroute(args: argparse.Namespace) -> int:
    import dataclasses

    from .train.fusionroute import FusionRouteTrainConfig, train_fusionroute

    changes = {}
    for flag in ("expert_steps", "router_steps", "cdpo_epochs"):
        value = getattr(args, flag)
        if value is not None:
            if value < 1:
                raise RelaykitError(f"--{flag.replace('_', '-')} must be >= 1")
            changes[flag] = value
    cfg = dataclasses.replace(FusionRouteTrainConfig(seed=args.seed), **changes)
    base, router_base = (args.base or api.default_model("large")), (args.router_base or api.default_model("small"))
    for flag, folder in (("--base", base), ("--router-base", router_base)):
        if folder is None or not Path(folder, "config.json").is_file():
            raise RelaykitError(f"{flag} {folder}: not a checkpoint folder (no config.json)")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = train_fusionroute(args.out, cfg, base, router_base, resume=args.resume)
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2))
    print(f"experts, routers and the query classifier written to {args.out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .serve import create_app
    except ImportError as error:
        raise RelaykitError(f"relaykit serve needs FastAPI and uvicorn ({error.name} is missing): "
                            "pip install 'relaykit[serve]'") from error
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise RelaykitError(f"--max-concurrency must be >= 1, got {args.max_concurrency}")
    policy = kv_policy_from_args(args)
    from .strategies.base import EXPERTS

    fusion = ("router", EXPERTS) if args.router or args.expert else ()  # FusionRoute's models when named
    tuned = api.tuned_settings(args.large, args.small)
    tuned_names = [name for name, entry in (tuned.strategies if tuned else {}).items() if "options" in entry]
    helpers = api.required_roles(tuned_names, add_baseline=False, tuned=tuned)  # what bare names run with (a prober, ...)
    models = load_models_from_args(args, tuple(dict.fromkeys(("large", "small", *fusion, *helpers))))
    api_key = args.api_key or os.environ.get("RELAYKIT_API_KEY") or None
    app = create_app(models, kv_policy=policy, api_key=api_key, max_concurrency=args.max_concurrency)
    names = ", ".join(app.state.service.available())
    print(f"relaykit: serving {names} at http://{args.host}:{args.port}/v1" + (" (API key required)" if api_key else ""))
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def add_evaluation_options(parser: argparse.ArgumentParser, strategies: dict) -> None:
    """What `eval` and `demo` share: batching, models, sampling, KV policy, strategy options."""
    parser.add_argument("--batch-size", type=int, default=8, help="problems per batch for batched strategies")
    add_model_options(parser)
    add_sampling_options(parser)
    add_kv_options(parser)
    parser.set_defaults(max_new_tokens=None)  # the dataset's own budget (see run_evaluation)
    parser.add_argument("--settings", help="a settings file of relaykit calibrate settings for the pair (default: the one "
                        "beside the large model, if any; the shipped pair ships its own); none: the strategies' defaults")
    add_strategy_options(parser, strategies, note=f"{CUES_NOTE} {tuned_note()}")


def add_training(what, name: str, run, help: str, description: str) -> argparse.ArgumentParser:
    """A `relaykit train NAME` parser with the options every trainer has (--out, --seed)."""
    parser = what.add_parser(name, help=help, description=description)
    parser.add_argument("--out", default=f"relaykit-{name}", help=f"output folder (default ./relaykit-{name})")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)
    return parser


def add_fine_tuning(what, name: str, run, help: str, description: str) -> None:
    """A `relaykit train NAME` parser for a fine-tuning of the small model (`fine_tune_small`)."""
    parser = add_training(what, name, run, help, description)
    parser.add_argument("--steps", type=int, help="training steps (default 1500)")
    add_model_options(parser)


def build_parser() -> argparse.ArgumentParser:
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
    generate.add_argument("--strategy", default="single", help=f"one of: {', '.join(sorted(STRATEGIES))} (default single); "
                          "NAME[option=value ...] gives it options, e.g. 'speculative[k=2 adaptive=true]'")
    generate.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    generate.add_argument("--settings", help="a settings file of relaykit calibrate settings (default: the pair's own); "
                          "none: the strategy's defaults")
    add_model_options(generate)
    add_sampling_options(generate)
    add_kv_options(generate)
    add_strategy_options(generate, STRATEGIES, note=f"{CUES_NOTE} {tuned_note()}")
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
                          "options beside others, e.g. 'relaygen,relaygen[cues=all],relaygen[cues=none]'; a sweep "
                          "'best-of-n[n=1..64]' runs n = 1, 2, 4, ... 64 and reports them as one accuracy-vs-cost curve")
    evaluate.add_argument("--dataset", default="toy:test", help="toy:SPLIT, toy:fresh:SEED, either after toy:long:, toy:domains: or toy:mixed:, or a JSONL path (GSM8K, MATH-500, AIME formats)")
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
        help="select RelayGen switch cues and the segment check's threshold for a large/small pair "
        "(or, with `adaptive`, the thresholds of the adaptive strategy)",
        description="relaykit calibrate [cues]: the large model writes traces on the dataset; the small model reads them and its "
        "top-1 token is scored by how likely the large model finds it next to its own top one (--statistic agreement; "
        "the paper's is the small model's top-1 minus top-2 probability, --statistic margin), and the mean score after "
        "each candidate cue is compared with the mean elsewhere. "
        "Cues whose delta is above the threshold (with enough occurrences) are selected. Then "
        "RelayGen runs on the same problems under each candidate check threshold (0, 1, 2, 4, 8 logits) "
        "and, of those that lose no problem against threshold 0, the one leaving the large model the fewest "
        "tokens (the strictest on a tie) is written beside the cues. relaykit calibrate adaptive: on the dev split, "
        "the small model's samples, the escalation strategy and the small model alone run on every problem; the "
        "cheapest answer/more-samples thresholds whose accuracy is within --tolerance of the escalation alone are "
        "written to adaptive.json (adaptive[calibration=FILE]); with --signal difficulty, the threshold on the "
        "difficulty model's probability instead. relaykit calibrate settings: the speed settings of speculative, relaygen, "
        "lookup, adaptive and early-exit for the pair; each strategy runs its candidate settings beside the large model alone "
        "on the same problems, and the fastest by wall time that keeps the large model's accuracy (--tolerance) is written beside the "
        "large model (relaykit-settings.json), where a bare strategy name finds it; every candidate's speed-up and "
        "FLOPs are written too. On the toy world adaptive is calibrated on toy:mixed:calibration and early-exit on "
        "toy:long:calibration (--workload NAME=DATASET for others). About 7 minutes for the shipped pair on 2 cores.",
    )
    calibrate.add_argument("what", nargs="?", choices=("cues", "adaptive", "settings"), default="cues",
                           help="cues (default): RelayGen's cues and check; adaptive: the adaptive strategy's thresholds; "
                           "settings: every strategy's speed settings for the pair")
    calibrate.add_argument("--dataset", help="dataset spec (default toy:calibration; adaptive: toy:dev)")
    calibrate.add_argument("--limit", type=int, help="problems to run (default 100; settings: 40 per workload; on the toy world adaptive 300 and early-exit 100, batched by 8)")
    calibrate.add_argument("--out", help="output JSON (default cues.json, with a PNG plot beside it; adaptive: adaptive.json; "
                           "settings: relaykit-settings.json beside the large model)")
    calibrate.add_argument("--strategies", help="settings: the strategies to tune, comma-separated (default: "
                           "speculative,relaygen,lookup,adaptive,early-exit)")
    calibrate.add_argument("--cues", help="settings: the cues.json relaygen runs with (default: the shipped pair's, "
                           "else every candidate cue; relaykit calibrate cues writes one)")
    calibrate.add_argument("--workload", action="append", default=[], metavar="NAME=DATASET",
                           help="settings: calibrate strategy NAME on DATASET instead of --dataset (repeatable)")
    calibrate.add_argument("--escalate", default="relaygen", help="adaptive: the strategy a problem escalates to (default relaygen)")
    calibrate.add_argument("--signal", default="samples", choices=("samples", "difficulty"),
                           help="adaptive: the signal calibrated (default samples; difficulty needs --difficulty PATH)")
    calibrate.add_argument("--samples", type=int, default=4, help="adaptive: the small model's first samples, k (default 4)")
    calibrate.add_argument("--more", type=int, default=4, help="adaptive: samples drawn next in the middle band (default 4)")
    calibrate.add_argument("--tolerance", type=float,
                           help="adaptive: accuracy it may lose against the escalation alone (default 0.005); settings: "
                           "against the large model alone (default: 0.01 for adaptive, 0 for the others)")
    calibrate.add_argument("--budget", type=float,
                           help="adaptive: instead, the most accurate thresholds whose FLOPs are at most this share of "
                           "the escalation's (e.g. 0.5)")
    calibrate.add_argument("--candidates", help="'|'-separated cues or a file of cues (default: the built-in list)")
    calibrate.add_argument("--discover", action=argparse.BooleanOptionalAction, default=True,
                           help="also try the words that open sentences in the traces at least --min-occurrences times "
                           "(default: yes; not with --candidates)")
    calibrate.add_argument("--statistic", choices=("margin", "agreement"),
                           help="what scores a cue's segments: agreement (default; ours), how likely the large model finds "
                           "the small model's top token next to its own, which a free choice of wording does not lower; "
                           "margin (the paper's; the default when the large model is an endpoint), the small model's "
                           "top-1 minus top-2 probability")
    calibrate.add_argument("--threshold", type=float, default=0.0, help="minimum delta of the statistic (default 0)")
    calibrate.add_argument("--min-occurrences", type=int, default=5)
    calibrate.add_argument("--batch-size", type=int, help="problems per batch (default 8; settings: 1, the latency of one request)")
    calibrate.add_argument("--max-new-tokens", type=int, help="default: the dataset's budget")
    calibrate.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                           help="also calibrate the segment check's threshold (default: yes)")
    add_model_options(calibrate)
    calibrate.set_defaults(run=cmd_calibrate)

    serve = commands.add_parser(
        "serve",
        help="an OpenAI-compatible server: a request's `model` names a strategy",
        description="Serve /v1/completions and /v1/chat/completions (streaming too), /v1/models and /health. "
        "A request's `model` is a strategy or a variant, e.g. relaygen or 'relaygen[speculative=8]'; all requests "
        "share one scheduler's batched forwards. Needs the serve extra: pip install 'relaykit[serve]'.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--api-key", help="require Authorization: Bearer KEY on every endpoint but /health "
                       "(default: the RELAYKIT_API_KEY environment variable; none: no key)")
    serve.add_argument("--max-concurrency", type=int, help="requests answered at once; more get a 429 (default: no limit)")
    add_model_options(serve)
    add_kv_options(serve)
    serve.set_defaults(run=cmd_serve)

    train = commands.add_parser("train", help="train models (the toy pair, RelayLLM's small model, a step verifier, "
                                "FusionRoute's experts and router)",
                                description="Train models.")
    what = train.add_subparsers(dest="what", required=True, metavar="WHAT")
    toy = add_training(
        what, "toy", cmd_train,
        help="train toy-small and toy-large from scratch (about 65 minutes on 2 CPU cores)",
        description="Train the toy pair from a seed and measure it (accuracies, parameter and speed ratios, "
        "hard-token share). toy-small trains in two stages: 3,000 steps, then 2,000 on the round level of "
        "toy:mixed (its easy level). toy-large trains in two stages: 2,200 steps, then 300 in which its long rows are "
        "seen with part of the context hidden, so KV compression does not break it. Training is deterministic: "
        "a rerun on the same thread count and PyTorch build gives the same weights bit for bit. The shipped "
        "toy-small and toy-large's first stage were made just before training became deterministic; their "
        "second stages were run from them with --refine-small and --refine-large.",
    )
    toy.add_argument("--measure", type=int, default=200, help="test problems to measure on (0 = skip)")
    toy.add_argument("--refine-large", metavar="DIR",
                     help="run only toy-large's second stage (training with hidden context) from this checkpoint")
    toy.add_argument("--refine-small", metavar="DIR",
                     help="run only toy-small's second stage (training on the round level of toy:mixed) from this checkpoint")
    relayllm = add_training(
        what, "relayllm", cmd_train_relayllm,
        help="train a small model to call the large one with <call>N</call> (RelayLLM: warm-up SFT, then GRPO)",
        description="Warm-up SFT on toy training problems with <call>N</call> inserted where the small model's "
        "top-1 departs from the reference and the departure would change the answer (the large model, continuing "
        "after the small model's token, answers wrong); two rounds, the second with the model the first left; the "
        "large model's tokens carry no loss. Then GRPO whose rollouts are real relayllm generations calling the large model "
        "(8 per question at temperature 1.0, KL 0.01, RelayLLM's reward per question). Writes the small model, "
        "train_log.jsonl and report.json to --out. On 2 CPU cores with the shipped pair: 18 minutes of warm-up "
        "(15 of them the large model's continuations), about 3 seconds a GRPO step. The shipped toy-small-relay is the warm-up alone (--grpo-steps 0): GRPO "
        "lowered its accuracy on the toy (benchmarks/RESULTS.md).",
    )
    relayllm.add_argument("--sft-steps", type=int, help="warm-up steps (default 1500)")
    relayllm.add_argument("--grpo-steps", type=int, help="GRPO steps, 0 = warm-up only (default 60)")
    relayllm.add_argument("--warmup-problems", type=int, help="training problems turned into warm-up examples (default 4000)")
    relayllm.add_argument("--prompts-per-step", type=int, help="questions per GRPO step, 8 rollouts each (default 8)")
    relayllm.add_argument("--no-calls", action="store_true",
                          help="the no-call baseline: GRPO of the small model alone (reward 1 when right), no warm-up")
    add_model_options(relayllm)
    add_fine_tuning(
        what, "verifier", cmd_train_verifier,
        help="train a step verifier (a process reward model) for search and reranking",
        description="Fine-tune the small model (--small, default toy-small) to predict + or - at the end of each "
        "reasoning step: toy training solutions and copies with one number changed, every step from the change on "
        "labelled -. Used by best-of-n[rerank=verifier|weighted], beam-search[scorer=verifier] and "
        "dvts[scorer=verifier]. About 2 minutes on 2 CPU cores.",
    )
    add_fine_tuning(
        what, "prober", cmd_train_prober,
        help="train an answer prober for early exit",
        description="Fine-tune the small model (--small, default toy-small) to write the final answer after a toy "
        "thinking cut at any sentence and closed with '</think>The answer is': it copies the answer once the "
        "thinking holds it, and is unsure before. Used by early-exit[probe_model=prober]. About 2 minutes on 2 CPU cores.",
    )
    add_fine_tuning(
        what, "difficulty", cmd_train_difficulty,
        help="train a difficulty model for adaptive[signal=difficulty]",
        description="Label toy:mixed training problems with the small model's greedy answers (--small, default "
        "toy-small), then fine-tune that small model with a routing head that reads a question and predicts whether "
        "its answer will be right. Goes with that small model only. About 2 minutes on 2 CPU cores.",
    )
    fusionroute = add_training(
        what, "fusionroute", cmd_train_fusionroute,
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
    fusionroute.add_argument("--expert-steps", type=int, help="fine-tuning steps per expert (default 400)")
    fusionroute.add_argument("--router-steps", type=int, help="router SFT steps (default 400)")
    fusionroute.add_argument("--cdpo-epochs", type=int, help="CDPO passes over its preference pairs (default 2)")
    fusionroute.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    fusionroute.add_argument("--resume", action="store_true", help="keep the stages whose output already exists in --out")
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

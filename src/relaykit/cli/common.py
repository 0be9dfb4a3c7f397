"""What the commands share: the model, KV cache, sampling and evaluation options, loading models and building
strategies from them, the tuned-settings note of --help and the evaluation table."""

from __future__ import annotations

import argparse
import dataclasses

from .. import api
from ..errors import RelaykitError
from ..models.loading import ENGINES
from ..options import add_config_options, add_strategy_options, make_config, options_from_args, variant_text

TUNED_NOTE = ("A strategy named without the options it tunes runs the settings relaykit calibrate settings measured "
              "for the pair (the shipped pair ships them); naming any of those options runs its defaults with yours.")
CUES_NOTE = ("With the shipped toy pair (the default models), --cues defaults to the pair's calibrated cues and "
             "--check to the threshold calibrated with them (--check inf: no check).")


def tuned_note() -> str:
    """TUNED_NOTE and the shipped pair's tuned settings, for --help."""
    tuned = api.tuned_settings(None, None)
    if tuned is None:
        return TUNED_NOTE
    chosen = ", ".join(variant_text(name, entry["options"])
                       for name, entry in tuned.strategies.items() if "options" in entry)
    return f"{TUNED_NOTE} The shipped pair's: {chosen}."


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument("--large", help="large model: checkpoint folder, .gguf file, hub id or an OpenAI-compatible "
                       "endpoint URL#MODEL, e.g. http://localhost:8000/v1#Qwen/Qwen3-32B "
                       "(default: the shipped toy-large)")
    group.add_argument("--small", help="small model, same forms (default: the shipped toy-small)")
    group.add_argument("--verifier", help="step verifier for search and reranking (default: the shipped toy-verifier)")
    group.add_argument("--prober",
                       help="answer prober for early-exit[probe_model=prober] (default: the shipped toy-prober)")
    group.add_argument("--router",
                       help="FusionRoute router: a checkpoint with a routing head (default: the shipped toy router)")
    group.add_argument("--difficulty", help="difficulty model for adaptive[signal=difficulty] "
                       "(default: the shipped toy-difficulty; relaykit train difficulty writes one)")
    group.add_argument("--expert", action="append", default=[], metavar="NAME=PATH",
                       help="a domain expert for fusionroute and its baselines "
                       "(repeatable; default: the shipped toy experts)")
    group.add_argument("--base", help="the model the experts were fine-tuned from, for merged[method=task-arithmetic] "
                       "(default: the shipped toy-large)")
    group.add_argument("--tokenizer",
                       help="for endpoint models: the served model's tokenizer (default: the MODEL part of the URL)")
    group.add_argument("--dtype", default="auto",
                       help="auto (default): bfloat16 on a GPU; on a CPU, bfloat16 for models of 20M+ parameters "
                       "where this processor measures bfloat16 fast, else float32; or float32, bfloat16, float16, "
                       "int8 (weight-only, native engine, bfloat16 activations)")
    group.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    group.add_argument("--engine", default="auto", choices=ENGINES,
                       help="auto (default): llama.cpp for .gguf files when llama-cpp-python is installed "
                       "(pip install 'relaykit[llamacpp]'), relaykit's native engine for Llama-family models, "
                       "else the model's own forward (hf)")
    group.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own Python code to run")
    group.add_argument("--allow-pickle", action="store_true",
                       help="allow pickle (.bin) weights; safetensors only by default")
    group.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")


def add_kv_options(parser: argparse.ArgumentParser) -> None:
    from ..models.kv import load_all

    policies = load_all()
    group = parser.add_argument_group(
        "KV cache (every in-process model's runner; Llama-family models)",
        "Options of the policy come as flags or as NAME[option=value ...], e.g. --kv 'rpc[ratio=8 per_group=true]'.")
    group.add_argument("--kv", default="full", metavar="POLICY",
                       help=f"one of {', '.join(policies)} (default full); rpc: Reasoning Path Compression; h2o: "
                       "heavy hitters + recent; streaming: attention sinks + recent")
    add_config_options(group, {name: policy for name, policy in policies.items() if name != "full"}, "kv")


def kv_policy_from_args(args: argparse.Namespace):
    """The KV policy of --kv (NAME or NAME[option=value ...]) and its --kv-OPTION flags."""
    from ..models.kv import parse_policy

    policy = parse_policy(args.kv)
    flags = options_from_args(args, "kv_")
    if not flags:
        return policy
    return make_config(f"KV policy {policy.name!r}", type(policy), {**dataclasses.asdict(policy), **flags})


def set_threads(args: argparse.Namespace) -> None:
    """--threads: torch's CPU threads for this process (a command's choice, not a library's)."""
    if args.threads < 0:
        raise RelaykitError(f"threads must be >= 0, got {args.threads}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling and stopping")
    group.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    group.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    group.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    group.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    group.add_argument("--max-new-tokens", type=int, default=256,
                       help="new tokens at most (generate: 256; eval and demo: the dataset's own budget, which fits "
                       "its solutions: toy 512, toy:long 2048, JSONL files 4096)")
    group.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")
    group.add_argument("--stop-token-id", action="append", type=int, default=[], metavar="ID",
                       help="stop token id (repeatable; eos always stops)")
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
    from ..vocabulary import EXPERT_PREFIX, EXPERTS

    experts = experts_from_args(args)
    named = [role for role in roles if role.startswith(EXPERT_PREFIX) and role != EXPERTS]
    specs = {role: experts if role == EXPERTS else getattr(args, role, None) for role in roles if role not in named}
    if named and EXPERTS not in specs:  # expert[name=NAME] alone: that expert, or all given ones
        specs[EXPERTS] = experts or {role.removeprefix(EXPERT_PREFIX): None for role in named}
    set_threads(args)
    return api.load_models(
        specs,
        tokenizer=args.tokenizer,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
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
    """The strategy variants `names` with the models, sampling and options of the flags, and the
    pair's tuned settings for the variants that name none of their tuned options."""
    options = options_from_args(args)
    tuned = api.tuned_settings(args.large, args.small, args.settings)
    roles = api.required_roles(names, options, add_baseline, tuned)  # mistakes show before models load
    sampling, stop = sampling_from_args(args)
    models = load_models_from_args(args, roles)
    return api.build_strategies(names, models, options, sampling, stop, add_baseline, tuned)


def add_evaluation_options(parser: argparse.ArgumentParser, strategies: dict) -> None:
    """What `eval` and `demo` share: batching, models, sampling, KV policy, strategy options."""
    parser.add_argument("--batch-size", type=int, default=8, help="problems per batch for batched strategies")
    add_model_options(parser)
    add_sampling_options(parser)
    add_kv_options(parser)
    parser.set_defaults(max_new_tokens=None)  # the dataset's own budget (see run_evaluation)
    parser.add_argument("--settings", help="a settings file of relaykit calibrate settings for the pair (default: "
                        "the one beside the large model, if any; the shipped pair ships its own); none: the "
                        "strategies' defaults")
    add_strategy_options(parser, strategies, note=f"{CUES_NOTE} {tuned_note()}")


def run_evaluation(args: argparse.Namespace, names: list[str]):
    """Evaluate the strategy variants `names` (and the large baseline); print the table."""
    from rich.console import Console

    from ..evals.report import rich_group_tables, rich_table, settings_lines

    if args.max_new_tokens is None:
        args.max_new_tokens = api.token_budget(args.dataset)
    policy = kv_policy_from_args(args)  # a mistake shows before models load
    strategies = strategies_from_args(args, names)
    results, paths = api.evaluate_strategies(strategies, args.dataset, args.limit, args.batch_size, args.raw, args.out,
                                             policy)
    console = Console()
    console.print(rich_table(results))
    for table in rich_group_tables(results):
        console.print(table)
    for line in settings_lines(results):
        console.print(line, markup=False, highlight=False)
    console.print(f"[dim]wrote {', '.join(str(p) for p in paths.values())}[/]")
    return results, paths, console

"""`relaykit generate`: one strategy on one or more prompts, printed coloured by writer with a usage table."""

from __future__ import annotations

import argparse
import dataclasses
import json

from ..options import add_strategy_options, options_text
from .common import (
    CUES_NOTE,
    add_kv_options,
    add_model_options,
    add_sampling_options,
    kv_policy_from_args,
    strategies_from_args,
    tuned_note,
)

COLOURS = {"large": "bold magenta", "small": "cyan", "prompt": "dim"}
SHORT_DTYPES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}  # the usage table's engine column


def add_parser(commands) -> None:
    from ..strategies.base import load_all

    strategies = load_all()
    parser = commands.add_parser(
        "generate",
        help="generate text for one or more prompts",
        description="Generate with a strategy; prints the text coloured by the model that wrote each "
        "token and a usage table (or JSON with --json). Several prompts run as one batch.",
    )
    parser.add_argument("prompt", nargs="+", help="prompt text (several prompts run batched)")
    parser.add_argument("--strategy", default="single",
                        help=f"one of: {', '.join(sorted(strategies))} (default single); "
                        "NAME[option=value ...] gives it options, e.g. 'speculative[k=2 adaptive=true]'")
    parser.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    parser.add_argument("--settings", help="a settings file of relaykit calibrate settings (default: the pair's own); "
                        "none: the strategy's defaults")
    add_model_options(parser)
    add_sampling_options(parser)
    add_kv_options(parser)
    add_strategy_options(parser, strategies, note=f"{CUES_NOTE} {tuned_note()}")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ..decoding.prompt import encode_prompt
    from ..runtime.session import Session

    policy = kv_policy_from_args(args)
    strategy = next(iter(strategies_from_args(args, [args.strategy], add_baseline=False).values()))
    tokenizer = strategy.tokenizer
    prompts = [encode_prompt(tokenizer, p, raw=args.raw, system=args.system) for p in args.prompt]
    results = Session(strategy.models, policy).generate(strategy, prompts)
    if args.json:
        models = {role: model.describe() for role, model in strategy.models.items()}
        for result in results:
            print(json.dumps({**result.to_dict(), "models": models, "settings": dataclasses.asdict(strategy.settings)}))
        return 0
    console = Console()
    for prompt, result in zip(args.prompt, results, strict=True):  # one result per prompt
        text = Text()
        for segment, writer in result.segments(tokenizer):
            text.append(segment, style=COLOURS.get(writer, "green"))
        console.rule(prompt[:60])
        console.print(text)
        legend = "  ".join(f"[{COLOURS.get(r, 'green')}]{r}[/]" for r in strategy.roles)
        console.print(f"[dim]written by:[/] {legend}   [dim]finish: {result.finish_reason}, {result.seconds:.2f} s[/]")
        if strategy.settings.source.startswith("tuned"):
            console.print(f"settings: {options_text(strategy.settings.options)} ({strategy.settings.source})",
                          style="dim", markup=False, highlight=False)
        table = Table("model", "engine", "prefill tokens", "decode tokens", "tokens written", "forward calls",
                      "seconds")
        table.add_column("FLOPs", no_wrap=True)
        for role, usage in result.usage.items():
            about = strategy.models[role].describe() if role in strategy.models else {}
            table.add_row(
                role,
                " ".join(SHORT_DTYPES.get(str(about[k]), str(about[k])) for k in ("engine", "dtype") if about.get(k)),
                str(usage.prefill_tokens),
                str(usage.decode_tokens),
                str(result.tokens_by(role)),
                str(usage.forward_calls),
                f"{usage.seconds:.3f}",
                f"{usage.flops:.3g}",
            )
        console.print(table)
    return 0

"""The relaykit command line: argument parsing and printing; the work is done by `relaykit.api`.

Each command is a module with `add_parser(subparsers)`, which adds its parser and sets `run`; the options and
helpers they share are in `common`."""

from __future__ import annotations

import argparse
import sys

from ..errors import RelaykitError
from . import calibrate, demo, evaluate, generate, serve, train

COMMANDS = (generate, evaluate, demo, calibrate, serve, train)  # in the order of --help


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relaykit",
        description="Let LLMs of different sizes share one generation. Models are Hugging Face "
        "checkpoint folders, .gguf files or hub ids; with none named, the shipped toy pair is used.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
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

"""`relaykit demo`: every strategy on a slice of the toy test split, with one coloured trajectory."""

from __future__ import annotations

import argparse

from .common import add_evaluation_options, run_evaluation


def add_parser(commands) -> None:
    from ..strategies.base import load_all

    parser = commands.add_parser(
        "demo",
        help="run every strategy on the shipped toy pair and show the comparison",
        description="Runs every registered strategy on a slice of the toy test split with the shipped "
        "toy-small / toy-large pair; prints the comparison table and one trajectory coloured by "
        "writing model; writes the plot and an HTML view of the trajectories.",
    )
    parser.add_argument("--limit", type=int, default=32, help="toy test problems (default 32)")
    parser.add_argument("--out", default="relaykit-demo", help="output folder (default ./relaykit-demo)")
    parser.add_argument("--dataset", default="toy:test", help=argparse.SUPPRESS)
    add_evaluation_options(parser, load_all())
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..evals.trajectories import rich_trajectory
    from ..strategies.base import STRATEGIES

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

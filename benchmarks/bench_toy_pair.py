"""The toy pair's properties, measured with relaykit's own runtime:
test accuracy of each model (greedy, `relaykit eval`'s harness), the long-trajectory variant,
the parameter ratio, the batch-1 decode-speed ratio, and the share of "hard" solution tokens
(where the small model's teacher-forced top-1 differs from the reference token)."""

from __future__ import annotations

import argparse
import json

import torch

from pairs import add_pair_options, load_pair
from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.sequence import Sequence
from relaykit.decoding.stopping import StopConfig
from relaykit.evals.datasets import load_dataset
from relaykit.evals.harness import EvalSettings, evaluate
from relaykit.runtime.local_runner import LocalRunner
from relaykit.runtime.session import Session
from relaykit.strategies.base import get_strategy
from relaykit.toyworld.tasks import load_split


def hard_token_share(small, problems) -> float:
    """Teacher-forced on the reference solutions: share of solution tokens the small model misses."""
    runner, missed, total = LocalRunner(small, "small"), 0, 0
    for problem in problems:
        prompt = encode_prompt(small.tokenizer, problem.question)
        solution = (small.tokenizer(problem.solution, add_special_tokens=False)["input_ids"]
                    + [small.tokenizer.eos_token_id])
        sequence = Sequence(prompt)
        sequence.extend(solution, "reference")
        logits = runner.score([sequence], len(solution) + 1)[0, :-1]
        missed += int((logits.argmax(-1) != torch.tensor(solution)).sum())
        total += len(solution)
        runner.release(sequence)
    return missed / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_pair_options(parser)
    parser.add_argument("--limit", type=int, default=200, help="test problems")
    parser.add_argument("--long-limit", type=int, default=30, help="long-variant test problems")
    args = parser.parse_args()
    large, small, what = load_pair(args)
    print(f"pair: {what}")
    settings = EvalSettings(batch_size=16)
    stop = StopConfig(max_new_tokens=512)
    strategies = {name: get_strategy(name)({"large": large, "small": small}, stop=stop) for name in ("large", "small")}
    test = evaluate(strategies, load_dataset("toy:test", args.limit), "toy:test", settings)
    long_stop = StopConfig(max_new_tokens=3000)
    long = evaluate({"large": get_strategy("large")({"large": large}, stop=long_stop)},
                    load_dataset("toy:long:test", args.long_limit), "toy:long:test", settings)
    # decode speed at batch 1, forced to 200 tokens: the best of 5 rounds, interleaved
    prompt = encode_prompt(large.tokenizer, load_split("test", 1)[0].question)
    timed = {name: get_strategy(name)({"large": large, "small": small},
                                      stop=StopConfig(max_new_tokens=200, ignore_eos=True))
             for name in ("large", "small")}
    seconds = {name: float("inf") for name in timed}
    session = Session({"large": large, "small": small})
    for _ in range(6):  # the first round warms up
        for name, strategy in timed.items():
            seconds[name] = min(seconds[name], session.generate(strategy, [prompt])[0].seconds)
    speed = {name: 200 / s for name, s in seconds.items()}
    figures = {
        "accuracy_large": test["strategies"]["large"]["accuracy"],
        "accuracy_small": test["strategies"]["small"]["accuracy"],
        "accuracy_large_long": long["strategies"]["large"]["accuracy"],
        "long_mean_tokens": long["strategies"]["large"]["tokens"] / max(args.long_limit, 1),
        "parameter_ratio": large.parameters / small.parameters,
        "decode_speed_ratio_small_over_large": speed["small"] / speed["large"],
        "hard_token_share": hard_token_share(small, load_split("test", min(args.limit, 100))),
    }
    for key, value in figures.items():
        print(f"{key:38s} {value:.3f}")
    print(json.dumps({"benchmark": "toy_pair", **{k: round(v, 4) for k, v in figures.items()}}))


if __name__ == "__main__":
    main()

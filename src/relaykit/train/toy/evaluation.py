"""Accuracy of trained toy models, and the pair's measured properties."""

from __future__ import annotations

from pathlib import Path

import torch

from ...decoding.stopping import StopConfig
from ...toyworld.tasks import Problem, load_split
from .model import load_checkpoint
from .packing import encode
from .timing import decode_speed


@torch.no_grad()
def teacher_forced(model, tokenizer, problems: list[Problem], batch: int = 32) -> tuple[float, float]:
    """(share of problems whose whole solution is top-1 under teacher forcing, share of
    solution tokens whose top-1 prediction differs from the reference)."""
    exact, wrong, total = 0, 0, 0
    for start in range(0, len(problems), batch):
        encoded = [encode(tokenizer, p) for p in problems[start : start + batch]]
        width = max(len(ids) for ids, _ in encoded)
        ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i, _ in encoded])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in encoded])
        predicted = model(input_ids=ids).logits[:, :-1].argmax(-1)
        target = labels[:, 1:].clone()
        target[target == tokenizer.eos_token_id] = -100  # solution tokens only
        mask = target != -100
        miss = (predicted != target) & mask
        exact += int((miss.sum(1) == 0).sum())
        wrong += int(miss.sum())
        total += int(mask.sum())
    return exact / len(problems), wrong / total


def evaluate(model_dir: str | Path, n: int = 200, long: bool = False) -> float:
    """Greedy accuracy of a checkpoint on the first ``n`` toy test problems (or their long
    variant), measured by relaykit's evaluation harness."""
    from ... import api

    models = api.load_models({"large": str(model_dir)})
    strategy = api.build_strategy("single", models, stop=StopConfig(max_new_tokens=2400 if long else 320))
    results, _ = api.evaluate_strategies({"single": strategy}, "toy:long:test" if long else "toy:test", limit=n,
                                         batch_size=16)
    return results["strategies"]["single"]["accuracy"]


def measure(small_dir: str | Path, large_dir: str | Path, n: int = 200, n_long: int = 30) -> dict:
    """The pair's properties: accuracies, parameter ratio, decode-speed ratio, hard-token share
    (measured on one CPU thread; the caller's thread count is restored)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure(small_dir, large_dir, n, n_long)
    finally:
        torch.set_num_threads(threads)


def _measure(small_dir: str | Path, large_dir: str | Path, n: int, n_long: int) -> dict:
    small, tokenizer = load_checkpoint(small_dir)
    large, _ = load_checkpoint(large_dir)
    test = load_split("test", n)
    small_params, large_params = (sum(p.numel() for p in m.parameters()) for m in (small, large))
    exact_small, hard_share = teacher_forced(small, tokenizer, test)
    exact_large, large_miss = teacher_forced(large, tokenizer, test)
    return {
        "accuracy_large": evaluate(large_dir, n),
        "accuracy_small": evaluate(small_dir, n),
        "accuracy_large_long": evaluate(large_dir, n_long, long=True),
        "teacher_forced_exact_large": exact_large,
        "teacher_forced_exact_small": exact_small,
        "params_small": small_params,
        "params_large": large_params,
        "param_ratio": large_params / small_params,
        "decode_speed_ratio": decode_speed(small_dir) / decode_speed(large_dir),
        "hard_token_share": hard_share,
        "large_token_miss_share": large_miss,
    }

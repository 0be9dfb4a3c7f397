"""Train the toy pair (toy-small, toy-large) on the toy world and measure it.

Loss is on solution tokens only (the question is masked), examples are packed into rows, the learning
rate warms up then follows a cosine, and a share of the steps uses 2,048-token rows holding one
long-variant problem so positions past 1,500 are trained. toy-large then has a second stage in which the
long rows are seen with part of their context hidden, as a compressed KV cache leaves it
(`hidden_context`). Data, order and initial weights are drawn from the seed, and training runs under
`torch.use_deterministic_algorithms` (`ToyTrainConfig.deterministic`, on by default), so a rerun on the
same thread count and PyTorch build gives the same weights bit for bit. Without it, torch.compile's
multi-threaded reductions on CPU sum in a varying order, and toy-small's accuracy is sensitive to that.

The parts live in the modules beside this one; this module runs them for the pair and is the CLI's entry.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ...toyworld.tokenizer import build_tokenizer
from .config import WORDED_LARGE, WORDED_SMALL, ToyModelConfig, ToyPairConfig, ToyTrainConfig
from .evaluation import measure
from .model import build_model, load_checkpoint, save_checkpoint
from .stage import train_model

log = logging.getLogger(__name__)


def _train_one(name: str, shape: ToyModelConfig | None, stages: list[ToyTrainConfig], seed: int, folder: Path,
               start: str | Path | None = None) -> tuple[float, float]:
    """Build (or load ``start``), train through ``stages`` (stage i draws from seed + i) and save one
    model; returns (final loss, minutes)."""
    random.seed(seed)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    model = build_model(shape, tokenizer) if start is None else load_checkpoint(start)[0]
    began = time.perf_counter()
    for i, cfg in enumerate(stages):
        loss = train_model(model, tokenizer, cfg, seed + i, name if i == 0 else f"{name} stage {i + 1}")
    save_checkpoint(model, tokenizer, folder)
    return loss, (time.perf_counter() - began) / 60


def train_toy(out_dir: str, seed: int = 0, pair: ToyPairConfig | None = None, measure_n: int = 200,
              refine_large: str | Path | None = None, refine_small: str | Path | None = None) -> dict:
    """Train toy-small then toy-large from ``seed`` into ``out_dir``/toy-small and toy-large, each
    on every CPU thread torch uses (``torch.set_num_threads``). With ``refine_large`` or
    ``refine_small`` (a checkpoint of that model), only that model's second stage runs and nothing
    is measured.

    Returns the training minutes of each model and the pair's measured properties.
    """
    pair = pair or ToyPairConfig()
    out = Path(out_dir)
    report: dict = {"seed": seed, "threads": torch.get_num_threads(), "config": asdict(pair)}
    jobs = {"toy-small": (pair.small, [pair.small_train, pair.small_refine]),
            "toy-large": (pair.large, [pair.large_train, pair.large_refine])}
    start = refine_large or refine_small
    if start:
        # stage 2 alone draws from seed + 1, as it does after stage 1
        name = "toy-large" if refine_large else "toy-small"
        jobs, measure_n = {name: (jobs[name][0], jobs[name][1][1:])}, 0
    for name, (shape, stages) in jobs.items():
        loss, minutes = _train_one(name, shape, stages, seed + (1 if start else 0), out / name, start)
        report[f"{name}_final_loss"], report[f"{name}_train_minutes"] = loss, minutes
        log.info("%s: %.1f min, loss %.4f", name, minutes, loss)
    if measure_n:
        report.update(measure(out / "toy-small", out / "toy-large", n=measure_n))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def train_worded(out_dir: str, large: str | Path, small: str | Path, seed: int = 0) -> dict:
    """Fine-tune a toy pair on the worded world into ``out_dir``/toy-large and toy-small."""
    report: dict = {"seed": seed, "threads": torch.get_num_threads(),
                    "from": {"large": str(large), "small": str(small)},
                    "config": {"large": asdict(WORDED_LARGE), "small": asdict(WORDED_SMALL)}}
    for name, start, cfg in (("toy-large", large, WORDED_LARGE), ("toy-small", small, WORDED_SMALL)):
        loss, minutes = _train_one(f"{name} (worded)", None, [cfg], seed, Path(out_dir) / name, start)
        report[f"{name}_final_loss"], report[f"{name}_train_minutes"] = loss, minutes
    (Path(out_dir) / "report.json").write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    """``python -m relaykit.train.toy.pair OUT_DIR [--seed N]``: train and measure the pair."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure-n", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(json.dumps(train_toy(args.out_dir, args.seed, measure_n=args.measure_n), indent=2))


if __name__ == "__main__":
    main()

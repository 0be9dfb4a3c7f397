"""One training loop for every trainer: AdamW, linear warm-up then cosine decay, gradient
clipping, deterministic algorithms, a progress bar and a log of what the loss function reports.
A trainer gives the batch of each step and the loss of a batch; the loop does the rest."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


@dataclass(frozen=True)
class TrainConfig:
    steps: int  # optimizer steps
    lr: float = 1e-3  # peak learning rate
    min_lr_ratio: float = 0.05  # the cosine ends at this share of the peak
    warmup: int = 0  # steps of linear warm-up to the peak
    weight_decay: float = 0.0  # on matrices only, not on norms or biases
    betas: tuple[float, float] = (0.9, 0.95)
    clip: float = 1.0  # gradient norm
    # torch.use_deterministic_algorithms while training: the same seed, thread count and PyTorch
    # build give the same weights bit for bit
    deterministic: bool = True
    log_every: int = 10  # steps per progress-bar update (the log file gets every step)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio` of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer_for(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=cfg.betas,
    )


def train(
    model: torch.nn.Module,
    cfg: TrainConfig,
    batch_at: Callable[[int], Any],
    loss_of: Callable[[Any], tuple[torch.Tensor, dict]],
    name: str,
    log_path: str | Path | None = None,
) -> list[dict]:
    """Train `model` in place for `cfg.steps` steps: step i trains on `loss_of(batch_at(i))`,
    which returns the loss and figures to log (floats). Returns one record per step (also
    written as JSON lines to `log_path`)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(cfg.deterministic)
    optimizer = optimizer_for(model, cfg)
    records: list[dict] = []
    log = open(log_path, "a") if log_path else None
    try:
        bar = tqdm(range(cfg.steps), desc=f"train {name}", mininterval=10)
        for step in bar:
            batch = batch_at(step)
            model.train()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            loss, figures = loss_of(batch)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            record = {"stage": name, "step": step, "loss": loss.item(), "lr": lr_at(step, cfg),
                      "grad_norm": float(grad_norm), **figures}
            records.append(record)
            if log:
                log.write(json.dumps(record) + "\n")
                log.flush()
            if step % cfg.log_every == cfg.log_every - 1:
                recent = records[-cfg.log_every :]
                bar.set_postfix({k: f"{sum(r[k] for r in recent) / len(recent):.4f}" for k in ("loss", *figures)},
                                refresh=False)
    finally:
        model.eval()
        torch.use_deterministic_algorithms(before)
        if log:
            log.close()
    return records


def new_run(out: str | Path) -> tuple[Path, Path]:
    """Create the output folder `out`; returns it and its emptied `train_log.jsonl`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "train_log.jsonl"
    log_path.write_text("")
    return out, log_path


def finish_run(model: torch.nn.Module, source: str | Path, out: Path, report: dict) -> dict:
    """Save the trained model (see `save_model`) and `report.json` into `out`; returns the report."""
    save_model(model, source, out)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def save_model(model: torch.nn.Module, source: str | Path, out: str | Path) -> None:
    """Write a trained model as safetensors into `out`, with the tokenizer and generation
    settings of the checkpoint folder it was trained from (unchanged)."""
    model.save_pretrained(str(out), safe_serialization=True)
    copy_tokenizer_files(source, out)


def copy_tokenizer_files(source: str | Path, out: str | Path) -> None:
    """Copy the tokenizer and generation settings of checkpoint folder `source` into `out`."""
    for name in TOKENIZER_FILES:
        if (Path(source) / name).is_file():
            shutil.copy(Path(source) / name, Path(out) / name)

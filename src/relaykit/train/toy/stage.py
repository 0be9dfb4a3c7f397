"""One training stage of one toy model: the toy stream packed into batches for `relaykit.train`'s loop."""

from __future__ import annotations

import torch
from transformers import LlamaForCausalLM

from ...toyworld.tasks import stream
from ..loop import TrainConfig, train
from .compile import compiled
from .config import ToyTrainConfig
from .hidden_context import hidden_context_mask
from .packing import Packer


def train_model(model: LlamaForCausalLM, tokenizer, cfg: ToyTrainConfig, seed: int, name: str) -> float:
    """Train ``model`` in place on the toy training stream with `relaykit.train`'s loop; returns
    the mean loss of the last 50 steps."""
    torch.manual_seed(seed)
    short = stream("train", seed, drill_share=cfg.drill_share, round_share=cfg.round_share, worded=cfg.worded)
    packer = Packer(tokenizer, short, stream("train", seed, long=True, worded=cfg.worded))
    long_rows = max(1, cfg.rows * cfg.row_tokens // cfg.long_row_tokens)
    device = next(model.parameters()).device
    forward = compiled(model) if cfg.compile else model
    generator = torch.Generator().manual_seed(seed)  # hidden-context masks

    def batch_at(step: int):
        lead_long = cfg.long_every > 0 and step % cfg.long_every == cfg.long_every - 1
        if lead_long:
            ids, labels = packer.batch(long_rows, cfg.long_row_tokens, lead_long=True)
        else:
            ids, labels = packer.batch(cfg.rows, cfg.row_tokens, lead_long=False)
        hidden = lead_long and cfg.hidden_context > 0
        mask = hidden_context_mask(labels, cfg.hidden_context, generator).to(device) if hidden else None
        return ids.to(device), labels.to(device), mask

    def loss_of(batch):
        ids, labels, mask = batch
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            return forward(input_ids=ids, labels=labels, attention_mask=mask).loss, {}

    loop = TrainConfig(steps=cfg.steps, lr=cfg.lr, min_lr_ratio=cfg.min_lr_ratio, warmup=cfg.warmup,
                       weight_decay=cfg.weight_decay, deterministic=cfg.deterministic, log_every=50)
    records = train(model, loop, batch_at, loss_of, name)
    return sum(r["loss"] for r in records[-50:]) / len(records[-50:])

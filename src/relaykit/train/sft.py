"""Supervised fine-tuning with a per-token loss mask: the model learns only the tokens it is
meant to write (a prompt, or another model's tokens, carry no loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def token_logprobs(model, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids[:, t] | ids[:, :t]) for t >= 1: [B, T - 1] (right padding needs no mask)."""
    logits = model(input_ids=ids).logits[:, :-1].float()
    return torch.gather(F.log_softmax(logits, -1), 2, ids[:, 1:, None])[..., 0]


def sft_loss(model, ids: list[list[int]], masks: list[list[bool]]) -> tuple[torch.Tensor, dict]:
    """Mean negative log-likelihood of the tokens whose mask is True (mask[t] is token t's)."""
    tokens = pad(ids, 0)
    mask = pad([[int(m) for m in row] for row in masks], 0)[:, 1:].float()
    nll = -(token_logprobs(model, tokens) * mask).sum() / mask.sum().clamp(min=1)
    return nll, {"tokens": float(mask.sum())}

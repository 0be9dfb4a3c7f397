"""A step verifier's verdict format: after each reasoning step it predicts "+" (the step is
right) or "-" (wrong); a step's score is P("+") against "-"."""

from __future__ import annotations

import torch

GOOD, BAD = "+", "-"


def verdict_ids(tokenizer) -> tuple[int, int]:
    """The token ids of the two verdicts."""
    good, bad = (tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in (GOOD, BAD))
    return good, bad


def step_scores(logits: torch.Tensor, good: int, bad: int) -> torch.Tensor:
    """P("+") against "-" from logits [..., V]."""
    return torch.softmax(logits[..., [good, bad]].float(), -1)[..., 0]

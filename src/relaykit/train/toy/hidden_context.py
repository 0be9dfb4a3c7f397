"""Attention masks of rows trained with part of their context hidden, as a compressed KV cache leaves it."""

from __future__ import annotations

import torch

# Ranges (drawn per row) of the recent window and of the share of older tokens a query sees in a row
# with hidden context: RPC at c = 4 keeps whole recent lines and scattered older tokens.
HIDDEN_WINDOW = (32, 700)
HIDDEN_KEPT = (0.0, 0.5)


def hidden_context_mask(labels: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """A [rows, 1, T, T] boolean attention mask: causal, and on about ``share`` of the rows each
    query sees only the row's first prompt, a recent window and a random part of the older tokens."""
    rows, length = labels.shape
    distance = torch.arange(length)[:, None] - torch.arange(length)[None]
    masks = (distance >= 0).expand(rows, length, length).clone()
    for row in range(rows):
        if float(torch.rand((), generator=generator)) >= share:
            continue
        window = int(torch.randint(*HIDDEN_WINDOW, (), generator=generator))
        kept = HIDDEN_KEPT[0] + (HIDDEN_KEPT[1] - HIDDEN_KEPT[0]) * float(torch.rand((), generator=generator))
        seen = torch.rand(length, generator=generator) < kept
        seen[: int((labels[row] != -100).nonzero()[0])] = True
        masks[row] &= seen | (distance < window)
    return masks[:, None]

"""Rotary position embeddings: a table of cos and sign-folded sin from the model's own rotary
module, grown on demand, and the rotation itself."""

from __future__ import annotations

import torch


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE: x * cos + rotate_half(x) * sin, with rotate_half's sign moved into `sin` (its first
    half negated), so that the halves swap in one op (exactly the same products)."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin


class RotaryTable:
    """cos and sign-folded sin (see `rotate`) for positions [0, size), from `rotary_emb`."""

    def __init__(self, rotary_emb: torch.nn.Module, head_dim: int, dtype: torch.dtype, device: torch.device):
        self.rotary_emb, self.head_dim, self.dtype, self.device = rotary_emb, head_dim, dtype, device
        self.cos: torch.Tensor | None = None
        self.sin: torch.Tensor | None = None

    def at(self, position_ids: torch.Tensor | None, end: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin at `position_ids` [B, width] (all below `end`), [B, 1, width, head_dim];
        None: every row at the `width` positions ending at `end`, then [width, head_dim]."""
        cos, sin = self.cos, self.sin
        if cos is None or sin is None or cos.shape[0] < end:
            size = max(end, 2 * (0 if cos is None else cos.shape[0]), 256)
            probe = torch.zeros(1, dtype=self.dtype, device=self.device)  # the module reads only its dtype and device
            cos, sin = self.rotary_emb(probe, torch.arange(size, device=self.device)[None])
            half = self.head_dim // 2
            cos, sin = self.cos, self.sin = cos[0], torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)
        if position_ids is None:  # a slice of the table instead of a gather
            return cos[end - width : end], sin[end - width : end]
        return cos[position_ids][:, None], sin[position_ids][:, None]

"""The generic engine: any causal LM through its own forward, one DynamicCache per row."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch

from .engine import UnmeasuredKV, Weights
from .kv import KVPolicy


class HFEngine(UnmeasuredKV):
    """Any causal LM through its own forward; one DynamicCache per row (rows run one by one).
    Its caches are not measured (the KV byte figures are 0)."""

    runs_kv_policies: ClassVar[bool] = False

    def __init__(self, model: Weights, policy: KVPolicy | None = None):
        self.model: Any = model.hf  # any Hugging Face causal LM
        self.caches: list = []
        self.device = next(self.model.parameters()).device

    @property
    def lengths(self) -> list[int]:
        return [c.get_seq_length() for c in self.caches]

    def add_rows(self, count: int) -> None:
        from transformers import DynamicCache

        self.caches += [DynamicCache(config=self.model.config) for _ in range(count)]

    def keep_rows(self, rows: list[int]) -> None:
        self.caches = [self.caches[r] for r in rows]

    def copy_row(self, source: int, target: int) -> None:
        self.caches[target] = copy.deepcopy(self.caches[source])

    def move_row(self, source: int, target: int) -> None:
        """The source row's cache becomes the target's (the source is cleared afterwards)."""
        self.caches[target] = self.caches[source]

    def clear_row(self, row: int) -> None:
        from transformers import DynamicCache

        self.caches[row] = DynamicCache(config=self.model.config)

    def truncate(self, row: int, length: int) -> None:
        current = self.caches[row].get_seq_length()
        if length < current:
            self.caches[row].crop(length - current)  # a negative count removes tokens (transformers 4 and 5)

    @torch.inference_mode()
    def forward(self, tokens: list[list[int]], positions: list[int], wanted: list[int]) -> torch.Tensor:
        """As `Engine.forward`: logits of the fed rows only."""
        last_k = max(wanted)
        rows: list[torch.Tensor | None] = []
        for row_tokens, position, cache in zip(tokens, positions, self.caches, strict=True):
            if not row_tokens:
                rows.append(None)
                continue
            ids = torch.tensor([row_tokens], dtype=torch.long, device=self.device)
            position_ids = torch.arange(position, position + len(row_tokens), device=self.device)[None]
            out = self.model(
                input_ids=ids, position_ids=position_ids, past_key_values=cache, use_cache=True,
                logits_to_keep=max(last_k, 1),  # 0 would keep every position
            )
            logits = out.logits[0, out.logits.shape[1] - last_k :].float()
            if logits.shape[0] < last_k:
                logits = torch.cat([logits.new_zeros(last_k - logits.shape[0], logits.shape[1]), logits])
            rows.append(logits)
        return torch.stack([r for r in rows if r is not None])

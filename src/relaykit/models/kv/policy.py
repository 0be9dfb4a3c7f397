"""The policy interface and the full cache; `Attention` is a forward's attention when a policy
takes it over."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
import torch.nn.functional as F

from ...errors import RelaykitError
from ...registry import registrar
from .cache import KVCache


class Attention:
    """Computes one forward's attention when a policy takes it over (`KVPolicy.begin`)."""

    def __init__(self, cache: KVCache, starts: list[int], fed: list[int]):
        self.cache = cache
        self.starts = torch.tensor(starts, device=cache.device)
        self.fed = torch.tensor(fed, device=cache.device)

    def attend(self, layer: int, q: torch.Tensor, mask: torch.Tensor | None, span: int, scale: float) -> torch.Tensor:
        """Attention output [B, heads, width, D] of queries q (rotated) over slots [0, span)."""
        keys, values = self.cache.layer_keys[layer][:, :, :span], self.cache.layer_values[layer][:, :, :span]
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale,
                                              enable_gqa=q.shape[1] != keys.shape[1])


POLICIES: dict[str, type] = {}
register = registrar(POLICIES)  # @register(name): a KV policy (a dataclass of its options) by that name


@register("full")
@dataclass
class KVPolicy:
    """The full cache: keeps everything. Compressing policies override `attach` and `begin`."""

    name: ClassVar[str] = "full"

    def fresh(self) -> "KVPolicy":
        """A new policy with the same settings (state lives in the cache, one per runner)."""
        return replace(self)

    def attach(self, cache: KVCache) -> None:
        """Add the state this policy keeps to a new, empty cache."""

    def begin(self, cache: KVCache, fed: list[int], positions: list[int]) -> Attention | None:
        """Before a forward feeding `fed[b]` tokens at positions from `positions[b]` (rollbacks
        are done): drop slots, then return None for plain attention or an `Attention`."""
        return None

    def _check(self, condition: bool, message: str) -> None:
        if not condition:
            raise RelaykitError(f"KV policy {self.name!r}: {message}")

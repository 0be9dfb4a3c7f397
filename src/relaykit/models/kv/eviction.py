"""Budgeted eviction baselines: StreamingLLM (Xiao et al. 2023) and H2O (Zhang et al. 2023)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cache import KVCache
from .policy import Attention, KVPolicy, register


class _Evicting(KVPolicy):
    """A fixed budget: once a row holds `budget + interval` slots, keep `budget` of them."""

    budget: int  # fields of each subclass
    interval: int

    def begin(self, cache: KVCache, fed: list[int], positions: list[int]) -> Attention | None:
        full = [row for row, length in enumerate(cache.lengths.tolist()) if length >= self.budget + self.interval]
        for row in full:
            cache.compact(row, self._keep(cache, row, int(cache.lengths[row])))
        if full:
            cache.fit(self.interval + 64)
        return None

    def _keep(self, cache: KVCache, row: int, length: int) -> torch.Tensor:
        raise NotImplementedError


@register("streaming")
@dataclass
class StreamingPolicy(_Evicting):
    """StreamingLLM (Xiao et al. 2023): the first `sinks` tokens plus the most recent ones."""

    budget: int = 1024  # slots kept (Xiao et al. 2023 evaluate caches of 256 to 4096)
    sinks: int = 4  # attention-sink tokens always kept (Xiao et al. 2023: 4)
    interval: int = 32  # evict once `interval` slots over budget (the paper evicts every token: 1)

    def __post_init__(self) -> None:
        self._check(0 <= self.sinks < self.budget, f"need 0 <= sinks < budget, got {self.sinks}, {self.budget}")
        self._check(self.interval >= 1, f"interval must be >= 1, got {self.interval}")

    def _keep(self, cache, row, length):
        recent = self.budget - self.sinks
        keep = torch.cat([torch.arange(self.sinks), torch.arange(length - recent, length)]).to(cache.device)
        return keep.expand(cache.layers, cache.kv_heads, -1)


@register("h2o")
@dataclass
class H2OPolicy(_Evicting):
    """Heavy-Hitter Oracle (Zhang et al. 2023): the `window` most recent tokens plus, per layer
    and KV head, the tokens with the most attention accumulated over every query so far. The
    attention is computed explicitly on every forward (scores and output from one softmax).
    Queries of drafts later rolled back still count (H2O is not exact under speculative)."""

    budget: int = 1024  # slots kept (Zhang et al. 2023 keep 20% of the sequence)
    window: int = 512  # recent slots kept; the rest are heavy hitters (Zhang et al. 2023: half each)
    interval: int = 32  # evict once `interval` slots over budget (the paper evicts every token: 1)

    def __post_init__(self) -> None:
        self._check(1 <= self.window <= self.budget, f"need 1 <= window <= budget, got {self.window}, {self.budget}")
        self._check(self.interval >= 1, f"interval must be >= 1, got {self.interval}")

    def attach(self, cache: KVCache) -> None:
        cache.add_slot_state("attention", torch.float32)

    def begin(self, cache, fed, positions):
        super().begin(cache, fed, positions)
        return _Accumulating(cache, cache.lengths.tolist(), fed)

    def _keep(self, cache, row, length):
        recent = length - self.window
        heavy = cache.slot_state["attention"][:, row, :, :recent].topk(self.budget - self.window, dim=-1).indices
        tail = torch.arange(recent, length, device=cache.device).expand(cache.layers, cache.kv_heads, -1)
        return torch.cat([heavy.sort(-1).values, tail], -1)


class _Accumulating(Attention):
    """Explicit attention that adds each valid query's probabilities to the slots' totals."""

    def attend(self, layer, q, mask, span, scale):
        cache = self.cache
        batch, heads, width, dim = q.shape
        keys, values = cache.keys[layer, :, :, :span], cache.values[layer, :, :, :span]
        kv_heads = keys.shape[1]
        grouped = q.reshape(batch, kv_heads, heads // kv_heads * width, dim)
        logits = (grouped @ keys.transpose(-1, -2) * scale).view(batch, kv_heads, -1, width, span)
        if mask is not None:
            logits = logits.masked_fill(~mask[:, :, None], float("-inf"))
        probs = logits.softmax(-1)
        out = (probs.view(batch, kv_heads, -1, span) @ values).view(batch, heads, width, dim)
        valid = torch.arange(width, device=q.device) < self.fed[:, None]  # rows fed fewer tokens pad
        totals = cache.slot_state["attention"][layer, :, :, :span]
        fresh = torch.arange(span, device=q.device) >= self.starts[:, None]  # slots written now
        totals.masked_fill_(fresh[:, None], 0)
        totals += (probs * valid[:, None, None, :, None]).sum((2, 3)).float()
        return out

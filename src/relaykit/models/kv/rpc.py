"""Reasoning Path Compression (Song et al. 2025)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cache import KEPT, KVCache
from .policy import Attention, KVPolicy, register


@register("rpc")
@dataclass
class RPCPolicy(KVPolicy):
    """Reasoning Path Compression (Song et al. 2025). After P+R generated tokens and then every P,
    each cached generated token before the last R is scored by the attention it gets from the R
    newest queries (softmax over post-RoPE keys, summed over those queries, averaged over heads
    or per KV group, smoothed by an average pool); the best are kept so that the generated part
    holds about 1/c of the tokens generated. The prompt and the last R tokens are always kept.

    A compression step runs inside the forward that feeds its R-th selector token: tokens after
    it in the same forward (a verification chunk) already attend without the dropped slots, which
    are released at the start of the next forward unless a rollback removed the step's token
    first. The output is therefore the same whatever the feed granularity (single, speculative).
    """

    interval: int = 4096  # P: generated tokens between compression steps (Song et al. 2025: 4096, or 1024)
    window: int = 32  # R: selector queries, and the recent tokens always kept (Song et al. 2025: 32)
    ratio: float = 4.0  # c: keep about 1/c of the generated tokens (Song et al. 2025: 4)
    per_group: bool = False  # score within each KV group instead of over all heads (Song et al. 2025: an option)
    kernel: int = 7  # average-pool kernel that smooths the scores (Song et al. 2025: 7)

    def __post_init__(self) -> None:
        self._check(1 <= self.window <= self.interval,
                    f"need 1 <= window <= interval, got {self.window}, {self.interval}")
        self._check(self.ratio >= 1, f"ratio must be >= 1, got {self.ratio}")
        self._check(self.kernel >= 1 and self.kernel % 2 == 1, f"kernel must be odd and >= 1, got {self.kernel}")

    def attach(self, cache: KVCache) -> None:
        cache.add_slot_state("drop_at", torch.int32, KEPT)
        cache.add_row_state("selector_queries", (cache.heads, self.window, cache.head_dim), cache.dtype)

    def begin(self, cache: KVCache, fed: list[int], positions: list[int]) -> Attention | None:
        cache.commit(self.interval + 64)  # a compression step every P tokens, plus a verification chunk
        captures, triggers = [], []
        prompts = cache.prompt_lengths.tolist()
        for row, count in enumerate(fed):
            first = positions[row] - prompts[row] + 1 - self.window  # g - R of the first fed token
            for offset, slot, is_trigger in self._selectors(first, count):
                captures.append((row, offset, slot))
                if is_trigger:
                    triggers.append((row, offset, first + offset + self.window))
        if not captures:
            return None
        return _Compressing(self, cache, cache.lengths.tolist(), fed, captures, triggers)

    def _selectors(self, first: int, count: int):
        """(offset, selector slot, whether it ends a window) of fed tokens inside a selector
        window; token h = g - R (g: its 1-based generated index) is in window m >= 1 when
        P*m - R < h <= P*m, and ends it when h == P*m."""
        period, window = self.interval, self.window
        h, end = max(first, period - window + 1), first + count
        while h < end:
            slot = (h - 1) % period - (period - window)
            if slot < 0:
                h -= slot
                continue
            yield h - first, slot, slot == window - 1
            h += 1


class _Compressing(Attention):
    """An RPC forward: keeps selector queries, runs compression steps, masks what they dropped."""

    def __init__(self, policy: RPCPolicy, cache: KVCache, starts, fed, captures, triggers):
        super().__init__(cache, starts, fed)
        self.policy, self.triggers, self.start_list = policy, triggers, starts
        rows, offsets, slots = (torch.tensor(c, device=cache.device) for c in zip(*captures))
        self.capture = rows, offsets, slots
        # steps with later tokens in this forward: those tokens must not see the dropped slots
        self.masked = any(offset < fed[row] - 1 for row, offset, _ in triggers)

    def attend(self, layer, q, mask, span, scale):
        rows, offsets, slots = self.capture
        self.cache.row_state["selector_queries"][layer][rows, :, slots] = q[rows, :, offsets]
        for row, offset, generated in self.triggers:
            self._compress(layer, row, self.start_list[row] + offset, generated, scale)
        if self.masked:
            width = q.shape[2]
            query_slot = self.starts[:, None] + torch.arange(width, device=q.device)
            drops = self.cache.slot_state["drop_at"][layer, :, :, :span]
            visible = drops[:, :, None, :] >= query_slot[:, None, :, None]
            visible = visible.repeat_interleave(q.shape[1] // drops.shape[1], dim=1)
            mask = visible if mask is None else visible & mask
        return super().attend(layer, q, mask, span, scale)

    def _compress(self, layer: int, row: int, slot: int, generated: int, scale: float) -> None:
        """The compression step whose last selector query sits at `slot` (`generated` tokens in)."""
        policy, cache = self.policy, self.cache
        window, span = policy.window, slot + 1
        queries = cache.row_state["selector_queries"][layer, row].float()  # [heads, R, D]
        keys = cache.keys[layer, row, :, :span].float()  # [kv_heads, span, D]
        kv_heads, heads = keys.shape[0], queries.shape[0]
        logits = queries.view(kv_heads, heads // kv_heads * window, -1) @ keys.transpose(1, 2) * scale
        logits = logits.view(kv_heads, -1, window, span)
        query_slot = torch.arange(slot - window + 1, span, device=keys.device)
        drops = cache.slot_state["drop_at"][layer, row, :, :span]
        slots = torch.arange(span, device=keys.device)
        visible = (slots <= query_slot[:, None]) & (drops[:, None, :] >= query_slot[:, None])
        attention = logits.masked_fill(~visible[:, None], float("-inf")).softmax(-1).sum(2).mean(1)  # [kv_heads, span]
        if not policy.per_group:
            attention = attention.mean(0, keepdim=True)
        prompt = int(cache.prompt_lengths[row])
        candidate = drops[: attention.shape[0], prompt : span - window] == KEPT  # [groups, slots]
        candidates = candidate.nonzero()[:, -1].view(attention.shape[0], -1) + prompt
        if candidates.shape[1] == 0:
            return
        scores = attention.gather(1, candidates)[:, None]
        scores = F.avg_pool1d(scores, policy.kernel, 1, policy.kernel // 2, count_include_pad=False)[:, 0]
        keep = min(int((generated - window) / policy.ratio), candidates.shape[1])
        dropped = torch.ones_like(candidates, dtype=torch.bool).scatter_(1, scores.topk(keep, dim=1).indices, False)
        for group in range(candidates.shape[0]):
            heads_of = slice(None) if not policy.per_group else group
            cache.drop(layer, row, heads_of, candidates[group][dropped[group]], slot)

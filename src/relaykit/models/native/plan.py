"""A native forward's plan: which cache rows it computes, their tokens and positions, the slots
each query sees, and where new keys and values are written; made before the layers run, it also
prepares the cache (the policy's drops, room for the new slots, their positions)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kv import Attention, KVCache, KVPolicy

EXACT_CHUNK = 32  # longest chunk a low-precision forward attends position by position (see `one_by_one`)


@dataclass(slots=True)
class ForwardPlan:
    """One forward over a batch of cache rows (B computed rows, `width` positions each)."""

    fed_counts: list[int]  # tokens fed to each row of the cache
    fed_rows: list[int]  # the cache rows fed something
    rows: slice | torch.Tensor  # the rows computed: a block of the cache (a view) or row indices (gathered)
    counts: list[int]  # tokens fed to each computed row
    lengths: list[int]  # each cache row's slots before this forward (after the policy's drops)
    starts: list[int]  # each computed row's first new slot
    batch: int  # rows computed
    width: int  # the longest feed
    last_k: int  # positions whose logits are returned, per fed row
    ids: torch.Tensor  # [B, width] token ids (padded)
    position_ids: torch.Tensor | None  # [B, width]; None: every row at the `width` positions ending at `rope_end`
    rope_end: int
    span: int  # slots attended by any row
    mask: torch.Tensor | None  # [B or 1, 1, width, span] boolean: the slots each query sees; None: all of [0, span)
    additive: torch.Tensor | None  # the mask as SDPA takes it (what it would convert a boolean one to), made once
    policy_attention: Attention | None  # a policy's attention for this forward; None: plain attention
    # where new keys and values go: gathered rows, their flat indices in a layer's [rows * kv_heads * capacity];
    # a block of rows of different starts, the scatter index [B, kv_heads, width, head_dim]; else from `starts[0]`
    flat: torch.Tensor | None
    write_index: torch.Tensor | None
    one_by_one: bool  # a short chunk of one row in low precision: each position attends as decoding it would

    def finish(self, cache: KVCache) -> None:
        """After the layers: the fed rows' lengths grow, the peak of used bytes is noted."""
        fed_counts = self.fed_counts
        if min(fed_counts) == max(fed_counts):
            cache.lengths += fed_counts[0]
        else:
            cache.lengths += torch.tensor(fed_counts, dtype=cache.lengths.dtype)
        cache.note_usage(sum(self.lengths) + sum(fed_counts))

    def wanted(self, hidden: torch.Tensor) -> torch.Tensor:
        """The hidden states [F, last_k, H] of each fed row's last `last_k` fed tokens."""
        counts, width, last_k = self.counts, self.width, self.last_k
        if len(self.fed_rows) < self.batch:  # a policy's forward over every row: keep the fed ones
            hidden = hidden[torch.tensor(self.fed_rows, device=hidden.device)]
            counts = [counts[b] for b in self.fed_rows]
        if min(counts) == width >= last_k:  # every row's last k fed tokens end the block
            return hidden if width == last_k else hidden[:, width - last_k :]
        fed = torch.tensor(counts, dtype=torch.long, device=hidden.device)
        pick = (fed[:, None] - last_k + torch.arange(last_k, device=hidden.device)).clamp(min=0)
        return hidden.gather(1, pick[:, :, None].expand(len(counts), last_k, hidden.shape[-1]))


def plan_forward(cache: KVCache, policy: KVPolicy, tokens: list[list[int]], positions: list[int], wanted: list[int],
                 exact_positions: bool) -> ForwardPlan:
    """Plan a forward feeding `tokens[b]` to cache row b from position `positions[b]` (see
    `NativeEngine.forward`). Only the fed rows are computed (a block of rows is read in place,
    scattered rows are gathered), unless a policy takes over the attention: policies work on every
    row of the cache."""
    device = cache.device
    fed_counts = [len(t) for t in tokens]
    lengths = cache.lengths.tolist()
    for row, (start, count, k) in enumerate(zip(lengths, fed_counts, wanted, strict=True)):
        if start == 0 and count:  # a row's prompt: what it read before its first prediction
            cache.prompt_lengths[row] = max(count - k + 1, 1)
    policy_attention = policy.begin(cache, fed_counts, positions)  # None: plain attention
    if policy.name != "full":
        lengths = cache.lengths.tolist()  # after the policy's drops
    fed_rows = [b for b, count in enumerate(fed_counts) if count]
    rows: slice | torch.Tensor
    if policy_attention is not None or len(fed_rows) == len(tokens):
        rows = slice(None)
    elif fed_rows[-1] - fed_rows[0] + 1 == len(fed_rows):
        rows = slice(fed_rows[0], fed_rows[-1] + 1)
    else:
        rows = torch.tensor(fed_rows, dtype=torch.long, device=device)
    picked = range(len(tokens))[rows] if isinstance(rows, slice) else fed_rows
    tokens, positions = [tokens[b] for b in picked], [positions[b] for b in picked]
    starts = [lengths[b] for b in picked]
    batch, width, last_k = len(tokens), max(len(t) for t in tokens), max(wanted)
    cache.reserve(max(starts) + width)
    ids = torch.tensor([t + [0] * (width - len(t)) for t in tokens], dtype=torch.long, device=device)
    shared = min(positions) == max(positions)  # then every row reads the same slice of the rotary table
    position_ids = None if shared else torch.tensor([range(p, p + width) for p in positions], device=device)
    span = max(starts) + width
    starts_t = None if min(starts) == max(starts) else torch.tensor(starts, dtype=torch.long, device=device)
    mask = None
    if starts_t is not None:
        slot = torch.arange(span, device=device)
        limit = starts_t[:, None] + torch.arange(width, device=device) + 1
        mask = (slot[None, None, :] < limit[:, :, None])[:, None]
    elif width > 1:
        mask = torch.ones(width, span, dtype=torch.bool, device=device).tril_(starts[0])[None, None]
    additive = mask
    if mask is not None and policy_attention is None:
        additive = torch.zeros(mask.shape, dtype=cache.dtype, device=device)
        additive.masked_fill_(~mask, float("-inf"))
    if policy.name != "full":  # positions are read only once a policy has moved slots
        written = position_ids
        if written is None:
            written = torch.arange(positions[0], positions[0] + width, device=device)[None]
        cache.write_positions(starts[0] if starts_t is None else starts_t, written, rows)
    flat = write_index = None
    if not isinstance(rows, slice):
        if starts_t is None:
            starts_t = torch.tensor(starts, dtype=torch.long, device=device)
        write_slots = starts_t[:, None] + torch.arange(width, device=device)  # [B, width]
        heads = torch.arange(cache.kv_heads, device=device)
        flat = ((rows[:, None, None] * cache.kv_heads + heads[None, :, None]) * cache.capacity
                + write_slots[:, None, :]).reshape(-1)
    elif starts_t is not None:
        write_slots = starts_t[:, None] + torch.arange(width, device=device)
        write_index = write_slots[:, None, :, None].expand(batch, cache.kv_heads, width, cache.head_dim)
    one_by_one = policy_attention is None and exact_positions and batch == 1 and 1 < width == last_k <= EXACT_CHUNK
    return ForwardPlan(  # in field order (keywords cost a microsecond more, a tenth of this function)
        fed_counts, fed_rows, rows, [len(t) for t in tokens], lengths, starts, batch, width, last_k, ids, position_ids,
        max(positions) + width, span, mask, additive, policy_attention, flat, write_index, one_by_one,
    )

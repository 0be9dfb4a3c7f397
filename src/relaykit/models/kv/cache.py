"""The KV cache: per-row slots of keys and values for a batch of rows of different lengths.


Keys and values are [layers, rows, kv_heads, capacity, head_dim]; row b holds `lengths[b]` valid
slots [0, lengths[b]) in every layer and KV head. Without compression slot == position. A
compressing policy drops slots, but every layer and head of a row keeps the same number of slots
(each layer, and with per-group scoring each KV head, may keep a different set) and survivors stay
in position order, so rolling back n tokens is still "drop the last n slots". Keys are cached
after rotation, so positions never change; `positions` records each slot's original position.

"""

from __future__ import annotations

import torch

from ...errors import RelaykitError

KEPT = torch.iinfo(torch.int32).max  # drop_at of a slot that no pending compression step dropped


class KVCache:
    """Preallocated keys/values plus per-slot and per-row state that follows rows, growth and
    compaction. Deferred drops: a compression step marks slots dropped *as of* a slot (`drop_at`);
    the marks are undone by a rollback to or before that slot and committed by `commit`."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device, heads: int | None = None):
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.heads = heads or kv_heads  # query heads
        self.dtype, self.device = dtype, device
        self.keys = torch.zeros(layers, 0, kv_heads, 0, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.layer_views()
        self.lengths = torch.zeros(0, dtype=torch.long)
        self.prompt_lengths = torch.zeros(0, dtype=torch.long)  # tokens read before the first prediction
        self.pending = torch.zeros(0, dtype=torch.bool)  # rows with deferred drops
        self.capacity = 0
        self.compacted = False  # whether a compaction ever moved slots (until then slot == position)
        self.slot_state: dict[str, torch.Tensor] = {}  # [layers, rows, kv_heads, capacity]
        self.slot_fill: dict[str, float] = {}
        self.row_state: dict[str, torch.Tensor] = {}  # [layers, rows, ...]
        self.add_slot_state("positions", torch.int32)
        self.peak_bytes = 0  # most key/value bytes allocated at once
        self.peak_used_bytes = 0  # most key/value bytes in valid slots after a forward

    @property
    def batch(self) -> int:
        return len(self.lengths)

    def layer_views(self) -> None:
        """Per-layer views [rows, kv_heads, capacity, head_dim] (cheaper than indexing every step)."""
        self.layer_keys, self.layer_values = list(self.keys.unbind(0)), list(self.values.unbind(0))

    @property
    def positions(self) -> torch.Tensor:
        return self.slot_state["positions"]

    def add_slot_state(self, name: str, dtype: torch.dtype, fill: float = 0) -> None:
        shape = (self.layers, self.batch, self.kv_heads, self.capacity)
        self.slot_state[name] = torch.full(shape, fill, dtype=dtype, device=self.device)
        self.slot_fill[name] = fill

    def add_row_state(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        self.row_state[name] = torch.zeros(self.layers, self.batch, *shape, dtype=dtype, device=self.device)

    def add_rows(self, count: int) -> None:
        """Append `count` empty rows (zeros: stale slots are masked, but NaN x 0 would leak)."""
        grow = lambda t, fill=0: torch.cat([t, t.new_full((t.shape[0], count, *t.shape[2:]), fill)], 1)  # noqa: E731
        self.keys, self.values = grow(self.keys), grow(self.values)
        self.slot_state = {n: grow(t, self.slot_fill[n]) for n, t in self.slot_state.items()}
        self.row_state = {n: grow(t) for n, t in self.row_state.items()}
        self.lengths = torch.cat([self.lengths, torch.zeros(count, dtype=torch.long)])
        self.prompt_lengths = torch.cat([self.prompt_lengths, torch.zeros(count, dtype=torch.long)])
        self.pending = torch.cat([self.pending, torch.zeros(count, dtype=torch.bool)])
        self.layer_views()
        self._note_allocation()

    def clear_row(self, row: int) -> None:
        """Empty a row for reuse by another sequence."""
        for name, t in self.slot_state.items():
            t[:, row] = self.slot_fill[name]
        self.lengths[row] = self.prompt_lengths[row] = 0
        self.pending[row] = False

    def copy_row(self, source: int, target: int) -> None:
        """Make row `target` a copy of row `source` (a fork)."""
        for t in (self.keys, self.values, *self.slot_state.values(), *self.row_state.values()):
            t[:, target] = t[:, source]
        for t in (self.lengths, self.prompt_lengths, self.pending):
            t[target] = t[source]

    def keep_rows(self, rows: list[int]) -> None:
        """Keep only the given rows, in that order (finished rows release their memory)."""
        index = torch.tensor(rows, dtype=torch.long)
        on_device = index.to(self.device)
        self.keys, self.values = self.keys.index_select(1, on_device), self.values.index_select(1, on_device)
        self.slot_state = {n: t.index_select(1, on_device) for n, t in self.slot_state.items()}
        self.row_state = {n: t.index_select(1, on_device) for n, t in self.row_state.items()}
        self.lengths, self.prompt_lengths = self.lengths[index], self.prompt_lengths[index]
        self.pending = self.pending[index]
        self.layer_views()

    def reserve(self, needed: int) -> None:
        """Grow to hold at least `needed` slots (amortised doubling)."""
        if needed > self.capacity:
            self._resize(max(needed, 2 * self.capacity, 64))

    def fit(self, headroom: int) -> None:
        """Set the capacity to the longest row plus `headroom` (after compaction: the growth
        expected before the next one, so that the cache never doubles)."""
        target = (int(self.lengths.max()) if self.batch else 0) + headroom
        if target != self.capacity:
            self._resize(target)

    def _resize(self, capacity: int) -> None:
        kept = min(capacity, self.capacity)

        def resized(t: torch.Tensor, fill: float = 0) -> torch.Tensor:
            out = t.new_full((*t.shape[:3], capacity, *t.shape[4:]), fill)
            out[:, :, :, :kept] = t[:, :, :, :kept]
            return out

        self.keys, self.values = resized(self.keys), resized(self.values)
        self.slot_state = {n: resized(t, self.slot_fill[n]) for n, t in self.slot_state.items()}
        self.capacity = capacity
        self.layer_views()
        self._note_allocation()

    def write_positions(self, starts: torch.Tensor | int, position_ids: torch.Tensor,
                        rows: slice | torch.Tensor = slice(None)) -> None:
        """Record the positions [rows, width] of tokens written from slot `starts` (int or per
        row) into `rows` (a block of rows, or row indices)."""
        positions = self.positions[:, rows]
        values = position_ids.to(torch.int32)[None, :, None, :]
        if isinstance(starts, int):
            positions[:, :, :, starts : starts + position_ids.shape[1]] = values
        else:
            index = (starts[:, None] + torch.arange(position_ids.shape[1], device=starts.device))[None, :, None, :]
            shape = (self.layers, positions.shape[1], self.kv_heads, position_ids.shape[1])
            positions.scatter_(3, index.expand(shape), values.expand(shape))
        if not isinstance(rows, slice):  # indexing copied them
            self.positions[:, rows] = positions

    def truncate(self, row: int, length: int) -> None:
        """Drop the row's slots from `length` on; refuse when they are not its latest tokens."""
        current = int(self.lengths[row])
        if length >= current:
            return
        if self.compacted:  # else every slot still holds its own position
            positions = self.positions[:, row, :, [max(length, 0), current - 1]]
            if bool(((positions[..., 1] - positions[..., 0]) != current - 1 - max(length, 0)).any()):
                raise RelaykitError(
                    f"cannot roll back {current - length} tokens: the KV policy already dropped some of them "
                    "(use a recent window longer than the longest rollback, e.g. the draft length + 1)"
                )
        self.lengths[row] = length
        if self.pending[row]:
            drops = self.slot_state["drop_at"][:, row]
            drops[drops >= length] = KEPT
            self.pending[row] = bool((drops[:, :, :length] != KEPT).any())

    def drop(self, layer: int, row: int, heads: slice | int, slots: torch.Tensor, at: int) -> None:
        """Mark slots dropped for every token after slot `at` (committed at the next `commit`)."""
        self.slot_state["drop_at"][layer, row, heads, slots] = at
        self.pending[row] = True

    def commit(self, headroom: int) -> None:
        """Compact every row with deferred drops, then fit the capacity (`fit`)."""
        rows = self.pending.nonzero().flatten().tolist()
        for row in rows:
            length = int(self.lengths[row])
            alive = self.slot_state["drop_at"][:, row, :, :length] == KEPT  # same count in every layer and head
            self.compact(row, alive.nonzero()[:, -1].view(self.layers, self.kv_heads, -1))
            self.slot_state["drop_at"][:, row] = KEPT
        self.pending[:] = False
        if rows:
            self.fit(headroom)

    def compact(self, row: int, keep: torch.Tensor) -> None:
        """Keep the slots `keep` [layers, kv_heads, n] (ascending) of a row, moved to [0, n)."""
        count = keep.shape[-1]
        wide = keep[..., None].expand(-1, -1, -1, self.head_dim)
        self.keys[:, row, :, :count] = self.keys[:, row].gather(2, wide)
        self.values[:, row, :, :count] = self.values[:, row].gather(2, wide)
        for state in self.slot_state.values():
            state[:, row, :, :count] = state[:, row].gather(2, keep)
        self.lengths[row] = count
        self.compacted = True

    def slot_bytes(self) -> int:
        """Key/value bytes of one slot of a row, all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.keys.element_size()

    def nbytes(self) -> int:
        """Key/value bytes of the valid slots."""
        return int(self.lengths.sum()) * self.slot_bytes()

    def allocated_bytes(self) -> int:
        return (self.keys.numel() + self.values.numel()) * self.keys.element_size()

    def note_usage(self, slots: int) -> None:
        """Update the peak of valid key/value bytes, given the number of valid slots (the caller knows it)."""
        self.peak_used_bytes = max(self.peak_used_bytes, slots * self.slot_bytes())

    def _note_allocation(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.allocated_bytes())

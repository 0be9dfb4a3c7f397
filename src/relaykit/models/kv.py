"""KV cache storage for a batch of rows of different lengths, and pluggable cache policies.

Slots are per row: row b holds `lengths[b]` valid entries in slots [0, lengths[b]). Without
compression slot == position; a compressing policy may drop slots, and positions (needed for
rotary embeddings) are tracked separately by the runner.
"""

from __future__ import annotations

import torch


class KVCache:
    """Preallocated per-layer key/value tensors [batch, kv_heads, capacity, head_dim]."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device):
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.dtype, self.device = dtype, device
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.lengths = torch.zeros(0, dtype=torch.long)
        self.capacity = 0

    @property
    def batch(self) -> int:
        return len(self.lengths)

    def add_rows(self, count: int) -> None:
        """Append `count` empty rows."""
        shape = (count, self.kv_heads, self.capacity, self.head_dim)
        empty = torch.zeros(shape, dtype=self.dtype, device=self.device)  # stale slots are masked; NaN garbage would still leak as 0 x NaN
        if self.keys:
            self.keys = [torch.cat([k, empty]) for k in self.keys]
            self.values = [torch.cat([v, empty]) for v in self.values]
        else:
            self.keys = [empty.clone() for _ in range(self.layers)]
            self.values = [empty.clone() for _ in range(self.layers)]
        self.lengths = torch.cat([self.lengths, torch.zeros(count, dtype=torch.long)])

    def keep_rows(self, rows: list[int]) -> None:
        """Keep only the given rows, in that order (finished rows release their memory)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]
        self.lengths = self.lengths[torch.tensor(rows, dtype=torch.long)]

    def reserve(self, needed: int) -> None:
        """Grow every layer to hold at least `needed` slots (amortised doubling)."""
        if needed <= self.capacity:
            return
        capacity = max(needed, 2 * self.capacity, 64)
        grow = capacity - self.capacity
        pad = lambda t: torch.cat(  # noqa: E731
            [t, t.new_zeros(t.shape[0], t.shape[1], grow, t.shape[3])], dim=2
        )
        self.keys = [pad(k) for k in self.keys]
        self.values = [pad(v) for v in self.values]
        self.capacity = capacity

    def truncate(self, row: int, length: int) -> None:
        self.lengths[row] = min(int(self.lengths[row]), length)

    def nbytes(self) -> int:
        """Bytes of the valid entries (what a compacted cache would hold)."""
        per_slot = 2 * self.layers * self.kv_heads * self.head_dim * self.keys[0].element_size() if self.keys else 0
        return int(self.lengths.sum()) * per_slot

    def allocated_bytes(self) -> int:
        return sum(k.numel() * k.element_size() for k in self.keys + self.values)


class KVPolicy:
    """Decides what a runner's cache keeps. The full cache keeps everything."""

    name = "full"

    def fresh(self) -> "KVPolicy":
        """A new policy with the same settings and no state (one per runner)."""
        return type(self)()

    def after_forward(self, cache: KVCache) -> None:
        """Called after each forward; a compressing policy drops slots here."""


def make_policy(name: str = "full", **options) -> KVPolicy:
    from ..errors import RelaykitError

    if name == "full":
        return KVPolicy()
    raise RelaykitError(f"unknown KV policy {name!r}; available: full")

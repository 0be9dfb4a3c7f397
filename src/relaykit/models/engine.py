"""The engine protocol: what a runner asks of a model's forward over a batch of cache rows.

A runner keeps one row per sequence it reads; the engine holds each row's cached tokens (its KV
cache), feeds rows new tokens, and rolls rows back, forks, moves and drops them. Engines are made
by their model (`Model.make_engine`): native (relaykit's Llama-family forward), hf (the model's
own forward) and llamacpp (a GGUF file through llama.cpp)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

import torch

if TYPE_CHECKING:
    from .kv import KVPolicy


class Weights(Protocol):
    """What an engine over Hugging Face weights reads of the model that makes it (`Model`)."""

    name: str
    hf: torch.nn.Module
    int8: bool  # multiply by int8 copies of the weights (the native engine)


class UnmeasuredKV:
    """For engines that do not measure their KV cache's bytes: every figure is 0."""

    def kv_bytes(self) -> int:
        return 0

    def kv_peak_bytes(self) -> int:
        return 0

    def kv_slot_bytes(self) -> int:
        return 0


class Engine(Protocol):
    """A model's forward over rows of cached tokens (rows are numbered 0..)."""

    runs_kv_policies: ClassVar[bool]  # whether KV policies other than full can run on it

    def __init__(self, model: Weights, policy: KVPolicy) -> None: ...

    @property
    def lengths(self) -> list[int]:
        """Cached tokens per row."""
        ...

    def add_rows(self, count: int) -> None:
        """Append `count` empty rows."""

    def keep_rows(self, rows: list[int]) -> None:
        """Keep only rows `rows` (ascending), renumbered 0.. in that order; free the others' memory."""

    def copy_row(self, source: int, target: int) -> None:
        """Make row `target` a copy of row `source` (a fork: both go on from the same tokens)."""

    def move_row(self, source: int, target: int) -> None:
        """Make row `target` what row `source` was; the source is cleared or reused afterwards."""

    def clear_row(self, row: int) -> None:
        """Empty a row for another sequence."""

    def truncate(self, row: int, length: int) -> None:
        """Keep a row's first `length` cached tokens (a rollback); nothing when it holds fewer."""

    def forward(self, tokens: list[list[int]], positions: list[int], wanted: list[int]) -> torch.Tensor:
        """Feed `tokens[b]` to row b at positions from `positions[b]`; logits [F, K, V] (float32)
        of the last K fed tokens of each of the F rows fed something, in row order, K = max(wanted),
        of which row b needs its last `wanted[b]`."""
        ...

    def kv_bytes(self) -> int:
        """Key/value bytes of the cached tokens of every row now (0: not measured)."""
        ...

    def kv_peak_bytes(self) -> int:
        """The most key/value bytes allocated at once so far (0: not measured)."""
        ...

    def kv_slot_bytes(self) -> int:
        """Key/value bytes of one cached token of one row (0: not measured)."""
        ...

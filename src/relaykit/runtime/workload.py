"""What the requests of one scheduler share beyond their rows: each in-process model's measured
load, and what the requests of one strategy may keep across requests (a drafter's recent outputs)."""

from __future__ import annotations

import weakref

from .load import Load


class Workload:
    """`loads`: role -> `Load` of each in-process model; `recent_tokens`: how many tokens of their
    outputs the requests of one strategy may keep across requests (0: nothing crosses requests)."""

    def __init__(self, loads: dict[str, Load], recent_tokens: int = 0):
        self.loads = loads
        self.recent_tokens = recent_tokens
        self._kept: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def kept(self, strategy) -> dict | None:
        """What the requests of `strategy` (a composite's: its children's too) keep across requests,
        apart per strategy, so that strategies compared on the same problems never read each
        other's; None when nothing crosses requests."""
        if not self.recent_tokens:
            return None
        return self._kept.setdefault(strategy, {})

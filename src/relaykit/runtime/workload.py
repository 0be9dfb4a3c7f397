"""What the requests of one scheduler share beyond their rows: each in-process model's measured
load, and a bounded cache of recent finished outputs per strategy (drafting across requests)."""

from __future__ import annotations

import weakref

from ..decoding.suffix import RecentOutputs
from .load import Load


class Workload:
    """`loads`: role -> `Load` of each in-process model; `recent_tokens`: the size of each
    strategy's cache of recent outputs (0: none, so no output crosses requests)."""

    def __init__(self, loads: dict[str, Load], recent_tokens: int = 0):
        self.loads = loads
        self.recent_tokens = recent_tokens
        self._recent: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def recent(self, strategy) -> RecentOutputs | None:
        """The recent outputs of `strategy`'s requests (a composite's: its children's), kept apart
        per strategy so that strategies compared on the same problems never see each other's."""
        if not self.recent_tokens:
            return None
        if strategy not in self._recent:
            self._recent[strategy] = RecentOutputs(self.recent_tokens)
        return self._recent[strategy]

"""One model writes everything: the baseline every method is measured against."""

from __future__ import annotations

from ..decoding.sequence import Sequence
from .base import Strategy, register


@register("single")
class Single(Strategy):
    """The large model alone (plain autoregressive decoding, batched)."""

    roles = ("large",)

    def run(self, sequences: list[Sequence]) -> None:
        role = self.roles[0]
        runner = self.runners[role]
        active = list(sequences)
        while active:
            tokens = self.sampler.sample(runner.next_logits(active)).tolist()
            for sequence, token in zip(active, tokens):
                sequence.append(token, role)
            active = [s for s in active if not self.finish_if_done(s)]


@register("large")
class LargeOnly(Single):
    """Alias of `single`: the large model alone."""


@register("small")
class SmallOnly(Single):
    """The small model alone."""

    roles = ("small",)

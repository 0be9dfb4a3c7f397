"""One model writes everything: the baseline every method is measured against."""

from __future__ import annotations

from ..runtime.asks import Generate
from ..vocabulary import LARGE, SMALL
from .base import Strategy, register


@register("single")
class Single(Strategy):
    """The large model alone (plain autoregressive decoding)."""

    roles: tuple[str, ...] = (LARGE,)

    @classmethod
    def needs_logits(cls, config) -> tuple[str, ...]:
        return ()

    def run(self, request):
        yield Generate(self.roles[0], request.sequence, request.remaining())


@register("large")
class LargeOnly(Single):
    """Alias of `single`: the large model alone."""


@register("small")
class SmallOnly(Single):
    """The small model alone."""

    roles: tuple[str, ...] = (SMALL,)

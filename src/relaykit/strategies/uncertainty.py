"""Token-level uncertainty routing (R2R-like, Fu et al. 2025, without a trained router): the
small model drives, and wherever its own margin p(top1) - p(top2) is below a threshold the
large model writes that token instead."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RelaykitError
from ..runtime.asks import Logits
from ..vocabulary import LARGE, SMALL, EventKind
from .base import Strategy, register


@dataclass
class UncertaintyConfig:
    margin_threshold: float = 0.5  # route a token to the large model below this small-model margin (ours)

    def __post_init__(self) -> None:
        if not 0 <= self.margin_threshold <= 1:
            raise RelaykitError(f"margin-threshold must be in [0, 1], got {self.margin_threshold}")


@register("uncertainty")
class Uncertainty(Strategy):
    roles = (LARGE, SMALL)
    Config = UncertaintyConfig

    @classmethod
    def needs_whole_distribution(cls, config) -> tuple[str, ...]:
        return (SMALL,)  # its confidence is the small model's top-2 probabilities; the large model writes

    def run(self, request):
        sequence, writer = request.sequence, "small"  # the small model drives
        while not sequence.finished:
            logits = (yield Logits(SMALL, sequence))[-1]
            top = logits.float().softmax(-1).topk(2).values
            unsure = float(top[0] - top[1]) < self.config.margin_threshold
            if unsure:
                logits = (yield Logits(LARGE, sequence))[-1]
            now = "large" if unsure else "small"
            if now != writer:
                request.event(EventKind.MARGIN, (writer, now))
                writer = now
            sequence.append(request.sample(logits), now)
            request.finish_if_done(sequence)

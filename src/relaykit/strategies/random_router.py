"""Random token routing: a control for RelayLLM and uncertainty routing. The small model drives
and each token goes to the large model with probability `large_share`, wherever it is; at the
share RelayLLM or `uncertainty` reach, it shows what choosing the tokens buys."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import RelaykitError
from ..runtime.asks import Logits
from ..vocabulary import LARGE, SMALL, EventKind
from .base import Strategy, register


@dataclass
class RandomRouterConfig:
    large_share: float = 0.05  # probability that a token is the large model's (ours; set it to the share compared)
    route_seed: int = 0  # with the prompt and the position, seeds each coin flip

    def __post_init__(self) -> None:
        if not 0 <= self.large_share <= 1:
            raise RelaykitError(f"large-share must be in [0, 1], got {self.large_share}")


@register("random-router")
class RandomRouter(Strategy):
    roles = (LARGE, SMALL)
    Config = RandomRouterConfig
    in_demo = False

    @classmethod
    def needs_whole_distribution(cls, config) -> tuple[str, ...]:
        return ()  # each model samples its own tokens

    def run(self, request):
        sequence, writer = request.sequence, "small"
        prompt = sequence.tokens[: sequence.prompt_length]
        while not sequence.finished:
            coin = random.Random(f"{self.config.route_seed}:{prompt}:{len(sequence)}").random()
            now = "large" if coin < self.config.large_share else "small"
            logits = (yield Logits(now, sequence))[-1]
            if now != writer:
                request.event(EventKind.RANDOM, (writer, now))
                writer = now
            sequence.append(request.sample(logits), now)
            request.finish_if_done(sequence)

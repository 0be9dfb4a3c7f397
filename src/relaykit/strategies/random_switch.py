"""Random segment switching: a control for RelayGen. The large model drives; at each sentence
start inside `<think>` the next sentence goes to the small model with probability
`small_share`, so about that share of the thinking sentences is the small model's, wherever
they are. Compared with RelayGen at the same share, it shows what choosing segments by cue buys."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..decoding.sequence import Sequence
from ..errors import RelaykitError
from ..text import Tail, ends_sentence
from ..vocabulary import LARGE, SMALL, EventKind
from .base import register
from .segments import Decision, SegmentConfig, SegmentRelay, Turn


@dataclass
class RandomSwitchConfig(SegmentConfig):
    # probability that a thinking sentence goes to the small model (ours; set it to RelayGen's share)
    small_share: float = 0.3
    switch_seed: int = 0  # with the prompt and the position, seeds each coin flip

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.small_share <= 1:
            raise RelaykitError(f"small-share must be in [0, 1], got {self.small_share}")


@register("random-switch")
class RandomSwitch(SegmentRelay):
    Config = RandomSwitchConfig

    def hand_off(self, sequence: Sequence, turn: Turn, tail: Tail, end: int) -> Decision | None:
        if not ends_sentence(tail.text, tail.new_from, tail.turn_from):
            return None
        if turn.writer == "small":
            return Decision(LARGE, EventKind.SENTENCE_END)
        if turn.thinking and self._coin(sequence, end) < self.config.small_share:
            return Decision(SMALL, EventKind.RANDOM)
        return None

    def _coin(self, sequence: Sequence, end: int) -> float:
        """The flip at a sentence end: seeded by the prompt and the position, so a problem gets
        the same flips in any batch and a draft asking twice gets the same answer."""
        prompt = sequence.tokens[: sequence.prompt_length]
        return random.Random(f"{self.config.switch_seed}:{prompt}:{end}").random()

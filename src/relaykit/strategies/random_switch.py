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
from .base import register
from .relaygen import Decision, SegmentRelay, Turn


@dataclass
class RandomSwitchConfig:
    small_share: float = 0.3  # probability that a thinking sentence goes to the small model (ours; set it to RelayGen's share)
    switch_seed: int = 0  # with the prompt, seeds each sequence's coin flips
    answer_handoff: bool = True  # the small model writes everything after </think>, as in RelayGen
    answer_reserve: int = 32  # tokens kept for the answer when the budget ends inside <think>
    speculative: int = 0  # K > 0: the large model's turns use speculative decoding, K drafts
    draft_confidence: float = 0.0  # stop drafting once every draft token is below this (HF assisted generation: 0.4)

    def __post_init__(self) -> None:
        if not 0 <= self.small_share <= 1:
            raise RelaykitError(f"small-share must be in [0, 1], got {self.small_share}")


@register("random-switch")
class RandomSwitch(SegmentRelay):
    Config = RandomSwitchConfig

    def run(self, sequences: list[Sequence]) -> None:
        # One coin per sequence, seeded by its prompt: a problem gets the same flips whatever its
        # batch, and problems run one at a time do not all get the first flips of one stream.
        self.coins = {
            id(s): random.Random(f"{self.config.switch_seed}:{s.tokens[: s.prompt_length]}") for s in sequences
        }
        super().run(sequences)

    def hand_off(self, sequence: Sequence, turn: Turn, tail: Tail, end: int) -> Decision | None:
        if not ends_sentence(tail.text, tail.new_from, tail.turn_from):
            return None
        if turn.writer == "small":
            return Decision("large", "sentence end")
        if turn.thinking and self.coins[id(sequence)].random() < self.config.small_share:
            return Decision("small", "random")
        return None

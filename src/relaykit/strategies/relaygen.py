"""RelayGen (Song, Kim and Kim 2026): the large model reasons; when its text ends with a
calibrated switch cue ("Therefore,", "Wait," ...) the small model writes until the sentence
ends, then the large model resumes. After `</think>` the small model writes the answer."""

from __future__ import annotations

from dataclasses import dataclass

from ..decoding.sequence import Sequence
from ..text import Tail, cue_pattern, ends_sentence, find_cue, load_cues
from .base import register
from .segments import Decision, SegmentConfig, SegmentRelay, Turn


@dataclass
class RelayGenConfig(SegmentConfig):
    # None: every candidate cue (uncalibrated); else a cues.json from `relaykit calibrate`, a file of
    # one cue per line, or "Wait,|Therefore,|So".
    cues: str | list[str] | None = None
    min_large_tokens: int = 5  # large-model tokens in a turn before a cue may fire (public RelayGen code)


@register("relaygen")
class RelayGen(SegmentRelay):
    """The large model drives; a selected cue hands the rest of the sentence to the small model."""

    Config = RelayGenConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cues = load_cues(self.config.cues)
        self.pattern = cue_pattern(self.cues)
        self.window = max(self.window, 2 * max((len(c) for c in self.cues), default=0) + 8)

    def hand_off(self, sequence: Sequence, turn: Turn, tail: Tail, end: int) -> Decision | None:
        if turn.writer == "large":
            cue = self._cue(turn, tail, end)
            return Decision("small", "cue", cue) if cue else None
        if ends_sentence(tail.text, tail.new_from, tail.turn_from):
            return Decision("large", "sentence end")
        return None

    def pauses(self, turn: Turn) -> tuple[str, ...]:
        return tuple(sorted(set(self.cues), key=len, reverse=True)) if turn.writer == "large" else super().pauses(turn)

    def _cue(self, turn: Turn, tail: Tail, end: int) -> str | None:
        """The cue that ends the large model's text at token `end - 1`, if one may fire there."""
        if turn.thinking and end - turn.start >= self.config.min_large_tokens:
            return find_cue(tail.text, self.pattern, tail.new_from, tail.turn_from)
        return None

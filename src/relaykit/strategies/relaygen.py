"""RelayGen (Song, Kim and Kim 2026): the large model reasons; when its text ends with a
calibrated switch cue ("Therefore,", "Wait," ...) the small model writes until the sentence
ends, then the large model resumes. After `</think>` the small model writes the answer. A
calibration file may also carry the threshold of the segment check (see `segments`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..decoding.sequence import Sequence
from ..text import Tail, cue_pattern, ends_sentence, find_cue, parse_cues
from ..vocabulary import LARGE, SMALL, EventKind
from .base import reads, register
from .segments import Decision, SegmentConfig, SegmentRelay, Turn


@dataclass
class RelayGenConfig(SegmentConfig):
    # None: the shipped pair's calibrated cues.json on the shipped toy pair, else every candidate cue
    # ("all"); or a cues.json from `relaykit calibrate`, a file of one cue per line, "Wait,|So", "none"
    cues: str | list[str] | None = reads("cues", None)
    # large-model tokens in a turn before a cue may fire: the public RelayGen code waits 5; with the
    # check, a cue may fire at once (same accuracy, faster on fresh toy seeds; benchmarks/RESULTS.md,
    # "RelayGen on unseen problems")
    min_large_tokens: int = 1
    # check (see SegmentConfig): None takes the threshold a cues.json was calibrated with (on the
    # shipped pair, the shipped one for any cues), if the large model is in-process; inf: none


@register("relaygen")
class RelayGen(SegmentRelay):
    """The large model drives; a selected cue hands the rest of the sentence to the small model."""

    Config = RelayGenConfig
    tunes = ("speculative", "draft_confidence")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cues = parse_cues(self.config.cues)
        self.pattern = cue_pattern(self.cues)
        self.longest = max((len(c) for c in self.cues), default=0)
        self.window = max(self.window, self.longest + 4)

    def hand_off(self, sequence: Sequence, turn: Turn, tail: Tail, end: int) -> Decision | None:
        if turn.writer == LARGE:
            cue = self._cue(turn, tail, end)
            return Decision(SMALL, EventKind.CUE, cue) if cue else None
        if ends_sentence(tail.text, tail.new_from, tail.turn_from):
            return Decision(LARGE, EventKind.SENTENCE_END)
        return None

    def pauses(self, turn: Turn) -> tuple[str, ...]:
        return tuple(sorted(set(self.cues), key=len, reverse=True)) if turn.writer == LARGE else super().pauses(turn)

    def _cue(self, turn: Turn, tail: Tail, end: int) -> str | None:
        """The cue that ends the large model's text at token `end - 1`, if one may fire there."""
        if turn.thinking and end - turn.start >= self.config.min_large_tokens:
            # a cue completing with the newest token starts at most its length before it
            earliest = max(tail.turn_from, tail.new_from - self.longest - 1)
            return find_cue(tail.text, self.pattern, tail.new_from, earliest)
        return None


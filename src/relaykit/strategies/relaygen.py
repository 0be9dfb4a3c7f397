"""RelayGen (Song, Kim and Kim 2026): the large model reasons; when its text ends with a
calibrated switch cue ("Therefore,", "Wait," ...) the small model writes until the sentence
ends, then the large model resumes. After `</think>` the small model writes the answer. A
calibration file may also carry the threshold of the segment check (see `segments`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..decoding.sequence import Sequence
from ..models.remote import RemoteModel
from ..text import Tail, cue_pattern, ends_sentence, find_cue, load_cues
from ..toyworld import SHIPPED_CUES, is_shipped_pair
from .base import register
from .segments import Decision, SegmentConfig, SegmentRelay, Turn


@dataclass
class RelayGenConfig(SegmentConfig):
    # None: the shipped pair's calibrated cues.json on the shipped toy pair, else every candidate cue
    # ("all"); or a cues.json from `relaykit calibrate`, a file of one cue per line, "Wait,|So", "none"
    cues: str | list[str] | None = None
    # large-model tokens in a turn before a cue may fire: the public RelayGen code waits 5; with the
    # check, a cue may fire at once (same accuracy, +0.13x on fresh toy seeds; issue 20)
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
        shipped = is_shipped_pair(self.models)
        cues, check = self.config.cues, self.config.check
        if cues is None and shipped:
            cues = str(SHIPPED_CUES)
        self.cues = load_cues(cues)
        if check is None and not isinstance(self.models["large"], RemoteModel):
            check = calibrated_check(cues)
            if check is None and shipped:
                check = calibrated_check(str(SHIPPED_CUES))
        self.config = dataclasses.replace(self.config, cues=cues, check=check)
        self.pattern = cue_pattern(self.cues)
        self.longest = max((len(c) for c in self.cues), default=0)
        self.window = max(self.window, self.longest + 4)

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
            # a cue completing with the newest token starts at most its length before it
            return find_cue(tail.text, self.pattern, tail.new_from, max(tail.turn_from, tail.new_from - self.longest - 1))
        return None


def calibrated_check(cues) -> float | None:
    """The check threshold a cues.json from `relaykit calibrate` carries, else None."""
    if isinstance(cues, str) and cues.endswith(".json") and Path(cues).is_file():
        return json.loads(Path(cues).read_text()).get("check")
    return None

"""Speculative Thinking (Yang et al. 2025): the small model reasons; at its start and after each
line or paragraph break it looks a few tokens ahead, and if that look-ahead holds a reflection word ("wait",
"alternatively", ...) it is discarded and the large model writes the reflective segment up to
the next sentence or line end. After `</think>` the small model answers."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..decoding.sequence import Sequence
from ..errors import RelaykitError
from ..text import Tail, ends_sentence
from ..vocabulary import LARGE, SMALL, EventKind
from .base import register
from .segments import Decision, SegmentConfig, SegmentRelay, Turn


@dataclass
class SpeculativeThinkingConfig(SegmentConfig):
    reflection_words: str = "wait|alternatively|hmm|check"  # "|"-separated, any case (reflection cues of the paper)
    peek_tokens: int = 5  # small-model tokens looked at after a break (ours: "the next few tokens")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.peek_tokens < 1:
            raise RelaykitError(f"peek-tokens must be >= 1, got {self.peek_tokens}")


@register("speculative-thinking")
class SpeculativeThinking(SegmentRelay):
    Config = SpeculativeThinkingConfig
    first_writer = "small"
    every_token = True  # look-aheads are counted in tokens

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        words = [re.escape(w.strip()) for w in self.config.reflection_words.split("|") if w.strip()]
        self.reflection = re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE) if words else None

    def holdback(self) -> int:
        return self.config.peek_tokens + self.config.speculative

    def pauses(self, turn: Turn) -> tuple[str, ...]:
        return ("\n", *super().pauses(turn))

    def hand_off(self, sequence: Sequence, turn: Turn, tail: Tail, end: int) -> Decision | None:
        if not turn.thinking:
            return None
        if turn.writer == "large":
            if "\n" in tail.text[tail.new_from :] or ends_sentence(tail.text, tail.new_from, tail.turn_from):
                return Decision(SMALL, EventKind.SEGMENT_END)
            return None
        peek_start = self._break_before(sequence, turn, end)
        if peek_start is None or self.reflection is None:
            return None
        found = self.reflection.search(self.decode(sequence.tokens[peek_start:end]))
        return Decision(LARGE, EventKind.REFLECTION, found.group(), cut=peek_start) if found else None

    def _break_before(self, sequence: Sequence, turn: Turn, end: int) -> int | None:
        """Where the look-ahead holding token `end - 1` began: the turn's start or just after a
        line break at most `peek_tokens` tokens back; None when the token is past every look-ahead."""
        for start in range(end - 1, max(turn.start, end - self.config.peek_tokens) - 1, -1):
            if start == turn.start or "\n" in self.decode(sequence.tokens[start - 1 : start]):
                return start
        return None

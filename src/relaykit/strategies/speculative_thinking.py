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
from .base import register
from .relaygen import Decision, SegmentRelay, Turn


@dataclass
class SpeculativeThinkingConfig:
    reflection_words: str = "wait|alternatively|hmm|check"  # "|"-separated, any case (reflection cues of the paper)
    peek_tokens: int = 5  # small-model tokens looked at after a break (ours: "the next few tokens")
    answer_handoff: bool = True  # after </think> the small model writes the rest, even inside a large segment
    answer_reserve: int = 32  # tokens kept for the answer when the budget ends inside <think>
    speculative: int = 0  # K > 0: the large model's segments use speculative decoding, K drafts
    draft_confidence: float = 0.0  # stop drafting once every draft token is below this (HF assisted generation: 0.4)

    def __post_init__(self) -> None:
        if self.peek_tokens < 1:
            raise RelaykitError(f"peek-tokens must be >= 1, got {self.peek_tokens}")


@register("speculative-thinking")
class SpeculativeThinking(SegmentRelay):
    Config = SpeculativeThinkingConfig
    every_token = True  # look-aheads are counted in tokens

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        words = [re.escape(w.strip()) for w in self.config.reflection_words.split("|") if w.strip()]
        self.reflection = re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE) if words else None

    def first_turn(self, sequence: Sequence) -> Turn:
        return Turn("small", "start", len(sequence), peek_start=len(sequence))  # the reasoning's start is a break too

    def hand_off(self, sequence: Sequence, turn: Turn, tail: Tail, end: int) -> Decision | None:
        if not turn.thinking:
            turn.peek_start = None
            return None
        new_text = tail.text[tail.new_from :]
        if turn.writer == "large":
            if "\n" in new_text or ends_sentence(tail.text, tail.new_from, tail.turn_from):
                turn.peek_start = end  # the small model's turn starts at a break: look ahead at once
                return Decision("small", "segment end")
            return None
        if turn.peek_start is not None:
            peeked = self.decode(sequence.tokens[turn.peek_start : end])
            found = self.reflection.search(peeked) if self.reflection else None
            if found:
                cut, turn.peek_start = turn.peek_start, None
                return Decision("large", "reflection", found.group(), cut=cut)
            if end - turn.peek_start >= self.config.peek_tokens:
                turn.peek_start = None
        if "\n" in new_text:
            turn.peek_start = end
        return None

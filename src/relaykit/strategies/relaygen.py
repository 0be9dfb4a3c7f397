"""RelayGen (Song, Kim and Kim 2026): the large model reasons; when its text ends with a
calibrated switch cue ("Therefore,", "Wait," ...) the small model writes until the sentence
ends, then the large model resumes. After `</think>` the small model writes the answer.

`SegmentRelay` is the loop shared with the segment-level baselines (random-switch,
speculative-thinking): rows of a batch may be in different turns; each runner is asked only
for its own rows, and a hand-off costs the other model just the catch-up on the new tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..decoding.sequence import PROMPT, Sequence
from ..errors import RelaykitError
from ..text import THINK_END, Tail, cue_pattern, decode_tail, decoder, ends_sentence, ends_thinking, find_cue, load_cues
from .base import Strategy, register
from .speculative import verify

NON_WORD = re.compile(r"\W")


@dataclass
class Turn:
    """Who writes a row now, why, and since which sequence index."""

    writer: str  # "large" or "small"
    reason: str  # why this writer has the pen: "start", "cue", "sentence end", "answer", ...
    start: int
    thinking: bool = True  # `</think>` not written yet
    peek_start: int | None = None  # speculative-thinking: where the small model's look-ahead began


@dataclass
class Decision:
    """Hand the row to `writer`; `cut`: truncate the sequence there first (default: keep all)."""

    writer: str
    reason: str
    cue: str | None = None
    cut: int | None = None


class SegmentRelay(Strategy):
    """Two models take turns on each row; subclasses decide when a turn ends (`hand_off`).

    The config must have `answer_handoff`, `answer_reserve`, `speculative` and `draft_confidence`
    (see RelayGenConfig).
    """

    roles = ("large", "small")
    every_token = False  # True: `hand_off` must see every token, not only those that may complete a match

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.config.speculative < 0 or self.config.answer_reserve < 0:
            raise RelaykitError(f"{self.name}: speculative and answer-reserve must be >= 0")
        self.close_ids = self.tokenizer(THINK_END, add_special_tokens=False)["input_ids"]
        self.window = 2 * len(THINK_END) + 8
        self.decode = decoder(self.tokenizer)
        self.completing: dict[int, bool] = {}

    def first_turn(self, sequence: Sequence) -> Turn:
        return Turn("large", "start", len(sequence))

    def hand_off(self, sequence: Sequence, turn: Turn, tail: Tail, end: int) -> Decision | None:
        """Whether the turn ends after token `end - 1`; `tail` is the decoded text up to there.
        Not asked once the small model writes the answer after `</think>`."""
        raise NotImplementedError

    def cue_ends_large_turn(self, turn: Turn, tail: Tail, end: int) -> bool:
        """Whether the large model's turn surely ends after token `end - 1` (no side effects: it is
        asked of drafts). A subclass whose `hand_off` is pure for the large model's turns says so."""
        return False

    def run(self, sequences: list[Sequence]) -> None:
        self.turns = {id(s): self.first_turn(s) for s in sequences}
        active = list(sequences)
        while active:
            for sequence in active:
                self._close_if_out_of_room(sequence)
            active = [s for s in active if not s.finished]
            large_rows = [s for s in active if self.turns[id(s)].writer == "large"]
            small_rows = [s for s in active if self.turns[id(s)].writer == "small"]
            if self.config.speculative and large_rows:
                self._speculative_round(large_rows, small_rows)
            else:
                for role, rows in (("large", large_rows), ("small", small_rows)):
                    if rows:
                        tokens = self.sampler.sample(self.runners[role].next_logits(rows)).tolist()
                        for sequence, token in zip(rows, tokens):
                            sequence.append(token, role)
                            self._advance(sequence, 1)
            active = [s for s in active if not s.finished]

    # turns

    def _room(self, sequence: Sequence) -> int:
        """Tokens a row may still write before the answer reserve (the whole budget once thinking ended)."""
        turn = self.turns[id(sequence)]
        reserve = self.config.answer_reserve + len(self.close_ids) + 1 if turn.thinking and self.config.answer_handoff else 0
        return self.stop.remaining(sequence) - reserve

    def _close_if_out_of_room(self, sequence: Sequence) -> None:
        """The budget is ending inside `<think>`: close the thinking and let the small model answer."""
        turn = self.turns[id(sequence)]
        if self._room(sequence) > 0 or not (turn.thinking and self.config.answer_handoff):
            return
        after_newline = self.decode(sequence.tokens[-1:]).endswith("\n")
        close = self.close_ids if after_newline else self.tokenizer("\n" + THINK_END, add_special_tokens=False)["input_ids"]
        event = {"position": len(sequence.generated), "direction": None, "reason": "budget", "cue": THINK_END}
        self.events[id(sequence)].append(event)
        sequence.extend(close, PROMPT)  # inserted text, written by neither model
        turn.thinking = False
        if not self.finish_if_done(sequence, len(close)):
            self._switch(sequence, turn, Decision("small", "answer", THINK_END))

    def _advance(self, sequence: Sequence, count: int) -> None:
        """Apply the stop conditions and the hand-off rules to the newest `count` tokens, in order;
        the first hand-off cuts the sequence after its token (later tokens are dropped)."""
        turn = self.turns[id(sequence)]
        first = len(sequence) - count
        decision = None
        for end in range(first + 1, len(sequence) + 1):
            if not (self.every_token or self._may_complete(sequence.tokens[end - 1])):
                continue
            decision = self._decide(sequence, turn, end)
            if decision:
                sequence.truncate(end if decision.cut is None else decision.cut)
                break
        if not self.finish_if_done(sequence, max(len(sequence) - first, 0)) and decision:
            self._switch(sequence, turn, decision)

    def _may_complete(self, token: int) -> bool:
        """Whether a token's text may hold a non-word character: every cue, sentence end and
        `</think>` completes on one, so other tokens need no decoding. Cached per token id."""
        flag = self.completing.get(token)
        if flag is None:
            text = self.decode([token])
            raw = self.tokenizer.convert_ids_to_tokens(token) or ""  # "▁Now": a space decoding drops
            flag = self.completing[token] = bool(NON_WORD.search(text) or NON_WORD.search(raw))
        return flag

    def _tail(self, sequence: Sequence, turn: Turn, end: int) -> Tail:
        """The decoded text up to token `end - 1`, enough of it for cues, sentence ends and `</think>`."""
        return decode_tail(self.decode, sequence.tokens, end, turn.start, sequence.prompt_length - 1, self.window)

    def _decide(self, sequence: Sequence, turn: Turn, end: int) -> Decision | None:
        tail = self._tail(sequence, turn, end)
        if turn.thinking and ends_thinking(tail.text, tail.new_from):
            turn.thinking = False
            if self.config.answer_handoff:
                if turn.writer == "large":
                    return Decision("small", "answer", THINK_END)
                turn.reason = "answer"  # the small model goes on with the answer
        if turn.reason == "answer":
            return None
        return self.hand_off(sequence, turn, tail, end)

    def _draft_ends_turn(self, sequence: Sequence) -> bool:
        """Whether the newest draft token, once verified, ends the large model's turn (`</think>`
        with the answer hand-off, or a cue), so that drafting on is wasted."""
        turn, end = self.turns[id(sequence)], len(sequence)
        if not (turn.thinking and self._may_complete(sequence.tokens[end - 1])):
            return False
        tail = self._tail(sequence, turn, end)
        if ends_thinking(tail.text, tail.new_from):
            return self.config.answer_handoff
        return self.cue_ends_large_turn(turn, tail, end)

    def _switch(self, sequence: Sequence, turn: Turn, decision: Decision) -> None:
        """Give the row to `decision.writer`; a change of writer is recorded as an event."""
        if decision.writer != turn.writer:
            self.events[id(sequence)].append(
                {
                    "position": len(sequence.generated),
                    "direction": f"{turn.writer}->{decision.writer}",
                    "reason": decision.reason,
                    "cue": decision.cue,
                }
            )
        turn.writer, turn.reason, turn.start = decision.writer, decision.reason, len(sequence)

    # speculative large turns

    def _speculative_round(self, large_rows: list[Sequence], small_rows: list[Sequence]) -> None:
        """The small model drafts for the large model's rows (and writes its own rows' segments in
        the same forwards); the large model verifies with `speculative.verify`, as in Speculative."""
        large, small = self.runners["large"], self.runners["small"]
        draft_length = max(0, min(self.config.speculative, min(self._room(s) for s in large_rows) - 1))
        starts = [len(s) for s in large_rows]
        writing = list(small_rows)
        draft_probs, drafted, drafting = [], 0, large_rows if draft_length else []
        for _ in range(max(draft_length, 1)):
            rows = drafting + writing
            if not rows:
                break
            logits = small.next_logits(rows)
            if self.sampler.greedy:
                tokens = logits.argmax(-1)
            else:
                probs = self.sampler.probs(logits)
                if drafting:
                    draft_probs.append(probs[: len(drafting)])
                tokens = self.sampler.draw(probs)
            for sequence, token in zip(rows, tokens.tolist()):
                sequence.append(token, "small")
            for sequence in writing:
                self._advance(sequence, 1)
            writing = [s for s in writing if not s.finished and self.turns[id(s)].writer == "small" and self._room(s) > 0]
            if drafting:
                drafted += 1
                unsure = self.config.draft_confidence and bool(
                    (logits[: len(drafting)].softmax(-1).amax(-1) < self.config.draft_confidence).all()
                )
                ended = all(self._draft_ends_turn(s) for s in drafting)  # drafts past a hand-off are cut anyway
                drafting = [] if unsure or ended or drafted == draft_length else drafting
        draft_length = drafted
        target_logits = large.score(large_rows, draft_length + 1)
        targets = target_logits.argmax(-1).tolist() if self.sampler.greedy else self.sampler.probs(target_logits)
        stacked = torch.stack(draft_probs, 1) if draft_length and draft_probs else None
        for b, (sequence, start) in enumerate(zip(large_rows, starts)):
            drafts = sequence.tokens[start:]
            accepted, token = verify(self.sampler, drafts, stacked[b] if stacked is not None else None, targets[b])
            sequence.truncate(start + accepted)
            sequence.append(token, "large")
            self._advance(sequence, accepted + 1)


@dataclass
class RelayGenConfig:
    # None: every candidate cue (uncalibrated); else a cues.json from `relaykit calibrate`, a file of
    # one cue per line, or "Wait,|Therefore,|So".
    cues: str | list[str] | None = None
    min_large_tokens: int = 5  # large-model tokens in a turn before a cue may fire (public RelayGen code)
    answer_handoff: bool = True  # the small model writes everything after </think> (RelayGen paper)
    answer_reserve: int = 32  # tokens kept for the answer when the budget ends inside <think> (ours)
    speculative: int = 0  # K > 0: the large model's turns use speculative decoding, K drafts (ours)
    draft_confidence: float = 0.0  # stop drafting once every draft token is below this (HF assisted generation: 0.4)


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

    def cue_ends_large_turn(self, turn: Turn, tail: Tail, end: int) -> bool:
        return self._cue(turn, tail, end) is not None

    def _cue(self, turn: Turn, tail: Tail, end: int) -> str | None:
        """The cue that ends the large model's text at token `end - 1`, if one may fire there."""
        if turn.thinking and end - turn.start >= self.config.min_large_tokens:
            return find_cue(tail.text, self.pattern, tail.new_from, tail.turn_from)
        return None

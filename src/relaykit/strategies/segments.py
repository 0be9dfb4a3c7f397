"""The segment relay: two models take turns on one sequence, a turn ending where a method's rule
says (a cue, a sentence end, a reflection word). Shared by RelayGen and its baselines
(random-switch, speculative-thinking). After `</think>` the small model writes the answer.

A turn is one `Generate` ask whose `ends_turn` is the method's rule, so a turn runs token by
token in-process and in one request per pause over an endpoint; with `speculative=K` the large
model's turns are speculative rounds instead (in-process only).

With `check=T` (ours; benchmarks/RESULTS.md, "RelayGen on unseen problems"), the large model's
catch-up forward over a segment the small model wrote also checks it: at the first token the large
model ranks below its own top one by at least T logits, the segment is cut and the large model
writes on. The answer after `</think>`, which no large turn follows, is checked by one forward
once written (the small model writes on after a cut). T = 0 keeps exactly the large model's greedy
text; no check keeps the paper's plain hand-off.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from typing import NamedTuple

from ..decoding.sequence import PROMPT, Sequence
from ..errors import RelaykitError
from ..runtime.asks import Generate, Logits
from ..text import THINK_END, Tail, decode_tail, decoder, ends_thinking
from ..vocabulary import LARGE, SMALL, EventKind
from .base import Strategy
from .drafting import SuffixConfig, SuffixDrafter, remember
from .paying import Rounds, Skips
from .speculative import Cut, check_drafts, draft, lenient_cut

NON_WORD = re.compile(r"\W")
# Where an endpoint pauses so that a sentence end can be checked ("3.5" does not end one).
SENTENCE_PAUSES = (". ", ".\n", "! ", "!\n", "? ", "?\n", "\n\n")


@dataclass
class SegmentConfig:
    """Options every segment relay has (each method's config extends it)."""

    answer_handoff: bool = True  # the small model writes everything after </think> (RelayGen paper)
    answer_reserve: int = 32  # tokens kept for the answer when the budget ends inside <think> (ours)
    speculative: int = 0  # K > 0: the large model's turns use speculative decoding, K drafts (ours)
    draft_confidence: float = 0.0  # stop drafting once a draft token is below this (HF assisted generation: 0.4)
    # the large model cuts a small segment where it disagrees by >= this many logits (ours; None: none,
    # or for RelayGen the threshold its cues.json was calibrated with; inf: none)
    check: float | None = None
    # greedy, with the check: drafts that end a large turn (at a cue) wait for the next check while
    # fewer than this many tokens wait unchecked before them (ours; a wrong early token wastes what
    # follows it; 256 took 13% fewer large forwards than 64 on toy:test, as many small ones)
    max_unchecked: int = 256
    suffix: bool = False  # also draft from the suffix index (the sequence, its siblings or beams) where it pays

    def __post_init__(self) -> None:
        if min(self.speculative, self.answer_reserve, self.max_unchecked) < 0:
            raise RelaykitError("speculative, answer-reserve and max-unchecked must be >= 0")
        if self.check is not None and not self.check >= 0:
            raise RelaykitError(f"check must be a margin in logits >= 0 (inf: no check), got {self.check}")


@dataclass
class Turn:
    """Who writes the sequence now, why, and since which index."""

    writer: str  # the role writing: large or small
    reason: EventKind | None  # why this writer has the pen (None: it started)
    start: int
    thinking: bool = True  # `</think>` not written yet


class Deferred(NamedTuple):
    """Drafts [start, end) that ended a large `turn` (as it was when they were drafted) and wait
    for the next check."""

    turn: Turn
    start: int
    end: int


@dataclass
class Decision:
    """End the turn after the deciding token and give the pen to `writer`; `cut`: truncate the
    sequence there instead; `thinking_ended`: the deciding text closed the thinking."""

    writer: str
    reason: EventKind | None
    cue: str | None = None
    cut: int | None = None
    thinking_ended: bool = False


class SegmentRelay(Strategy):
    """Subclasses decide when a turn ends (`hand_off`) and where an endpoint should pause."""

    roles = (LARGE, SMALL)
    Config = SegmentConfig
    first_writer = LARGE
    every_token = False  # True: `hand_off` must see every token, not only those that may complete a match

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.close_ids = self.tokenizer(THINK_END, add_special_tokens=False)["input_ids"]
        self.window = len(THINK_END) + 4  # tokens decoded for a rule: every token has a character at least
        self.decode = decoder(self.tokenizer)
        self.completing: dict[int, bool] = {}

    @classmethod
    def needs_logits(cls, config) -> tuple[str, ...]:
        if config.speculative:
            return cls.roles
        return (LARGE,) if checking(config.check) or config.suffix else ()

    @classmethod
    def needs_whole_distribution(cls, config) -> tuple[str, ...]:
        # drafts (speculative turns) come from the small model's whole distribution; the large model's
        # verification and check read its top token and the token that follows
        return (SMALL,) if config.speculative else ()

    @property
    def check(self) -> float | None:
        """The check's threshold, None when segments are not checked."""
        return self.config.check if checking(self.config.check) else None

    def holdback(self) -> int:
        return max(self.config.speculative, SuffixConfig.k if self.config.suffix else 0)

    def hand_off(self, sequence: Sequence, turn: Turn, tail: Tail, end: int) -> Decision | None:
        """Whether the turn ends after token `end - 1`; `tail` is the decoded text up to there.
        Must depend only on the tokens up to `end` and the turn. Not asked once the small model
        writes the answer after `</think>`."""
        raise NotImplementedError

    def pauses(self, turn: Turn) -> tuple[str, ...]:
        """Strings after which an endpoint returns, so that `hand_off` can be checked there."""
        return SENTENCE_PAUSES

    def run(self, request):
        sequence = request.sequence
        turn = Turn(self.first_writer, None, len(sequence))
        rule = functools.partial(self._ends_turn, turn)  # the turn changes in place
        if self.check is not None and turn.writer == SMALL:
            request.open_from = turn.start
        deferred: list[Deferred] = []  # drafts that ended a large turn, checked strictly with what follows them
        suffix = SuffixDrafter(request, SuffixConfig()) if self.config.suffix else None
        skips = Skips() if suffix is not None else None
        small = Rounds(self.config.speculative)  # the small model's rounds in speculative turns
        while True:
            while not sequence.finished:
                room = self._room(request, turn)
                if room <= 0 and turn.thinking and self.config.answer_handoff:
                    self._close_thinking(request, turn)
                    continue
                ends_turn = None if turn.reason == EventKind.ANSWER else rule
                drafts = None if turn.writer != LARGE else self._large_drafts(request, sequence, room, suffix,
                                                                              small.kept)
                if drafts is not None:
                    # drafts past the end of the turn would be cut whatever the large model says
                    start = len(sequence)
                    if skips is not None:
                        skips.after(1)
                    if drafts and suffix is not None:
                        draft_probs, ended = [], suffix.append(sequence, drafts, ends_turn)
                    else:
                        k = max(0, min(self.config.speculative, room - 1))
                        draft_probs, ended = yield from draft(request, sequence, k, self.config.draft_confidence,
                                                              ends_turn)
                    if ended and not drafts and self._defers(request, start):
                        # the small model's drafts end the turn (a cue): the next check reads them with the
                        # segment that follows (the suffix drafter's are checked now: its cues are often wrong)
                        deferred.append(Deferred(dataclasses.replace(turn), start, len(sequence)))
                        if request.open_from is None:
                            request.open_from = start
                        decision = request.settle(sequence, start, ends_turn, asked=len(sequence) - 1)
                    else:
                        checked = request.open_from
                        threshold = self._thresholds(sequence, checked, start, deferred) if checked is not None else 0.0
                        first, accepted, drafted, cut = yield from check_drafts(
                            request, sequence, start, draft_probs, checked, threshold)
                        if drafts and suffix is not None and cut is None:
                            suffix.checked(drafted, accepted)
                        elif cut is None and self.config.speculative:
                            small.add(accepted, drafted)
                        request.open_from = None
                        if cut is not None:
                            self._after_cut(request, turn, first, cut, deferred)
                        deferred = []
                        # the turn's rule passed every draft but one that ended the drafting
                        asked = first if cut is not None else start + min(accepted, drafted - ended)
                        decision = request.settle(sequence, first, ends_turn, asked)
                else:
                    pauses = () if ends_turn is None else (*self.pauses(turn), THINK_END)
                    most = room if skips is None or turn.writer != LARGE else min(room, skips.after(0))
                    decision = (yield Generate(turn.writer, sequence, most, ends_turn, pauses)).ended_by
                if decision is not None and not sequence.finished:
                    self._switch(request, turn, decision)
            if request.open_from is None or request.open_from >= len(sequence):
                if suffix is not None:
                    remember(request, sequence, suffix.config)
                return
            first = yield from self._check_tail(request, turn, deferred)
            deferred = []
            if first is not None:
                decision = request.settle(sequence, first, None if turn.reason == EventKind.ANSWER else rule)
                if decision is not None and not sequence.finished:
                    self._switch(request, turn, decision)

    def _large_drafts(self, request, sequence: Sequence, room: int, suffix: SuffixDrafter | None,
                      small_kept: float) -> int | None:
        """How a large turn goes on: None: the large model writes on its own (no drafts pay, no
        segment waits for a check); 0: the small model drafts (speculative turns) or none does but a
        segment waits for the check; k > 0: k of the suffix drafter's proposal, expected to keep
        more than the small model's rounds do (`small_kept`)."""
        if suffix is not None:
            chances = suffix.propose(sequence, room - 1)
            k = suffix.paying(chances)
            if k and sum(chances[:k]) > (small_kept if self.config.speculative else 0.0):
                return k
        if self.config.speculative or request.open_from is not None:
            return 0
        return None

    def _defers(self, request, start: int) -> bool:
        """Whether drafts from `start` that end a large turn may wait for the next check (greedy
        only: deferred drafts are checked as greedy speculative decoding checks them), so long as
        fewer than `max_unchecked` tokens then wait."""
        waiting = 0 if request.open_from is None else start - request.open_from
        return self.check is not None and request.sampler.greedy and waiting < self.config.max_unchecked

    def _thresholds(self, sequence: Sequence, start: int, end: int, deferred: list[Deferred]) -> list[float]:
        """The check's threshold for each token of [start, end): 0 for deferred drafts (the small
        model's or the suffix drafter's), none for the large model's own tokens and for text neither
        model wrote (a `</think>` the budget inserted)."""
        strict = set().union(*(range(d.start, d.end) for d in deferred))
        check = self.check if self.check is not None else float("inf")
        return [0.0 if i in strict else float("inf") if sequence.writers[i] != SMALL else check
                for i in range(start, end)]

    def _check_tail(self, request, turn: Turn, deferred: list[Deferred]):
        """The sequence finished with unchecked small-model tokens (the answer, or a segment the
        budget ended): the large model reads them in one forward. After a cut the sequence reopens
        with the large model's token; returns its index (None: no cut)."""
        sequence, start = request.sequence, request.open_from
        logits = (yield Logits(LARGE, sequence, len(sequence) - start + 1))[:-1]
        thresholds = self._thresholds(sequence, start, len(sequence), deferred)
        cut = lenient_cut(request, logits, sequence.tokens[start:], thresholds)
        request.open_from = None
        if cut is None:
            return None
        sequence.truncate(start + cut.index)
        sequence.reopen()
        sequence.append(cut.token, LARGE)
        self._after_cut(request, turn, start + cut.index, cut, deferred)
        return start + cut.index

    def _after_cut(self, request, turn: Turn, index: int, cut: Cut, deferred: list[Deferred]) -> None:
        """The check cut the sequence at `index` and the large model wrote its token there; events
        after the cut never happened. A rejected deferred draft resumes its large turn (as if checked
        at once); a cut in the answer leaves the small model writing it; one in the thinking starts
        a large turn."""
        sequence = request.sequence
        position = index - sequence.prompt_length
        request.forget_events_after(position)
        rejected = [d for d in deferred if d.start <= index < d.end]
        if rejected:  # a rejected draft, not a cut segment
            vars(turn).update(vars(rejected[0].turn))
            return
        detail = {"margin": round(cut.margin, 3), "small": self.decode([cut.rejected]),
                  "large": self.decode([cut.token])}
        request.event(EventKind.CHECK, (SMALL, LARGE), detail=detail, position=position)
        thinking = THINK_END not in self.decode(sequence.generated[:position])
        if not thinking and turn.reason == EventKind.ANSWER:
            turn.writer, turn.start, turn.thinking = SMALL, index + 1, False
            request.open_from = index + 1
        else:
            turn.writer, turn.reason, turn.start, turn.thinking = LARGE, EventKind.CHECK, index, thinking

    # turns

    def _room(self, request, turn: Turn) -> int:
        """Tokens the sequence may still get before the answer reserve (the whole budget once thinking ended)."""
        answering = turn.thinking and self.config.answer_handoff
        reserve = self.config.answer_reserve + len(self.close_ids) + 1 if answering else 0
        return request.remaining() - reserve

    def _close_thinking(self, request, turn: Turn) -> None:
        """The budget is ending inside `<think>`: close the thinking and let the small model answer."""
        sequence = request.sequence
        after_newline = self.decode(sequence.tokens[-1:]).endswith("\n")
        close = (self.close_ids if after_newline
                 else self.tokenizer("\n" + THINK_END, add_special_tokens=False)["input_ids"])
        request.event(EventKind.BUDGET, cue=THINK_END)
        sequence.extend(close, PROMPT)  # inserted text, written by neither model
        turn.thinking = False
        if not request.finish_if_done(sequence, len(close)):
            self._switch(request, turn, Decision(SMALL, EventKind.ANSWER, THINK_END))

    def _ends_turn(self, turn: Turn, sequence: Sequence, end: int) -> Decision | None:
        """The turn's rule for token `end - 1`: `</think>` (the answer goes to the small model),
        else the method's `hand_off`."""
        if not (self.every_token or self._may_complete(sequence.tokens[end - 1])):
            return None
        tail = self._tail(sequence, turn, end)
        if turn.thinking and ends_thinking(tail.text, tail.new_from):
            if self.config.answer_handoff:
                return Decision(SMALL, EventKind.ANSWER, THINK_END, thinking_ended=True)
            return Decision(turn.writer, turn.reason, THINK_END, thinking_ended=True)
        return self.hand_off(sequence, turn, tail, end)

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

    def _switch(self, request, turn: Turn, decision: Decision) -> None:
        """Apply a decision; a change of writer starts a new turn and is recorded as an event."""
        turn.thinking &= not decision.thinking_ended
        if decision.writer == turn.writer:
            turn.reason = decision.reason
            return
        request.event(decision.reason, (turn.writer, decision.writer), decision.cue)
        turn.writer, turn.reason, turn.start = decision.writer, decision.reason, len(request.sequence)
        if turn.writer == SMALL and self.check is not None and request.open_from is None:
            request.open_from = turn.start


def checking(threshold: float | None) -> bool:
    """Whether a check threshold checks anything (None and inf do not)."""
    return threshold is not None and threshold != float("inf")

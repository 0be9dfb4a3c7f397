"""What a strategy's loop for one sequence asks of the runtime (`yield ask`, then the answer).

The scheduler gathers every request's asks per model and answers an in-process model's with one
batched forward per model and step; an endpoint answers `Generate` with completions and `Logits`
with one scoring request each (only where its API gives log-probabilities; `Draft` needs an
in-process model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..decoding.sequence import Sequence


@dataclass
class Logits:
    """Token-level: logits [k, V] predicting the token after each of the last k visible positions
    of `sequence` (k = 1: the next token). An endpoint's are exact for its top tokens and the
    tokens that follow, -inf elsewhere (`RemoteRunner.logits`)."""

    model: str
    sequence: Sequence
    k: int = 1


@dataclass
class Generate:
    """Text-level: `model` writes on `sequence` with the request's sampling until the request's
    stop conditions end it, `max_tokens` are written, or `ends_turn(sequence, end)` returns a value
    for the token at `end - 1` (then the sequence is cut after that token, or at the value's `cut`
    when it has one). `ends_turn` must depend only on `sequence.tokens[:end]` (it is also asked of
    text an endpoint wrote in one piece). `pause_at`: strings after which an endpoint should
    return, so that `ends_turn` can be checked without writing far past the end of the turn.
    Answered with `Generated`."""

    model: str
    sequence: Sequence
    max_tokens: int
    ends_turn: Callable[[Sequence, int], Any] | None = None
    pause_at: tuple[str, ...] = ()
    start: int = field(init=False)

    def __post_init__(self) -> None:
        self.start = len(self.sequence)


@dataclass
class Draft(Generate):
    """Greedy drafting on an in-process model: a `Generate` whose tokens await another model's
    check, so no stop condition applies to them, and which also ends after a token whose
    probability is below `min_confidence` (then `ended_by` is `LOW_CONFIDENCE`). `ends_turn` only
    ends the drafting (it cuts nothing)."""

    min_confidence: float = 0.0


LOW_CONFIDENCE = "low confidence"


@dataclass
class Generated:
    """The answer to `Generate`: tokens the turn added, and what `ends_turn` returned (None when
    the turn ran out of tokens or the request's stop conditions finished the sequence)."""

    tokens: int
    ended_by: Any = None


@dataclass
class Fork:
    """`n` copies of `sequence` (new uids) that share what `models` have read of it: the prompt
    is read once, then each copy grows on its own. Answered with the list of copies."""

    sequence: Sequence
    n: int
    models: tuple[str, ...] = ()


@dataclass
class Drop:
    """The strategy is done with `sequence` (a copy from `Fork`): its KV rows are freed now and
    what the models spent on it stays in the request's usage. Answered with None."""

    sequence: Sequence


@dataclass
class Run:
    """Composition: run each (strategy, sequence) pair as a child request over the same runners;
    answered with their `GenerationResult`s (in order) once all have finished. A child's usage
    rolls up into its parent's result. `keep`: the children write on sequences the parent goes on
    with (a search's beams): their rows stay and their usage is counted once, with the parent's.
    `sampling`: the children sample with it instead of the parent's sampling (a SamplingConfig;
    either way a seeded one gives each child a seed of its own)."""

    children: list[tuple[Any, Sequence]]
    keep: bool = False
    sampling: Any = None


Ask = Logits | Generate | Fork | Drop | Run  # what a strategy's loop may yield

"""A request: one strategy's loop for one sequence, with its own sampling and stop settings."""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

import torch

from ..decoding.result import Event, GenerationResult, Handoff
from ..decoding.sampler import Sampler, SamplingConfig
from ..decoding.sequence import Sequence
from ..decoding.stopping import StopChecker, StopConfig
from ..decoding.usage import Usage
from ..vocabulary import EventKind
from .load import Load
from .workload import Workload


class Context(Protocol):
    """What a strategy's `run` may read and do of its request: the sequence it extends, its
    sampling, its stop conditions and its events."""

    sequence: Sequence
    sampling: SamplingConfig
    sampler: Sampler
    open_from: int | None
    family: dict

    def across_requests(self) -> tuple[dict, int] | None: ...

    def load(self, model: str) -> Load | None: ...

    def peers(self, model: str) -> int: ...

    def count_check(self, model: str, drafted: int, accepted: int) -> None: ...

    def sample(self, logits: torch.Tensor) -> int: ...

    def remaining(self, sequence: Sequence | None = None) -> int: ...

    def finish_if_done(self, sequence: Sequence, appended: int = 1) -> bool: ...

    def event(self, reason: EventKind, handoff: tuple[str, str] | None = None, cue: str | None = None,
              sequence: Sequence | None = None, detail: dict | None = None, position: int | None = None) -> Event: ...

    def forget_events_after(self, position: int) -> None: ...

    def settle(self, sequence: Sequence, first: int, ends_turn: Callable[[Sequence, int], Any] | None = None,
               asked: int = 0) -> Any: ...


class Request:
    """What the scheduler keeps for one submitted generation (or a child of one).

    A strategy's `run(request)` reads `sequence`, samples with `sample` / `sampler`, applies the
    stop conditions with `finish_if_done`, records `event`s and sets `open_from` while tokens it
    may still cut are waiting for a check; everything else is the scheduler's business.
    """

    def __init__(self, strategy, sequence: Sequence, sampling: SamplingConfig, stop: StopConfig,
                 parent: "Request | None" = None, workload: Workload | None = None, family: dict | None = None,
                 shared_prompt: Sequence | None = None):
        self.uid = sequence.uid
        self.strategy = strategy
        self.sequence = sequence
        self.sampling = sampling
        self.sampler = Sampler(sampling)
        self.stop_config = stop
        self.stop = StopChecker(stop, strategy.tokenizer, strategy.eos_token_ids)
        self.parent = parent
        self.root: Request = parent.root if parent is not None else self  # the submitted request of its tree
        self.workload: Workload = parent.workload if parent is not None else workload or Workload({})
        # what the requests of one family (a request and its children; the choices of one prompt) share:
        # a drafter's index of their tokens
        self.family: dict = parent.family if parent is not None else family if family is not None else {}
        self.index = 0  # its place among its parent's children
        self.shared_prompt = shared_prompt  # see Scheduler.submit_n
        self.inherited: dict = {}  # model usage beyond its rows: the shared prompt's prefill, drafts checked
        self.events: list[Event] = []
        self.open_from: int | None = None  # the strategy may still cut the sequence back to here (a check to come)
        self.sequences = [sequence]  # every sequence whose model usage this request owns
        self.ask: Any = None
        self.children: list["Request"] = []
        self.children_started = 0  # over every `Run` of this request: seeds child samplings
        self.child_results: list[GenerationResult | None] = []  # of the current `Run`
        self.earlier_results: list[GenerationResult] = []  # of the request's earlier `Run`s
        self.result: GenerationResult | None = None
        self.error: BaseException | None = None
        self.in_flight = False  # an endpoint is answering its ask
        self.cancelled = False
        self.submitted = time.perf_counter()
        self.generator = strategy.run(self)

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def sample(self, logits: torch.Tensor) -> int:
        """One token from next-token logits [V] with this request's sampling."""
        return int(self.sampler.sample(logits))

    def across_requests(self) -> tuple[dict, int] | None:
        """A dict that the requests of this request's top strategy share across requests, and how
        many tokens of their outputs it may hold; None when the session keeps nothing across
        requests."""
        kept = self.workload.kept(self.root.strategy)
        return None if kept is None else (kept, self.workload.recent_tokens)

    def load(self, model: str) -> Load | None:
        """What a forward of `model` costs now; None for an endpoint, before a forward, and for a
        sampling with a seed (its draws must not depend on timings)."""
        load = self.workload.loads.get(model)
        seeded = self.sampling.seed is not None and not self.sampler.greedy
        return load if load is not None and load.measured and not seeded else None

    def peers(self, model: str) -> int:
        """The rows of this request's top strategy at `model`'s latest step (at least 1)."""
        load = self.workload.loads.get(model)
        return max(1, load.peers.get(self.root.strategy, 0)) if load is not None else 1

    def count_check(self, model: str, drafted: int, accepted: int) -> None:
        """`model` checked `drafted` drafts and kept `accepted` (the request's acceptance metrics)."""
        self.inherited.setdefault(model, Usage()).count_check(drafted, accepted)

    def remaining(self, sequence: Sequence | None = None) -> int:
        """Tokens the sequence may still generate under the budget."""
        return self.stop.remaining(sequence or self.sequence)

    def finish_if_done(self, sequence: Sequence, appended: int = 1) -> bool:
        """Apply the stop conditions to the newest `appended` tokens (see `StopChecker.check`)."""
        return self.stop.check(sequence, appended)

    def event(self, reason: EventKind, handoff: tuple[str, str] | None = None, cue: str | None = None,
              sequence: Sequence | None = None, detail: dict | None = None, position: int | None = None) -> Event:
        """Record an event after `position` generated tokens (default: the end of `sequence`, or of
        the request's)."""
        if position is None:
            position = len((sequence or self.sequence).generated)
        event = Event(position, reason, Handoff(*handoff) if handoff else None, cue, detail)
        self.events.append(event)
        return event

    def forget_events_after(self, position: int) -> None:
        """Drop the events recorded after `position` generated tokens (the strategy cut them back)."""
        self.events = [e for e in self.events if e.position <= position]

    def settle(self, sequence: Sequence, first: int, ends_turn: Callable[[Sequence, int], Any] | None = None,
               asked: int = 0) -> Any:
        """After tokens were appended from index `first` on: ask `ends_turn` of each, in order (but
        of those before `asked`, which the caller knows do not end the turn); the first that ends
        the turn cuts the sequence after it (or at the answer's `cut`). Then apply the stop
        conditions to the new tokens that remain. Returns what ends the turn, or None."""
        ended = None
        if ends_turn is not None:
            for end in range(max(first, asked) + 1, len(sequence) + 1):
                ended = ends_turn(sequence, end)
                if ended is not None:
                    cut = getattr(ended, "cut", None)
                    sequence.truncate(end if cut is None else cut)
                    break
        self.stop.check(sequence, max(len(sequence) - first, 0))
        return ended

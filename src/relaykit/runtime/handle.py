"""A submitted request as its submitter sees it: stream, wait for, or cancel it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol

from ..decoding.result import GenerationResult
from .request import Request


class Stepper(Protocol):
    """What a handle needs of the scheduler that runs its request."""

    lock: threading.RLock

    def cancel(self, handle: "Handle") -> None: ...

    def wait_for_progress(self) -> None: ...


class Handle:
    """A submitted request: stream its final tokens, wait for its result, or cancel it."""

    def __init__(self, scheduler: Stepper, request: Request):
        self.scheduler = scheduler
        self.request = request
        self.uid = request.uid
        self._sent = 0

    @property
    def done(self) -> bool:
        return self.request.done

    def cancel(self) -> None:
        """Stop the request at the next step; its rows are freed, its result says "cancelled"."""
        self.scheduler.cancel(self)

    def result(self) -> GenerationResult:
        while not self.done:
            self.scheduler.wait_for_progress()
        if self.request.error is not None:
            raise self.request.error
        assert self.request.result is not None
        return self.request.result

    def stream(self) -> Iterator[list[tuple[int, str]]]:
        """Lists of (token id, writer) as they become final, then the rest at the end."""
        while True:
            done, new = self.take()
            if new:
                yield new
            if done:
                if self.request.error is not None:
                    raise self.request.error
                return
            self.scheduler.wait_for_progress()

    def take(self) -> tuple[bool, list[tuple[int, str]]]:
        """(whether the request is done, the (token id, writer) pairs that became final since the
        last take). A strategy may still cut its last `holdback` tokens, and those from the request's
        `open_from` on; one with no bound on that gives everything at the end."""
        with self.scheduler.lock:
            return self.done, self._take()

    def _take(self) -> list[tuple[int, str]]:
        request = self.request
        if request.done:
            result = request.result
            new = list(zip(result.token_ids[self._sent :], result.provenance[self._sent :])) if result else []
        else:
            holdback = request.strategy.holdback()
            sequence = request.sequence
            if holdback is None or request.in_flight:  # an endpoint is writing on it
                return []
            end = len(sequence) - holdback
            if request.open_from is not None:
                end = min(end, request.open_from)
            sequence.final = max(end, sequence.final)
            start = sequence.prompt_length + self._sent
            new = list(zip(sequence.tokens[start : sequence.final], sequence.writers[start : sequence.final]))
        self._sent += len(new)
        return new

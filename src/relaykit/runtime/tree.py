"""The request tree: a composite strategy's children (`Run`), the copies it forks and drops, and
how a request leaves (completed, failed or cancelled) with its usage rolled up to its parent."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time

from ..decoding.result import GenerationResult, make_result
from ..decoding.sequence import Sequence
from ..decoding.usage import Usage
from ..errors import RelaykitError
from ..vocabulary import FinishReason
from .asks import Fork, Run
from .request import Request
from .runners import BatchedRunner, ThreadedRunner

WAITING = object()  # an ask that is not answered at once


class RequestTree:
    """The scheduler's bookkeeping of requests and their children (a base of `Scheduler`)."""

    runners: dict[str, BatchedRunner | ThreadedRunner]
    live: dict[int, Request]
    queues: dict[str, list[Request]]
    in_flight: dict[concurrent.futures.Future, Request]

    def _advance(self, request: Request, answer) -> None:
        raise NotImplementedError

    # sharing

    def _read_shared_prompts(self, incoming: list[Request]) -> None:
        """For requests of `submit_n`: prefill their prompt once and copy it into each one's row."""
        groups: dict[int, list[Request]] = {}
        for request in incoming:
            if request.shared_prompt is not None:
                groups.setdefault(request.shared_prompt.uid, []).append(request)
        for requests in groups.values():
            first = requests[0]
            prompt = first.shared_prompt
            assert prompt is not None
            self._share(prompt, [r.sequence for r in requests], first.strategy.roles)
            for role in first.strategy.roles:
                first.inherited.setdefault(role, Usage()).add(self.runners[role].release(prompt))

    def _fork(self, request: Request, ask: Fork) -> list[Sequence]:
        copies = [ask.sequence.fork() for _ in range(ask.n)]
        self._share(ask.sequence, copies, ask.models)
        request.sequences += copies
        return copies

    def _drop(self, request: Request, sequence: Sequence) -> None:
        if sequence is request.sequence or sequence not in request.sequences:
            raise RelaykitError(f"strategy {request.strategy.name!r} dropped a sequence it does not own")
        request.sequences.remove(sequence)
        for role, runner in self.runners.items():
            spent = runner.release(sequence)
            if spent.forward_calls or spent.prefill_tokens:
                request.inherited.setdefault(role, Usage()).add(spent)

    def _share(self, parent: Sequence, copies: list[Sequence], roles) -> None:
        """`roles` read `parent` once (no logits) and give each copy a copy of its row."""
        for role in roles:
            self.runners[role].prefill([parent])
            self.runners[role].fork(parent, copies)

    # children

    def _run_children(self, request: Request, ask: Run):
        if not ask.children:
            return []
        request.earlier_results += [r for r in request.child_results if r is not None]  # an earlier Run's
        request.children = []
        request.child_results = [None] * len(ask.children)
        for index, (strategy, sequence) in enumerate(ask.children):
            if sequence in request.sequences and not ask.keep:
                request.sequences.remove(sequence)  # the child owns its usage from here
            sampling = ask.sampling or request.sampling
            if sampling.seed is not None:  # each child of the request, in any `Run`, samples on its own
                seed = sampling.seed * 1000 + request.children_started + index + 1
                sampling = dataclasses.replace(sampling, seed=seed)
            child = Request(strategy, sequence, sampling, request.stop_config, parent=request)
            child.index = index
            if ask.keep:
                child.sequences = []  # rows and usage stay with the parent
            request.children.append(child)
            self.live[child.uid] = child
        request.children_started += len(ask.children)
        for child in list(request.children):
            self._advance(child, None)
        return WAITING

    # leaving

    def _release(self, request: Request) -> dict[str, Usage]:
        """Free the request's rows in every runner; its usage per model (children included)."""
        usage = {role: Usage() for role in request.strategy.roles}
        for role, spent in request.inherited.items():
            usage.setdefault(role, Usage()).add(spent)
        for role, runner in self.runners.items():
            for sequence in request.sequences:
                spent = runner.release(sequence)
                if role in usage or spent.forward_calls:
                    usage.setdefault(role, Usage()).add(spent)
        for child in request.earlier_results + request.child_results:
            if child is not None:
                for role, spent in child.usage.items():
                    usage.setdefault(role, Usage()).add(spent)
        return usage

    def _complete(self, request: Request, output) -> None:
        usage = self._release(request)
        seconds = time.perf_counter() - request.submitted
        if isinstance(output, GenerationResult):  # a composite strategy's chosen child
            result = dataclasses.replace(output, usage=usage, seconds=seconds, events=request.events + output.events,
                                         uid=request.uid)
        else:
            result = make_result(request.sequence, request.strategy.tokenizer, usage, seconds, request.events,
                                 request.uid)
        self._leave(request, result)

    def _fail(self, request: Request, error: BaseException) -> None:
        self._release(request)
        request.error = error
        for child in request.children:
            if not child.done:
                self._cancel(child)
        self._leave(request, None)

    def _cancel(self, request: Request) -> None:
        if request.done:
            return
        request.cancelled = True  # its children's ends no longer wake it
        for child in request.children:
            self._cancel(child)
        for queue in self.queues.values():
            if request in queue:
                queue.remove(request)
        for future, waiting in list(self.in_flight.items()):
            if waiting is request:
                future.cancel()
                del self.in_flight[future]
        request.generator.close()
        if not request.sequence.finished:
            request.sequence.finish(FinishReason.CANCELLED)
        self._complete(request, None)

    def _leave(self, request: Request, result: GenerationResult | None) -> None:
        request.result = result
        self.live.pop(request.uid, None)
        parent = request.parent
        if parent is None or parent.done or parent.cancelled:
            return
        if request.error is not None:
            self._fail(parent, request.error)
            return
        parent.child_results[request.index] = result
        if all(r is not None for r in parent.child_results):
            self._advance(parent, list(parent.child_results))

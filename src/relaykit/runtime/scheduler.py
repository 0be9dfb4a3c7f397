"""The scheduler: one runner per loaded model, shared by every request of every strategy.

Each step, every model with waiting asks runs one batched forward over them (token-level asks
and the next token of every running `Generate`); the answered requests' loops then run on to
their next ask. Requests join between steps; finished and cancelled ones leave at once (their KV
rows are emptied for the next requests; memory is given back once most rows are free). Endpoint
runners answer their asks in worker threads while the in-process models go on stepping.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import cast

from ..decoding.sampler import SamplingConfig, next_tokens
from ..decoding.sequence import Sequence
from ..decoding.stopping import StopConfig
from ..errors import RelaykitError
from .asks import LOW_CONFIDENCE, Draft, Drop, Fork, Generate, Generated, Logits, Run
from .handle import Handle
from .request import Request
from .runners import BatchedRunner, ThreadedRunner
from .tree import WAITING, RequestTree
from .workload import Workload


@dataclass
class SchedulerStats:
    """A snapshot for a server's metrics."""

    running: int  # requests being generated (children included)
    waiting: int  # submitted, joining at the next step
    kv_bytes: dict[str, int]  # per model
    steps: int


class Scheduler(RequestTree):
    """Continuous batching over shared runners: `submit` requests at any time, `step` them."""

    def __init__(self, runners: dict[str, BatchedRunner | ThreadedRunner], remote_workers: int = 8,
                 recent_tokens: int = 0):
        self.runners = dict(runners)
        self.batched = {role: cast(BatchedRunner, r) for role, r in self.runners.items() if r.batched}
        self.threaded = {role: cast(ThreadedRunner, r) for role, r in self.runners.items() if not r.batched}
        self.pool = concurrent.futures.ThreadPoolExecutor(remote_workers) if self.threaded else None
        self.queues: dict[str, list[Request]] = {role: [] for role in self.runners}
        self.cost: dict[str, float] = dict.fromkeys(self.runners, 0.0)  # seconds of each model's last forward
        self.in_flight: dict[concurrent.futures.Future, Request] = {}
        self.workload = Workload({role: r.load for role, r in self.batched.items()}, recent_tokens)
        self.live: dict[int, Request] = {}
        self.incoming: list[Request] = []
        self.to_cancel: list[Request] = []
        self.lock = threading.RLock()  # held through each step
        self.progress = threading.Condition(self.lock)  # notified after each step
        self.arrivals = threading.Lock()  # guards `incoming` and `to_cancel`, so submitting never waits for a step
        self.steps = 0
        self.after_step: list = []  # callables run at the end of every step, under the lock (e.g. streaming)
        self._thread: threading.Thread | None = None
        self._running = False
        self._poke = False

    # submitting

    def submit(self, prompt: list[int] | Sequence, strategy, sampling: SamplingConfig, stop: StopConfig,
               shared_prompt: Sequence | None = None, family: dict | None = None) -> Handle:
        """Queue one request of `strategy`; it joins at the next step. Thread-safe. `shared_prompt`
        and `family`: see `submit_n`."""
        for role in strategy.roles:
            if role not in self.runners:
                raise RelaykitError(f"strategy {strategy.name!r} needs a {role} model, which is not loaded")
            refusal = self.runners[role].refuses_sampling(sampling)
            if refusal:
                raise RelaykitError(refusal)
        sequence = prompt if isinstance(prompt, Sequence) else Sequence(prompt)
        request = Request(strategy, sequence, sampling, stop, workload=self.workload, family=family,
                          shared_prompt=shared_prompt)
        with self.arrivals:
            if sequence.uid in self.live or any(r.uid == sequence.uid for r in self.incoming):
                raise RelaykitError(f"sequence {sequence.uid} is already being generated; fork it for a second request")
            self.incoming.append(request)
        self._wake()
        return Handle(self, request)

    def submit_n(self, prompt: list[int], strategy, samplings: list[SamplingConfig], stop: StopConfig) -> list[Handle]:
        """One request per sampling on one prompt, which each model reads once: when they join, the
        prompt is prefilled and every request starts from a copy of it (fork). The first request's
        usage carries that prefill. The requests are one family (siblings: a drafter reads them all).
        Thread-safe."""
        prompt_sequence, family = Sequence(prompt), dict[tuple, object]()
        return [self.submit(prompt_sequence.fork(), strategy, sampling, stop, prompt_sequence, family)
                for sampling in samplings]

    def cancel(self, handle: Handle) -> None:
        """Cancel at the next step (thread-safe; does not wait for a running step)."""
        with self.arrivals:
            if not handle.done:
                self.to_cancel.append(handle.request)
        self._wake()

    def step_soon(self) -> None:
        """Have the background loop step once more even with nothing to do, so that the
        `after_step` hooks run (thread-safe)."""
        with self.arrivals:
            self._poke = True
        self._wake()

    def _wake(self) -> None:
        """Wake an idle background loop; a stepping one sees new arrivals at its next step."""
        if self.lock.acquire(blocking=False):
            self.progress.notify_all()
            self.lock.release()

    @property
    def busy(self) -> bool:
        return bool(self.live or self.incoming)

    def stats(self) -> SchedulerStats:
        """Requests running and waiting, KV bytes per model (takes the lock: waits for a step)."""
        with self.lock:
            kv = {role: runner.kv_bytes for role, runner in self.runners.items()}
            return SchedulerStats(len(self.live), len(self.incoming), kv, self.steps)

    # stepping

    def wait_for_progress(self) -> None:
        """Step once, or, while a background thread steps, wait for its next step."""
        if self._thread is None:
            self.step()
            return
        with self.progress:
            self.progress.wait(timeout=0.1)

    def start(self) -> None:
        """Step in a background thread whenever there is work (for servers)."""
        if self._thread is None:
            self._running = True
            self._thread = threading.Thread(target=self._loop, name="relaykit-scheduler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self.progress:
            self._running = False
            self.progress.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self.progress:
                while self._running and not (self.busy or self.to_cancel or self._poke):
                    self.progress.wait()
                if not self._running:
                    return
            self.step()

    def step(self) -> None:
        """Admit, cancel, run one batched forward per model with waiting asks, free finished rows."""
        with self.lock:
            self.steps += 1
            with self.arrivals:
                incoming, self.incoming = self.incoming, []
                to_cancel, self.to_cancel = self.to_cancel, []
                self._poke = False
            self._read_shared_prompts(incoming)
            for request in incoming:
                self.live[request.uid] = request
                self._advance(request, None)
            for request in to_cancel:
                self._cancel(request)
            for role, threaded in self.threaded.items():
                waiting, self.queues[role] = self.queues[role], []
                for request in waiting:
                    assert self.pool is not None
                    self.in_flight[self.pool.submit(threaded.answer, request, request.ask)] = request
                    request.in_flight = True
            spent: dict[str, float] = {}
            for role, batched in self.batched.items():
                waiting, self.queues[role] = self.queues[role], []
                if waiting:
                    spent[role] = self._forward(batched, waiting)
            self._fill(spent)
            if self.in_flight:
                timeout = 0 if spent else 0.05
                finished, _ = concurrent.futures.wait(list(self.in_flight), timeout, concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    request = self.in_flight.pop(future)
                    request.in_flight = False
                    self._answer(request, future)
            for runner in self.runners.values():
                runner.compact()
            for hook in self.after_step:
                hook()
            self.progress.notify_all()

    def _fill(self, spent: dict[str, float]) -> None:
        """Cheaper models take more forwards within the step's longest one while they serve
        requests at least as fast as the costliest model would (waiting asks per second of its
        last forward): a request drafting or writing a segment on a small model then advances
        several tokens per step of the large model, without holding the large model's rows."""
        if len(spent) < 2:
            return
        costliest = max(spent, key=self.cost.__getitem__)
        longest = spent[costliest]
        more = True
        while more:
            more = False
            pace = len(self.queues[costliest]) / max(self.cost[costliest], 1e-9)
            for role, seconds in spent.items():
                waiting = self.queues[role]
                cheap_enough = seconds + self.cost[role] <= longest
                if role != costliest and waiting and cheap_enough and len(waiting) / max(self.cost[role], 1e-9) >= pace:
                    self.queues[role] = []
                    spent[role] += self._forward(self.batched[role], waiting)
                    more = True

    def _forward(self, runner: BatchedRunner, waiting: list[Request]) -> float:
        """One batched forward of an in-process model for every waiting ask; its seconds."""
        started = time.perf_counter()
        asks = [request.ask for request in waiting]
        logits = runner.score([ask.sequence for ask in asks], [ask.k if isinstance(ask, Logits) else 1 for ask in asks])
        self.cost[runner.name] = time.perf_counter() - started
        runner.load.stepped_by(Counter(request.root.strategy for request in waiting))
        width = logits.shape[1]
        generating = [i for i, ask in enumerate(asks) if isinstance(ask, Generate)]
        # the last position of every row when all asks generate (a view), else the generating rows' (a copy)
        last = logits[:, -1] if len(generating) == len(asks) else logits[generating, -1]
        tokens = dict(zip(generating, next_tokens([waiting[i].sampler for i in generating], last)))
        drafting = [i for i in generating if isinstance(asks[i], Draft) and asks[i].min_confidence]
        confidence = dict(zip(drafting, logits[drafting, -1].softmax(-1).amax(-1).tolist())) if drafting else {}
        woken, waking = 0, 0.0  # loops that read their logits, and how long they took (no forward run meanwhile)
        for i, (request, ask) in enumerate(zip(waiting, asks)):
            if isinstance(ask, Logits):
                forwards, started_waking = self._forwards(), time.perf_counter()
                self._advance(request, logits[i, width - ask.k :])
                if self._forwards() == forwards:  # not a fork's prefill or a child's start
                    woken, waking = woken + 1, waking + time.perf_counter() - started_waking
                continue
            sequence = ask.sequence
            sequence.append(tokens[i], ask.model)
            if isinstance(ask, Draft):
                ended = ask.ends_turn(sequence, len(sequence)) if ask.ends_turn is not None else None
                if ended is None and confidence.get(i, 1.0) < ask.min_confidence:
                    ended = LOW_CONFIDENCE
            else:
                ended = request.settle(sequence, len(sequence) - 1, ask.ends_turn)
            written = len(sequence) - ask.start
            if ended is not None or sequence.finished or written >= ask.max_tokens:
                self._advance(request, Generated(written, ended))
            else:
                self.queues[ask.model].append(request)
        if woken:
            runner.load.woke(waking / woken)
        return time.perf_counter() - started

    def _forwards(self) -> int:
        return sum(runner.usage.forward_calls for runner in self.batched.values())

    def _answer(self, request: Request, future: concurrent.futures.Future) -> None:
        try:
            answer = future.result()
        except BaseException as error:  # noqa: BLE001 - the request fails, the scheduler goes on
            self._fail(request, error)
            return
        self._advance(request, answer)

    # a request's loop

    def _advance(self, request: Request, answer) -> None:
        """Send `answer` into the request's loop and run it to its next ask that needs a forward."""
        while True:
            try:
                ask = request.generator.send(answer)
            except StopIteration as stop:
                self._complete(request, stop.value)
                return
            except BaseException as error:  # noqa: BLE001 - a failing request must not stop the others
                self._fail(request, error)
                return
            try:
                answer = self._dispatch(request, ask)
            except BaseException as error:  # noqa: BLE001
                self._fail(request, error)
                return
            if answer is WAITING:
                return

    def _dispatch(self, request: Request, ask):
        """Queue a model ask, or answer the asks that need no forward of their own."""
        request.ask = ask
        if isinstance(ask, (Logits, Generate)):
            runner = self.runners.get(ask.model)
            if runner is None:
                raise RelaykitError(f"strategy {request.strategy.name!r} asked for a {ask.model} model, "
                                    "which is not loaded")
            if isinstance(ask, Generate) and (ask.max_tokens <= 0 or ask.sequence.finished):
                return Generated(0)
            refusal = runner.refuses(ask)
            if refusal:
                raise RelaykitError(refusal)
            self.queues[ask.model].append(request)
            return WAITING
        if isinstance(ask, Fork):
            return self._fork(request, ask)
        if isinstance(ask, Drop):
            return self._drop(request, ask.sequence)
        if isinstance(ask, Run):
            return self._run_children(request, ask)
        raise RelaykitError(f"strategy {request.strategy.name!r} yielded {ask!r}, which is not an ask")

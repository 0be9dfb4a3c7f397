"""The scheduler: one runner per loaded model, shared by every request of every strategy.

Each step, every model with waiting asks runs one batched forward over them (token-level asks
and the next token of every running `Generate`); the answered requests' loops then run on to
their next ask. Requests join between steps; finished and cancelled ones leave at once (their KV
rows are emptied for the next requests; memory is given back once most rows are free). Remote
models answer text-level asks in worker threads while the in-process models go on stepping.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Iterator

from ..decoding.result import GenerationResult, make_result
from ..decoding.sampler import SamplingConfig
from ..decoding.sequence import Sequence
from ..decoding.stopping import StopConfig
from ..decoding.usage import Usage
from ..errors import RelaykitError
from ..models.kv import KVPolicy
from ..models.remote import RemoteModel, RemoteRunner
from ..models.runner import Runner
from .asks import LOW_CONFIDENCE, Draft, Drop, Fork, Generate, Generated, Logits, Run
from .request import Request

_WAITING = object()  # an ask that is not answered at once


class Handle:
    """A submitted request: stream its final tokens, wait for its result, or cancel it."""

    def __init__(self, scheduler: "Scheduler", request: Request):
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
            end = len(sequence) - holdback if request.open_from is None else min(len(sequence) - holdback, request.open_from)
            sequence.final = max(end, sequence.final)
            start = sequence.prompt_length + self._sent
            new = list(zip(sequence.tokens[start : sequence.final], sequence.writers[start : sequence.final]))
        self._sent += len(new)
        return new


class Scheduler:
    """Continuous batching over shared runners: `submit` requests at any time, `step` them."""

    def __init__(self, models: dict, kv_policy: KVPolicy | None = None, remote_workers: int = 8):
        remote = [role for role, model in models.items() if isinstance(model, RemoteModel)]
        if remote and kv_policy is not None and kv_policy.name != "full":
            raise RelaykitError("KV policies apply to in-process models; a remote engine manages its own cache")
        self.models = dict(models)
        self.runners: dict = {}
        for role, model in models.items():
            if isinstance(model, RemoteModel):
                self.runners[role] = RemoteRunner(model, role)
            else:
                self.runners[role] = Runner(model, role, kv_policy.fresh() if kv_policy is not None else None)
        self.pool = concurrent.futures.ThreadPoolExecutor(remote_workers) if remote else None
        self.queues: dict[str, list[Request]] = {role: [] for role in self.runners}
        self.cost: dict[str, float] = dict.fromkeys(self.runners, 0.0)  # seconds of each model's last forward
        self.in_flight: dict[concurrent.futures.Future, Request] = {}
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

    def submit(self, prompt: list[int] | Sequence, strategy, sampling: SamplingConfig | None = None,
               stop: StopConfig | None = None) -> Handle:
        """Queue one request of `strategy` (whose models must be this scheduler's); it joins at the
        next step. Thread-safe."""
        for role in strategy.roles:
            if self.models.get(role) is not strategy.models[role]:
                raise RelaykitError(f"strategy {strategy.name!r}: this scheduler holds no such {role} model")
        sampling = sampling or strategy.sampling
        if sampling.top_k and any(isinstance(self.models[r], RemoteModel) for r in strategy.roles):
            raise RelaykitError("remote models take temperature, top-p and seed; top-k is not part of the completions API")
        sequence = prompt if isinstance(prompt, Sequence) else Sequence(prompt)
        request = Request(strategy, sequence, sampling, stop or strategy.stop_config)
        with self.arrivals:
            if sequence.uid in self.live or any(r.uid == sequence.uid for r in self.incoming):
                raise RelaykitError(f"sequence {sequence.uid} is already being generated; fork it for a second request")
            self.incoming.append(request)
        self._wake()
        return Handle(self, request)

    def submit_n(self, prompt: list[int], strategy, samplings: list[SamplingConfig], stop: StopConfig | None = None) -> list[Handle]:
        """One request per sampling on one prompt, which each model reads once: when they join, the
        prompt is prefilled and every request starts from a copy of it (fork). The first request's
        usage carries that prefill. Thread-safe."""
        prompt_sequence = Sequence(prompt)
        handles = [self.submit(prompt_sequence.fork(), strategy, sampling, stop) for sampling in samplings]
        for handle in handles:
            handle.request.shared_prompt = prompt_sequence
        return handles

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

    def run(self, handles: list[Handle]) -> list[GenerationResult]:
        """Step until every handle is done; their results in order."""
        return [handle.result() for handle in handles]

    @property
    def busy(self) -> bool:
        return bool(self.live or self.incoming)

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
            spent: dict[str, float] = {}
            for role, runner in self.runners.items():
                waiting, self.queues[role] = self.queues[role], []
                if not waiting:
                    continue
                if isinstance(runner, RemoteRunner):
                    for request in waiting:
                        self.in_flight[self.pool.submit(runner.generate, request, request.ask)] = request
                        request.in_flight = True
                else:
                    spent[role] = self._forward(runner, waiting)
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
        costliest = max(spent, key=self.cost.get)
        longest = spent[costliest]
        more = True
        while more:
            more = False
            pace = len(self.queues[costliest]) / max(self.cost[costliest], 1e-9)
            for role, seconds in spent.items():
                waiting = self.queues[role]
                if role != costliest and waiting and seconds + self.cost[role] <= longest and len(waiting) / max(self.cost[role], 1e-9) >= pace:
                    self.queues[role] = []
                    spent[role] += self._forward(self.runners[role], waiting)
                    more = True

    def _forward(self, runner: Runner, waiting: list[Request]) -> float:
        """One batched forward of an in-process model for every waiting ask; its seconds."""
        started = time.perf_counter()
        asks = [request.ask for request in waiting]
        logits = runner.score([ask.sequence for ask in asks], [getattr(ask, "k", 1) for ask in asks])
        self.cost[runner.name] = time.perf_counter() - started
        width = logits.shape[1]
        generating = [i for i, ask in enumerate(asks) if isinstance(ask, Generate)]
        tokens: dict[int, int] = {}
        greedy = [i for i in generating if waiting[i].sampler.greedy]
        if len(greedy) == len(asks):
            tokens.update(enumerate(logits[:, -1].argmax(-1).tolist()))
        elif greedy:
            tokens.update(zip(greedy, logits[greedy, -1].argmax(-1).tolist()))
        for i in generating:
            if i not in tokens:
                tokens[i] = waiting[i].sample(logits[i, -1])
        drafting = [i for i in generating if isinstance(asks[i], Draft) and asks[i].min_confidence]
        confidence = dict(zip(drafting, logits[drafting, -1].softmax(-1).amax(-1).tolist())) if drafting else {}
        for i, (request, ask) in enumerate(zip(waiting, asks)):
            if isinstance(ask, Logits):
                self._advance(request, logits[i, width - ask.k :])
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
        return time.perf_counter() - started

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
            if answer is _WAITING:
                return

    def _dispatch(self, request: Request, ask):
        """Queue a model ask, or answer the asks that need no forward of their own."""
        request.ask = ask
        if isinstance(ask, (Logits, Generate)):
            if ask.model not in self.runners:
                raise RelaykitError(f"strategy {request.strategy.name!r} asked for a {ask.model} model, which is not loaded")
            if isinstance(ask, Generate) and (ask.max_tokens <= 0 or ask.sequence.finished):
                return Generated(0)
            if isinstance(ask, (Logits, Draft)) and isinstance(self.runners[ask.model], RemoteRunner):
                raise RelaykitError(f"the {ask.model} model is an endpoint: it gives text, not logits")
            self.queues[ask.model].append(request)
            return _WAITING
        if isinstance(ask, Fork):
            return self._fork(request, ask)
        if isinstance(ask, Drop):
            return self._drop(request, ask.sequence)
        if isinstance(ask, Run):
            return self._run_children(request, ask)
        raise RelaykitError(f"strategy {request.strategy.name!r} yielded {ask!r}, which is not an ask")

    def _read_shared_prompts(self, incoming: list[Request]) -> None:
        """For requests of `submit_n`: prefill their prompt once and copy it into each one's row."""
        groups: dict[int, list[Request]] = {}
        for request in incoming:
            if request.shared_prompt is not None:
                groups.setdefault(request.shared_prompt.uid, []).append(request)
        for requests in groups.values():
            prompt, first = requests[0].shared_prompt, requests[0]
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
                sampling = dataclasses.replace(sampling, seed=sampling.seed * 1000 + request.children_started + index + 1)
            child = Request(strategy, sequence, sampling, request.stop_config, parent=request)
            child.index = index
            if ask.keep:
                child.sequences = []  # rows and usage stay with the parent
            request.children.append(child)
            self.live[child.uid] = child
        request.children_started += len(ask.children)
        for child in list(request.children):
            self._advance(child, None)
        return _WAITING

    # leaving

    def _release(self, request: Request) -> dict[str, dict]:
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
                    usage.setdefault(role, Usage()).add(Usage(**spent))
        return {role: u.to_dict() for role, u in usage.items()}

    def _complete(self, request: Request, output) -> None:
        usage = self._release(request)
        seconds = time.perf_counter() - request.submitted
        strategy = request.strategy
        if isinstance(output, GenerationResult):  # a composite strategy's chosen child
            result = dataclasses.replace(output, usage=usage, seconds=seconds, events=request.events + output.events, uid=request.uid)
        else:
            result = make_result(request.sequence, strategy.tokenizer, usage, seconds, request.events, request.uid)
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
            request.sequence.finish("cancelled")
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

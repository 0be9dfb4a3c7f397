"""What the endpoints share: one session, strategies built per `model` name, prompt and budget
checks, submitting choices and waiting for them without blocking the event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import threading
from collections.abc import AsyncIterator

from .. import api
from ..decoding.prompt import encode_prompt
from ..decoding.sampler import SamplingConfig
from ..decoding.stopping import StopConfig
from ..errors import OptionError, RelaykitError
from ..runtime.handle import Handle
from ..runtime.scheduler import Scheduler
from ..runtime.session import Session
from ..strategies.base import Strategy, load_all
from ..toyworld.presets import preset_models
from ..vocabulary import EXPERTS, expert_roles
from .errors import APIError
from .schemas import GenerationRequest

STRATEGIES_KEPT = 256  # built strategies cached per (model, options); the oldest goes first
GREEDY_BELOW = 1e-5  # temperatures below this sample greedily (dividing logits by them overflows)


class Service:
    """The server's state: a session whose scheduler steps in the background, and the strategies
    requests named."""

    def __init__(self, session: Session, max_concurrency: int | None = None):
        self.session = session
        self.scheduler = session.scheduler
        self.max_concurrency = max_concurrency
        self.active = 0  # requests being answered
        self.strategies: dict[str, Strategy] = {}
        self.names: list[str] | None = None  # see `available`
        self.tuned = api.tuned_for(session.models)  # the settings a bare strategy name runs
        self.streams = Streams(session.scheduler)
        # for calls that wait for the scheduler's lock (held during a step): reading metrics
        self.calls = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="relaykit-call")

    def close(self) -> None:
        self.streams.close()
        self.scheduler.stop()
        self.calls.shutdown(wait=False, cancel_futures=True)

    # strategies

    def available(self) -> list[str]:
        """Strategies the loaded models allow: all their roles loaded; over an endpoint, only
        those whose logits it gives (see `runs_on`); not those that would need other models than
        the session's (on the shipped pair, RelayLLM's trained small model). Kept once every
        endpoint has answered its probe (one that did not is asked again next time)."""
        if self.names is not None:
            return self.names
        models = self.session.models
        roles = {name: cls.roles_of(cls.Config()) for name, cls in load_all().items()}
        names = [
            name for name, cls in sorted(load_all().items())
            if all(role in models or (role == EXPERTS and expert_roles(models)) for role in roles[name])
            and runs_on(cls, models)
            and not preset_models(name, models)
        ]
        if all(model.in_process or model.protocol is not None for model in models.values()):
            self.names = names
        return names

    def strategy(self, spec: str, options: dict | None = None) -> Strategy:
        """The strategy named by `model` (NAME or NAME[option=value ...]) with the request's
        `relaykit.options`, built once per spec and options (the last `STRATEGIES_KEPT` kept)."""
        spec = spec.strip()
        key = spec + json.dumps(options or {}, sort_keys=True)
        if key not in self.strategies:
            name = spec.split("[", 1)[0].strip()
            swaps = preset_models(name, self.session.models)
            if swaps:
                needs = ", ".join(f"--{role} {folder}" for role, folder in swaps.items())
                raise APIError(400, f"{name} runs with its own trained models; serve them: relaykit serve {needs}",
                               param="model")
            if name not in self.available():
                raise APIError(404, f"The model {spec!r} does not exist; available: {', '.join(self.available())} "
                               "(or NAME[option=value ...])", param="model", code="model_not_found")
            try:
                built = api.build_strategy(spec, self.session.models, options, tuned=self.tuned)
                if not self.session.holds(built):
                    raise RelaykitError("it runs on models this server did not load (serve them with relaykit serve)")
            except RelaykitError as error:
                param = "relaykit.options" if options and isinstance(error, OptionError) else "model"
                raise APIError(400, f"model {spec!r}: {error}", param=param) from error
            if len(self.strategies) >= STRATEGIES_KEPT:
                del self.strategies[next(iter(self.strategies))]  # the oldest; requests using it keep theirs
            self.strategies[key] = built
        return self.strategies[key]

    def admit(self) -> None:
        """Count a request in (`release` counts it out); a 429 with Retry-After when
        `max_concurrency` requests are being answered."""
        if self.max_concurrency is not None and self.active >= self.max_concurrency:
            raise APIError(429, f"the server is answering {self.active} requests (--max-concurrency); retry shortly",
                           "rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": "1"})
        self.active += 1

    def release(self) -> None:
        self.active -= 1

    # prompts and budgets

    @staticmethod
    def text_prompt(strategy: Strategy, text: str) -> list[int]:
        return encode_prompt(strategy.tokenizer, text, raw=True)

    @staticmethod
    def token_prompt(strategy: Strategy, ids: list[int]) -> list[int]:
        """A token-id prompt as given; a 400 for ids outside the vocabulary."""
        size = len(strategy.tokenizer)
        outside = [token for token in ids if token >= size]
        if outside:
            raise APIError(400, f"prompt: token id {outside[0]} is outside the vocabulary (0 to {size - 1})",
                           param="prompt", code="invalid_value")
        return list(ids)

    @staticmethod
    def chat_prompt(strategy: Strategy, messages: list[dict]) -> list[int]:
        tokenizer = strategy.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise APIError(400, "this model's tokenizer has no chat template; use /v1/completions", param="messages")
        try:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as error:  # noqa: BLE001 - a template may reject any message list
            raise APIError(400, f"the chat template rejected the messages: {error}", param="messages") from error
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    @staticmethod
    def context(strategy: Strategy) -> int | None:
        """The smallest context of the strategy's in-process models (None: only endpoints)."""
        sizes = [getattr(m.config, "max_position_embeddings", None) for m in strategy.models.values() if m.in_process]
        sizes = [s for s in sizes if s]
        return min(sizes) if sizes else None

    def budget(self, strategy: Strategy, prompt: list[int], asked: int | None, default: int | None) -> int:
        """Tokens a choice may write: `asked`, else `default`, else what the context leaves
        (else the strategy's own budget); a 400 stating the limits when they do not fit. `asked`
        0 (echo): the prompt is only scored."""
        context = self.context(strategy)
        if asked == 0:
            if context is not None and len(prompt) > context:
                raise APIError(400, f"the prompt is {len(prompt)} tokens; the model's context is {context} tokens",
                               param="prompt", code="context_length_exceeded")
            return 0
        if context is None:
            return asked or default or strategy.stop_config.max_new_tokens
        room = context - len(prompt)
        if room < 1:
            raise APIError(400, f"the prompt is {len(prompt)} tokens; the model's context is {context} tokens, "
                           "so it leaves no room to write", param="prompt", code="context_length_exceeded")
        if asked is not None and asked > room:
            raise APIError(400, f"max_tokens {asked} plus the prompt's {len(prompt)} tokens exceed the model's context "
                           f"of {context} tokens; at most {room}", param="max_tokens", code="context_length_exceeded")
        return asked or min(default or room, room)

    # running

    async def submit(self, strategy: Strategy, body: GenerationRequest, prompts: list[list[int]],
                     budgets: list[int]) -> list[Handle]:
        """`body.n` choices per prompt, in OpenAI's order (prompt by prompt), which share the
        prompt's reading (`Scheduler.submit_n`); with a seed, choice j of a prompt samples with
        seed + j. Submitting never waits for a step."""
        temperature = body.temperature if body.temperature >= GREEDY_BELOW else 0.0
        try:
            sampling = SamplingConfig(temperature=temperature, top_k=body.top_k, top_p=body.top_p, seed=body.seed)
        except RelaykitError as error:
            raise APIError(400, str(error)) from error
        samplings = [sampling if sampling.seed is None else dataclasses.replace(sampling, seed=sampling.seed + j)
                     for j in range(body.n)]
        handles = []
        for prompt, budget in zip(prompts, budgets):
            stop = StopConfig(max_new_tokens=budget, stop_strings=body.stop_strings())
            if body.n == 1:
                handles.append(self.session.submit(strategy, prompt, sampling, stop))
            else:
                handles += self.session.submit_n(strategy, prompt, samplings, stop)
        return handles

    async def tokens(self, handles: list[Handle]) -> AsyncIterator[tuple[int, list[tuple[int, str]] | None]]:
        """(choice index, new final (token, writer) pairs) as they come, then (index, None) when that
        choice is done. Leaving early (a client gone) cancels every choice: its rows are freed."""
        async for batch in self.batches(handles):
            for item in batch:
                yield item

    async def batches(self, handles: list[Handle]) -> AsyncIterator[list[tuple[int, list[tuple[int, str]] | None]]]:
        """What `tokens` gives, in lists of everything that came since the last list (a consumer
        that takes a while per list, such as scoring, takes more at once instead of falling behind)."""
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        for index, handle in enumerate(handles):
            self.streams.watch(handle, index, loop, queue)
        running = len(handles)
        try:
            while running:
                items = await queue.get()
                while not queue.empty():
                    items += queue.get_nowait()
                for _, pairs, error in items:
                    if error is not None:
                        raise error
                    if pairs is None:
                        running -= 1
                yield [(index, pairs) for index, pairs, _ in items]
        finally:
            for handle in handles:
                self.streams.forget(handle)
                if not handle.done:
                    self.cancel(handle)

    def cancel(self, handle: Handle) -> None:
        handle.cancel()  # never waits for a step

    async def results(self, handles: list[Handle]):
        """Wait for every choice; their results in order."""
        async for _ in self.tokens(handles):
            pass
        return [handle.result() for handle in handles]


def runs_on(cls: type[Strategy], models: dict) -> bool:
    """Whether the strategy with its default options gets the logits it asks for (an unreachable
    endpoint counts as not giving them)."""
    try:
        return cls.logits_refusal(cls.Config(), models) is None
    except RelaykitError:
        return False


class Streams:
    """Hands every watched choice its new final tokens at the end of each scheduler step (one batch
    per event loop), from the scheduler's own thread: no waiting thread per choice."""

    def __init__(self, scheduler: Scheduler):
        self.scheduler = scheduler
        self.watched: dict[Handle, tuple[int, asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self.guard = threading.Lock()
        scheduler.after_step.append(self.publish)
        scheduler.start()

    def watch(self, handle: Handle, index: int, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        with self.guard:
            self.watched[handle] = (index, loop, queue)
        self.scheduler.step_soon()  # a request that finished before it was watched is published too

    def forget(self, handle: Handle) -> None:
        with self.guard:
            self.watched.pop(handle, None)

    def close(self) -> None:
        self.scheduler.after_step.remove(self.publish)

    def publish(self) -> None:
        """Run by the scheduler after a step: new tokens, and the end of finished choices."""
        with self.guard:
            watched = list(self.watched.items())
        batches: dict[asyncio.Queue, tuple[asyncio.AbstractEventLoop, list]] = {}
        for handle, (index, loop, queue) in watched:
            done, pairs = handle.take()
            items = batches.setdefault(queue, (loop, []))[1]
            if pairs:
                items.append((index, pairs, None))
            if done:
                self.forget(handle)
                items.append((index, None, handle.request.error))
        for queue, (loop, items) in batches.items():
            if items:
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
                    loop.call_soon_threadsafe(queue.put_nowait, items)

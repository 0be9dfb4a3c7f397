"""The OpenAI-compatible app: `/v1/completions`, `/v1/chat/completions` (both streaming, both with
log-probabilities), `/v1/models`, `/health`, `/metrics`, on one scheduler stepping in a background
thread.

The `model` field names a strategy or a variant (`relaygen[speculative=8]`); every request of
every strategy shares the scheduler's batched forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from ..decoding.result import GenerationResult
from ..errors import RelaykitError
from ..models.kv import KVPolicy
from ..runtime.handle import Handle
from ..runtime.session import Session
from ..strategies.base import Strategy
from .deltas import TextDeltas
from .errors import APIError, BodyLimit, install_error_handlers, log
from .logprobs import ChoiceLogprobs, Wanted
from .metrics import CountRequests, Metrics
from .responses import finish_reason, new_id, now, sse, unwritten, usage
from .schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ErrorBody,
    ModelList,
)
from .service import Service

MAX_BODY_BYTES = 4 * 1024 * 1024  # larger request bodies get a 413
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to the context left

ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 404, 429)}


def _documented(model) -> dict:
    return {200: {"model": model, "content": {"text/event-stream": {}}}, **ERRORS}


def require_key(api_key: str):
    """A dependency: `Authorization: Bearer KEY` must carry `api_key`."""

    async def check(authorization: str | None = Header(None)) -> None:
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), api_key.encode()):
            message = "missing API key (Authorization: Bearer KEY)" if not given else "incorrect API key provided"
            raise APIError(401, message, code="invalid_api_key")

    return check


def create_app(models_or_session: dict | Session, *, kv_policy: KVPolicy | None = None, api_key: str | None = None,
               max_concurrency: int | None = None, recent_tokens: int = 0) -> FastAPI:
    """The server over `models_or_session` (role -> loaded model, or a Session over them, which
    then brings its own KV policy and cache of recent outputs). The session's scheduler steps in a
    background thread from the app's creation and stops with the app. With `api_key`, every
    endpoint but /health needs it; with `max_concurrency`, more requests get a 429; with
    `recent_tokens`, suffix drafters also draft from that many tokens of recent outputs, across
    requests (off by default: one client's text would shape the drafts of another's)."""
    given = models_or_session
    session = given if isinstance(given, Session) else Session(given, kv_policy, recent_tokens=recent_tokens)
    service = Service(session, max_concurrency)
    metrics = Metrics(session.scheduler)
    started = now()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        session.start()
        yield
        service.close()

    app = FastAPI(title="relaykit", summary="An OpenAI-compatible server where the model is a relaykit strategy.",
                  lifespan=lifespan)
    app.state.service = service
    install_error_handlers(app)
    app.add_middleware(CountRequests, metrics=metrics)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    guard = [Depends(require_key(api_key))] if api_key else []

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=guard, responses=ERRORS)
    async def prometheus() -> PlainTextResponse:
        text = await asyncio.get_running_loop().run_in_executor(service.calls, metrics.render)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", response_model=ModelList, dependencies=guard, responses=ERRORS)
    async def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": started, "owned_by": "relaykit"}
                                           for name in service.available()]}

    @app.post("/v1/completions", response_model=None, dependencies=guard, responses=_documented(Completion))
    async def completions(body: CompletionRequest, request: Request):
        if body.max_tokens == 0 and not body.echo:
            raise APIError(400, "max_tokens 0 writes nothing; it is allowed only with echo (to score the prompt)",
                           param="max_tokens", code="invalid_value")
        strategy = service.strategy(body.model, body.options)
        request.state.strategy = body.model
        given = body.prompts()
        prompts = [service.text_prompt(strategy, prompt) if isinstance(prompt, str)
                   else service.token_prompt(strategy, prompt) for prompt in given]
        echoes = ([prompt if isinstance(prompt, str) else strategy.tokenizer.decode(prompt) for prompt in given]
                  if body.echo else None)
        return await answer(body, strategy, prompts, body.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS, chat=False,
                            echoes=echoes)

    @app.post("/v1/chat/completions", response_model=None, dependencies=guard, responses=_documented(ChatCompletion))
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs", code="invalid_value")
        strategy = service.strategy(body.model, body.options)
        request.state.strategy = body.model
        prompt = service.chat_prompt(strategy, [message.for_template() for message in body.messages])
        return await answer(body, strategy, [prompt], body.token_budget(), None, chat=True)

    async def answer(body: CompletionRequest | ChatCompletionRequest, strategy: Strategy, prompts: list[list[int]],
                     asked: int | None, default: int | None, chat: bool, echoes: list[str] | None = None):
        """The choices of `prompts` (`body.n` each; none written with `asked` 0), whole or streamed."""
        arrived = time.perf_counter()
        budgets = [service.budget(strategy, prompt, asked, default) for prompt in prompts]
        service.admit()
        try:
            handles = await service.submit(strategy, body, prompts, budgets) if asked != 0 else []
        except BaseException:
            service.release()
            raise
        if body.stream:
            events = stream(body, strategy, prompts, handles, chat, arrived, echoes)
            return StreamingResponse(events, media_type="text/event-stream")
        try:
            results = (await service.results(handles) if handles
                       else [unwritten() for _ in range(len(prompts) * body.n)])
            metrics.observe("end_to_end", time.perf_counter() - arrived)
            metrics.written(body.model, results)
            built = await asyncio.gather(*(whole_choice(body, strategy, index, prompts[index // body.n], result, chat,
                                                        echoes[index // body.n] if echoes else "")
                                           for index, result in enumerate(results)))
        finally:
            service.release()
        return JSONResponse({
            "id": new_id("chatcmpl" if chat else "cmpl"),
            "object": "chat.completion" if chat else "text_completion",
            "created": now(),
            "model": body.model,
            "choices": [choice for choice, _ in built],
            "usage": usage(prompts, results + [spent for _, scoring in built for spent in scoring]),
        })

    async def whole_choice(body: CompletionRequest | ChatCompletionRequest, strategy: Strategy, index: int,
                           prompt: list[int], result: GenerationResult, chat: bool,
                           echo: str) -> tuple[dict, list[GenerationResult]]:
        """One choice of a whole answer, and the results of the requests that scored it."""
        deltas = TextDeltas(strategy.tokenizer, body.stop_strings())
        text = deltas.add(result.token_ids) + deltas.finish()
        output = ({"message": {"role": "assistant", "content": text}} if chat
                  else {"text": echo + text, "stop_reason": deltas.matched})
        extras: dict = {"provenance": result.provenance} if body.provenance else {}
        if deltas.matched and not chat:  # what was left out, so that a relaykit client can go on from it
            extras["stop_text"] = deltas.cut
        fields: dict = {"logprobs": None}
        wanted, spent = Wanted.of(body), []
        if wanted.any:
            scores = ChoiceLogprobs(service, strategy, wanted, prompt)
            scores.extend(result.token_ids, result.provenance)
            more, models = await scores.take()
            fields.update(more)
            spent = scores.spent
            if models:
                extras["logprob_models"] = models
        choice = {"index": index, **output, **fields, "finish_reason": finish_reason(result)}
        return ({**choice, "relaykit": extras} if extras else choice), spent

    async def stream(body: CompletionRequest | ChatCompletionRequest, strategy: Strategy, prompts: list[list[int]],
                     handles: list[Handle], chat: bool, arrived: float, echoes: list[str] | None) -> AsyncIterator[str]:
        """OpenAI's chunks: with echo or prompt log-probabilities a chunk per choice with the prompt's,
        text (or chat deltas) per choice as tokens become final, each with its tokens'
        log-probabilities when asked, a chunk with each choice's finish reason, a usage chunk when
        asked, then [DONE]."""
        identity = {"id": new_id("chatcmpl" if chat else "cmpl"), "created": now(), "model": body.model,
                    "object": "chat.completion.chunk" if chat else "text_completion"}
        with_usage = body.stream_options is not None and body.stream_options.include_usage
        count = len(prompts) * body.n
        deltas = [TextDeltas(strategy.tokenizer, body.stop_strings()) for _ in range(count)]
        writers: list[list[str]] = [[] for _ in range(count)]  # provenance not sent yet, per choice
        wanted = Wanted.of(body)
        scores = [ChoiceLogprobs(service, strategy, wanted, prompts[index // body.n]) for index in range(count)]

        def chunk(index: int, text: str | None, reason: str | None = None, fields: dict | None = None,
                  models: list[str] | None = None) -> str:
            if chat:
                delta = {"role": "assistant", "content": ""} if text is None else ({"content": text} if text else {})
                choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
            else:
                choice = {"index": index, "text": text, "logprobs": None, "finish_reason": reason}
            choice.update(fields or {})
            extras: dict = {}
            if body.provenance and text is not None:
                extras["provenance"], writers[index] = writers[index], []
            if models:
                extras["logprob_models"] = models
            if extras:
                choice["relaykit"] = extras
            return sse({**identity, "choices": [choice], **({"usage": None} if with_usage else {})})

        try:
            if chat:
                for index in range(count):
                    yield chunk(index, None)
            if echoes is not None or wanted.prompt:  # a first chunk per choice: the prompt
                firsts = (await asyncio.gather(*(choice.take() for choice in scores)) if wanted.prompt
                          else [({}, [])] * count)
                for index, (fields, models) in enumerate(firsts):
                    yield chunk(index, echoes[index // body.n] if echoes else "", fields=fields, models=models)
            last = None  # when the previous tokens came
            async for batch in service.batches(handles):
                new: dict[int, list[tuple[int, str]]] = {}  # per choice, its pairs of this batch
                for index, pairs in batch:
                    if pairs is not None:
                        new.setdefault(index, []).extend(pairs)
                if new:
                    moment, fresh = time.perf_counter(), sum(map(len, new.values()))
                    if last is None:
                        metrics.observe("time_to_first_token", moment - arrived)
                    else:
                        metrics.observe("inter_token", (moment - last) / fresh, times=fresh)
                    last = moment
                texts = {}
                for index, pairs in new.items():
                    tokens, written = [token for token, _ in pairs], [writer for _, writer in pairs]
                    writers[index] += written
                    texts[index] = deltas[index].add(tokens)
                    if wanted.top is not None:
                        scores[index].extend(tokens, written)
                scored = (await asyncio.gather(*(scores[index].take() for index in new)) if wanted.top is not None
                          else [({}, [])] * len(new))
                for (index, text), (fields, models) in zip(texts.items(), scored):
                    if text or fields:
                        yield chunk(index, text, fields=fields, models=models)
                for index, pairs in batch:
                    if pairs is None:
                        yield chunk(index, deltas[index].finish(), finish_reason(handles[index].result()))
            if not handles:  # max_tokens 0: nothing is written
                for index in range(count):
                    yield chunk(index, "", "length")
            results = [handle.result() for handle in handles]
            metrics.observe("end_to_end", time.perf_counter() - arrived)
            metrics.written(body.model, results)
            if with_usage:
                spent = [result for choice in scores for result in choice.spent]
                yield sse({**identity, "choices": [], "usage": usage(prompts, results + spent)})
            yield sse("[DONE]")
        except (APIError, RelaykitError) as error:
            yield sse({"error": {"message": str(error), "type": "invalid_request_error", "param": None, "code": None}})
        except Exception as error:  # noqa: BLE001 - the status line is sent; the client gets an error event
            log.exception("a streamed request failed")
            yield sse({"error": {"message": f"internal error: {type(error).__name__}: {error}", "type": "server_error",
                                 "param": None, "code": None}})
        finally:
            service.release()

    return app

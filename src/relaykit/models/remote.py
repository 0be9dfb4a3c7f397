"""A model behind an OpenAI-compatible completions endpoint (vLLM, SGLang, `transformers serve`,
relaykit's own server): `http://host:port/v1#model-name`.

Segment-level strategies drive such a model with text requests (`prompt`, `max_tokens`, `stop`);
prefix caching and parallelism are the engine's business. Token ids, provenance and the size of
each turn are counted with a local copy of the model's tokenizer.

Stop strings: the engine must either keep the matched stop string in the returned text (as
`transformers serve` does) or name it in the choice's `stop_reason` (as vLLM does); an engine
that drops it silently makes a cue look like the end of the generation.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..decoding.usage import Usage
from ..errors import RelaykitError

if TYPE_CHECKING:
    from ..runtime.asks import Generated


def is_remote(spec: str | None) -> bool:
    return bool(spec) and spec.startswith(("http://", "https://"))


@dataclass
class Completion:
    """One request's answer: the text (matched stop string included), why it ended, its size."""

    text: str
    finish_reason: str  # "stop" (a stop string or the end of text) or "length"
    prompt_tokens: int
    completion_tokens: int
    seconds: float


class RemoteModel:
    """A completions endpoint plus the local tokenizer of the model it serves."""

    def __init__(self, spec: str, tokenizer, name: str | None = None, timeout: float = 600.0):
        url, model = split_spec(spec)
        self.url = url.rstrip("/") + "/completions"
        self.model = model
        self.source = spec
        self.name = name or model
        self.tokenizer = tokenizer
        self.timeout = timeout

    @property
    def eos_token_ids(self) -> list[int]:
        return [self.tokenizer.eos_token_id]

    def describe(self) -> dict:
        """What a report says of the model (the endpoint chooses its engine and dtype)."""
        return {"source": self.source, "engine": "remote", "dtype": None, "parameters": None}

    def complete(self, prompt: str, max_tokens: int, stop: list[str] | None = None, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = None) -> Completion:
        """One completion request; every failure becomes one RelaykitError naming the endpoint."""
        body = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature}
        if top_p < 1.0:
            body["top_p"] = top_p
        if stop:
            body["stop"] = stop
        if seed is not None:
            body["seed"] = seed
        request = urllib.request.Request(self.url, json.dumps(body).encode(), {"Content-Type": "application/json"})
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
            raise RelaykitError(f"{self.url} answered HTTP {error.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            raise RelaykitError(f"cannot reach {self.url} ({getattr(error, 'reason', error)})") from None
        except json.JSONDecodeError:
            raise RelaykitError(f"{self.url} did not answer with JSON") from None
        seconds = time.perf_counter() - started
        try:
            choice = answer["choices"][0]
            text = choice["text"]
        except (KeyError, IndexError, TypeError):
            raise RelaykitError(f"{self.url} answered without choices[0].text: {str(answer)[:200]}") from None
        matched = (choice.get("relaykit") or {}).get("stop_text") or choice.get("stop_reason")
        if isinstance(matched, str) and not text.endswith(matched):
            # vLLM drops the matched stop string from the text and names it in stop_reason; a relaykit
            # server also gives the rest of the token that completed it (stop_text)
            text += matched
        usage = answer.get("usage") or {}
        completion_tokens = usage.get("completion_tokens")
        if completion_tokens is None:
            completion_tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return Completion(text, choice.get("finish_reason") or "stop", usage.get("prompt_tokens", 0), completion_tokens, seconds)


def split_spec(spec: str) -> tuple[str, str]:
    """`http://host:port/v1#model-name` -> (URL, model name)."""
    url, _, model = spec.partition("#")
    if not model:
        raise RelaykitError(f"a remote model is written URL#MODEL (e.g. http://localhost:8000/v1#my-model), got {spec!r}")
    return url, model


def load_remote(spec: str, tokenizer_spec: str | None = None, name: str | None = None) -> RemoteModel:
    """A RemoteModel; its tokenizer comes from `tokenizer_spec`, else from the model name (a
    checkpoint folder, or a hub id in the local cache)."""
    from transformers import AutoTokenizer

    source = tokenizer_spec or split_spec(spec)[1]
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as error:  # noqa: BLE001 - transformers raises many types
        raise RelaykitError(
            f"remote model {spec}: no tokenizer at {source!r} ({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
            "pass --tokenizer PATH with the served model's tokenizer"
        ) from None
    return RemoteModel(spec, tokenizer, name=name)


class RemoteRunner:
    """A remote model as a runner: it answers text-level asks (`Generate`) with completion
    requests, one worker thread per ask; the endpoint's own prefix cache reuses the KV cache.
    Token counts and provenance use the local tokenizer; FLOPs are unknown and reported as 0."""

    def __init__(self, model: RemoteModel, name: str | None = None):
        self.model = model
        self.name = name or model.name
        self.usage = Usage()
        self.usage_by_sequence: dict[int, Usage] = {}
        self.kv_bytes = 0

    def generate(self, request, ask) -> "Generated":
        """Write on `ask.sequence` until the turn ends (see `Generate`); requests pause after the
        ask's `pause_at` strings and the request's own stop strings, so that `ends_turn` is
        checked there; a pause string that may need the next character asks for one more token."""
        from ..runtime.asks import Generated

        sequence, tokenizer, sampling = ask.sequence, self.model.tokenizer, request.sampling
        stops = list(dict.fromkeys([*ask.pause_at, *request.stop_config.stop_strings]))
        usage = self.usage_by_sequence.setdefault(sequence.uid, Usage())
        size = ask.max_tokens
        while True:
            room = ask.max_tokens - (len(sequence) - ask.start)
            if room <= 0 or sequence.finished:
                return Generated(len(sequence) - ask.start)
            text = tokenizer.decode(sequence.visible_to(self.name), skip_special_tokens=False)
            answer = self.model.complete(text, min(room, size), stops, sampling.temperature, sampling.top_p, sampling.seed)
            before = len(sequence)
            sequence.extend(tokenizer(answer.text, add_special_tokens=False)["input_ids"], self.name)
            sequence.truncate(before + room)  # the local tokenizer may count a few more tokens
            for u in (usage, self.usage):
                u.prefill_tokens += answer.prompt_tokens
                u.decode_tokens += answer.completion_tokens
                u.forward_calls += 1
                u.seconds += answer.seconds
            # the engine stopped at the first stop string in its text (whose end may fall inside the last token)
            found = [(answer.text.find(s) + len(s), s) for s in stops if s in answer.text]
            matched = min(found)[1] if found and answer.finish_reason == "stop" else None
            if answer.finish_reason == "stop" and matched is None:
                sequence.append(tokenizer.eos_token_id, self.name)  # the model ended the text
            ended = request.settle(sequence, before, ask.ends_turn)
            if ended is not None or sequence.finished:
                return Generated(len(sequence) - ask.start, ended)
            size = 1 if matched is not None and answer.text.endswith(matched) else ask.max_tokens

    def release(self, sequence) -> Usage:
        return self.usage_by_sequence.pop(sequence.uid, Usage())

    def fork(self, parent, children) -> None:
        """Nothing to share in-process: the endpoint's prefix cache reads the prompt once."""

    def prefill(self, sequences) -> None:
        """Nothing to do: an endpoint reads the text with each request."""

    def compact(self) -> None:
        """Nothing to free in-process."""

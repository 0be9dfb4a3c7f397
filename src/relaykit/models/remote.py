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

from ..errors import RelaykitError


def is_remote(spec: str | None) -> bool:
    return spec is not None and spec.startswith(("http://", "https://"))


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

    in_process = False  # it writes text; it gives no logits and holds no KV cache of relaykit's

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
        reason = choice.get("finish_reason") or "stop"
        return Completion(text, reason, usage.get("prompt_tokens", 0), completion_tokens, seconds)


def split_spec(spec: str) -> tuple[str, str]:
    """`http://host:port/v1#model-name` -> (URL, model name)."""
    url, _, model = spec.partition("#")
    if not model:
        raise RelaykitError("a remote model is written URL#MODEL (e.g. http://localhost:8000/v1#my-model), "
                            f"got {spec!r}")
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
            f"remote model {spec}: no tokenizer at {source!r} "
            f"({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
            "pass --tokenizer PATH with the served model's tokenizer"
        ) from None
    return RemoteModel(spec, tokenizer, name=name)

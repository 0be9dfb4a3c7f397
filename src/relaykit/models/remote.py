"""A model behind an OpenAI-compatible completions endpoint (vLLM, SGLang, `transformers serve`,
llama-cpp-python's server, relaykit's own server): `http://host:port/v1#model-name`, or
`PROTOCOL+http://...` to name how it scores tokens (`vllm`, `sglang`, `llama-cpp-python`, or
`completions` for text only; see `scoring_protocols`); unnamed, a probe finds it when a strategy
first needs it.

Segment-level strategies drive such a model with text requests (`prompt`, `max_tokens`, `stop`);
token-level ones ask it to score a token sequence (one request per ask). Prefix caching and
parallelism are the engine's business. Token ids, provenance and the size of each turn are counted
with a local copy of the model's tokenizer.

Stop strings: the engine must either keep the matched stop string in the returned text (as
`transformers serve` does) or name it in the choice's `stop_reason` (as vLLM does); an engine
that drops it silently makes a cue look like the end of the generation.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RelaykitError
from .scoring_protocols import PROTOCOLS, TEXT_ONLY, Post

TOP_LOGPROBS = 20  # log-probabilities asked per position when sampling (vLLM's default --max-logprobs)


def is_remote(spec: str | None) -> bool:
    if spec is None:
        return False
    prefix, plus, rest = spec.partition("+")
    return (rest if plus and "://" not in prefix else spec).startswith(("http://", "https://"))


class Unreachable(RelaykitError):
    """The endpoint did not answer (no connection, a timeout): nothing was learned about it."""


@dataclass
class Exchange:
    """What requests cost on the wire."""

    requests: int = 1
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0

    @staticmethod
    def total(exchanges: list["Exchange"]) -> "Exchange":
        return Exchange(len(exchanges), sum(e.bytes_sent for e in exchanges), sum(e.bytes_received for e in exchanges),
                        sum(e.seconds for e in exchanges))


@dataclass
class Completion:
    """One request's answer: the text (matched stop string included), why it ended, its size."""

    text: str
    finish_reason: str  # "stop" (a stop string or the end of text) or "length"
    prompt_tokens: int
    completion_tokens: int
    exchange: Exchange = field(default_factory=Exchange)


@dataclass
class EndpointScores:
    """An endpoint's log-probabilities for the last k positions of a sequence (see
    `scoring_protocols`): row i maps token id -> log-probability after position n - k + i;
    `exchange`: every request it took."""

    rows: list[dict[int, float]]
    exchange: Exchange


class RemoteModel:
    """A completions endpoint plus the local tokenizer of the model it serves."""

    in_process = False  # it holds no KV cache of relaykit's; it gives logits only through `score`

    def __init__(self, spec: str, tokenizer, name: str | None = None, timeout: float = 600.0):
        protocol, url, model = split_spec(spec)
        self.root = url.rstrip("/")
        self.url = self.root + "/completions"
        self.model = model
        self.source = spec
        self.name = name or model
        self.tokenizer = tokenizer
        self.timeout = timeout
        self.protocol = protocol  # None until probed
        self.probe_notes: list[str] = []  # why each protocol was ruled out
        self._probing = threading.Lock()

    @property
    def eos_token_ids(self) -> list[int]:
        return [self.tokenizer.eos_token_id]

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def describe(self) -> dict:
        """What a report says of the model (the endpoint chooses its engine and dtype)."""
        return {"source": self.source, "engine": "remote", "dtype": None, "parameters": None,
                "protocol": self.protocol}

    # the wire

    def post(self, path: str, body: dict) -> tuple[dict, Exchange]:
        """One JSON request to `path` under the endpoint (a path starting with "/" is under the
        server's root); every failure becomes one RelaykitError naming the URL."""
        root = self.root.rsplit("/v1", 1)[0] if path.startswith("/") else self.root + "/"
        url = root + path
        data = json.dumps(body).encode()
        request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
            raise RelaykitError(f"{url} answered HTTP {error.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            raise Unreachable(f"cannot reach {url} ({getattr(error, 'reason', error)})") from None
        try:
            answer = json.loads(raw)
        except json.JSONDecodeError:
            raise RelaykitError(f"{url} did not answer with JSON") from None
        return answer, Exchange(1, len(data), len(raw), time.perf_counter() - started)

    @property
    def takes_token_ids(self) -> bool:
        """Whether completions take token-id prompts (known once the protocol is: vLLM's does)."""
        return self.protocol == "vllm"

    def complete(self, prompt: str | list[int], max_tokens: int, stop: list[str] | None = None,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> Completion:
        """One completion request (`prompt`: text, or token ids where the endpoint takes them)."""
        body: dict = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature}
        if top_p < 1.0:
            body["top_p"] = top_p
        if stop:
            body["stop"] = stop
        if seed is not None:
            body["seed"] = seed
        answer, exchange = self.post("completions", body)
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
        return Completion(text, reason, usage.get("prompt_tokens", 0), completion_tokens, exchange)

    # scoring

    def score(self, tokens: list[int], k: int, top: int) -> EndpointScores:
        """The endpoint's log-probabilities after each of the last k positions of `tokens`, the
        `top` most likely and the token that follows (see `scoring_protocols`); one request (more
        where llama-cpp-python's server splits the text otherwise)."""
        refusal = self.scoring_refusal()
        if refusal:
            raise RelaykitError(refusal)
        exchanges: list[Exchange] = []
        assert self.protocol is not None
        rows = self._score_with(self.protocol, tokens, k, top, exchanges)
        return EndpointScores(rows, Exchange.total(exchanges))

    def _score_with(self, protocol: str, tokens: list[int], k: int, top: int,
                    exchanges: list[Exchange]) -> list[dict[int, float]]:
        try:
            return PROTOCOLS[protocol].score(self._recording(exchanges), self.model, tokens, k, top, self.tokenizer)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            raise RelaykitError(f"{self.root} answered a {protocol} scoring request in a shape relaykit cannot read "
                                f"({type(error).__name__}: {error})") from None

    def scoring_refusal(self) -> str | None:
        """Why this endpoint cannot score tokens (None: it can); probes it the first time."""
        with self._probing:
            if self.protocol is None:
                self.protocol = self._probe()
        if self.protocol in PROTOCOLS:
            return None
        tried = "; ".join(self.probe_notes) or f"the spec names {TEXT_ONLY!r}"
        return (f"the {self.name} model's endpoint {self.root} gives no log-probabilities of prompt tokens ({tried}); "
                "serve it with vLLM, SGLang, llama-cpp-python's server or relaykit serve, or name the protocol: "
                f"{'|'.join(PROTOCOLS)}+{self.root}#{self.model}")

    def _recording(self, exchanges: list[Exchange]) -> Post:
        def post(path: str, body: dict) -> dict:
            answer, exchange = self.post(path, body)
            exchanges.append(exchange)
            return answer
        return post

    def _probe(self) -> str:
        """The scoring protocol the endpoint answers: the last two positions of a short sequence
        scored by each in turn (the one the server's name for itself suggests first)."""
        tokens = self.tokenizer("Hello, the world is round.", add_special_tokens=False)["input_ids"][:4]
        tokens = (tokens * 4)[:4] or [0] * 4
        order = list(PROTOCOLS)
        self.probe_notes = []
        if self._owner() == "me":  # llama-cpp-python's server names itself so
            order.insert(0, order.pop(order.index("llama-cpp-python")))
        for name in order:
            try:
                rows = self._score_with(name, tokens, 2, 1, [])
            except Unreachable:
                raise  # nothing learned: probe again next time
            except RelaykitError as error:
                self.probe_notes.append(f"{name}: {str(error)[:160]}")
                continue
            if len(rows) == 2 and rows[-1]:
                return name
            self.probe_notes.append(f"{name}: answered without log-probabilities")
        return TEXT_ONLY

    def _owner(self) -> str:
        """`owned_by` of the endpoint's first model (GET /models), or ""."""
        request = urllib.request.Request(self.root + "/models")
        try:
            with urllib.request.urlopen(request, timeout=min(self.timeout, 10)) as response:
                return str(json.loads(response.read())["data"][0].get("owned_by", ""))
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return ""


def split_spec(spec: str) -> tuple[str | None, str, str]:
    """`[PROTOCOL+]http://host:port/v1#model-name` -> (protocol or None, URL, model name)."""
    protocol, plus, rest = spec.partition("+")
    if not plus or protocol.startswith(("http://", "https://")):
        protocol, rest = "", spec
    url, _, model = rest.partition("#")
    if not model:
        raise RelaykitError("a remote model is written URL#MODEL (e.g. http://localhost:8000/v1#my-model), "
                            f"got {spec!r}")
    if protocol and protocol not in PROTOCOLS and protocol != TEXT_ONLY:
        raise RelaykitError(f"{spec}: unknown protocol {protocol!r}; one of {', '.join([*PROTOCOLS, TEXT_ONLY])}")
    return protocol or None, url, model


def load_remote(spec: str, tokenizer_spec: str | None = None, name: str | None = None) -> RemoteModel:
    """A RemoteModel; its tokenizer comes from `tokenizer_spec` (a folder, a .gguf file, a hub id in
    the local cache), else from the model name."""
    from transformers import AutoTokenizer

    source = tokenizer_spec or split_spec(spec)[2]
    try:
        if source.endswith(".gguf"):
            path = Path(source)
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        else:
            tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as error:  # noqa: BLE001 - transformers raises many types
        raise RelaykitError(
            f"remote model {spec}: no tokenizer at {source!r} "
            f"({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
            "pass --tokenizer PATH with the served model's tokenizer"
        ) from None
    return RemoteModel(spec, tokenizer, name=name)

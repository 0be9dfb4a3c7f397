"""Log-probabilities for the API: each token scored (raw log-softmax, no temperature) by the
model that wrote it, the prompt's by the strategy's first model, in OpenAI's and vLLM's shapes.

Scores are computed after the tokens are written, with `Session.score`: one scoring request per
writer over the sequence up to its last scored token. That re-reads the sequence (one extra
prefill per writer; the generation's KV rows are not shared; a stream re-reads it for every
chunk, so its scoring grows with the square of its length). They are exact for in-process models
over the tokens they see; under a KV policy they are the full-cache model's, not those of the
compressed cache the token was sampled from; tokens a strategy hides from a model (RelayLLM's
calls) are scored as if seen; a model behind an endpoint gives its top tokens and the tokens
that follow, others at the floor value.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import torch

from ..decoding.result import GenerationResult
from ..decoding.sequence import PROMPT
from ..models.scoring_protocols import TOKEN_ID
from ..strategies.base import Strategy
from .schemas import ChatCompletionRequest, CompletionRequest
from .service import Service

LOWEST = -9999.0  # what -inf is written as (JSON has no infinity), as vLLM writes it


@dataclass
class Wanted:
    """What a request asks for: `top` alternatives per token (None: no log-probabilities), the
    prompt's tokens too (`echo`), vLLM's `prompt_logprobs` (`prompt_top`), ids as tokens."""

    top: int | None = None
    echo: bool = False
    prompt_top: int | None = None
    as_ids: bool = False
    chat: bool = False

    @classmethod
    def of(cls, body: CompletionRequest | ChatCompletionRequest) -> "Wanted":
        if isinstance(body, ChatCompletionRequest):
            return cls(top=(body.top_logprobs or 0) if body.logprobs else None, chat=True)
        return cls(body.logprobs, body.echo, body.prompt_logprobs, body.return_tokens_as_token_ids)

    @property
    def any(self) -> bool:
        return self.top is not None or self.prompt_top is not None

    @property
    def prompt(self) -> bool:
        """Whether the prompt's tokens are scored."""
        return (self.echo and self.top is not None) or self.prompt_top is not None


@dataclass
class Scored:
    """One token and what its model gave for it (`logprob` None: the first token, unpredicted)."""

    token: int
    model: str
    logprob: float | None = None
    rank: int = 0  # 1: the most likely
    top: list[tuple[int, float]] = field(default_factory=list)  # the most likely (id, log-probability), best first


async def score(service: Service, strategy: Strategy, tokens: list[int], writers: list[str], start: int,
                top: int) -> tuple[list[Scored], list[GenerationResult]]:
    """`tokens[start:]` scored with their `top` most likely alternatives, each token by the model
    named in `writers` (a writer the session does not hold: the prompt, tokens a strategy inserted,
    by the strategy's first model); and the scoring requests' results (their usage)."""
    models, first = service.session.models, strategy.roles[0]
    entries = [Scored(token, writer if writer in models else first)
               for token, writer in zip(tokens[start:], writers[start:])]
    positions: dict[str, list[int]] = {}
    for position, entry in enumerate(entries, start):
        if position:
            positions.setdefault(entry.model, []).append(position)
    # through the last scored token, so that a model which gives only some tokens' log-probabilities
    # (an endpoint) gives the scored ones; the row after it is left out
    handles = {role: service.session.score(role, tokens[: wanted[-1] + 1], wanted[-1] + 2 - wanted[0])
               for role, wanted in positions.items()}
    results = await service.results(list(handles.values()))
    for role, handle in handles.items():
        await asyncio.to_thread(_fill, entries, start, handle.rows()[:-1], positions[role], top)
    return entries, results


def _fill(entries: list[Scored], start: int, rows: torch.Tensor, positions: list[int], top: int) -> None:
    """Fill the entries at `positions` from `rows` (row i predicts the token at positions[0] + i)."""
    rows = rows.index_select(0, torch.tensor([p - positions[0] for p in positions], device=rows.device))
    ids = torch.tensor([entries[p - start].token for p in positions], device=rows.device)
    chosen = rows.gather(1, ids[:, None])
    ranks = (rows > chosen).sum(1) + 1
    best = rows.topk(min(top, rows.shape[1]), dim=-1)
    for j, (logprob, rank, indices, values) in enumerate(zip(chosen[:, 0].tolist(), ranks.tolist(),
                                                             best.indices.tolist(), best.values.tolist())):
        entry = entries[positions[j] - start]
        entry.logprob, entry.rank, entry.top = logprob, rank, list(zip(indices, values))


def finite(value: float) -> float:
    return max(value, LOWEST)


class ChoiceLogprobs:
    """One choice's log-probabilities as its tokens come: `take` gives the fields for the tokens
    not taken yet (the first time, the prompt's too when asked)."""

    def __init__(self, service: Service, strategy: Strategy, wanted: Wanted, prompt: list[int]):
        self.service, self.strategy, self.wanted = service, strategy, wanted
        self.tokenizer = strategy.tokenizer
        self.tokens, self.writers, self.prompt_length = list(prompt), [PROMPT] * len(prompt), len(prompt)
        self.taken = 0 if wanted.prompt else len(prompt)
        self.offset = 0  # characters of the token texts sent (`text_offset`)
        self.spent: list[GenerationResult] = []  # the scoring requests' results

    def extend(self, tokens: list[int], writers: list[str]) -> None:
        self.tokens += tokens
        self.writers += writers

    async def take(self) -> tuple[dict, list[str]]:
        """(the choice's fields: `logprobs`, and `prompt_logprobs` when asked; the model that scored
        each token shown in `logprobs`)."""
        wanted, start = self.wanted, self.taken
        top = max(wanted.top or 0, wanted.prompt_top or 0)
        entries, spent = await score(self.service, self.strategy, self.tokens, self.writers, start, top)
        self.spent += spent
        self.taken = len(self.tokens)
        prompt = entries[: max(self.prompt_length - start, 0)]
        shown = entries if wanted.echo else entries[len(prompt) :]
        fields: dict = {}
        if wanted.prompt_top is not None and prompt:
            fields["prompt_logprobs"] = self.prompt_logprobs(prompt, wanted.prompt_top)
        if wanted.top is None:
            return fields, []
        fields["logprobs"] = self.chat_logprobs(shown, wanted.top) if wanted.chat else self.legacy(shown, wanted.top)
        return fields, [entry.model for entry in shown]

    def text(self, token: int) -> str:
        return f"{TOKEN_ID}{token}" if self.wanted.as_ids else self.tokenizer.decode([token])

    def legacy(self, entries: list[Scored], top: int) -> dict:
        """OpenAI's completions shape; each top dict holds the `top` most likely and the token."""
        tokens: list[str] = []
        logprobs: list[float | None] = []
        tops: list[dict[str, float] | None] = []
        offsets: list[int] = []
        for entry in entries:
            text = self.text(entry.token)
            tokens.append(text)
            offsets.append(self.offset)
            self.offset += len(text)
            if entry.logprob is None:
                logprobs.append(None)
                tops.append(None)
                continue
            logprobs.append(finite(entry.logprob))
            alternatives = {self.text(token): finite(value) for token, value in entry.top[:top]}
            tops.append({**alternatives, text: finite(entry.logprob)})
        return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}

    def prompt_logprobs(self, entries: list[Scored], top: int) -> list[dict | None]:
        """vLLM's shape: per prompt token, id -> logprob, rank and text of the token and the most likely."""
        shaped: list[dict | None] = []
        for entry in entries:
            if entry.logprob is None:
                shaped.append(None)
                continue
            ranked = {str(token): {"logprob": finite(value), "rank": rank, "decoded_token": self.text(token)}
                      for rank, (token, value) in enumerate(entry.top[:top], 1)}
            ranked[str(entry.token)] = {"logprob": finite(entry.logprob), "rank": entry.rank,
                                        "decoded_token": self.text(entry.token)}
            shaped.append(ranked)
        return shaped

    def chat_logprobs(self, entries: list[Scored], top: int) -> dict:
        """OpenAI's chat shape: token, logprob, UTF-8 bytes and the `top` most likely, per token."""

        def one(token: int, value: float) -> dict:
            text = self.text(token)
            return {"token": text, "logprob": finite(value), "bytes": list(text.encode())}

        content = []
        for entry in entries:
            assert entry.logprob is not None, "a written token follows the prompt: it has a log-probability"
            content.append({**one(entry.token, entry.logprob),
                            "top_logprobs": [one(token, value) for token, value in entry.top[:top]]})
        return {"content": content}

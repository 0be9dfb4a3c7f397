"""A model behind an OpenAI-compatible endpoint as a runner: text-level asks as completions,
token-level asks as one scoring request each."""

from __future__ import annotations

import torch

from ..decoding.sampler import SamplingConfig
from ..decoding.usage import Usage
from ..models.remote import TOP_LOGPROBS, Exchange, RemoteModel
from .asks import Draft, Generate, Generated, Logits
from .request import Request


class RemoteRunner:
    """A remote model as a runner: it answers `Generate` with completion requests and `Logits`
    with one scoring request (see `RemoteModel.score`), each in a worker thread; the endpoint's
    own prefix cache reuses the KV cache. Token counts and provenance use the local tokenizer;
    FLOPs are unknown and reported as 0.

    Logits from an endpoint are its log-probabilities of a few tokens per position (the `top`
    most likely and the token that follows), -inf elsewhere: greedy choices and margins between
    those tokens are exact; sampling draws from the distribution cut to them (docs/deploy.md)."""

    batched = False
    kv_bytes = 0

    def __init__(self, model: RemoteModel, name: str | None = None, like=None):
        """`like`: an in-process model of the session, whose logits an endpoint's match in width
        (a padded vocabulary) and device."""
        self.model = model
        self.name = name or model.name
        same = like is not None and len(like.tokenizer) == len(model.tokenizer)
        self.width = like.config.vocab_size if same else model.vocab_size
        self.device = getattr(like.hf, "device", "cpu") if same and like.hf is not None else "cpu"
        self.usage = Usage()
        self.usage_by_sequence: dict[int, Usage] = {}

    def refuses(self, ask: Logits | Generate) -> str | None:
        """Why this endpoint cannot answer `ask` (None: it can)."""
        if isinstance(ask, Draft):
            return f"the {ask.model} model is an endpoint: drafting runs on an in-process model"
        if isinstance(ask, Logits) and self.model.protocol is not None:  # else the worker thread probes
            return self.model.scoring_refusal()
        return None

    def refuses_sampling(self, sampling: SamplingConfig) -> str | None:
        if sampling.top_k:
            return "remote models take temperature, top-p and seed; top-k is not part of the completions API"
        return None

    def answer(self, request: Request, ask: Logits | Generate) -> Generated | torch.Tensor:
        return self.logits(request, ask) if isinstance(ask, Logits) else self.generate(request, ask)

    def logits(self, request: Request, ask: Logits) -> torch.Tensor:
        """Logits [k, V] after the last k visible positions: the endpoint's log-probabilities of
        its top tokens (2 when greedy, else `TOP_LOGPROBS`) and of the tokens that follow, -inf
        for the rest."""
        tokens = ask.sequence.visible_to(self.name)
        top = 2 if request.sampling.greedy else TOP_LOGPROBS
        scores = self.model.score(tokens, ask.k, top)
        logits = torch.full((ask.k, self.width), float("-inf"))
        for row, values in zip(logits, scores.rows):
            known = {token: value for token, value in values.items() if token < self.width}
            if known:
                row[list(known)] = torch.tensor(list(known.values()))
        self._count(ask.sequence.uid, scores.exchange, sent=len(tokens) * scores.exchange.requests, scored=ask.k)
        return logits.to(self.device)

    def _count(self, uid: int, exchange: Exchange, sent: int, scored: int = 0, written: int = 0) -> None:
        for u in (self.usage_by_sequence.setdefault(uid, Usage()), self.usage):
            u.requests += exchange.requests
            u.forward_calls += exchange.requests
            u.prefill_tokens += sent
            u.decode_tokens += written
            u.tokens_sent += sent
            u.tokens_scored += scored
            u.bytes_sent += exchange.bytes_sent
            u.bytes_received += exchange.bytes_received
            u.seconds += exchange.seconds

    def generate(self, request: Request, ask: Generate) -> Generated:
        """Write on `ask.sequence` until the turn ends (see `Generate`); requests pause after the
        ask's `pause_at` strings and the request's own stop strings, so that `ends_turn` is
        checked there; a pause string that may need the next character asks for one more token."""
        sequence, tokenizer, sampling = ask.sequence, self.model.tokenizer, request.sampling
        stops = list(dict.fromkeys([*ask.pause_at, *request.stop_config.stop_strings]))
        size = ask.max_tokens
        while True:
            room = ask.max_tokens - (len(sequence) - ask.start)
            if room <= 0 or sequence.finished:
                return Generated(len(sequence) - ask.start)
            visible = sequence.visible_to(self.name)
            # token ids where the endpoint takes them (the engine reads the sequence as written)
            prompt = visible if self.model.takes_token_ids else tokenizer.decode(visible, skip_special_tokens=False)
            answer = self.model.complete(prompt, min(room, size), stops, sampling.temperature, sampling.top_p,
                                         sampling.seed)
            before = len(sequence)
            sequence.extend(tokenizer(answer.text, add_special_tokens=False)["input_ids"], self.name)
            sequence.truncate(before + room)  # the local tokenizer may count a few more tokens
            self._count(sequence.uid, answer.exchange, sent=answer.prompt_tokens, written=answer.completion_tokens)
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

"""A model behind an OpenAI-compatible endpoint as a runner: it answers text-level asks."""

from __future__ import annotations

from ..decoding.sampler import SamplingConfig
from ..decoding.usage import Usage
from ..models.remote import RemoteModel
from .asks import Draft, Generate, Generated, Logits
from .request import Request


class RemoteRunner:
    """A remote model as a runner: it answers text-level asks (`Generate`) with completion
    requests, one worker thread per ask; the endpoint's own prefix cache reuses the KV cache.
    Token counts and provenance use the local tokenizer; FLOPs are unknown and reported as 0."""

    batched = False
    kv_bytes = 0

    def __init__(self, model: RemoteModel, name: str | None = None):
        self.model = model
        self.name = name or model.name
        self.usage = Usage()
        self.usage_by_sequence: dict[int, Usage] = {}

    def refuses(self, ask: Logits | Generate) -> str | None:
        """Why this endpoint cannot answer `ask` (None: it can)."""
        if isinstance(ask, (Logits, Draft)):
            return f"the {ask.model} model is an endpoint: it gives text, not logits"
        return None

    def refuses_sampling(self, sampling: SamplingConfig) -> str | None:
        if sampling.top_k:
            return "remote models take temperature, top-p and seed; top-k is not part of the completions API"
        return None

    def generate(self, request: Request, ask: Generate) -> Generated:
        """Write on `ask.sequence` until the turn ends (see `Generate`); requests pause after the
        ask's `pause_at` strings and the request's own stop strings, so that `ends_turn` is
        checked there; a pause string that may need the next character asks for one more token."""
        sequence, tokenizer, sampling = ask.sequence, self.model.tokenizer, request.sampling
        stops = list(dict.fromkeys([*ask.pause_at, *request.stop_config.stop_strings]))
        usage = self.usage_by_sequence.setdefault(sequence.uid, Usage())
        size = ask.max_tokens
        while True:
            room = ask.max_tokens - (len(sequence) - ask.start)
            if room <= 0 or sequence.finished:
                return Generated(len(sequence) - ask.start)
            text = tokenizer.decode(sequence.visible_to(self.name), skip_special_tokens=False)
            answer = self.model.complete(text, min(room, size), stops, sampling.temperature, sampling.top_p,
                                         sampling.seed)
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

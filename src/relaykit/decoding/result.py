"""What a generation returns: text, tokens, who wrote them, what each model spent, and events."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .sequence import Sequence


@dataclass
class Event:
    """A moment of a generation worth recording: a hand-off between models (`direction`
    "large->small"), a budget closing the thinking (`direction` None), a vote, ..."""

    position: int  # generated tokens before it
    direction: str | None  # "from->to" when the writer changes
    reason: str  # "cue", "sentence end", "answer", "budget", "margin", ...
    cue: str | None = None  # the text that triggered it, if any
    detail: dict | None = None  # what a method adds (a call's tokens requested and delivered)


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    provenance: list[str]  # per generated token, the role of the model that wrote it
    usage: dict[str, dict]  # per role: prefill_tokens, decode_tokens, forward_calls, seconds, flops
    seconds: float
    finish_reason: str | None = None
    events: list[Event] = field(default_factory=list)
    uid: int | None = None  # the request's uid

    def segments(self, tokenizer) -> list[tuple[str, str]]:
        """The text split into runs written by one model: [(text, writer), ...]. Special tokens
        such as <think> are shown; end-of-sequence and padding are not."""
        hidden = {tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id}
        runs: list[tuple[list[int], str]] = []
        for token, writer in zip(self.token_ids, self.provenance):
            if token in hidden:
                continue
            if runs and runs[-1][1] == writer:
                runs[-1][0].append(token)
            else:
                runs.append(([token], writer))
        return [(tokenizer.decode(tokens, skip_special_tokens=False), writer) for tokens, writer in runs]

    def tokens_by(self, writer: str) -> int:
        return sum(1 for w in self.provenance if w == writer)

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "provenance": self.provenance,
            "usage": self.usage,
            "seconds": self.seconds,
            "finish_reason": self.finish_reason,
            "events": [asdict(e) for e in self.events],
        }


def make_result(sequence: Sequence, tokenizer, usage: dict[str, dict], seconds: float, events=None, uid=None) -> GenerationResult:
    """Build the result of a finished sequence."""
    tokens, writers = sequence.generated, sequence.generated_writers
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    return GenerationResult(text, tokens, writers, usage, seconds, sequence.finish_reason, list(events or []), uid)

"""What a generation returns: text, tokens, who wrote them, what each model spent, and events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from ..vocabulary import EventKind, FinishReason
from .sequence import Sequence
from .usage import Usage


class Handoff(NamedTuple):
    """The writer changes from one model (role) to another."""

    source: str
    target: str

    def __str__(self) -> str:
        return f"{self.source}->{self.target}"


@dataclass
class Event:
    """A moment of a generation worth recording: a hand-off between models, a budget closing the
    thinking, a vote, ..."""

    position: int  # generated tokens before it
    reason: EventKind
    handoff: Handoff | None = None  # set when the writer changes
    cue: str | None = None  # the text that triggered it, if any
    detail: dict | None = None  # what a method adds (a call's tokens requested and delivered)

    def to_dict(self) -> dict:
        direction = str(self.handoff) if self.handoff is not None else None
        return {"position": self.position, "direction": direction, "reason": str(self.reason), "cue": self.cue,
                "detail": self.detail}


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    provenance: list[str]  # per generated token, the role of the model that wrote it
    usage: dict[str, Usage]  # per role
    seconds: float
    finish_reason: FinishReason | None = None
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
            "usage": {role: usage.to_dict() for role, usage in self.usage.items()},
            "seconds": self.seconds,
            "finish_reason": str(self.finish_reason) if self.finish_reason is not None else None,
            "events": [e.to_dict() for e in self.events],
        }


def make_result(sequence: Sequence, tokenizer, usage: dict[str, Usage], seconds: float, events=None,
                uid=None) -> GenerationResult:
    """Build the result of a finished sequence."""
    tokens, writers = sequence.generated, sequence.generated_writers
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    return GenerationResult(text, tokens, writers, usage, seconds, sequence.finish_reason, list(events or []), uid)

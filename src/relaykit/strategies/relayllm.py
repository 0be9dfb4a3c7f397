"""RelayLLM (Huang et al. 2026): the small model writes; where it writes `<call>N</call>` the
large model reads the text so far without any command and writes up to N tokens, then the small
model goes on with its command and the large model's tokens in its context. The large model's end
of sequence inside a call ends the answer."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..decoding.sequence import Sequence
from ..errors import RelaykitError
from ..runtime.asks import Generate
from ..text import decoder
from ..vocabulary import LARGE, SMALL, EventKind
from .base import Strategy, register

CALL_CLOSE = "</call>"
COMMAND = re.compile(r"<call>\s*(\d+)\s*</call>$")
LONGEST_COMMAND = 16  # tokens searched back from a `</call>` for its `<call>` (N has few digits)


@dataclass
class RelayLLMConfig:
    max_call_tokens: int = 100  # N is clamped to [1, this] (ours; the paper's model asks for 1-100)
    max_calls: int = 16  # calls per answer; later commands are hidden from the large model but call nothing (ours)

    def __post_init__(self) -> None:
        if self.max_call_tokens < 1 or self.max_calls < 0:
            raise RelaykitError("max-call-tokens must be >= 1 and max-calls >= 0")


@dataclass
class Command:
    """A well-formed `<call>N</call>` ending at the deciding token: it starts at token `start`."""

    start: int
    tokens: int  # N as written
    text: str


def find_command(decode, sequence: Sequence, end: int) -> Command | None:
    """The command that token `end - 1` completes, if any (malformed ones are text)."""
    tokens = sequence.tokens
    if CALL_CLOSE[-1] not in decode(tokens[end - 1 : end]):
        return None
    first = max(sequence.prompt_length, end - LONGEST_COMMAND)
    for start in range(end - 1, first - 1, -1):  # the shortest suffix holding the whole command
        text = decode(tokens[start:end])
        match = COMMAND.search(text)
        if match:
            return Command(start, int(match.group(1)), match.group())
    return None


@register("relayllm")
class RelayLLM(Strategy):
    """The small model drives and calls the large model for the tokens it asks for."""

    roles = (LARGE, SMALL)
    Config = RelayLLMConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.decode = decoder(self.tokenizer)

    @classmethod
    def needs_logits(cls, config) -> tuple[str, ...]:
        return ()

    def _command(self, sequence: Sequence, end: int) -> Command | None:
        return find_command(self.decode, sequence, end)

    def run(self, request):
        sequence, calls = request.sequence, 0
        while not sequence.finished:
            ask = Generate(SMALL, sequence, request.remaining(), self._command, (CALL_CLOSE,))
            command = (yield ask).ended_by
            if command is None:
                continue  # the stop conditions ended the answer
            sequence.hide(command.start, len(sequence), LARGE)  # the large model never reads commands
            if command.tokens == 0 or calls == self.config.max_calls or sequence.finished:
                continue
            calls += 1
            asked = min(command.tokens, self.config.max_call_tokens)
            event = request.event(EventKind.CALL, (SMALL, LARGE), command.text)
            written = (yield Generate(LARGE, sequence, min(asked, request.remaining()))).tokens
            event.detail = {"requested": command.tokens, "delivered": written}
            if not sequence.finished:
                request.event(EventKind.CALL_END, (LARGE, SMALL))
